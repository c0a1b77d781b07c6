"""`netsim trace` on calico clusters, the pure parts over recorded kernel state: IPIP frames
(IP protocol 4, tunl0's captures without a link-layer header), routes named by who made them,
the hop list built from a recorded IPIP trace (tests/data/calico/observe-ipip.json, recorded in
the qemu guest by tests/kernel/test_trace_calico.py), NAT notes, the blackhole verdict and
Felix's iptables-nft rules as iptables prints them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from netsim.observe import packets, routes, trace
from netsim.observe.packets import Flow, parse_frame

DATA = Path(__file__).resolve().parents[1] / "data" / "calico"
POD_NET = "10.244.0.0/16"


def recorded(mode: str) -> dict:
    return json.loads((DATA / f"observe-{mode}.json").read_text())


# -- frames -----------------------------------------------------------------------------------
def test_an_ipip_frame_opens_to_its_inner_packet():
    inner = IP(src="10.244.1.2", dst="10.244.2.3", id=77) / TCP(sport=40000, dport=8080, flags="S")
    raw = bytes(Ether() / IP(src="192.168.56.2", dst="192.168.57.2", proto=4) / inner)
    f = parse_frame(raw)
    assert f.encap == "ipip" and f.vni is None
    assert (f.outer.src, f.outer.dst, f.outer.proto, f.outer.proto_name) == ("192.168.56.2", "192.168.57.2", 4, "IPIP")
    assert (f.packet.src, f.packet.dst, f.packet.dport, f.packet.ident) == ("10.244.1.2", "10.244.2.3", 8080, 77)
    assert f.summary() == "IPIP 192.168.56.2 > 192.168.57.2 | 10.244.1.2:40000 > 10.244.2.3:8080 TCP [S]"
    assert f.encapsulation() == "IPIP (IP protocol 4), 192.168.56.2 -> 192.168.57.2"
    # The traced flow is recognised inside the tunnel as outside it.
    assert Flow(6, "10.244.1.2", 40000, "10.244.2.3", 8080, 77).is_forward(f.packet)


def test_calico_vxlan_frame_says_vni_4096_and_port_4789():
    inner = Ether() / IP(src="10.244.1.2", dst="10.244.2.3", id=5) / ICMP(type=8, id=9)
    raw = bytes(Ether() / IP(src="192.168.56.2", dst="192.168.57.2") / UDP(sport=5555, dport=4789)
                / VXLAN(vni=4096, flags=0x08) / inner)
    f = parse_frame(raw)
    assert f.encap == "vxlan" and f.vni == 4096
    assert f.encapsulation() == "VXLAN VNI 4096, UDP 4789, 192.168.56.2 -> 192.168.57.2"
    assert f.summary().startswith("VXLAN 192.168.56.2:5555 > 192.168.57.2:4789 VNI 4096 | 10.244.1.2 > 10.244.2.3")


def test_a_capture_on_tunl0_has_no_link_header_and_gets_one():
    bare = bytes(IP(src="10.244.1.2", dst="10.244.2.3", id=5) / ICMP(type=8, id=9))
    assert parse_frame(bare) is None  # read as Ethernet it is nonsense
    framed = packets.link_frame(bare, 768)  # ARPHRD_TUNNEL
    assert framed == packets.ETHER_IPV4 + bare and parse_frame(framed).packet.dst == "10.244.2.3"
    ether = bytes(Ether() / IP() / ICMP())
    assert packets.link_frame(ether, packets.ARPHRD_ETHER) == ether


# -- routes -----------------------------------------------------------------------------------
def _table(mode: str, node: str) -> tuple[list[dict], dict[int, str], dict[str, str]]:
    doc = recorded(mode)
    st = doc["nodes"][node]
    owners = {m["ip"]: m["name"] for m in doc["members"] if m["kind"] == "node"}
    for name, other in doc["nodes"].items():
        for cidr in other.get("addresses", {}).get("vxlan.calico", []):
            owners[cidr.split("/")[0]] = name
    return st["routes"], {v["index"]: k for k, v in st["links"].items()}, owners


def test_routes_on_a_vxlan_node_are_named_workload_tunnel_blackhole_default():
    entries, ifnames, owners = _table("vxlan", "worker1")

    def kind(dst):
        r = routes.describe(entries, ifnames, dst, POD_NET, owners)
        return r.kind, r.text, r.what

    k, text, what = kind("10.244.91.2")  # pod a, on this node
    assert (k, text) == ("workload", "10.244.91.2 dev caliacd53aa4120 scope link metric 1024")
    assert "calico CNI plugin's /32" in what and "no bridge" in what
    k, text, what = kind("10.244.155.194")  # pod b, on worker2
    assert (k, text) == ("tunnel", "10.244.155.192/26 via 10.244.155.192 dev vxlan.calico proto 80 onlink")
    assert what == ("tunnel route (Felix, proto 80): VXLAN (VNI 4096, UDP 4789) via vxlan.calico to "
                    "10.244.155.192 (worker2)")
    k, text, what = kind("10.244.91.40")  # in this node's block, no pod
    assert (k, text) == ("blackhole", "blackhole 10.244.91.0/26 proto 80") and "Felix's" in what
    assert kind("192.168.57.254")[:2] == ("default", "default via 192.168.56.1 dev eth0 proto static")
    assert kind("192.168.56.2")[0] == "connected"


def test_routes_bgp_ipip_and_crosssubnet_are_named():
    ifnames = {2: "eth0", 3: "tunl0", 4: "calia"}
    owners = {"192.168.56.3": "worker1"}
    bird = {"dst": "10.244.7.0/26", "gateway": "192.168.56.3", "oif": 2, "proto": 12, "priority": None, "type": 1,
            "scope": 0, "onlink": False}
    r = routes.classify(bird, ifnames, POD_NET, owners)
    assert r.kind == "bgp" and r.text == "10.244.7.0/26 via 192.168.56.3 dev eth0 proto bird"
    assert r.what == "BGP route (BIRD, proto bird): next hop 192.168.56.3 (worker1), unencapsulated on eth0"
    ipip = {**bird, "oif": 3, "proto": 80, "onlink": True}
    r = routes.classify(ipip, ifnames, POD_NET, owners)
    assert r.kind == "tunnel" and "IPIP (IP protocol 4) via tunl0 to 192.168.56.3 (worker1)" in r.what
    assert r.text == "10.244.7.0/26 via 192.168.56.3 dev tunl0 proto 80 onlink"
    same_segment = {**bird, "proto": 80, "onlink": True}
    assert routes.classify(same_segment, ifnames, POD_NET, owners).kind == "felix"
    blackhole = {"dst": "10.244.8.0/26", "gateway": None, "oif": 0, "proto": 12, "type": 6, "scope": 0}
    r = routes.classify(blackhole, ifnames, POD_NET)
    assert r.text == "blackhole 10.244.8.0/26 proto bird" and "BIRD's" in r.what
    flannel = {"dst": "10.244.2.0/24", "gateway": "10.244.2.0", "oif": 5, "proto": 3, "type": 1, "scope": 0,
               "onlink": True}
    assert routes.classify(flannel, {5: "flannel.1"}, POD_NET).kind == "flannel"


def test_lookup_prefers_the_longest_prefix_then_the_lowest_metric():
    entries = [{"dst": "10.244.0.0/16", "priority": 0}, {"dst": "10.244.1.0/26", "priority": 1024},
               {"dst": "10.244.1.0/26", "priority": 100}, {"dst": "default"}]
    assert routes.lookup(entries, "10.244.1.5") == {"dst": "10.244.1.0/26", "priority": 100}
    assert routes.lookup(entries, "10.244.9.5")["dst"] == "10.244.0.0/16"
    assert routes.lookup(entries, "8.8.8.8")["dst"] == "default"
    assert routes.lookup([], "8.8.8.8") is None


# -- the hop list from a recorded IPIP trace -------------------------------------------------------
def _replay_ipip():
    doc = recorded("ipip")
    c = doc["cluster"]
    node_netns = {f"nsim.{c}.{n}": n for n in doc["nodeIPs"]}
    pod_netns = {f"nsim.{c}.default.pod-{n}": n for n in doc["podIPs"]}
    labels = {f"nsim.{c}._underlay": "underlay", **{k: f"node {v}" for k, v in node_netns.items()},
              **{k: f"pod default/pod-{v}" for k, v in pod_netns.items()}}
    where = trace.Places(labels, {**node_netns, **pod_netns}, list(node_netns),
                         {k: f"pod/default/pod-{v}" for k, v in pod_netns.items()},
                         {ip: f"nsim.{c}.default.pod-{n}" for n, ip in doc["podIPs"].items()})
    where.proxy_arp = {(k, i): True for k in node_netns for i in doc["nodes"][node_netns[k]]["links"]
                       if i.startswith("cali")}
    p = doc["flow"]
    flow = Flow(1, p["src"], p["sport"], p["dst"], p["dport"], p["ipId"])
    follow = packets.Follower(flow)
    caps = [trace.Capture(x["timeNs"], x["netns"], x["ifname"], x["outgoing"], parse_frame(bytes.fromhex(x["frame"])),
                          bytes.fromhex(x["frame"])) for x in doc["captures"]]
    for cap in caps:
        follow.learn(cap.frame.packet)
    fwd = [cap for cap in caps if follow.direction(cap.frame.packet) == "fwd"]
    rev = [cap for cap in caps if follow.direction(cap.frame.packet) == "rev"]
    return doc, where, fwd, rev


def test_recorded_ipip_trace_shows_encapsulation_on_eth0_and_decapsulation_on_tunl0():
    doc, where, fwd, rev = _replay_ipip()
    ips, pods = doc["nodeIPs"], doc["podIPs"]
    src = next(n for n, ip in pods.items() if ip == doc["flow"]["src"])
    dst = next(n for n, ip in pods.items() if ip == doc["flow"]["dst"])
    hops = trace.build_hops(fwd, {}, where, {})
    seen = [(h.where, h.interface, h.direction) for h in hops]
    cali = next(i for i, s in enumerate(seen) if s[0] == f"node {src}" and s[1].startswith("cali"))
    assert seen[cali - 1] == (f"pod default/pod-{src}", "eth0", "out")
    assert seen[cali + 1:cali + 3] == [(f"node {src}", "tunl0", "out"), (f"node {src}", "eth0", "out")], seen
    assert hops[cali].note.startswith("routed from the pod's veth, no bridge (proxy ARP on cali")
    wire = hops[cali + 2]
    assert wire.note == f"encapsulated: IPIP (IP protocol 4), {ips[src]} -> {ips[dst]}"
    assert wire.detail["outer"] == {"src": ips[src], "dst": ips[dst], "proto": "IPIP", "encap": "ipip"}
    assert wire.summary.startswith(f"IPIP {ips[src]} > {ips[dst]} | {pods[src]} > {pods[dst]} ICMP echo-request")
    assert any(h.where == "underlay" and h.summary.startswith("IPIP ") for h in hops)
    decap = seen.index((f"node {dst}", "tunl0", "in"))
    assert seen[decap - 1] == (f"node {dst}", "eth0", "in") and hops[decap].note == "decapsulated"
    assert seen[-1] == (f"pod default/pod-{dst}", "eth0", "in")
    # The reply is encapsulated by the other node.
    back = trace.build_hops(rev, {}, where, {})
    out = next(h for h in back if h.detail.get("outer"))
    assert out.detail["outer"]["src"] == ips[dst] and out.note.startswith("encapsulated: IPIP")


def test_recorded_ipip_route_tables_name_the_tunnel_and_workload_routes():
    doc = recorded("ipip")
    owners = {ip: n for n, ip in doc["nodeIPs"].items()}
    dst = next(n for n, ip in doc["podIPs"].items() if ip == doc["flow"]["dst"])
    for node, st in doc["nodes"].items():
        ifnames = {v["index"]: k for k, v in st["links"].items()}
        r = routes.describe(st["routes"], ifnames, doc["flow"]["dst"], POD_NET, owners)
        if node == dst:
            assert r.kind == "workload" and r.device.startswith("cali"), r
        else:
            assert r.kind == "tunnel" and r.device == "tunl0" and r.gateway == doc["nodeIPs"][dst], r
            assert f"IPIP (IP protocol 4) via tunl0 to {doc['nodeIPs'][dst]} ({dst})" in r.what


def test_text_output_names_route_kinds_under_their_hop():
    hop = trace.Hop("route", "ns", "node worker1", "route 10.244.2.3 via 10.244.2.0 dev vxlan.calico", "worker1",
                    note="tunnel route (Felix, proto 80): VXLAN ...")
    cap = trace.Hop("capture", "ns", "node worker1", "x", "worker1", "caliacd53aa4120", "in")
    lines = trace._hop_lines([cap, hop])
    assert lines[0].split()[3:5] == ["caliacd53aa4120", "in"]  # 15-character cali names keep the columns
    assert lines[2].strip() == "^ tunnel route (Felix, proto 80): VXLAN ..."


# -- NAT notes, verdicts, rule texts -------------------------------------------------------------
def test_icmp_nat_notes_say_addresses_and_the_echo_id():
    q = parse_frame(bytes(Ether() / IP(src="192.168.57.254", dst="192.168.56.3", id=1) / ICMP(type=0, id=42515))).packet
    p = parse_frame(bytes(Ether() / IP(src="192.168.57.254", dst="10.244.91.2", id=1) / ICMP(type=0, id=35497))).packet
    assert trace._nat_notes(p, q) == ["DNAT 192.168.56.3 -> 10.244.91.2", "echo id 42515 -> 35497"]
    q2 = parse_frame(bytes(Ether() / IP(src="10.244.91.2", dst="192.168.57.254") / ICMP(type=8, id=7))).packet
    p2 = parse_frame(bytes(Ether() / IP(src="192.168.56.3", dst="192.168.57.254") / ICMP(type=8, id=7))).packet
    assert trace._nat_notes(p2, q2) == ["SNAT 10.244.91.2 -> 192.168.56.3"]


def test_a_packet_that_stops_at_a_blackhole_is_dropped_by_the_route():
    raw = bytes(Ether() / IP(src="10.244.91.2", dst="10.244.155.250", id=3) / ICMP(type=8, id=4))
    cap = trace.Capture(1, "nsim.x.worker2", "vxlan.calico", False, parse_frame(raw), raw)
    where = trace.Places({"nsim.x.worker2": "node worker2"}, {"nsim.x.worker2": "worker2"}, ["nsim.x.worker2"], {})
    entries, ifnames, owners = _table("vxlan", "worker2")
    stopped = routes.describe(entries, ifnames, "10.244.155.250", POD_NET, owners)
    flow = Flow(1, "10.244.91.2", 4, "10.244.155.250", 0, 3)
    v = trace.verdict_of(flow, [cap], [], [], where, "nsim.x.a", SimpleNamespace(members={}, underlay_netns="u"),
                         None, stopped)
    assert v["result"] == "DROPPED" and v["where"] == "node worker2" and v["by"].startswith("route: blackhole"), v
    assert v["reason"] == "blackhole 10.244.155.192/26 proto 80 (no pod has 10.244.155.250)"
    # Without a blackhole it stays LOST.
    v = trace.verdict_of(flow, [cap], [], [], where, "nsim.x.a", SimpleNamespace(members={}, underlay_netns="u"),
                         None, None)
    assert v["result"] == "LOST"


NFT_LISTING = """table ip nat { # handle 3
\tchain POSTROUTING { # handle 2
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tcounter packets 0 bytes 0 jump cali-POSTROUTING # handle 9
\t}
\tchain cali-nat-outgoing { # handle 6
\t\txt match "set" xt match "set" counter packets 1 bytes 84 xt target "MASQUERADE" # handle 7
\t}
\tchain cali-POSTROUTING { # handle 8
\t\tcounter packets 0 bytes 0 jump cali-nat-outgoing # handle 10
\t}
}
"""
SAVED = """*nat
:POSTROUTING ACCEPT [0:0]
:cali-POSTROUTING - [0:0]
:cali-nat-outgoing - [0:0]
-A POSTROUTING -j cali-POSTROUTING
-A cali-POSTROUTING -j cali-nat-outgoing
-A cali-nat-outgoing -m set --match-set cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools dst \
-j MASQUERADE --random-fully
COMMIT
""".replace("\\\n", "")


def test_felix_iptables_nft_rules_read_as_iptables_save_prints_them():
    listing = trace.parse_nft_listing(NFT_LISTING)
    saved = trace.parse_iptables_save(SAVED)
    assert trace.iptables_nft_text(listing, saved, "nat", "cali-nat-outgoing", 7) == (
        "-m set --match-set cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools dst "
        "-j MASQUERADE --random-fully")
    assert trace.iptables_nft_text(listing, saved, "nat", "POSTROUTING", 9) == "-j cali-POSTROUTING"
    assert trace.iptables_nft_text(listing, saved, "nat", "POSTROUTING", 99) is None


@pytest.mark.parametrize("chain,component", [("cali-nat-outgoing", "Calico (Felix)"), ("KUBE-SERVICES", "kube-proxy")])
def test_components(chain, component):
    from netsim.observe.nftrace import RuleEvent

    assert trace._component(RuleEvent("iptables", "nat", chain, "rule")) == component


def test_a_pod_packet_the_underlay_router_cannot_route_is_dropped_there():
    """Never across segments: BIRD's next hop is the router, which has no pod routes."""
    raw = bytes(Ether() / IP(src="10.244.91.1", dst="10.244.155.193", id=3) / TCP(sport=4, dport=8080))
    cap = trace.Capture(1, "nsim.x._underlay", "br-underlay", False, parse_frame(raw), raw)
    where = trace.Places({"nsim.x._underlay": "underlay"}, {}, [], {}, pod_subnet=POD_NET)
    flow = Flow(6, "10.244.91.1", 4, "10.244.155.193", 8080, 3)
    cluster = SimpleNamespace(members={}, underlay_netns="nsim.x._underlay")
    v = trace.verdict_of(flow, [cap], [], [], where, "nsim.x.a", cluster, None, routes.no_route("10.244.155.193"))
    assert v["result"] == "DROPPED" and v["where"] == "underlay", v
    assert v["by"] == "route: the underlay's router has no route to 10.244.155.193" and "CrossSubnet" in v["reason"]
