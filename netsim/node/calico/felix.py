"""Felix's dataplane part and calico/node's startup, for the nodes one agent runs.

startup (calico/node's, Kubernetes datastore mode): the Node gets the annotation
``projectcalico.org/IPv4Address`` (its underlay address with the segment's prefix: BIRD peers
with it and CrossSubnet compares subnets with it) and, while an IPPool enables the encapsulation,
a tunnel address allocated from the node's own IPAM block by calico-ipam's allocator (handle
``ipip-tunnel-addr-<node>`` / ``vxlan-tunnel-addr-<node>``), published as
``projectcalico.org/IPv4IPIPTunnelAddr`` / ``IPv4VXLANTunnelAddr`` + ``VXLANTunnelMACAddr``.
An encapsulation no pool enables any more has its address released and its annotation dropped.

Felix, per node namespace, from the IPPools, IPAMBlocks (which node a block is affine to, and
addresses borrowed from another node's block), the Nodes' annotations and FelixConfiguration:

* IPIP: ``tunl0`` (the ipip module's fallback device; MTU underlay-20, the tunnel address /32);
  per remote block ``<block> via <node IP> dev tunl0 onlink proto 80``.
* VXLAN: ``vxlan.calico`` (VNI 4096, dstport 4789, local = the node IP, dev eth0, nolearning,
  MAC 66:+sha1(node)[:5], MTU underlay-50, the tunnel address /32); per remote block ``<block>
  via <its VTEP address> dev vxlan.calico onlink proto 80``; per remote VTEP a permanent
  neighbour (address -> MAC) and fdb entry (MAC -> node IP).
* CrossSubnet: peers on the node's own underlay subnet (IPv4Address's prefix) are not
  encapsulated: ``<block> via <node IP> dev eth0 onlink proto 80``.
* Who programs what (v3.33's split): a pool with IPIP or VXLAN enabled is Felix's whole: its
  tunnel routes, its CrossSubnet same-subnet routes and the blackholes of the node's own blocks
  (proto 80).  A no-encap pool's routes and blackholes are BIRD's (proto bird) where BIRD runs;
  where none runs (a VXLAN cluster: upstream's calico_backend "vxlan" runs no BGP) Felix programs
  them too.  Which clusters run BIRD: :func:`bird_runs` (pools with VXLAN enabled: none; IPIP or
  Never: BIRD).
* Sysctls Felix sets: ip_forward=1, conf.default.rp_filter=1 (strict on interfaces made later).
* natOutgoing (felix/rules/nat.go): ipsets cali40masq-ipam-pools (pools with natOutgoing) and
  cali40all-ipam-pools (every pool); nat POSTROUTING -> cali-POSTROUTING -> cali-nat-outgoing:
  ``-m set --match-set cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools dst
  -j MASQUERADE --random-fully``; node-originated packets out of a tunnel leave with its address.

Felix owns every main-table route of protocol 80: a converge makes that set exactly the plan
(:func:`plan`, a pure function of the datastore), reading the kernel once and sending the
difference in one netlink batch per node, so an unchanged node gets nothing.  :class:`Felix`
converges level-triggered: on any write to the kinds it reads, and every ``resync_s``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from dataclasses import dataclass, field

from netsim import kernel
from netsim.api.store import Conflict, Store, StoreError
from netsim.kernel import netfilter, vtep
from netsim.model import calico, k8s
from netsim.node.calico.ipamstore import StoreBlockStore

log = logging.getLogger("netsim.node.calico.felix")

ANNOTATION = "projectcalico.org/"
IPV4_ADDRESS = ANNOTATION + "IPv4Address"
IPIP_ADDR = ANNOTATION + "IPv4IPIPTunnelAddr"
VXLAN_ADDR = ANNOTATION + "IPv4VXLANTunnelAddr"
VXLAN_MAC = ANNOTATION + "VXLANTunnelMACAddr"
AS_NUMBER = ANNOTATION + "ASNumber"
RTPROT_FELIX = 80  # felix/dataplane/linux/dataplanedefs DefaultRouteProto
TUNL0 = calico.IPIP_DEVICE
VXLAN_DEV = calico.VXLAN_DEVICE
MODES = ("Always", "CrossSubnet", "Never")
# iptables and ipsets (felix/rules): names as Felix's, the ipsets' "4" for IPv4 and "0" for the
# ipset version prefix.
POSTROUTING_CHAIN = "cali-POSTROUTING"
NAT_OUTGOING_CHAIN = "cali-nat-outgoing"
MASQ_SET = "cali40masq-ipam-pools"
ALL_SET = "cali40all-ipam-pools"
CHANGE_KEYS = ("link", "addresses", "routes", "neighbours", "fdb", "iptables", "ipsets", "sysctl")
WATCHED = ("IPPool", "IPAMBlock", "BlockAffinity", "Node", "FelixConfiguration")


class FelixError(RuntimeError):
    pass


@dataclass(frozen=True)
class LocalNode:
    name: str
    netns: str
    ip: str
    prefixlen: int  # the underlay segment's: IPv4Address is "<ip>/<prefixlen>"
    uplink: str = "eth0"
    as_number: int | None = None  # a node-specific AS (projectcalico.org/ASNumber); None: the global one


# -- the datastore, as Felix's calculation graph sees it ------------------------------------
@dataclass(frozen=True)
class Pool:
    cidr: ipaddress.IPv4Network
    ipip: str = "Never"  # Always | CrossSubnet | Never
    vxlan: str = "Never"
    nat_outgoing: bool = False
    disabled: bool = False
    block_size: int = 26

    @classmethod
    def from_object(cls, obj: dict) -> Pool:
        spec = obj.get("spec") or {}
        name = (obj.get("metadata") or {}).get("name", "?")
        try:
            cidr = ipaddress.IPv4Network(spec["cidr"])
        except (KeyError, ValueError) as exc:
            raise FelixError(f"IPPool {name}: spec.cidr {spec.get('cidr')!r} is not an IPv4 CIDR") from exc
        ipip, vxlan = spec.get("ipipMode") or "Never", spec.get("vxlanMode") or "Never"
        for fld, mode in (("ipipMode", ipip), ("vxlanMode", vxlan)):
            if mode not in MODES:
                raise FelixError(f"IPPool {name}: spec.{fld} {mode!r} is not one of {', '.join(MODES)}")
        return cls(cidr, ipip, vxlan, bool(spec.get("natOutgoing")), bool(spec.get("disabled")),
                   int(spec.get("blockSize") or 26))


@dataclass(frozen=True)
class NodeFacts:
    """What a Node's projectcalico.org annotations say (the ip falls back to its InternalIP)."""

    name: str
    ip: str | None
    prefixlen: int | None = None
    ipip_addr: str | None = None
    vxlan_addr: str | None = None
    vxlan_mac: str | None = None

    @classmethod
    def from_object(cls, obj: dict) -> NodeFacts:
        meta = obj.get("metadata") or {}
        notes = meta.get("annotations") or {}
        ip, prefixlen = None, None
        if notes.get(IPV4_ADDRESS):
            try:
                iface = ipaddress.IPv4Interface(notes[IPV4_ADDRESS])
                ip, prefixlen = str(iface.ip), iface.network.prefixlen
            except ValueError:
                log.warning("node %s: %s %r is no address/prefix", meta.get("name"), IPV4_ADDRESS,
                            notes[IPV4_ADDRESS])
        if ip is None:
            ip = next((a.get("address") for a in (obj.get("status") or {}).get("addresses") or []
                       if a.get("type") == "InternalIP"), None)
        return cls(meta.get("name", ""), ip, prefixlen, notes.get(IPIP_ADDR) or None, notes.get(VXLAN_ADDR) or None,
                   (notes.get(VXLAN_MAC) or "").lower() or None)


