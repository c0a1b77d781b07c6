"""kube-proxy's IPVS mode, rendered as upstream's proxier renders it and applied to a node.

After upstream's ``pkg/proxy/ipvs/proxier.go`` (syncProxyRules, syncService/syncEndpoint,
writeIptablesRules, acceptIPVSTraffic) and ``pkg/proxy/ipvs/ipset.go``, with the endpoint
choice of :func:`proxy.model.traffic_policy`.  Two halves, as in :mod:`proxy.iptables`:

* :func:`render` -- pure: Service ports in, a :class:`Ruleset` out: the addresses of the
  ``kube-ipvs0`` dummy interface (every ClusterIP, external IP and load-balancer IP, /32), one
  IPVS virtual server per IP:port:protocol (NAT mode, the configured scheduler, ``rr`` by
  default; persistence with the affinity timeout for ``sessionAffinity: ClientIP``; NodePorts
  on every node IP) with its real servers, upstream's ipsets (``KUBE-CLUSTER-IP``,
  ``KUBE-LOOP-BACK``, ``KUBE-NODE-PORT-TCP``, ... with upstream's types and comments) and the
  few iptables rules upstream keeps in ``nat`` and ``filter`` (masquerade of off-cluster
  sources and hairpin flows through the 0x4000 mark, NodePorts, load-balancer source ranges,
  ``KUBE-IPVS-FILTER``).
* :class:`Proxier` -- makes one node namespace hold a ruleset.  A full sync (the first, after
  a failure, when the ``KUBE-PROXY-CANARY`` chain or one of the last sync's virtual servers
  has gone, every ``full_sync_every`` syncs)
  reads the kernel's virtual servers (``ipvsadm -Sn``) and kube-ipvs0's addresses and applies
  the difference; a partial sync, as the iptables proxier's, works from what the last sync
  applied, so one endpoint change is one ``ipvsadm -R`` line (should the kernel's table have
  been changed behind its back, that restore fails and a full sync follows at once).  Each
  sync is at most one ``ipset restore`` (the entries that changed; every one on a full sync),
  one ``iptables-legacy-restore --noflush`` (only when the rules, which depend on which sets
  are empty, changed), one ``ipvsadm -R`` and one
  rtnetlink batch.  The sysctls upstream sets in the node's namespace: ``net.ipv4.vs.conntrack=1``
  (netfilter NAT -- the masquerade -- sees IPVS flows), ``expire_nodest_conn`` and
  ``expire_quiescent_template`` (flows to a removed real server end), ``arp_ignore=1`` /
  ``arp_announce=2`` (the node does not answer ARP for Service IPs on kube-ipvs0).

A service port with no endpoints keeps its virtual server with no real server: IPVS answers a
new connection with ICMP port unreachable (``ip_vs_leave``), so the client is refused at once,
as upstream.  Stale UDP flows are deleted from conntrack as in the other modes.

Why ``ipvsadm -R`` rather than pyroute2's IPVS class: pyroute2 0.9 sends one request per
asyncio round trip, while ipvsadm reads the whole difference and sends it from C, one
process per sync (``bench/proxy_sync_ipvs.py`` prints the figures, in the guest).

Not modelled: graceful termination (upstream keeps a removed real server at weight 0 until
its connections end; here it is deleted at once), health-check NodePorts, nodePortAddresses
other than the node IPs (upstream binds NodePorts to every local address), IPv6, the
``KUBE-IPVS-OUT-FILTER`` rules of Services that forbid access from the node.

This machine's kernel has no ``ip_vs``: the dataplane tests run in a qemu guest
(:mod:`netsim.kernel.guest`) and are skipped elsewhere with a reason.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from netsim import kernel
from proxy.iptables import (
    KUBE_FORWARD,
    KUBE_MARK_MASQ,
    KUBE_POSTROUTING,
    KUBE_PROXY_CANARY,
    KUBE_SERVICES,
    MASQ_MARK,
    Jump,
)
from proxy.model import ServicePort, traffic_policy
from proxy.proxier import (
    BACKENDS,
    DEFAULT_BACKEND,
    TOOL_TIMEOUT,
    BaseProxier,
    BaseSyncResult,
    ProxyError,
    UDPTrack,
    run_in,
    udp_changed,
)

DUMMY = "kube-ipvs0"
DEFAULT_SCHEDULER = "rr"
# The kernel's schedulers (net/netfilter/ipvs/ip_vs_*.c).
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "fo", "ovf", "nq", "sed", "mh", "twos")

# -- upstream's names ---------------------------------------------------------------------------
KUBE_NODE_PORT = "KUBE-NODE-PORT"
KUBE_LOAD_BALANCER = "KUBE-LOAD-BALANCER"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_SOURCE_RANGES_FIREWALL = "KUBE-SOURCE-RANGES-FIREWALL"
KUBE_IPVS_FILTER = "KUBE-IPVS-FILTER"
KUBE_IPVS_OUT_FILTER = "KUBE-IPVS-OUT-FILTER"

LOOP_BACK = "KUBE-LOOP-BACK"
CLUSTER_IP = "KUBE-CLUSTER-IP"
EXTERNAL_IP = "KUBE-EXTERNAL-IP"
EXTERNAL_IP_LOCAL = "KUBE-EXTERNAL-IP-LOCAL"
LOAD_BALANCER = "KUBE-LOAD-BALANCER"
LOAD_BALANCER_LOCAL = "KUBE-LOAD-BALANCER-LOCAL"
LOAD_BALANCER_FW = "KUBE-LOAD-BALANCER-FW"
LOAD_BALANCER_SOURCE_IP = "KUBE-LOAD-BALANCER-SOURCE-IP"
LOAD_BALANCER_SOURCE_CIDR = "KUBE-LOAD-BALANCER-SOURCE-CIDR"
NODE_PORT_TCP = "KUBE-NODE-PORT-TCP"
NODE_PORT_LOCAL_TCP = "KUBE-NODE-PORT-LOCAL-TCP"
NODE_PORT_UDP = "KUBE-NODE-PORT-UDP"
NODE_PORT_LOCAL_UDP = "KUBE-NODE-PORT-LOCAL-UDP"
NODE_PORT_SCTP = "KUBE-NODE-PORT-SCTP-HASH"
NODE_PORT_LOCAL_SCTP = "KUBE-NODE-PORT-LOCAL-SCTP-HASH"
HEALTH_CHECK_NODE_PORT = "KUBE-HEALTH-CHECK-NODE-PORT"
IPVS_IPS = "KUBE-IPVS-IPS"

# name -> (ipset type, comment), upstream's ipsetInfo in its order.
IPSETS: dict[str, tuple[str, str]] = {
    LOOP_BACK: ("hash:ip,port,ip", "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"),
    CLUSTER_IP: ("hash:ip,port", "Kubernetes service cluster ip + port for masquerade purpose"),
    EXTERNAL_IP: ("hash:ip,port", "Kubernetes service external ip + port for masquerade and filter purpose"),
    EXTERNAL_IP_LOCAL: ("hash:ip,port", "Kubernetes service external ip + port with externalTrafficPolicy=local"),
    LOAD_BALANCER: ("hash:ip,port", "Kubernetes service lb portal"),
    LOAD_BALANCER_FW: ("hash:ip,port", "Kubernetes service load balancer ip + port for load balancer with sourceRange"),
    LOAD_BALANCER_LOCAL: ("hash:ip,port",
                          "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"),
    LOAD_BALANCER_SOURCE_IP: ("hash:ip,port,ip",
                              "Kubernetes service load balancer ip + port + source IP for packet filter purpose"),
    LOAD_BALANCER_SOURCE_CIDR: ("hash:ip,port,net",
                                "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"),
    NODE_PORT_TCP: ("bitmap:port", "Kubernetes nodeport TCP port for masquerade purpose"),
    NODE_PORT_LOCAL_TCP: ("bitmap:port", "Kubernetes nodeport TCP port with externalTrafficPolicy=local"),
    NODE_PORT_UDP: ("bitmap:port", "Kubernetes nodeport UDP port for masquerade purpose"),
    NODE_PORT_LOCAL_UDP: ("bitmap:port", "Kubernetes nodeport UDP port with externalTrafficPolicy=local"),
    NODE_PORT_SCTP: ("hash:ip,port", "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"),
    NODE_PORT_LOCAL_SCTP: ("hash:ip,port",
                           "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"),
    HEALTH_CHECK_NODE_PORT: ("bitmap:port", "Kubernetes health check node port"),
    IPVS_IPS: ("hash:ip", "IPVS service ip"),
}

# upstream's ipsetWithIptablesChain: (set, table, from chain, to, match type, protocol), in order;
# a rule is written only while its set is not empty.
SET_RULES = (
    (LOOP_BACK, "nat", KUBE_POSTROUTING, "MASQUERADE", "dst,dst,src", ""),
    (LOAD_BALANCER, "nat", KUBE_SERVICES, KUBE_LOAD_BALANCER, "dst,dst", ""),
    (LOAD_BALANCER_LOCAL, "nat", KUBE_LOAD_BALANCER, "RETURN", "dst,dst", ""),
    (NODE_PORT_LOCAL_TCP, "nat", KUBE_NODE_PORT, "RETURN", "dst", "tcp"),
    (NODE_PORT_TCP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst", "tcp"),
    (NODE_PORT_LOCAL_UDP, "nat", KUBE_NODE_PORT, "RETURN", "dst", "udp"),
    (NODE_PORT_UDP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst", "udp"),
    (NODE_PORT_LOCAL_SCTP, "nat", KUBE_NODE_PORT, "RETURN", "dst,dst", "sctp"),
    (NODE_PORT_SCTP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, "dst,dst", "sctp"),
    (LOAD_BALANCER_FW, "filter", KUBE_PROXY_FIREWALL, KUBE_SOURCE_RANGES_FIREWALL, "dst,dst", ""),
    (LOAD_BALANCER_SOURCE_CIDR, "filter", KUBE_SOURCE_RANGES_FIREWALL, "RETURN", "dst,dst,src", ""),
    (LOAD_BALANCER_SOURCE_IP, "filter", KUBE_SOURCE_RANGES_FIREWALL, "RETURN", "dst,dst,src", ""),
)

NAT_CHAINS = (KUBE_SERVICES, KUBE_POSTROUTING, KUBE_NODE_PORT, KUBE_LOAD_BALANCER, KUBE_MARK_MASQ)
FILTER_CHAINS = (KUBE_FORWARD, KUBE_NODE_PORT, KUBE_PROXY_FIREWALL, KUBE_SOURCE_RANGES_FIREWALL, KUBE_IPVS_FILTER,
                 KUBE_IPVS_OUT_FILTER)
# upstream's iptablesJumpChain for the IPVS proxier.
JUMPS = (
    Jump("nat", KUBE_SERVICES, "OUTPUT", "kubernetes service portals"),
    Jump("nat", KUBE_SERVICES, "PREROUTING", "kubernetes service portals"),
    Jump("nat", KUBE_POSTROUTING, "POSTROUTING", "kubernetes postrouting rules"),
    Jump("filter", KUBE_FORWARD, "FORWARD", "kubernetes forwarding rules"),
    Jump("filter", KUBE_NODE_PORT, "INPUT", "kubernetes health check rules"),
    Jump("filter", KUBE_PROXY_FIREWALL, "INPUT", "kube-proxy firewall rules"),
    Jump("filter", KUBE_PROXY_FIREWALL, "FORWARD", "kube-proxy firewall rules"),
    Jump("filter", KUBE_IPVS_FILTER, "INPUT", "kubernetes ipvs access filter"),
    Jump("filter", KUBE_IPVS_OUT_FILTER, "OUTPUT", "kubernetes ipvs access filter"),
)
SYSCTLS = (("net.ipv4.vs.conntrack", "1"), ("net.ipv4.vs.expire_nodest_conn", "1"),
           ("net.ipv4.vs.expire_quiescent_template", "1"), ("net.ipv4.conf.all.arp_ignore", "1"),
           ("net.ipv4.conf.all.arp_announce", "2"), ("net.ipv4.ip_forward", "1"))
PROTO_FLAG = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}
FLAG_PROTO = {v: k for k, v in PROTO_FLAG.items()}
IP_VS_CONF_MASQ = "-m"  # NAT forwarding: what kube-proxy uses


# -- rendering --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VirtualServer:
    protocol: str  # tcp, udp, sctp
    ip: str
    port: int
    scheduler: str = DEFAULT_SCHEDULER
    persistence: int = 0  # seconds of ClientIP affinity; 0 = none
    reals: tuple[str, ...] = ()  # "ip:port", sorted

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.protocol, self.ip, self.port)

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def add_line(self, verb: str = "-A") -> str:
        line = f"{verb} {PROTO_FLAG[self.protocol]} {self.address} -s {self.scheduler}"
        return line + (f" -p {self.persistence}" if self.persistence else "")


@dataclass(frozen=True)
class ServiceIpvs:
    """One service port's share: its virtual servers (with the role each plays, for people)."""

    key: str
    servers: tuple[tuple[str, VirtualServer], ...]  # (role, server)
    udp: UDPTrack | None = None


