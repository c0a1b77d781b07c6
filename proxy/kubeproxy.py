"""kube-proxy for the nodes one agent runs: a level-triggered sync over the watched Services and
EndpointSlices, rendered into every node's namespace by the mode's proxier, plus the
LoadBalancer IPs' routes on the underlay (proxy.lbspeaker) when this agent owns it.

The sync runs on every change and at least every ``RESYNC_S`` seconds, which is also how
often the proxier's canary is looked at (a flushed table comes back within that).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netsim.api.registry import read_config
from netsim.model import names
from proxy import iptables_sync, ipvs, lbspeaker, nftables
from proxy.model import service_ports
from proxy.proxier import Proxier, ProxyError

if TYPE_CHECKING:
    # Every mode is a Proxier (as upstream's `var _ proxy.Provider = &Proxier{}`): a type
    # checker holds each mode's class to the protocol here.
    def _modes(a: iptables_sync.Proxier, b: nftables.Proxier, c: ipvs.Proxier) -> tuple[Proxier, ...]:
        return a, b, c

log = logging.getLogger("netsim.kube-proxy")

RESYNC_S = 2.0
MODES = ("iptables", "nftables", "ipvs")


@dataclass(frozen=True)
class ProxyNode:
    name: str
    netns: str
    ip: str


def component_name(nodes) -> str:
    return names.component_name(names.KUBE_PROXY, nodes)


class KubeProxy:
    def __init__(self, nodes: list[ProxyNode], cluster_cidr: str, mode: str, underlay_netns: str | None,
                 underlay_subnet: str | None = None, ipvs_scheduler: str = ipvs.DEFAULT_SCHEDULER):
        if mode not in MODES:
            raise ValueError(f"unknown kube-proxy mode {mode!r}: one of {', '.join(MODES)}")
        mode, why = ipvs.effective_mode(mode)
        if why:
            log.warning("kube-proxy: %s; rendering iptables rules instead of IPVS", why)
        self.mode = mode
        self.proxiers: dict[str, Proxier] = {}
        for n in nodes:
            common = {"node": n.name, "node_ips": [n.ip], "cluster_cidr": cluster_cidr}
            if mode == "ipvs":
                self.proxiers[n.name] = ipvs.Proxier(n.netns, scheduler=ipvs_scheduler, **common)
            elif mode == "nftables":
                self.proxiers[n.name] = nftables.Proxier(n.netns, **common)
            else:
                self.proxiers[n.name] = iptables_sync.Proxier(n.netns, **common)
        self.underlay_netns = underlay_netns
        self.underlay_subnet = underlay_subnet

    def sync(self, cache) -> float | None:
        services, slices = cache.of_kind("Service"), cache.of_kind("EndpointSlice")
        ports = service_ports(services, slices)
        failed = []
        for name, proxier in self.proxiers.items():
            try:
                result = proxier.sync(ports)
                if result.full:
                    log.info("kube-proxy %s: full sync (%s), %d service ports, %.1f ms", name, result.reason,
                             result.services, result.total_s * 1000)
            except ProxyError as exc:
                log.error("kube-proxy %s: sync failed: %s", name, exc)
                failed.append(name)
        if self.underlay_netns:
            pool = read_config(cache.store).load_balancer_pool
            routes = lbspeaker.desired_routes(services, slices, cache.of_kind("Node"), pool, self.underlay_subnet)
            lbspeaker.converge(self.underlay_netns, routes)
        if failed:
            raise ProxyError(f"sync failed on {', '.join(failed)}")  # the loop retries and reports no progress
        return RESYNC_S
