"""kube-proxy's nftables mode (proxy.nftables): the renderer (upstream's names, map elements,
chains), then the proxier on real namespaces with real connections -- the lab of
tests/test_proxy_iptables.py (a node namespace with a bridge, a client pod, two backend pods
serving TCP and UDP, an external namespace routed through the node; br_netfilter on, hairpin
on the pod ports), here under namespaces of its own."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import subprocess
import time
from collections import Counter

import pytest

from proxy import nftables as nf
from proxy import proxier
from proxy.model import Endpoint
from tests.test_proxy_iptables import (  # the same lab and builders as the iptables mode's tests
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


def h8(text: str) -> str:
    """upstream's hashAndTruncate prefix, computed here without proxy.nftables."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:8]


def render(sps, **kw) -> nf.Ruleset:
    return nf.render(sps, node=NODE, node_ips=[NODE_IP], cluster_cidr=CLUSTER_CIDR, **kw)


# == the renderer, pure ========================================================================
def test_chain_names_are_upstreams():
    # upstream's own examples (pkg/proxy/nftables/proxier.go comments) ...
    sp = svc("svc1", "172.30.0.41", ns="ns1", port_name="p80")
    assert nf.chain_base(sp) == "ULMVA6XW-ns1/svc1/tcp/p80"
    assert nf.endpoint_base(sp, Endpoint("10.180.0.1", 80)) == "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    # ... and the formula, computed independently.
    web = svc("web", "10.96.0.10", [ep(POD_A)], type="NodePort", node_port=30080)
    rs = render([web], fast=False)
    base = f"{h8('default/web/tcp/')}-default/web/tcp/"
    eb = f"{h8(f'default/web/tcp/__{POD_A}/8080')}-default/web/tcp/__{POD_A}/8080"
    assert set(rs.services["default/web"].chains) == {f"service-{base}", f"external-{base}", f"endpoint-{eb}"}
    assert all(nf.is_service_chain(c) for c in rs.services["default/web"].chains)
    assert nf.hash_and_truncate("x" * 300).endswith("...") and len(nf.hash_and_truncate("x" * 300)) == 240


def test_map_elements_and_chains_of_a_nodeport_service():
    web = svc("web", "10.96.0.10", [ep(POD_A), ep(POD_B)], port_name="http", type="LoadBalancer",
              node_port=30080, external_ips=("192.168.77.50",), load_balancer_ips=("192.168.77.60",))
    s = render([web]).services["default/web:http"]
    base = nf.chain_base(web)
    assert s.elements == {
        nf.SERVICE_IPS: {"10.96.0.10 . tcp . 80": f"goto service-{base}",
                         "192.168.77.50 . tcp . 80": f"goto external-{base}",
                         "192.168.77.60 . tcp . 80": f"goto external-{base}"},
        nf.SERVICE_NODEPORTS: {"tcp . 30080": f"goto external-{base}"},
    }
    # The fast layout: no per-endpoint chains; 1/2 then the rest, as iptables' statistic rules.
    assert s.chains == {
        f"service-{base}": (f"ip daddr 10.96.0.10 tcp dport 80 ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade",
                            f"numgen random mod 2 == 0 meta l4proto tcp dnat to {POD_A}:8080",
                            f"meta l4proto tcp dnat to {POD_B}:8080"),
        f"external-{base}": ("jump mark-for-masquerade", f"goto service-{base}"),
    }
    assert s.hairpin == {POD_A, POD_B}
    # upstream's layout: endpoint chains doing the hairpin mark and the DNAT, a numgen vmap.
    s = render([web], fast=False).services["default/web:http"]
    eps = [f"endpoint-{nf.endpoint_base(web, e)}" for e in web.endpoints]
    assert s.chains[f"service-{base}"][-1] == f"numgen random mod 2 vmap {{ 0 : goto {eps[0]}, 1 : goto {eps[1]} }}"
    assert s.chains[eps[1]] == (f"ip saddr {POD_B} jump mark-for-masquerade", f"meta l4proto tcp dnat to {POD_B}:8080")
    assert not s.hairpin


