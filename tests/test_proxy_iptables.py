"""kube-proxy's iptables mode (proxy.iptables): the renderer against upstream's own golden
output and documented names, then the proxier on real namespaces with real connections.

The lab: a "node" namespace with a bridge (10.244.1.1/24) holding a client pod (.20) and two
backend pods (.11, .12) that each run a small TCP and UDP server in this process, plus an
"external" namespace (192.168.77.2) routed through the node (192.168.77.1).  br_netfilter is
on in the node, as kube-proxy wants it with a bridge CNI: replies from a backend to a client
on the same bridge are bridged, and must still meet the node's conntrack to be un-DNATed; and
the pod ports are in hairpin mode, as the bridge CNI's hairpinMode sets them, since a pod's
packet DNATed back to itself leaves the bridge by the port it came in on."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from netsim import kernel
from netsim.model import names
from proxy import iptables as ipt
from proxy import iptables_sync
from proxy.model import Endpoint, ServicePort
from proxy.proxier import BACKENDS, run_in
from tests.conftest import unique_name

NODE = "node"
CLUSTER_CIDR = "10.244.0.0/16"
NODE_IP = "192.168.77.1"
EXTERNAL_IP = "192.168.77.2"
BRIDGE_IP = "10.244.1.1"
POD_A, POD_B, CLIENT = "10.244.1.11", "10.244.1.12", "10.244.1.20"
TCP_PORT, UDP_PORT = 8080, 5353


def upstream_hash(text: str) -> str:
    """base32(sha256(text))[:16], computed here without proxy.iptables."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def svc(name, cluster_ip, endpoints=(), *, ns="default", port_name="", proto="TCP", port=80, **kw) -> ServicePort:
    return ServicePort(ns, name, port_name, proto, cluster_ip, port, endpoints=tuple(endpoints), **kw)


def ep(ip, port=TCP_PORT, node=NODE, **kw) -> Endpoint:
    return Endpoint(ip, port, node=node, **kw)


def render(sps, **kw) -> ipt.Ruleset:
    return ipt.render(sps, node=NODE, node_ips=[NODE_IP], cluster_cidr=CLUSTER_CIDR, **kw)


# == the renderer, pure ========================================================================
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


# == the proxier, on real namespaces ===========================================================
@dataclass
class Lab:
    cluster: str
    node: str
    client: str
    external: str
    pods: dict[str, str] = field(default_factory=dict)  # pod IP -> namespace
    stop: threading.Event = field(default_factory=threading.Event)
    socks: list = field(default_factory=list)
    threads: list = field(default_factory=list)
    proxiers: list = field(default_factory=list)

    def proxier(self, **kw) -> iptables_sync.Proxier:
        p = iptables_sync.Proxier(self.node, node=NODE, node_ips=[NODE_IP], cluster_cidr=CLUSTER_CIDR, **kw)
        self.proxiers.append(p)
        return p

    def sh(self, *argv: str, check=True) -> str:
        return run_in(kernel.netns_path(self.node), list(argv), check=check).stdout.decode()

    def save(self, backend="legacy", counters=False) -> str:
        out = self.sh(BACKENDS[backend].save, *(["-c"] if counters else []))
        return "\n".join(line for line in out.splitlines() if not line.startswith("#"))


def _serve_tcp(lab: Lab, ns: str, name: str) -> None:
    srv = kernel.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", TCP_PORT))
    srv.listen(64)
    srv.settimeout(0.2)
    lab.socks.append(srv)

    def loop():
        while not lab.stop.is_set():
            try:
                conn, peer = srv.accept()
            except (TimeoutError, OSError):
                continue
            with conn, contextlib.suppress(OSError):
                conn.sendall(f"{name} {peer[0]}\n".encode())
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    lab.threads.append(t)


def _serve_udp(lab: Lab, ns: str, name: str) -> None:
    srv = kernel.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("0.0.0.0", UDP_PORT))
    srv.settimeout(0.2)
    lab.socks.append(srv)

    def loop():
        while not lab.stop.is_set():
            try:
                _, peer = srv.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            with contextlib.suppress(OSError):
                srv.sendto(f"{name} {peer[0]}".encode(), peer)
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    lab.threads.append(t)


