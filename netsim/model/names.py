"""How netsim names what it creates on the host.

Everything a cluster owns lives in network namespaces called ``nsim.<cluster>.<member>``.
Cluster names are DNS labels, so they never contain a dot: the prefix ``nsim.<cluster>.``
therefore matches exactly one cluster's namespaces, and a sweep by prefix cannot touch
another cluster's (``a`` vs ``a-b``) or anything the host made itself.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

NETNS_ROOT = "nsim"
IFNAMSIZ = 15  # the kernel's limit, without the trailing NUL

# Member names that cannot collide with a node or host name: DNS labels have no "_".
UNDERLAY_MEMBER = "_underlay"
UNDERLAY_BRIDGE = "br-underlay"  # the first (default) segment's bridge; segment i > 0 is br-underlay<i>
NODE_UPLINK = "eth0"

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CLUSTER_NAME_MAX = 40


def cluster_prefix(cluster: str) -> str:
    return f"{NETNS_ROOT}.{cluster}."


def netns_name(cluster: str, member: str) -> str:
    return cluster_prefix(cluster) + member


def cluster_of_netns(netns: str) -> str | None:
    """The cluster a namespace belongs to, or None if netsim did not name it."""
    parts = netns.split(".", 2)
    if len(parts) == 3 and parts[0] == NETNS_ROOT and DNS_LABEL.match(parts[1]):
        return parts[1]
    return None


def underlay_bridge(segment: int) -> str:
    """The bridge of the underlay's ``segment``-th L2 segment: the first keeps the name a
    one-segment cluster has always had."""
    return UNDERLAY_BRIDGE if segment == 0 else f"{UNDERLAY_BRIDGE}{segment}"


def short_hash(text: str, length: int = 4) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def ifname(base: str) -> str:
    """A valid interface name for ``base``: itself when it fits, else a truncation made unique
    by a hash of the whole name (so two long names sharing a start still differ)."""
    if len(base) <= IFNAMSIZ:
        return base
    return f"{base[:IFNAMSIZ - 5]}-{short_hash(base)}"


# The component reports in the store (netsim.api.informer.COMPONENTS): each reconciler loop of
# an agent reports under its kind and the nodes it owns, so that `apply` and `join` wait for
# exactly the loops that serve the nodes they care about.
AGENT = "agent"
KUBE_PROXY = "kube-proxy"
DNS = "dns"
CONTROLLER_MANAGER = "controller-manager"  # one per cluster: it owns no nodes


def component_name(kind: str, nodes: Iterable[str]) -> str:
    return f"{kind}-" + ",".join(sorted(nodes))


def components(nodes: Iterable[str], controllers: bool) -> list[str]:
    """The reports an agent owning ``nodes`` writes (the controller manager's if it runs them)."""
    nodes = list(nodes)
    out = [component_name(kind, nodes) for kind in (AGENT, KUBE_PROXY, DNS)]
    return out + ([CONTROLLER_MANAGER] if controllers else [])


def image_path(image: str) -> str:
    """An image reference without registry, tag and digest: "ingress-nginx/controller" for
    registry.k8s.io/ingress-nginx/controller:v1.12.1@sha256:..."""
    ref = image.split("@", 1)[0]
    head, _, last = ref.rpartition("/")
    last = last.split(":", 1)[0]
    parts = (head.split("/") if head else []) + [last]
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]  # a registry host
    return "/".join(parts)