@dataclass(frozen=True)
class Block:
    cidr: ipaddress.IPv4Network
    owner: str | None  # the node the block is affine to
    borrowed: tuple[tuple[str, str], ...] = ()  # (address, node) of addresses used on another node


def blocks_from(ipam_blocks: list[dict], affinities: list[dict]) -> list[Block]:
    """Blocks and their owners: the block's own ``affinity: host:<node>``, else a confirmed
    BlockAffinity; addresses whose allocation attributes name another node are borrowed."""
    confirmed = {}
    for a in affinities:
        spec = a.get("spec") or {}
        if spec.get("state", "confirmed") == "confirmed" and str(spec.get("deleted", "false")).lower() != "true":
            confirmed[spec.get("cidr")] = spec.get("node")
    out = []
    for obj in ipam_blocks:
        spec = obj.get("spec") or {}
        if spec.get("deleted"):
            continue
        try:
            cidr = ipaddress.IPv4Network(spec["cidr"])
        except (KeyError, ValueError):
            continue
        affinity = spec.get("affinity") or ""
        owner = affinity.removeprefix("host:") if affinity.startswith("host:") else confirmed.get(str(cidr))
        attrs = spec.get("attributes") or []
        borrowed = []
        for ordinal, index in enumerate(spec.get("allocations") or []):
            if index is None or not 0 <= index < len(attrs):
                continue
            node = ((attrs[index] or {}).get("secondary") or {}).get("node")
            if node and node != owner:
                borrowed.append((str(cidr.network_address + ordinal), node))
        out.append(Block(cidr, owner, tuple(borrowed)))
    return out


