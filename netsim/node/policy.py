"""NetworkPolicy v1, rendered per node into one nftables table (the policy plugin's dataplane).

Pure functions over the store's objects: :func:`evaluate` says which policies isolate a pod and
which of their rules admit a connection (what ``netsim policy explain`` prints, and the
definition the kernel rules are checked against in the tests); :func:`render` turns the
policies that select the pods of one node into the text of one nftables table
``ip netsim-policy``, applied as one transaction (:class:`Enforcer`).

The table, in the node's namespace, at the ``forward`` hook (priority filter, after kube-proxy's
DNAT: traffic to a Service is judged against the backend pod it was sent to) and, for what
IPVS balances (it sends it out through LOCAL_OUT), at ``output``:

* ``ct state established,related accept`` -- replies of allowed connections, always;
* a new pod is isolated until its rules exist by its gate (netsim.cni.gate), closed in its own
  namespace before it has an address, opened by the agent after :meth:`Enforcer.apply`;
* ``ip saddr vmap @egress`` / ``ip daddr vmap @ingress`` jump to a chain per isolated pod,
  whose rules ``return`` (allowed: go on to the other direction's check) and end in ``drop``.

Same-node pod-to-pod traffic crosses the bridge; br_netfilter (``bridge-nf-call-iptables``,
per namespace, on by default where the module is loaded) hands it to this hook too.  All the
rules of all the policies selecting a pod fold into a few set lookups per direction (see
:func:`render`): peers are pod IPs and ipBlocks (``except`` cut out) in interval sets, one per
distinct port match; named ports are resolved on the destination pod (ingress: the isolated
pod itself; egress: each peer pod, as ``ip . proto . port`` elements); ``endPort`` is a range.
nftables sets rather than iptables chains: a new connection costs a few lookups whatever the
number of policies and peers, and the whole table is replaced atomically, so no packet sees a
half-written policy.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from netsim.kernel.libnft import LibNft
from netsim.model import k8s
from netsim.model.k8s import selector_matches

if TYPE_CHECKING:
    from netsim.api.store import Store

TABLE = "netsim-policy"
FAMILY = "ip"
PROTOCOLS = ("TCP", "UDP", "SCTP")


# -- the semantics ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    ip: str
    labels: dict = field(hash=False, compare=False)
    node: str | None = None
    ports: tuple[tuple[str, str, int], ...] = ()  # (name, protocol, containerPort)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def named_port(self, name: str, protocol: str) -> int | None:
        return next((p for n, proto, p in self.ports if n == name and proto == protocol), None)


def pod_info(pod: dict) -> PodInfo | None:
    ip = (pod.get("status") or {}).get("podIP")
    if not ip or (pod.get("spec") or {}).get("hostNetwork"):
        return None
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return None
    ports = tuple((p["name"], p.get("protocol", "TCP"), int(p["containerPort"]))
                  for c in pod["spec"].get("containers") or [] for p in c.get("ports") or [] if p.get("name"))
    meta = pod["metadata"]
    return PodInfo(meta["namespace"], meta["name"], ip, dict(meta.get("labels") or {}), pod["spec"].get("nodeName"),
                   ports)


def policy_types(policy: dict) -> list[str]:
    """upstream's defaulting (SetDefaults_NetworkPolicy, pkg/apis/networking/v1/defaults.go):
    when policyTypes is unset, Ingress always, Egress when len(spec.egress) != 0, so `egress: []`,
    `egress:` (null) and no egress at all leave Egress out alike."""
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress"] + (["Egress"] if spec.get("egress") else [])


def selects(policy: dict, pod: PodInfo) -> bool:
    return (policy["metadata"]["namespace"] == pod.namespace
            and selector_matches((policy.get("spec") or {}).get("podSelector") or {}, pod.labels))


@dataclass(frozen=True)
class Peer:
    """One peer of a rule, resolved: pod IPs (pods=True) or CIDRs (an ipBlock, except removed)."""

    pods: tuple[PodInfo, ...] = ()
    cidrs: tuple[str, ...] = ()
    is_block: bool = False
    any: bool = False  # a rule without from/to: every source or destination


def _block(block: dict) -> tuple[str, ...]:
    """An ipBlock's CIDR minus its excepts, as CIDRs."""
    nets = [ipaddress.ip_network(block["cidr"], strict=False)]
    for ex in block.get("except") or []:
        exn = ipaddress.ip_network(ex, strict=False)
        out = []
        for n in nets:
            if n.subnet_of(exn):
                continue  # all of it excepted
            out += list(n.address_exclude(exn)) if exn.subnet_of(n) else [n]
        nets = out
    return tuple(str(n) for n in sorted(nets))