@dataclass
class Ruleset:
    services: dict[str, ServiceIpvs] = field(default_factory=dict)  # by "ns/name:port/proto"
    addresses: set[str] = field(default_factory=set)  # on kube-ipvs0
    ipsets: dict[str, set[str]] = field(default_factory=lambda: {name: set() for name in IPSETS})
    nat: list[str] = field(default_factory=list)
    filter: list[str] = field(default_factory=list)

    @property
    def servers(self) -> dict[tuple[str, str, int], VirtualServer]:
        return {vs.key: vs for s in self.services.values() for _, vs in s.servers}

    def iptables_text(self, jumps: Iterable[Jump] = (), canary: bool = True) -> str:
        """iptables-restore --noflush input: every chain of ours declared (so flushed) and
        rewritten, plus the jumps into them that are missing, plus the canaries."""
        out = []
        for table, chains, rules in (("filter", FILTER_CHAINS, self.filter), ("nat", NAT_CHAINS, self.nat)):
            out.append(f"*{table}")
            out += [f":{c} - [0:0]" for c in chains]
            if canary:
                out.append(f":{KUBE_PROXY_CANARY} - [0:0]")
            out += rules
            out += [f"-I {j.chain} {j.args()}" for j in jumps if j.table == table]
            out.append("COMMIT")
        if canary:
            out += ["*mangle", f":{KUBE_PROXY_CANARY} - [0:0]", "COMMIT"]
        return "\n".join(out) + "\n"


