"""Control-plane store rates: writes per second and watch delivery (write -> watcher sees it).

    .venv/bin/python bench/store.py [--writes 2000]

SQLite backend only so far; the etcd backend joins with the same figures.
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

from netsim.store import SQLiteStore  # noqa: E402


def pod(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p{i}", "namespace": "default", "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}]}]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="netsim-store-bench-") as tmp:
        store = SQLiteStore(Path(tmp) / "store.db")
        t0 = time.perf_counter()
        for i in range(args.writes):
            store.put(f"/registry/pods/default/p{i}", pod(i))
        write_s = time.perf_counter() - t0

        start = store.revision()
        lags: list[float] = []
        done = threading.Event()

        def watcher() -> None:
            reader = SQLiteStore(store.path, poll_interval=0.001)
            for event in reader.watch("/registry/pods/", after=start, timeout=10):
                sent = float(event.object["metadata"]["annotations"]["bench/sent"])
                lags.append(time.perf_counter() - sent)
                if len(lags) == args.writes:
                    break
            reader.close()
            done.set()

        thread = threading.Thread(target=watcher)
        thread.start()
        t1 = time.perf_counter()
        for i in range(args.writes):
            obj = pod(i)
            obj["metadata"]["annotations"] = {"bench/sent": repr(time.perf_counter())}
            store.put(f"/registry/pods/default/p{i}", obj)
        done.wait(30)
        watch_s = time.perf_counter() - t1
        thread.join()
        store.close()
    lags_ms = sorted(x * 1000 for x in lags)
    print(f"sqlite store, {args.writes} pod objects")
    print(f"  writes:          {args.writes / write_s:8.0f} /s")
    print(f"  watch delivery:  {len(lags) / watch_s:8.0f} events/s while writing, "
          f"lag p50 {statistics.median(lags_ms):.2f} ms, p95 {lags_ms[int(len(lags_ms) * 0.95)]:.2f} ms")


if __name__ == "__main__":
    main()
