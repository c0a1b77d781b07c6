"""kube-proxy's iptables mode, the pure half: Service ports in, the rules upstream's proxier
would write out; :mod:`proxy.iptables_sync` applies them to a node.

After upstream's ``pkg/proxy/iptables/proxier.go`` (syncProxyRules and
writeServiceToEndpointRules; endpoint choice after ``pkg/proxy/topology.go``
CategorizeEndpoints): :func:`render` (or a :class:`Renderer`, which remembers what it
rendered) gives a :class:`Ruleset`: every rule of the filter and nat tables that kube-proxy
owns, with upstream's chain names (``KUBE-SVC-`` + the first 16 characters of
base32(sha256(servicePortName + protocol)), and likewise ``KUBE-SVL-``, ``KUBE-EXT-``,
``KUBE-FW-``; ``KUBE-SEP-`` hashes ``servicePortName + protocol + "ip:port"``), upstream's
comments, rule order and probability strings (``%0.10f`` of 1/n), and upstream's
iptables-restore layout (:meth:`Ruleset.restore_text`), full or partial.  Upstream walks a Go
map, so its order of services in KUBE-SERVICES is random; here it is the order given.

Not modelled: health-check NodePorts, nfacct counters, topology hints, nodePortAddresses
other than "all", IPv6, load-balancer ipMode Proxy.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from netsim.kernel import netfilter
from proxy.model import Endpoint, ServicePort, categorize_endpoints, traffic_policy
from proxy.proxier import UDPTrack

# -- upstream's names -----------------------------------------------------------------------
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_PROXY_CANARY = "KUBE-PROXY-CANARY"
KUBE_FIREWALL = "KUBE-FIREWALL"  # kubeletFirewallChain: the anti-martian rule, only with localhost NodePorts

SVC_PREFIX, SVL_PREFIX, FW_PREFIX = "KUBE-SVC-", "KUBE-SVL-", "KUBE-FW-"
EXT_PREFIX, SEP_PREFIX = "KUBE-EXT-", "KUBE-SEP-"
SERVICE_CHAIN_PREFIXES = (SVC_PREFIX, SVL_PREFIX, SEP_PREFIX, FW_PREFIX, EXT_PREFIX)

# 1 << --iptables-masquerade-bit (14), printed as upstream prints it (fmt "%#08x"); iptables-save
# shows it back as 0x4000.
MASQ_MARK = "0x00004000"
LARGE_CLUSTER_ENDPOINTS_THRESHOLD = 1000  # above this many endpoints, per-endpoint comments are left out

FILTER_TOP = (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL)
NAT_TOP = (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ)
CANARY_TABLES = ("mangle", "nat", "filter")
# The top-level chains that hold per-service rules (the others hold fixed ones).
SERVICE_FED_TOP = (("nat", "KUBE-SERVICES"), ("nat", "KUBE-NODEPORTS"), ("filter", "KUBE-SERVICES"),
                   ("filter", "KUBE-EXTERNAL-SERVICES"), ("filter", "KUBE-PROXY-FIREWALL"))


@dataclass(frozen=True)
class Jump:
    """A rule in a built-in chain that sends packets into one of kube-proxy's chains."""

    table: str
    target: str
    chain: str  # the built-in chain the rule lives in
    comment: str
    extra: tuple[str, ...] = ()

    def args(self) -> str:
        parts = list(self.extra)
        if self.comment:
            parts += ["-m", "comment", "--comment", f'"{self.comment}"']
        return " ".join([*parts, "-j", self.target])

    def present_in(self, saved: netfilter.Saved) -> bool:
        """Whether iptables-save shows this jump (as kube-proxy writes it) in its built-in chain."""
        return self.args() in saved[self.table].rules(self.chain)