def _wire(host: kernel.Namespace, peer: kernel.Namespace, host_if: str, cidr: str, gateway: str,
          master: int | None = None, host_cidr: str | None = None) -> None:
    with host.batch() as b:
        b.add_veth(host_if, "eth0", peer, 1500)
    index = host.index(host_if)
    with host.batch() as b:
        if master is not None:
            b.set_link(host_if, index=index, master=master, up=True)
            b.set_bridge_port(host_if, hairpin=True)  # as the bridge CNI's hairpinMode (kubelet's hairpin-veth)
        else:
            b.set_link(host_if, index=index, up=True)
            b.add_address(index, host_cidr)
    eth0 = peer.index("eth0")
    with peer.batch() as b:
        b.set_link("lo", index=1, up=True)
        b.set_link("eth0", index=eth0, up=True)
        b.add_address(eth0, cidr)
        b.replace_route("default", gateway=gateway)


@contextlib.contextmanager
def build_lab(lab_class: type[Lab], prefix: str):
    """The lab (module docstring) in namespaces of a fresh cluster name; everything goes after."""
    cluster = unique_name(prefix)
    ns = {m: names.netns_name(cluster, m) for m in ("node", "client", "pod-a", "pod-b", "external")}
    made = []
    lab = lab_class(cluster, ns["node"], ns["client"], ns["external"], {POD_A: ns["pod-a"], POD_B: ns["pod-b"]})
    try:
        opened = {}
        for member, name in ns.items():
            opened[member] = kernel.Namespace.create(name)
            made.append(name)
        node = opened["node"]
        with node.batch() as b:
            b.set_link("lo", index=1, up=True)
            b.add_bridge("br0", 1500)
        br = node.index("br0")
        with node.batch() as b:
            b.add_address(br, f"{BRIDGE_IP}/24")
            b.set_link("br0", index=br, up=True)
        for host_if, member, ip in (("va", "pod-a", POD_A), ("vb", "pod-b", POD_B), ("vc", "client", CLIENT)):
            _wire(node, opened[member], host_if, f"{ip}/24", BRIDGE_IP, master=br)
        _wire(node, opened["external"], "ext0", f"{EXTERNAL_IP}/24", NODE_IP, host_cidr=f"{NODE_IP}/24")
        with node.batch() as b:  # a node has a way out: Service IPs without rules are routed, not unreachable
            b.replace_route("default", gateway=EXTERNAL_IP)
        node.sysctl("net.ipv4.ip_forward", 1)
        node.sysctl("net.bridge.bridge-nf-call-iptables", 1)
        for o in opened.values():
            o.close()
        for name, pod_ns in (("pod-a", ns["pod-a"]), ("pod-b", ns["pod-b"])):
            _serve_tcp(lab, pod_ns, name)
            _serve_udp(lab, pod_ns, name)
        yield lab
    finally:
        lab.stop.set()
        for t in lab.threads:
            t.join(timeout=2)
        for s in lab.socks:
            s.close()
        for p in lab.proxiers:
            if hasattr(p, "close"):  # the nftables proxier holds a libnftables context
                p.close()
        kernel.remove_netns(made)


@pytest.fixture
def lab():
    with build_lab(Lab, "kp") as made:
        yield made