@dataclass(frozen=True)
class Config:
    """FelixConfiguration: "default", overridden per field by "node.<name>"."""

    vxlan_vni: int = calico.VXLAN_VNI
    vxlan_port: int = calico.VXLAN_PORT
    ipip_mtu: int | None = None
    vxlan_mtu: int | None = None
    ipip_enabled: bool | None = None  # None: as the pools say
    vxlan_enabled: bool | None = None

    @classmethod
    def from_objects(cls, objects: list[dict], node: str) -> Config:
        by_name = {(o.get("metadata") or {}).get("name"): o.get("spec") or {} for o in objects}
        spec = {**by_name.get(calico.DEFAULT, {}), **by_name.get(f"node.{node}", {})}
        return cls(int(spec.get("vxlanVNI") or calico.VXLAN_VNI), int(spec.get("vxlanPort") or calico.VXLAN_PORT),
                   spec.get("ipipMTU") or None, spec.get("vxlanMTU") or None, spec.get("ipipEnabled"),
                   spec.get("vxlanEnabled"))


def vxlan_mac(node: str) -> str:
    """Felix's VTEP MAC for a node: "f" (0x66: unicast, locally administered) then the first
    five bytes of sha1(node name), the same on every restart."""
    digest = hashlib.sha1(node.encode()).digest()[:5]
    return ":".join(f"{b:02x}" for b in b"f" + digest)


def encapsulation(pools: list[Pool], config: Config = Config()) -> tuple[bool, bool]:
    """(IPIP wanted, VXLAN wanted): a pool enables it, unless FelixConfiguration says otherwise."""
    ipip = any(p.ipip != "Never" for p in pools if not p.disabled)
    vxlan = any(p.vxlan != "Never" for p in pools if not p.disabled)
    if config.ipip_enabled is not None:
        ipip = bool(config.ipip_enabled)
    if config.vxlan_enabled is not None:
        vxlan = bool(config.vxlan_enabled)
    return ipip, vxlan


def bird_runs(pools: list[Pool]) -> bool:
    """Whether the cluster runs BGP: not when a pool uses VXLAN (upstream's calico_backend
    "vxlan" runs no BIRD: Felix programs every route itself), else yes (IPIP, CrossSubnet with
    IPIP, and no encapsulation need BIRD to learn the other nodes' blocks)."""
    return not any(p.vxlan != "Never" for p in pools if not p.disabled)


# -- the plan (pure) --------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    dst: str
    kind: str  # "tunl0", "vxlan", "direct" (eth0, no encapsulation) or "blackhole"
    gateway: str | None = None


