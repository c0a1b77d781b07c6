"""A pod's gate: policy routing rules in the pod's own namespace that hold back its TCP, UDP,
SCTP and ICMP, both ways and for IPv4 and IPv6, but over loopback, until the node's agent
opens it.

NetworkPolicy promises that a pod in an isolated namespace is never reachable, not even for
the moment between getting its address and its rules being written.  The runtime (netsim's
agent, playing containerd) closes the gate in the same netlink batch that makes the sandbox's
namespace, before any CNI plugin runs, so no plugin's order can open a window; the chained
plugin ``netsim-policy`` closes it too for a runtime that did not.  The agent opens it once
the node's policy table (netsim.node.policy) that covers the pod has been written, before the pod
reports Running; in a cluster whose CNI enforces no policy (cni: flannel, netsim.model.cnimode)
there is no table, and the agent opens it as soon as the pod has its address.

Closed, for IPv4 and IPv6 (``ip rule``)::

    0:  from all iif lo lookup local            # loopback and the pod's own addresses, from inside
    1:  from all ipproto tcp blackhole          # anything else, in or out: no route
    1:  ... udp, sctp, icmp (ipv6-icmp)
    2:  from all lookup local                   # lookups that are no such packet's

The kernel's ``0: from all lookup local`` moves to 2.  Lookups without a protocol pass: ARP
(the pod still answers for its address, so no neighbour entry goes FAILED and delays the
first connection once the gate opens) and the kernel's check of a new route's gateway (CNI
plugins add the pod's routes while it is closed).  Protocols other than these four are not
held back; NetworkPolicy speaks of TCP, UDP and SCTP.  Open is the kernel's rule set again, its
local rule written back with netsim's protocol number, which tells an opened gate from a
namespace that never had one.  Rules rather than an nftables table: they ride in the
rtnetlink batch that makes the namespace (nothing per pod in libnftables, whose contexts
neither share threads nor work above descriptor 1023, and an agent with a thousand pods is
there).
"""

from __future__ import annotations

import socket

from netsim import kernel

PROTO = 167  # netsim's rules carry it: `ip rule` shows "proto 167"
FAMILIES = (socket.AF_INET, socket.AF_INET6)
LOCAL = kernel.RT_TABLE_LOCAL
HELD = {socket.AF_INET: (socket.IPPROTO_TCP, socket.IPPROTO_UDP, socket.IPPROTO_SCTP, socket.IPPROTO_ICMP),
            socket.AF_INET6: (socket.IPPROTO_TCP, socket.IPPROTO_UDP, socket.IPPROTO_SCTP, socket.IPPROTO_ICMPV6)}


def closing(b: kernel.Batch) -> None:
    """Add to a batch for a namespace without a gate: close it."""
    for family in FAMILIES:
        b.delete_rule(family, 0, table=LOCAL)  # the kernel's "from all lookup local"
        b.add_rule(family, 0, table=LOCAL, iifname="lo", protocol=PROTO)
        for proto in HELD[family]:
            b.add_rule(family, 1, action=kernel.FR_ACT_BLACKHOLE, ipproto=proto, protocol=PROTO)
        b.add_rule(family, 2, table=LOCAL, protocol=PROTO)


def opening(b: kernel.Batch) -> None:
    """Add to a batch: open the gate (the local rule back first, so loopback never breaks)."""
    for family in FAMILIES:
        b.add_rule(family, 0, table=LOCAL, protocol=PROTO)
        for proto in HELD[family]:
            b.delete_rule(family, 1, action=kernel.FR_ACT_BLACKHOLE, ipproto=proto, protocol=PROTO)
        b.delete_rule(family, 2, table=LOCAL, protocol=PROTO)
        b.delete_rule(family, 0, table=LOCAL, iifname="lo", protocol=PROTO)


def state_of(ns: kernel.Namespace) -> str | None:
    """"closed", "open", or None (never had a gate)."""
    rules = [r for r in ns.rules(socket.AF_INET) if r["protocol"] == PROTO]
    if any(r["action"] == kernel.FR_ACT_BLACKHOLE for r in rules):
        return "closed"
    if any(r["priority"] == 0 and r["table"] == LOCAL and not r["iifname"] for r in rules):
        return "open"
    return None


def close(netns_path: str) -> bool:
    """Close the gate of a namespace that has none; True if this call closed it.  A namespace
    that has one, closed or open, keeps it as it is."""
    with kernel.Namespace.at(netns_path) as ns:
        if state_of(ns) is not None:
            return False
        with ns.batch() as b:
            closing(b)
    return True


def open_(netns_path: str) -> None:
    """Let the pod's traffic through (idempotent).  A namespace that is gone raises
    FileNotFoundError."""
    with kernel.Namespace.at(netns_path) as ns, ns.batch() as b:
        opening(b)


def state(netns_path: str) -> str | None:
    """The gate of the namespace at a path: "closed", "open" or None (no gate, or no such
    namespace)."""
    try:
        with kernel.Namespace.at(netns_path) as ns:
            return state_of(ns)
    except FileNotFoundError:
        return None
