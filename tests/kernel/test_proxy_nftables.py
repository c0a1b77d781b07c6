"""kube-proxy's nftables mode (proxy.nftables): the proxier on real namespaces with real
connections (the renderer alone is tests/unit/test_proxy_nftables_render.py) -- the lab of
tests/kernel/test_proxy_iptables.py (a node namespace with a bridge, a client pod, two backend pods
serving TCP and UDP, an external namespace routed through the node; br_netfilter on, hairpin
on the pod ports), here under namespaces of its own."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections import Counter

import pytest

from proxy import nftables as nf
from proxy import proxier
from tests.kernel.test_proxy_iptables import (  # the same lab and builders as the iptables mode's tests
    BRIDGE_IP,
    CLIENT,
    CLUSTER_CIDR,
    EXTERNAL_IP,
    NODE,
    NODE_IP,
    POD_A,
    POD_B,
    UDP_PORT,
    Lab,
    ask,
    build_lab,
    ep,
    svc,
    udp_client,
)


# == the proxier, on real namespaces ===========================================================
class NftLab(Lab):
    def proxier(self, **kw) -> nf.Proxier:
        p = nf.Proxier(self.node, node=NODE, node_ips=[NODE_IP], cluster_cidr=CLUSTER_CIDR, **kw)
        self.proxiers.append(p)
        return p

    def table(self) -> str:
        return self.sh("nft", "list", "table", "ip", "kube-proxy")


@pytest.fixture
def lab():
    with build_lab(NftLab, "kpnft") as made:
        yield made


WEB = svc("web", "10.96.0.10", [ep(POD_A), ep(POD_B)], port_name="http", type="NodePort", node_port=30080)


@pytest.mark.parametrize("backend", ["lib", "nft"])
def test_cluster_ip_spreads_and_nodeport_masquerades(lab, backend):
    p = lab.proxier(backend=backend)
    assert p.backend == backend
    result = p.sync([WEB])
    assert result.full and result.reason == "start" and result.total_s > 0
    seen = Counter()
    for _ in range(60):
        name, peer = ask(lab.client, "10.96.0.10", 80)
        assert peer == CLIENT  # from inside the cluster CIDR: no masquerade
        seen[name] += 1
    assert seen["pod-a"] >= 10 and seen["pod-b"] >= 10, seen
    name, peer = ask(lab.external, NODE_IP, 30080)
    assert name in ("pod-a", "pod-b") and peer == BRIDGE_IP  # masqueraded to the node's own address
    # upstream's layout works the same.
    p.renderer = nf.Renderer(node=NODE, node_ips=[NODE_IP], cluster_cidr=CLUSTER_CIDR, fast=False)
    p.force_full_sync()
    assert p.sync([WEB]).full
    assert "numgen random mod 2 vmap" in lab.table()
    assert {ask(lab.client, "10.96.0.10", 80)[0] for _ in range(30)} == {"pod-a", "pod-b"}
    assert ask(lab.external, NODE_IP, 30080)[1] == BRIDGE_IP


def test_no_endpoints_refused_at_once(lab):
    p = lab.proxier()
    p.sync([WEB, svc("empty", "10.96.0.12", [])])
    assert ask(lab.client, "10.96.0.10", 80)
    empty_web = svc("web", "10.96.0.10", [], port_name="http", type="NodePort", node_port=30080)
    for services, src, ip, port in (([WEB, svc("empty", "10.96.0.12", [])], lab.client, "10.96.0.12", 80),
                                    ([empty_web], lab.client, "10.96.0.10", 80),
                                    ([empty_web], lab.external, NODE_IP, 30080)):
        p.sync(services)
        t = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            ask(src, ip, port, timeout=2.0)
        assert time.monotonic() - t < 0.5


def test_external_traffic_policy_local_keeps_source(lab):
    p = lab.proxier()
    local = svc("local", "10.96.0.20", [ep(POD_A)], type="NodePort", node_port=30090, external_local=True)
    remote = svc("remote", "10.96.0.21", [ep(POD_B, node="other")], type="NodePort", node_port=30091,
                 external_local=True)
    p.sync([local, remote])
    for _ in range(5):
        assert ask(lab.external, NODE_IP, 30090) == ("pod-a", EXTERNAL_IP)  # source preserved
    with pytest.raises((TimeoutError, socket.timeout)):
        ask(lab.external, NODE_IP, 30091, timeout=0.5)
    assert ask(lab.client, "10.96.0.21", 80)[0] == "pod-b"
    assert ask(lab.client, NODE_IP, 30091)[0] == "pod-b"


@pytest.mark.parametrize("fast", [True, False])
def test_hairpin(lab, fast):
    p = lab.proxier(fast=fast)
    p.sync([svc("self", "10.96.0.25", [ep(POD_A)])])
    assert ask(lab.pods[POD_A], "10.96.0.25", 80) == ("pod-a", BRIDGE_IP)  # reached itself, masqueraded
    # Another pod (not an endpoint) keeps its address.
    assert ask(lab.pods[POD_B], "10.96.0.25", 80) == ("pod-a", POD_B)


def test_client_ip_affinity(lab):
    p = lab.proxier()
    p.sync([svc("sticky", "10.96.0.22", [ep(POD_A), ep(POD_B)], affinity_timeout=600)])
    assert len({ask(lab.client, "10.96.0.22", 80)[0] for _ in range(20)} ) == 1
    assert re.search(r"set affinity-\S+ \{[^}]*timeout 10m", lab.table())
    p.sync([svc("sticky", "10.96.0.22", [ep(POD_A), ep(POD_B)])])
    assert len({ask(lab.client, "10.96.0.22", 80)[0] for _ in range(30)}) == 2
    assert "affinity-" not in lab.table()  # the sets went with the affinity


def test_udp_endpoint_removal_flushes_conntrack(lab):
    both = [ep(POD_A, UDP_PORT), ep(POD_B, UDP_PORT)]
    dns = lambda eps: svc("dns", "10.96.0.30", eps, proto="UDP", port=53)  # noqa: E731
    p = lab.proxier(conntrack_cleanup=False)
    p.sync([dns(both)])
    with udp_client(lab, "10.96.0.30", 53) as query:
        first = query()
        gone = POD_A if first == "pod-a" else POD_B
        rest = [e for e in both if e.ip != gone]
        p.sync([dns(rest)])
        assert query() == first  # the rules changed, the flow did not
        assert p.clean_stale_conntrack() >= 1
        other = query()
        assert other != first
        p.conntrack_cleanup = True
        p.sync([dns(both)])
        assert query() == other  # still a live endpoint: left alone
        result = p.sync([dns([e for e in both if e.ip == gone])])
        assert result.conntrack_deleted >= 1
        assert query() == first


def _without(table: str, *needles: str) -> list[str]:
    return [line for line in table.splitlines() if not any(n in line for n in needles)]


def _tables(lab) -> dict[str, str]:
    """iptables-nft's tables in the node, without counters (traffic moves them)."""
    return {t: re.sub(r"counter packets \d+ bytes \d+", "counter", lab.sh("nft", "list", "table", "ip", t))
            for t in ("nat", "filter")}


