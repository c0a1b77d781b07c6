"""`netsim trace` and `netsim graph` on calico clusters: one VXLAN Always and one Never (BGP)
cluster, 3 nodes over two segments (control-plane and worker1 on 192.168.56.0/24, worker2 and
the external host on 192.168.57.0/24), brought up side by side once for the module.  Real
packets: the cali veth, Felix's tunnel route, VXLAN VNI 4096 on UDP 4789 through the
underlay's router, decapsulation on vxlan.calico, the workload route; natOutgoing's
MASQUERADE; BIRD's routes and the router that has none.  IPIP needs a kernel with ipip: see
tests/kernel/test_trace_calico.py (run in a qemu guest)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, K8s, run_netsim, running, unique_name
from tests.e2e.test_graph import layout

SCENARIO = """apiVersion: netsim/v1alpha1
kind: Scenario
name: ignored
nodes:
  - {name: control-plane, role: control-plane}
  - {name: worker1}
  - {name: worker2, subnet: 192.168.57.0/24}
externalHosts:
  - {name: client, subnet: 192.168.57.0/24}
networking:
  cni: calico
  calico: {ipipMode: Never, vxlanMode: MODE}
  underlaySubnets: [192.168.56.0/24, 192.168.57.0/24]
"""
PODS = """apiVersion: v1
kind: Pod
metadata: {name: a}
spec:
  nodeName: worker1
  containers: [{name: c, image: agnhost, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: b}
spec:
  nodeName: worker2
  containers: [{name: c, image: agnhost, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: c}
spec:
  nodeName: control-plane
  containers: [{name: c, image: agnhost, ports: [{containerPort: 8080}]}]
"""
IPS = {"control-plane": "192.168.56.2", "worker1": "192.168.56.3", "worker2": "192.168.57.2"}
NODES = tuple(IPS)


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    """{"vxlan": K8s, "never": K8s}, brought up at the same time."""
    tmp = tmp_path_factory.mktemp("calico-observe")
    env = {**os.environ, "NETSIM_STATE_DIR": str(tmp / "state")}
    names = {"vxlan": unique_name("cov"), "never": unique_name("con")}
    ups = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NETSIM_STATE_DIR", str(tmp / "state"))
        try:
            for mode, name in names.items():
                scenario = tmp / f"{mode}.yaml"
                scenario.write_text(SCENARIO.replace("MODE", "Always" if mode == "vxlan" else "Never"))
                ups[mode] = subprocess.Popen([sys.executable, "-m", "netsim", "up", str(scenario), "--name", name],
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                             cwd=REPO)
            made = {}
            for mode, proc in ups.items():
                _, err = proc.communicate(timeout=120)
                assert proc.returncode == 0, err
                made[mode] = K8s(names[mode], tmp)
                made[mode].apply(PODS)
            for k in made.values():
                assert len(running(k.pods())) == 3, k.pods()
            yield made
        finally:
            for proc in ups.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            for name in names.values():
                assert run_netsim("down", name).returncode == 0


def trace(k: K8s, *args) -> tuple[int, dict]:
    result = k("trace", *args, "-o", "json", check=False)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def pod_ip(k: K8s, name: str) -> str:
    return k.get("pod", name)["status"]["podIP"]


def captures(hops: list[dict]) -> list[tuple[str, str, str]]:
    return [(h["where"], h["interface"], h["direction"]) for h in hops if h["kind"] == "capture"]


def test_vxlan_trace_cali_veth_tunnel_route_vni_4096_router_decapsulation_workload_route(clusters):
    k = clusters["vxlan"]
    code, t = trace(k, "pod/default/a", "pod/default/b", "--port", "8080")
    assert code == 0 and t["verdict"]["result"] == "DELIVERED" and t["verdict"]["where"] == "pod default/b", t
    hops, seen = t["hops"], captures(t["hops"])
    cali = next(i for i, s in enumerate(seen) if s[0] == "node worker1" and s[1].startswith("cali"))
    assert seen[cali - 1] == ("pod default/a", "eth0", "out") and seen[cali][2] == "in"
    assert seen[cali + 1:cali + 3] == [("node worker1", "vxlan.calico", "out"), ("node worker1", "eth0", "out")]
    by = {s: h for s, h in zip(seen, (h for h in hops if h["kind"] == "capture"), strict=True)}
    assert "no bridge (proxy ARP on cali" in by[seen[cali]]["note"] and "169.254.1.1" in by[seen[cali]]["note"]
    wire = by[("node worker1", "eth0", "out")]
    assert {k_: wire["outer"][k_] for k_ in ("src", "dst", "dport", "vni", "encap")} == {
        "src": IPS["worker1"], "dst": IPS["worker2"], "dport": 4789, "vni": 4096, "encap": "vxlan"}, wire
    assert wire["note"] == f"encapsulated: VXLAN VNI 4096, UDP 4789, {IPS['worker1']} -> {IPS['worker2']}"
    assert by[("node worker2", "vxlan.calico", "in")]["note"] == "decapsulated"
    assert seen[-1] == ("pod default/b", "eth0", "in") and seen[-2][1].startswith("cali")
    named = {h["node"] or h["where"]: h for h in hops if h["kind"] == "route"}
    assert named["worker1"]["route"]["kind"] == "tunnel" and "via vxlan.calico" in named["worker1"]["route"]["what"]
    assert "(worker2)" in named["worker1"]["route"]["what"]
    assert named["worker2"]["route"]["kind"] == "workload"
    assert named["underlay"]["router"] == {"from": "192.168.56.0/24", "to": "192.168.57.0/24"}
    # The text output says the same.
    text = k("trace", "pod/default/a", "pod/default/b", "--port", "8080").stdout
    assert "^ encapsulated: VXLAN VNI 4096, UDP 4789" in text and "^ tunnel route (Felix, proto 80)" in text


def test_vxlan_nat_outgoing_masquerades_pods_leaving_the_pool(clusters):
    k = clusters["vxlan"]
    code, t = trace(k, "pod/default/a", "host/client", "--proto", "icmp")
    assert code == 0 and t["verdict"]["result"] == "DELIVERED", t["verdict"]
    masq = next(h for h in t["hops"] if h["kind"] == "rule" and h["chain"] == "cali-nat-outgoing")
    assert masq["node"] == "worker1" and masq["component"] == "Calico (Felix)"
    assert "--match-set cali40masq-ipam-pools src" in masq["rule"] and "-j MASQUERADE" in masq["rule"], masq
    ct = next(h for h in t["hops"] if h["kind"] == "conntrack" and h["node"] == "worker1")
    assert ct["conntrack"]["nat"] == [f"SNAT {pod_ip(k, 'a')} -> {IPS['worker1']}"], ct
    assert t["hops"][-1]["where"] == "host client" and t["hops"][-1]["packet"]["src"] == IPS["worker1"]


def test_vxlan_graph_cali_veths_vxlan_calico_tunnels_segments(clusters):
    k = clusters["vxlan"]
    vertices, edges, doc = layout(k("graph").stdout)
    assert "calico VXLAN Always · natOutgoing" in doc["label"] and "flannel" not in doc["label"]
    assert not any(v.endswith("/cni0") for v in vertices)
    for pod, node in (("a", "worker1"), ("b", "worker2"), ("c", "control-plane")):
        edge = next(e for e in edges if e["tail"] == f"pod/default/{pod}")
        assert edge["head"] == f"node/{node}" and edge["label"].startswith("cali"), edge
    tunnels = {frozenset((e["tail"], e["head"])) for e in edges if e.get("label") == "VXLAN VNI 4096 UDP 4789"}
    assert tunnels == {frozenset((f"node/{a}/vxlan.calico", f"node/{b}/vxlan.calico"))
                       for a, b in itertools.combinations(NODES, 2)}
    assert {e["tail"]: e["head"] for e in edges if e["head"].startswith("segment/")}["node/worker2"] == \
        "segment/192.168.57.0/24"
    assert not any(e.get("label", "").startswith("BGP") for e in edges)


def test_never_bgp_mesh_in_graph_bird_routes_in_trace_and_the_router_without_pod_routes(clusters):
    k = clusters["never"]
    vertices, edges, doc = layout(k("graph").stdout)
    assert "calico no encapsulation (BGP)" in doc["label"]
    sessions = {frozenset((e["tail"], e["head"])): e["label"] for e in edges if e.get("label", "").startswith("BGP")}
    assert sessions == {frozenset((f"node/{a}", f"node/{b}")): "BGP Established"
                        for a, b in itertools.combinations(NODES, 2)}, sessions
    assert "proto bird" in vertices["node/worker1"]["label"]
    # Same segment: BIRD's route straight to the peer, bare pod packets on the wire.
    code, t = trace(k, "pod/default/a", "pod/default/c", "--port", "8080")
    assert code == 0 and t["verdict"]["where"] == "pod default/c", t["verdict"]
    route = next(h for h in t["hops"] if h["kind"] == "route" and h["node"] == "worker1")["route"]
    assert route["kind"] == "bgp" and f"next hop {IPS['control-plane']} (control-plane)" in route["what"], route
    assert not any(h.get("outer") for h in t["hops"])
    # Across segments the next hop is the router, which has no pod routes.
    code, t = trace(k, "pod/default/a", "pod/default/b", "--port", "8080")
    v = t["verdict"]
    assert code == 1 and v["result"] == "DROPPED" and v["where"] == "underlay", v
    assert v["by"] == f"route: the underlay's router has no route to {pod_ip(k, 'b')}"
    route = next(h for h in t["hops"] if h["kind"] == "route" and h["node"] == "worker1")["route"]
    assert route["kind"] == "bgp" and "(the underlay's router)" in route["what"], route