def test_no_endpoints_reject_and_headless_gets_nothing():
    sps = [svc("empty", "10.96.0.12", [], type="LoadBalancer", node_port=30081, external_ips=("192.168.77.50",),
               load_balancer_ips=("192.168.77.60",)),
           svc("headless", None, [ep(POD_A)]),
           svc("dying", "10.96.0.13", [ep(POD_A, ready=False, serving=False, terminating=True)])]
    rs = render(sps)
    assert set(rs.services) == {"default/empty", "default/dying"}
    empty = rs.services["default/empty"]
    assert empty.chains == {}
    assert empty.elements == {
        nf.NO_ENDPOINT_SERVICES: {f"{ip} . tcp . 80": "goto reject-chain"
                                  for ip in ("10.96.0.12", "192.168.77.50", "192.168.77.60")},
        nf.NO_ENDPOINT_NODEPORTS: {"tcp . 30081": "goto reject-chain"},
    }
    assert rs.services["default/dying"].elements == {nf.NO_ENDPOINT_SERVICES: {"10.96.0.13 . tcp . 80":
                                                                               "goto reject-chain"}}
    text = rs.full_text()
    assert "headless" not in text
    assert "chain reject-chain {\n\t\treject\n\t}" in text
    assert f"vmap @{nf.NO_ENDPOINT_SERVICES}" in text and f"vmap @{nf.NO_ENDPOINT_NODEPORTS}" in text


def test_base_chains_at_upstreams_hooks():
    text = render([]).full_text()
    assert text.startswith("add table ip kube-proxy\ndelete table ip kube-proxy\ntable ip kube-proxy {")
    for name, typ, hook, prio in nf.BASE_CHAINS:
        assert f"chain {name} {{ type {typ} hook {hook} priority {prio}; policy accept;" in text
    assert "meta mark set meta mark | 0x4000" in text and "masquerade fully-random" in text
    assert "ip daddr . meta l4proto . th dport vmap @service-ips" in text
    assert "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports" in text
    assert "map service-ips { type ipv4_addr . inet_proto . inet_service : verdict;" in text
    assert "map service-nodeports { type inet_proto . inet_service : verdict;" in text
    assert "table ip nat" not in text and "table ip filter" not in text


def test_external_traffic_policy_local():
    local, remote = ep(POD_A), ep(POD_B, node="other")
    sp = svc("weblocal", "10.96.0.20", [local, remote], type="NodePort", node_port=30090, external_local=True)
    base = nf.chain_base(sp)
    s = render([sp]).services["default/weblocal"]
    assert s.chains[f"external-{base}"] == (
        f'ip saddr {CLUSTER_CIDR} goto service-{base} comment "short-circuit pod traffic"',
        'fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"',
        f'fib saddr type local goto service-{base} comment "short-circuit local traffic"',
        f"goto local-{base}")
    assert s.chains[f"local-{base}"] == (f"meta l4proto tcp dnat to {POD_A}:8080",)  # no masquerade: source kept
    assert len(s.chains[f"service-{base}"]) == 3  # masquerade + both endpoints
    # Only a remote endpoint: external traffic dropped here, the short-circuit kept.
    sp = svc("weblocal", "10.96.0.20", [remote], type="NodePort", node_port=30090, external_local=True)
    s = render([sp]).services["default/weblocal"]
    assert f"local-{base}" not in s.chains and s.chains[f"external-{base}"][-1].startswith("fib saddr type local goto")
    assert s.elements[nf.NO_ENDPOINT_NODEPORTS] == {"tcp . 30090": "drop"}
    # internalTrafficPolicy Local without a local endpoint: the cluster IP drops.
    s = render([svc("itp", "10.96.0.21", [remote], internal_local=True)]).services["default/itp"]
    assert s.elements == {nf.NO_ENDPOINT_SERVICES: {"10.96.0.21 . tcp . 80": "drop"}}


def test_load_balancer_source_ranges():
    lb = svc("lb", "10.96.0.23", [ep(POD_A)], type="LoadBalancer", node_port=30100,
             load_balancer_ips=("192.168.77.70",), source_ranges=("192.168.77.0/24", " 10.1.0.0/16"))
    s = render([lb]).services["default/lb"]
    base = nf.chain_base(lb)
    assert s.elements[nf.FIREWALL_IPS] == {"192.168.77.70 . tcp . 80": f"goto firewall-{base}"}
    # The node's IP is in the first range, so the LB IP itself may be a source too (upstream's allowFromNode).
    assert s.chains[f"firewall-{base}"] == ("ip saddr != { 192.168.77.0/24, 10.1.0.0/16, 192.168.77.70 } drop",)
    assert "ct state new jump firewall-check" in render([lb]).full_text()


