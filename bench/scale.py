"""Scale: N pods on M nodes come up and go down cleanly; memory per node agent and per pod.

    .venv/bin/python bench/scale.py [--nodes 10] [--pods 1000]

Brings up a cluster of --nodes nodes (one agent for all of them, as `up` runs it), applies one
Deployment of --pods replicas and waits until every pod is Running, then prints:

  time       apply -> all Running, and `down`
  agent      the agent's resident memory (VmRSS) before the Deployment and with every pod up,
             its growth per pod, and per node (the agent's RSS over the nodes it runs)
  kernel     growth of the kernel's unreclaimable slab (Slab: SUnreclaim in /proc/meminfo:
             namespaces, links, sockets, rules) per pod
  clean      after `down`: namespaces, /etc/netns entries, agent and plugin server processes
             and state of the cluster left (all must be 0; exit 1 otherwise)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netsim import kernel  # noqa: E402
from netsim.fabric import daemon  # noqa: E402
from netsim.model import names, state  # noqa: E402


def netsim(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "netsim", *args], capture_output=True, text=True, check=False,
                          cwd=ROOT, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"netsim {' '.join(args)}: exit {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_rss_kib(pid: int) -> int:
    """The agent and its children (the CNI plugin server's workers)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss_kib(p)
        for task in Path(f"/proc/{p}/task").iterdir():
            todo += [int(c) for c in (task / "children").read_text().split()]
    return total


def sunreclaim_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("SUnreclaim:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--pods", type=int, default=1000)
    args = ap.parse_args()
    name = f"scale{os.getpid() % 10000}"
    tmp = Path(tempfile.mkdtemp(prefix="netsim-scale-"))
    nodes = "\n".join(["  - name: cp\n    role: control-plane"] + [f"  - name: w{i}" for i in range(1, args.nodes)])
    (tmp / "scenario.yaml").write_text(f"apiVersion: netsim/v1alpha1\nkind: Scenario\nname: {name}\nnodes:\n{nodes}\n"
                                       "networking:\n  podSubnet: 10.240.0.0/12\n")
    (tmp / "app.yaml").write_text(f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: scale}}
spec:
  replicas: {args.pods}
  selector: {{matchLabels: {{app: scale}}}}
  template:
    metadata: {{labels: {{app: scale}}}}
    spec:
      tolerations: [{{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}}]
      containers: [{{name: c, image: x, ports: [{{containerPort: 8080}}]}}]
""")
    ok = True
    try:
        t0 = time.perf_counter()
        netsim("up", str(tmp / "scenario.yaml"))
        up_s = time.perf_counter() - t0
        (agent,) = daemon.agent_pids(name)
        time.sleep(2)
        rss0, slab0 = tree_rss_kib(agent), sunreclaim_kib()
        t0 = time.perf_counter()
        netsim("apply", "-c", name, "-f", str(tmp / "app.yaml"), "--timeout", "1800")
        pods = json.loads(netsim("get", "pods", "-c", name, "-l", "app=scale", "-o", "json").stdout)["items"]
        apply_s = time.perf_counter() - t0
        running = sum(p["status"].get("phase") == "Running" for p in pods)
        ips = {p["status"].get("podIP") for p in pods}
        per_node: dict[str, int] = {}
        for p in pods:
            per_node[p["spec"]["nodeName"]] = per_node.get(p["spec"]["nodeName"], 0) + 1
        time.sleep(2)
        rss1, slab1 = tree_rss_kib(agent), sunreclaim_kib()
        print(f"{args.pods} pods on {args.nodes} nodes: up {up_s:.1f}s, apply -> {running} Running in {apply_s:.1f}s "
              f"({len(ips)} distinct IPs; pods per node {min(per_node.values())}-{max(per_node.values())})")
        print(f"agent (with its CNI server workers): {rss0 / 1024:.0f} MiB before, {rss1 / 1024:.0f} MiB with "
              f"the pods: {(rss1 - rss0) / args.pods:.1f} KiB per pod, {rss1 / 1024 / args.nodes:.1f} MiB per node")
        slab = slab1 - slab0
        print(f"kernel unreclaimable slab: +{slab / 1024:.0f} MiB, {slab / args.pods:.0f} KiB per pod")
        ok = running == args.pods and len(ips) == args.pods
    finally:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "netsim", "down", name], capture_output=True, cwd=ROOT, timeout=600)
        down_s = time.perf_counter() - t0
        left = {"namespaces": len(kernel.list_netns(names.cluster_prefix(name))),
                "etc-netns": len(kernel.list_netns_etc(names.cluster_prefix(name))),
                "agents": len(daemon.agent_pids(name)), "plugin servers": len(daemon.plugin_server_pids()),
                "state": int(state.cluster_dir(name).exists())}
        print(f"down {down_s:.1f}s; left behind: {left}")
        ok = ok and not any(left.values())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
