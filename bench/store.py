"""Control-plane store rates: writes per second and watch delivery (write -> watcher sees it).

    .venv/bin/python bench/store.py [--writes 2000] [--pods 300] [--no-etcd]

The same figures for each backend: SQLite in a temporary file, etcd started for the run
(netsim/api/store/etcd_server.py, as the tests do) and reached over its JSON gateway.  Then, on a real
4-node cluster per backend (as root), the time from `netsim apply` of N pods to all Running.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netsim.api.store import open_store  # noqa: E402
from netsim.api.store.etcd_server import temporary_etcd  # noqa: E402


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


SCENARIO = """apiVersion: netsim/v1alpha1
kind: Scenario
name: bench
nodes:
  - {name: control-plane, role: control-plane}
  - {name: worker1}
  - {name: worker2}
  - {name: worker3}
"""


def netsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netsim", *args], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=600)


def bench_apply(backend: str, etcd: str | None, pods: int) -> None:
    """Wall time of `netsim apply` of N bare pods (one file) until all are Running with an IP:
    store writes, scheduling, N namespaces, veths and responders, status written back."""
    name = f"bench{os.getpid() % 10000}"
    with tempfile.TemporaryDirectory(prefix="netsim-apply-bench-") as tmp:
        os.environ["NETSIM_STATE_DIR"] = f"{tmp}/state"
        scenario, manifest = Path(tmp) / "scenario.yaml", Path(tmp) / "pods.yaml"
        scenario.write_text(SCENARIO)
        manifest.write_text("---\n".join(
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, labels: {{app: bench}}}}\n"
            f"spec: {{containers: [{{name: c, image: busybox, ports: [{{containerPort: 80}}]}}]}}\n"
            for i in range(pods)))
        try:
            netsim("up", str(scenario), "--name", name, *(["--store", f"{etcd}/bench-{name}"] if etcd else []))
            t0 = time.perf_counter()
            netsim("apply", "-f", str(manifest), "-c", name, "--timeout", "600")
            applied = time.perf_counter() - t0
            items = json.loads(netsim("get", "pods", "-o", "json", "-c", name).stdout)["items"]
            running = sum(p.get("status", {}).get("phase") == "Running" and bool(p["status"].get("podIP"))
                          for p in items)
            t1 = time.perf_counter()
            netsim("delete", "-f", str(manifest), "-c", name, "--timeout", "600")
            deleted = time.perf_counter() - t1
        finally:
            subprocess.run([sys.executable, "-m", "netsim", "down", name], capture_output=True, timeout=120)
            os.environ.pop("NETSIM_STATE_DIR")
    print(f"{backend:6}  apply of {pods} pods to {running} Running: {applied:6.2f} s "
          f"({pods / applied:5.0f} pods/s); delete of all: {deleted:5.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--no-etcd", action="store_true", help="SQLite only (no etcd installed)")
    parser.add_argument("--pods", type=int, default=300, help="pods for the apply-to-Running figure (0: skip)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="netsim-store-bench-") as tmp:
        # A 1 ms poll: the watcher's lag, not the poll interval, is what is measured.
        bench_store("sqlite", f"sqlite://{tmp}/store.db", args.writes, poll_interval=0.001)

    if not args.no_etcd:
        with temporary_etcd() as endpoint:
            bench_store("etcd", f"etcd://{endpoint.removeprefix('http://')}/bench", args.writes)

    if args.pods:
        bench_apply("sqlite", None, args.pods)
        if not args.no_etcd:
            with temporary_etcd() as endpoint:
                bench_apply("etcd", f"etcd://{endpoint.removeprefix('http://')}", args.pods)


if __name__ == "__main__":
    main()