def test_partial_sync_touches_only_what_changed(lab):
    # Others' tables in the same namespace (flannel and the CNI through iptables-nft).
    lab.sh("iptables-nft", "-t", "nat", "-N", "FLANNEL-POSTRTG")
    lab.sh("iptables-nft", "-t", "nat", "-A", "FLANNEL-POSTRTG", "-m", "mark", "--mark", "0x4000/0x4000", "-j",
           "RETURN")
    lab.sh("iptables-nft", "-t", "filter", "-A", "FORWARD", "-s", "10.244.0.0/16", "-j", "ACCEPT")
    theirs = [t for t in lab.sh("nft", "list", "tables").split() if t not in ("table", "ip", "kube-proxy")]
    theirs_text = _tables(lab)
    a = svc("a", "10.96.0.40", [ep(POD_A)])
    b = svc("b", "10.96.0.41", [ep(POD_A), ep(POD_B)])
    c = svc("c", "10.96.0.42", [ep(POD_B)], type="NodePort", node_port=30200)
    p = lab.proxier()
    p.sync([a, b, c])
    before = lab.table()
    b2 = svc("b", "10.96.0.41", [ep(POD_A)])
    result = p.sync([a, b2, c])
    assert not result.full and result.reason == "partial"
    assert result.services_written == 1 and result.chains_written == 1 and result.chains_deleted == 0
    cb = f"service-{nf.chain_base(b)}"
    for other in (a, c):
        assert nf.chain_base(other) not in p.last_text
    assert p.last_text.splitlines()[1:3] == [f"flush chain ip kube-proxy {cb}",
                                             f"add rule ip kube-proxy {cb} ip daddr 10.96.0.41 tcp dport 80 ip saddr "
                                             f"!= {CLUSTER_CIDR} jump mark-for-masquerade"]
    after = lab.table()
    # Everything but b's chain is byte for byte as it was.
    assert _without(after, POD_A, POD_B, "dnat") == _without(before, POD_A, POD_B, "dnat")
    chain = re.compile(rf"chain {re.escape(cb)} \{{.*?\n\t}}", re.S)
    assert chain.sub("", after) == chain.sub("", before)
    assert f"dnat to {POD_B}:8080" not in chain.search(after).group(0)
    assert {ask(lab.client, "10.96.0.41", 80)[0] for _ in range(5)} == {"pod-a"}
    # Nothing changed: a transaction of the table probe alone.
    result = p.sync([a, b2, c])
    assert p.last_text == "add chain ip kube-proxy mark-for-masquerade\n" and result.chains_written == 0
    assert lab.table() == after
    # A service goes: its element and chains go, and nothing else.
    p.sync([a, b2])
    gone = lab.table()
    assert "10.96.0.42" not in gone and nf.chain_base(c) not in gone and "30200" not in gone
    assert nf.chain_base(a) in gone
    # A full sync gives the same table, and others' tables are never touched.
    p.force_full_sync()
    assert p.sync([a, b2]).full
    assert lab.table() == gone
    assert [t for t in lab.sh("nft", "list", "tables").split() if t not in ("table", "ip", "kube-proxy")] == theirs
    assert _tables(lab) == theirs_text
    p.cleanup()
    assert "kube-proxy" not in lab.sh("nft", "list", "tables")
    assert _tables(lab) == theirs_text


