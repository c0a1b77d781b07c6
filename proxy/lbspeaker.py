"""LoadBalancer IPs (and Services' externalIPs) on the underlay, as MetalLB's layer-2 mode announces them: each ingress
IP is routed by the underlay (the LAN's gateway) to one node, which kube-proxy's rules then
deliver to an endpoint.  With externalTrafficPolicy: Local only nodes that have a ready
endpoint of the Service are chosen (MetalLB announces from those); otherwise the first Ready
node, by name, so the choice is stable.
"""

from __future__ import annotations

import ipaddress

from netsim import kernel

PROTO_NETSIM_LB = 0x6E  # our routes in the underlay, told apart from the fabric's own


def desired_routes(services: list[dict], slices: list[dict], nodes: list[dict], pool: str | None,
                   underlay_subnet: str | None = None) -> dict[str, str]:
    """LoadBalancer ingress IP (and external IP) -> the node IP the underlay sends it to."""
    net = ipaddress.IPv4Network(pool) if pool else None
    underlay = ipaddress.IPv4Network(underlay_subnet) if underlay_subnet else None
    ready = sorted(n["metadata"]["name"] for n in nodes if any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in n.get("status", {}).get("conditions", [])))
    node_ip = {n["metadata"]["name"]: next((a["address"] for a in n.get("status", {}).get("addresses", [])
                                            if a.get("type") == "InternalIP"), None) for n in nodes}
    with_endpoints: dict[tuple[str, str], set[str]] = {}
    for s in slices:
        svc = (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        for e in s.get("endpoints") or []:
            if (e.get("conditions") or {}).get("ready") and e.get("nodeName"):
                with_endpoints.setdefault((s["metadata"]["namespace"], svc), set()).add(e["nodeName"])
    out = {}
    for svc in services:
        # externalIPs are the admin's to route in Kubernetes; here the underlay routes them to
        # a node as it does LoadBalancer IPs (an address on the LAN itself would be ARPed for).
        for ip in svc.get("spec", {}).get("externalIPs") or []:
            if underlay is not None and ipaddress.ip_address(ip) in underlay:
                continue
            if ready and node_ip.get(ready[0]):
                out.setdefault(ip, node_ip[ready[0]])
        if svc.get("spec", {}).get("type") != "LoadBalancer" or net is None:
            continue
        candidates = ready
        if svc["spec"].get("externalTrafficPolicy") == "Local":
            local = with_endpoints.get((svc["metadata"]["namespace"], svc["metadata"]["name"]), set())
            candidates = [n for n in ready if n in local]
        if not candidates or not node_ip.get(candidates[0]):
            continue
        for ingress in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            ip = ingress.get("ip")
            if ip and ipaddress.ip_address(ip) in net:
                out[ip] = node_ip[candidates[0]]
    return out


def converge(underlay_netns: str, routes: dict[str, str]) -> int:
    """Make the underlay's routes of our protocol exactly ``routes``; returns changes made."""
    with kernel.Namespace.open(underlay_netns) as ns:
        have = {r["dst"].removesuffix("/32"): r for r in ns.route_entries() if r.get("proto") == PROTO_NETSIM_LB}
        changes = 0
        with ns.batch() as b:
            for ip, r in have.items():
                if ip not in routes:
                    b.delete_route(f"{ip}/32", gateway=r.get("gateway"))
                    changes += 1
            for ip, via in routes.items():
                if have.get(ip, {}).get("gateway") != via:
                    b.replace_route(f"{ip}/32", gateway=via, proto=PROTO_NETSIM_LB)
                    changes += 1
    return changes
