"""Calico and flannel side by side: how long a new node takes to reach every peer's kernel,
and pod-to-pod throughput per encapsulation beside a same-node pod pair, in one run.

    sudo .venv/bin/python bench/calico.py [--sizes 3,20] [--seconds 3]

Join -> routes.  For each mode (Calico with BGP and no encapsulation: BIRD's ``proto bird``
routes; Calico VXLAN: Felix's ``proto 80`` routes via vxlan.calico; flannel VXLAN: the lease
route via flannel.1) a cluster of N nodes comes up with a DaemonSet, so a node that joins gets
a pod, as every real node does: without one a BGP node has no IPAM block and there is nothing
to route (a VXLAN node has its VTEP address's block from the start).  Then `netsim node add`
runs, as a user does, while this process reads every existing node's routing table over
netlink every 20 ms, and the clock stops when each of them has a new route of the mode's kind
for the new node's block (checked against the store afterwards).  Printed beside it: when
`node add` had the new namespace on the underlay, when the control plane reported it
registered, and when the command returned, so what dominates is visible; and whether any peer
lost one of the routes it had while that went on (`node add` restarts the node agent, which
runs every local node, when the node set changes).

Throughput.  iperf3 (TCP) between two pods on different nodes of the 3-node clusters, for each
mode, beside two pods on one node of the same cluster (the veth path every mode shares, the
peer each figure is divided by).  IPIP is measured only where the kernel has the ipip module.

Every cluster is taken down with `netsim down`, also when a step fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netsim import kernel  # noqa: E402
from netsim.model import names  # noqa: E402

RTPROT_BIRD = 12
RTPROT_FELIX = 80
RTN_UNICAST = 1
POLL_S = 0.02


@dataclass(frozen=True)
class Mode:
    key: str
    label: str
    networking: str  # the scenario's networking: block
    device: str | None  # routes to remote blocks leave by this link (None: any)
    proto: int | None  # ... and carry this protocol (None: any)


MODES = [
    Mode("bgp", "Calico BGP (BIRD), no encap", "  cni: calico\n  calico: {ipipMode: Never, vxlanMode: Never}\n",
         None, RTPROT_BIRD),
    Mode("cvx", "Calico VXLAN (Felix)", "  cni: calico\n  calico: {ipipMode: Never, vxlanMode: Always}\n",
         "vxlan.calico", RTPROT_FELIX),
    Mode("fvx", "flannel VXLAN (lease watch)", "  cni: flannel\n  backend: vxlan\n", "flannel.1", None),
]
IPIP = Mode("ipip", "Calico IPIP", "  cni: calico\n  calico: {ipipMode: Always, vxlanMode: Never}\n", "tunl0",
            RTPROT_FELIX)

DAEMONSET = """apiVersion: apps/v1
kind: DaemonSet
metadata: {name: probe}
spec:
  selector: {matchLabels: {app: probe}}
  template:
    metadata: {labels: {app: probe}}
    spec:
      containers: [{name: c, image: pause}]
"""

PODS = "\n---\n".join(f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  containers: [{{name: c, image: iperf3}}]""" for name, node in (("a", "worker1"), ("b", "worker1"), ("c", "worker2")))


def scenario(mode: Mode, n: int) -> str:
    nodes = "\n".join(["  - {name: control-plane, role: control-plane}"]
                      + [f"  - {{name: worker{i}}}" for i in range(1, n)])
    return (f"apiVersion: netsim/v1alpha1\nkind: Scenario\nname: ignored\nnodes:\n{nodes}\n"
            f"networking:\n{mode.networking}  podSubnet: 10.244.0.0/16\n")


def netsim(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netsim", *args], cwd=ROOT, capture_output=True, text=True,
                          check=check, timeout=timeout)


def pods(cluster: str) -> list[dict]:
    return json.loads(netsim("get", "pods", "-o", "json", "-c", cluster).stdout)["items"]