def _proto_entry(ip: str, proto: str, port: int) -> str:
    return f"{ip},{proto}:{port}"


def _comment(name: str) -> str:
    return f'"{IPSETS[name][1]}"'


def render(service_ports: Iterable[ServicePort], *, node: str, node_ips: Sequence[str], cluster_cidr: str,
           scheduler: str = DEFAULT_SCHEDULER, masquerade_all: bool = False) -> Ruleset:
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown IPVS scheduler {scheduler!r}: one of {', '.join(SCHEDULERS)}")
    rs = Ruleset()
    sets = rs.ipsets
    node_nets = [ipaddress.ip_address(ip) for ip in node_ips]
    for sp in service_ports:
        if sp.cluster_ip is None:
            continue  # headless: no virtual server, as no iptables rule
        proto = sp.proto
        tp = traffic_policy(sp, node)
        internal = tp.local_endpoints if tp.internal_local else tp.cluster_endpoints
        external = tp.local_endpoints if tp.external_local else tp.cluster_endpoints
        persistence = sp.affinity_timeout

        def vs(ip: str, port: int, endpoints) -> VirtualServer:
            return VirtualServer(proto, ip, port, scheduler, persistence,  # noqa: B023 (used at once)
                                 tuple(sorted({e.address for e in endpoints})))

        servers: list[tuple[str, VirtualServer]] = [("cluster IP", vs(sp.cluster_ip, sp.port, internal))]
        rs.addresses.add(sp.cluster_ip)
        sets[CLUSTER_IP].add(_proto_entry(sp.cluster_ip, proto, sp.port))
        for e in sp.endpoints:
            if e.node == node:
                sets[LOOP_BACK].add(f"{_proto_entry(e.ip, proto, e.port)},{e.ip}")
        for ip in sp.external_ips:
            servers.append(("external IP", vs(ip, sp.port, external)))
            rs.addresses.add(ip)
            sets[EXTERNAL_IP_LOCAL if tp.external_local else EXTERNAL_IP].add(_proto_entry(ip, proto, sp.port))
        for ip in sp.load_balancer_ips:
            servers.append(("load balancer", vs(ip, sp.port, external)))
            rs.addresses.add(ip)
            entry = _proto_entry(ip, proto, sp.port)
            sets[LOAD_BALANCER].add(entry)
            if tp.external_local:
                sets[LOAD_BALANCER_LOCAL].add(entry)
            if sp.source_ranges:
                sets[LOAD_BALANCER_FW].add(entry)
                allow_from_node = False
                for src in sp.source_ranges:
                    net = ipaddress.ip_network(src, strict=False)
                    sets[LOAD_BALANCER_SOURCE_CIDR].add(f"{entry},{net}")
                    allow_from_node = allow_from_node or any(ip_ in net for ip_ in node_nets)
                if allow_from_node:  # the node reaches its own LB IP with that IP as source
                    sets[LOAD_BALANCER_SOURCE_IP].add(f"{entry},{ip}")
        if sp.node_port:
            for ip in node_ips:
                servers.append(("node port", vs(ip, sp.node_port, external)))
            if proto == "sctp":
                for ip in node_ips:
                    entry = _proto_entry(ip, proto, sp.node_port)
                    sets[NODE_PORT_SCTP].add(entry)
                    if tp.external_local:
                        sets[NODE_PORT_LOCAL_SCTP].add(entry)
            else:
                sets[NODE_PORT_TCP if proto == "tcp" else NODE_PORT_UDP].add(str(sp.node_port))
                if tp.external_local:
                    sets[NODE_PORT_LOCAL_TCP if proto == "tcp" else NODE_PORT_LOCAL_UDP].add(str(sp.node_port))
        udp = None
        if proto == "udp":
            udp = UDPTrack((sp.cluster_ip, *sp.load_balancer_ips, *sp.external_ips), sp.port, sp.node_port,
                           frozenset(e.ip for e in tp.reachable))
        key = f"{sp.key}/{proto}"
        rs.services[key] = ServiceIpvs(key, tuple(servers), udp)
    sets[IPVS_IPS] = set(rs.addresses)
    rs.nat, rs.filter = _iptables_rules(sets, cluster_cidr, masquerade_all)
    return rs


