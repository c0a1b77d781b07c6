"""Why a NetworkPolicy rule dropped a packet: the policies that isolate its source (egress) or
its destination (ingress) with no rule admitting it, judged on the packet the drop rule saw.

That packet is the one in the drop rule's own trace event (nftables trace or iptables TRACE),
read at the hook where the rule ran: after kube-proxy's DNAT (ClusterIP, NodePort,
LoadBalancer, externalIPs, hairpin, IPVS all rewrite before the filter hooks), so it carries
the endpoint pod's address and target port.  The other candidates are not always right: a
capture may precede the rewrite (the drop comes before the packet leaves the node), a
connection dropped on its first packet is never confirmed so conntrack lists no entry, and
a Service's endpoints do not say which one kube-proxy picked.  Knows the store's policies
(through netsim.node.policy); uses nothing else."""

from __future__ import annotations

from netsim.api.store import Store
from netsim.observe.packets import IPv4


def explain(store: Store, node_ips: list[str], p: IPv4) -> str:
    from netsim.node import policy

    policies, pods, namespaces = policy.inputs(store)
    v = policy.evaluate(policies, pods, namespaces, p.src, p.dst, p.proto_name, p.dport or None, node_ips)
    if v.allowed:
        return "NetworkPolicy (the rules now in the store allow it: a change not yet rendered?)"
    parts = []
    if v.egress_policies and not v.egress_rule:
        parts.append(f"egress of {p.src} isolated by {', '.join(v.egress_policies)}, no rule admits it")
    if v.ingress_policies and not v.ingress_rule:
        parts.append(f"ingress of {p.dst}:{p.dport} isolated by {', '.join(v.ingress_policies)}, no rule admits it"
                     if p.dport else f"ingress of {p.dst} isolated by {', '.join(v.ingress_policies)}, "
                     "no rule admits it")
    return "NetworkPolicy: " + "; ".join(parts)
