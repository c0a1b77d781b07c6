"""kube-proxy's iptables mode (proxy.iptables), the renderer alone: against upstream's own golden
output and documented names.  tests/kernel/test_proxy_iptables.py runs the proxier on real
namespaces with real connections."""

from __future__ import annotations

import re

from proxy import iptables as ipt
from proxy.model import Endpoint
from tests.proxy_util import CLUSTER_CIDR, NODE, NODE_IP, POD_A, POD_B, ep, svc, upstream_hash


def render(sps, **kw) -> ipt.Ruleset:
    return ipt.render(sps, node=NODE, node_ips=[NODE_IP], cluster_cidr=CLUSTER_CIDR, **kw)


def test_chain_names_are_upstreams_hashes():
    # Known values from upstream's proxier_test.go (ns1/svc1:p80, endpoint 10.180.0.1:80) ...
    assert ipt.service_chain("KUBE-SVC-", "ns1/svc1:p80", "tcp") == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert ipt.endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    # ... and the formula, computed independently, for names with and without a port name.
    for name, proto in (("default/web:http", "tcp"), ("kube-system/kube-dns:dns", "udp"), ("a/b", "sctp")):
        h = upstream_hash(name + proto)
        assert ipt.port_proto_hash(name, proto) == h
        sep = "KUBE-SEP-" + upstream_hash(name + proto + "10.0.0.1:53")
        assert ipt.endpoint_chain(name, proto, "10.0.0.1:53") == sep
    rs = render([svc("web", "10.96.0.10", [ep(POD_A)], port_name="http", type="NodePort", node_port=30080,
                     external_local=True)])
    h = upstream_hash("default/web:httptcp")
    assert {f"KUBE-SVC-{h}", f"KUBE-SVL-{h}", f"KUBE-EXT-{h}"} <= set(rs.chains("nat"))
    assert f"KUBE-SEP-{upstream_hash('default/web:httptcp' + POD_A + ':8080')}" in rs.chains("nat")


def test_probabilities_print_as_upstream():
    eps = [ep(f"10.244.1.{i}") for i in (11, 12, 13)]
    rs = render([svc("web", "10.96.0.10", eps)])
    rules = rs.rules("nat", "KUBE-SVC-" + upstream_hash("default/webtcp"))
    stats = [re.search(r"--probability (\S+)", r) for r in rules if "KUBE-SEP-" in r]
    assert [m.group(1) if m else None for m in stats] == ["0.3333333333", "0.5000000000", None]
    assert ipt.probability(3) == "0.3333333333" and ipt.probability(2) == "0.5000000000"
    assert ipt.probability(7) == "0.1428571429"


