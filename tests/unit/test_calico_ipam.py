"""calico-ipam's block allocator (libcalico-go's lib/ipam) over the in-memory BlockStore, and
over netsim's API server through KubeBlockStore (the kubeconfig reader included)."""

import ipaddress
import json
import threading

import pytest
import yaml

from netsim.cni import calico_ipam as ipam
from netsim.cni.kubeclient import KubeconfigError, load_kubeconfig, parse_yaml
from netsim.model import calico as model

POOL = "10.244.0.0/16"


def store_with(pool=POOL, block_size=26, strict=False, max_blocks=0):
    return ipam.MemoryBlockStore([
        {"apiVersion": ipam.API_VERSION, "kind": "IPPool", "metadata": {"name": ipam.DEFAULT_POOL},
         "spec": {"cidr": pool, "blockSize": block_size, "ipipMode": "Always", "natOutgoing": True}},
        {"apiVersion": ipam.API_VERSION, "kind": "IPAMConfig", "metadata": {"name": "default"},
         "spec": {"strictAffinity": strict, "autoAllocateBlocks": True, "maxBlocksPerHost": max_blocks}}])


def blocks(store):
    return {b["spec"]["cidr"]: b for b in store.list("IPAMBlock")}


def affinities(store):
    return {a["metadata"]["name"]: a["spec"] for a in store.list("BlockAffinity")}


def test_names_are_upstreams_and_the_models():
    net = ipaddress.IPv4Network("10.244.1.0/26")
    assert ipam.block_name(net) == model.block_name(net) == "10-244-1-0-26"
    assert ipam.affinity_name("worker1", net) == model.affinity_name("worker1", net) == "worker1-10-244-1-0-26"
    assert ipam.handle_name("k8s-pod-network.ABC") == "k8s-pod-network.abc"


def test_first_allocation_claims_a_block_with_affinity_and_a_handle():
    store = store_with()
    addr = ipam.allocate(store, "worker1", "k8s-pod-network.c1", POOL, 26, {"pod": "a", "namespace": "default"})
    (cidr, block), = blocks(store).items()
    net = ipaddress.IPv4Network(cidr)
    assert net.prefixlen == 26 and net.subnet_of(ipaddress.IPv4Network(POOL))
    assert addr == net[0], "ordinal 0 first, as upstream (the network address is a usable /32)"
    s = block["spec"]
    assert block["metadata"]["name"] == ipam.block_name(net)
    assert s["affinity"] == "host:worker1" and len(s["allocations"]) == 64
    assert s["allocations"][0] == 0 and s["allocations"][1:] == [None] * 63
    assert s["unallocated"] == list(range(1, 64))
    assert s["attributes"] == [{"handle_id": "k8s-pod-network.c1", "secondary": {"pod": "a", "namespace": "default"}}]
    assert affinities(store) == {f"worker1-{ipam.block_name(net)}": {
        "state": "confirmed", "node": "worker1", "type": "host", "cidr": cidr, "deleted": "false"}}
    handle = store.get("IPAMHandle", "k8s-pod-network.c1")
    assert handle["spec"] == {"handleID": "k8s-pod-network.c1", "block": {cidr: 1}, "deleted": False}
    # The same handle again gets the address it holds, not a second one.
    assert ipam.allocate(store, "worker1", "k8s-pod-network.c1", POOL, 26, {}) == addr
    assert blocks(store)[cidr]["spec"]["unallocated"] == list(range(1, 64))


def test_nodes_start_at_blocks_seeded_by_their_names():
    order = ipam.pool_blocks(ipaddress.IPv4Network(POOL), 26, "worker1")
    assert order == ipam.pool_blocks(ipaddress.IPv4Network(POOL), 26, "worker1")
    assert len(order) == 1024 and len(set(order)) == 1024
    assert order[0] != ipam.pool_blocks(ipaddress.IPv4Network(POOL), 26, "worker2")[0]


def test_a_full_block_makes_the_node_claim_a_second():
    store = store_with(block_size=30)
    got = [ipam.allocate(store, "w1", f"h{i}", POOL, 30, {}) for i in range(6)]
    assert len(set(got)) == 6
    have = blocks(store)
    assert len(have) == 2 and all(b["spec"]["affinity"] == "host:w1" for b in have.values())
    first, second = (ipaddress.IPv4Network(c) for c in sorted(have, key=lambda c: got[0] not in
                                                                ipaddress.IPv4Network(c)))
    assert all(a in first for a in got[:4]) and all(a in second for a in got[4:])
    assert sorted(a["state"] for a in affinities(store).values()) == ["confirmed", "confirmed"]