_NEW = ("-m", "conntrack", "--ctstate", "NEW")
# upstream's iptablesJumpChains, then iptablesKubeletJumpChains, in that order; each is
# prepended (-I) when missing, so the last one handled ends up first in its chain.
JUMPS = (
    Jump("filter", KUBE_EXTERNAL_SERVICES, "INPUT", "kubernetes externally-visible service portals", _NEW),
    Jump("filter", KUBE_EXTERNAL_SERVICES, "FORWARD", "kubernetes externally-visible service portals", _NEW),
    Jump("filter", KUBE_NODEPORTS, "INPUT", "kubernetes health check service ports"),
    Jump("filter", KUBE_SERVICES, "FORWARD", "kubernetes service portals", _NEW),
    Jump("filter", KUBE_SERVICES, "OUTPUT", "kubernetes service portals", _NEW),
    Jump("filter", KUBE_FORWARD, "FORWARD", "kubernetes forwarding rules"),
    Jump("filter", KUBE_PROXY_FIREWALL, "INPUT", "kubernetes load balancer firewall", _NEW),
    Jump("filter", KUBE_PROXY_FIREWALL, "OUTPUT", "kubernetes load balancer firewall", _NEW),
    Jump("filter", KUBE_PROXY_FIREWALL, "FORWARD", "kubernetes load balancer firewall", _NEW),
    Jump("nat", KUBE_SERVICES, "OUTPUT", "kubernetes service portals"),
    Jump("nat", KUBE_SERVICES, "PREROUTING", "kubernetes service portals"),
    Jump("nat", KUBE_POSTROUTING, "POSTROUTING", "kubernetes postrouting rules"),
)
KUBELET_JUMPS = (
    Jump("filter", KUBE_FIREWALL, "INPUT", ""),
    Jump("filter", KUBE_FIREWALL, "OUTPUT", ""),
)


# -- names ----------------------------------------------------------------------------------
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_B32_PAIRS = [_B32[i >> 5] + _B32[i & 31] for i in range(1024)]


def _b32_16(digest: bytes) -> str:
    """The first 16 characters of base32(digest): its first 80 bits, 10 bits at a time."""
    n = int.from_bytes(digest[:10], "big")
    t = _B32_PAIRS
    return (t[n >> 70] + t[(n >> 60) & 1023] + t[(n >> 50) & 1023] + t[(n >> 40) & 1023]
            + t[(n >> 30) & 1023] + t[(n >> 20) & 1023] + t[(n >> 10) & 1023] + t[n & 1023])


@functools.lru_cache(maxsize=1 << 17)
def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """upstream's portProtoHash: 16 characters of base32(sha256(name + protocol))."""
    return _b32_16(hashlib.sha256((service_port_name + protocol).encode()).digest())


def service_chain(prefix: str, service_port_name: str, protocol: str) -> str:
    return prefix + port_proto_hash(service_port_name, protocol)


def endpoint_chain(service_port_name: str, protocol: str, endpoint: str) -> str:
    """upstream's servicePortEndpointChainName: KUBE-SEP- and base32(sha256(name + protocol + "ip:port"))[:16]."""
    return SEP_PREFIX + _b32_16(hashlib.sha256((service_port_name + protocol + endpoint).encode()).digest())


@functools.lru_cache(maxsize=4096)
def probability(n: int) -> str:
    """upstream's computeProbability: 1/n as Go's %0.10f prints it."""
    return f"{1.0 / n:0.10f}"


def is_service_chain(name: str) -> bool:
    return name.startswith(SERVICE_CHAIN_PREFIXES)


# -- rendering ------------------------------------------------------------------------------
@dataclass(eq=False)
class ServiceRules:
    """One service port's share of the ruleset.  ``top`` are its rules in the top-level chains
    (rewritten on every sync), as (table, chain, line); ``chains`` its own nat chains (KUBE-EXT/FW/SVC/
    SVL/SEP), in upstream's order of declaration, each with its rule lines."""

    key: str
    top: list[tuple[str, str, str]]
    chains: dict[str, list[str]]
    udp: UDPTrack | None = None

    def same_chains(self, other: ServiceRules | None) -> bool:
        return other is not None and (other is self or other.chains == self.chains)


@dataclass(frozen=True)
class Options:
    node: str
    node_ip: str | None
    cluster_cidr: str
    masquerade_all: bool = False
    localhost_nodeports: bool = True
    conntrack_tcp_liberal: bool = False


def _quote(text: str) -> str:
    return f'"{text}"'


