"""flannel's overlay (netsim.node.overlay) on real namespaces: nodes on an underlay LAN, a cni0
bridge and one pod in each, then `converge` with the other nodes' leases; packets prove it."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import select
import socket
import subprocess
import time
from dataclasses import dataclass, field

import pytest

from netsim import kernel
from netsim.kernel.ping import ping
from netsim.model import names
from netsim.node import overlay

NETWORK = "10.244.0.0/16"
VXLAN = overlay.Backend()
HOST_GW = overlay.Backend(type="host-gw")
ETH_P_ALL = 0x0003


@dataclass
class Overlay:
    """A cluster whose nodes each have cni0 with ``10.244.<i>.1/24`` and a pod at ``.2``."""

    c: object
    subnets: dict[str, str] = field(default_factory=dict)
    pods: dict[str, str] = field(default_factory=dict)  # node -> pod namespace

    def node(self, name):
        return self.c.members[name]

    def pod_ip(self, name) -> str:
        return str(ipaddress.ip_network(self.subnets[name]).network_address + 2)

    def lease(self, name) -> overlay.Lease:
        return overlay.Lease(self.subnets[name], self.node(name).ip, overlay.vtep_mac(name))

    def converge(self, name, backend=VXLAN, *, remotes=None, prefixlen=24, subnet=None) -> dict:
        m = self.node(name)
        others = [n for n in self.subnets if n != name] if remotes is None else remotes
        return overlay.converge(m.netns, node_ip=m.ip, underlay_prefixlen=prefixlen, uplink=names.NODE_UPLINK,
                                network=NETWORK, subnet=subnet or self.subnets[name], backend=backend,
                                mac=overlay.vtep_mac(name), underlay_mtu=1500,
                                remotes=[self.lease(o) for o in others])

    def converge_all(self, backend=VXLAN, **kw) -> dict[str, dict]:
        return {n: self.converge(n, backend, **kw) for n in self.subnets}

    def ip(self, name, *args) -> str:
        """`ip ARGS` in node ``name``'s namespace."""
        return subprocess.run(["ip", "-n", self.node(name).netns, *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout

    def bridge_fdb(self, name) -> str:
        return subprocess.run(["ip", "netns", "exec", self.node(name).netns, "bridge", "fdb", "show", "dev",
                               overlay.DEVICE], capture_output=True, text=True, check=True, timeout=10).stdout

    def iptables(self, name) -> str:
        out = subprocess.run(["ip", "netns", "exec", self.node(name).netns, "iptables-save"], capture_output=True,
                             text=True, check=True, timeout=10).stdout
        return "\n".join(re.sub(r"\[\d+:\d+\]", "", line) for line in out.splitlines() if not line.startswith("#"))

    def snapshot(self, name) -> dict[str, str]:
        """What `ip`, `bridge` and iptables-save show; left out are what moves by itself: bridge
        timers, and operstates linkwatch settles a moment after a port comes up."""
        links = self.ip(name, "link", "show")
        vxlan = overlay.DEVICE in links
        return {"link": re.sub(r" state \S+", "", links), "addr": re.sub(r" state \S+", "", self.ip(name, "addr")),
                "vxlan": self.ip(name, "-d", "link", "show", overlay.DEVICE) if vxlan else "",
                "neigh": self.ip(name, "neigh", "show", "dev", overlay.DEVICE) if vxlan else "",
                "fdb": self.bridge_fdb(name) if vxlan else "",
                "route": self.ip(name, "route", "show", "table", "all"), "iptables": self.iptables(name)}


def build(make_cluster, nodes=("n1", "n2", "n3"), *, ips=None, hosts=()) -> Overlay:
    c = make_cluster(nodes=(), hosts=())
    for i, n in enumerate(nodes):
        c.add_node(n, role="control-plane" if i == 0 else "worker", ip=(ips or {}).get(n))
    for h in hosts:
        c.add_host(h)
    c.up()
    o = Overlay(c)
    for i, n in enumerate(nodes, start=1):
        o.subnets[n] = f"10.244.{i}.0/24"
        o.pods[n] = _wire_pod(c, n, o.subnets[n], overlay.mtu_for(VXLAN, 1500))
    return o


def _wire_pod(c, node: str, subnet: str, mtu: int) -> str:
    """cni0 with the subnet's .1 in the node, and a pod namespace at .2 on a veth into it."""
    net = ipaddress.ip_network(subnet)
    pod_name = names.netns_name(c.name, f"default.pod-{node}")
    with kernel.Namespace.open(c.members[node].netns) as host, kernel.Namespace.create(pod_name) as pod:
        with host.batch() as b:
            b.add_bridge("cni0", mtu)
            b.add_veth("vpod", "eth0", pod, mtu)
        bridge = host.index("cni0")
        with host.batch() as b:
            b.add_address(bridge, f"{net.network_address + 1}/{net.prefixlen}")
            b.set_link("vpod", master=bridge, up=True)
            b.set_link("cni0", index=bridge, up=True)
        eth0 = pod.index("eth0")
        with pod.batch() as b:
            b.set_link("lo", index=1, up=True)
            b.set_link("eth0", index=eth0, up=True)
            b.add_address(eth0, f"{net.network_address + 2}/{net.prefixlen}")
            b.replace_route("default", gateway=str(net.network_address + 1))
    return pod_name


def reaches(src_netns: str, dst: str, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if ping(src_netns, dst, timeout=0.3) is not None:
            return True
    return False


@contextlib.contextmanager
def capture(netns: str, ifname: str):
    """Frames seen on ``ifname`` in ``netns`` while the body runs (a packet socket, as tcpdump's)."""
    sock = kernel.socket_in(netns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    frames: list[bytes] = []
    try:
        sock.bind((ifname, 0))
        yield frames
        deadline = time.monotonic() + 0.5
        while len(frames) < 200 and time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], 0.05)
            if not ready:
                break
            frames.append(sock.recv(65535))
    finally:
        sock.close()


def decode(frames: list[bytes]):
    from scapy.layers.l2 import Ether

    return [Ether(f) for f in frames]


def received_from(listen_netns: str, send_netns: str, dst: str, port: int, within: float = 3.0) -> str | None:
    """The source address a UDP datagram from ``send_netns`` to ``dst:port`` arrives with."""
    with kernel.socket_in(listen_netns, socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            kernel.socket_in(send_netns, socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("0.0.0.0", port))
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            tx.sendto(b"who am i", (dst, port))
            ready, _, _ = select.select([rx], [], [], 0.3)
            if ready:
                data, (src, _) = rx.recvfrom(100)
                if data == b"who am i":
                    return src
    return None


def unchanged(changes: dict) -> bool:
    return not any(changes.values())


# -- vxlan --------------------------------------------------------------------------------------
def test_vxlan_connects_pods_with_flannels_kernel_objects_and_a_second_converge_changes_nothing(make_cluster):
    o = build(make_cluster)
    with kernel.Namespace.open(o.node("n1").netns) as ns:
        ns.sysctl("net.ipv4.ip_forward", 0)
    first = o.converge_all()
    assert first["n1"]["link"] == 1 and first["n1"]["addresses"] == 1 and first["n1"]["sysctl"] == 1
    assert first["n1"]["routes"] == first["n1"]["neighbours"] == first["n1"]["fdb"] == 2
    assert first["n1"]["iptables"] == 1
    for a in o.subnets:
        for b in o.subnets:
            if a != b:
                assert reaches(o.pods[a], o.pod_ip(b)), f"pod on {a} cannot reach pod on {b}"

    n1, n2, n3 = (o.node(n) for n in ("n1", "n2", "n3"))
    link = o.ip("n1", "-d", "link", "show", overlay.DEVICE)
    assert "mtu 1450 " in link and f"link/ether {overlay.vtep_mac('n1')} " in link
    assert re.search(rf"vxlan id 1 local {n1.ip} dev eth0 .*dstport 8472 nolearning", link), link
    assert "inet 10.244.1.0/32 " in o.ip("n1", "addr", "show", overlay.DEVICE)
    neigh = o.ip("n1", "neigh", "show", "dev", overlay.DEVICE).splitlines()
    assert sorted(line.strip() for line in neigh) == [f"10.244.2.0 lladdr {overlay.vtep_mac('n2')} PERMANENT",
                                                      f"10.244.3.0 lladdr {overlay.vtep_mac('n3')} PERMANENT"]
    fdb = o.bridge_fdb("n1").splitlines()
    assert sorted(line.strip() for line in fdb) == sorted([
        f"{overlay.vtep_mac('n2')} dst {n2.ip} self permanent", f"{overlay.vtep_mac('n3')} dst {n3.ip} self permanent"])
    routes = o.ip("n1", "route").splitlines()
    assert "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink " in routes
    assert "10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink " in routes
    assert any(r.startswith("10.244.1.0/24 dev cni0 proto kernel") for r in routes)
    with kernel.Namespace.open(n1.netns) as ns:
        assert ns.sysctl("net.ipv4.ip_forward") == "1"

    before = {n: o.snapshot(n) for n in o.subnets}
    again = o.converge_all()
    assert all(unchanged(ch) for ch in again.values()), again
    after = {n: o.snapshot(n) for n in o.subnets}
    for n in o.subnets:
        for key in before[n]:
            assert after[n][key] == before[n][key], f"{n}: {key} changed"


def test_vxlan_on_the_wire_is_udp_8472_vni_1_carrying_pod_addresses(make_cluster):
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.vxlan import VXLAN as VXLANHeader

    o = build(make_cluster, ("n1", "n2"))
    o.converge_all()
    assert reaches(o.pods["n1"], o.pod_ip("n2"))
    with capture(o.c.underlay_netns, o.node("n1").uplink) as frames:
        assert ping(o.pods["n1"], o.pod_ip("n2"), timeout=1.0) is not None
    outer = [p for p in decode(frames) if p.haslayer(UDP) and p[UDP].dport == 8472]
    assert outer, f"no UDP 8472 among {len(frames)} frames"
    inner = [(p[IP].src, p[IP].dst, p[VXLANHeader].vni, p[VXLANHeader][IP].src, p[VXLANHeader][IP].dst,
              p[VXLANHeader][ICMP].type) for p in outer if p.haslayer(VXLANHeader) and p[VXLANHeader].haslayer(ICMP)]
    n1, n2 = o.node("n1").ip, o.node("n2").ip
    assert (n1, n2, 1, o.pod_ip("n1"), o.pod_ip("n2"), 8) in inner, inner  # echo request
    assert (n2, n1, 1, o.pod_ip("n2"), o.pod_ip("n1"), 0) in inner, inner  # echo reply
    # The inner frame is addressed VTEP to VTEP.
    assert any(p[VXLANHeader].payload.src == overlay.vtep_mac("n1")
               and p[VXLANHeader].payload.dst == overlay.vtep_mac("n2") for p in outer)


def test_direct_routing_uses_host_routes_on_the_same_underlay_subnet_and_vxlan_beyond(make_cluster):
    from scapy.layers.inet import ICMP, IP, UDP

    # Seen as /25s, n1 and n2 share a subnet and n3 is elsewhere (the LAN itself is one /24).
    o = build(make_cluster, ips={"n1": "192.168.56.2", "n2": "192.168.56.3", "n3": "192.168.56.130"})
    direct = overlay.Backend(direct_routing=True)
    o.converge_all(direct, prefixlen=25)
    routes = o.ip("n1", "route").splitlines()
    assert "10.244.2.0/24 via 192.168.56.3 dev eth0 " in routes
    assert "10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink " in routes
    assert [line.split()[0] for line in o.ip("n1", "neigh", "show", "dev", overlay.DEVICE).splitlines()] == [
        "10.244.3.0"]
    assert [line.split()[2] for line in o.bridge_fdb("n1").splitlines()] == ["192.168.56.130"]
    for a, b in (("n1", "n2"), ("n2", "n1"), ("n1", "n3"), ("n3", "n2")):
        assert reaches(o.pods[a], o.pod_ip(b)), f"pod on {a} cannot reach pod on {b}"

    with capture(o.c.underlay_netns, o.node("n1").uplink) as frames:
        assert ping(o.pods["n1"], o.pod_ip("n2"), timeout=1.0) is not None
        assert ping(o.pods["n1"], o.pod_ip("n3"), timeout=1.0) is not None
    packets = decode(frames)
    plain = {(p[IP].src, p[IP].dst) for p in packets if p.haslayer(ICMP) and not p.haslayer(UDP)}
    tunnelled = {(p[IP].src, p[IP].dst) for p in packets if p.haslayer(UDP) and p[UDP].dport == 8472}
    assert (o.pod_ip("n1"), o.pod_ip("n2")) in plain and (o.pod_ip("n2"), o.pod_ip("n1")) in plain
    assert (o.node("n1").ip, o.node("n3").ip) in tunnelled
    assert not any(o.pod_ip("n3") in pair for pair in plain)
    assert all(unchanged(ch) for ch in o.converge_all(direct, prefixlen=25).values())


def test_a_removed_lease_takes_its_route_neighbour_and_fdb_entry_and_stale_state_goes(make_cluster):
    o = build(make_cluster)
    o.converge_all()
    n1 = o.node("n1")
    with kernel.Namespace.open(n1.netns) as ns:
        dev = ns.index(overlay.DEVICE)
        with ns.batch() as b:  # what an earlier flanneld might have left
            b.replace_route("10.244.99.0/24", gateway="10.244.99.0", oif=dev, onlink=True)
            b.replace_neigh(dev, "10.244.99.0", "02:00:00:00:00:99")
            b.replace_fdb(dev, "02:00:00:00:00:99", "192.168.56.99")
            b.replace_fdb(dev, overlay.vtep_mac("n2"), "192.168.56.98")  # n2's VTEP sent to a wrong place
    changes = o.converge("n1", remotes=["n2"])
    # routes: -99, -n3; neighbours: -99, -n3; fdb: -99, -n3, -n2's wrong remote, +n2's right one
    assert changes["routes"] == 2 and changes["neighbours"] == 2 and changes["fdb"] == 4, changes
    assert changes["link"] == changes["iptables"] == 0
    assert [r.split()[0] for r in o.ip("n1", "route").splitlines() if r.startswith("10.244.")] == [
        "10.244.1.0/24", "10.244.2.0/24"]
    assert o.ip("n1", "neigh", "show", "dev", overlay.DEVICE).split()[:3] == ["10.244.2.0", "lladdr",
                                                                               overlay.vtep_mac("n2")]
    assert o.bridge_fdb("n1").strip() == f"{overlay.vtep_mac('n2')} dst {o.node('n2').ip} self permanent"
    assert reaches(o.pods["n1"], o.pod_ip("n2"))
    assert ping(o.pods["n1"], o.pod_ip("n3"), timeout=0.3) is None
    assert unchanged(o.converge("n1", remotes=["n2"]))


def test_a_changed_vni_or_port_recreates_the_device(make_cluster):
    o = build(make_cluster, ("n1", "n2"))
    o.converge_all()
    other = overlay.Backend(vni=42, port=4789)
    changes = o.converge_all(other)
    assert changes["n1"]["link"] == 1 and changes["n1"]["routes"] == 1, changes
    assert re.search(r"vxlan id 42 .*dstport 4789 ", o.ip("n1", "-d", "link", "show", overlay.DEVICE))
    assert "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink " in o.ip("n1", "route").splitlines()
    assert reaches(o.pods["n1"], o.pod_ip("n2"))


# -- host-gw ------------------------------------------------------------------------------------
def test_host_gw_routes_plain_pod_packets_and_replaces_vxlan(make_cluster):
    from scapy.layers.inet import ICMP, IP, UDP

    o = build(make_cluster)
    o.converge_all()
    changes = o.converge_all(HOST_GW)
    assert changes["n1"]["link"] == 1 and changes["n1"]["routes"] == 2, changes
    for n in o.subnets:
        assert overlay.DEVICE not in o.ip(n, "link", "show")
    routes = o.ip("n1", "route").splitlines()
    assert f"10.244.2.0/24 via {o.node('n2').ip} dev eth0 " in routes
    assert f"10.244.3.0/24 via {o.node('n3').ip} dev eth0 " in routes
    for a in o.subnets:
        for b in o.subnets:
            if a != b:
                assert reaches(o.pods[a], o.pod_ip(b)), f"pod on {a} cannot reach pod on {b}"
    with capture(o.c.underlay_netns, o.node("n1").uplink) as frames:
        assert ping(o.pods["n1"], o.pod_ip("n3"), timeout=1.0) is not None
    packets = decode(frames)
    assert not any(p.haslayer(UDP) and 8472 in (p[UDP].sport, p[UDP].dport) for p in packets)
    icmp = {(p[IP].src, p[IP].dst, p[ICMP].type) for p in packets if p.haslayer(ICMP)}
    assert {(o.pod_ip("n1"), o.pod_ip("n3"), 8), (o.pod_ip("n3"), o.pod_ip("n1"), 0)} <= icmp, icmp
    assert all(unchanged(ch) for ch in o.converge_all(HOST_GW).values())

    back = o.converge_all(VXLAN)  # and back again
    assert back["n1"]["link"] == 1 and back["n1"]["routes"] == 2
    assert "10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink " in o.ip("n1", "route").splitlines()
    assert reaches(o.pods["n1"], o.pod_ip("n3"))


# -- iptables -----------------------------------------------------------------------------------
def flannel_chains(o: Overlay, node: str) -> list[str]:
    return [line for line in o.iptables(node).splitlines() if "FLANNEL" in line]


def test_pods_leave_the_network_masqueraded_and_reach_pods_with_their_own_address(make_cluster):
    o = build(make_cluster, ("n1", "n2"), hosts=("ext",))
    o.converge_all()
    ext = o.node("ext")
    assert received_from(ext.netns, o.pods["n1"], ext.ip, 40001) == o.node("n1").ip
    assert received_from(o.pods["n2"], o.pods["n1"], o.pod_ip("n2"), 40002) == o.pod_ip("n1")
    assert received_from(o.pods["n1"], o.pods["n2"], o.pod_ip("n1"), 40003) == o.pod_ip("n2")

    masq = '-m comment --comment "flanneld masq"'
    fwd = '-m comment --comment "flanneld forward"'
    assert flannel_chains(o, "n1") == [
        ":FLANNEL-FWD - ",
        f"-A FORWARD {fwd} -j FLANNEL-FWD",
        f"-A FLANNEL-FWD -s 10.244.0.0/16 {fwd} -j ACCEPT",
        f"-A FLANNEL-FWD -d 10.244.0.0/16 {fwd} -j ACCEPT",
        ":FLANNEL-POSTRTG - ",
        f"-A POSTROUTING {masq} -j FLANNEL-POSTRTG",
        f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {masq} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 {masq} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 {masq} -j RETURN",
        f"-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 {masq} -j RETURN",
        f"-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 {masq} -j MASQUERADE --random-fully",
        f"-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 {masq} -j MASQUERADE --random-fully",
    ]

    # A new lease rewrites the chain; the jumps stay single; a lost jump comes back.
    changes = o.converge("n1", subnet="10.244.7.0/24")
    assert changes["iptables"] == 1
    rules = flannel_chains(o, "n1")
    assert not any("10.244.1.0/24" in r for r in rules) and sum("10.244.7.0/24" in r for r in rules) == 3
    assert sum(r.startswith("-A POSTROUTING") for r in rules) == 1
    subprocess.run(["ip", "netns", "exec", o.node("n1").netns, "iptables", "-D", "FORWARD", "-m", "comment",
                    "--comment", "flanneld forward", "-j", "FLANNEL-FWD"], check=True, timeout=10)
    assert o.converge("n1", subnet="10.244.7.0/24")["iptables"] == 1
    assert sum(r.startswith("-A FORWARD") for r in flannel_chains(o, "n1")) == 1


def test_remove_takes_device_routes_and_chains_out(make_cluster):
    o = build(make_cluster, ("n1", "n2", "n3"), ips={"n3": "192.168.56.130"})
    o.converge_all(overlay.Backend(direct_routing=True), prefixlen=25)  # a host route and a vxlan route on n1
    assert len([r for r in o.ip("n1", "route").splitlines() if r.startswith("10.244.")]) == 3
    m = o.node("n1")
    overlay.remove(m.netns, network=NETWORK)
    assert overlay.DEVICE not in o.ip("n1", "link", "show")
    assert flannel_chains(o, "n1") == []
    assert [r for r in o.ip("n1", "route", "show", "table", "all").splitlines() if "10.244." in r
            and "dev cni0" not in r] == []
    overlay.remove(m.netns, network=NETWORK)  # nothing left to remove: no error
    assert not reaches(o.pods["n1"], o.pod_ip("n2"), within=0.5)
    assert reaches(o.pods["n2"], o.pod_ip("n3"))  # the other nodes keep theirs


def test_vtep_mac_and_mtu():
    mac = overlay.vtep_mac("worker1")
    assert mac == overlay.vtep_mac("worker1") != overlay.vtep_mac("worker2")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01  # locally administered, unicast
    assert overlay.mtu_for(VXLAN, 1500) == 1450 and overlay.mtu_for(HOST_GW, 1500) == 1500
    with pytest.raises(ValueError):
        overlay.mtu_for(overlay.Backend(type="udp"), 1500)
