"""Felix (netsim.node.calico.felix) on real namespaces: three nodes on an underlay LAN seen as
two /25 segments (n1 and n2 share one, n3 is on the other), a datastore in memory with the
default IPPool in each mode, calico-style pods (a /32 on a veth whose host end is cali..., default
via 169.254.1.1 answered by proxy ARP), then Felix's converge; kernel state and packets prove it.

This machine's kernel has no ipip: the IPIP tests run in a qemu guest (netsim.kernel.guest)
through ``test_ipip_in_a_guest``; here they are skipped, and Felix's error for a missing ipip
is checked instead."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from netsim import kernel
from netsim.api.registry import new_object
from netsim.kernel import guest
from netsim.kernel.ping import ping
from netsim.model import calico, k8s, names
from netsim.node.calico import felix
from netsim.node.calico.ipamstore import StoreBlockStore
from tests.kernel.test_overlay import reaches, received_from
from tests.tcpdump import tcpdump
from tests.unit.fakes import MemoryStore
from tests.unit.test_felix_plan import StubIPAM

ROOT = Path(__file__).resolve().parents[2]
NODES = ("n1", "n2", "n3")
IPS = {"n1": "192.168.56.2", "n2": "192.168.56.3", "n3": "192.168.56.130"}
PREFIXLEN = 25
POOL = "10.244.0.0/16"


GUEST_ENV = "NETSIM_FELIX_IN_GUEST"
if os.environ.get(GUEST_ENV):
    # Once ipip is loaded the kernel gives every new namespace a fallback tunl0, at ifindex 2,
    # where the fabric pins a fresh node's eth0.  In the throwaway guest, fallback tunnels stay in
    # the initial namespace (as on hosts that set it for Calico) and Felix creates tunl0 itself.
    kernel.sysctl("net.core.fb_tunnels_only_for_init_net", 1)


def ipip_missing() -> str:
    """Why this kernel cannot make an ipip tunnel ("" when it can), asked in a throwaway namespace."""
    name = f"nsim.kprobe{os.getpid()}.x"
    try:
        with kernel.Namespace.create(name) as ns, ns.batch() as b:
            b.add_dummy("tunl0", kind="ipip")
        return ""
    except kernel.NetlinkError as exc:
        return f"this kernel has no ipip ({exc.strerror})"
    finally:
        kernel.delete_netns(name)


@dataclass
class Lab:
    c: object
    store: MemoryStore
    ipam: StubIPAM
    local: list[felix.LocalNode]
    pods: dict[str, str] = field(default_factory=dict)  # node -> pod namespace
    pod_ips: dict[str, str] = field(default_factory=dict)
    felix: felix.Felix | None = None

    def node(self, name):
        return self.c.members[name]

    def ip(self, name, *args) -> str:
        return subprocess.run(["ip", "-n", self.node(name).netns, *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout

    def run(self, name, *argv) -> str:
        return subprocess.run(["ip", "netns", "exec", self.node(name).netns, *argv], capture_output=True, text=True,
                              check=True, timeout=10).stdout

    def notes(self, name) -> dict:
        return self.store.get(k8s.key("Node", None, name))["metadata"]["annotations"]

    def block_of(self, name) -> str:
        return next(b["spec"]["cidr"] for b in self.store.list(k8s.prefix("IPAMBlock"))[0]
                    if b["spec"].get("affinity") == f"host:{name}")

    def set_pool(self, **spec) -> None:
        k = k8s.key("IPPool", None, calico.DEFAULT_POOL)
        obj = self.store.get(k)
        obj["spec"].update(spec)
        self.store.put(k, obj)

    def converge(self, **kw) -> dict[str, dict]:
        if self.felix is None:
            self.felix = felix.Felix(self.store, self.local, 1500, threading.Event(), ipam=self.ipam, **kw)
        self.felix.converge(full=True)
        return dict(self.felix.changes)


def build(make_cluster, ipip="Never", vxlan="Always", nodes=NODES, hosts=()) -> Lab:
    c = make_cluster(nodes=(), hosts=())
    for i, n in enumerate(nodes):
        c.add_node(n, role="control-plane" if i == 0 else "worker", ip=IPS[n])
    for h in hosts:
        c.add_host(h)
    c.up()
    store = MemoryStore()
    for obj in calico.initial_objects(POOL, {"ipipMode": ipip, "vxlanMode": vxlan, "natOutgoing": True}):
        store.create(k8s.key_of(obj), new_object(obj))
    for n in nodes:
        store.create(k8s.key("Node", None, n), new_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n},
                                                           "status": {"addresses": [{"type": "InternalIP",
                                                                                     "address": IPS[n]}]}}))
    local = [felix.LocalNode(n, c.members[n].netns, IPS[n], PREFIXLEN) for n in nodes]
    lab = Lab(c, store, StubIPAM(), local)
    felix.startup(store, local, ipam=lab.ipam)
    mtu = calico.pod_mtu(store.get(k8s.key("IPPool", None, calico.DEFAULT_POOL))["spec"], 1500)
    for n in nodes:
        address = lab.ipam.allocate(StoreBlockStore(store), n, f"k8s-pod-network.{n}", POOL, 26, {"node": n})
        lab.pod_ips[n] = str(address)
        lab.pods[n] = wire_pod(c, n, str(address), mtu)
    return lab


def wire_pod(c, node: str, ip: str, mtu: int) -> str:
    """What the calico CNI plugin makes: pod eth0 with a /32, default via 169.254.1.1 (scope link);
    the host end cali<sha1[:11]>, ee:ee:ee:ee:ee:ee, proxy ARP, and <ip>/32 dev caliX scope link."""
    pod_name = names.netns_name(c.name, f"default.pod-{node}")
    host_if = "cali" + hashlib.sha1(f"default.pod-{node}".encode()).hexdigest()[:11]
    with kernel.Namespace.open(c.members[node].netns) as host, kernel.Namespace.create(pod_name) as pod:
        with host.batch() as b:
            b.add_veth(host_if, "eth0", pod, mtu)
        index = host.index(host_if)
        host.sysctl(f"net.ipv4.conf.{host_if}.proxy_arp", 1)
        host.sysctl(f"net.ipv4.neigh.{host_if}.proxy_delay", 0)
        with host.batch() as b:
            b.set_link(host_if, index=index, mac="ee:ee:ee:ee:ee:ee", up=True)
            b.replace_route(f"{ip}/32", oif=index)
        eth0 = pod.index("eth0")
        with pod.batch() as b:
            b.set_link("lo", index=1, up=True)
            b.set_link("eth0", index=eth0, up=True)
            b.add_address(eth0, f"{ip}/32")
            b.replace_route("169.254.1.1/32", oif=eth0)
            b.replace_route("default", gateway="169.254.1.1", oif=eth0)
    return pod_name


def proto80(lab, name) -> list[str]:
    return sorted(line.strip() for line in lab.ip(name, "route", "show").splitlines() if " proto 80" in line)


def unchanged(changes: dict) -> bool:
    return not any(changes.values())


# -- VXLAN --------------------------------------------------------------------------------------
def test_vxlan_always_builds_vxlan_calico_routes_neighbours_fdb_and_pods_talk_over_udp_4789(make_cluster):
    lab = build(make_cluster)
    first = lab.converge()
    assert first["n1"]["link"] == 1 and first["n1"]["routes"] == 3 and first["n1"]["fdb"] == 2, first
    vtep = {n: lab.notes(n)["projectcalico.org/IPv4VXLANTunnelAddr"] for n in NODES}
    mac = {n: felix.vxlan_mac(n) for n in NODES}
    assert lab.notes("n1")["projectcalico.org/VXLANTunnelMACAddr"] == mac["n1"]
    assert lab.notes("n1")["projectcalico.org/IPv4Address"] == "192.168.56.2/25"

    link = lab.ip("n1", "-d", "link", "show", "vxlan.calico")
    assert "mtu 1450 " in link and f"link/ether {mac['n1']} " in link, link
    assert re.search(r"vxlan id 4096 local 192\.168\.56\.2 dev eth0 .*dstport 4789 nolearning", link), link
    assert f"inet {vtep['n1']}/32 " in lab.ip("n1", "addr", "show", "vxlan.calico")
    assert proto80(lab, "n1") == sorted([
        f"blackhole {lab.block_of('n1')} proto 80",
        f"{lab.block_of('n2')} via {vtep['n2']} dev vxlan.calico proto 80 onlink",
        f"{lab.block_of('n3')} via {vtep['n3']} dev vxlan.calico proto 80 onlink"])
    neigh = sorted(line.strip() for line in lab.ip("n1", "neigh", "show", "dev", "vxlan.calico").splitlines())
    assert neigh == sorted([f"{vtep['n2']} lladdr {mac['n2']} PERMANENT", f"{vtep['n3']} lladdr {mac['n3']} PERMANENT"])
    fdb = sorted(line.strip() for line in lab.run("n1", "bridge", "fdb", "show", "dev", "vxlan.calico").splitlines())
    assert fdb == sorted([f"{mac['n2']} dst {IPS['n2']} self permanent", f"{mac['n3']} dst {IPS['n3']} self permanent"])
    assert lab.run("n1", "sysctl", "-n", "net.ipv4.ip_forward", "net.ipv4.conf.default.rp_filter").split() == ["1", "1"]

    for a in NODES:
        for b in NODES:
            if a != b:
                assert reaches(lab.pods[a], lab.pod_ips[b]), f"pod on {a} cannot reach pod on {b}"
    with tcpdump(lab.c.underlay_netns, lab.node("n1").uplink, "udp", "port", "4789") as seen:
        assert ping(lab.pods["n1"], lab.pod_ips["n3"], timeout=1.0) is not None
    text = "\n".join(seen)
    assert f"{IPS['n1']}." in text and f"{IPS['n3']}.4789: VXLAN" in text and "vni 4096" in text, text
    assert f"{lab.pod_ips['n1']} > {lab.pod_ips['n3']}: ICMP echo request" in text, text
    # Pod to pod keeps the pod's address.
    assert received_from(lab.pods["n2"], lab.pods["n1"], lab.pod_ips["n2"], 7001) == lab.pod_ips["n1"]

    again = lab.converge()
    assert all(unchanged(ch) for ch in again.values()), again


def test_vxlan_cross_subnet_sends_same_segment_peers_bare_and_encapsulates_the_other_segment(make_cluster):
    lab = build(make_cluster, vxlan="CrossSubnet")
    lab.converge()
    vtep3 = lab.notes("n3")["projectcalico.org/IPv4VXLANTunnelAddr"]
    routes = proto80(lab, "n1")
    assert f"{lab.block_of('n2')} via {IPS['n2']} dev eth0 proto 80 onlink" in routes, routes
    assert f"{lab.block_of('n3')} via {vtep3} dev vxlan.calico proto 80 onlink" in routes, routes
    assert f"{lab.block_of('n1')} via {IPS['n1']} dev eth0 proto 80 onlink" in proto80(lab, "n2")
    for a, b in (("n1", "n2"), ("n2", "n1"), ("n1", "n3"), ("n3", "n2")):
        assert reaches(lab.pods[a], lab.pod_ips[b]), f"pod on {a} cannot reach pod on {b}"
    with tcpdump(lab.c.underlay_netns, lab.node("n1").uplink, "icmp", "or", "udp", "port", "4789") as seen:
        assert ping(lab.pods["n1"], lab.pod_ips["n2"], timeout=1.0) is not None
    text = "\n".join(seen)
    assert f"{lab.pod_ips['n1']} > {lab.pod_ips['n2']}: ICMP echo request" in text and "VXLAN" not in text, text
    assert all(unchanged(ch) for ch in lab.converge().values())


def test_nat_outgoing_masquerades_pods_leaving_the_pools_and_goes_with_remove(make_cluster):
    lab = build(make_cluster, nodes=("n1", "n2"), hosts=("ext",))
    lab.converge()
    ext = lab.node("ext")
    saved = lab.run("n1", "iptables-save", "-t", "nat")
    assert "-A POSTROUTING -j cali-POSTROUTING" in saved and "-A cali-POSTROUTING -j cali-nat-outgoing" in saved
    assert ("-A cali-nat-outgoing -m set --match-set cali40masq-ipam-pools src -m set ! --match-set "
            "cali40all-ipam-pools dst -j MASQUERADE --random-fully") in saved, saved
    assert "10.244.0.0/16" in lab.run("n1", "ipset", "list", "cali40all-ipam-pools")
    assert received_from(ext.netns, lab.pods["n1"], ext.ip, 7002) == IPS["n1"]
    assert received_from(lab.pods["n2"], lab.pods["n1"], lab.pod_ips["n2"], 7003) == lab.pod_ips["n1"]

    lab.set_pool(natOutgoing=False)
    lab.converge()
    assert "-A cali-nat-outgoing" not in lab.run("n1", "iptables-save", "-t", "nat")
    # Unmasqueraded, the datagram still arrives (the answer could not come back: the LAN has no pod routes).
    assert received_from(ext.netns, lab.pods["n1"], ext.ip, 7004) == lab.pod_ips["n1"]

    felix.remove(lab.node("n1").netns)
    assert "vxlan.calico" not in lab.ip("n1", "link") and proto80(lab, "n1") == []
    assert "cali-" not in lab.run("n1", "iptables-save", "-t", "nat")
    assert "cali40" not in lab.run("n1", "ipset", "list", "-n")
    felix.remove(lab.node("n1").netns)  # twice is no error


def test_a_node_leaving_takes_its_routes_and_a_pool_set_to_never_takes_the_vtep(make_cluster):
    lab = build(make_cluster)
    lab.converge()
    block3 = lab.block_of("n3")
    # n3 leaves: its block and Node go (kube-controllers' IPAM GC and the Node's deletion).
    lab.store.delete(k8s.key("IPAMBlock", None, calico.block_name(block3)))
    lab.store.delete(k8s.key("Node", None, "n3"))
    lab.converge()
    assert not any(block3 in r for r in proto80(lab, "n1")) and len(proto80(lab, "n1")) == 2
    assert len(lab.run("n1", "bridge", "fdb", "show", "dev", "vxlan.calico").splitlines()) == 1

    # Never, BIRD running: Felix programs no cluster route and no VTEP; the annotations go.
    lab.felix.bird = True
    lab.set_pool(vxlanMode="Never")
    lab.converge()
    for n in ("n1", "n2"):
        assert proto80(lab, n) == [] and "vxlan.calico" not in lab.ip(n, "link")
        assert "projectcalico.org/IPv4VXLANTunnelAddr" not in lab.notes(n)
    assert ("release", "vxlan-tunnel-addr-n1") in lab.ipam.calls


# -- IPIP (a kernel with ipip: the guest) --------------------------------------------------------
WHY_NO_IPIP = ipip_missing()
needs_ipip = pytest.mark.skipif(bool(WHY_NO_IPIP), reason=f"{WHY_NO_IPIP}; test_ipip_in_a_guest runs these tests "
                                "in a qemu guest whose kernel has it")


def test_without_ipip_felix_says_what_is_missing_and_the_fix(make_cluster):
    if not WHY_NO_IPIP:
        pytest.skip("this kernel has ipip")
    lab = build(make_cluster, ipip="Always", vxlan="Never", nodes=("n1",))
    with pytest.raises(felix.FelixError, match=r"no IPIP tunnel \(module ipip\).*fix: set the IPPool's ipipMode"):
        lab.converge(bird=True)


@needs_ipip
def test_ipip_always_tunl0_routes_and_pods_talk_over_ip_protocol_4(make_cluster):
    lab = build(make_cluster, ipip="Always", vxlan="Never")
    lab.converge(bird=True)
    tunnel = {n: lab.notes(n)["projectcalico.org/IPv4IPIPTunnelAddr"] for n in NODES}
    link = lab.ip("n1", "-d", "link", "show", "tunl0")
    assert "mtu 1480 " in link and "ipip" in link, link
    assert f"inet {tunnel['n1']}/32 " in lab.ip("n1", "addr", "show", "tunl0")
    assert proto80(lab, "n1") == sorted([f"blackhole {lab.block_of('n1')} proto 80",
                                         f"{lab.block_of('n2')} via {IPS['n2']} dev tunl0 proto 80 onlink",
                                         f"{lab.block_of('n3')} via {IPS['n3']} dev tunl0 proto 80 onlink"])
    for a, b in (("n1", "n2"), ("n2", "n3"), ("n3", "n1")):
        assert reaches(lab.pods[a], lab.pod_ips[b]), f"pod on {a} cannot reach pod on {b}"
    with tcpdump(lab.c.underlay_netns, lab.node("n1").uplink, "ip", "proto", "4") as seen:
        assert ping(lab.pods["n1"], lab.pod_ips["n2"], timeout=1.0) is not None
    text = "\n".join(seen)
    assert "proto IPIP (4)" in text and f"{IPS['n1']} > {IPS['n2']}: " in text, text
    assert f"{lab.pod_ips['n1']} > {lab.pod_ips['n2']}: ICMP echo request" in text, text
    assert all(unchanged(ch) for ch in lab.converge(bird=True).values())
    # CrossSubnet: the same segment bare on eth0, the other stays on tunl0; an IPIP pool's routes
    # are all Felix's (BIRD's kernel filter rejects them), the own block's blackhole too.
    lab.set_pool(ipipMode="CrossSubnet")
    lab.converge()
    assert proto80(lab, "n1") == sorted([f"blackhole {lab.block_of('n1')} proto 80",
                                         f"{lab.block_of('n2')} via {IPS['n2']} dev eth0 proto 80 onlink",
                                         f"{lab.block_of('n3')} via {IPS['n3']} dev tunl0 proto 80 onlink"])
    assert reaches(lab.pods["n1"], lab.pod_ips["n2"]) and reaches(lab.pods["n1"], lab.pod_ips["n3"])
    felix.remove(lab.node("n1").netns)
    assert proto80(lab, "n1") == [] and "inet " not in lab.ip("n1", "addr", "show", "tunl0")


def test_ipip_in_a_guest():
    if not WHY_NO_IPIP:
        pytest.skip("this kernel has ipip: the IPIP tests above ran here")
    why = guest.unavailable()
    if why and os.environ.get("NETSIM_REQUIRE_GUEST"):
        pytest.fail(f"NETSIM_REQUIRE_GUEST is set and {why}")
    if why:
        pytest.skip(f"{WHY_NO_IPIP}, and no guest to run the IPIP tests in: {why}")
    rc, output = guest.run(["env", f"{GUEST_ENV}=1", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "-rs", "tests/kernel/test_felix.py", "-k", "ipip and not in_a_guest and not without_ipip"],
                           cwd=str(ROOT), timeout=900)
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    assert rc == 0, output[-6000:]
    assert re.search(r"\b1 passed", summary) and "skipped" not in summary, output[-3000:]