# upstream's TestOverallIPTablesRules, inputs and expected output (pkg/proxy/iptables/proxier_test.go).
UPSTREAM_OVERALL = """
*filter
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-NODEPORTS -m comment --comment "ns2/svc2:p80 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT
-A KUBE-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j DROP
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-PROXY-FIREWALL -m comment --comment "ns5/svc5:p80 traffic not accepted by KUBE-FW-NUKIZ6OKUXPJNT4C" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j DROP
COMMIT
*nat
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXT-4SW47YFZTEDKD3PK - [0:0]
:KUBE-EXT-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-EXT-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-EXT-X27LE4BHSL4DOUIK - [0:0]
:KUBE-FW-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-C6EBXVWJJZMIWKLZ - [0:0]
:KUBE-SEP-I77PXRDZVX7PMWMN - [0:0]
:KUBE-SEP-OYPFS5VJICHGATKP - [0:0]
:KUBE-SEP-RS4RBKLTHTF2IUXJ - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
:KUBE-SEP-UKSFD7AGPMPPLUHC - [0:0]
:KUBE-SVC-4SW47YFZTEDKD3PK - [0:0]
:KUBE-SVC-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-SVC-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3001 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3001 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3003 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-X27LE4BHSL4DOUIK
-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp --dport 3003 -j KUBE-EXT-X27LE4BHSL4DOUIK
-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp -d 127.0.0.0/8 --dport 3002 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp --dport 3002 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 external IP" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK
-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j KUBE-SVC-4SW47YFZTEDKD3PK
-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 external IP" -m tcp -p tcp -d 192.168.99.33 --dport 80 -j KUBE-EXT-4SW47YFZTEDKD3PK
-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j KUBE-SVC-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 loadbalancer IP" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j KUBE-FW-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-EXT-4SW47YFZTEDKD3PK -m comment --comment "masquerade traffic for ns4/svc4:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-4SW47YFZTEDKD3PK -j KUBE-SVC-4SW47YFZTEDKD3PK
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "pod traffic for ns2/svc2:p80 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "masquerade LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "route LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "masquerade traffic for ns5/svc5:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-NUKIZ6OKUXPJNT4C -j KUBE-SVC-NUKIZ6OKUXPJNT4C
-A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "masquerade traffic for ns3/svc3:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-X27LE4BHSL4DOUIK -j KUBE-SVC-X27LE4BHSL4DOUIK
-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "other traffic to ns5/svc5:p80 will be dropped by KUBE-PROXY-FIREWALL"
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -s 10.180.0.5 -j KUBE-MARK-MASQ
-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.5:80
-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -s 10.180.0.4 -j KUBE-MARK-MASQ
-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.4:80
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.4:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-UKSFD7AGPMPPLUHC
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.5:80" -j KUBE-SEP-C6EBXVWJJZMIWKLZ
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.180.0.2:80" -j KUBE-SEP-RS4RBKLTHTF2IUXJ
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --rcheck --seconds 10800 --reap -j KUBE-SEP-I77PXRDZVX7PMWMN
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -j KUBE-SEP-I77PXRDZVX7PMWMN
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.180.0.3:80" -j KUBE-SEP-OYPFS5VJICHGATKP
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ
COMMIT
"""  # noqa: E501


def _chains_of(text: str) -> dict[str, dict[str, list[str]]]:
    """{table: {chain: [rule lines]}} of an iptables-restore text, chains as declared."""
    tables: dict[str, dict[str, list[str]]] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            table = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            table.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            table.setdefault(line.split()[1], []).append(line)
    return tables


def test_matches_upstreams_overall_golden_output():
    """The six Services of upstream's TestOverallIPTablesRules render to its expected rules,
    chain for chain and in order.  Upstream's fake differs in three ways netsim's real node
    does not: no --random-fully (the fake iptables lacks it), the mark printed as 0x4000
    (the fake sets the string itself), and nfacct counters (netsim creates none, so, as
    upstream does without them, no nfacct matches); and its one health-check NodePort rule
    is left out (healthCheckNodePort is not in netsim's model)."""
    test_node = "test-node"
    sps = [
        svc("svc1", "172.30.0.41", [Endpoint("10.180.0.1", 80)], ns="ns1", port_name="p80"),
        svc("svc2", "172.30.0.42", [Endpoint("10.180.0.2", 80)], ns="ns2", port_name="p80", type="LoadBalancer",
            node_port=3001, load_balancer_ips=("1.2.3.4",), external_ips=("192.168.99.22",), external_local=True),
        svc("svc3", "172.30.0.43", [Endpoint("10.180.0.3", 80)], ns="ns3", port_name="p80", type="NodePort",
            node_port=3003),
        svc("svc4", "172.30.0.44", [Endpoint("10.180.0.4", 80), Endpoint("10.180.0.5", 80, node=test_node)],
            ns="ns4", port_name="p80", type="NodePort", external_ips=("192.168.99.33",)),
        svc("svc5", "172.30.0.45", [Endpoint("10.180.0.3", 80)], ns="ns5", port_name="p80", type="LoadBalancer",
            node_port=3002, load_balancer_ips=("5.6.7.8",), source_ranges=(" 203.0.113.0/25",),
            affinity_timeout=10800),
        svc("svc6", "172.30.0.46", [], ns="ns6", port_name="p80"),
    ]
    rs = ipt.render(sps, node=test_node, node_ips=["192.168.0.2"], cluster_cidr="10.0.0.0/8")
    ours = rs.restore_text(jumps=(), canary=False).replace(ipt.MASQ_MARK, "0x4000").replace(" --random-fully", "")
    expected = "\n".join(line.replace(" -m nfacct --nfacct-name ct_state_invalid_dropped_pkts", "")
                         for line in UPSTREAM_OVERALL.splitlines()
                         if "localhost_nps_accepted_pkts" not in line and "health check node port" not in line)
    want, got = _chains_of(expected), _chains_of(ours)
    for table in ("filter", "nat"):
        assert {c: r for c, r in got[table].items() if r or c in want[table]} == want[table], table
    # Every jump lands in a chain that is declared and filled (upstream's checkIPTablesRuleJumps).
    for chains in got.values():
        for rules in chains.values():
            for rule in rules:
                m = re.search(r" -j (\S+)", rule)
                if m and m.group(1).startswith("KUBE-"):
                    assert m.group(1) in chains and (chains[m.group(1)] or m.group(1) == "KUBE-NODEPORTS"), rule