def test_deleted_table_is_restored_by_the_next_sync(lab):
    p = lab.proxier()
    services = [WEB, svc("other", "10.96.0.50", [ep(POD_B)])]
    p.sync(services)
    want = lab.table()
    assert ask(lab.client, "10.96.0.10", 80)
    lab.sh("nft", "delete", "table", "ip", "kube-proxy")
    with pytest.raises(OSError):
        ask(lab.client, "10.96.0.10", 80, timeout=0.5)
    result = p.sync(services)
    assert result.full and result.reason == "table gone" and result.partial_failure
    assert lab.table() == want
    assert ask(lab.client, "10.96.0.10", 80)
    # Deleted while a change is pending: the same.
    lab.sh("nft", "delete", "table", "ip", "kube-proxy")
    result = p.sync([WEB])
    assert result.full and result.reason == "table gone"
    assert "10.96.0.50" not in lab.table() and ask(lab.client, "10.96.0.10", 80)
    # Flushed (not deleted): the periodic full sync repairs it.
    p.full_sync_every = 1
    lab.sh("nft", "flush", "table", "ip", "kube-proxy")
    assert not p.sync([WEB]).full
    result = p.sync([WEB])
    assert result.full and result.reason == "periodic"
    assert ask(lab.client, "10.96.0.10", 80)


def _host_ruleset() -> str:
    """The host namespace's ruleset, without counters (host traffic moves them)."""
    out = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True, timeout=30).stdout
    return re.sub(r"counter packets \d+ bytes \d+", "counter", out)


def test_nothing_changes_in_the_host(lab):
    before = _host_ruleset()
    p = lab.proxier()
    p.sync([WEB])
    p.sync([WEB, svc("udp", "10.96.0.60", [ep(POD_A, UDP_PORT)], proto="UDP", port=53)])
    p.force_full_sync()
    p.sync([WEB])
    q = lab.proxier(backend="nft")
    q.sync([WEB])
    p.cleanup()
    assert "kube-proxy" not in lab.sh("nft", "list", "tables")
    assert _host_ruleset() == before


def test_refuses_unknown_backend(lab):
    with pytest.raises(ValueError):
        lab.proxier(backend="ebpf")
    assert proxier.ProxyError is nf.ProxyError  # kube-proxy's loop catches one error type for both modes
