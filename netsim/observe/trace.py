"""`netsim trace FROM TO --port P`: one packet, built with scapy and sent from the source's
namespace, followed through the cluster.

Before it is sent, every namespace of the cluster gets a packet socket (a capture of every
interface there), every node an nftables rule that sets ``nftrace`` on the traced flow only,
and netlink listeners for what that makes the kernel report (nftables trace events and
iptables-legacy TRACE lines).  After the reply comes back, or the packet stops moving, the
captures (ordered by kernel timestamp), the rules met on each node, the conntrack entries
(the NAT rewrite) and the routes taken are joined into one ordered hop list, ovn-trace style,
with a Hubble-style verdict.  Everything armed is removed before the command returns."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import re
import select
import socket
import struct
import time
from dataclasses import dataclass, field

from netsim import fabric, kernel
from netsim.api import registry
from netsim.api.store import Store
from netsim.cni import gate
from netsim.kernel import libnft, netfilter
from netsim.model import k8s, names
from netsim.model.scenario import gateway_of
from netsim.node import podnet
from netsim.node.calico import felix
from netsim.observe import nftrace, policydrop, probe, routes
from netsim.observe.packets import Flow, Follower, Frame, link_frame, parse_frame, parse_ip

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SCM_TIMESTAMPNS = 35
MARKER_TABLE = "netsim-trace"
IDLE_S = 0.3      # no new capture for this long: the packet has stopped moving
SETTLE_S = 0.03   # after the reply reached the source: the last netlink reports
HOOK_ORDER = {"prerouting": 0, "output": 0, "input": 1, "forward": 1, "postrouting": 2}
NFT_PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
LEGACY_PRIORITY = {"raw": -300, "mangle": -150, "filter": 0, "security": 50}


class TraceError(ValueError):
    pass


@dataclass
class Capture:
    time_ns: int
    netns: str
    ifname: str
    outgoing: bool
    frame: Frame
    raw: bytes


@dataclass
class Hop:
    kind: str                 # capture, rule, conntrack, route
    netns: str
    where: str                # "pod default/client", "node worker1", "underlay", "host client"
    summary: str
    node: str | None = None
    interface: str | None = None
    direction: str | None = None   # in / out (captures)
    note: str = ""                 # DNAT ..., encapsulated ..., decapsulated ...
    detail: dict = field(default_factory=dict)

    def as_dict(self, step: int) -> dict:
        d = {"step": step, "kind": self.kind, "netns": self.netns, "node": self.node, "where": self.where,
             "summary": self.summary}
        for key in ("interface", "direction"):
            if getattr(self, key):
                d[key] = getattr(self, key)
        if self.note:
            d["note"] = self.note
        d.update(self.detail)
        return d


@dataclass
class Result:
    src: str
    dst: str
    protocol: str
    port: int | None
    flow: Flow
    hops: list[Hop]
    reply: list[Hop]
    verdict: dict
    captures: list[Capture]
    elapsed_s: float

    def as_dict(self) -> dict:
        return {"from": self.src, "to": self.dst, "protocol": self.protocol, "port": self.port,
                "packet": {"src": self.flow.src, "sport": self.flow.sport, "dst": self.flow.dst,
                           "dport": self.flow.dport, "ipId": self.flow.ident},
                "hops": [h.as_dict(i) for i, h in enumerate(self.hops, 1)],
                "reply": [h.as_dict(i) for i, h in enumerate(self.reply, 1)],
                "verdict": self.verdict, "elapsedMs": round(self.elapsed_s * 1000, 1)}


# -- where things are ------------------------------------------------------------------------
@dataclass
class Places:
    """Namespace -> what it is, for the hop list."""
    labels: dict[str, str]
    nodes: dict[str, str]            # netns -> node name (pods: the node they run on)
    node_netns: list[str]
    pod_refs: dict[str, str]         # pod netns -> pod/NS/NAME
    pod_ips: dict[str, str] = field(default_factory=dict)  # pod IP -> pod netns
    proxy_arp: dict[tuple[str, str], bool] = field(default_factory=dict)  # (node netns, cali veth) -> on
    owners: dict[str, str] = field(default_factory=dict)  # node IP or tunnel address -> node name
    pod_subnet: str | None = None


def places(cluster: fabric.Cluster, store: Store) -> Places:
    labels, nodes, pod_refs, pod_ips = {cluster.underlay_netns: "underlay"}, {}, {}, {}
    node_netns, owners = [], {}
    for m in cluster.members.values():
        labels[m.netns] = f"{m.kind} {m.name}"
        if m.kind == "node":
            nodes[m.netns] = m.name
            node_netns.append(m.netns)
            owners[m.ip] = m.name
    for seg in cluster.segments:
        owners[str(gateway_of(seg))] = "the underlay's router"
    for obj in store.list(k8s.prefix("Node"))[0]:
        notes = obj["metadata"].get("annotations") or {}
        for key in (felix.IPIP_ADDR, felix.VXLAN_ADDR):
            if notes.get(key):  # Calico's tunnel addresses: the next hops of Felix's tunnel routes
                owners[notes[key]] = obj["metadata"]["name"]
    for pod in store.list(k8s.prefix("Pod"))[0]:
        meta, spec = pod["metadata"], pod.get("spec", {})
        if spec.get("hostNetwork"):
            continue
        netns = podnet.pod_netns(cluster.name, meta["namespace"], meta["name"])
        labels[netns] = f"pod {meta['namespace']}/{meta['name']}"
        pod_refs[netns] = f"pod/{meta['namespace']}/{meta['name']}"
        if (pod.get("status") or {}).get("podIP"):
            pod_ips[pod["status"]["podIP"]] = netns
        if spec.get("nodeName"):
            nodes[netns] = spec["nodeName"]
    return Places(labels, nodes, node_netns, pod_refs, pod_ips, owners=owners,
                  pod_subnet=registry.read_config(store).pod_subnet)


# -- arming -----------------------------------------------------------------------------------
def _marker_rules(flow: Flow) -> str:
    """Mark the traced packet (its IP ID survives NAT) and its answers: by port while no NAT
    is undone, by the connection's original tuple where conntrack knows it.  The chains run
    just after conntrack (-200) and before any NAT or filter."""
    l4 = {6: "tcp", 17: "udp", 132: "sctp"}.get(flow.proto)
    if l4:
        match = [f"ip protocol {l4} ip id {flow.ident}", f"ip protocol {l4} th dport {flow.sport}",
                 f"meta l4proto {l4} ct original ip saddr {flow.src} ct original proto-src {flow.sport}"]
    else:
        match = [f"icmp type echo-request ip id {flow.ident}", f"icmp type echo-reply icmp id {flow.sport}"]
    match.append("icmp type { destination-unreachable, time-exceeded }")  # a REJECT or a router's answer
    rules = "".join(f"    {m} meta nftrace set 1\n" for m in match)
    chains = "".join(f"  chain {hook} {{\n    type filter hook {hook} priority -190; policy accept;\n{rules}  }}\n"
                     for hook in ("prerouting", "output"))
    return f"table ip {MARKER_TABLE} {{\n{chains}}}\n"


class _Nft:
    """libnftables in one namespace, with rule handles in listings."""

    def __init__(self, netns: str):
        self.nft = libnft.LibNft(kernel.netns_path(netns), libnft.OUTPUT_HANDLE | libnft.OUTPUT_STATELESS)

    def run(self, text: str) -> str:
        return self.nft.run(text)

    def close(self) -> None:
        self.nft.close()


class Armed:
    """Everything a trace sets up, torn down by :meth:`close` whatever happened."""

    def __init__(self, all_netns: list[str], node_netns: list[str], flow: Flow):
        self.captures: dict[str, socket.socket] = {}
        self.nft_listeners: dict[str, nftrace.NftTraceListener] = {}
        self.legacy_listeners: dict[str, nftrace.LegacyTraceListener] = {}
        self.nft: dict[str, _Nft] = {}
        try:
            for netns in all_netns:
                s = kernel.socket_in(netns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
                s.setsockopt(socket.SOL_SOCKET, SCM_TIMESTAMPNS, 1)
                s.setblocking(False)
                self.captures[netns] = s
            for netns in node_netns:
                self.nft_listeners[netns] = nftrace.NftTraceListener(netns)
                self.legacy_listeners[netns] = nftrace.LegacyTraceListener(netns)
                nft = self.nft[netns] = _Nft(netns)
                # add + delete: a table left by a killed trace goes (nft 1.0.6 has no "destroy")
                nft.run(f"add table ip {MARKER_TABLE}\ndelete table ip {MARKER_TABLE}\n" + _marker_rules(flow))
        except BaseException:
            self.close()
            raise

    def collect(self, relevant, is_done, deadline: float) -> list[tuple[int, str, str, bool, bytes]]:
        """Read the captures until ``is_done(frames)``, or until no frame ``relevant`` to the
        trace came for IDLE_S (the packet stopped: dropped, or lost)."""
        frames: list[tuple[int, str, str, bool, bytes]] = []
        by_fd = {s.fileno(): (netns, s) for netns, s in self.captures.items()}
        listeners = [*self.nft_listeners.values(), *self.legacy_listeners.values()]
        last = time.monotonic()
        settle_until = None
        while (now := time.monotonic()) < deadline:
            if settle_until is not None and now >= settle_until:
                break
            if settle_until is None and now - last > IDLE_S:
                break
            ready, _, _ = select.select([*by_fd, *listeners], [], [], 0.02)
            for r in ready:
                if isinstance(r, nftrace._Listener):
                    r.drain()
                    continue
                netns, s = by_fd[r]
                while True:
                    try:
                        data, anc, _flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(16))
                    except BlockingIOError:
                        break
                    ts = time.time_ns()
                    for level, kind, payload in anc:
                        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(payload) >= 16:
                            sec, nsec = struct.unpack("=qq", payload[:16])
                            ts = sec * 1_000_000_000 + nsec
                    if addr[0] == "lo":
                        continue
                    data = link_frame(data, addr[3])
                    frames.append((ts, netns, addr[0], addr[2] == PACKET_OUTGOING, data))
                    if relevant(data):
                        last = time.monotonic()
            if settle_until is None and is_done(frames):
                settle_until = time.monotonic() + SETTLE_S
        for listener in listeners:
            listener.drain()
        return frames

    def close(self) -> None:
        for nft in self.nft.values():
            with contextlib.suppress(Exception):  # the namespace may be gone with its cluster
                nft.run(f"delete table ip {MARKER_TABLE}")
            nft.close()
        for listener in [*self.nft_listeners.values(), *self.legacy_listeners.values()]:
            listener.close()
        for s in self.captures.values():
            s.close()
        self.nft.clear()
        self.nft_listeners.clear()
        self.legacy_listeners.clear()
        self.captures.clear()


# -- sending ----------------------------------------------------------------------------------
def source_address(netns: str, dst: str) -> str:
    with kernel.socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((dst, 9))
        except OSError as exc:
            raise TraceError(f"no route from there to {dst}: {exc.strerror}") from None
        return s.getsockname()[0]


def build_packet(flow: Flow) -> bytes:
    """The first packet of the connection, as a client would send it."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP

    ip = IP(src=flow.src, dst=flow.dst, id=flow.ident, ttl=64, flags="DF")
    if flow.proto == 6:
        l4 = TCP(sport=flow.sport, dport=flow.dport, flags="S", seq=random.getrandbits(32), window=64240,
                 options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)])
    elif flow.proto == 17:
        l4 = UDP(sport=flow.sport, dport=flow.dport) / b"netsim-trace\n"
    else:
        l4 = ICMP(type=8, id=flow.sport, seq=1) / b"netsim-trace"
    return bytes(ip / l4)