def resolve_peers(policy: dict, peers: list[dict] | None, pods: list[PodInfo],
                  namespaces: dict[str, dict]) -> list[Peer]:
    if not peers:
        return [Peer(any=True)]
    ns_of_policy = policy["metadata"]["namespace"]
    out = []
    for peer in peers:
        if peer.get("ipBlock"):
            out.append(Peer(cidrs=_block(peer["ipBlock"]), is_block=True))
            continue
        pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
        chosen = []
        for p in pods:
            if ns_sel is None:
                in_ns = p.namespace == ns_of_policy
            else:
                in_ns = selector_matches(ns_sel, namespaces.get(p.namespace, {}))
            if in_ns and (pod_sel is None or selector_matches(pod_sel, p.labels)):
                chosen.append(p)
        out.append(Peer(pods=tuple(chosen)))
    return out


@dataclass(frozen=True)
class PortMatch:
    protocol: str
    port: int | None = None  # None: every port of the protocol
    end_port: int | None = None
    named: str | None = None  # a named port, resolved on the destination pod


def resolve_ports(ports: list[dict] | None) -> list[PortMatch] | None:
    """None: every port and protocol (no ``ports`` in the rule)."""
    if not ports:
        return None
    out = []
    for p in ports:
        proto = p.get("protocol", "TCP")
        port = p.get("port")
        if isinstance(port, str) and not port.isdigit():
            out.append(PortMatch(proto, named=port))
        elif port is None:
            out.append(PortMatch(proto))
        else:
            out.append(PortMatch(proto, int(port), int(p["endPort"]) if p.get("endPort") else None))
    return out


def _port_ok(matches: list[PortMatch] | None, dst: PodInfo | None, protocol: str, port: int | None) -> bool:
    if matches is None:
        return True
    for m in matches:
        if m.protocol != protocol or port is None:
            continue
        if m.named:
            if dst is not None and dst.named_port(m.named, protocol) == port:
                return True
        elif m.port is None or m.port <= port <= (m.end_port or m.port):
            return True
    return False


def _peer_ok(peers: list[Peer], ip: str) -> bool:
    for peer in peers:
        if peer.any:
            return True
        if peer.is_block and any(ipaddress.ip_address(ip) in ipaddress.ip_network(c) for c in peer.cidrs):
            return True
        if any(p.ip == ip for p in peer.pods):
            return True
    return False


@dataclass
class Verdict:
    allowed: bool
    egress_policies: list[str]  # policies isolating the source for egress ([]: not isolated)
    ingress_policies: list[str]
    egress_rule: str | None = None  # "ns/policy egress[i]" that allowed it
    ingress_rule: str | None = None
    reason: str = ""


def inputs(store: Store) -> tuple[list[dict], list[PodInfo], dict[str, dict]]:
    """What :func:`evaluate` judges with, read from the store: policies, pods, namespace labels."""
    policies = store.list(k8s.prefix("NetworkPolicy"))[0]
    pods = [i for p in store.list(k8s.prefix("Pod"))[0] if (i := pod_info(p)) is not None]
    namespaces = {n["metadata"]["name"]: n["metadata"].get("labels") or {}
                  for n in store.list(k8s.prefix("Namespace"))[0]}
    return policies, pods, namespaces