def render_service(sp: ServicePort, opts: Options, large: bool) -> ServiceRules | None:
    """The rules of one service port, in the order upstream writes them; None for a headless one."""
    if sp.cluster_ip is None:
        return None
    name, proto = sp.key, sp.proto
    h = port_proto_hash(name, proto)
    svc_ch, svl_ch, ext_ch, fw_ch = SVC_PREFIX + h, SVL_PREFIX + h, EXT_PREFIX + h, FW_PREFIX + h
    tp = traffic_policy(sp, opts.node)
    ext_local, int_local = tp.external_local, tp.internal_local
    cluster_eps, local_eps, reachable, has_eps = tp.cluster_endpoints, tp.local_endpoints, tp.reachable, \
        tp.has_endpoints
    uses_cluster_chain, uses_local_chain, uses_ext_chain = tp.uses_cluster_chain, tp.uses_local_chain, \
        tp.uses_external_chain
    internal_chain, has_internal = (svl_ch if int_local else svc_ch), tp.has_internal
    external_policy_chain, has_external = (svl_ch if ext_local else svc_ch), tp.has_external
    lb_chain = ext_ch
    uses_fw = has_eps and bool(sp.load_balancer_ips) and bool(sp.source_ranges)
    if uses_fw:
        lb_chain = fw_ch

    int_target = int_comment = ext_target = ext_comment = ""
    if not has_eps:
        int_target = ext_target = "REJECT"
        int_comment = ext_comment = _quote(f"{name} has no endpoints")
    else:
        if not has_internal:
            int_target, int_comment = "DROP", _quote(f"{name} has no local endpoints")
        if not has_external:
            ext_target, ext_comment = "DROP", _quote(f"{name} has no local endpoints")

    top: list[tuple[str, str, str]] = []
    port = sp.port
    match = f"-m {proto} -p {proto}"
    nat_svc, ext_svc = ("nat", KUBE_SERVICES), ("filter", KUBE_EXTERNAL_SERVICES)
    # Capture the clusterIP.
    if has_internal:
        top.append((*nat_svc, f'-A {KUBE_SERVICES} -m comment --comment "{name} cluster IP" {match} '
                              f"-d {sp.cluster_ip} --dport {port} -j {internal_chain}"))
    else:
        top.append(("filter", KUBE_SERVICES, f"-A {KUBE_SERVICES} -m comment --comment {int_comment} {match} "
                                             f"-d {sp.cluster_ip} --dport {port} -j {int_target}"))
    # Capture externalIPs.
    for ip in sp.external_ips:
        if has_eps:
            top.append((*nat_svc, f'-A {KUBE_SERVICES} -m comment --comment "{name} external IP" {match} '
                                  f"-d {ip} --dport {port} -j {ext_ch}"))
        if not has_external:
            top.append((*ext_svc, f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {ext_comment} {match} "
                                  f"-d {ip} --dport {port} -j {ext_target}"))
    # Capture load-balancer ingress.
    for ip in sp.load_balancer_ips:
        if has_eps:
            top.append((*nat_svc, f'-A {KUBE_SERVICES} -m comment --comment "{name} loadbalancer IP" {match} '
                                  f"-d {ip} --dport {port} -j {lb_chain}"))
        if uses_fw:
            top.append(("filter", KUBE_PROXY_FIREWALL,
                        f'-A {KUBE_PROXY_FIREWALL} -m comment --comment "{name} traffic not accepted by {fw_ch}" '
                        f"{match} -d {ip} --dport {port} -j DROP"))
    if not has_external:
        for ip in sp.load_balancer_ips:
            top.append((*ext_svc, f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {ext_comment} {match} "
                                  f"-d {ip} --dport {port} -j {ext_target}"))
    # Capture nodeports.
    if sp.node_port:
        if has_eps:
            top.append(("nat", KUBE_NODEPORTS, f"-A {KUBE_NODEPORTS} -m comment --comment {name} {match} "
                                               f"--dport {sp.node_port} -j {ext_ch}"))
        if not has_external:
            top.append((*ext_svc, f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {ext_comment} "
                                  f"-m addrtype --dst-type LOCAL {match} --dport {sp.node_port} -j {ext_target}"))

    chains: dict[str, list[str]] = {}
    # Internal traffic: masquerade what comes from off the cluster (or everything).
    if has_internal:
        head = f'-A {internal_chain} -m comment --comment "{name} cluster IP" {match} -d {sp.cluster_ip} --dport {port}'
        if opts.masquerade_all:
            chains.setdefault(internal_chain, []).append(f"{head} -j {KUBE_MARK_MASQ}")
        elif opts.cluster_cidr:
            chains.setdefault(internal_chain, []).append(f"{head} ! -s {opts.cluster_cidr} -j {KUBE_MARK_MASQ}")
    # External traffic: every external destination goes through the EXT chain.
    declared: list[str] = []
    ext_rules: list[str] = []
    if uses_ext_chain:
        declared.append(ext_ch)
        if not ext_local:
            ext_rules.append(f'-A {ext_ch} -m comment --comment "masquerade traffic for {name} external destinations" '
                             f"-j {KUBE_MARK_MASQ}")
        else:
            if opts.cluster_cidr:
                ext_rules.append(f'-A {ext_ch} -m comment --comment "pod traffic for {name} external destinations" '
                                 f"-s {opts.cluster_cidr} -j {svc_ch}")
            ext_rules.append(f'-A {ext_ch} -m comment --comment "masquerade LOCAL traffic for {name} external '
                             f'destinations" -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}')
            ext_rules.append(f'-A {ext_ch} -m comment --comment "route LOCAL traffic for {name} external '
                             f'destinations" -m addrtype --src-type LOCAL -j {svc_ch}')
        if has_external:
            ext_rules.append(f"-A {ext_ch} -j {external_policy_chain}")
    fw_rules: list[str] = []
    if uses_fw:
        declared.append(fw_ch)
        head = f'-A {fw_ch} -m comment --comment "{name} loadbalancer IP"'
        allow_from_node = False
        node_ip = ipaddress.ip_address(opts.node_ip) if opts.node_ip else None
        for cidr in sp.source_ranges:
            net = ipaddress.ip_network(cidr.strip(), strict=False)
            fw_rules.append(f"{head} -s {net} -j {ext_ch}")
            allow_from_node = allow_from_node or (node_ip is not None and node_ip in net)
        if allow_from_node:
            fw_rules += [f"{head} -s {ip} -j {ext_ch}" for ip in sp.load_balancer_ips]
        fw_rules.append(f'-A {fw_ch} -m comment --comment "other traffic to {name} will be dropped by '
                        f'{KUBE_PROXY_FIREWALL}"')
    own: dict[str, list[str]] = {}
    for ch, rules in ((ext_ch, ext_rules), (fw_ch, fw_rules)):
        if ch in declared:
            own[ch] = rules
    # Per-endpoint chain names, computed once: id(endpoint) -> (address, KUBE-SEP chain).
    sep = {}
    for e in reachable:
        address = f"{e.ip}:{e.port}"
        sep[id(e)] = (address, endpoint_chain(name, proto, address))
    if uses_cluster_chain:
        own[svc_ch] = chains.get(svc_ch, []) + _endpoint_rules(sp, svc_ch, cluster_eps, sep, large)
    if uses_local_chain:
        own[svl_ch] = chains.get(svl_ch, []) + _endpoint_rules(sp, svl_ch, local_eps, sep, large)
    recent = sp.affinity_timeout
    for e in reachable:
        address, ch = sep[id(e)]
        base = f"-A {ch}" if large else f"-A {ch} -m comment --comment {name}"
        dnat = f"{base} -m recent --name {ch} --set" if recent else base
        own[ch] = [f"{base} -s {e.ip} -j {KUBE_MARK_MASQ}", f"{dnat} {match} -j DNAT --to-destination {address}"]

    udp = None
    if proto == "udp":
        udp = UDPTrack((sp.cluster_ip, *sp.load_balancer_ips, *sp.external_ips), port, sp.node_port,
                       frozenset(e.ip for e in sp.endpoints if e.serving))
    return ServiceRules(name, top, own, udp)


