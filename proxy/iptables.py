"""kube-proxy's iptables mode, rendered as upstream's proxier renders it and applied to a node.

Two halves, after upstream's ``pkg/proxy/iptables/proxier.go`` (syncProxyRules and
writeServiceToEndpointRules; endpoint choice after ``pkg/proxy/topology.go``
CategorizeEndpoints; stale UDP flows after ``pkg/proxy/conntrack`` CleanStaleEntries):

* :func:`render` -- pure: Service ports in, a :class:`Ruleset` out: every rule of the filter
  and nat tables that kube-proxy owns, with upstream's chain names (``KUBE-SVC-`` + the first
  16 characters of base32(sha256(servicePortName + protocol)), and likewise ``KUBE-SVL-``,
  ``KUBE-EXT-``, ``KUBE-FW-``; ``KUBE-SEP-`` hashes ``servicePortName + protocol + "ip:port"``),
  upstream's comments, rule order and probability strings (``%0.10f`` of 1/n), and
  upstream's iptables-restore layout (:meth:`Ruleset.restore_text`).  Upstream walks a Go
  map, so its order of services in KUBE-SERVICES is random; here it is the order given.
* :class:`Proxier` -- holds the last ruleset applied in one node namespace and syncs to a new
  one with ONE ``iptables-restore --noflush`` run from a thread standing in that namespace.
  Partial syncs as upstream: the chains of service ports whose rules did not change are
  neither declared (which would flush them) nor rewritten; the top-level chains always are
  (unless ``skip_unchanged_top_level``); chains that went away are flushed and deleted.  A
  full sync on the first call, when the canary is gone, after a failure, and every
  ``full_sync_every`` partial syncs.  The jumps from the built-in chains (upstream's
  iptablesJumpChains, done there with an ``iptables -C``/``-I`` pair each) and the
  ``KUBE-PROXY-CANARY`` chains (upstream's iptables Monitor: mangle, nat, filter) go into the
  same restore on a full sync, after one ``iptables-save`` says which jumps exist and which
  stale service chains a previous run left.  Only kube-proxy's chains are named, so
  FLANNEL-*, CNI-* and the rest of the tables stay as they are.

Where this differs from upstream, on purpose: a service port counts as changed when its
rendered chains differ (upstream: when its Service or EndpointSlices changed), and a partial
sync knows stale chains from its last ruleset instead of an iptables-save; the mangle canary
is checked on each sync with one ``iptables -S`` (upstream polls it every syncPeriod); a
partial restore that fails (someone deleted our chains) is followed at once by a full sync;
a full sync streams its input while rendering (nat first, each service port's chain lines
just before its rules: the same rules, and the rendering hidden behind the restore's own
parsing).  Not modelled: health-check NodePorts, nfacct counters, topology hints,
nodePortAddresses other than "all", IPv6, load-balancer ipMode Proxy.

Backend: ``iptables-legacy`` by default, chosen by the numbers of ``bench/proxy_sync.py`` on
this kernel (6.18, iptables 1.8.9).  10k Services x 3 endpoints is 110k rules, upstream's
data point (110k rules: 203 s through iptables-nft, 1.6 s through iptables-legacy):

  ================================  ===============  ===================
  10k Services (110k rules)         legacy           nft
  ================================  ===============  ===================
  full sync (raw restore alone)     1.9 s (1.9 s)    > 120 s, stopped
  one endpoint change, upstream     0.77 s           1.16 s
  ... with skip_unchanged_top_level 0.59 s           0.16 s
  1k Services: full / one change    0.12 s / 60 ms   0.53 s / 96 ms
  ================================  ===============  ===================

nft's cost grows far faster than legacy's (the trend upstream saw): one nft transaction of
110k rules did not finish in 120 s (a lone run took 295 s), while the same rules added 11k
at a time take ~19 s.  Any change through iptables-legacy-restore reads and rewrites the
whole nat table (~0.6 s at 110k rules), so legacy cannot make a 150 ms endpoint change at
10k Services; nft can come close (0.16 s) only with the opt-in skip of unchanged top-level
chains, and then pays minutes for each full sync (start, flush, every ``full_sync_every``).
Legacy wins every figure in upstream's mode.  The first packet of a connection walks
KUBE-SERVICES linearly: the last of 10k Services costs ~65 us more than the first (legacy;
~160 us through nft's xt compat).  Legacy and nft rules can share a namespace (the kernel
runs both; flannel here uses the system ``iptables``, nft): NAT binds once per connection
and the masquerade mark is a packet mark, so flannel's ``-m mark --mark 0x4000/0x4000 -j
RETURN`` sees kube-proxy's mark either way.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from netsim import kernel
from proxy.model import Endpoint, ServicePort, categorize_endpoints, traffic_policy

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
BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})


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


# -- which endpoints ------------------------------------------------------------------------
# -- rendering ------------------------------------------------------------------------------
@dataclass(frozen=True)
class UDPTrack:
    """What stale-flow cleanup needs of a UDP service port: its IPs, NodePort and serving endpoint IPs."""

    ips: tuple[str, ...]
    port: int
    node_port: int
    serving: frozenset[str]


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


def _global_rules(opts: Options) -> tuple[list[str], list[str], list[str], list[str]]:
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
        return Ruleset(self.options, services, large, *_global_rules(self.options))


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


# -- applying -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Backend:
    name: str
    iptables: str
    save: str
    restore: str


BACKENDS = {
    "legacy": Backend("legacy", "iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore"),
    "nft": Backend("nft", "iptables-nft", "iptables-nft-save", "iptables-nft-restore"),
}
DEFAULT_BACKEND = "legacy"
TOOL_TIMEOUT = 600.0
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


class ProxyError(RuntimeError):
    pass


@dataclass
class SyncResult:
    """What one :meth:`Proxier.sync` did, and how long each step took (seconds)."""

    full: bool
    reason: str  # "start", "canary", "periodic", "forced", "after failure", "partial restore failed", "partial"
    services: int = 0  # service ports with rules
    services_written: int = 0  # service ports whose own chains were declared and rewritten
    chains_written: int = 0
    chains_deleted: int = 0
    jumps_added: int = 0
    top_chains_skipped: int = 0  # with skip_unchanged_top_level
    lines: int = 0  # restore input lines
    restore_bytes: int = 0
    conntrack_deleted: int = 0
    render_s: float = 0.0
    canary_s: float = 0.0
    save_s: float = 0.0
    restore_s: float = 0.0
    conntrack_s: float = 0.0
    total_s: float = 0.0
    partial_failure: str = ""


def run_in(netns_path: str, argv: list[str], stdin: bytes = b"", timeout: float = TOOL_TIMEOUT,
           check: bool = True) -> subprocess.CompletedProcess:
    """Run a tool in the namespace at ``netns_path``: a child forked while this thread stands in it."""
    with kernel.entered(netns_path):
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False, env=_ENV)
        except subprocess.TimeoutExpired as exc:
            raise ProxyError(f"{argv[0]} timed out after {timeout}s") from exc
    if check and proc.returncode != 0:
        raise ProxyError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()}")
    return proc


def _read_sysctl(path: str, key: str) -> str | None:
    with kernel.entered(path):
        try:
            with open("/proc/sys/" + key.replace(".", "/")) as f:
                return f.read().strip()
        except OSError:
            return None


def _write_sysctl(path: str, key: str, value: str) -> None:
    with kernel.entered(path), open("/proc/sys/" + key.replace(".", "/"), "w") as f:
        f.write(value)


@dataclass
class _Saved:
    """What iptables-save shows of the tables: rules of the built-in chains, and chain names."""

    builtin: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    chains: dict[str, set[str]] = field(default_factory=dict)


def _parse_save(text: str) -> _Saved:
    saved = _Saved()
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            saved.chains.setdefault(table, set())
        elif line.startswith(":"):
            saved.chains[table].add(line[1:].split(" ", 1)[0])
        elif line.startswith("-A "):
            chain, _, rest = line[3:].partition(" ")
            if chain in BUILTIN_CHAINS and "-j KUBE-" in rest:
                saved.builtin.setdefault((table, chain), []).append(rest)
    return saved


def _has_jump(saved: _Saved, jump: Jump) -> bool:
    want = jump.args()
    return any(rule == want for rule in saved.builtin.get((jump.table, jump.chain), []))


class Proxier:
    """kube-proxy's iptables proxier for one node namespace (``netns``: its name under
    /run/netns).  ``sync(service_ports)`` makes the namespace's tables hold exactly the
    rendered ruleset; see the module docstring for full and partial syncs."""

    def __init__(self, netns: str, *, node: str, node_ips: Sequence[str], cluster_cidr: str,
                 backend: str = DEFAULT_BACKEND, masquerade_all: bool = False, localhost_nodeports: bool = True,
                 full_sync_every: int = 100, conntrack_cleanup: bool = True, conntrack_bin: str = "conntrack",
                 skip_unchanged_top_level: bool = False, timeout: float = TOOL_TIMEOUT,
                 netns_path: str | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"unknown iptables backend {backend!r}: one of {sorted(BACKENDS)}")
        self.netns = netns
        self.path = netns_path or kernel.netns_path(netns)
        self.backend = BACKENDS[backend]
        self.full_sync_every = full_sync_every
        self.conntrack_cleanup = conntrack_cleanup
        # Upstream rewrites every top-level chain on every sync; with this, a partial sync
        # leaves out those whose rules are what the last sync wrote (KUBE-SERVICES is 10k
        # rules at 10k Services, most of a one-endpoint change's restore).
        self.skip_unchanged_top_level = skip_unchanged_top_level
        self.conntrack_bin = conntrack_bin
        self.timeout = timeout
        if localhost_nodeports:
            # As upstream: NodePorts on 127.0.0.1 need route_localnet (KUBE-FIREWALL guards it).
            _write_sysctl(self.path, "net.ipv4.conf.all.route_localnet", "1")
        liberal = _read_sysctl(self.path, "net.netfilter.nf_conntrack_tcp_be_liberal") not in (None, "0")
        self.renderer = Renderer(node=node, node_ips=node_ips, cluster_cidr=cluster_cidr,
                                 masquerade_all=masquerade_all, localhost_nodeports=localhost_nodeports,
                                 conntrack_tcp_liberal=liberal)
        self.last: Ruleset | None = None
        self.last_restore_text = ""
        self.need_full_sync = True
        self._full_reason = "start"
        self._partials = 0

    # -- tools ---------------------------------------------------------------------------
    def run(self, argv: list[str], stdin: bytes = b"", check: bool = True) -> subprocess.CompletedProcess:
        return run_in(self.path, argv, stdin, self.timeout, check)

    def iptables(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run([self.backend.iptables, "-w", "5", *args], check=check)

    def save(self) -> str:
        return self.run([self.backend.save]).stdout.decode(errors="replace")

    def restore(self, text: str) -> None:
        self.run([self.backend.restore, "--noflush", "--counters", "-w", "5"], text.encode())

    def canary_present(self) -> bool:
        return self.iptables("-t", "mangle", "-S", KUBE_PROXY_CANARY, check=False).returncode == 0

    # -- syncing -------------------------------------------------------------------------
    def force_full_sync(self, reason: str = "forced") -> None:
        self.need_full_sync = True
        self._full_reason = reason

    def sync(self, service_ports: Iterable[ServicePort]) -> SyncResult:
        t0 = time.perf_counter()
        sps = list(service_ports)
        full, reason = self.need_full_sync, self._full_reason
        canary_s = 0.0
        if not full and self._partials >= self.full_sync_every:
            full, reason = True, "periodic"
        if not full:
            present = self.canary_present()
            canary_s = time.perf_counter() - t0
            if not present:
                full, reason = True, "canary"
        result = SyncResult(full=full, reason=reason if full else "partial", canary_s=canary_s)
        if full:
            ruleset = self._full_streaming(sps, result)
        else:
            t = time.perf_counter()
            ruleset = self.renderer.render(sps)
            result.render_s = time.perf_counter() - t
            try:
                self._partial(ruleset, result)
            except ProxyError as exc:
                # Someone changed the tables under us (deleted a chain we rely on): start over.
                result.partial_failure = str(exc)
                result.full, result.reason = True, "partial restore failed"
                self._full(ruleset, result)
        return finish_sync(self, ruleset, result, _udp_changed(self.last, ruleset), t0)

    def _saved_state(self, result: SyncResult) -> _Saved:
        t = time.perf_counter()
        try:
            return _parse_save(self.save())
        except ProxyError:
            self.force_full_sync("after failure")
            raise
        finally:
            result.save_s += time.perf_counter() - t

    def _full(self, ruleset: Ruleset, result: SyncResult) -> None:
        """A full sync of an already rendered ruleset, in upstream's layout."""
        saved = self._saved_state(result)
        jumps = [j for j in ruleset.jumps if not _has_jump(saved, j)]
        active = ruleset.service_chains()
        stale = sorted(c for c in saved.chains.get("nat", ()) if is_service_chain(c) and c not in active)
        text = ruleset.restore_text(full=True, stale_chains=stale, jumps=jumps, canary=True)
        result.services_written = len(ruleset.services)
        result.chains_written = len(active)
        result.chains_deleted = len(stale)
        result.jumps_added = len(jumps)
        self._apply(text, result)

    def _full_streaming(self, sps: list[ServicePort], result: SyncResult) -> Ruleset:
        """A full sync that renders while iptables-restore already reads: the restore input is
        written service by service as each is rendered, so Python's rendering overlaps the
        restore's parsing.  The same rules as :meth:`Ruleset.restore_text` (full), laid out
        for streaming: nat first, each service port's chain lines just before its rules (a
        jump's target must be declared before the jump), then filter and the mangle canary."""
        saved = self._saved_state(result)
        opts = self.renderer.options
        jumps = [j for j in JUMPS + (KUBELET_JUMPS if opts.localhost_nodeports else ()) if not _has_jump(saved, j)]
        with tempfile.TemporaryFile() as err:
            t = time.perf_counter()
            with kernel.entered(self.path):
                proc = subprocess.Popen([self.backend.restore, "--noflush", "--counters", "-w", "5"],
                                        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=_ENV)
            timer = threading.Timer(self.timeout, proc.kill)
            timer.start()
            parts: list[str] = []
            pending: list[str] = []
            size = 0
            render_s = 0.0

            def write(lines: list[str]) -> None:
                nonlocal size
                chunk = "\n".join(lines) + "\n"
                pending.append(chunk)
                size += len(chunk)
                if size >= 1 << 16:
                    flush()

            def flush() -> None:
                nonlocal size
                if pending:
                    data = "".join(pending)
                    parts.append(data)
                    pending.clear()
                    size = 0
                    proc.stdin.write(data.encode())

            def on_service(rules: ServiceRules) -> None:
                lines = [f":{ch} - [0:0]" for ch in rules.chains]
                lines += [line for table, _, line in rules.top if table == "nat"]
                for own in rules.chains.values():
                    lines += own
                write(lines)

            try:
                try:
                    head = ["*nat", *(f":{c} - [0:0]" for c in NAT_TOP), f":{KUBE_PROXY_CANARY} - [0:0]"]
                    head += [f"-I {j.chain} {j.args()}" for j in jumps if j.table == "nat"]
                    nat_head = _global_rules(opts)[2]
                    write(head + nat_head)
                    r0 = time.perf_counter()
                    ruleset = self.renderer.render(sps, on_service=on_service)
                    render_s = time.perf_counter() - r0
                    active = ruleset.service_chains()
                    stale = sorted(c for c in saved.chains.get("nat", ()) if is_service_chain(c) and c not in active)
                    tail = [f":{c} - [0:0]" for c in stale] + [f"-X {c}" for c in stale] + ruleset.nat_tail + ["COMMIT"]
                    tail += ["*filter", *(f":{c} - [0:0]" for c in ruleset.top_chains("filter")),
                             f":{KUBE_PROXY_CANARY} - [0:0]"]
                    tail += [f"-I {j.chain} {j.args()}" for j in jumps if j.table == "filter"]
                    tail += ruleset.filter_head
                    for rules in ruleset.services.values():
                        tail += [line for table, _, line in rules.top if table == "filter"]
                    tail += ruleset.filter_tail + ["COMMIT", "*mangle", f":{KUBE_PROXY_CANARY} - [0:0]", "COMMIT"]
                    write(tail)
                    flush()
                    proc.stdin.close()
                except BrokenPipeError:
                    pass  # the restore died (error or timeout): its exit status says which
                returncode = proc.wait()
            finally:
                timer.cancel()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            elapsed = time.perf_counter() - t
            result.render_s += render_s
            result.restore_s += elapsed - render_s  # what the restore cost beyond rendering
            text = "".join(parts)
            result.lines, result.restore_bytes = text.count("\n"), len(text)
            if returncode != 0:
                err.seek(0)
                message = err.read().decode(errors="replace").strip()
                self.force_full_sync("after failure")
                if returncode < 0 and not message:
                    message = f"killed after {self.timeout}s"
                raise ProxyError(f"{self.backend.restore} failed ({returncode}): {message}")
            self.last_restore_text = text
            result.services_written = len(ruleset.services)
            result.chains_written = len(active)
            result.chains_deleted = len(stale)
            result.jumps_added = len(jumps)
            return ruleset

    def _partial(self, ruleset: Ruleset, result: SyncResult) -> None:
        last = self.last
        assert last is not None
        changed = [k for k, r in ruleset.services.items() if not r.same_chains(last.services.get(k))]
        # Chain names hash the service port's name: only a changed or removed one can leave chains behind.
        stale = []
        for key, old in last.services.items():
            new = ruleset.services.get(key)
            if new is not old:
                stale += [c for c in old.chains if new is None or c not in new.chains]
        skip: list[tuple[str, str]] = []
        if self.skip_unchanged_top_level:
            if list(ruleset.services) == list(last.services) and all(
                    r.top == last.services[k].top for k, r in ruleset.services.items() if r is not last.services[k]):
                skip = list(ruleset.top_rules_keys())  # same services in the same order, same top rules: all alike
            else:
                old = last.top_rules()
                skip = [k for k, rules in ruleset.top_rules().items() if old.get(k) == rules]
        text = ruleset.restore_text(changed_services=changed, stale_chains=stale, skip_top=skip)
        result.top_chains_skipped = len(skip)
        result.services_written = len(changed)
        result.chains_written = sum(len(ruleset.services[k].chains) for k in changed)
        result.chains_deleted = len(stale)
        self._apply(text, result)

    def _apply(self, text: str, result: SyncResult) -> None:
        t = time.perf_counter()
        result.lines = text.count("\n")
        result.restore_bytes = len(text)
        if not text.strip():  # a partial sync that found nothing to write
            self.last_restore_text = text
            return
        try:
            self.restore(text)
        except ProxyError:
            if result.full:
                self.force_full_sync("after failure")
            raise
        finally:
            result.restore_s += time.perf_counter() - t
        self.last_restore_text = text

    # -- conntrack -----------------------------------------------------------------------
    def clean_stale_conntrack(self, ruleset: Ruleset | None = None) -> int:
        """upstream's CleanStaleEntries for UDP: every UDP flow to a service IP (cluster,
        external, load-balancer) or NodePort whose reply source is not a serving endpoint of
        that service is deleted, so its next datagram is load-balanced afresh.  One
        ``conntrack -L`` and one ``conntrack -D`` per stale (destination, reply source)."""
        ruleset = ruleset or self.last
        if ruleset is None:
            return 0
        by_ip: dict[tuple[str, int], frozenset[str]] = {}
        by_node_port: dict[int, frozenset[str]] = {}
        for rules in ruleset.services.values():
            u = rules.udp
            if u is None:
                continue
            for ip in u.ips:
                by_ip[(ip, u.port)] = u.serving
            if u.node_port:
                by_node_port[u.node_port] = u.serving
        if not by_ip and not by_node_port:
            return 0
        listing = self.run([self.conntrack_bin, "-L", "-p", "udp"], check=False)
        filters: set[tuple[str, ...]] = set()
        for line in listing.stdout.decode(errors="replace").splitlines():
            flow = _parse_flow(line)
            if flow is None:
                continue
            orig_dst, orig_dport, reply_src = flow
            serving = by_ip.get((orig_dst, orig_dport))
            if serving is not None and reply_src not in serving:
                filters.add(("--orig-dst", orig_dst, "--orig-port-dst", str(orig_dport), "--reply-src", reply_src))
            serving = by_node_port.get(orig_dport)
            if serving is not None and reply_src not in serving:
                filters.add(("--orig-port-dst", str(orig_dport), "--reply-src", reply_src))
        deleted = 0
        for f in sorted(filters):
            proc = self.run([self.conntrack_bin, "-D", "-p", "udp", *f], check=False)
            out = (proc.stdout + proc.stderr).decode(errors="replace")
            if proc.returncode != 0 and "0 flow entries" not in out:
                raise ProxyError(f"conntrack -D {' '.join(f)} failed: {out.strip()}")
            deleted += _deleted_count(out)
        return deleted

    # -- teardown ------------------------------------------------------------------------
    def cleanup(self) -> None:
        """upstream's CleanupLeftovers: the jumps out of the built-in chains, then every
        kube-proxy chain in nat and filter, and the canaries; nothing else is touched.  Unlike
        upstream it takes KUBE-FIREWALL too: there is no kubelet here to share it with."""
        saved = _parse_save(self.save())
        out: list[str] = []
        for table in ("filter", "nat"):
            body = [f"-D {j.chain} {j.args()}" for j in JUMPS + KUBELET_JUMPS
                    if j.table == table and _has_jump(saved, j)]
            ours = sorted(c for c in saved.chains.get(table, ()) if c.startswith("KUBE-") and
                          (c in FILTER_TOP + NAT_TOP + (KUBE_FIREWALL, KUBE_PROXY_CANARY) or is_service_chain(c)))
            if body or ours:
                out += [f"*{table}", *[f":{c} - [0:0]" for c in ours], *body, *[f"-X {c}" for c in ours], "COMMIT"]
        if KUBE_PROXY_CANARY in saved.chains.get("mangle", ()):
            out += ["*mangle", f":{KUBE_PROXY_CANARY} - [0:0]", f"-X {KUBE_PROXY_CANARY}", "COMMIT"]
        if out:
            self.restore("\n".join(out) + "\n")
        self.last = None
        self.force_full_sync("start")