@dataclass
class Plan:
    ipip: bool = False  # tunl0 wanted
    vxlan: bool = False  # vxlan.calico wanted
    ipip_addr: str | None = None
    vxlan_addr: str | None = None
    vxlan_mac: str | None = None
    routes: dict[str, Route] = field(default_factory=dict)
    neighbours: dict[str, str] = field(default_factory=dict)  # on vxlan.calico: VTEP ip -> mac
    fdb: set[tuple[str, str]] = field(default_factory=set)  # on vxlan.calico: (mac, node ip)
    masq_pools: list[str] = field(default_factory=list)
    all_pools: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why a route is missing (a peer's facts are)

    def key(self) -> tuple:
        """Everything the kernel is made from, in a canonical order (equal plans, equal keys)."""
        return (self.ipip, self.vxlan, self.ipip_addr, self.vxlan_addr, self.vxlan_mac,
                tuple(sorted(self.routes.items())), tuple(sorted(self.neighbours.items())), tuple(sorted(self.fdb)),
                tuple(self.masq_pools), tuple(self.all_pools))


def plan(node: LocalNode, nodes: dict[str, NodeFacts], blocks: list[Block], pools: list[Pool], *, bird: bool,
         config: Config = Config()) -> Plan:
    """What Felix wants in ``node``'s namespace, given the datastore: devices, routes (proto 80),
    VXLAN neighbours and fdb, the pools of the natOutgoing sets."""
    ipip, vxlan = encapsulation(pools, config)
    me = nodes.get(node.name) or NodeFacts(node.name, node.ip, node.prefixlen)
    p = Plan(ipip=ipip, vxlan=vxlan, ipip_addr=me.ipip_addr if ipip else None,
             vxlan_addr=me.vxlan_addr if vxlan else None, vxlan_mac=vxlan_mac(node.name) if vxlan else None)
    p.all_pools = sorted(str(pool.cidr) for pool in pools)
    p.masq_pools = sorted(str(pool.cidr) for pool in pools if pool.nat_outgoing)
    subnet = ipaddress.IPv4Network(f"{node.ip}/{node.prefixlen}", strict=False)

    if vxlan:
        for peer in nodes.values():
            if peer.name != node.name and peer.ip and peer.vxlan_addr and peer.vxlan_mac:
                p.neighbours[peer.vxlan_addr] = peer.vxlan_mac
                p.fdb.add((peer.vxlan_mac, peer.ip))

    def pool_of(net: ipaddress.IPv4Network) -> Pool | None:
        return next((pool for pool in pools if net.subnet_of(pool.cidr)), None)

    def bird_programs(pool: Pool | None) -> bool:
        # v3.33's split: BIRD programs the routes of no-encap pools only; a pool with IPIP or
        # VXLAN enabled is Felix's whole, same-subnet routes and blackholes included.
        return bird and pool is not None and pool.ipip == "Never" and pool.vxlan == "Never"

    def route_to(dst: ipaddress.IPv4Network, owner: str) -> None:
        pool = pool_of(dst)
        peer = nodes.get(owner)
        if pool is None:
            p.skipped.append(f"{dst} ({owner}): in no IPPool")
            return
        if peer is None or not peer.ip:
            p.skipped.append(f"{dst}: node {owner} has no address yet")
            return
        same = ipaddress.ip_address(peer.ip) in subnet
        if vxlan and (pool.vxlan == "Always" or (pool.vxlan == "CrossSubnet" and not same)):
            if not (peer.vxlan_addr and peer.vxlan_mac):
                p.skipped.append(f"{dst}: node {owner} has no VXLAN tunnel address yet")
                return
            p.routes[str(dst)] = Route(str(dst), "vxlan", peer.vxlan_addr)
        elif ipip and (pool.ipip == "Always" or (pool.ipip == "CrossSubnet" and not same)):
            p.routes[str(dst)] = Route(str(dst), "tunl0", peer.ip)
        elif not bird_programs(pool):
            p.routes[str(dst)] = Route(str(dst), "direct", peer.ip)

    for block in blocks:
        if block.owner == node.name:
            if block.cidr.prefixlen < 32 and not bird_programs(pool_of(block.cidr)):
                p.routes[str(block.cidr)] = Route(str(block.cidr), "blackhole")
        elif block.owner:
            route_to(block.cidr, block.owner)
        for address, user in block.borrowed:
            if user != node.name:
                route_to(ipaddress.IPv4Network(f"{address}/32"), user)
    return p


# -- the kernel -------------------------------------------------------------------------------
def _routes_wanted(p: Plan, uplink: int, tunl0: int | None, vxlan: int | None) -> dict[str, tuple]:
    """{dst: (rtype, gateway, oif, onlink)} for the routes whose device exists."""
    out: dict[str, tuple] = {}
    for r in p.routes.values():
        if r.kind == "blackhole":
            out[r.dst] = (kernel.RTN_BLACKHOLE, None, 0, False)
        elif r.kind == "direct":
            out[r.dst] = (kernel.RTN_UNICAST, r.gateway, uplink, True)
        elif r.kind == "tunl0" and tunl0:
            out[r.dst] = (kernel.RTN_UNICAST, r.gateway, tunl0, True)
        elif r.kind == "vxlan" and vxlan:
            out[r.dst] = (kernel.RTN_UNICAST, r.gateway, vxlan, True)
    return out


def _sync_routes(ns: kernel.Namespace, b: kernel.Batch, wanted: dict[str, tuple]) -> int:
    changes = 0
    current: dict[str, list[dict]] = {}
    for r in ns.route_entries():
        if r["proto"] == RTPROT_FELIX and r["dst"] != "default":
            current.setdefault(r["dst"], []).append(r)
    for dst, entries in sorted(current.items()):
        for r in entries:
            if dst in wanted and not r["priority"]:
                continue  # replaced below if it differs
            b.delete_route(dst, gateway=r["gateway"], oif=r["oif"], priority=r["priority"])
            changes += 1
    for dst, (rtype, gateway, oif, onlink) in sorted(wanted.items()):
        if not any(r["type"] == rtype and r["gateway"] == gateway and r["oif"] == oif and r["onlink"] == onlink
                   and not r["priority"] for r in current.get(dst, [])):
            b.replace_route(dst, gateway=gateway, oif=oif, onlink=onlink, proto=RTPROT_FELIX, rtype=rtype)
            changes += 1
    return changes


def _ensure_tunl0(ns: kernel.Namespace, mtu: int, address: str | None, changes: dict) -> int:
    """tunl0 up with the MTU and only the tunnel address; its index."""
    info = ns.link(TUNL0)
    if info is None:
        try:
            with ns.batch() as b:
                b.add_dummy(TUNL0, kind="ipip")
        except kernel.NetlinkError as exc:
            raise FelixError(f"{ns.name}: cannot create {TUNL0}: this kernel has no IPIP tunnel (module ipip): "
                             f"{exc.strerror}; fix: set the IPPool's ipipMode: Never and vxlanMode: Always (or "
                             "CrossSubnet), or run netsim in a VM whose kernel has ipip") from exc
        info = ns.link(TUNL0)
        changes["link"] += 1
    if info is None or info["kind"] != "ipip":
        raise FelixError(f"{ns.name}: {TUNL0} exists but is not an ipip tunnel ({info and info['kind']})")
    index = info["index"]
    with ns.batch() as b:
        if info["mtu"] != mtu or not info["up"]:
            b.set_link(TUNL0, index=index, mtu=mtu, up=True)
            changes["link"] += 1
        changes["addresses"] += vtep.sync_addresses(ns, b, index, {f"{address}/32"} if address else set())
    return index


def _quiet_tunl0(ns: kernel.Namespace, changes: dict) -> None:
    """IPIP off: the fallback tunl0 cannot be deleted (the module owns it); it keeps no address."""
    info = ns.link(TUNL0)
    if info is None:
        return
    with ns.batch() as b:
        n = vtep.sync_addresses(ns, b, info["index"], set())
        if info["up"]:
            b.set_link(TUNL0, index=info["index"], up=False)
            changes["link"] += 1
    changes["addresses"] += n


def converge_node(node: LocalNode, p: Plan, underlay_mtu: int, config: Config = Config()) -> dict:
    """Make ``node``'s namespace hold plan ``p``; how many objects of each kind changed."""
    changes = dict.fromkeys(CHANGE_KEYS, 0)
    ns = kernel.Namespace.open(node.netns)
    try:
        up = ns.link(node.uplink)
        if up is None:
            raise FelixError(f"no uplink {node.uplink!r} in namespace {node.netns}")
        tunl0 = vxlan = None
        if p.ipip:
            tunl0 = _ensure_tunl0(ns, config.ipip_mtu or underlay_mtu - calico.IPIP_OVERHEAD, p.ipip_addr, changes)
        else:
            _quiet_tunl0(ns, changes)
        if p.vxlan:
            vxlan, links, addrs = vtep.ensure_vxlan(
                ns, VXLAN_DEV, vni=config.vxlan_vni, port=config.vxlan_port, local=node.ip, link=up["index"],
                mac=p.vxlan_mac, mtu=config.vxlan_mtu or underlay_mtu - calico.VXLAN_OVERHEAD,
                addresses={f"{p.vxlan_addr}/32"} if p.vxlan_addr else set())
            changes["link"] += links
            changes["addresses"] += addrs
        elif ns.link(VXLAN_DEV) is not None:
            with ns.batch() as b:
                b.delete_link(VXLAN_DEV)  # its routes, neighbours and fdb go with it
            changes["link"] += 1
        with ns.batch() as b:
            changes["routes"] += _sync_routes(ns, b, _routes_wanted(p, up["index"], tunl0, vxlan))
            if vxlan:
                changes["neighbours"] += vtep.sync_neighbours(ns, b, vxlan, p.neighbours)
                changes["fdb"] += vtep.sync_fdb(ns, b, vxlan, p.fdb)
        for key in ("net.ipv4.ip_forward", "net.ipv4.conf.default.rp_filter"):
            if ns.sysctl(key) != "1":
                ns.sysctl(key, 1)
                changes["sysctl"] += 1
    finally:
        ns.close()
    changes["ipsets"] = _ensure_ipsets(node.netns, {MASQ_SET: p.masq_pools, ALL_SET: p.all_pools})
    changes["iptables"] = _ensure_iptables(node.netns, nat_rules(p))
    return changes


def remove(netns: str) -> None:
    """Take Felix's state out of ``netns``: vxlan.calico (and its neighbours and fdb), tunl0's
    address, every proto-80 route, the cali-* nat chains with their jump and the ipsets."""
    ns = kernel.Namespace.open(netns)
    try:
        with ns.batch() as b:
            b.delete_link(VXLAN_DEV)
        _quiet_tunl0(ns, dict.fromkeys(CHANGE_KEYS, 0))
        with ns.batch() as b:
            _sync_routes(ns, b, {})
    finally:
        ns.close()
    tables = netfilter.save(table="nat", netns=netns)
    t = tables["nat"]
    lines = [f"-D {chain} {rule}" for chain, rule in t.jumps(POSTROUTING_CHAIN) if chain != POSTROUTING_CHAIN]
    lines += [f"-{op} {chain}" for op in ("F", "X") for chain in (POSTROUTING_CHAIN, NAT_OUTGOING_CHAIN)
              if chain in t.chains]
    if lines:
        netfilter.restore(netfilter.restore_text({"nat": lines}), netns=netns)
    present = set(netfilter.run(["ipset", "list", "-n"], netns=netns).stdout.decode().split())
    gone = [name for name in (MASQ_SET, ALL_SET) if name in present]
    if gone:
        netfilter.run(["ipset", "restore"], netns=netns, stdin="".join(f"destroy {n}\n" for n in gone).encode())


# -- natOutgoing --------------------------------------------------------------------------------
def nat_rules(p: Plan) -> dict[str, list[list[str]]]:
    """Felix's nat chains as iptables-save prints them: {chain: [rule tokens]}; "POSTROUTING"
    holds the jump Felix inserts first."""
    postrouting = [["-j", NAT_OUTGOING_CHAIN]]
    # Node-originated packets routed into a tunnel leave with the tunnel's address, which the
    # other end routes back (felix/rules/static_nat.go).
    for dev, wanted in ((TUNL0, p.ipip and p.ipip_addr), (VXLAN_DEV, p.vxlan and p.vxlan_addr)):
        if wanted:
            postrouting.append(["-o", dev, "-m", "addrtype", "!", "--src-type", "LOCAL", "--limit-iface-out",
                                "-m", "addrtype", "--src-type", "LOCAL", "-j", "MASQUERADE", "--random-fully"])
    outgoing = []
    if p.masq_pools:
        outgoing.append(["-m", "set", "--match-set", MASQ_SET, "src", "-m", "set", "!", "--match-set", ALL_SET,
                         "dst", "-j", "MASQUERADE", "--random-fully"])
    return {"POSTROUTING": [["-j", POSTROUTING_CHAIN]], POSTROUTING_CHAIN: postrouting,
            NAT_OUTGOING_CHAIN: outgoing}


def _ensure_iptables(netns: str, rules: dict[str, list[list[str]]]) -> int:
    """Felix's chains exactly as wanted (rewritten whole when not), one jump to them first in
    POSTROUTING; 1 if an iptables-restore was needed, else 0."""
    t = netfilter.save(table="nat", netns=netns)["nat"]
    out: list[str] = []
    for chain in (NAT_OUTGOING_CHAIN, POSTROUTING_CHAIN):  # the jump's target exists before the jump
        if chain not in t.chains or [netfilter.tokens(r) for r in t.rules(chain)] != rules[chain]:
            out.append(f":{chain} - [0:0]")  # under --noflush: created, or emptied to be refilled
            out += [netfilter.line("-A", chain, rule) for rule in rules[chain]]
    jump = rules["POSTROUTING"][0]
    found = [i for i, r in enumerate(t.rules("POSTROUTING")) if netfilter.tokens(r) == jump]
    if found != [0]:
        out += [netfilter.line("-D", "POSTROUTING", jump)] * len(found)
        out.append(netfilter.line("-I", "POSTROUTING", ["1", *jump]))
    if not out:
        return 0
    netfilter.restore(netfilter.restore_text({"nat": out}), netns=netns)
    return 1


def _ensure_ipsets(netns: str, wanted: dict[str, list[str]]) -> int:
    """hash:net sets holding exactly ``wanted``; how many sets were rewritten."""
    have: dict[str, set[str]] = {}
    saved = netfilter.run(["ipset", "save"], netns=netns).stdout.decode()
    for line in saved.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "create":
            have.setdefault(words[1], set())
        elif len(words) >= 3 and words[0] == "add" and words[1] in have:
            have[words[1]].add(words[2] if "/" in words[2] else f"{words[2]}/32")
    text, changed = [], 0
    for name, members in wanted.items():
        if have.get(name) == set(members):
            continue
        changed += 1
        text += [f"create {name} hash:net family inet -exist", f"flush {name}",
                 *(f"add {name} {m}" for m in members)]
    if text:
        netfilter.run(["ipset", "restore"], netns=netns, stdin=("\n".join(text) + "\n").encode())
    return changed


# -- calico/node's startup: the Node's annotations and tunnel addresses ----------------------
TUNNELS = (("ipip", IPIP_ADDR, "ipip-tunnel-addr-", "ipipTunnelAddress"),
           ("vxlan", VXLAN_ADDR, "vxlan-tunnel-addr-", "vxlanTunnelAddress"))


def _ipam():
    from netsim.cni import calico_ipam

    return calico_ipam


def handle_address(blocks: list[dict], handle: str) -> str | None:
    """The address allocated under ``handle``, from the IPAMBlocks' allocations."""
    for obj in blocks:
        spec = obj.get("spec") or {}
        attrs = spec.get("attributes") or []
        for ordinal, index in enumerate(spec.get("allocations") or []):
            if index is not None and 0 <= index < len(attrs) and (attrs[index] or {}).get("handle_id") == handle:
                return str(ipaddress.IPv4Network(spec["cidr"]).network_address + ordinal)
    return None


def _read_pools(store: Store) -> list[Pool]:
    return [Pool.from_object(o) for o in store.list(k8s.prefix("IPPool"))[0]]


def ensure_annotations(store: Store, node: LocalNode, pools: list[Pool], config: Config = Config(),
                       ipam=None) -> dict[str, str | None]:
    """calico/node's startup for one node, idempotent: the annotations it wants (None: removed),
    written if they differ.  A tunnel address is the one its handle already holds (an agent
    restart keeps it), else newly allocated from the pools enabling that encapsulation."""
    want: dict[str, str | None] = {IPV4_ADDRESS: f"{node.ip}/{node.prefixlen}"}
    if node.as_number is not None:
        want[AS_NUMBER] = str(node.as_number)
    enabled = dict(zip(("ipip", "vxlan"), encapsulation(pools, config), strict=True))
    blocks = store.list(k8s.prefix("IPAMBlock"))[0]
    k = k8s.key("Node", None, node.name)
    have = (store.get(k)["metadata"].get("annotations") or {})
    for kind, note, prefix, attr_type in TUNNELS:
        handle = prefix + node.name
        usable = [p for p in pools if not p.disabled and getattr(p, kind) != "Never"]
        current = handle_address(blocks, handle)
        try:
            if enabled[kind] and usable:
                if current and not any(ipaddress.ip_address(current) in p.cidr for p in usable):
                    (ipam or _ipam()).release_handle(StoreBlockStore(store), handle)
                    current = None
                if current is None:
                    pool = usable[0]
                    current = str((ipam or _ipam()).allocate(StoreBlockStore(store), node.name, handle,
                                                             str(pool.cidr), pool.block_size,
                                                             {"node": node.name, "type": attr_type}))
                    log.info("calico/node %s: %s tunnel address %s (handle %s)", node.name, kind, current, handle)
            elif current:
                (ipam or _ipam()).release_handle(StoreBlockStore(store), handle)
                current = None
        except Exception as exc:  # noqa: BLE001  (the allocator's NoAddresses, Unavailable, a store error)
            # The Node's address is written all the same; the next converge tries again.
            log.warning("calico/node %s: no %s tunnel address yet: %s", node.name, kind, exc)
            continue
        want[note] = current if enabled[kind] and usable else None
        if kind == "vxlan":
            want[VXLAN_MAC] = vxlan_mac(node.name) if want[note] else None
    if all(have.get(key) == value for key, value in want.items()):
        return want
    for _ in range(10):
        obj = store.get(k)
        notes = dict(obj["metadata"].get("annotations") or {})
        for key, value in want.items():
            if value is None:
                notes.pop(key, None)
            else:
                notes[key] = value
        try:
            store.update(k, {**obj, "metadata": {**obj["metadata"], "annotations": notes}},
                         int(obj["metadata"]["resourceVersion"]))
            return want
        except Conflict:
            continue
    raise FelixError(f"node {node.name}: could not write its projectcalico.org annotations (too much contention)")


def startup(store: Store, nodes: list[LocalNode], *, ipam=None) -> None:
    """calico/node's startup for every local node (its Node object must exist)."""
    pools = _read_pools(store)
    configs = store.list(k8s.prefix("FelixConfiguration"))[0]
    for node in nodes:
        ensure_annotations(store, node, pools, Config.from_objects(configs, node.name), ipam)


# -- the daemon --------------------------------------------------------------------------------
class Felix:
    """Felix for the nodes one agent runs.  ``bird``: whether this cluster runs BIRD (then BIRD
    programs no-encap routes and own-block blackholes); None decides from the pools, as
    :func:`bird_runs`."""

    def __init__(self, store: Store, nodes: list[LocalNode], underlay_mtu: int, stop, *, bird: bool | None = None,
                 resync_s: float = 10.0, ipam=None):
        self.store = store
        self.nodes = nodes
        self.underlay_mtu = underlay_mtu
        self.stop = stop
        self.bird = bird
        self.resync_s = resync_s
        self.ipam = ipam
        self.last: dict[str, tuple] = {}  # node -> the inputs of its last successful converge
        self.changes: dict[str, dict] = {}  # node -> what its last kernel pass changed (observability, tests)
        self.last_full = 0.0

    def read(self) -> tuple[dict, int]:
        """The datastore as the plan needs it, and the revision it was read at."""
        rev = self.store.revision()
        objs = {kind: self.store.list(k8s.prefix(kind))[0] for kind in WATCHED}
        return objs, rev

    def converge(self, full: bool = False) -> int:
        """One pass over every local node (a node whose plan is unchanged is skipped until the
        resync period is over, or when ``full``); returns the store revision it reflects."""
        objs, rev = self.read()
        pools = [Pool.from_object(o) for o in objs["IPPool"]]
        for node in self.nodes:
            config = Config.from_objects(objs["FelixConfiguration"], node.name)
            try:
                ensure_annotations(self.store, node, pools, config, self.ipam)
            except (StoreError, FelixError) as exc:
                log.warning("calico/node %s: annotations not written (%s)", node.name, exc)
        objs, rev = self.read()  # the annotations just written are part of the picture
        nodes = {f.name: f for f in (NodeFacts.from_object(o) for o in objs["Node"])}
        blocks = blocks_from(objs["IPAMBlock"], objs["BlockAffinity"])
        bird = bird_runs(pools) if self.bird is None else self.bird
        full = full or time.monotonic() - self.last_full >= self.resync_s
        for node in self.nodes:
            config = Config.from_objects(objs["FelixConfiguration"], node.name)
            p = plan(node, nodes, blocks, pools, bird=bird, config=config)
            inputs = (p.key(), config, self.underlay_mtu)
            if not full and self.last.get(node.name) == inputs:
                self.changes[node.name] = dict.fromkeys(CHANGE_KEYS, 0)
                continue
            self.last.pop(node.name, None)
            changed = converge_node(node, p, self.underlay_mtu, config)
            self.last[node.name] = inputs
            self.changes[node.name] = changed
            if any(changed.values()):
                log.info("felix %s: %s", node.name, {k: v for k, v in changed.items() if v})
            for why in p.skipped:
                log.info("felix %s: no route yet for %s", node.name, why)
        if full:
            self.last_full = time.monotonic()
        return rev

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                rev = self.converge()
            except Exception:  # a failed pass is retried; the agent must not die of it
                log.exception("felix: converge failed; retrying in 1s")
                self.last.clear()
                self.stop.wait(1.0)
                continue
            self._wait_for_change(rev)

    def _wait_for_change(self, rev: int) -> None:
        """Until a write to a kind Felix reads after ``rev``, the resync period, or stop."""
        prefixes = tuple(k8s.prefix(kind) for kind in WATCHED)
        deadline = time.monotonic() + self.resync_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                for event in self.store.watch(k8s.REGISTRY, after=rev, timeout=1.0):
                    if event.key.startswith(prefixes):
                        return
                    rev = event.revision
            except StoreError as exc:
                log.warning("felix: watch failed (%s)", exc)
                self.stop.wait(0.5)
