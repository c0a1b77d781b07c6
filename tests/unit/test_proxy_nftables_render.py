"""kube-proxy's nftables mode (proxy.nftables), the renderer alone: upstream's names, map
elements and chains.  tests/kernel/test_proxy_nftables.py runs the proxier on real namespaces."""

from __future__ import annotations

import base64
import hashlib
from collections import Counter

from proxy import nftables as nf
from proxy.model import Endpoint
from tests.proxy_util import CLUSTER_CIDR, NODE, NODE_IP, POD_A, POD_B, ep, svc


def h8(text: str) -> str:
    """upstream's hashAndTruncate prefix, computed here without proxy.nftables."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:8]


def render(sps, **kw) -> nf.Ruleset:
    return nf.render(sps, node=NODE, node_ips=[NODE_IP], cluster_cidr=CLUSTER_CIDR, **kw)


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


