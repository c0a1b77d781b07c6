"""Every kind of L7 proxy pod netsim runs, in the order they claim a pod: the one list the agent
runs nginx for and `netsim trace` follows requests through."""

from __future__ import annotations

from netsim.node.ingress import gateway
from netsim.node.ingress.controller import INGRESS_NGINX, ProxyKind, claiming

ALL: tuple[ProxyKind, ...] = (INGRESS_NGINX, gateway.PROXY)


def proxy_kind(pod: dict) -> ProxyKind | None:
    """The kind of proxy ``pod`` is, None for any other pod (or one on the host's network)."""
    return claiming(ALL, pod)
