"""NetworkPolicy (netsim/node/policy.py), pure: what the renderer writes and what evaluate
decides.  tests/e2e/test_netpol.py runs the same policies on a real cluster's traffic."""

from __future__ import annotations

from netsim.node import policy


def test_render_sctp_ranges_named_ports_and_ip_block_except():
    pods = [policy.PodInfo("x", "a", "10.244.1.5", {"pod": "a"}, "worker1", (("sctp-port", "SCTP", 9000),)),
            policy.PodInfo("y", "b", "10.244.2.6", {"pod": "b"}, "worker2", (("web", "TCP", 8080),))]
    pol = {"metadata": {"name": "p", "namespace": "x"},
           "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"ports": [{"port": "sctp-port", "protocol": "SCTP"},
                                           {"port": 100, "endPort": 200, "protocol": "UDP"}]}],
                    "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}},
                                       {"namespaceSelector": {}}],
                                "ports": [{"port": "web"}]}]}}
    t = policy.render([pol], pods, {"x": {}, "y": {}}, [pods[0]], ["192.168.56.3"])
    text = t.text(["192.168.56.3"])
    assert "meta l4proto sctp th dport 9000 return" in text and "meta l4proto udp th dport 100-200 return" in text
    egress_chain = t.egress["10.244.1.5"]
    # A named port cannot match an ipBlock: only the pods that have "web", each on its own number.
    assert t.chains[egress_chain] == [f"ip daddr . meta l4proto . th dport @{egress_chain}-named return", "drop"]
    named = t.sets[f"{egress_chain}-named"][1]
    assert named == ["10.244.2.6 . tcp . 8080"]  # the destination pod's own number for "web"
    assert list(t.ingress) == ["10.244.1.5"] and list(t.egress) == ["10.244.1.5"]
    v = policy.evaluate([pol], pods, {"x": {}, "y": {}}, "10.244.1.5", "10.244.2.6", "TCP", 8080)
    assert v.allowed and v.egress_rule == "x/p egress[0]"
    v = policy.evaluate([pol], pods, {"x": {}, "y": {}}, "10.244.1.5", "10.244.2.6", "TCP", 80)
    assert not v.allowed and "no egress rule admits" in v.reason


def test_render_folds_every_rule_into_a_few_set_lookups():
    """1000 policies on one pod still make a chain of a few rules: one per distinct port match."""
    pods = [policy.PodInfo("x", "a", "10.244.1.5", {"pod": "a"}, "worker1"),
            *[policy.PodInfo("y", f"p{i}", f"10.244.2.{i}", {"i": str(i % 7)}, "worker2") for i in range(1, 200)]]
    def pol(i: int) -> dict:
        peers = [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"i": str(i % 7)}}},
                 {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}}]
        return {"metadata": {"name": f"p{i}", "namespace": "x"},
                "spec": {"podSelector": {"matchLabels": {"pod": "a"}},
                         "ingress": [{"from": peers, "ports": [{"port": 80 + i % 3}]}]}}
    pols = [pol(i) for i in range(1000)]
    t = policy.render(pols, pods, {"x": {}, "y": {}}, [pods[0]], ["192.168.56.3"])
    chain = t.ingress["10.244.1.5"]
    assert len(t.chains[chain]) == 1 + 3 + 1  # node IPs, ports 80/81/82, drop
    assert t.chains[chain][1] == f"meta l4proto tcp th dport 80 ip saddr @{chain}-p0 return"
    elements = t.sets[f"{chain}-p0"][1]
    assert "10.0.0.0/9" in elements and "10.245.0.0/16" in elements and "10.244.0.0/16" not in elements
    assert "10.244.2.7" in elements  # i % 7 == 0 with policies 0, 3, 6, ... on port 80
    v = policy.evaluate(pols, pods, {"x": {}, "y": {}}, "10.244.2.7", "10.244.1.5", "TCP", 80)
    assert v.allowed and len(v.ingress_policies) == 1000