def test_no_endpoints_reject_everywhere_and_headless_gets_nothing():
    sps = [svc("empty", "10.96.0.12", [], type="LoadBalancer", node_port=30081, external_ips=("192.168.77.50",),
               load_balancer_ips=("192.168.77.60",)),
           svc("headless", None, [ep(POD_A)]),
           svc("dying", "10.96.0.13", [ep(POD_A, ready=False, serving=False, terminating=True)])]
    rs = render(sps)
    assert "headless" not in rs.restore_text() and "default/headless" not in rs.services
    filt = rs.chains("filter")
    svc_rules = [r for r in filt["KUBE-SERVICES"] if "default/empty" in r]
    assert svc_rules == ['-A KUBE-SERVICES -m comment --comment "default/empty has no endpoints" -m tcp -p tcp '
                         "-d 10.96.0.12 --dport 80 -j REJECT"]
    ext = [r for r in filt["KUBE-EXTERNAL-SERVICES"] if "default/empty" in r]
    assert len(ext) == 3 and all(r.endswith("-j REJECT") for r in ext)
    assert any("--dst-type LOCAL" in r and "--dport 30081" in r for r in ext)
    # No nat chains at all for a service without endpoints; terminating-but-not-serving is no endpoint.
    assert not any("default/empty" in r or "default/dying" in r for rules in rs.chains("nat").values() for r in rules)
    assert any("default/dying has no endpoints" in r for r in filt["KUBE-SERVICES"])


def test_terminating_endpoints_only_when_none_is_ready():
    ready, serving_term = ep(POD_A), ep(POD_B, ready=False, serving=True, terminating=True)
    rs = render([svc("web", "10.96.0.10", [ready, serving_term])])
    text = rs.restore_text()
    assert f"--to-destination {POD_A}:8080" in text and f"--to-destination {POD_B}:8080" not in text
    rs = render([svc("web", "10.96.0.10", [ep(POD_A, ready=False, serving=False, terminating=True), serving_term])])
    text = rs.restore_text()
    assert f"--to-destination {POD_B}:8080" in text and f"--to-destination {POD_A}:8080" not in text