def wait_running(cluster: str, want: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        running = sum(p.get("status", {}).get("phase") == "Running" for p in pods(cluster))
        if running >= want:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{cluster}: {running}/{want} pods Running after {timeout:.0f} s")
        time.sleep(0.2)


# -- join -> routes -------------------------------------------------------------------------------
@dataclass
class Peer:
    node: str
    ns: kernel.Namespace
    baseline: set[str] = field(default_factory=set)
    new: set[str] = field(default_factory=set)
    seen_at: float | None = None
    lost_max: int = 0


def matching(ns: kernel.Namespace, mode: Mode) -> set[str]:
    """The destinations of this node's routes to other nodes' blocks, as the mode programs them."""
    index = None
    if mode.device is not None:
        link = ns.link(mode.device)
        if link is None:
            return set()
        index = link["index"]
    return {r["dst"] for r in ns.route_entries()
            if r["type"] == RTN_UNICAST and r["dst"] != "default"
            and (index is None or r["oif"] == index) and (mode.proto is None or r["proto"] == mode.proto)}


def watch(peers: list[Peer], mode: Mode, t0: float, returned: threading.Event, stop: threading.Event,
          deadline: float) -> None:
    while not stop.is_set() and time.monotonic() < deadline:
        now_all = True
        for p in peers:
            have = matching(p.ns, mode)
            p.lost_max = max(p.lost_max, len(p.baseline - have))
            if p.seen_at is None:
                fresh = have - p.baseline
                if fresh:
                    p.seen_at, p.new = time.monotonic() - t0, fresh
                else:
                    now_all = False
        if now_all and returned.is_set():
            return  # until `node add` returns, for losses: its agent restart may still be under way
        time.sleep(POLL_S)


def blocks(cluster: str, mode: Mode, store=None) -> dict[str, set[str]]:
    """Each node's blocks from the store: its BlockAffinities (Calico), its lease (flannel: the
    Node's spec.podCIDR)."""
    from netsim.api.store import open_store
    from netsim.fabric import load_cluster
    from netsim.model import k8s

    own = store is None
    if own:
        store = open_store(load_cluster(cluster).store_url)
    out: dict[str, set[str]] = {}
    try:
        if mode.key == "fvx":
            for n in store.list(k8s.prefix("Node"))[0]:
                if n.get("spec", {}).get("podCIDR"):
                    out.setdefault(n["metadata"]["name"], set()).add(n["spec"]["podCIDR"])
        else:
            for a in store.list(k8s.prefix("BlockAffinity"))[0]:
                out.setdefault(a["spec"]["node"], set()).add(a["spec"]["cidr"])
    finally:
        if own:
            store.close()
    return out


def milestones(cluster: str, mode: Mode, new: str, peers: list[str], t0: float, marks: dict[str, float],
               done: threading.Event, deadline: float) -> None:
    """When the node agent that ran before `node add` has exited and its successor started, when
    the new node's block is in the store, and (BGP) when every peer's BIRD has its session to the
    new node Established; polled every 100 ms (coarser than the routes: these only say where
    the time goes)."""
    from netsim.api.store import NotFound, open_store
    from netsim.fabric import daemon, load_cluster
    from netsim.model import k8s
    from netsim.node.calico import bird

    store = open_store(load_cluster(cluster).store_url)
    before = set(daemon.agent_pids(cluster))
    try:
        new_ip = None
        while not done.is_set() and time.monotonic() < deadline:
            if "agent_started" not in marks:
                pids = set(daemon.agent_pids(cluster))
                if "agent_stopped" not in marks and not pids & before:
                    marks["agent_stopped"] = time.monotonic() - t0
                if pids - before:
                    marks["agent_started"] = time.monotonic() - t0
            if "block" not in marks and blocks(cluster, mode, store).get(new):
                marks["block"] = time.monotonic() - t0
            if mode.key == "bgp" and "sessions" not in marks:
                if new_ip is None:
                    try:
                        node = store.get(k8s.key("Node", None, new))
                        new_ip = next((a["address"] for a in node.get("status", {}).get("addresses", [])
                                       if a["type"] == "InternalIP"), None)
                    except NotFound:
                        pass
                if new_ip is not None and all(established(bird.bird_dir(cluster) / f"{p}.ctl", new_ip)
                                              for p in peers):
                    marks["sessions"] = time.monotonic() - t0
            if "block" in marks and "agent_started" in marks and (mode.key != "bgp" or "sessions" in marks):
                return
            done.wait(0.1)
    finally:
        store.close()


def established(ctl: Path, peer_ip: str) -> bool:
    from netsim.node.calico import bird

    try:
        return any(r["peerAddress"] == peer_ip and r["info"].startswith("Established") for r in bird.protocols(ctl))
    except (OSError, bird.BirdError):
        return False


def settle(cluster: str, mode: Mode, peers: list[Peer], timeout: float = 60) -> None:
    """Until every node routes to every other node's blocks, so the baseline is the steady state
    (BIRD spreads the blocks of the DaemonSet's pods a little after the pods run)."""
    deadline = time.monotonic() + timeout
    while True:
        owned = blocks(cluster, mode)
        short = {p.node: sorted(set().union(*(b for n, b in owned.items() if n != p.node)) - matching(p.ns, mode))
                 for p in peers}
        short = {k: v for k, v in short.items() if v}
        if not short:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{cluster}: routes to other nodes' blocks missing after {timeout:.0f} s: {short}")
        time.sleep(0.1)


@dataclass
class Join:
    mode: Mode
    n: int
    last_peer: float
    first_peer: float
    underlay: float | None
    control_plane: float | None
    returned: float
    block: float | None
    sessions: float | None
    agent_stopped: float | None
    agent_started: float | None
    lost: int
    peers: int


def join(cluster: str, mode: Mode, n: int, timeout: float = 120) -> Join:
    new = f"worker{n}"
    peers = []
    watcher = marker = None
    try:
        for node in ["control-plane"] + [f"worker{i}" for i in range(1, n)]:
            ns = kernel.Namespace.open(names.netns_name(cluster, node))
            peers.append(Peer(node, ns))
        settle(cluster, mode, peers)
        for p in peers:
            p.baseline = matching(p.ns, mode)
        marks: dict[str, float] = {}
        done, returned_evt = threading.Event(), threading.Event()
        t0 = time.monotonic()
        watcher = threading.Thread(target=watch, args=(peers, mode, t0, returned_evt, done, t0 + timeout), daemon=True)
        watcher.start()
        marker = threading.Thread(target=milestones, daemon=True,
                                  args=(cluster, mode, new, [p.node for p in peers], t0, marks, done, t0 + timeout))
        marker.start()
        proc = subprocess.Popen([sys.executable, "-m", "netsim", "node", "add", new, "-c", cluster,
                                 "--timeout", str(timeout)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        stderr = []
        for line in proc.stderr:
            stderr.append(line)
            if "on the underlay" in line:
                marks.setdefault("underlay", time.monotonic() - t0)
            elif "control plane:" in line:
                marks.setdefault("control_plane", time.monotonic() - t0)
        rc = proc.wait(timeout=timeout)
        returned = time.monotonic() - t0
        returned_evt.set()
        if rc != 0:
            raise RuntimeError(f"netsim node add {new} exited {rc}: {''.join(stderr)[-2000:]}")
        watcher.join(timeout=max(1.0, t0 + timeout - time.monotonic()))
        marker.join(timeout=max(1.0, t0 + timeout - time.monotonic()))
        done.set()
        marker.join(timeout=5)
        missing = [p.node for p in peers if p.seen_at is None]
        if missing:
            raise RuntimeError(f"{mode.label}, {n} nodes: no route to {new}'s block on {', '.join(missing)} "
                               f"after {timeout:.0f} s")
        theirs = blocks(cluster, mode).get(new, set())
        wrong = [f"{p.node}: {sorted(p.new)}" for p in peers if not p.new & theirs]
        if wrong:
            raise RuntimeError(f"{mode.label}: the new routes are not {new}'s blocks {sorted(theirs)}: {wrong}")
        seen = [p.seen_at for p in peers]
        return Join(mode, n, max(seen), min(seen), marks.get("underlay"), marks.get("control_plane"), returned,
                    marks.get("block"), marks.get("sessions"), marks.get("agent_stopped"),
                    marks.get("agent_started"), max(p.lost_max for p in peers), len(peers))
    finally:
        if watcher is not None:
            done.set()  # a failed step: stop the pollers before their namespaces close
            watcher.join(timeout=5)
            marker.join(timeout=5)
        for p in peers:
            p.ns.close()


# -- throughput ------------------------------------------------------------------------------------
def iperf(cluster: str, client: str, server: str, server_ip: str, seconds: int) -> tuple[float, int]:
    ns = lambda pod: names.netns_name(cluster, f"default.{pod}")  # noqa: E731
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


def throughput(cluster: str, tmp: Path, seconds: int, running_before: int) -> dict[str, tuple[float, int]]:
    f = tmp / "pods.yaml"
    f.write_text(PODS)
    netsim("apply", "-f", str(f), "-c", cluster)
    wait_running(cluster, running_before + 3)
    ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods(cluster)}
    return {"same node": iperf(cluster, "a", "b", ips["b"], seconds),
            "across nodes": iperf(cluster, "a", "c", ips["c"], seconds)}


def ipip_supported(cluster: str) -> bool:
    from netsim.fabric.requirements import link_kind_supported

    return link_kind_supported(cluster, "ipip")


# -- the run ----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,20", help="cluster sizes before the join (nodes)")
    parser.add_argument("--seconds", type=int, default=3, help="iperf3 duration per path")
    parser.add_argument("--modes", default=",".join(m.key for m in MODES))
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/calico.py creates namespaces: run it as root")
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = [m for m in MODES if m.key in args.modes.split(",")]
    tag = f"cb{os.getpid() % 1000}"
    joins: list[Join] = []
    rates: dict[str, dict[str, tuple[float, int]]] = {}
    started = time.monotonic()

    def step(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {msg}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="netsim-calico-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        os.environ["NETSIM_STATE_DIR"] = str(tmp / "state")
        kernel.ensure_netns_dir()
        ipip = ipip_supported(tag)
        if ipip:
            modes.append(IPIP)
        for mode in modes:
            for n in sizes:
                cluster = f"{tag}{mode.key}{n}"
                (tmp / "s.yaml").write_text(scenario(mode, n))
                (tmp / "ds.yaml").write_text(DAEMONSET)
                try:
                    step(f"{cluster}: up, {n} nodes, {mode.label}")
                    netsim("up", str(tmp / "s.yaml"), "--name", cluster)
                    netsim("apply", "-f", str(tmp / "ds.yaml"), "-c", cluster)
                    wait_running(cluster, n - 1)  # the control plane's taint keeps the DaemonSet off it
                    if mode is not IPIP:
                        step(f"{cluster}: node add")
                        joins.append(join(cluster, mode, n))
                        wait_running(cluster, n)
                    if n == min(sizes):
                        step(f"{cluster}: iperf3")
                        rates[mode.label] = throughput(cluster, tmp, args.seconds, n if mode is not IPIP else n - 1)
                finally:
                    step(f"{cluster}: down")
                    netsim("down", cluster, check=False)
    report(joins, rates, args.seconds, ipip, time.monotonic() - started)


def report(joins: list[Join], rates: dict, seconds: int, ipip: bool, took: float) -> None:
    print("join -> routes: `netsim node add` started -> every existing node's kernel has a route to the new "
          f"node's block (polled every {POLL_S * 1000:.0f} ms; s)")
    print(f"{'mode':<28} {'nodes':>5} {'all peers':>9} {'first':>6} | {'underlay':>8} {'old agent':>9} "
          f"{'new agent':>9} {'block':>6} {'BGP up':>6} {'registered':>10} {'add done':>8} | {'lost':>4}")
    fmt = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
    for j in joins:
        print(f"{j.mode.label:<28} {j.n:>2}+1 {j.last_peer:>9.2f} {j.first_peer:>6.2f} | {fmt(j.underlay):>8} "
              f"{fmt(j.agent_stopped):>9} {fmt(j.agent_started):>9} {fmt(j.block):>6} {fmt(j.sessions):>6} "
              f"{fmt(j.control_plane):>10} {j.returned:>8.2f} | {j.lost:>4d}")
    print("  all peers / first: the last and the first existing node with the route.  Where the time goes, in s "
          "from the start:\n  underlay: the new namespace is on the underlay; old agent: the node agent that ran "
          "every node has exited\n  (`node add` restarts it: the node set changed); new agent: its successor's "
          "process exists; block: the new\n  node's block (Calico affinity, flannel lease) is in the store; "
          "BGP up: every peer's session to it Established;\n  registered: `node add` saw every node registered; "
          "add done: it returned (milestones polled every 100 ms).\n  lost: most of one peer's existing routes of "
          "the mode's kind missing at one poll during all that")
    if rates:
        print(f"\npod -> pod TCP, iperf3 {seconds} s each, 3-node clusters (ratio: to the same cluster's "
              "same-node pair)")
        print(f"{'mode':<30} {'path':<13} {'Gbit/s':>7} {'retrans':>8} {'ratio':>6}")
        for label, paths in rates.items():
            base = paths["same node"][0]
            for path, (gbps, retrans) in paths.items():
                print(f"{label:<30} {path:<13} {gbps:>7.2f} {retrans:>8d} {gbps / base:>6.2f}")
    if not ipip:
        print("IPIP: not measured (kernel has no ipip)")
    print(f"\nwhole bench: {took:.0f} s")


if __name__ == "__main__":
    main()
