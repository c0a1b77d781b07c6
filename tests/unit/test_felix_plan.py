"""Felix's route plan (netsim.node.calico.felix.plan: mode x peers -> routes, neighbours, fdb),
reading the datastore (blocks, annotations, FelixConfiguration) and calico/node's startup
(annotations, tunnel addresses through a stand-in allocator on the store adapter)."""

from __future__ import annotations

import ipaddress

import pytest

from netsim.api.registry import new_object
from netsim.model import calico, k8s
from netsim.node.calico import felix
from netsim.node.calico.felix import Block, LocalNode, NodeFacts, Pool, Route
from netsim.node.calico.ipamstore import StoreBlockStore
from tests.unit.fakes import MemoryStore

POOL = ipaddress.IPv4Network("10.244.0.0/16")
N1 = LocalNode("n1", "nsim.t.n1", "192.168.56.2", 25)
# n2 shares n1's /25; n3 is on another segment.
FACTS = {"n1": NodeFacts("n1", "192.168.56.2", 25, "10.244.1.0", "10.244.1.1", felix.vxlan_mac("n1")),
         "n2": NodeFacts("n2", "192.168.56.3", 25, "10.244.2.0", "10.244.2.1", felix.vxlan_mac("n2")),
         "n3": NodeFacts("n3", "192.168.56.130", 25, "10.244.3.0", "10.244.3.1", felix.vxlan_mac("n3"))}
BLOCKS = [Block(ipaddress.IPv4Network(f"10.244.{i}.0/26"), f"n{i}") for i in (1, 2, 3)]


def pool(ipip="Never", vxlan="Never", nat=True) -> Pool:
    return Pool(POOL, ipip, vxlan, nat)


def routes(p) -> dict[str, tuple]:
    return {dst: (r.kind, r.gateway) for dst, r in p.routes.items()}


def test_vxlan_always_routes_every_remote_block_via_its_vtep_with_neighbours_and_fdb():
    p = felix.plan(N1, FACTS, BLOCKS, [pool(vxlan="Always")], bird=False)
    assert p.vxlan and not p.ipip and p.vxlan_addr == "10.244.1.1" and p.vxlan_mac == felix.vxlan_mac("n1")
    assert routes(p) == {"10.244.1.0/26": ("blackhole", None), "10.244.2.0/26": ("vxlan", "10.244.2.1"),
                         "10.244.3.0/26": ("vxlan", "10.244.3.1")}
    assert p.neighbours == {"10.244.2.1": felix.vxlan_mac("n2"), "10.244.3.1": felix.vxlan_mac("n3")}
    assert p.fdb == {(felix.vxlan_mac("n2"), "192.168.56.3"), (felix.vxlan_mac("n3"), "192.168.56.130")}


def test_vxlan_cross_subnet_sends_same_segment_peers_bare_and_others_encapsulated():
    p = felix.plan(N1, FACTS, BLOCKS, [pool(vxlan="CrossSubnet")], bird=False)
    assert routes(p)["10.244.2.0/26"] == ("direct", "192.168.56.3")
    assert routes(p)["10.244.3.0/26"] == ("vxlan", "10.244.3.1")
    assert len(p.fdb) == 2  # every remote VTEP is known, routed through it or not, as upstream


def test_an_ipip_pool_is_felixs_whole_even_where_bird_runs():
    # v3.33: tunnel routes, CrossSubnet's same-subnet routes and the own block's blackhole (BIRD's
    # kernel filter rejects an encapsulated pool's routes: nobody else would program them).
    p = felix.plan(N1, FACTS, BLOCKS, [pool(ipip="Always")], bird=True)
    assert p.ipip and not p.vxlan and p.ipip_addr == "10.244.1.0" and not p.neighbours and not p.fdb
    assert routes(p) == {"10.244.1.0/26": ("blackhole", None), "10.244.2.0/26": ("tunl0", "192.168.56.3"),
                         "10.244.3.0/26": ("tunl0", "192.168.56.130")}
    p = felix.plan(N1, FACTS, BLOCKS, [pool(ipip="CrossSubnet")], bird=True)
    assert routes(p) == {"10.244.1.0/26": ("blackhole", None), "10.244.2.0/26": ("direct", "192.168.56.3"),
                         "10.244.3.0/26": ("tunl0", "192.168.56.130")}


