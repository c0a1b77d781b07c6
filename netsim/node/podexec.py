"""How a host command runs "in" a pod: in the pod's network namespace, through `ip netns exec`,
which also bind-mounts /etc/netns/<netns>/* (the pod's resolv.conf, written by the agent) and
remounts /sys for the namespace.  `netsim exec` and the API server's pods/exec both start
commands this way, so a command sees the same addresses, routes and DNS either way.

Knows the pod namespace names (netsim.node.podnet) and the node names (netsim.model.names);
uses nothing but the kernel's namespace checks.
"""

from __future__ import annotations

from netsim import kernel
from netsim.model import names
from netsim.node import podnet


def argv(netns: str, command: list[str]) -> list[str]:
    """The command line that runs ``command`` inside ``netns`` with its /etc/netns files."""
    return ["ip", "netns", "exec", netns, *command]


def pod_netns(cluster: str, pod: dict) -> str:
    """The network namespace a pod's processes live in: its own, or its node's for a
    hostNetwork pod."""
    if pod["spec"].get("hostNetwork"):
        return names.netns_name(cluster, pod["spec"].get("nodeName", ""))
    return podnet.pod_netns(cluster, pod["metadata"]["namespace"], pod["metadata"]["name"])


def running_netns(cluster: str, pod: dict) -> str | None:
    """The pod's namespace if it exists on this machine (the pod runs here), else None."""
    netns = pod_netns(cluster, pod)
    return netns if kernel.netns_exists(netns) else None


__all__ = ["argv", "pod_netns", "running_netns"]