def _iptables_rules(sets: dict[str, set[str]], cluster_cidr: str, masquerade_all: bool) -> tuple[list[str], list[str]]:
    """upstream's writeIptablesRules, in its order."""
    nat: list[str] = []
    filt: list[str] = []
    for name, table, src, dst, match, proto in SET_RULES:
        if not sets[name]:
            continue
        rule = f"-A {src}" + (f" -p {proto}" if proto else "") + \
            f" -m comment --comment {_comment(name)} -m set --match-set {name} {match} -j {dst}"
        (filt if table == "filter" else nat).append(rule)
    if sets[CLUSTER_IP]:
        head = f"-A {KUBE_SERVICES} -m comment --comment {_comment(CLUSTER_IP)} -m set --match-set {CLUSTER_IP}"
        source = "" if masquerade_all else f" ! -s {cluster_cidr}"
        nat.append(f"{head} dst,dst{source} -j {KUBE_MARK_MASQ}")

    def external_ip_rules(head: str) -> None:
        # Accept off-machine traffic (not from a bridge port, not from the node) to external
        # IPs, and traffic to external IPs that happen to be local.
        nat.append(f"{head} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT")
        nat.append(f"{head} -m addrtype --dst-type LOCAL -j ACCEPT")

    if sets[EXTERNAL_IP]:
        head = (f"-A {KUBE_SERVICES} -m comment --comment {_comment(EXTERNAL_IP)} "
                f"-m set --match-set {EXTERNAL_IP} dst,dst")
        nat.append(f"{head} -j {KUBE_MARK_MASQ}")
        external_ip_rules(head)
    if sets[EXTERNAL_IP_LOCAL]:
        external_ip_rules(f"-A {KUBE_SERVICES} -m comment --comment {_comment(EXTERNAL_IP_LOCAL)} "
                          f"-m set --match-set {EXTERNAL_IP_LOCAL} dst,dst")
    nat.append(f"-A {KUBE_SERVICES} -m addrtype --dst-type LOCAL -j {KUBE_NODE_PORT}")
    nat.append(f"-A {KUBE_LOAD_BALANCER} -j {KUBE_MARK_MASQ}")
    filt.append(f"-A {KUBE_SOURCE_RANGES_FIREWALL} -j DROP")
    for name in (CLUSTER_IP, LOAD_BALANCER):  # acceptIPVSTraffic: last in KUBE-SERVICES
        if sets[name]:
            nat.append(f"-A {KUBE_SERVICES} -m set --match-set {name} dst,dst -j ACCEPT")
    mark = f"{MASQ_MARK}/{MASQ_MARK}"
    filt += [
        f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" -m mark --mark {mark} -j ACCEPT',
        f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack '
        "--ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A {KUBE_NODE_PORT} -m comment --comment {_comment(HEALTH_CHECK_NODE_PORT)} "
        f"-m set --match-set {HEALTH_CHECK_NODE_PORT} dst -j ACCEPT",
    ]
    # Keep host ports off the Service IPs on kube-ipvs0 (kubernetes#72236).
    for name, match in ((LOAD_BALANCER, "dst,dst"), (CLUSTER_IP, "dst,dst"), (EXTERNAL_IP, "dst,dst"),
                        (EXTERNAL_IP_LOCAL, "dst,dst"), (HEALTH_CHECK_NODE_PORT, "dst")):
        filt.append(f"-A {KUBE_IPVS_FILTER} -m set --match-set {name} {match} -j RETURN")
    filt.append(f"-A {KUBE_IPVS_FILTER} -m conntrack --ctstate NEW -m set --match-set {IPVS_IPS} dst -j REJECT")
    nat += [
        f"-A {KUBE_POSTROUTING} -m mark ! --mark {mark} -j RETURN",
        f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {MASQ_MARK}",
        f'-A {KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE '
        "--random-fully",
        f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {MASQ_MARK}",
    ]
    return nat, filt