def evaluate(policies: list[dict], pods: list[PodInfo], namespaces: dict[str, dict], src_ip: str,
             dst_ip: str, protocol: str = "TCP", port: int | None = None, node_ips: Iterable[str] = ()) -> Verdict:
    """Whether a new connection from src_ip to dst_ip:port is allowed, and why."""
    by_ip = {p.ip: p for p in pods}
    src, dst = by_ip.get(src_ip), by_ip.get(dst_ip)
    v = Verdict(True, [], [])
    if src is not None:
        for pol in policies:
            if "Egress" in policy_types(pol) and selects(pol, src):
                v.egress_policies.append(_name(pol))
                for i, rule in enumerate((pol.get("spec") or {}).get("egress") or []):
                    if v.egress_rule is None and _peer_ok(resolve_peers(pol, rule.get("to"), pods, namespaces),
                                                          dst_ip) and _port_ok(resolve_ports(rule.get("ports")),
                                                                               dst, protocol, port):
                        v.egress_rule = f"{_name(pol)} egress[{i}]"
        if v.egress_policies and v.egress_rule is None:
            v.allowed = False
            v.reason = (f"egress from {src.key} is isolated by {', '.join(v.egress_policies)} and no egress rule "
                        f"admits {dst_ip}:{port}/{protocol}")
    if dst is not None:
        for pol in policies:
            if "Ingress" in policy_types(pol) and selects(pol, dst):
                v.ingress_policies.append(_name(pol))
                for i, rule in enumerate((pol.get("spec") or {}).get("ingress") or []):
                    if v.ingress_rule is None and _peer_ok(resolve_peers(pol, rule.get("from"), pods, namespaces),
                                                           src_ip) and _port_ok(resolve_ports(rule.get("ports")),
                                                                                dst, protocol, port):
                        v.ingress_rule = f"{_name(pol)} ingress[{i}]"
        if v.ingress_policies and v.ingress_rule is None and src_ip not in set(node_ips):
            v.allowed = False
            reason = (f"ingress to {dst.key} is isolated by {', '.join(v.ingress_policies)} and no ingress rule "
                      f"admits {src_ip} to port {port}/{protocol}")
            v.reason = f"{v.reason}; {reason}" if v.reason else reason
    return v


def _name(policy: dict) -> str:
    return f"{policy['metadata']['namespace']}/{policy['metadata']['name']}"