def test_release_frees_the_address_at_the_back_and_drops_the_handle():
    store = store_with(block_size=30)
    a = ipam.allocate(store, "w1", "ha", POOL, 30, {"pod": "a"})
    b = ipam.allocate(store, "w1", "hb", POOL, 30, {"pod": "b"})
    assert ipam.release_handle(store, "ha") == [a]
    assert store.get("IPAMHandle", "ha") is None
    (block,) = blocks(store).values()
    s = block["spec"]
    assert s["allocations"] == [None, 0, None, None] and s["unallocated"] == [2, 3, 0]
    assert s["attributes"] == [{"handle_id": "hb", "secondary": {"pod": "b"}}], "unused attributes go"
    assert ipam.release_handle(store, "ha") == [], "releasing twice is no error"
    assert ipam.allocate(store, "w1", "hc", POOL, 30, {}) == ipaddress.IPv4Address(int(a) + 2)
    assert ipam.release_handle(store, "hb") == [b]
    assert ipam.release_handle(store, "nope") == []


def test_release_node_drops_empty_blocks_and_keeps_used_ones():
    store = store_with(block_size=30)
    held = [ipam.allocate(store, "w1", f"h{i}", POOL, 30, {}) for i in range(5)]
    assert len(blocks(store)) == 2
    ipam.release_handle(store, "h4")  # the second block is empty now
    second = next(c for c in blocks(store) if held[4] in ipaddress.IPv4Network(c))
    assert ipam.release_node(store, "w1") == [second]
    assert list(blocks(store)) != [second] and len(blocks(store)) == 1
    assert [a["cidr"] for a in affinities(store).values()] == list(blocks(store))
    for i in range(4):
        ipam.release_handle(store, f"h{i}")
    assert len(ipam.release_node(store, "w1")) == 1
    assert blocks(store) == {} and affinities(store) == {}


class ConflictingStore:
    """Before each of the first ``n`` block updates, another writer takes an address from the
    same block through the store underneath: the update is then stale and must be retried on
    a fresh read."""

    def __init__(self, inner, n):
        self.inner, self.n, self.conflicts = inner, n, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def update(self, obj):
        if obj["kind"] == "IPAMBlock" and self.n > 0:
            self.n -= 1
            self.conflicts += 1
            ipam.allocate(self.inner, obj["spec"]["affinity"].split(":")[1], f"other{self.n}", POOL, 26, {})
        return self.inner.update(obj)


def test_a_cas_conflict_is_retried_on_a_fresh_read():
    base = store_with()
    first = ipam.allocate(base, "w1", "h0", POOL, 26, {})
    store = ConflictingStore(base, 2)
    got = ipam.allocate(store, "w1", "h1", POOL, 26, {})
    assert store.conflicts == 2
    (block,) = blocks(store).values()
    taken = {o for o, i in enumerate(block["spec"]["allocations"]) if i is not None}
    net = ipaddress.IPv4Network(block["spec"]["cidr"])
    assert {net[o] for o in taken} == {first, got, net[1], net[2]}, "the other writer's addresses stay theirs"
    assert got == net[3]
    handles = {a["handle_id"] for a in block["spec"]["attributes"]}
    assert handles == {"h0", "h1", "other0", "other1"}


def test_concurrent_allocations_on_one_node_never_share_an_address():
    store = store_with(block_size=28)
    got, errors = [], []

    def worker(t):
        try:
            for i in range(12):
                got.append(ipam.allocate(store, "w1", f"t{t}-{i}", POOL, 28, {}))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(got) == 48 and len(set(got)) == 48
    assert len(blocks(store)) == 3
    assert sum(1 for b in blocks(store).values() for a in b["spec"]["allocations"] if a is not None) == 48


def test_a_node_borrows_from_another_nodes_block_when_the_pool_has_none_free():
    pool = "10.9.0.0/29"  # two /30 blocks
    store = store_with(pool, 30)
    mine = [ipam.allocate(store, "w1", f"a{i}", pool, 30, {}) for i in range(5)]
    assert {b["spec"]["affinity"] for b in blocks(store).values()} == {"host:w1"}
    borrowed = ipam.allocate(store, "w2", "b0", pool, 30, {"node": "w2"})
    assert borrowed not in mine and borrowed in ipaddress.IPv4Network(pool)
    owner = next(b for b in blocks(store).values() if borrowed in ipaddress.IPv4Network(b["spec"]["cidr"]))
    assert owner["spec"]["affinity"] == "host:w1", "borrowing leaves the block's affinity alone"
    assert not any(a["node"] == "w2" for a in affinities(store).values())
    for i in range(2):
        ipam.allocate(store, "w2", f"b{i + 1}", pool, 30, {})
    with pytest.raises(ipam.NoAddresses, match="no free address in pool 10.9.0.0/29 for w2"):
        ipam.allocate(store, "w2", "b9", pool, 30, {})
    assert ipam.release_handle(store, "b0") == [borrowed]


def test_strict_affinity_forbids_borrowing():
    pool = "10.9.0.0/30"
    store = store_with(pool, 30, strict=True)
    ipam.allocate(store, "w1", "a", pool, 30, {})
    with pytest.raises(ipam.NoAddresses):
        ipam.allocate(store, "w2", "b", pool, 30, {})