# -- the kernel's IPVS table -----------------------------------------------------------------------
def parse_save(text: str) -> dict[tuple[str, str, int], tuple[VirtualServer, dict[str, int]]]:
    """``ipvsadm -Sn`` -> {(proto, ip, port): (virtual server without reals, {real: weight})}."""
    out: dict[tuple[str, str, int], tuple[VirtualServer, dict[str, int]]] = {}
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) < 3 or tokens[1] not in FLAG_PROTO:
            continue  # fwmark services are not ours
        proto = FLAG_PROTO[tokens[1]]
        ip, _, port = tokens[2].rpartition(":")
        key = (proto, ip, int(port))
        opts = dict(zip(tokens[3::2], tokens[4::2], strict=False))
        if tokens[0] == "-A":
            out[key] = (VirtualServer(proto, ip, int(port), opts.get("-s", "wlc"), int(opts.get("-p", 0))), {})
        elif tokens[0] == "-a" and key in out:
            out[key][1][opts.get("-r", "")] = int(opts.get("-w", 1))
    return out


def diff_commands(current: dict[tuple[str, str, int], tuple[VirtualServer, dict[str, int]]],
                  desired: dict[tuple[str, str, int], VirtualServer]) -> list[str]:
    """``ipvsadm -R`` lines that turn ``current`` into ``desired``: deletions of real servers
    first (a client never meets a server on its way out as a new pick), then additions."""
    out: list[str] = []
    for key in sorted(current.keys() - desired.keys()):
        vs, _ = current[key]
        out.append(f"-D {PROTO_FLAG[vs.protocol]} {vs.address}")
    for key in sorted(desired):
        want = desired[key]
        flag = PROTO_FLAG[want.protocol]
        have = current.get(key)
        reals: dict[str, int] = {}
        if have is None:
            out.append(want.add_line("-A"))
        else:
            old, reals = have
            if (old.scheduler, old.persistence) != (want.scheduler, want.persistence):
                out.append(want.add_line("-E"))
        for real in sorted(reals.keys() - set(want.reals)):
            out.append(f"-d {flag} {want.address} -r {real}")
        for real in want.reals:
            if real not in reals:
                out.append(f"-a {flag} {want.address} -r {real} {IP_VS_CONF_MASQ} -w 1")
            elif reals[real] != 1:
                out.append(f"-e {flag} {want.address} -r {real} {IP_VS_CONF_MASQ} -w 1")
    return out


