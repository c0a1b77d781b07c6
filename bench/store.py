"""Control-plane store rates: writes per second and watch delivery (write -> watcher sees it).

    .venv/bin/python bench/store.py [--writes 2000] [--no-etcd]

The same figures for each backend: SQLite in a temporary file, etcd started for the run
(netsim/etcd_server.py, as the tests do) and reached over its JSON gateway.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netsim.etcd_server import temporary_etcd  # noqa: E402
from netsim.store import open_store  # noqa: E402


def pod(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p{i}", "namespace": "default", "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}]}]}}


def bench_store(name: str, url: str, writes: int, **reader_kw) -> None:
    """Writes/s on one store, then watch delivery from a second store on the same data."""
    store = open_store(url)
    try:
        t0 = time.perf_counter()
        for i in range(writes):
            store.put(f"/registry/pods/default/p{i}", pod(i))
        write_s = time.perf_counter() - t0

        start = store.revision()
        lags: list[float] = []
        done = threading.Event()

        def watcher() -> None:
            reader = open_store(url, **reader_kw)
            try:
                for event in reader.watch("/registry/pods/", after=start, timeout=10):
                    sent = float(event.object["metadata"]["annotations"]["bench/sent"])
                    lags.append(time.perf_counter() - sent)
                    if len(lags) == writes:
                        break
            finally:
                reader.close()
                done.set()

        thread = threading.Thread(target=watcher)
        thread.start()
        t1 = time.perf_counter()
        for i in range(writes):
            obj = pod(i)
            obj["metadata"]["annotations"] = {"bench/sent": repr(time.perf_counter())}
            store.put(f"/registry/pods/default/p{i}", obj)
        done.wait(60)
        watch_s = time.perf_counter() - t1
        thread.join(timeout=30)
    finally:
        store.close()
    lags_ms = sorted(x * 1000 for x in lags)
    print(f"{name} store, {writes} pod objects")
    print(f"  writes:          {writes / write_s:8.0f} /s")
    if not lags_ms:
        print("  watch delivery:  no event arrived")
        return
    print(f"  watch delivery:  {len(lags) / watch_s:8.0f} events/s while writing ({len(lags)}/{writes}), "
          f"lag p50 {statistics.median(lags_ms):.2f} ms, p95 {lags_ms[int(len(lags_ms) * 0.95)]:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--no-etcd", action="store_true", help="SQLite only (no etcd installed)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="netsim-store-bench-") as tmp:
        # A 1 ms poll: the watcher's lag, not the poll interval, is what is measured.
        bench_store("sqlite", f"sqlite://{tmp}/store.db", args.writes, poll_interval=0.001)

    if not args.no_etcd:
        with temporary_etcd() as endpoint:
            bench_store("etcd", f"etcd://{endpoint.removeprefix('http://')}/bench", args.writes)

    # -- apply of 300 pods: the next section goes here ---------------------------------------


if __name__ == "__main__":
    main()