def finish_sync(proxier, ruleset, result, udp_changed: bool, t0: float):
    """The end of every proxier's sync (iptables, nftables, IPVS): ``ruleset`` is now the last
    one applied, the next sync may be partial, stale UDP flows go when UDP service ports changed."""
    proxier.last = ruleset
    proxier.need_full_sync, proxier._full_reason = False, ""
    proxier._partials = 0 if result.full else proxier._partials + 1
    if proxier.conntrack_cleanup and udp_changed:
        t = time.perf_counter()
        result.conntrack_deleted = proxier.clean_stale_conntrack(ruleset)
        result.conntrack_s = time.perf_counter() - t
    result.services = len(ruleset.services)
    result.total_s = time.perf_counter() - t0
    return result


def _udp_changed(previous: Ruleset | None, current: Ruleset) -> bool:
    """Whether any UDP service port's IPs or serving endpoints differ from the last sync."""
    old = {} if previous is None else {k: r.udp for k, r in previous.services.items() if r.udp is not None}
    new = {k: r.udp for k, r in current.services.items() if r.udp is not None}
    return old != new


def _parse_flow(line: str) -> tuple[str, int, str] | None:
    """(original destination, original destination port, reply source) of a ``conntrack -L`` line."""
    srcs, dsts, dports = [], [], []
    for token in line.split():
        if token.startswith("src="):
            srcs.append(token[4:])
        elif token.startswith("dst="):
            dsts.append(token[4:])
        elif token.startswith("dport="):
            dports.append(token[6:])
    if len(srcs) < 2 or not dsts or not dports:
        return None
    with contextlib.suppress(ValueError):
        return dsts[0], int(dports[0]), srcs[1]
    return None


def _deleted_count(out: str) -> int:
    for line in out.splitlines():
        if "flow entries have been deleted" in line:
            with contextlib.suppress(ValueError, IndexError):
                return int(line.split(":")[-1].split()[0])
    return 0


__all__ = [
    "BACKENDS", "DEFAULT_BACKEND", "JUMPS", "KUBELET_JUMPS", "MASQ_MARK", "Jump", "Proxier", "ProxyError", "Renderer",
    "Ruleset", "ServiceRules", "SyncResult", "categorize_endpoints", "endpoint_chain", "port_proto_hash", "probability",
    "render", "render_service", "run_in", "service_chain",
]