def test_external_traffic_policy_local():
    h = upstream_hash("default/weblocaltcp")
    local, remote = ep(POD_A), ep(POD_B, node="other")
    rs = render([svc("weblocal", "10.96.0.20", [local, remote], type="NodePort", node_port=30090,
                     external_local=True)])
    nat = rs.chains("nat")
    # Pods and the node itself short-circuit to the cluster chain; the rest goes to the local one.
    assert nat[f"KUBE-EXT-{h}"] == [
        f'-A KUBE-EXT-{h} -m comment --comment "pod traffic for default/weblocal external destinations" '
        f"-s {CLUSTER_CIDR} -j KUBE-SVC-{h}",
        f'-A KUBE-EXT-{h} -m comment --comment "masquerade LOCAL traffic for default/weblocal external destinations" '
        "-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
        f'-A KUBE-EXT-{h} -m comment --comment "route LOCAL traffic for default/weblocal external destinations" '
        f"-m addrtype --src-type LOCAL -j KUBE-SVC-{h}",
        f"-A KUBE-EXT-{h} -j KUBE-SVL-{h}",
    ]
    assert [r.split(" -j ")[-1] for r in nat[f"KUBE-SVL-{h}"]] == [ipt.endpoint_chain("default/weblocal", "tcp",
                                                                                      f"{POD_A}:8080")]
    assert len([r for r in nat[f"KUBE-SVC-{h}"] if "KUBE-SEP-" in r]) == 2  # cluster chain: both
    assert not any("KUBE-MARK-MASQ" in r for r in nat[f"KUBE-SVL-{h}"])  # the source is kept
    # A node with no local endpoint drops external traffic, yet keeps the short-circuit.
    rs = render([svc("weblocal", "10.96.0.20", [remote], type="NodePort", node_port=30090, external_local=True)])
    assert f"KUBE-SVL-{h}" not in rs.chains("nat")
    assert rs.chains("nat")[f"KUBE-EXT-{h}"][-1].endswith(f"-j KUBE-SVC-{h}")
    assert rs.chains("filter")["KUBE-EXTERNAL-SERVICES"] == [
        '-A KUBE-EXTERNAL-SERVICES -m comment --comment "default/weblocal has no local endpoints" '
        "-m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30090 -j DROP"]


def test_internal_traffic_policy_local():
    h = upstream_hash("default/itptcp")
    rs = render([svc("itp", "10.96.0.21", [ep(POD_A), ep(POD_B, node="other")], internal_local=True)])
    nat = rs.chains("nat")
    assert f"KUBE-SVC-{h}" not in nat
    assert [r for r in nat["KUBE-SERVICES"] if "default/itp" in r][0].endswith(f"-j KUBE-SVL-{h}")
    assert [r.split(" -j ")[-1] for r in nat[f"KUBE-SVL-{h}"]] == ["KUBE-MARK-MASQ", ipt.endpoint_chain(
        "default/itp", "tcp", f"{POD_A}:8080")]
    rs = render([svc("itp", "10.96.0.21", [ep(POD_B, node="other")], internal_local=True)])
    assert rs.chains("filter")["KUBE-SERVICES"] == [
        '-A KUBE-SERVICES -m comment --comment "default/itp has no local endpoints" -m tcp -p tcp -d 10.96.0.21 '
        "--dport 80 -j DROP"]


def test_session_affinity():
    eps = [ep(POD_A), ep(POD_B)]
    rs = render([svc("sticky", "10.96.0.22", eps, affinity_timeout=600)])
    h = upstream_hash("default/stickytcp")
    seps = [ipt.endpoint_chain("default/sticky", "tcp", f"{e.ip}:8080") for e in eps]
    rules = rs.chains("nat")[f"KUBE-SVC-{h}"]
    assert [r for r in rules if "--rcheck" in r] == [
        f'-A KUBE-SVC-{h} -m comment --comment "default/sticky -> {e.ip}:8080" -m recent --name {s} --rcheck '
        f"--seconds 600 --reap -j {s}" for e, s in zip(eps, seps, strict=True)]
    rcheck = [i for i, r in enumerate(rules) if "--rcheck" in r]
    assert rcheck and max(rcheck) < min(i for i, r in enumerate(rules) if "statistic" in r)  # affinity first
    assert rs.chains("nat")[seps[0]][1] == (f"-A {seps[0]} -m comment --comment default/sticky -m recent --name "
                                           f"{seps[0]} --set -m tcp -p tcp -j DNAT --to-destination {POD_A}:8080")