def test_never_programs_nothing_with_bird_and_direct_routes_and_blackholes_without():
    p = felix.plan(N1, FACTS, BLOCKS, [pool()], bird=True)
    assert not p.ipip and not p.vxlan and p.routes == {}
    p = felix.plan(N1, FACTS, BLOCKS, [pool()], bird=False)
    assert routes(p) == {"10.244.1.0/26": ("blackhole", None), "10.244.2.0/26": ("direct", "192.168.56.3"),
                         "10.244.3.0/26": ("direct", "192.168.56.130")}


def test_bird_runs_unless_a_pool_uses_vxlan():
    assert felix.bird_runs([pool(ipip="Always")]) and felix.bird_runs([pool()])
    assert felix.bird_runs([pool(ipip="CrossSubnet")])
    assert not felix.bird_runs([pool(vxlan="Always")]) and not felix.bird_runs([pool(vxlan="CrossSubnet")])


def test_a_peer_without_a_vtep_yet_gets_no_route_and_says_why():
    facts = {**FACTS, "n3": NodeFacts("n3", "192.168.56.130", 25)}
    p = felix.plan(N1, facts, BLOCKS, [pool(vxlan="Always")], bird=False)
    assert "10.244.3.0/26" not in p.routes and any("n3 has no VXLAN tunnel address" in s for s in p.skipped)
    assert felix.vxlan_mac("n3") not in p.neighbours.values()


def test_borrowed_addresses_get_a_host_route_to_the_node_using_them():
    blocks = [Block(BLOCKS[0].cidr, "n1"), Block(BLOCKS[1].cidr, "n2", (("10.244.2.9", "n3"), ("10.244.2.10", "n1")))]
    p = felix.plan(N1, FACTS, blocks, [pool(vxlan="Always")], bird=False)
    assert routes(p)["10.244.2.9/32"] == ("vxlan", "10.244.3.1")
    assert "10.244.2.10/32" not in p.routes  # used here: the CNI's own /32 dev cali... route


def test_blocks_from_reads_affinity_and_borrowed_allocations():
    block = {"spec": {"cidr": "10.244.2.0/26", "affinity": "host:n2", "allocations": [0, None, 1] + [None] * 61,
                      "attributes": [{"handle_id": "ipip-tunnel-addr-n2", "secondary": {"node": "n2"}},
                                     {"handle_id": "k8s-pod-network.x", "secondary": {"node": "n3"}}]}}
    orphan = {"spec": {"cidr": "10.244.4.0/26", "allocations": [None] * 64, "attributes": []}}
    affinity = {"spec": {"state": "confirmed", "node": "n4", "cidr": "10.244.4.0/26", "deleted": "false"}}
    got = felix.blocks_from([block, orphan], [affinity])
    assert got == [Block(ipaddress.IPv4Network("10.244.2.0/26"), "n2", (("10.244.2.2", "n3"),)),
                   Block(ipaddress.IPv4Network("10.244.4.0/26"), "n4")]
    assert felix.handle_address([block], "ipip-tunnel-addr-n2") == "10.244.2.0"


def test_vxlan_mac_is_felixs_and_pools_and_config_are_checked():
    assert felix.vxlan_mac("worker1").startswith("66:") and felix.vxlan_mac("worker1") == felix.vxlan_mac("worker1")
    assert felix.vxlan_mac("worker1") != felix.vxlan_mac("worker2")
    with pytest.raises(felix.FelixError, match="spec.ipipMode 'Sometimes'"):
        Pool.from_object({"metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/16", "ipipMode": "Sometimes"}})
    cfg = felix.Config.from_objects([{"metadata": {"name": "default"}, "spec": {"vxlanVNI": 4097}},
                                     {"metadata": {"name": "node.n1"}, "spec": {"vxlanMTU": 1400}}], "n1")
    assert (cfg.vxlan_vni, cfg.vxlan_mtu, cfg.vxlan_port) == (4097, 1400, 4789)
    assert felix.encapsulation([pool(ipip="Always")], felix.Config(ipip_enabled=False)) == (False, False)


