"""A pod's gate: an nftables table in the pod's own namespace that drops everything but
loopback, both ways, until the node's agent opens it.

NetworkPolicy promises that a pod in an isolated namespace is never reachable, not even for
the moment between getting its address and its rules being written.  The runtime (netsim's
agent, playing containerd) closes the gate when it makes the sandbox's namespace, before any
CNI plugin runs, so no plugin's order can open a window; the chained plugin ``netsim-policy``
closes it too for a runtime that did not.  The agent opens it once the node's policy table
(netsim.policy) that covers the pod has been written, before the pod reports Running.

Closed means the set ``open`` is empty: ``meta mark != @open`` holds for every packet.
Opening adds one element (0, the mark of every packet in a pod's namespace: crossing into it
scrubs the mark), a fraction of a millisecond; deleting a table or rule instead waits for an
RCU grace period (~13 ms a pod).  The gate hooks before conntrack (priority raw), so nothing
it drops leaves a conntrack entry behind.
"""

from __future__ import annotations

import errno
import os

FAMILY = "inet"  # IPv4 and IPv6
TABLE = "netsim-gate"


def _text() -> str:
    chain = "type filter hook {hook} priority raw; policy accept; {dev} != lo meta mark != @open drop;"
    return (f"create table {FAMILY} {TABLE}\n"  # fails when there is one: never closes an open gate
            f"table {FAMILY} {TABLE} {{\n"
            "  set open { type mark; }\n"
            f"  chain input {{ {chain.format(hook='input', dev='iif')} }}\n"
            f"  chain output {{ {chain.format(hook='output', dev='oif')} }}\n"
            "}\n")


def _lib(netns_path: str):
    from proxy.nftables import LibNft

    return LibNft(netns_path)


def close(netns_path: str) -> bool:
    """Put a closed gate into a namespace that has none; True if this call made it.  A
    namespace that already has one (closed or open) keeps it as it is."""
    lib = _lib(netns_path)
    try:
        try:
            lib.run(_text())
            return True
        except Exception:  # noqa: BLE001 -- there is one already, or nftables failed: which?
            lib.run(f"list set {FAMILY} {TABLE} open")  # raises if there is none
            return False
    finally:
        lib.close()


def open_(netns_path: str) -> None:
    """Let the pod's traffic through (idempotent).  A namespace that is gone raises
    FileNotFoundError."""
    if not os.path.exists(netns_path):
        raise FileNotFoundError(errno.ENOENT, "no such namespace", netns_path)
    lib = _lib(netns_path)
    try:
        lib.run(f"add element {FAMILY} {TABLE} open {{ 0 }}\n")
    finally:
        lib.close()


def state(netns_path: str) -> str | None:
    """"closed", "open", or None (no gate, or no such namespace)."""
    if not os.path.exists(netns_path):
        return None
    lib = _lib(netns_path)
    try:
        listing = lib.run(f"list set {FAMILY} {TABLE} open")
    except Exception:  # noqa: BLE001 -- no gate
        return None
    finally:
        lib.close()
    return "open" if "elements" in listing else "closed"