def test_max_blocks_per_host_stops_new_claims():
    store = store_with(block_size=31, max_blocks=1)
    ipam.allocate(store, "w1", "a", POOL, 31, {})
    ipam.allocate(store, "w1", "b", POOL, 31, {})
    # The node's one block is full and it may claim no other: it borrows nothing either,
    # since every other block of the pool is still unclaimed.
    with pytest.raises(ipam.NoAddresses, match="maxBlocksPerHost"):
        ipam.allocate(store, "w1", "c", POOL, 31, {})


def test_a_stale_pending_affinity_is_confirmed_when_used():
    store = store_with(block_size=30)
    addr = ipam.allocate(store, "w1", "a", POOL, 30, {})
    (name, _), = affinities(store).items()
    aff = store.get("BlockAffinity", name)
    aff["spec"]["state"] = "pending"
    store.update(aff)
    again = ipam.allocate(store, "w1", "b", POOL, 30, {})
    assert again != addr and ipaddress.IPv4Network(aff["spec"]["cidr"]).overlaps(ipaddress.IPv4Network(f"{again}/32"))
    assert affinities(store)[name]["state"] == "confirmed"


def test_a_bad_block_size_is_refused():
    with pytest.raises(ValueError, match="blockSize 8"):
        ipam.allocate(store_with(), "w1", "a", POOL, 8, {})


# -- the kubeconfig and the API -----------------------------------------------------------
def test_kubeconfig_yaml_as_kubectl_and_netsim_write_it(tmp_path):
    doc = {"apiVersion": "v1", "kind": "Config", "preferences": {},
           "clusters": [{"name": "netsim-a", "cluster": {"server": "https://192.168.56.2:6443",
                                                         "certificate-authority-data": "Q0E=" * 40}}],
           "users": [{"name": "netsim-a", "user": {"client-certificate-data": "Q0VSVA==",
                                                   "client-key-data": "S0VZ"}}],
           "contexts": [{"name": "netsim-a", "context": {"cluster": "netsim-a", "user": "netsim-a"}}],
           "current-context": "netsim-a"}
    text = yaml.safe_dump(doc, default_flow_style=False, sort_keys=False)
    assert parse_yaml(text) == doc
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    target = load_kubeconfig(str(path))
    assert target.server == "https://192.168.56.2:6443"
    assert target.cert_pem == b"CERT" and target.key_pem == b"KEY" and target.ca_pem.startswith(b"CA")
    path.write_text(json.dumps({**doc, "users": [{"name": "netsim-a", "user": {"token": "t0k"}}]}))
    assert load_kubeconfig(str(path)).token == "t0k"
    path.write_text(json.dumps({**doc, "current-context": "other"}))
    with pytest.raises(KubeconfigError, match="no context named 'other'"):
        load_kubeconfig(str(path))
    with pytest.raises(KubeconfigError, match="No such file"):
        load_kubeconfig(str(tmp_path / "missing"))


def test_the_allocator_over_netsims_api(apiserver, tmp_path):
    """KubeBlockStore against the real API server (plain HTTP here; TLS in the kernel test):
    the objects are served as built-ins, writes are compare-and-swap, 409s come back as
    AlreadyExists or Conflict."""
    store = ipam.KubeBlockStore(str(tmp_path / "kubeconfig"))
    for obj in model.initial_objects("10.250.0.0/16", {"blockSize": 30}):
        if obj["kind"] in ipam.PLURALS:  # IPPool and IPAMConfig: what the allocator reads
            store.create(obj)
    with pytest.raises(ipam.AlreadyExists):
        store.create(model.initial_objects("10.250.0.0/16", {})[0])
    pool = store.get("IPPool", model.DEFAULT_POOL)
    stale = dict(pool, metadata=dict(pool["metadata"]))
    pool["spec"]["natOutgoing"] = False  # an update that changes nothing keeps the resourceVersion
    store.update(pool)
    with pytest.raises(ipam.Conflict):
        store.update(stale)
    with pytest.raises(ipam.Conflict):
        store.delete("IPPool", model.DEFAULT_POOL, stale["metadata"]["resourceVersion"])
    got = [ipam.allocate(store, "worker1", f"k8s-pod-network.c{i}", "10.250.0.0/16", 30, {"node": "worker1"})
           for i in range(5)]
    assert len(set(got)) == 5
    listed = store.list("IPAMBlock")
    assert len(listed) == 2 and {b["kind"] for b in listed} == {"IPAMBlock"}
    assert all(b["spec"]["affinity"] == "host:worker1" and len(b["spec"]["allocations"]) == 4 for b in listed)
    assert {a["spec"]["state"] for a in store.list("BlockAffinity")} == {"confirmed"}
    assert ipam.release_handle(store, "k8s-pod-network.c4") == [got[4]]
    assert store.get("IPAMHandle", "k8s-pod-network.c4") is None
    assert ipam.release_node(store, "worker1") and len(store.list("IPAMBlock")) == 1
    store.close()
