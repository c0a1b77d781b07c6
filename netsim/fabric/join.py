"""One machine's part of a cluster whose nodes span several machines (`netsim join`).

A joined machine runs exactly one node of the scenario.  Its NIC on the cluster's LAN (the
uplink) moves into the node's namespace and becomes the node's ``eth0``, with the machine's
address on it: that address is the node's InternalIP and its flannel lease's PublicIP, so the
VXLAN between nodes leaves through the real NIC.  The store is a shared etcd.

Before the NIC moves, its configuration (name, MAC, MTU, addresses, routes) is written to the
cluster's state, so `down` (also after a crash, and also when the kernel has already handed
the NIC back because its namespace went) puts it back exactly as it was.  This module is the
NIC's side; leaving the shared store is netsim.fabric.lifecycle's.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from netsim import kernel
from netsim.kernel import RTPROT_KERNEL
from netsim.model import names
from netsim.model.state import Uplink

__all__ = ["JoinError", "Uplink", "attach", "detach", "inspect_uplink", "node_address"]

log = logging.getLogger("netsim.fabric.join")


# Links that share a MAC with a NIC or are no NIC at all (a bridge takes its port's MAC).
_NOT_A_NIC = ("bridge", "dummy", "vxlan")


class JoinError(RuntimeError):
    pass


def inspect_uplink(ifname: str) -> Uplink:
    """The NIC ``ifname`` of this (the calling thread's) namespace."""
    with kernel.Namespace.here() as home:
        link = home.link(ifname)
        if link is None:
            present = sorted(n for n in home.links() if n != "lo")
            raise JoinError(f"--uplink {ifname!r}: no such interface on this machine "
                            f"(it has {', '.join(present) or 'none'}); name the NIC on the cluster's network")
        if link["kind"] in _NOT_A_NIC or link["master"]:
            raise JoinError(f"--uplink {ifname!r} is a {link['kind'] or 'bridge port'}; name the NIC itself")
        routes = [r for r in home.route_entries() if r["oif"] == link["index"] and r["proto"] != RTPROT_KERNEL]
        return Uplink(ifname, link["mac"], link["mtu"], link["up"], home.address_entries(link["index"]), routes)


def node_address(uplink: Uplink, subnet: ipaddress.IPv4Network, node: str, wanted: str | None) -> str:
    """The node's address: the uplink's address on the cluster's LAN (the scenario's, if it
    names one, must be that)."""
    mine = [a["cidr"].split("/")[0] for a in uplink.addresses
            if ipaddress.IPv4Address(a["cidr"].split("/")[0]) in subnet]
    if wanted is not None:
        if wanted not in mine:
            have = ", ".join(a["cidr"] for a in uplink.addresses) or "no IPv4 address"
            raise JoinError(f"node {node} has ip {wanted} in the scenario, but {uplink.name} has {have}; "
                            f"join from the machine that has {wanted}, or name its NIC with --uplink")
        return wanted
    if not mine:
        have = ", ".join(a["cidr"] for a in uplink.addresses) or "no IPv4 address"
        raise JoinError(f"{uplink.name} has {have}, none in the cluster's underlaySubnet {subnet}; "
                        "give it an address there or name another NIC with --uplink")
    return mine[0]


def attach(netns: str, uplink: Uplink, node_ip: str, gateway: str, created: list[str]) -> None:
    """The node's namespace with the NIC in it as eth0, its addresses and routes, forwarding on."""
    kernel.ensure_netns_dir()
    with kernel.Namespace.here() as home:
        if kernel.netns_exists(netns):
            node = kernel.Namespace.open(netns)
        else:
            kernel.delete_netns(netns)  # a bare file left by a killed join is not a namespace
            node = kernel.Namespace.create(netns)
            created.append(netns)
        with node:
            nic = _find(home, node, uplink)
            if nic is None:
                raise JoinError(f"{uplink.name} ({uplink.mac}) is gone from this machine")
            where, index, _ = nic
            if where is home:
                with home.batch() as b:
                    b.move_link(index, node)
                _, index, _ = _find(None, node, uplink)
            with node.batch() as b:
                if node.link(names.NODE_UPLINK) is None:
                    b.set_link(names.NODE_UPLINK, index=index, up=False, rename=names.NODE_UPLINK)
                b.set_link("lo", index=1, up=True)
                b.set_link(names.NODE_UPLINK, index=index, up=True)
                for a in uplink.addresses:
                    b.add_address(index, a["cidr"], broadcast=a.get("broadcast"))
            with node.batch() as b:
                for r in uplink.routes:
                    b.replace_route(r["dst"], gateway=r.get("gateway"), oif=index, onlink=r.get("onlink", False),
                                    proto=r["proto"], priority=r.get("priority"))
                if not any(r["dst"] == "default" for r in uplink.routes):
                    # A node has a default route (kube-proxy's OUTPUT DNAT of a ClusterIP comes
                    # after the route lookup, which needs one); the LAN's router, as in `up`.
                    b.replace_route("default", gateway=gateway, oif=index)
            node.sysctl("net.ipv4.ip_forward", 1)
            log.info("%s (%s) is %s's eth0 with %s", uplink.name, uplink.mac, netns, node_ip)


def detach(netns: str, uplink: Uplink) -> bool:
    """Give the NIC back to this namespace under its own name, with its MTU, addresses and
    routes.  True if it was found (in the node's namespace, or already back here)."""
    with kernel.Namespace.here() as home:
        node = kernel.Namespace.open(netns) if kernel.netns_exists(netns) else None
        try:
            nic = _find(home, node, uplink)
            if nic is None:
                log.warning("%s (%s) is on neither this machine nor in %s", uplink.name, uplink.mac, netns)
                return False
            where, index, current = nic
            if where is not home:
                # Its own name again before it moves: "eth0" is most likely taken at home.
                with node.batch() as b:
                    b.set_link(names.NODE_UPLINK, index=index, up=False)
                with node.batch() as b:
                    b.set_link(names.NODE_UPLINK, index=index, rename=uplink.name)
                with node.batch() as b:
                    b.move_link(index, home)
                _, index, current = _find(home, None, uplink)
        finally:
            if node is not None:
                node.close()
        if current != uplink.name:
            with home.batch() as b:
                b.set_link(current, index=index, up=False)
            with home.batch() as b:
                b.set_link(current, index=index, rename=uplink.name)
        with home.batch() as b:
            b.set_link(uplink.name, index=index, mtu=uplink.mtu, up=uplink.up)
            have = home.addresses_of(index, socket.AF_INET)
            for a in uplink.addresses:
                if a["cidr"] not in have:
                    b.add_address(index, a["cidr"], broadcast=a.get("broadcast"))
        with home.batch() as b:
            for r in uplink.routes:
                b.replace_route(r["dst"], gateway=r.get("gateway"), oif=index, onlink=r.get("onlink", False),
                                proto=r["proto"], priority=r.get("priority"))
        return True


def _find(home: kernel.Namespace | None, node: kernel.Namespace | None, uplink: Uplink):
    """(namespace, ifindex, name) of the NIC, found by its MAC: in the node's namespace first."""
    for ns in (node, home):
        if ns is None:
            continue
        for name, link in ns.links().items():
            if link["mac"] == uplink.mac and link["kind"] not in _NOT_A_NIC:
                return ns, link["index"], name
    return None