def test_nat_rules_masquerade_pool_traffic_leaving_the_pools_only_when_a_pool_asks():
    p = felix.plan(N1, FACTS, BLOCKS, [pool(vxlan="Always")], bird=False)
    rules = felix.nat_rules(p)
    assert rules["POSTROUTING"] == [["-j", "cali-POSTROUTING"]]
    assert rules["cali-POSTROUTING"][0] == ["-j", "cali-nat-outgoing"]
    assert any("vxlan.calico" in r for r in rules["cali-POSTROUTING"])
    assert rules["cali-nat-outgoing"] == [["-m", "set", "--match-set", "cali40masq-ipam-pools", "src", "-m", "set",
                                           "!", "--match-set", "cali40all-ipam-pools", "dst", "-j", "MASQUERADE",
                                           "--random-fully"]]
    p = felix.plan(N1, FACTS, BLOCKS, [pool(vxlan="Always", nat=False)], bird=False)
    assert felix.nat_rules(p)["cali-nat-outgoing"] == [] and p.masq_pools == [] and p.all_pools == [str(POOL)]


# -- startup over the store ----------------------------------------------------------------
class StubIPAM:
    """A stand-in for netsim.cni.calico_ipam (allocate/release_handle over a BlockStore): the
    node's affine block, else the first free one; the lowest free address."""

    def __init__(self):
        self.calls = []

    def allocate(self, store, node, handle, pool_cidr, block_size, attrs):
        self.calls.append(("allocate", node, handle))
        taken = {b["spec"]["cidr"] for b in store.list("IPAMBlock")}
        mine = [b for b in store.list("IPAMBlock") if b["spec"].get("affinity") == f"host:{node}"]
        if not mine:
            cidr = next(str(c) for c in ipaddress.IPv4Network(pool_cidr).subnets(new_prefix=block_size)
                        if str(c) not in taken)
            size = 2 ** (32 - block_size)
            store.create({"kind": "IPAMBlock", "metadata": {"name": calico.block_name(cidr)},
                          "spec": {"cidr": cidr, "affinity": f"host:{node}", "allocations": [None] * size,
                                   "unallocated": list(range(size)), "attributes": []}})
            mine = [store.get("IPAMBlock", calico.block_name(cidr))]
        block = mine[0]
        spec = block["spec"]
        ordinal = spec["unallocated"].pop(0)
        spec["attributes"].append({"handle_id": handle, "secondary": attrs})
        spec["allocations"][ordinal] = len(spec["attributes"]) - 1
        store.update(block)
        return ipaddress.IPv4Network(spec["cidr"]).network_address + ordinal

    def release_handle(self, store, handle):
        self.calls.append(("release", handle))
        for block in store.list("IPAMBlock"):
            spec = block["spec"]
            for ordinal, index in enumerate(spec["allocations"]):
                if index is not None and spec["attributes"][index]["handle_id"] == handle:
                    spec["allocations"][ordinal] = None
                    spec["unallocated"].append(ordinal)
            store.update(block)


