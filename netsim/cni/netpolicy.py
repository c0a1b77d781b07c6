"""The ``netsim-policy`` plugin: chained after flannel and portmap, it hooks a pod into the
node's NetworkPolicy dataplane (netsim.policy) so that the pod is never reachable before its
rules exist.

ADD puts the pod's addresses into the set ``pending`` of the node's table ``ip
netsim-policy-pending`` (created if missing), whose chains drop all traffic to and from them;
the agent's policy reconciler takes an address out in the same transaction that writes the
pod's rules, before the pod reports Running.  DEL takes the addresses out (a later pod may get
them).  CHECK fails when the table is gone.  Containers of runtimes that do not call this
plugin are left alone.
"""

from __future__ import annotations

import ipaddress

from netsim.cni import spec

THIS_NETNS = "/proc/thread-self/ns/net"  # the runtime's namespace: the plugin runs in it


def _lib():
    from proxy.nftables import LibNft

    return LibNft(THIS_NETNS)


def _ipv4s(req: spec.Request) -> list[ipaddress.IPv4Interface]:
    if req.prev_result is None:
        raise spec.CNIError(spec.INVALID_CONFIG, "netsim-policy must be called as a chained plugin",
                            "prevResult is missing")
    out = []
    for ip in req.prev_result.get("ips") or []:
        iface = ipaddress.ip_interface(ip["address"])
        if iface.version == 4:
            out.append(iface)
    return out


def cmd_add(req: spec.Request) -> dict:
    from netsim import policy

    addresses = _ipv4s(req)
    lib = _lib()
    try:
        policy.ensure_pending_table(lib)
        t = f"{policy.FAMILY} {policy.PENDING_TABLE} pending"
        if addresses:
            lib.run("".join(f"add element {t} {{ {a.ip} }}\n" for a in addresses))
    except Exception as exc:  # noqa: BLE001 -- any failure here must fail the ADD (fail closed)
        raise spec.CNIError(spec.INTERNAL, "could not isolate the pod until its policy rules exist", str(exc)) from exc
    finally:
        lib.close()
    return req.prev_result


def cmd_del(req: spec.Request) -> None:
    from netsim import policy

    if req.prev_result is None:
        return  # nothing known to remove (DEL must succeed)
    lib = _lib()
    try:
        lib.run(f"list set {policy.FAMILY} {policy.PENDING_TABLE} pending")
    except Exception:  # noqa: BLE001 -- no table: nothing to remove
        lib.close()
        return
    try:
        lines = policy.unpend_lines(str(a.ip) for a in _ipv4s(req))
        if lines:
            lib.run("\n".join(lines) + "\n")
    finally:
        lib.close()


def cmd_check(req: spec.Request) -> None:
    from netsim import policy

    _ipv4s(req)
    lib = _lib()
    try:
        lib.run(f"list set {policy.FAMILY} {policy.PENDING_TABLE} pending")
    except Exception as exc:  # noqa: BLE001
        raise spec.CNIError(spec.INTERNAL, "the node's policy table is gone", str(exc)) from exc
    finally:
        lib.close()


def cmd_status(req: spec.Request) -> None:
    return None


def cmd_gc(req: spec.Request) -> None:
    return None
