"""kube-proxy's IPVS mode (proxy.ipvs), the renderer alone: virtual servers, the iptables rules
and ipsets beside them, against upstream's names and rules.  tests/kernel/test_proxy_ipvs.py
runs the proxier on real namespaces (in a qemu guest where this kernel has no ip_vs)."""

from __future__ import annotations

import pytest

from proxy import ipvs
from tests.proxy_util import CLUSTER_CIDR, NODE, NODE_IP, POD_A, POD_B, UDP_PORT, ep, svc


def render(sps, **kw) -> ipvs.Ruleset:
    return ipvs.render(sps, node=NODE, node_ips=[NODE_IP], cluster_cidr=CLUSTER_CIDR, **kw)


def test_virtual_servers_per_ip_and_port():
    lb = svc("lb", "10.96.0.40", [ep(POD_A), ep(POD_B, node="other")], type="LoadBalancer", node_port=30040,
             load_balancer_ips=("10.200.0.5",), external_ips=("10.200.1.1",), affinity_timeout=600)
    rs = render([lb, svc("headless", None, [ep(POD_A)])], scheduler="wrr")
    servers = rs.servers
    assert set(servers) == {("tcp", "10.96.0.40", 80), ("tcp", "10.200.0.5", 80), ("tcp", "10.200.1.1", 80),
                            ("tcp", NODE_IP, 30040)}  # the headless Service gets nothing
    for vs in servers.values():
        assert vs.scheduler == "wrr" and vs.persistence == 600
        assert vs.reals == (f"{POD_A}:8080", f"{POD_B}:8080")
    assert servers[("tcp", "10.96.0.40", 80)].add_line() == "-A -t 10.96.0.40:80 -s wrr -p 600"
    assert rs.addresses == {"10.96.0.40", "10.200.0.5", "10.200.1.1"}  # node IPs are not put on kube-ipvs0
    assert rs.ipsets[ipvs.CLUSTER_IP] == {"10.96.0.40,tcp:80"}
    assert rs.ipsets[ipvs.LOOP_BACK] == {f"{POD_A},tcp:8080,{POD_A}"}  # local endpoints only
    assert rs.ipsets[ipvs.NODE_PORT_TCP] == {"30040"} and not rs.ipsets[ipvs.NODE_PORT_LOCAL_TCP]
    assert rs.ipsets[ipvs.IPVS_IPS] == rs.addresses
    roles = [role for role, _ in rs.services["default/lb/tcp"].servers]
    assert roles == ["cluster IP", "external IP", "load balancer", "node port"]
    with pytest.raises(ValueError, match="unknown IPVS scheduler"):
        render([lb], scheduler="fastest")


def test_traffic_policies_choose_the_real_servers():
    eps = [ep(POD_A), ep(POD_B, node="other")]
    rs = render([svc("ext", "10.96.0.41", eps, type="NodePort", node_port=30041, external_local=True),
                 svc("int", "10.96.0.42", eps, internal_local=True),
                 svc("udp", "10.96.0.43", [ep(POD_A, UDP_PORT)], proto="UDP", port=53, type="NodePort",
                     node_port=30053, external_local=True)])
    s = rs.servers
    assert s[("tcp", "10.96.0.41", 80)].reals == (f"{POD_A}:8080", f"{POD_B}:8080")  # internal: every endpoint
    assert s[("tcp", NODE_IP, 30041)].reals == (f"{POD_A}:8080",)  # external: local only
    assert s[("tcp", "10.96.0.42", 80)].reals == (f"{POD_A}:8080",)
    assert rs.ipsets[ipvs.NODE_PORT_LOCAL_TCP] == {"30041"} and rs.ipsets[ipvs.NODE_PORT_LOCAL_UDP] == {"30053"}
    # Terminating endpoints only when none is ready (upstream's rule, shared with the other modes).
    rs = render([svc("t", "10.96.0.44", [ep(POD_A, ready=False, serving=True, terminating=True),
                                         ep(POD_B, ready=False, serving=False, terminating=True)])])
    assert rs.servers[("tcp", "10.96.0.44", 80)].reals == (f"{POD_A}:8080",)


