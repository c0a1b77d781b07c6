"""Pod-to-pod TCP throughput with iperf3: on one node (over cni0), across nodes over the
VXLAN overlay, and across nodes with host-gw routes, in one run.

    .venv/bin/python bench/dataplane.py [--seconds 5]

Two 2-worker clusters are brought up with `netsim up` (one per backend), three pods pinned
with nodeName (two on worker1, one on worker2); iperf3 runs between pod namespaces, the
server started for one test (-1) and the client bounded in time.  Prints Gbit/s, the
retransmits, and each figure's ratio to the same-node one; then how long a peer's kernel
takes to follow a flannel lease written or deleted in the store (the watch path that other
machines' nodes use).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCENARIO = """apiVersion: netsim/v1alpha1
kind: Scenario
name: ignored
nodes:
  - {name: control-plane, role: control-plane}
  - {name: worker1}
  - {name: worker2}
networking:
  backend: BACKEND
"""

PODS = "\n---\n".join(f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  containers: [{{name: c, image: iperf3}}]""" for name, node in (("a", "worker1"), ("b", "worker1"), ("c", "worker2")))


def netsim(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netsim", *args], cwd=ROOT, capture_output=True, text=True,
                          check=check, timeout=300)


def iperf(cluster: str, client: str, server: str, server_ip: str, seconds: int) -> tuple[float, int]:
    ns = lambda pod: f"nsim.{cluster}.default.{pod}"  # noqa: E731
    srv = subprocess.Popen(["ip", "netns", "exec", ns(server), "iperf3", "-s", "-1", "-p", "5201"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = subprocess.run(["ip", "netns", "exec", ns(client), "iperf3", "-c", server_ip, "-p", "5201", "-t",
                              str(seconds), "-J"], capture_output=True, text=True, timeout=seconds + 30, check=True)
        result = json.loads(out.stdout)["end"]["sum_sent"]
        return result["bits_per_second"] / 1e9, int(result.get("retransmits", 0))
    finally:
        srv.kill()
        srv.wait()


def lease_convergence(cluster: str, rounds: int = 10) -> tuple[list[float], list[float]]:
    """As another machine's node would: write a lease to the store, time until worker1 has
    the route to it (the watch path), then delete it; ms."""
    sys.path.insert(0, str(ROOT))
    from netsim.api.store import open_store
    from netsim.fabric import load_cluster
    from netsim.node import flanneld

    store = open_store(load_cluster(cluster).store_url)
    config = flanneld.read_config(store)

    def routes() -> str:
        return subprocess.run(["ip", "-n", f"nsim.{cluster}.worker1", "route"], capture_output=True, text=True,
                              check=True).stdout

    adds, dels = [], []
    try:
        for i in range(rounds):
            ip = f"192.168.56.{200 + i}"
            t0 = time.monotonic()
            subnet = str(flanneld.acquire(store, config, ip, f"02:00:00:00:01:{i:02x}"))
            while subnet not in routes():
                assert time.monotonic() - t0 < 10, "the route never appeared"
                time.sleep(0.002)
            adds.append((time.monotonic() - t0) * 1000)
            t0 = time.monotonic()
            flanneld.release(store, ip)
            while subnet in routes():
                assert time.monotonic() - t0 < 10, "the route never went"
                time.sleep(0.002)
            dels.append((time.monotonic() - t0) * 1000)
    finally:
        store.close()
    return adds, dels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bench creates network namespaces")
    results: dict[str, tuple[float, int]] = {}
    with tempfile.TemporaryDirectory(prefix="netsim-dataplane-") as tmp:
        os.environ["NETSIM_STATE_DIR"] = str(Path(tmp) / "state")
        for backend in ("vxlan", "host-gw"):
            cluster = f"dp{os.getpid() % 10000}{backend[0]}"
            scenario = Path(tmp) / f"{backend}.yaml"
            scenario.write_text(SCENARIO.replace("BACKEND", backend))
            pods = Path(tmp) / "pods.yaml"
            pods.write_text(PODS)
            try:
                netsim("up", str(scenario), "--name", cluster)
                netsim("apply", "-f", str(pods), "-c", cluster)
                ips = {p["metadata"]["name"]: p["status"]["podIP"]
                       for p in json.loads(netsim("get", "pods", "-o", "json", "-c", cluster).stdout)["items"]}
                if backend == "vxlan":
                    results["same node (cni0)"] = iperf(cluster, "a", "b", ips["b"], args.seconds)
                    convergence = lease_convergence(cluster)
                results[f"across nodes, {backend}"] = iperf(cluster, "a", "c", ips["c"], args.seconds)
            finally:
                netsim("down", cluster, check=False)
    base = results["same node (cni0)"][0]
    print(f"pod -> pod TCP, iperf3 {args.seconds} s each")
    print(f"{'path':<26} {'Gbit/s':>8} {'retrans':>8} {'ratio':>6}")
    for path, (gbps, retrans) in results.items():
        print(f"{path:<26} {gbps:8.2f} {retrans:8d} {gbps / base:6.2f}")
    adds, dels = convergence
    print(f"\nflannel lease written -> a peer's route in place: p50 {statistics.median(adds):.0f} ms, "
          f"max {max(adds):.0f} ms; lease deleted -> route gone: p50 {statistics.median(dels):.0f} ms, "
          f"max {max(dels):.0f} ms ({len(adds)} leases)")


if __name__ == "__main__":
    main()