def datastore(ipip="Always", vxlan="Never") -> MemoryStore:
    store = MemoryStore()
    for obj in calico.initial_objects("10.244.0.0/16", {"ipipMode": ipip, "vxlanMode": vxlan}):
        store.create(k8s.key_of(obj), new_object(obj))
    for n in ("n1", "n2"):
        store.create(k8s.key("Node", None, n), new_object({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": n, "annotations": {"netsim.io/netns": f"nsim.t.{n}"}}}))
    return store


def annotations(store, node="n1") -> dict:
    return store.get(k8s.key("Node", None, node))["metadata"]["annotations"]


def test_startup_annotates_the_address_and_allocates_the_ipip_tunnel_address_once():
    store, ipam = datastore(), StubIPAM()
    felix.startup(store, [N1, LocalNode("n2", "nsim.t.n2", "192.168.56.3", 25, as_number=64600)], ipam=ipam)
    notes = annotations(store)
    assert notes["projectcalico.org/IPv4Address"] == "192.168.56.2/25"
    assert notes["netsim.io/netns"] == "nsim.t.n1"  # others' annotations kept
    tunnel = notes["projectcalico.org/IPv4IPIPTunnelAddr"]
    assert ipaddress.ip_address(tunnel) in POOL and "projectcalico.org/IPv4VXLANTunnelAddr" not in notes
    assert annotations(store, "n2")["projectcalico.org/ASNumber"] == "64600"
    rev = store.revision()
    felix.startup(store, [N1], ipam=ipam)
    assert store.revision() == rev and annotations(store)["projectcalico.org/IPv4IPIPTunnelAddr"] == tunnel
    # An annotation lost (the Node re-registered) comes back with the address its handle holds.
    node = store.get(k8s.key("Node", None, "n1"))
    node["metadata"]["annotations"] = {}
    store.put(k8s.key("Node", None, "n1"), node)
    felix.startup(store, [N1], ipam=ipam)
    assert annotations(store)["projectcalico.org/IPv4IPIPTunnelAddr"] == tunnel
    assert [c for c in ipam.calls if c[0] == "allocate"] == [("allocate", "n1", "ipip-tunnel-addr-n1"),
                                                             ("allocate", "n2", "ipip-tunnel-addr-n2")]


def test_switching_the_pool_to_vxlan_releases_the_ipip_address_and_allocates_a_vtep():
    store, ipam = datastore(), StubIPAM()
    felix.startup(store, [N1], ipam=ipam)
    k = k8s.key("IPPool", None, calico.DEFAULT_POOL)
    pool_obj = store.get(k)
    pool_obj["spec"].update(ipipMode="Never", vxlanMode="Always")
    store.put(k, pool_obj)
    felix.startup(store, [N1], ipam=ipam)
    notes = annotations(store)
    assert "projectcalico.org/IPv4IPIPTunnelAddr" not in notes
    assert notes["projectcalico.org/VXLANTunnelMACAddr"] == felix.vxlan_mac("n1")
    assert ipaddress.ip_address(notes["projectcalico.org/IPv4VXLANTunnelAddr"]) in POOL
    assert ("release", "ipip-tunnel-addr-n1") in ipam.calls


def test_startup_without_an_allocator_still_writes_the_address():
    class Broken:
        def allocate(self, *a):
            raise RuntimeError("pool exhausted")

    store = datastore()
    felix.startup(store, [N1], ipam=Broken())
    notes = annotations(store)
    assert notes["projectcalico.org/IPv4Address"] == "192.168.56.2/25"
    assert "projectcalico.org/IPv4IPIPTunnelAddr" not in notes


def test_store_block_store_is_compare_and_swap():
    bs = StoreBlockStore(MemoryStore())
    made = bs.create({"kind": "IPAMHandle", "metadata": {"name": "h"}, "spec": {"handleID": "h", "block": {}}})
    assert made["apiVersion"] == calico.API_VERSION and bs.get("IPAMHandle", "h")["spec"]["handleID"] == "h"
    with pytest.raises(bs.exists):
        bs.create({"kind": "IPAMHandle", "metadata": {"name": "h"}, "spec": {}})
    bs.update({**made, "spec": {"handleID": "h", "block": {"10-244-1-0-26": 1}}})
    with pytest.raises(bs.conflict):
        bs.update({**made, "spec": {}})  # made's resourceVersion is stale now
    with pytest.raises(bs.conflict):
        bs.delete("IPAMHandle", "h", made["metadata"]["resourceVersion"])
    bs.delete("IPAMHandle", "h")
    assert bs.get("IPAMHandle", "h") is None and bs.list("IPAMHandle") == []
    with pytest.raises(ValueError, match="no 'Pod'"):
        bs.get("Pod", "x")


def test_route_plan_key_is_canonical():
    a = felix.Plan(routes={"b": Route("b", "vxlan", "1"), "a": Route("a", "blackhole")}, fdb={("m2", "x"), ("m1", "y")})
    b = felix.Plan(routes={"a": Route("a", "blackhole"), "b": Route("b", "vxlan", "1")}, fdb={("m1", "y"), ("m2", "x")})
    assert a.key() == b.key()