def test_iptables_rules_follow_the_sets():
    rs = render([svc("plain", "10.96.0.50", [ep(POD_A)])])
    assert (f'-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" '
            f"-m set --match-set KUBE-CLUSTER-IP dst,dst ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ") in rs.nat
    assert rs.nat[0] == ('-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip '
                         'for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE')
    assert not any("KUBE-NODE-PORT-TCP" in r or "-j KUBE-LOAD-BALANCER" in r for r in rs.nat)  # empty sets: no rule
    assert rs.nat[-1] == "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000"
    assert rs.filter[-1] == ("-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst "
                             "-j REJECT")
    rs = render([svc("lb", "10.96.0.51", [ep(POD_A)], type="LoadBalancer", node_port=30051,
                     load_balancer_ips=("10.200.0.6",), source_ranges=(f"{NODE_IP}/24",))])
    assert "-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port for masquerade purpose\" " \
           "-m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ" in rs.nat
    assert any("--match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL" in r for r in rs.filter)
    assert rs.ipsets[ipvs.LOAD_BALANCER_SOURCE_CIDR] == {"10.200.0.6,tcp:80,192.168.77.0/24"}
    assert rs.ipsets[ipvs.LOAD_BALANCER_SOURCE_IP] == {"10.200.0.6,tcp:80,10.200.0.6"}  # the node is in the range
    text = rs.iptables_text(jumps=ipvs.JUMPS)
    assert '-I PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in text
    assert text.count("COMMIT") == 3 and ":KUBE-PROXY-CANARY - [0:0]" in text


def test_ipvsadm_save_parsed_and_diffed():
    current = ipvs.parse_save(
        "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.11:8080 -m -w 1\n"
        "-a -t 10.96.0.10:80 -r 10.244.1.12:8080 -m -w 1\n"
        "-A -u 10.96.0.30:53 -s rr -p 600\n-A -f 7 -s rr\n-A -t 10.96.0.99:80 -s rr\n")
    assert set(current) == {("tcp", "10.96.0.10", 80), ("udp", "10.96.0.30", 53), ("tcp", "10.96.0.99", 80)}
    assert current[("udp", "10.96.0.30", 53)][0].persistence == 600
    desired = {vs.key: vs for vs in (
        ipvs.VirtualServer("tcp", "10.96.0.10", 80, reals=("10.244.1.11:8080", "10.244.1.13:8080")),
        ipvs.VirtualServer("udp", "10.96.0.30", 53, reals=()),
        ipvs.VirtualServer("sctp", "10.96.0.31", 9, "sh"))}
    assert ipvs.diff_commands(current, desired) == [
        "-D -t 10.96.0.99:80",
        "-A --sctp-service 10.96.0.31:9 -s sh",
        "-d -t 10.96.0.10:80 -r 10.244.1.12:8080",
        "-a -t 10.96.0.10:80 -r 10.244.1.13:8080 -m -w 1",
        "-E -u 10.96.0.30:53 -s rr",
    ]
    assert ipvs.diff_commands({k: (v, dict.fromkeys(v.reals, 1)) for k, v in desired.items()}, desired) == []


def test_ipset_text_full_and_partial():
    full = ipvs.ipset_text(None, {ipvs.CLUSTER_IP: {"10.96.0.10,tcp:80"}})
    assert "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 comment -exist" in full
    assert "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535 comment -exist" in full
    assert "flush KUBE-CLUSTER-IP\nadd KUBE-CLUSTER-IP 10.96.0.10,tcp:80 -exist" in full
    part = ipvs.ipset_text({ipvs.CLUSTER_IP: {"10.96.0.10,tcp:80"}}, {ipvs.CLUSTER_IP: {"10.96.0.11,tcp:80"}})
    assert "flush" not in part
    assert part.endswith("del KUBE-CLUSTER-IP 10.96.0.10,tcp:80 -exist\nadd KUBE-CLUSTER-IP 10.96.0.11,tcp:80 -exist\n")