# -- rendering -------------------------------------------------------------------------------------
def _h(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


@dataclass
class Table:
    sets: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # name -> (spec, elements)
    chains: dict[str, list[str]] = field(default_factory=dict)
    ingress: dict[str, str] = field(default_factory=dict)  # pod ip -> chain
    egress: dict[str, str] = field(default_factory=dict)

    def add_set(self, name: str, spec: str, elements: list[str]) -> str:
        self.sets[name] = (spec, elements)
        return name

    def text(self, node_ips: list[str]) -> str:
        out = [f"table {FAMILY} {TABLE} {{"]
        out.append(f"  set node-ips {{ type ipv4_addr; {_elements(node_ips)}}}")
        for name, (spec, elements) in self.sets.items():
            out.append(f"  set {name} {{ {spec} {_elements(elements)}}}")
        for name, chains in (("ingress", self.ingress), ("egress", self.egress)):
            jumps = _elements(f"{ip} : jump {chain}" for ip, chain in chains.items())
            out.append(f"  map {name} {{ type ipv4_addr : verdict; {jumps}}}")
        for name, rules in self.chains.items():
            out.append(f"  chain {name} {{")
            out += [f"    {r}" for r in rules]
            out.append("  }")
        checks = ["    ct state established,related accept",
                  "    ip saddr vmap @egress",
                  "    ip daddr vmap @ingress"]
        out += ["  chain forward {", "    type filter hook forward priority filter; policy accept;", *checks, "  }"]
        # IPVS sends the connections it balances out through LOCAL_OUT, not FORWARD; the
        # node's own traffic (sources in @node-ips) is not judged.
        out += ["  chain output {", "    type filter hook output priority filter; policy accept;",
                "    ip saddr @node-ips accept", *checks, "  }", "}"]
        return "\n".join(out) + "\n"


def _elements(items) -> str:
    items = list(items)
    return f"elements = {{ {', '.join(items)} }}; " if items else ""


def _port_key(m: PortMatch, dst: PodInfo | None) -> tuple[str, int | None, int | None] | None:
    """(protocol, first port, last port) of a port match, None ports: every port of the
    protocol; None: a named port the destination does not have."""
    if m.named:
        port = dst.named_port(m.named, m.protocol) if dst else None
        return None if port is None else (m.protocol.lower(), port, port)
    if m.port is None:
        return (m.protocol.lower(), None, None)
    return (m.protocol.lower(), m.port, m.end_port or m.port)


def _port_match(key: tuple[str, int | None, int | None]) -> str:
    proto, lo, hi = key
    if lo is None:
        return f"meta l4proto {proto}"
    return f"meta l4proto {proto} th dport {lo}" + (f"-{hi}" if hi != lo else "")


ANY = "any"


def render(policies: list[dict], pods: list[PodInfo], namespaces: dict[str, dict], local: list[PodInfo],
           node_ips: list[str]) -> Table:
    """The table for the pods in ``local`` (this node's), given every pod and namespace.

    Every rule of every policy that selects a pod is folded into a handful of set lookups, so a
    new connection costs the same with 1 or 1000 policies: the peers allowed on every port
    (one interval set), the peers allowed per distinct port match (one set each), and for egress
    named ports, which resolve per destination pod, one ``ip . proto . port`` set."""
    t = Table()
    for pod in sorted(local, key=lambda p: p.ip):
        for direction in ("Ingress", "Egress"):
            selecting = [pol for pol in policies if direction in policy_types(pol) and selects(pol, pod)]
            if not selecting:
                continue
            chain = f"{direction.lower()}-{_h(pod.key, pod.ip)}"
            addr = "saddr" if direction == "Ingress" else "daddr"
            field_name = "ingress" if direction == "Ingress" else "egress"
            allow_all = False
            any_port: set[str] = set()
            per_port: dict[tuple, set[str] | str] = {}  # port match -> peer addresses, or ANY
            named: set[str] = set()
            for pol in selecting:
                for rule in (pol.get("spec") or {}).get(field_name) or []:
                    peers = resolve_peers(pol, rule.get("from" if direction == "Ingress" else "to"), pods, namespaces)
                    ports = resolve_ports(rule.get("ports"))
                    for peer in peers:
                        addrs = set(peer.cidrs) if peer.is_block else {p.ip for p in peer.pods}
                        if ports is None:
                            if peer.any:
                                allow_all = True
                            else:
                                any_port |= addrs
                            continue
                        for m in ports:
                            if m.named and direction == "Egress":
                                # Resolved on each destination pod: exact ip . proto . port elements.
                                targets = pods if peer.any else [] if peer.is_block else peer.pods
                                named |= {f"{p.ip} . {m.protocol.lower()} . {p.named_port(m.named, m.protocol)}"
                                          for p in targets if p.named_port(m.named, m.protocol) is not None}
                                continue
                            key = _port_key(m, pod if direction == "Ingress" else None)
                            if key is None:
                                continue
                            have = per_port.setdefault(key, set())
                            if peer.any or have == ANY:
                                per_port[key] = ANY
                            else:
                                have |= addrs
            rules = ["ip saddr @node-ips return"] if direction == "Ingress" else []
            if allow_all:
                rules.append("return")
            if any_port:
                name = t.add_set(f"{chain}-all-ports", "type ipv4_addr; flags interval; auto-merge;", sorted(any_port))
                rules.append(f"ip {addr} @{name} return")
            for i, (key, addrs) in enumerate(sorted(per_port.items(), key=lambda kv: repr(kv[0]))):
                if addrs == ANY:
                    rules.append(f"{_port_match(key)} return")
                elif addrs:
                    name = t.add_set(f"{chain}-p{i}", "type ipv4_addr; flags interval; auto-merge;", sorted(addrs))
                    rules.append(f"{_port_match(key)} ip {addr} @{name} return")
            if named:
                name = t.add_set(f"{chain}-named", "type ipv4_addr . inet_proto . inet_service;", sorted(named))
                rules.append(f"ip daddr . meta l4proto . th dport @{name} return")
            rules.append("drop")
            t.chains[chain] = rules
            (t.ingress if direction == "Ingress" else t.egress)[pod.ip] = chain
    return t


# -- applying -----------------------------------------------------------------------------------
class Enforcer:
    """The table of one node, replaced whole in one nftables transaction when it changes."""

    def __init__(self, netns_path: str):
        self.lib = LibNft(netns_path)
        self.last = ""

    def apply(self, text: str) -> bool:
        if text == self.last:
            return False
        # add + delete + define: one transaction, whether the table exists or not.
        self.lib.run(f"add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n{text.rstrip()}\n")
        self.last = text
        return True

    def remove(self) -> None:
        self.lib.run(f"add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n")
        self.last = ""

    def close(self) -> None:
        self.lib.close()