def test_nodeport_source_ranges_and_masquerade_chain():
    rs = render([svc("lb", "10.96.0.23", [ep(POD_A)], type="LoadBalancer", node_port=30100,
                     load_balancer_ips=("192.168.77.70",), source_ranges=("192.168.77.0/24", "10.1.0.0/16"))])
    h = upstream_hash("default/lbtcp")
    nat, filt = rs.chains("nat"), rs.chains("filter")
    assert nat["KUBE-SERVICES"][-1] == ('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: '
                                        'this must be the last rule in this chain" -m addrtype --dst-type LOCAL '
                                        "-j KUBE-NODEPORTS")
    assert nat["KUBE-NODEPORTS"] == [f"-A KUBE-NODEPORTS -m comment --comment default/lb -m tcp -p tcp --dport 30100 "
                                     f"-j KUBE-EXT-{h}"]
    assert any("loadbalancer IP" in r and r.endswith(f"-j KUBE-FW-{h}") for r in nat["KUBE-SERVICES"])
    # Each range may pass; the node's own IP is in the first range, so the LB IP as a source may too.
    assert [r.split(" -j ")[0].split("loadbalancer IP\" ")[-1] for r in nat[f"KUBE-FW-{h}"][:-1]] == [
        "-s 192.168.77.0/24", "-s 10.1.0.0/16", "-s 192.168.77.70"]
    assert nat[f"KUBE-FW-{h}"][-1].endswith('will be dropped by KUBE-PROXY-FIREWALL"')
    assert filt["KUBE-PROXY-FIREWALL"] == [
        f'-A KUBE-PROXY-FIREWALL -m comment --comment "default/lb traffic not accepted by KUBE-FW-{h}" -m tcp -p tcp '
        "-d 192.168.77.70 --dport 80 -j DROP"]
    assert nat["KUBE-MARK-MASQ"] == [f"-A KUBE-MARK-MASQ -j MARK --or-mark {ipt.MASQ_MARK}"]
    assert nat["KUBE-POSTROUTING"][-1].endswith("-j MASQUERADE --random-fully")
    assert ipt.MASQ_MARK == "0x00004000" and int(ipt.MASQ_MARK, 16) == 0x4000
    # masquerade-all marks every cluster-IP packet, not only off-cluster ones.
    rs = render([svc("web", "10.96.0.10", [ep(POD_A)])], masquerade_all=True)
    first = rs.chains("nat")["KUBE-SVC-" + upstream_hash("default/webtcp")][0]
    assert first.endswith("--dport 80 -j KUBE-MARK-MASQ") and "! -s" not in first


def test_large_cluster_mode_drops_per_endpoint_comments():
    sps = [svc(f"s{i}", f"10.96.{i // 250}.{i % 250 + 1}", [ep(f"10.244.{i // 250}.{i % 250 + 1}")])
           for i in range(1001)]
    rs = render(sps)
    assert rs.large_cluster_mode
    sep = ipt.endpoint_chain("default/s0", "tcp", "10.244.0.1:8080")
    assert rs.chains("nat")[sep][0] == f"-A {sep} -s 10.244.0.1 -j KUBE-MARK-MASQ"
    assert not render(sps[:1000]).large_cluster_mode


def test_partial_restore_text_names_only_changed_services():
    a, b = svc("a", "10.96.0.30", [ep(POD_A)]), svc("b", "10.96.0.31", [ep(POD_A), ep(POD_B)])
    rs = render([a, b])
    text = rs.restore_text(changed_services=["default/b"], stale_chains=["KUBE-SEP-GONE"])
    ha, hb = upstream_hash("default/atcp"), upstream_hash("default/btcp")
    assert f":KUBE-SVC-{hb} - [0:0]" in text and f":KUBE-SVC-{ha}" not in text and f"-A KUBE-SVC-{ha}" not in text
    assert f"-j KUBE-SVC-{ha}" in text  # KUBE-SERVICES is always rewritten whole
    assert ":KUBE-SEP-GONE - [0:0]" in text and "-X KUBE-SEP-GONE" in text
    assert "-I " not in text and "KUBE-PROXY-CANARY" not in text
    full = rs.restore_text()
    assert full.count("-I ") == len(ipt.JUMPS) + len(ipt.KUBELET_JUMPS)
    assert full.startswith("*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n*filter\n")