def test_session_affinity_sets():
    sp = svc("sticky", "10.96.0.22", [ep(POD_A), ep(POD_B)], affinity_timeout=600)
    s = render([sp]).services["default/sticky"]
    ebs = [nf.endpoint_base(sp, e) for e in sp.endpoints]
    assert s.sets == {f"affinity-{b}": 600 for b in ebs}
    rules = s.chains[f"service-{nf.chain_base(sp)}"]
    assert rules[1:3] == tuple(f"ip saddr @affinity-{b} goto endpoint-{b}" for b in ebs)
    assert s.chains[f"endpoint-{ebs[0]}"] == (f"ip saddr {POD_A} jump mark-for-masquerade",
                                              f"update @affinity-{ebs[0]} {{ ip saddr }}",
                                              f"meta l4proto tcp dnat to {POD_A}:8080")
    want = f"set affinity-{ebs[0]} {{ type ipv4_addr; flags dynamic,timeout; timeout 600s; }}"
    assert want in render([sp]).full_text()


def test_partial_text_names_only_what_changed():
    a, b = svc("a", "10.96.0.30", [ep(POD_A)]), svc("b", "10.96.0.31", [ep(POD_A), ep(POD_B)])
    r = nf.Renderer(node=NODE, node_ips=[NODE_IP], cluster_cidr=CLUSTER_CIDR)
    old = r.render([a, b])
    hairpin = old.hairpin()
    new = r.render([a, svc("b", "10.96.0.31", [ep(POD_B)])])
    assert new.services["default/a"] is old.services["default/a"]
    text, counts = nf.partial_text(old, new, hairpin)
    cb, ca = f"service-{nf.chain_base(b)}", f"service-{nf.chain_base(a)}"
    assert text.splitlines() == [
        "add chain ip kube-proxy mark-for-masquerade",
        f"flush chain ip kube-proxy {cb}",
        f"add rule ip kube-proxy {cb} ip daddr 10.96.0.31 tcp dport 80 ip saddr != {CLUSTER_CIDR} jump "
        "mark-for-masquerade",
        f"add rule ip kube-proxy {cb} meta l4proto tcp dnat to {POD_B}:8080"]
    assert ca not in text and counts["chains_written"] == 1 and counts["elements_added"] == 0
    assert hairpin == Counter({POD_A: 1, POD_B: 1})  # still used by a / b
    # b goes: its element and chain are deleted, POD_B leaves the hairpin set.
    gone = r.render([a])
    text, counts = nf.partial_text(new, gone, hairpin)
    assert "delete element ip kube-proxy service-ips { 10.96.0.31 . tcp . 80 }" in text
    assert f"delete element ip kube-proxy hairpin-endpoints {{ {POD_B} . {POD_B} }}" in text
    assert text.rstrip().endswith(f"delete chain ip kube-proxy {cb}") and counts["chains_deleted"] == 1
    assert hairpin == Counter({POD_A: 1})


def test_renderer_reuses_unchanged_service_ports():
    r = nf.Renderer(node=NODE, node_ips=[NODE_IP], cluster_cidr=CLUSTER_CIDR)
    a, b = svc("a", "10.96.0.30", [ep(POD_A)]), svc("b", "10.96.0.31", [ep(POD_B)])
    first = r.render([a, b]).services
    # Rebuilt afresh but equal (as service_ports() does on every sync), and moved: found by value.
    again = r.render([svc("x", "10.96.0.29", []), svc("b", "10.96.0.31", [ep(POD_B)]),
                      svc("a", "10.96.0.30", [ep(POD_A)])]).services
    assert again["default/a"] is first["default/a"] and again["default/b"] is first["default/b"]
    # Same ServicePort, other endpoints: rendered anew.
    changed = r.render([svc("b", "10.96.0.31", [ep(POD_A)])]).services
    assert changed["default/b"] is not first["default/b"] and POD_A in str(changed["default/b"].chains)


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
