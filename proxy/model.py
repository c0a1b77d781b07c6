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


# -- which endpoints a node uses (upstream's pkg/proxy/topology.go) ---------------------------
def categorize_endpoints(sp: ServicePort, node: str) -> tuple[list[Endpoint], list[Endpoint], list[Endpoint], bool]:
    """upstream's CategorizeEndpoints (without topology hints): (cluster endpoints, local
    endpoints, every endpoint reachable from this node, whether the service has any usable
    endpoint anywhere).  Usable means Ready; when none is, Serving and Terminating ones
    (decided apart for Cluster and Local); never one that is not serving."""
    external = sp.external
    uses_cluster = not sp.internal_local or external
    uses_local = sp.internal_local or (sp.external_local and external)
    eps = sp.endpoints
    cluster: list[Endpoint] = []
    has_any = False
    if uses_cluster:
        cluster = [e for e in eps if e.ready]
        if not cluster:
            cluster = [e for e in eps if e.serving and e.terminating]
        has_any = bool(cluster)
    if not uses_local:
        return cluster, [], cluster, has_any
    local_ready = local_serving_terminating = False
    for e in eps:
        if e.ready:
            has_any = True
            local_ready = local_ready or e.node == node
        elif e.serving and e.terminating:
            has_any = True
            local_serving_terminating = local_serving_terminating or e.node == node
    local: list[Endpoint] = []
    serving_terminating = False
    if local_ready:
        local = [e for e in eps if e.node == node and e.ready]
    elif local_serving_terminating:
        serving_terminating = True
        local = [e for e in eps if e.node == node and e.serving and e.terminating]
    if not uses_cluster:
        return [], local, local, has_any
    if not serving_terminating:
        return cluster, local, cluster, has_any  # every ready local endpoint is among the cluster ones
    seen = {e.address for e in cluster}
    return cluster, local, cluster + [e for e in local if e.address not in seen], has_any


@dataclass(frozen=True)
class TrafficPolicy:
    """What a node does with one service port's traffic, shared by every proxier: its
    endpoints (categorize_endpoints), whether the cluster-wide and the node-local endpoint
    chains are needed, and where internal and external traffic go (``*_local``: to the
    node-local chain; ``has_*``: to some endpoint at all, else REJECT/DROP)."""

    cluster_endpoints: list[Endpoint]
    local_endpoints: list[Endpoint]
    reachable: list[Endpoint]
    has_endpoints: bool
    uses_cluster_chain: bool
    uses_local_chain: bool
    internal_local: bool
    has_internal: bool
    external_local: bool
    has_external: bool
    uses_external_chain: bool


def traffic_policy(sp: ServicePort, node: str) -> TrafficPolicy:
    external = sp.external
    ext_local = sp.external_local and external
    int_local = sp.internal_local
    cluster, local, reachable, has_eps = categorize_endpoints(sp, node)
    return TrafficPolicy(
        cluster_endpoints=cluster, local_endpoints=local, reachable=reachable, has_endpoints=has_eps,
        uses_cluster_chain=bool(cluster) and (not int_local or external),
        uses_local_chain=bool(local) and (int_local or ext_local),
        internal_local=int_local, has_internal=has_eps and (bool(local) if int_local else True),
        external_local=ext_local, has_external=has_eps and (bool(local) if ext_local else True),
        uses_external_chain=has_eps and external)
