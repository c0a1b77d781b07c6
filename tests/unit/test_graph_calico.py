"""`netsim graph` on calico clusters, from recorded kernel state: tests/data/calico/observe-*.json
hold what graph.read_node_state and bird.protocols read from real clusters (VXLAN Always and
Never, 3 nodes over two segments, recorded by tests/e2e/test_calico_observe.py's scenario) and,
for IPIP, the qemu guest's Felix lab (tests/kernel/test_trace_calico.py).  The DOT is read back
through Graphviz (`dot -Tjson0`), so the checks see what Graphviz draws."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from netsim.observe import graph

DATA = Path(__file__).resolve().parents[1] / "data" / "calico"
PODS = {"vxlan": {"a": ("worker1", "10.244.91.2"), "b": ("worker2", "10.244.155.194"),
                  "c": ("control-plane", "10.244.155.1")}}


def recorded(mode: str) -> dict:
    return json.loads((DATA / f"observe-{mode}.json").read_text())


def topology(mode: str, pool: graph.Calico, pods: dict | None = None) -> graph.Topology:
    """A Topology as gather() makes it, from a recording instead of the kernel and the store."""
    doc = recorded(mode)
    segments = doc["segments"]
    more = [(s, f"br-underlay{i}", s.rsplit(".", 1)[0] + ".1") for i, s in enumerate(segments) if i]
    topo = graph.Topology(doc["cluster"], graph.Underlay(segments[0], segments[0].rsplit(".", 1)[0] + ".1",
                                                         "br-underlay", f"nsim.{doc['cluster']}._underlay", 1500,
                                                         more),
                          cni="calico", calico=pool, proxy_mode="iptables", pod_subnet="10.244.0.0/16",
                          service_subnet="10.96.0.0/12")
    members = {m["name"]: m for m in doc["members"]}
    owners = {m["ip"]: m["name"] for m in doc["members"] if m["kind"] == "node"}
    for name, st in doc["nodes"].items():
        for dev in ("vxlan.calico", "tunl0"):
            for cidr in st["addresses"].get(dev, []):
                owners[cidr.split("/")[0]] = name
    for name, st in doc["nodes"].items():
        m = members[name]
        node = graph.Node(name, "control-plane" if name == "control-plane" else "worker", m["ip"], m["netns"], True,
                          segment=graph.segment_of(m["ip"], segments))
        graph.apply_node_state(node, st, "10.244.0.0/16", owners)
        if st.get("bgp") is not None:
            node.bgp = graph.bgp_peers(st["bgp"])
        topo.nodes.append(node)
    topo.hosts = [graph.Host(m["name"], m["ip"], m["netns"], graph.segment_of(m["ip"], segments))
                  for m in doc["members"] if m["kind"] == "host"]
    for pod, (node, ip) in (pods or {}).items():
        topo.pods.append(graph.Pod("default", pod, ip, node, f"nsim.{doc['cluster']}.default.{pod}", "Running"))
    return topo


def layout(dot: str) -> tuple[dict[str, dict], list[dict], dict]:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    doc = json.loads(subprocess.run(["dot", "-Tjson0"], input=dot, capture_output=True, text=True,
                                    check=True).stdout)
    objects = doc["objects"]
    vertices = {o["name"]: o for o in objects if "nodes" not in o and "subgraphs" not in o}
    by_id = {o["_gvid"]: o["name"] for o in objects}
    edges = [{**e, "tail": by_id[e["tail"]], "head": by_id[e["head"]]} for e in doc.get("edges", [])]
    return vertices, edges, doc


NODES = ("control-plane", "worker1", "worker2")


def test_vxlan_nodes_have_vxlan_calico_cali_veths_blocks_and_no_bridge():
    topo = topology("vxlan", graph.Calico("10.244.0.0/16", vxlan="Always", nat_outgoing=True, block_size=26))
    w1 = next(n for n in topo.nodes if n.name == "worker1")
    assert w1.cni0 is None and w1.ipip is None and w1.bgp is None
    assert (w1.vxlan.device, w1.vxlan.vni, w1.vxlan.port, w1.vxlan.local) == ("vxlan.calico", 4096, 4789, w1.ip)
    assert w1.vxlan.addresses == ["10.244.91.0/32"] and w1.vxlan.peers == ["192.168.56.2", "192.168.57.2"]
    assert w1.veths == {"10.244.91.1": "cali681d5020a8c", "10.244.91.2": "caliacd53aa4120"}
    assert w1.blocks == ["10.244.91.0/26"] and w1.routes == []  # tunnel routes are drawn as tunnels
    assert w1.segment == "192.168.56.0/24"


def test_vxlan_picture_pods_on_cali_veths_tunnels_and_segments():
    topo = topology("vxlan", graph.Calico("10.244.0.0/16", vxlan="Always", nat_outgoing=True, block_size=26),
                    PODS["vxlan"])
    vertices, edges, doc = layout(graph.render(topo))
    assert "calico VXLAN Always · natOutgoing · blocks /26" in doc["label"] and "flannel" not in doc["label"]
    assert not any(v.endswith("/cni0") for v in vertices), [v for v in vertices if "cni0" in v]
    for pod, (node, _ip) in PODS["vxlan"].items():
        edge = next(e for e in edges if e["tail"] == f"pod/default/{pod}")
        assert edge["head"] == f"node/{node}" and edge["label"].startswith("cali"), edge
    assert "IPAM block 10.244.91.0/26 (blackhole)" in vertices["node/worker1"]["label"]
    assert "vxlan.calico VXLAN VNI 4096" in vertices["node/worker1/vxlan.calico"]["label"]
    tunnels = {frozenset((e["tail"], e["head"])) for e in edges if e.get("label") == "VXLAN VNI 4096 UDP 4789"}
    assert tunnels == {frozenset((f"node/{a}/vxlan.calico", f"node/{b}/vxlan.calico"))
                       for a, b in itertools.combinations(NODES, 2)}
    # Two segments: the router, a vertex per segment, each member on its own.
    assert "underlay router" in vertices["underlay"]["label"]
    assert "routed to 192.168.57.0/24 · bridge br-underlay1 · gateway 192.168.57.1" in vertices["underlay"]["label"]
    on = {e["tail"]: e["head"] for e in edges if e["head"].startswith("segment/")}
    assert on == {"node/control-plane": "segment/192.168.56.0/24", "node/worker1": "segment/192.168.56.0/24",
                  "node/worker2": "segment/192.168.57.0/24", "host/client": "segment/192.168.57.0/24"}
    assert {(e["tail"], e.get("label")) for e in edges if e["head"] == "underlay"} == {
        ("segment/192.168.56.0/24", "gateway 192.168.56.1"), ("segment/192.168.57.0/24", "gateway 192.168.57.1")}
    assert not any(e.get("label", "").startswith("BGP") for e in edges)  # VXLAN: no BIRD


def test_a_trace_over_calico_maps_cali_veths_vxlan_calico_and_segments():
    topo = topology("vxlan", graph.Calico("10.244.0.0/16", vxlan="Always"), PODS["vxlan"])
    hops = [{"kind": "capture", "netns": "nsim.obsvx.default.a", "interface": "eth0"},
            {"kind": "capture", "netns": "nsim.obsvx.worker1", "interface": "caliacd53aa4120"},
            {"kind": "capture", "netns": "nsim.obsvx.worker1", "interface": "vxlan.calico"},
            {"kind": "capture", "netns": "nsim.obsvx.worker1", "interface": "eth0"},
            {"kind": "capture", "netns": "nsim.obsvx._underlay", "interface": "worker1"},
            {"kind": "capture", "netns": "nsim.obsvx._underlay", "interface": "br-underlay"},
            {"kind": "capture", "netns": "nsim.obsvx._underlay", "interface": "br-underlay1"},
            {"kind": "capture", "netns": "nsim.obsvx._underlay", "interface": "worker2"},
            {"kind": "capture", "netns": "nsim.obsvx.worker2", "interface": "eth0"},
            {"kind": "capture", "netns": "nsim.obsvx.worker2", "interface": "vxlan.calico"},
            {"kind": "capture", "netns": "nsim.obsvx.worker2", "interface": "califf6fc35a693"},
            {"kind": "capture", "netns": "nsim.obsvx.default.b", "interface": "eth0"}]
    path = graph.trace_path(topo, hops)
    assert [v for v, _ in path.vertices] == [
        "pod/default/a", "node/worker1", "node/worker1/vxlan.calico", "node/worker1", "segment/192.168.56.0/24",
        "underlay", "segment/192.168.57.0/24", "node/worker2", "node/worker2/vxlan.calico", "node/worker2",
        "pod/default/b"]
    layout(graph.render(topo, {"hops": hops, "reply": [], "verdict": {"result": "DELIVERED"}}))  # Graphviz takes it


def test_never_draws_the_bgp_full_mesh_established_and_bird_routes():
    topo = topology("never", graph.Calico("10.244.0.0/16", block_size=26))
    vertices, edges, doc = layout(graph.render(topo))
    assert "calico no encapsulation (BGP)" in doc["label"]
    sessions = {frozenset((e["tail"], e["head"])): e for e in edges if e.get("label", "").startswith("BGP")}
    assert set(sessions) == {frozenset((f"node/{a}", f"node/{b}")) for a, b in itertools.combinations(NODES, 2)}
    assert all(e["label"] == "BGP Established" and e["style"] == "solid" for e in sessions.values()), sessions
    for n in topo.nodes:
        assert n.vxlan is None and n.ipip is None and len(n.blocks) >= 1
        label = vertices[f"node/{n.name}"]["label"]
        assert "BIRD: 2/2 BGP sessions Established" in label and "proto bird" in label, label
        assert all(r.endswith("proto bird") for r in n.routes), n.routes
    assert not any("VXLAN" in e.get("label", "") or "IPIP" in e.get("label", "") for e in edges)


def test_bgp_sessions_not_established_and_external_peers():
    topo = topology("never", graph.Calico("10.244.0.0/16"))
    w1 = next(n for n in topo.nodes if n.name == "worker1")
    cp = next(n for n in topo.nodes if n.name == "control-plane")
    w1.bgp = [p if p.address != cp.ip else graph.BgpPeer(p.address, p.type, "start", "Active Socket: Connection "
                                                         "refused") for p in w1.bgp]
    cp.bgp = None  # its BIRD is dead
    cp.bgp_error = "BIRD does not answer"
    w1.bgp.append(graph.BgpPeer("192.168.57.254", "global", "up", "Established"))
    w1.bgp.append(graph.BgpPeer("192.168.99.9", "node specific", "start", "Connect"))
    vertices, edges, _ = layout(graph.render(topo))
    down = next(e for e in edges if {e["tail"], e["head"]} == {"node/control-plane", "node/worker1"}
                and e.get("label", "").startswith("BGP"))
    assert down["label"] == "BGP control-plane: no BIRD / worker1: Active Socket: Connection refused", down
    assert down["style"] == "dashed" and down["color"] == graph.BGP_DOWN_COLOR
    host = next(e for e in edges if e["head"] == "host/client" and e.get("label", "").startswith("BGP"))
    assert host["tail"] == "node/worker1" and host["label"] == "BGP Established"
    assert vertices["bgp/192.168.99.9"]["label"] == "BGP peer\\n192.168.99.9"
    assert "BIRD does not answer" in vertices["node/control-plane"]["label"]


def test_ipip_tunl0_tunnels_from_its_routes():
    doc = recorded("ipip")
    nodes = {}
    owners = {ip: n for n, ip in doc["nodeIPs"].items()}
    owners.update({ip: n for n, ip in doc["tunnelAddresses"].items()})
    for name, st in doc["nodes"].items():
        node = graph.Node(name, "worker", doc["nodeIPs"][name], f"nsim.{doc['cluster']}.{name}", True)
        links = st["links"]
        state = {"links": links, "addresses": {"tunl0": [doc["tunnelAddresses"][name] + "/32"]},
                 "routes": st["routes"], "tunnels": {"tunl0": {"name": "tunl0", **links["tunl0"], "mtu": 1480}},
                 "fdb": {}}
        graph.apply_node_state(node, state, "10.244.0.0/16", owners)
        nodes[name] = node
    n1 = nodes["n1"]
    assert set(n1.ipip.peers) == {ip for n, ip in doc["nodeIPs"].items() if n != "n1"} and n1.vxlan is None
    assert n1.veths == {doc["podIPs"]["n1"]: next(k for k in doc["nodes"]["n1"]["links"] if k.startswith("cali"))}
    topo = graph.Topology(doc["cluster"], graph.Underlay("192.168.56.0/24", "192.168.56.1", "br-underlay",
                                                         "u", 1500),
                          cni="calico", calico=graph.Calico("10.244.0.0/16", ipip="Always"), nodes=list(nodes.values()))
    vertices, edges, g = layout(graph.render(topo))
    assert "calico IPIP Always" in g["label"]
    assert "tunl0 IPIP (IP protocol 4)" in vertices["node/n1/tunl0"]["label"]
    tunnels = {frozenset((e["tail"], e["head"])) for e in edges if e.get("label") == "IPIP (IP protocol 4)"}
    assert tunnels == {frozenset((f"node/{a}/tunl0", f"node/{b}/tunl0"))
                       for a, b in itertools.combinations(sorted(nodes), 2)}