def ipset_text(current: dict[str, set[str]] | None, desired: dict[str, set[str]]) -> str:
    """``ipset restore`` input: every set created if missing; from scratch (flush + add) when
    ``current`` is None, else only the entries that changed."""
    out = []
    for name, (kind, _) in IPSETS.items():
        extra = " range 0-65535" if kind.startswith("bitmap:port") else " family inet hashsize 1024 maxelem 65536"
        out.append(f"create {name} {kind}{extra} comment -exist")
    for name in IPSETS:
        want = desired.get(name, set())
        if current is None:
            out.append(f"flush {name}")
            out += [f"add {name} {e} -exist" for e in sorted(want)]
        else:
            have = current.get(name, set())
            out += [f"del {name} {e} -exist" for e in sorted(have - want)]
            out += [f"add {name} {e} -exist" for e in sorted(want - have)]
    return "\n".join(out) + "\n"


# -- applying -------------------------------------------------------------------------------------
@dataclass
class SyncResult(BaseSyncResult):
    """What one :meth:`Proxier.sync` did.  Its reasons for a full sync: "start", "canary", "ipvs
    canary", "partial ipvsadm failed", "periodic", "forced", "after failure"."""

    servers: int = 0
    ipvs_commands: int = 0
    ipset_lines: int = 0
    iptables_written: bool = False
    addresses_changed: int = 0
    ipvs_s: float = 0.0
    ipset_s: float = 0.0
    iptables_s: float = 0.0


def ipvs_available() -> str:
    """'' when this kernel does IPVS (ip_vs built in or loaded: /proc/net/ip_vs), else why not."""
    if os.path.exists("/proc/net/ip_vs"):
        return ""
    return f"this kernel ({os.uname().release}) has no ip_vs"


def load_ipvs() -> str:
    """Load ip_vs if this kernel has it as a module: '' when IPVS is there afterwards, else why not."""
    if ipvs_available():
        run_in("/proc/self/ns/net", ["modprobe", "ip_vs"], check=False)
    return ipvs_available()


