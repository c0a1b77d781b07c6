"""What kube-proxy sees: Service ports and their endpoints, from Services and EndpointSlices.

Plain frozen dataclasses, built by :func:`service_ports` from the objects in the store; every
renderer (iptables, nftables, IPVS) works from these, never from the raw objects.  Upstream's
names: a service port is ``namespace/name:portName`` (``namespace/name`` when the port has no
name), and an endpoint is ``ip:port``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds, as the API defaults sessionAffinityConfig.clientIP.timeoutSeconds


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node: str | None = None

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    namespace: str
    name: str
    port_name: str
    protocol: str  # "TCP", "UDP" or "SCTP"
    cluster_ip: str | None  # None: headless (no rules)
    port: int
    type: str = "ClusterIP"
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    source_ranges: tuple[str, ...] = ()
    external_local: bool = False  # externalTrafficPolicy: Local
    internal_local: bool = False  # internalTrafficPolicy: Local
    affinity_timeout: int = 0  # sessionAffinity: ClientIP, in seconds; 0 = none
    endpoints: tuple[Endpoint, ...] = field(default=(), compare=False, hash=False)

    @property
    def key(self) -> str:
        """Upstream's ServicePortName string: ``ns/name:port`` or ``ns/name``."""
        return f"{self.namespace}/{self.name}" + (f":{self.port_name}" if self.port_name else "")

    @property
    def proto(self) -> str:
        return self.protocol.lower()

    @property
    def external(self) -> bool:
        """Reachable from outside the cluster network (NodePort, LoadBalancer, external IPs)."""
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)


def _endpoints_for(port: dict, slices: list[dict]) -> tuple[Endpoint, ...]:
    """The endpoints of one service port: every slice that carries a port of the same name
    and protocol, with that slice's (per-pod resolved) port number."""
    out = []
    for s in slices:
        match = next((p for p in s.get("ports") or [] if (p.get("name") or "") == (port.get("name") or "")
                      and p.get("protocol", "TCP") == port.get("protocol", "TCP")), None)
        if match is None or match.get("port") is None:
            continue
        for e in s.get("endpoints") or []:
            cond = e.get("conditions") or {}
            ready = cond.get("ready", True) is not False
            for ip in e.get("addresses") or []:
                out.append(Endpoint(ip, int(match["port"]), ready=ready,
                                    serving=cond.get("serving", ready) is not False,
                                    terminating=bool(cond.get("terminating", False)), node=e.get("nodeName")))
    return tuple(sorted(set(out), key=lambda e: (e.ip, e.port)))


def service_ports(services: list[dict], slices: list[dict]) -> list[ServicePort]:
    """Every port of every Service, with its endpoints, sorted by key."""
    by_service: dict[tuple[str, str], list[dict]] = {}
    for s in slices:
        svc = (s.get("metadata", {}).get("labels") or {}).get("kubernetes.io/service-name")
        if svc:
            by_service.setdefault((s["metadata"]["namespace"], svc), []).append(s)
    out = []
    for svc in services:
        meta, spec = svc["metadata"], svc.get("spec") or {}
        cluster_ip = spec.get("clusterIP")
        if cluster_ip in (None, "", "None"):
            cluster_ip = None
        affinity = 0
        if spec.get("sessionAffinity") == "ClientIP":
            affinity = int(((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get(
                "timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT))
        lb_ips = tuple(i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                       if i.get("ip"))
        slices_here = by_service.get((meta["namespace"], meta["name"]), [])
        for port in spec.get("ports") or []:
            out.append(ServicePort(
                namespace=meta["namespace"], name=meta["name"], port_name=port.get("name") or "",
                protocol=port.get("protocol", "TCP"), cluster_ip=cluster_ip, port=int(port["port"]),
                type=spec.get("type", "ClusterIP"), node_port=int(port.get("nodePort") or 0),
                external_ips=tuple(spec.get("externalIPs") or ()),
                load_balancer_ips=lb_ips if spec.get("type") == "LoadBalancer" else (),
                source_ranges=tuple(spec.get("loadBalancerSourceRanges") or ()),
                external_local=spec.get("externalTrafficPolicy") == "Local",
                internal_local=spec.get("internalTrafficPolicy") == "Local",
                affinity_timeout=affinity,
                endpoints=_endpoints_for(port, slices_here)))
    return sorted(out, key=lambda sp: (sp.key, sp.protocol))
