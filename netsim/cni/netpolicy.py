"""The ``netsim-policy`` plugin: chained last (after flannel and portmap), it hooks a container
into the node's NetworkPolicy dataplane (netsim.node.policy) so that a pod is never reachable before
its rules exist.

ADD closes the container's gate (netsim.cni.gate: policy routing rules in the container's
namespace that hold back its TCP, UDP, SCTP and ICMP but over loopback) unless it has one;
netsim's agent, as the runtime, closes it already when it makes the namespace, before any
plugin gives the pod an address, and opens it once the node's rules for the pod are written.
DEL has nothing to undo (the gate goes with the namespace).  CHECK fails when the container
has no gate.  Containers of runtimes that do not call this plugin are left alone.
"""

from __future__ import annotations

import os

from netsim.cni import gate, spec

THIS_NETNS = "/proc/thread-self/ns/net"  # the runtime's namespace: the plugin runs in it


def _container_netns(req: spec.Request) -> str:
    """CNI_NETNS, if it is a network namespace other than the runtime's own (whose gate would
    cut the node off)."""
    try:
        theirs, ours = os.stat(req.netns), os.stat(THIS_NETNS)
    except OSError as exc:
        raise spec.CNIError(spec.INVALID_ENVIRONMENT, f"CNI_NETNS {req.netns!r}: {exc.strerror}") from exc
    if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
        raise spec.CNIError(spec.INVALID_ENVIRONMENT, f"CNI_NETNS {req.netns!r} is the runtime's own namespace",
                            "netsim-policy isolates a container's namespace, never the node's")
    return req.netns


def _prev(req: spec.Request) -> dict:
    if req.prev_result is None:
        raise spec.CNIError(spec.INVALID_CONFIG, "netsim-policy must be called as a chained plugin",
                            "prevResult is missing")
    return req.prev_result


def cmd_add(req: spec.Request) -> dict:
    prev = _prev(req)
    netns = _container_netns(req)
    try:
        gate.close(netns)
    except Exception as exc:  # noqa: BLE001 -- any failure here must fail the ADD (fail closed)
        raise spec.CNIError(spec.INTERNAL, "could not isolate the pod until its policy rules exist", str(exc)) from exc
    return prev


def cmd_del(req: spec.Request) -> None:
    return None


def cmd_check(req: spec.Request) -> None:
    _prev(req)
    netns = _container_netns(req)
    try:
        closed_or_open = gate.state(netns)
    except Exception as exc:  # noqa: BLE001 -- not a network namespace
        raise spec.CNIError(spec.INVALID_ENVIRONMENT, f"CNI_NETNS {netns!r} is not a network namespace",
                            str(exc)) from exc
    if closed_or_open is None:
        raise spec.CNIError(spec.INTERNAL, "the container has no gate",
                            "its namespace lost the rules netsim-policy's ADD made (ip rule, proto 167)")


def cmd_status(req: spec.Request) -> None:
    return None


def cmd_gc(req: spec.Request) -> None:
    return None