@contextlib.contextmanager
def udp_client(lab: Lab, ip: str, port: int):
    """A UDP socket in the client pod bound to one source port (one conntrack flow); yields a
    function that sends one datagram to ip:port and returns the name of the backend that answered."""
    with kernel.socket_in(lab.client, socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.bind((CLIENT, 40053))

        def query() -> str:
            s.sendto(b"q", (ip, port))
            return s.recv(256).decode().split()[0]
        yield query


def ask(ns: str, ip: str, port: int, timeout: float = 1.0) -> tuple[str, str]:
    """One TCP connection: (the backend that answered, the source address it saw)."""
    with kernel.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((ip, port))
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
    name, peer = data.decode().split()
    return name, peer


WEB = svc("web", "10.96.0.10", [ep(POD_A), ep(POD_B)], port_name="http", type="NodePort", node_port=30080)


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_cluster_ip_spreads_and_nodeport_masquerades(lab, backend):
    p = lab.proxier(backend=backend)
    result = p.sync([WEB])
    assert result.full and result.reason == "start" and result.jumps_added == len(ipt.JUMPS) + len(ipt.KUBELET_JUMPS)
    seen = Counter()
    for _ in range(60):
        name, peer = ask(lab.client, "10.96.0.10", 80)
        assert peer == CLIENT  # from inside the cluster CIDR: no masquerade
        seen[name] += 1
    assert seen["pod-a"] >= 10 and seen["pod-b"] >= 10, seen  # statistic --probability 0.5: P(fail) ~ 1e-9
    name, peer = ask(lab.external, NODE_IP, 30080)
    assert name in ("pod-a", "pod-b") and peer == BRIDGE_IP  # masqueraded to the node's own address
    # iptables-save shows the jumps back as they were written: a full resync finds them all.
    p.force_full_sync()
    result = p.sync([WEB])
    assert result.full and result.jumps_added == 0 and result.chains_deleted == 0


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
        with pytest.raises(ConnectionRefusedError):  # REJECT: an ICMP port unreachable, not a timeout
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
    # Only remote endpoints: this node drops external traffic to it ...
    t = time.monotonic()
    with pytest.raises((TimeoutError, socket.timeout)):
        ask(lab.external, NODE_IP, 30091, timeout=0.5)
    assert time.monotonic() - t < 1.0
    # ... while pods still get there: through the cluster IP, and short-circuited to the cluster chain.
    assert ask(lab.client, "10.96.0.21", 80)[0] == "pod-b"
    assert ask(lab.client, NODE_IP, 30091)[0] == "pod-b"


def test_hairpin(lab):
    p = lab.proxier()
    p.sync([svc("self", "10.96.0.25", [ep(POD_A)])])
    assert ask(lab.pods[POD_A], "10.96.0.25", 80) == ("pod-a", BRIDGE_IP)  # reached itself, masqueraded


def test_client_ip_affinity(lab):
    p = lab.proxier()
    p.sync([svc("sticky", "10.96.0.22", [ep(POD_A), ep(POD_B)], affinity_timeout=600)])
    assert len({ask(lab.client, "10.96.0.22", 80)[0] for _ in range(20)}) == 1
    # Without affinity the same client is spread (sanity check of the comparison).
    p.sync([svc("sticky", "10.96.0.22", [ep(POD_A), ep(POD_B)])])
    assert len({ask(lab.client, "10.96.0.22", 80)[0] for _ in range(30)}) == 2


def test_udp_flow_follows_conntrack_flush(lab):
    both = [ep(POD_A, UDP_PORT), ep(POD_B, UDP_PORT)]
    dns = lambda eps: svc("dns", "10.96.0.30", eps, proto="UDP", port=53)  # noqa: E731
    p = lab.proxier(conntrack_cleanup=False)
    p.sync([dns(both)])
    with udp_client(lab, "10.96.0.30", 53) as query:
        first = query()
        gone = POD_A if first == "pod-a" else POD_B
        rest = [e for e in both if e.ip != gone]
        p.sync([dns(rest)])
        assert query() == first  # the rules changed, the flow did not: conntrack still says `first`
        assert p.clean_stale_conntrack() >= 1
        other = query()
        assert other != first  # the flushed flow was load-balanced afresh
        # With the cleanup on (the default), the sync itself does it.
        p.conntrack_cleanup = True
        p.sync([dns(both)])
        assert query() == other  # still a live endpoint: left alone
        result = p.sync([dns([e for e in both if e.ip == gone])])
        assert result.conntrack_deleted >= 1
        assert query() == first


def test_partial_sync_touches_only_the_changed_service(lab):
    """Service b changes; a and c are neither declared nor rewritten: their rules keep their
    packet counters (a rewritten rule starts again at 0) and iptables-save shows them byte for
    byte as before.  Rules of others (flannel's, portmap's) are never touched, even by a full sync."""
    lab.sh("iptables-legacy", "-t", "nat", "-N", "FLANNEL-POSTRTG")
    lab.sh("iptables-legacy", "-t", "nat", "-A", "FLANNEL-POSTRTG", "-m", "mark", "--mark", "0x4000/0x4000", "-j",
           "RETURN")
    lab.sh("iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-j", "FLANNEL-POSTRTG")
    lab.sh("iptables-legacy", "-t", "nat", "-N", "CNI-HOSTPORT-DNAT")
    lab.sh("iptables-legacy", "-t", "nat", "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j",
           "CNI-HOSTPORT-DNAT")
    theirs = [line for line in lab.save().splitlines() if "FLANNEL" in line or "CNI-" in line]
    a = svc("a", "10.96.0.40", [ep(POD_A)])
    b = svc("b", "10.96.0.41", [ep(POD_A), ep(POD_B)])
    c = svc("c", "10.96.0.42", [ep(POD_B)], type="NodePort", node_port=30200)
    p = lab.proxier()
    p.sync([a, b, c])
    for _ in range(3):
        ask(lab.client, "10.96.0.40", 80)
    before = lab.save(counters=True)
    ha, hb, hc = (upstream_hash(f"default/{n}tcp") for n in "abc")
    a_sep = ipt.endpoint_chain("default/a", "tcp", f"{POD_A}:8080")
    assert re.search(rf"\[[1-9]\d*:\d+\] -A KUBE-SVC-{ha} .*-j {a_sep}", before)  # counted traffic

    b2 = svc("b", "10.96.0.41", [ep(POD_A)])
    result = p.sync([a, b2, c])
    assert not result.full and result.reason == "partial"
    assert result.services_written == 1 and result.chains_deleted == 1  # b's SEP for pod-b went away
    text = p.last_restore_text
    assert f":KUBE-SVC-{hb} - [0:0]" in text
    assert f":KUBE-SVC-{ha}" not in text and f":KUBE-SVC-{hc}" not in text and f":{a_sep}" not in text
    b_gone = ipt.endpoint_chain("default/b", "tcp", f"{POD_B}:8080")
    assert f"-X {b_gone}" in text
    after = lab.save(counters=True)

    def untouched(save: str) -> list[str]:
        # The chains of a and c, with their counters; not KUBE-SERVICES (rewritten each sync).
        return [line for line in save.splitlines()
                if re.search(rf"KUBE-(SVC|EXT|SEP)-({ha}|{hc})|{a_sep}|default/[ac]\b", line)
                and "KUBE-SERVICES " not in line and "KUBE-NODEPORTS " not in line]
    assert untouched(after) == untouched(before) and untouched(before)
    assert b_gone not in after and f"KUBE-SVC-{hb}" in after
    assert ask(lab.client, "10.96.0.41", 80)[0] == "pod-a"
    # A full sync leaves them exactly as they are too (same rules, nothing stale).
    p.force_full_sync()
    result = p.sync([a, b2, c])
    assert result.full and result.reason == "forced" and result.jumps_added == 0 and result.chains_deleted == 0
    assert [line for line in lab.save().splitlines() if "FLANNEL" in line or "CNI-" in line] == theirs
    lines = lab.save().splitlines()
    for jump in ipt.JUMPS + ipt.KUBELET_JUMPS:  # each jump once, whatever number of syncs
        assert lines.count(f"-A {jump.chain} {jump.args()}") == 1, jump


def test_canary_detects_a_flush_and_resyncs_in_full(lab):
    p = lab.proxier()
    services = [WEB, svc("other", "10.96.0.50", [ep(POD_B)])]
    p.sync(services)
    want = _kube_lines(lab.save())
    assert ask(lab.client, "10.96.0.10", 80)
    # Someone flushes the tables (a firewall reload, `iptables -F; iptables -X` in each table).
    for table in ("nat", "mangle", "filter"):
        lab.sh("iptables-legacy", "-t", table, "-F")
        lab.sh("iptables-legacy", "-t", table, "-X")
    with pytest.raises(OSError):
        ask(lab.client, "10.96.0.10", 80, timeout=0.5)
    result = p.sync(services)
    assert result.full and result.reason == "canary"
    assert _kube_lines(lab.save()) == want
    assert ask(lab.client, "10.96.0.10", 80)
    # Only nat emptied and its chains deleted, the mangle canary intact: the partial restore
    # fails on the missing chains and the proxier starts over with a full sync.
    lab.sh("iptables-legacy", "-t", "nat", "-F")
    lab.sh("iptables-legacy", "-t", "nat", "-X")
    result = p.sync(services)
    assert result.full and result.reason == "partial restore failed" and result.partial_failure
    assert _kube_lines(lab.save()) == want
    # Emptied but not deleted, nothing fails: the periodic full sync repairs it.
    p.full_sync_every = 1
    lab.sh("iptables-legacy", "-t", "nat", "-F")
    assert not p.sync(services).full
    result = p.sync(services)
    assert result.full and result.reason == "periodic"
    assert _kube_lines(lab.save()) == want


def _kube_lines(save: str) -> list[str]:
    return sorted(re.sub(r"\[\d+:\d+\]", "", line) for line in save.splitlines() if "KUBE-" in line)


def _host_tables() -> dict[str, str]:
    """iptables-save of the host's own namespace, both backends, without dates and counters."""
    out = {}
    for tool in ("iptables-legacy-save", "iptables-nft-save"):
        text = subprocess.run([tool], capture_output=True, text=True, check=True, timeout=30).stdout
        out[tool] = "\n".join(re.sub(r"\[\d+:\d+\]", "", line) for line in text.splitlines()
                              if not line.startswith("#"))
    return out


def test_nothing_leaks_into_the_host(lab):
    before = _host_tables()
    p = lab.proxier()
    p.sync([WEB])
    p.sync([WEB, svc("udp", "10.96.0.60", [ep(POD_A, UDP_PORT)], proto="UDP", port=53)])
    p.force_full_sync()
    p.sync([WEB])
    p.cleanup()
    assert _kube_lines(lab.save()) == []  # cleanup took every kube-proxy chain and jump with it
    assert _host_tables() == before


def test_refuses_unknown_backend(lab):
    with pytest.raises(ValueError):
        lab.proxier(backend="ebpf")


def test_skip_unchanged_top_level_chains(lab):
    """The opt-in departure from upstream: a partial sync also leaves out top-level chains
    whose rules did not change (an endpoint change leaves KUBE-SERVICES as it was)."""
    a = svc("a", "10.96.0.40", [ep(POD_A)])
    b = svc("b", "10.96.0.41", [ep(POD_A), ep(POD_B)])
    p = lab.proxier(skip_unchanged_top_level=True)
    p.sync([a, b])
    result = p.sync([a, svc("b", "10.96.0.41", [ep(POD_B)])])
    assert not result.full and result.top_chains_skipped == len(ipt.FILTER_TOP) + 1 + len(ipt.NAT_TOP)
    assert ":KUBE-SERVICES" not in p.last_restore_text and "-A KUBE-SERVICES" not in p.last_restore_text
    assert result.services_written == 1 and result.chains_deleted == 1
    assert {ask(lab.client, "10.96.0.41", 80)[0] for _ in range(5)} == {"pod-b"}
    result = p.sync([a, svc("b", "10.96.0.41", [ep(POD_B)])])  # nothing changed: nothing to restore
    assert result.restore_bytes == 0 and result.restore_s == 0
    result = p.sync([svc("b", "10.96.0.41", [ep(POD_B)])])  # a goes: KUBE-SERVICES changes
    text = p.last_restore_text
    assert ":KUBE-SERVICES - [0:0]" in text.split("*nat")[1] and "-X KUBE-SVC-" in text
    with pytest.raises(OSError):
        ask(lab.client, "10.96.0.40", 80, timeout=0.3)
    assert ask(lab.client, "10.96.0.41", 80)[0] == "pod-b"


@pytest.fixture(autouse=True, scope="module")
def host_tables_untouched():
    """Across every test here: the host's own tables end as they began."""
    before = _host_tables()
    yield
    assert _host_tables() == before
