"""What a node's route to an address is, named by who made it: the kernel's main table as
rtnetlink gives it (netsim.kernel.Namespace.route_entries, or a recording of it) matched
longest prefix first, then told apart by protocol, type and device the way a Calico or
flannel user reads ``ip route``: a workload route (the CNI plugin's pod /32 on a cali veth),
Felix's tunnel routes (proto 80 via vxlan.calico or tunl0), BIRD's BGP routes (proto bird),
the blackhole of a node's own IPAM block, flannel's VXLAN and host-gw routes, a segment's
connected route, the default.

Pure functions over plain dicts: `netsim trace` names the route a hop took with them,
`netsim graph` lists a node's pod routes, and unit tests run them on recorded tables."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# rtnetlink's numbers (linux/rtnetlink.h, and Felix's own protocol number)
RTPROT_KERNEL, RTPROT_BOOT, RTPROT_STATIC, RTPROT_BIRD = 2, 3, 4, 12
RTPROT_FELIX = 80            # felix/routetable: the routes Felix owns
RTN_UNICAST, RTN_BLACKHOLE, RTN_UNREACHABLE, RTN_PROHIBIT = 1, 6, 7, 8
RT_SCOPE_LINK = 253
PROTO_NAMES = {RTPROT_KERNEL: "kernel", RTPROT_BOOT: "boot", RTPROT_STATIC: "static", RTPROT_BIRD: "bird"}
TYPE_NAMES = {RTN_BLACKHOLE: "blackhole", RTN_UNREACHABLE: "unreachable", RTN_PROHIBIT: "prohibit"}
CALICO_VXLAN, CALICO_IPIP, FLANNEL_VXLAN = "vxlan.calico", "tunl0", "flannel.1"


@dataclass(frozen=True)
class Route:
    """One route of the table and what it is."""
    dst: str           # "10.244.1.0/26" or "default"
    text: str          # as `ip route` prints it
    kind: str          # workload, tunnel, felix, bgp, blackhole, unreachable, flannel, host-gw, bridge,
    #                    connected, default, other
    what: str          # the kind in words, with who made it
    device: str | None = None
    gateway: str | None = None


def _net(dst: str) -> ipaddress.IPv4Network:
    return ipaddress.ip_network("0.0.0.0/0" if dst == "default" else dst, strict=False)


def route_text(r: dict, ifnames: dict[int, str]) -> str:
    """``ip route``'s line for an entry of route_entries()."""
    dst = r["dst"]
    if dst.endswith("/32"):
        dst = dst[:-3]
    kind = TYPE_NAMES.get(r.get("type", RTN_UNICAST))
    parts = [kind, dst] if kind else [dst]
    if r.get("gateway"):
        parts += ["via", r["gateway"]]
    if r.get("oif") and not kind:
        parts += ["dev", ifnames.get(r["oif"], str(r["oif"]))]
    proto = r.get("proto")
    if proto not in (None, RTPROT_BOOT):
        parts += ["proto", PROTO_NAMES.get(proto, str(proto))]
    if r.get("scope") == RT_SCOPE_LINK and not kind:
        parts += ["scope", "link"]
    if r.get("priority"):
        parts += ["metric", str(r["priority"])]
    if r.get("onlink"):
        parts.append("onlink")
    return " ".join(parts)


def classify(r: dict, ifnames: dict[int, str], pod_net: str | None = None,
             owners: dict[str, str] | None = None) -> Route:
    """What ``r`` (an entry of route_entries()) is.  ``owners``: node IP or tunnel address ->
    node name, to say whose block a route leads to."""
    owners = owners or {}
    dev = ifnames.get(r.get("oif") or 0)
    gw = r.get("gateway")
    proto, rtype = r.get("proto"), r.get("type", RTN_UNICAST)
    text = route_text(r, ifnames)
    net = _net(r["dst"])
    in_pods = pod_net is not None and r["dst"] != "default" and net.subnet_of(_net(pod_net))
    peer = f" ({owners[gw]})" if gw in owners else ""

    def made(kind: str, what: str) -> Route:
        return Route(r["dst"], text, kind, what, dev, gw)

    if rtype == RTN_BLACKHOLE:
        who = "BIRD's" if proto == RTPROT_BIRD else "Felix's" if proto == RTPROT_FELIX else "a"
        return made("blackhole", f"blackhole: {who} route for this node's own IPAM block; an address in it that "
                                 "no pod holds goes nowhere")
    if rtype in (RTN_UNREACHABLE, RTN_PROHIBIT):
        return made("unreachable", f"{TYPE_NAMES[rtype]} route")
    if dev and dev.startswith("cali") and net.prefixlen == 32:
        return made("workload", f"workload route: the calico CNI plugin's /32 to the pod on {dev} "
                                "(routed, no bridge)")
    if proto == RTPROT_FELIX and dev in (CALICO_VXLAN, CALICO_IPIP):
        encap = "VXLAN (VNI 4096, UDP 4789)" if dev == CALICO_VXLAN else "IPIP (IP protocol 4)"
        return made("tunnel", f"tunnel route (Felix, proto 80): {encap} via {dev} to {gw}{peer}")
    if proto == RTPROT_FELIX:
        return made("felix", f"Felix route (proto 80): unencapsulated via {gw}{peer} on {dev} "
                             "(CrossSubnet: same segment)")
    if proto == RTPROT_BIRD:
        return made("bgp", f"BGP route (BIRD, proto bird): next hop {gw}{peer}, unencapsulated on {dev}"
                    if gw else "BGP route (BIRD, proto bird)")
    if dev == FLANNEL_VXLAN:
        return made("flannel", f"flannel VXLAN route via {gw}{peer}")
    if dev == "cni0":
        return made("bridge", "pod subnet on the cni0 bridge")
    if in_pods and gw:
        return made("host-gw", f"direct route to another node's pods via {gw}{peer} (flannel host-gw)")
    if r["dst"] == "default":
        return made("default", f"default route via {gw}" if gw else "default route")
    if proto == RTPROT_KERNEL and r.get("scope") == RT_SCOPE_LINK:
        return made("connected", f"connected: the segment on {dev}")
    return made("other", "route")


def no_route(dst: str) -> Route:
    return Route(dst, "no route", "none", f"no route to {dst}")


def lookup(entries: list[dict], dst: str) -> dict | None:
    """The entry the kernel's main table chooses for ``dst``: the longest prefix, then the
    lowest metric (no policy rules: `ip route get` says where a packet actually goes)."""
    ip = ipaddress.ip_address(dst)
    best = None
    for r in entries:
        if r.get("cloned"):
            continue  # a cached exception (tunl0's PMTU for one address), not what chose the path
        try:
            net = _net(r["dst"])
        except ValueError:
            continue
        if ip not in net:
            continue
        key = (net.prefixlen, -(r.get("priority") or 0))
        if best is None or key > best[0]:
            best = (key, r)
    return best[1] if best else None


def describe(entries: list[dict], ifnames: dict[int, str], dst: str, pod_net: str | None = None,
             owners: dict[str, str] | None = None) -> Route | None:
    r = lookup(entries, dst)
    return None if r is None else classify(r, ifnames, pod_net, owners)