def send(netns: str, flow: Flow, packet: bytes) -> socket.socket | None:
    """Send through a raw socket in the source's namespace: its kernel routes it, resolves the
    next hop and runs its OUTPUT rules, as for an application's packet (scapy's own L3 send
    would route with the tables of the namespace it was imported in).  For UDP a socket bound
    to the source port takes the reply, so the source does not answer it with an ICMP error."""
    keep = None
    if flow.proto == 17:
        keep = kernel.socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM)
        keep.bind((flow.src, flow.sport))
    with kernel.socket_in(netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(packet, (flow.dst, 0))
    return keep


# -- joining what was seen ------------------------------------------------------------------
def _in_netns(netns: str, argv: list[str]) -> str:
    return netfilter.run(argv, netns=netns, timeout=10, check=False).stdout.decode(errors="replace")


IPTABLES_NFT_TABLES = ("raw", "mangle", "nat", "filter", "security")  # iptables-nft's own table names


@dataclass
class NftRuleset:
    rules: dict[tuple[str, int], str]          # (table, handle) -> rule text
    base: dict[tuple[str, str], tuple[str, int]]  # (table, chain) -> (hook, priority)
    order: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (table, chain) -> handles in order


def parse_nft_listing(text: str) -> NftRuleset:
    rules, base, order = {}, {}, {}
    table = chain = None
    for line in text.splitlines():
        s = line.strip()
        if m := re.match(r"table \S+ (\S+) \{", s):
            table = m.group(1)
        elif m := re.match(r"chain (\S+) \{", s):
            chain = m.group(1)
        elif m := re.match(r"type \S+ hook (\S+) (?:device \S+ )?priority ([^;]+);", s):
            base[(table, chain)] = (m.group(1), _priority(m.group(2)))
        elif (m := re.match(r"(.*\S)\s+# handle (\d+)$", s)) and chain is not None and not s.startswith(
                ("chain ", "table ", "set ", "map ")):
            rules[(table, int(m.group(2)))] = m.group(1)
            order.setdefault((table, chain), []).append(int(m.group(2)))
    return NftRuleset(rules, base, order)


def iptables_nft_text(listing: NftRuleset, saved: dict[tuple[str, str, int], str], table: str, chain: str,
                      handle: int) -> str | None:
    """A rule iptables-nft wrote (Felix's), as iptables-nft-save prints it: nft lists its
    xtables matches only as "xt match set", so the rule is found by its place in the chain."""
    handles = listing.order.get((table, chain), [])
    if handle not in handles:
        return None
    text = saved.get((table, chain, handles.index(handle) + 1))
    return text.removeprefix(f"-A {chain} ") if text else None


def _priority(text: str) -> int:
    m = re.match(r"([a-z]+)?\s*([-+])?\s*(-?\d+)?", text.strip())
    value = NFT_PRIORITIES.get(m.group(1) or "", 0)
    if m.group(3):
        n = int(m.group(3))
        value = value - n if m.group(2) == "-" else value + n if m.group(1) else n
    return value


def parse_iptables_save(text: str) -> dict[tuple[str, str, int], str]:
    """(table, chain, rule number) -> rule; number 0 is the chain's policy."""
    out: dict[tuple[str, str, int], str] = {}
    for name, table in netfilter.parse_save(text).items():
        for chain, rules in table.chains.items():
            out[(name, chain, 0)] = f"policy {table.policies[chain]}"
            for number, rule in enumerate(rules, 1):
                out[(name, chain, number)] = f"-A {chain} {rule}".rstrip()
    return out


def _legacy_priority(table: str, hook: str | None) -> int:
    if table == "nat":
        return -100 if hook in ("prerouting", "output") else 100
    return LEGACY_PRIORITY.get(table, 0)


def describe_events(netns: str, events: list[nftrace.RuleEvent], ifnames: dict[int, str],
                    nft_listing: str) -> None:
    """Fill in each event's rule text and hook (a chain reached by a jump runs in the hook of
    the base chain it was reached from); ``nft_listing`` is the namespace's ruleset with handles."""
    nft_events = [e for e in events if e.source == "nft"]
    legacy = [e for e in events if e.source == "iptables"]
    if nft_events:
        listing = parse_nft_listing(nft_listing)
        xt_saved = None
        hook, prio = None, 0
        for e in nft_events:
            if (e.table, e.chain) in listing.base:
                hook, prio = listing.base[(e.table, e.chain)]
            e.hook, e.extra["priority"] = hook, prio
            if e.kind == "rule" and e.handle is not None:
                e.text = listing.rules.get((e.table, e.handle), f"handle {e.handle}")
                if e.table in IPTABLES_NFT_TABLES:
                    if xt_saved is None:
                        xt_saved = parse_iptables_save(_in_netns(netns, ["iptables-nft-save"]))
                    e.text = iptables_nft_text(listing, xt_saved, e.table, e.chain, e.handle) or e.text
            elif e.kind == "policy":
                e.text = f"policy {e.verdict}"
            else:
                e.text = "return"
    if legacy:
        saved = parse_iptables_save(_in_netns(netns, ["iptables-legacy-save"]))
        for e in legacy:
            e.extra["priority"] = _legacy_priority(e.table, e.hook)
            if e.kind == "rule":
                e.text = saved.get((e.table, e.chain, e.rulenum or 0), f"rule {e.rulenum}")
                e.text = e.text.removeprefix(f"-A {e.chain} ")
                m = re.search(r"(?:^| )-j (\S+)", e.text)
                e.verdict = m.group(1) if m else None
            elif e.kind == "policy":
                e.text = saved.get((e.table, e.chain, 0), "policy")
                e.verdict = e.text.split()[-1]
            else:
                e.text = "return"
    for e in events:
        e.extra["iif"], e.extra["oif"] = ifnames.get(e.iif), ifnames.get(e.oif)


def worth_showing(e: nftrace.RuleEvent) -> bool:
    """Rules that matched, and chain policies that decided something; not the implicit
    returns and accepting policies every packet passes."""
    if e.kind == "return":
        return False
    return not (e.kind == "policy" and (e.verdict or "").lower() == "accept")


def conntrack_entry(netns: str, flow: Flow) -> dict | None:
    proto = {6: "tcp", 17: "udp", 1: "icmp", 132: "sctp"}[flow.proto]
    argv = ["conntrack", "-L", "-p", proto]
    argv += ["--icmp-id", str(flow.sport)] if flow.proto == 1 else ["--sport", str(flow.sport)]
    for line in _in_netns(netns, argv).splitlines():
        tuples = re.findall(r"src=(\S+) dst=(\S+)(?: sport=(\d+) dport=(\d+))?", line)
        if len(tuples) < 2:
            continue
        orig, reply = tuples[0], tuples[1]
        entry = {"original": f"{orig[0]}:{orig[2]} > {orig[1]}:{orig[3]}" if orig[2] else f"{orig[0]} > {orig[1]}",
                 "reply": f"{reply[0]}:{reply[2]} > {reply[1]}:{reply[3]}" if reply[2] else f"{reply[0]} > {reply[1]}"}
        nat = []
        if (reply[0], reply[2]) != (orig[1], orig[3]):
            nat.append(f"DNAT {orig[1]}{':' + orig[3] if orig[3] else ''} -> "
                       f"{reply[0]}{':' + reply[2] if reply[2] else ''}")
        if (reply[1], reply[3]) != (orig[0], orig[2]):
            nat.append(f"SNAT {orig[0]}{':' + orig[2] if orig[2] else ''} -> "
                       f"{reply[1]}{':' + reply[3] if reply[3] else ''}")
        entry["nat"] = nat
        entry["state"] = next((w for w in line.split() if w.isupper() and w.isalpha() and len(w) > 3), "")
        return entry
    return None


def route_of(netns: str, dst: str) -> str:
    out = _in_netns(netns, ["ip", "-o", "route", "get", dst]).strip()
    return re.sub(r"\s+(uid \d+|cache)\b.*$", "", out.splitlines()[0]) if out else "no route"


def table_route(netns: str, dst: str, where: Places) -> routes.Route | None:
    """The main-table route of ``netns`` that ``dst`` matches, named (workload, tunnel, BGP,
    blackhole, ...)."""
    try:
        with kernel.Namespace.open(netns) as ns:
            ifnames = {info["index"]: name for name, info in ns.links().items()}
            entries = ns.route_entries()
    except (OSError, kernel.KernelError):
        return None
    return routes.describe(entries, ifnames, dst, where.pod_subnet, where.owners) or routes.no_route(dst)


def route_hop(netns: str, where: Places, dst: str) -> Hop:
    """The route a node took for ``dst``: `ip route get`'s answer, and the table's route it
    came from, named."""
    hop = Hop("route", netns, where.labels.get(netns, netns), f"route {route_of(netns, dst)}", where.nodes.get(netns))
    matched = table_route(netns, dst, where)
    if matched is not None:
        hop.note = f"{matched.what}: {matched.text}"
        hop.detail["route"] = {"kind": matched.kind, "matched": matched.text, "what": matched.what}
    return hop


# -- the hop list ------------------------------------------------------------------------------
def _event_direction(follow: Follower, e: nftrace.RuleEvent) -> str | None:
    p = parse_ip(e.packet)
    if p is None:
        return None
    d = follow.direction(p)
    if d is None and p.proto == 1 and p.icmp_type in (3, 11):
        return "rev"  # an ICMP error (nft reports no quoted packet); the marker only traces ours
    return d


def _component(e: nftrace.RuleEvent) -> str:
    if e.table.startswith("netsim-policy"):
        return "NetworkPolicy"
    if e.chain.startswith("KUBE-") or e.table == "kube-proxy" or "kube-proxy" in e.text:
        return "kube-proxy"
    if e.chain.startswith("CNI-"):
        return "CNI"
    if e.chain.startswith("cali-"):
        return "Calico (Felix)"
    return f"{e.source} {e.table}"


def rule_hop(netns: str, where: str, node: str | None, e: nftrace.RuleEvent) -> Hop:
    verdict = e.verdict or ""
    if e.target_chain:
        verdict += f" {e.target_chain}"
    summary = f"{e.source} {e.table} {e.chain}: {e.text}"
    if verdict and e.source == "nft" and e.kind == "rule":
        summary += f"  => {verdict}"
    return Hop("rule", netns, where, summary, node, detail={
        "source": e.source, "table": e.table, "chain": e.chain, "hook": e.hook, "rule": e.text,
        "verdict": e.verdict, "component": _component(e), **({"handle": e.handle} if e.handle else {}),
        **({"ruleNumber": e.rulenum} if e.rulenum else {})})


def _nat_notes(p, q) -> list[str]:
    """What NAT changed between two sightings of the packet (``q`` then ``p``).  An ICMP echo
    has no ports: its id is what NAT rewrites beside the addresses."""
    if p.proto == 1:
        notes = [f"DNAT {q.dst} -> {p.dst}"] if p.dst != q.dst else []
        if p.src != q.src:
            notes.append(f"SNAT {q.src} -> {p.src}")
        if p.sport != q.sport and p.icmp_type in (0, 8):
            notes.append(f"echo id {q.sport} -> {p.sport}")
        return notes
    notes = []
    if (p.dst, p.dport) != (q.dst, q.dport):
        notes.append(f"DNAT {q.dst}:{q.dport} -> {p.dst}:{p.dport}")
    if p.src != q.src or p.sport != q.sport:
        notes.append(f"SNAT {q.src}:{q.sport} -> {p.src}:{p.sport}")
    return notes


def capture_hop(c: Capture, previous: Capture | None, where: Places) -> Hop:
    p, f = c.frame.packet, c.frame
    notes = []
    if previous is not None:
        q = previous.frame.packet
        notes += _nat_notes(p, q)
        if f.outer is not None and previous.frame.outer is None:
            notes.append(f"encapsulated: {f.encapsulation()}")
        if f.outer is None and previous.frame.outer is not None:
            notes.append("decapsulated")
        if not c.outgoing and c.ifname.startswith("cali") and previous.netns in where.pod_refs \
                and c.netns in where.node_netns:
            notes.append(_cali_note(c, where))
    detail = {"packet": {"src": p.src, "dst": p.dst, "proto": p.proto_name, "sport": p.sport, "dport": p.dport}}
    if f.outer is not None and f.encap == "ipip":
        detail["outer"] = {"src": f.outer.src, "dst": f.outer.dst, "proto": "IPIP", "encap": "ipip"}
    elif f.outer is not None:
        detail["outer"] = {"src": f.outer.src, "dst": f.outer.dst, "sport": f.outer.sport,
                           "dport": f.outer.dport, "vni": f.vni, "encap": "vxlan"}
    return Hop("capture", c.netns, where.labels.get(c.netns, c.netns), f.summary(), where.nodes.get(c.netns),
               c.ifname, "out" if c.outgoing else "in", "; ".join(notes), detail)


def _cali_note(c: Capture, where: Places) -> str:
    """A pod's packet reaching its node in calico mode: no bridge, the node routes it."""
    proxy_arp = where.proxy_arp.get((c.netns, c.ifname))
    arp = {True: f"proxy ARP on {c.ifname} answers the pod's gateway 169.254.1.1",
           False: f"proxy ARP is off on {c.ifname}"}.get(proxy_arp, "")
    return "routed from the pod's veth, no bridge" + (f" ({arp})" if arp else "")


def build_hops(caps: list[Capture], events: dict[str, list[nftrace.RuleEvent]], where: Places,
               extra: dict[str, list[Hop]]) -> list[Hop]:
    """Captures in time order.  A namespace's PREROUTING and INPUT rules go after the packet
    first arrives there; its FORWARD, OUTPUT and POSTROUTING rules (and ``extra``: conntrack,
    route) just before it first leaves; whatever is left after its last sighting there."""
    hops: list[Hop] = []
    early: dict[str, list[nftrace.RuleEvent]] = {}
    late: dict[str, list[nftrace.RuleEvent]] = {}
    for netns, evs in events.items():
        for e in sorted(evs, key=lambda e: (HOOK_ORDER.get(e.hook or "", 1), e.extra["priority"])):
            (early if e.hook in ("prerouting", "input") else late).setdefault(netns, []).append(e)
    pending_extra = dict(extra)

    def emit(netns: str, evs: list[nftrace.RuleEvent]) -> None:
        label, node = where.labels.get(netns, netns), where.nodes.get(netns)
        hops.extend(rule_hop(netns, label, node, e) for e in evs)

    previous = None
    for i, c in enumerate(caps):
        if c.outgoing:
            emit(c.netns, early.pop(c.netns, []))  # a packet made here meets no PREROUTING
            emit(c.netns, late.pop(c.netns, []))
            hops.extend(pending_extra.pop(c.netns, []))
        hops.append(capture_hop(c, previous, where))
        previous = c
        if not c.outgoing:
            emit(c.netns, early.pop(c.netns, []))
        if all(later.netns != c.netns for later in caps[i + 1:]):
            emit(c.netns, late.pop(c.netns, []))
            hops.extend(pending_extra.pop(c.netns, []))
    for netns in {*early, *late, *pending_extra}:
        emit(netns, early.pop(netns, []) + late.pop(netns, []))
        hops.extend(pending_extra.pop(netns, []))
    return hops


def verdict_of(flow: Flow, fwd: list[Capture], rev: list[Capture], fwd_events: list[tuple[str, nftrace.RuleEvent]],
               where: Places, source_netns: str, cluster: fabric.Cluster, store: Store,
               stopped: routes.Route | None = None) -> dict:
    """``stopped``: the route the last namespace that saw the packet has for it."""
    def place(netns: str) -> str:
        return where.labels.get(netns, netns)

    previous: dict[str, nftrace.RuleEvent] = {}
    for netns, e in fwd_events:
        kind = (e.verdict or "").upper()
        reason = f"{e.source} {e.table} {e.chain}: {e.text}"
        came = previous.get(netns)
        if came is not None and came.table == e.table and came.target_chain == e.chain:
            # a chain that only rejects or drops: the jump into it says for what
            reason += f" (reached from {came.chain}: {came.text})"
        previous[netns] = e
        if kind == "REJECT" or (e.source == "nft" and re.search(r"\breject\b", e.text)):
            return {"result": "REJECTED", "where": place(netns), "by": _component(e), "reason": reason}
        if kind == "DROP" or (e.source == "nft" and e.verdict == "drop"):
            if e.table.startswith("netsim-policy"):
                # the packet at the drop rule's hook (after DNAT), not the last capture,
                # which may still carry the ClusterIP and Service port
                p = parse_ip(e.packet) if e.packet else None
                if p is None and fwd:
                    p = fwd[-1].frame.packet
                node_ips = [m.ip for m in cluster.members.values() if m.kind == "node"]
                by = policydrop.explain(store, node_ips, p) if p else "NetworkPolicy"
            else:
                by = _component(e)
            return {"result": "DROPPED", "where": place(netns), "by": by, "reason": reason}
    first_rev = rev[0].frame.packet if rev else None
    if first_rev is not None and first_rev.proto == 1 and first_rev.icmp_type in (3, 11):
        return {"result": "UNREACHABLE", "where": place(rev[0].netns), "by": "kernel",
                "reason": first_rev.summary()}
    if fwd:
        last = fwd[-1]
        arrived = not last.outgoing and last.netns != source_netns and (
            last.netns in where.pod_refs or last.frame.packet.dst == _member_ip(cluster, last.netns))
        gated = where.pod_ips.get(last.frame.packet.dst)
        if gated is not None and gate.state(kernel.netns_path(gated)) == "closed":
            # the gate is routing in the pod's own namespace: no rule event, and not even ARP
            # answers, so the packet may never reach the pod
            return {"result": "DROPPED", "where": place(gated),
                    "by": "NetworkPolicy (the pod's gate: its rules are not written yet)",
                    "reason": f"ip rule (proto {gate.PROTO}): closed until the node's agent opens it"}
        if arrived:
            reason = ""
            if first_rev is not None and "R" in first_rev.flags:
                reason = "refused by the destination (TCP RST): nothing listens on that port"
            elif first_rev is not None:
                reason = f"answered: {first_rev.summary()}"
            else:
                reason = "no answer came back"
            return {"result": "DELIVERED", "where": place(last.netns), "to": last.frame.packet.dst,
                    "port": last.frame.packet.dport or None, "reason": reason}
        if stopped is not None and stopped.kind in ("blackhole", "unreachable", "none"):
            dst = last.frame.packet.dst
            reason = f"{stopped.text} (no pod has {dst})" if stopped.kind == "blackhole" else stopped.text
            if last.netns == cluster.underlay_netns and stopped.kind == "none":
                return {"result": "DROPPED", "where": place(last.netns),
                        "by": f"route: the underlay's router has no route to {dst}",
                        "reason": "pod routes live on the nodes; between segments a BGP route's next hop is the "
                                  "router, which knows none (ipipMode/vxlanMode CrossSubnet encapsulate there)"
                        if where.pod_subnet and _in(dst, where.pod_subnet) else reason}
            return {"result": "DROPPED", "where": place(last.netns), "by": f"route: {stopped.what}", "reason": reason}
        return {"result": "LOST", "where": place(last.netns),
                "reason": f"last seen {'leaving' if last.outgoing else 'arriving at'} {last.ifname}; "
                          "no rule reported dropping it"}
    return {"result": "LOST", "where": place(source_netns), "reason": "the packet never left its source"}


def _underlay_route(cluster: fabric.Cluster, fwd: list[Capture]) -> Hop | None:
    """The underlay's router hop: a packet between segments leaves the underlay through a
    segment's bridge (a packet within one segment is only bridged, port to port)."""
    bridge = rf"{names.UNDERLAY_BRIDGE}\d*"
    leaving = next((c for c in fwd if c.netns == cluster.underlay_netns and c.outgoing
                    and re.fullmatch(bridge, c.ifname)), None)
    if leaving is None:
        return None
    came = next((c for c in fwd if c.netns == cluster.underlay_netns and not c.outgoing
                 and re.fullmatch(bridge, c.ifname)), None)
    dst = (leaving.frame.outer or leaving.frame.packet).dst  # the underlay routes the outer packet
    hop = Hop("route", cluster.underlay_netns, "underlay", f"route {route_of(cluster.underlay_netns, dst)}")
    segments = {names.underlay_bridge(i): str(seg) for i, seg in enumerate(cluster.segments)}
    if came is not None and came.ifname != leaving.ifname:
        hop.note = (f"the underlay's router: from segment {segments.get(came.ifname, came.ifname)} to segment "
                    f"{segments.get(leaving.ifname, leaving.ifname)} (TTL -1)")
        hop.detail["router"] = {"from": segments.get(came.ifname, came.ifname),
                                "to": segments.get(leaving.ifname, leaving.ifname)}
    return hop


def _in(ip: str, cidr: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)


def _member_ip(cluster: fabric.Cluster, netns: str) -> str | None:
    return next((m.ip for m in cluster.members.values() if m.netns == netns), None)


def run(cluster: fabric.Cluster, store: Store, src: str, dst: str, port: int | None = None, proto: str = "tcp",
        timeout: float = 1.5) -> Result:
    started = time.monotonic()
    proto = proto.lower()
    if proto not in ("tcp", "udp", "icmp"):
        raise TraceError("--proto: use tcp, udp or icmp")
    source = probe.resolve(cluster, store, src)
    if source.netns is None or not kernel.netns_exists(source.netns):
        raise TraceError(f"{src!r} cannot send a packet: use a running pod, a node or a host")
    if "/" not in dst and not dst.startswith("ip:") and probe.DNS_NAME.match(dst):
        target = probe.resolve_name(store, source.netns, dst, port)
    else:
        target = probe.resolve(cluster, store, dst, port)
    if proto != "icmp" and target.port is None:
        raise TraceError(f"{dst} declares no port; give one with --port")
    flow = Flow({"tcp": 6, "udp": 17, "icmp": 1}[proto], source_address(source.netns, target.ip),
                random.randint(33000, 60999), target.ip, target.port or 0 if proto != "icmp" else 0,
                random.randint(1, 0xFFFF))
    where = places(cluster, store)
    all_netns = kernel.list_netns(names.cluster_prefix(cluster.name))
    packet = build_packet(flow)
    seen: list[int] = [0]
    live = Follower(flow)

    def relevant(data: bytes) -> bool:
        f = parse_frame(data)
        if f is None:
            return False
        live.learn(f.packet)
        return live.direction(f.packet) is not None

    def reply_home(frames) -> bool:
        for _ts, netns, _if, outgoing, data in frames[seen[0]:]:
            seen[0] += 1
            if netns == source.netns and not outgoing:
                f = parse_frame(data)
                if f is not None and flow.is_reply_home(f.packet):
                    return True
        return False

    armed = Armed(all_netns, where.node_netns, flow)
    keep = None
    try:
        keep = send(source.netns, flow, packet)
        frames = armed.collect(relevant, reply_home, time.monotonic() + timeout)
        events = {netns: lst.events() + armed.legacy_listeners[netns].events()
                  for netns, lst in armed.nft_listeners.items()}
        # Rule texts from the libnftables contexts already open in each namespace.
        listings = {netns: armed.nft[netns].run("list ruleset") for netns, evs in events.items()
                    if any(e.source == "nft" and e.table != MARKER_TABLE for e in evs)}
    finally:
        armed.close()
        if keep is not None:
            keep.close()
    follow = Follower(flow)
    parsed = [(ts, netns, ifname, outgoing, f, data) for ts, netns, ifname, outgoing, data in frames
              if (f := parse_frame(data)) is not None]
    for *_, f, _data in parsed:
        follow.learn(f.packet)
    captures = sorted((Capture(ts, netns, ifname, outgoing, f, data) for ts, netns, ifname, outgoing, f, data in parsed
                       if follow.direction(f.packet)), key=lambda c: c.time_ns)
    for c in captures:
        if c.ifname.startswith("cali") and c.netns in where.node_netns and (c.netns, c.ifname) not in where.proxy_arp:
            with contextlib.suppress(OSError, kernel.KernelError):
                value = kernel.sysctl(f"net.ipv4.conf.{c.ifname}.proxy_arp", netns=kernel.netns_path(c.netns))
                where.proxy_arp[(c.netns, c.ifname)] = value.strip() == "1"
    fwd = [c for c in captures if follow.direction(c.frame.packet) == "fwd"]
    rev_all = [c for c in captures if follow.direction(c.frame.packet) == "rev"]
    # The first answer only (a source that never opened a socket answers a SYN-ACK with a RST).
    rev = [c for c in rev_all if c.frame.packet.ident == rev_all[0].frame.packet.ident] if rev_all else []
    by_dir: dict[str, dict[str, list[nftrace.RuleEvent]]] = {"fwd": {}, "rev": {}}
    for netns, evs in events.items():
        evs = [e for e in evs if e.table != MARKER_TABLE]
        if not evs:
            continue
        with kernel.Namespace.open(netns) as ns:
            ifnames = {info["index"]: name for name, info in ns.links().items()}
        describe_events(netns, evs, ifnames, listings.get(netns, ""))
        for e in evs:
            d = _event_direction(follow, e)
            if d and worth_showing(e):
                by_dir[d].setdefault(netns, []).append(e)
    extra: dict[str, list[Hop]] = {}
    for netns in where.node_netns:
        if netns not in by_dir["fwd"] and netns not in {c.netns for c in fwd}:
            continue
        label, node = where.labels[netns], where.nodes.get(netns)
        hops = []
        entry = conntrack_entry(netns, flow)
        if entry is not None and (entry["nat"] or netns in by_dir["fwd"]):
            nat = ", ".join(entry["nat"]) or "no NAT"
            hops.append(Hop("conntrack", netns, label, f"conntrack {entry['original']}: {nat} "
                            f"(reply {entry['reply']}) {entry['state']}".rstrip(), node, detail={"conntrack": entry}))
        leaving = next((c for c in fwd if c.netns == netns and c.outgoing), None)
        if leaving is not None and netns != source.netns:
            hops.append(route_hop(netns, where, leaving.frame.packet.dst))
        if hops:
            extra[netns] = hops
    routed = _underlay_route(cluster, fwd)
    if routed is not None:
        extra[cluster.underlay_netns] = [routed]
    fwd_events = [(netns, e) for netns, evs in by_dir["fwd"].items() for e in evs]
    stopped = None
    if fwd and not fwd[-1].outgoing and (fwd[-1].netns in where.node_netns or fwd[-1].netns == cluster.underlay_netns):
        stopped = table_route(fwd[-1].netns, fwd[-1].frame.packet.dst, where)
    verdict = verdict_of(flow, fwd, rev, fwd_events, where, source.netns, cluster, store, stopped)
    return Result(src, dst, proto.upper(), target.port, flow, build_hops(fwd, by_dir["fwd"], where, extra),
                  build_hops(rev, by_dir["rev"], where, {}), verdict, fwd + rev, time.monotonic() - started)


# -- output ----------------------------------------------------------------------------------
def _hop_lines(hops: list[Hop]) -> list[str]:
    lines, n = [], 0
    width = max((len(h.where) for h in hops), default=10)
    iwidth = max([12, *(len(h.interface or "") for h in hops)])
    for h in hops:
        if h.kind == "capture":
            n += 1
            place = f"{h.where:<{width}}  {h.interface or '':<{iwidth}} {h.direction or '':<3}"
            lines.append(f"{n:3}. {place}  {h.summary}")
            if h.note:
                lines.append(f"     {'':<{width}}  {'':<{iwidth}}      ^ {h.note}")
        else:
            lines.append(f"     {'':<{width}}    {h.kind:<9} {h.summary}")
            if h.note:
                lines.append(f"     {'':<{width}}    {'':<9}   ^ {h.note}")
    return lines


def render_text(r: Result) -> list[str]:
    f = r.flow
    head = f"{f.src}:{f.sport} > {f.dst}:{f.dport}" if f.proto != 1 else f"{f.src} > {f.dst} echo id {f.sport}"
    out = [f"trace {r.src} -> {r.dst} {(str(r.port) + '/') if r.port and f.proto != 1 else ''}{r.protocol}",
           f"packet: {head} {r.protocol} (IP id {f.ident})", ""]
    out += _hop_lines(r.hops) or ["     (no capture saw the packet)"]
    v = r.verdict
    line = f"verdict: {v['result']} at {v['where']}"
    if v.get("by"):
        line += f" by {v['by']}"
    out += ["", line]
    if v.get("reason"):
        out.append(f"         {v['reason']}")
    if r.reply:
        out += ["", "reply:"] + _hop_lines(r.reply)
    out += ["", f"({r.elapsed_s * 1000:.0f} ms, {len(r.captures)} captures)"]
    return out


def write_pcap(r: Result, path: str) -> None:
    """All captures, merged in time order, one pcapng interface per namespace and interface."""
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapNgWriter

    with PcapNgWriter(path) as w:
        for c in r.captures:
            pkt = Ether(c.raw)
            pkt.time = c.time_ns / 1e9
            pkt.sniffed_on = f"{c.netns}/{c.ifname}"
            pkt.comment = f"{'out' if c.outgoing else 'in'} {c.netns} {c.ifname}".encode()
            w.write(pkt)
    os.chmod(path, 0o644)