def effective_mode(mode: str, *, load: bool = True) -> tuple[str, str]:
    """The kube-proxy mode a cluster configured with ``mode`` runs, and why it is not ``mode``
    ('' when it is): IPVS falls back to iptables on a kernel without ip_vs, as kube-proxy did
    before 1.29.  ``load``: try to load the module first (kube-proxy does; a command that only
    reports what kube-proxy did must not)."""
    if mode != "ipvs":
        return mode, ""
    why = load_ipvs() if load else ipvs_available()
    return ("iptables", why) if why else (mode, "")


class Proxier(BaseProxier):
    """kube-proxy's IPVS proxier for one node namespace; ``sync(service_ports)`` makes it hold
    exactly the rendered ruleset (see the module docstring)."""

    def __init__(self, netns: str, *, node: str, node_ips: Sequence[str], cluster_cidr: str,
                 scheduler: str = DEFAULT_SCHEDULER, masquerade_all: bool = False, full_sync_every: int = 100,
                 conntrack_cleanup: bool = True, conntrack_bin: str = "conntrack",
                 timeout: float = TOOL_TIMEOUT, netns_path: str | None = None):
        if scheduler not in SCHEDULERS:
            raise ValueError(f"unknown IPVS scheduler {scheduler!r}: one of {', '.join(SCHEDULERS)}")
        super().__init__(netns, netns_path=netns_path, timeout=timeout, full_sync_every=full_sync_every,
                         conntrack_cleanup=conntrack_cleanup, conntrack_bin=conntrack_bin)
        why = load_ipvs()
        if why:
            raise ProxyError(f"IPVS mode: {why}")
        self.node, self.node_ips, self.cluster_cidr = node, list(node_ips), cluster_cidr
        self.scheduler, self.masquerade_all = scheduler, masquerade_all
        self.backend = BACKENDS[DEFAULT_BACKEND]
        self.last: Ruleset | None = None
        self.last_iptables = ""
        self._sysctls_done = False
        self._dummy_index: int | None = None

    def render(self, service_ports: Iterable[ServicePort]) -> Ruleset:
        return render(service_ports, node=self.node, node_ips=self.node_ips, cluster_cidr=self.cluster_cidr,
                      scheduler=self.scheduler, masquerade_all=self.masquerade_all)

    def kernel_servers(self) -> dict[tuple[str, str, int], tuple[VirtualServer, dict[str, int]]]:
        return parse_save(self.run(["ipvsadm", "-Sn"]).stdout.decode())

    def canary_present(self) -> bool:
        return self.run([self.backend.iptables, "-w", "5", "-t", "mangle", "-S", KUBE_PROXY_CANARY],
                        check=False).returncode == 0

    def _ensure_sysctls(self) -> None:
        if self._sysctls_done:
            return
        for key, value in SYSCTLS:
            kernel.sysctl(key, value, netns=self.path)
        self._sysctls_done = True

    def _ensure_addresses(self, wanted: set[str], last: set[str] | None) -> int:
        """kube-ipvs0 holds exactly ``wanted``: compared with the kernel's addresses (``last``
        None), or with the last sync's, one netlink batch either way."""
        with kernel.Namespace.at(self.path) as ns:
            if last is None or self._dummy_index is None:
                if ns.link(DUMMY) is None:
                    with ns.batch() as b:
                        b.add_dummy(DUMMY)
                self._dummy_index = ns.index(DUMMY)
                have = {a for a in ns.addresses_of(self._dummy_index) if a.endswith("/32")}
            else:
                have = {f"{ip}/32" for ip in last}
            want = {f"{ip}/32" for ip in wanted}
            if have == want:
                return 0
            with ns.batch() as b:
                for cidr in sorted(have - want):
                    b.delete_address(self._dummy_index, cidr)
                for cidr in sorted(want - have):
                    b.add_address(self._dummy_index, cidr)
            return len(have ^ want)

    def sync(self, service_ports: Iterable[ServicePort]) -> SyncResult:
        t0 = time.perf_counter()
        full, reason = self.need_full_sync or self.last is None, self._full_reason or "start"
        if not full and self._partials >= self.full_sync_every:
            full, reason = True, "periodic"
        if not full and not self.canary_present():
            full, reason = True, "canary"
        if not full and self.last.servers:
            # The IPVS table's canary: one of the last sync's virtual servers, asked for by
            # itself (a flush with `ipvsadm -C` takes them all).
            vs = self.last.servers[min(self.last.servers)]
            if self.run(["ipvsadm", "-Ln", PROTO_FLAG[vs.protocol], vs.address], check=False).returncode != 0:
                full, reason = True, "ipvs canary"
        result = SyncResult(full=full, reason=reason if full else "partial")
        ruleset = self.render(service_ports)
        result.render_s = time.perf_counter() - t0
        try:
            self._ensure_sysctls()
            # Sets first (the iptables rules name them), then the rules, then the addresses and
            # virtual servers the rules let traffic reach.
            t = time.perf_counter()
            text = ipset_text(None if full else self.last.ipsets, ruleset.ipsets)
            result.ipset_lines = text.count("\n")
            self.run(["ipset", "restore"], text.encode())
            result.ipset_s = time.perf_counter() - t
            t = time.perf_counter()
            rules = ruleset.iptables_text(canary=False)
            if full or rules != self.last_iptables:
                saved = self.saved(self.backend)
                jumps = [j for j in JUMPS if not j.present_in(saved)]
                self.run([self.backend.restore, "--noflush", "-w", "5"], ruleset.iptables_text(jumps).encode())
                result.iptables_written = True
                self.last_iptables = rules
            result.iptables_s = time.perf_counter() - t
            result.addresses_changed = self._ensure_addresses(ruleset.addresses, None if full else self.last.addresses)
            t = time.perf_counter()
            desired = ruleset.servers
            if full:
                commands = diff_commands(self.kernel_servers(), desired)
            else:
                # A partial sync works from what the last sync applied; should the kernel's
                # table differ (someone ran ipvsadm), the restore fails and a full sync follows.
                commands = diff_commands({k: (vs, dict.fromkeys(vs.reals, 1)) for k, vs in self.last.servers.items()},
                                         desired)
            if commands:
                try:
                    self.run(["ipvsadm", "-R"], ("\n".join(commands) + "\n").encode())
                except ProxyError:
                    if full:
                        raise
                    result.full, result.reason = True, "partial ipvsadm failed"
                    commands = diff_commands(self.kernel_servers(), desired)
                    self.run(["ipvsadm", "-R"], ("\n".join(commands) + "\n").encode())
            result.ipvs_commands, result.servers = len(commands), len(desired)
            result.ipvs_s = time.perf_counter() - t
        except (ProxyError, kernel.KernelError, OSError):
            self.force_full_sync("after failure")
            raise
        return self.finish_sync(ruleset, result, udp_changed(self.last, ruleset), t0)

    def cleanup(self) -> None:
        """upstream's CleanupLeftovers for IPVS: the jumps and chains, every virtual server,
        kube-ipvs0, then the ipsets (which the rules held)."""
        saved = self.saved(self.backend)
        out: list[str] = []
        for table, chains in (("filter", FILTER_CHAINS), ("nat", NAT_CHAINS)):
            ours = [c for c in (*chains, KUBE_PROXY_CANARY) if c in saved[table].chains]
            body = [f"-D {j.chain} {j.args()}" for j in JUMPS if j.table == table and j.present_in(saved)]
            if ours or body:
                out += [f"*{table}", *[f":{c} - [0:0]" for c in ours], *body, *[f"-X {c}" for c in ours], "COMMIT"]
        if KUBE_PROXY_CANARY in saved["mangle"].chains:
            out += ["*mangle", f":{KUBE_PROXY_CANARY} - [0:0]", f"-X {KUBE_PROXY_CANARY}", "COMMIT"]
        if out:
            self.run([self.backend.restore, "--noflush", "-w", "5"], ("\n".join(out) + "\n").encode())
        commands = [f"-D {PROTO_FLAG[vs.protocol]} {vs.address}" for vs, _ in self.kernel_servers().values()]
        if commands:
            self.run(["ipvsadm", "-R"], ("\n".join(commands) + "\n").encode())
        with kernel.Namespace.at(self.path) as ns, ns.batch() as b:
            b.delete_link(DUMMY)
        present = set(self.run(["ipset", "list", "-n"]).stdout.decode().split())
        if present & IPSETS.keys():
            self.run(["ipset", "restore"], "".join(f"destroy {n}\n" for n in IPSETS if n in present).encode())
        self.last, self.last_iptables, self._dummy_index = None, "", None
        self.force_full_sync("start")


__all__ = ["DEFAULT_SCHEDULER", "DUMMY", "IPSETS", "JUMPS", "SCHEDULERS", "Proxier", "Ruleset", "SyncResult",
           "VirtualServer", "diff_commands", "effective_mode", "ipset_text", "ipvs_available", "load_ipvs",
           "parse_save", "render"]
