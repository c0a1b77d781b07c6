"""A VXLAN tunnel endpoint's kernel state, made to match a wanted set: the device itself (VNI,
port, local address, underlying link, learning off, MAC, MTU, its addresses), its permanent
neighbour entries (remote VTEP address -> remote VTEP MAC) and its permanent fdb entries (remote
VTEP MAC -> remote node's underlay address).  flannel's overlay (``flannel.1``) and Calico's
Felix (``vxlan.calico``) both program a VTEP this way; they differ only in what they want.

Each function reads what the kernel holds and adds only the difference to the caller's batch
(or sends it, for the device), returning how many objects it changed, so a pass over a VTEP
that already matches sends nothing.

Knows netsim.kernel.netns only; standard library otherwise.
"""

from __future__ import annotations

import logging
import socket

from netsim.kernel.netns import NUD_PERMANENT, Batch, Namespace

log = logging.getLogger("netsim.kernel.vtep")


def ensure_vxlan(ns: Namespace, name: str, *, vni: int, port: int, local: str, link: int, mac: str, mtu: int,
                 addresses: set[str]) -> tuple[int, int, int]:
    """Device ``name`` as wanted, up, holding exactly ``addresses`` ("a.b.c.d/32").  A device
    whose VNI, port, local address, underlying link, learning or MAC differ is recreated (as
    flanneld and Felix do with an incompatible one); MTU and up are set in place.
    Returns (ifindex, links changed, addresses changed)."""
    want = {"kind": "vxlan", "vni": vni, "port": port, "local": local, "link": link, "learning": False,
            "mac": mac.lower()}
    info = ns.vxlan(name)
    links = 0
    created = False
    if info is not None and any(info.get(k) != v for k, v in want.items()):
        log.info("%s in %s differs (%s); recreating it", name, ns.name,
                 ", ".join(f"{k} {info.get(k)} != {v}" for k, v in want.items() if info.get(k) != v))
        with ns.batch() as b:
            b.delete_link(name)
        info = None
    if info is None:
        with ns.batch() as b:
            b.add_vxlan(name, vni=vni, port=port, local=local, link=link, mtu=mtu, mac=mac.lower(), learning=False)
        info = ns.vxlan(name)
        links += 1
        created = True
    index = info["index"]
    with ns.batch() as b:
        if info["mtu"] != mtu or not info["up"]:
            b.set_link(name, index=index, mtu=mtu, up=True)
            links += 0 if created else 1
        changed = sync_addresses(ns, b, index, addresses)
    return index, links, changed


def sync_addresses(ns: Namespace, b: Batch, index: int, wanted: set[str]) -> int:
    """The link's IPv4 addresses become exactly ``wanted``."""
    have = ns.addresses_of(index, socket.AF_INET)
    for stale in sorted(have - wanted):
        b.delete_address(index, stale)
    for cidr in sorted(wanted - have):
        b.add_address(index, cidr)
    return len(have ^ wanted)


def sync_neighbours(ns: Namespace, b: Batch, dev: int, wanted: dict[str, str]) -> int:
    """The device's IPv4 neighbour entries become exactly ``wanted`` {ip: mac}, all permanent."""
    changes = 0
    have = ns.neighbours(dev)
    for ip in sorted(set(have) - set(wanted)):
        b.delete_neigh(dev, ip)
        changes += 1
    for ip, mac in sorted(wanted.items()):
        entry = have.get(ip)
        if entry is None or entry["mac"] != mac.lower() or entry["state"] != NUD_PERMANENT:
            b.replace_neigh(dev, ip, mac.lower())
            changes += 1
    return changes


def sync_fdb(ns: Namespace, b: Batch, dev: int, wanted: set[tuple[str, str]]) -> int:
    """The device's own fdb entries become exactly ``wanted`` {(mac, underlay ip)}, permanent."""
    changes = 0
    wanted = {(mac.lower(), dst) for mac, dst in wanted}
    have = {(e["mac"], e["dst"]): e for e in ns.fdb(dev)}
    for mac, dst in sorted(set(have) - wanted, key=str):
        b.delete_fdb(dev, mac, dst)
        changes += 1
    for mac, dst in sorted(wanted):
        entry = have.get((mac, dst))
        if entry is None or entry["state"] != NUD_PERMANENT:
            b.replace_fdb(dev, mac, dst)
            changes += 1
    return changes