def _endpoint_rules(sp: ServicePort, chain: str, endpoints: list[Endpoint], sep: dict[int, tuple[str, str]],
                    large: bool) -> list[str]:
    """upstream's writeServiceToEndpointRules: affinity first, then one probabilistic jump per endpoint."""
    out = []
    name = sp.key
    if sp.affinity_timeout:
        for e in endpoints:
            address, ch = sep[id(e)]
            head = f"-A {chain}" if large else f'-A {chain} -m comment --comment "{name} -> {address}"'
            out.append(f"{head} -m recent --name {ch} --rcheck --seconds {sp.affinity_timeout} --reap -j {ch}")
    n = len(endpoints)
    for i, e in enumerate(endpoints, 1):
        address, ch = sep[id(e)]
        head = f"-A {chain}" if large else f'-A {chain} -m comment --comment "{name} -> {address}"'
        if i < n:
            # Each rule is a probabilistic match; the final one always matches.
            head += f" -m statistic --mode random --probability {probability(n - i + 1)}"
        out.append(f"{head} -j {ch}")
    return out


def global_rules(opts: Options) -> tuple[list[str], list[str], list[str], list[str]]:
    """(filter rules before the services, filter rules after them, nat rules before, nat tail)."""
    mark = f"{MASQ_MARK}/{MASQ_MARK}"
    nat_head = [
        f"-A {KUBE_POSTROUTING} -m mark ! --mark {mark} -j RETURN",
        # Clear the mark to avoid re-masquerading if the packet re-traverses the network stack.
        f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {MASQ_MARK}",
        f'-A {KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE '
        "--random-fully",
        f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {MASQ_MARK}",
    ]
    filter_head = []
    if opts.localhost_nodeports:
        filter_head.append(f'-A {KUBE_FIREWALL} -m comment --comment "block incoming localnet connections" '
                           "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP")
    destinations = "-m addrtype --dst-type LOCAL" + ("" if opts.localhost_nodeports else " ! -d 127.0.0.0/8")
    nat_tail = [f'-A {KUBE_SERVICES} -m comment --comment "kubernetes service nodeports; NOTE: this must be the last '
                f'rule in this chain" {destinations} -j {KUBE_NODEPORTS}']
    filter_tail = []
    if not opts.conntrack_tcp_liberal:
        filter_tail.append(f"-A {KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP")
    filter_tail += [
        f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" -m mark --mark {mark} -j ACCEPT',
        f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack '
        "--ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]
    return filter_head, filter_tail, nat_head, nat_tail


@dataclass(eq=False)
class Ruleset:
    """kube-proxy's whole share of the filter and nat tables for one set of Service ports."""

    options: Options
    services: dict[str, ServiceRules]  # by ServicePortName string, in render order
    large_cluster_mode: bool
    filter_head: list[str]
    filter_tail: list[str]
    nat_head: list[str]
    nat_tail: list[str]
    _top: dict[tuple[str, str], list[str]] | None = field(default=None, repr=False)

    @property
    def jumps(self) -> tuple[Jump, ...]:
        return JUMPS + (KUBELET_JUMPS if self.options.localhost_nodeports else ())

    def top_chains(self, table: str) -> tuple[str, ...]:
        if table == "filter":
            return FILTER_TOP + ((KUBE_FIREWALL,) if self.options.localhost_nodeports else ())
        return NAT_TOP

    def top_rules(self) -> dict[tuple[str, str], list[str]]:
        """(table, top-level chain) -> its rule lines, in order (computed once)."""
        if self._top is None:
            top: dict[tuple[str, str], list[str]] = {("filter", c): [] for c in self.top_chains("filter")}
            top.update({("nat", c): [] for c in NAT_TOP})
            for table, lines in (("filter", self.filter_head), ("nat", self.nat_head)):
                for line in lines:
                    top[(table, line.split(" ", 2)[1])].append(line)
            for rules in self.services.values():
                for table, chain, line in rules.top:
                    top[(table, chain)].append(line)
            for table, lines in (("filter", self.filter_tail), ("nat", self.nat_tail)):
                for line in lines:
                    top[(table, line.split(" ", 2)[1])].append(line)
            self._top = top
        return self._top

    def top_rules_keys(self) -> list[tuple[str, str]]:
        return [("filter", c) for c in self.top_chains("filter")] + [("nat", c) for c in NAT_TOP]

    def chains(self, table: str) -> dict[str, list[str]]:
        """Every chain of ``table`` kube-proxy owns -> its rule lines (``-A CHAIN ...``), in order."""
        out = {chain: list(lines) for (t, chain), lines in self.top_rules().items() if t == table}
        if table == "nat":
            for rules in self.services.values():
                for ch, own in rules.chains.items():
                    out[ch] = list(own)
        return out

    def rules(self, table: str, chain: str) -> list[str]:
        return self.chains(table).get(chain, [])

    def service_chains(self) -> dict[str, str]:
        """Each service-owned nat chain -> the ServicePortName it belongs to."""
        return {ch: key for key, rules in self.services.items() for ch in rules.chains}

    def restore_text(self, *, full: bool = True, changed_services: Iterable[str] | None = None,
                     stale_chains: Iterable[str] = (), jumps: Iterable[Jump] | None = None,
                     canary: bool | None = None, skip_top: Iterable[tuple[str, str]] = ()) -> str:
        """Input for ``iptables-restore --noflush``, laid out as upstream's: chain lines, then
        rules service by service, then ``-X`` of stale chains, then the KUBE-NODEPORTS tail.
        Full: every chain declared and written.  With ``changed_services``: only those service
        ports' own chains, and every top-level chain but those in ``skip_top`` ((table, chain)
        pairs known to be unchanged; upstream rewrites them all).  ``stale_chains`` are
        flushed and deleted.  ``jumps`` (default: all of them on a full restore, none on a
        partial one) are inserted at the head of their built-in chains, and ``canary``
        (default: on a full restore) declares KUBE-PROXY-CANARY in mangle, nat and filter."""
        partial = changed_services is not None
        full = full and not partial
        write = set(changed_services or ())
        skip = set() if full else set(skip_top)
        if jumps is None:
            jumps = self.jumps if full else ()
        jumps = list(jumps)
        if canary is None:
            canary = full
        stale = list(stale_chains)
        out: list[str] = []
        if canary:
            out += ["*mangle", f":{KUBE_PROXY_CANARY} - [0:0]", "COMMIT"]
        # filter: chain lines, jumps, rules
        body = [f":{c} - [0:0]" for c in self.top_chains("filter") if ("filter", c) not in skip]
        if canary:
            body.append(f":{KUBE_PROXY_CANARY} - [0:0]")
        body += [f"-I {j.chain} {j.args()}" for j in jumps if j.table == "filter"]
        body += [line for line in self.filter_head if ("filter", line.split(" ", 2)[1]) not in skip]
        if any(k not in skip for k in SERVICE_FED_TOP if k[0] == "filter"):
            for rules in self.services.values():
                body += [line for t, chain, line in rules.top if t == "filter" and (t, chain) not in skip]
        body += [line for line in self.filter_tail if ("filter", line.split(" ", 2)[1]) not in skip]
        if body:
            out += ["*filter", *body, "COMMIT"]
        # nat: chain lines (top-level, then each written service's, then stale), jumps, rules
        body = [f":{c} - [0:0]" for c in NAT_TOP if ("nat", c) not in skip]
        if canary:
            body.append(f":{KUBE_PROXY_CANARY} - [0:0]")
        for key, rules in self.services.items():
            if full or key in write:
                body += [f":{ch} - [0:0]" for ch in rules.chains]
        body += [f":{ch} - [0:0]" for ch in stale]
        body += [f"-I {j.chain} {j.args()}" for j in jumps if j.table == "nat"]
        body += [line for line in self.nat_head if ("nat", line.split(" ", 2)[1]) not in skip]
        if any(k not in skip for k in SERVICE_FED_TOP if k[0] == "nat"):
            for key, rules in self.services.items():
                body += [line for t, chain, line in rules.top if t == "nat" and (t, chain) not in skip]
                if full or key in write:
                    for own in rules.chains.values():
                        body += own
        else:
            for key in write:
                for own in self.services[key].chains.values():
                    body += own
        body += [f"-X {ch}" for ch in stale]
        body += [line for line in self.nat_tail if ("nat", line.split(" ", 2)[1]) not in skip]
        if body:
            out += ["*nat", *body, "COMMIT"]
        out.append("")
        return "\n".join(out)

    def rule_count(self) -> int:
        return sum(len(v) for t in ("filter", "nat") for v in self.chains(t).values())


class Renderer:
    """:func:`render` with a memory: a service port whose definition and endpoints are those
    of the last render gets the very same :class:`ServiceRules` back, unrendered (so a sync
    of 10k Services re-renders only what changed, and finds it by identity).  The same
    ServicePort object (and endpoints tuple) as last time is found by id; an equal one built
    afresh, by value."""

    def __init__(self, *, node: str, node_ips: Sequence[str], cluster_cidr: str, masquerade_all: bool = False,
                 localhost_nodeports: bool = True, conntrack_tcp_liberal: bool = False):
        self.options = Options(node=node, node_ip=next(iter(node_ips), None), cluster_cidr=cluster_cidr,
                               masquerade_all=masquerade_all, localhost_nodeports=localhost_nodeports,
                               conntrack_tcp_liberal=conntrack_tcp_liberal)
        self._by_value: dict[tuple, ServiceRules | None] = {}
        # id(ServicePort) -> (the ServicePort, its endpoints, large mode, rules); holding the
        # object keeps its id from being reused.
        self._by_id: dict[int, tuple] = {}
        self._large = False

    def render(self, service_ports: Iterable[ServicePort],
               on_service: Callable[[ServiceRules], None] | None = None) -> Ruleset:
        """The ruleset; ``on_service`` is called with each service port's rules as soon as they
        are ready (the Proxier streams a full sync's restore input while rendering)."""
        sps = list(service_ports)
        total = 0
        for sp in sps:
            if sp.cluster_ip is not None:
                total += len(sp.endpoints)
        large = total > LARGE_CLUSTER_ENDPOINTS_THRESHOLD
        by_id, by_value = self._by_id, self._by_value
        new_by_id: dict[int, tuple] = {}
        new_by_value: dict[tuple, ServiceRules | None] = {}
        services: dict[str, ServiceRules] = {}
        for sp in sps:
            sp_id = id(sp)
            hit = by_id.get(sp_id)
            if hit is None or hit[0] is not sp or hit[1] is not sp.endpoints or hit[2] is not large:
                rules = by_value.get((sp, sp.endpoints, large), False)
                if rules is False:
                    rules = render_service(sp, self.options, large)
                hit = (sp, sp.endpoints, large, rules)
            new_by_id[sp_id] = hit
            rules = hit[3]
            if rules is not None:
                services[rules.key] = rules
                if on_service is not None:
                    on_service(rules)
        if len(new_by_id) != len(by_id) or new_by_id.keys() != by_id.keys():
            # Value keys only for what is new since last time (hashing all 10k costs ~50 ms).
            for sp_id, (sp, eps, lg, rules) in new_by_id.items():
                if sp_id not in by_id or by_id[sp_id][0] is not sp:
                    new_by_value[(sp, eps, lg)] = rules
            for sp_id, (sp, eps, lg, rules) in by_id.items():
                if new_by_id.get(sp_id, (None,))[0] is not sp:
                    new_by_value[(sp, eps, lg)] = rules  # gone this time: kept one round, found by value
        self._by_id, self._by_value = new_by_id, new_by_value
        return Ruleset(self.options, services, large, *global_rules(self.options))


def render(service_ports: Iterable[ServicePort], *, node: str, node_ips: Sequence[str], cluster_cidr: str,
           masquerade_all: bool = False, localhost_nodeports: bool = True,
           conntrack_tcp_liberal: bool = False) -> Ruleset:
    """kube-proxy's filter and nat rules for these Service ports on ``node`` (pure).
    ``node_ips[0]`` is the node IP upstream compares loadBalancerSourceRanges with;
    ``cluster_cidr`` is the local-traffic detector (detect-local-mode ClusterCIDR; "" for
    none); ``localhost_nodeports`` and ``conntrack_tcp_liberal`` as upstream's
    --iptables-localhost-nodeports (default true) and the nf_conntrack_tcp_be_liberal sysctl."""
    return Renderer(node=node, node_ips=node_ips, cluster_cidr=cluster_cidr, masquerade_all=masquerade_all,
                    localhost_nodeports=localhost_nodeports, conntrack_tcp_liberal=conntrack_tcp_liberal
                    ).render(service_ports)


__all__ = [
    "JUMPS", "KUBELET_JUMPS", "MASQ_MARK", "Jump", "Renderer", "Ruleset", "ServiceRules", "categorize_endpoints",
    "endpoint_chain", "port_proto_hash", "probability", "render", "render_service", "service_chain",
]
