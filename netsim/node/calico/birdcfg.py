"""calico/node's confd templates for BIRD 1.6 as one function: ``render(node, facts)`` returns what
confd would write as bird.cfg for that node, with bird_aggr.cfg and bird_ipam.cfg inlined at its
include lines (upstream: node/filesystem/etc/calico/confd/templates/bird*.cfg.template and the
BGP processor in confd/pkg/backends/calico; rendered examples in confd/tests/compiled_templates/).

``Facts`` are the objects confd watches in the Kubernetes datastore:
- Node objects with Calico's KDD annotations: projectcalico.org/IPv4Address ("192.168.56.3/24":
  router id, source address, and the subnet CrossSubnet compares with), projectcalico.org/ASNumber,
  projectcalico.org/RouteReflectorClusterID; their labels for BGPPeer selectors;
- BGPConfiguration "default" (asNumber 64512, nodeToNodeMeshEnabled, listenPort, bindMode,
  programClusterRoutes, logSeverityScreen, ignoredInterfaces, nodeMeshMaxRestartTime) and
  "node.<name>" (listenPort);
- BGPPeer objects: global (no node/nodeSelector) or per node, to a peerIP or to the nodes a
  peerSelector picks, with the reverse peerings confd adds; route reflectors from the cluster ID;
- BlockAffinity objects: the node's own blocks, as `route <block> blackhole;` in a static protocol
  and calico_aggr() exporting each block and nothing beneath it;
- IPPool objects: what is exported, and calico_kernel_programming, the kernel protocol's export
  filter: as of v3.33 (programClusterRoutes EnabledNoEncapOnly) BIRD programs only no-encap pools'
  routes; IPIP and VXLAN pools are rejected there because Felix programs those.

Pure: knows netsim.model (k8s keys, Calico's defaults) and the selector language.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from netsim.model import calico, k8s
from netsim.node.calico.selector import SelectorError, compile_selector

log = logging.getLogger("netsim.node.calico.bird")

ANNOTATION_IPV4 = "projectcalico.org/IPv4Address"
ANNOTATION_AS = "projectcalico.org/ASNumber"
ANNOTATION_RR = "projectcalico.org/RouteReflectorClusterID"
KINDS = ("Node", "BGPConfiguration", "BGPPeer", "BlockAffinity", "IPPool")
BIRD_INT_MAX = 2147483647  # krt_metric/bgp_local_pref arithmetic in upstream's filters
OVERRIDE_PREFERENCE = 200
NORMAL_PRIORITY = 1024


class NodeNotReady(ValueError):
    """The node has no projectcalico.org/IPv4Address yet (calico/node's startup writes it)."""


# -- the facts -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Facts:
    """The datastore objects a BIRD config is rendered from, by kind."""
    nodes: tuple[dict, ...] = ()
    bgp_configurations: tuple[dict, ...] = ()
    bgp_peers: tuple[dict, ...] = ()
    block_affinities: tuple[dict, ...] = ()
    ip_pools: tuple[dict, ...] = ()

    @classmethod
    def from_objects(cls, objects: Iterable[dict]) -> Facts:
        by_kind: dict[str, list[dict]] = {k: [] for k in KINDS}
        for obj in objects:
            if obj.get("kind") in by_kind:
                by_kind[obj["kind"]].append(obj)
        return cls(*(tuple(by_kind[k]) for k in KINDS))

    @classmethod
    def read(cls, source) -> Facts:
        """From an informer Cache (of_kind), a Store (list), a Facts, or an iterable of objects."""
        if isinstance(source, Facts):
            return source
        if hasattr(source, "of_kind"):
            return cls(*(tuple(source.of_kind(k)) for k in KINDS))
        if hasattr(source, "list") and hasattr(source, "watch"):
            return cls(*(tuple(source.list(k8s.prefix(k))[0]) for k in KINDS))
        return cls.from_objects(source)

    def bgp_configuration(self, name: str = calico.DEFAULT) -> dict:
        for c in self.bgp_configurations:
            if c.get("metadata", {}).get("name") == name:
                return c.get("spec") or {}
        return {}


@dataclass(frozen=True)
class _Node:
    name: str
    ip: str | None
    network: str | None  # the node's subnet, from the address's prefix
    asn: str  # "" when the node has none of its own
    rr_cluster_id: str
    labels: Mapping[str, str]


def _node_view(obj: dict) -> _Node:
    meta = obj.get("metadata") or {}
    ann = meta.get("annotations") or {}
    ip = network = None
    if ann.get(ANNOTATION_IPV4):
        iface = ipaddress.IPv4Interface(ann[ANNOTATION_IPV4])  # ValueError: the caller says whose
        ip, network = str(iface.ip), str(iface.network)
    return _Node(meta.get("name", ""), ip, network, str(ann.get(ANNOTATION_AS) or ""),
                 str(ann.get(ANNOTATION_RR) or ""), meta.get("labels") or {})


def _nodes(facts: Facts) -> dict[str, _Node]:
    out = {}
    for obj in facts.nodes:
        try:
            n = _node_view(obj)
        except ValueError as exc:
            log.warning("node %s: %s %r is not an IPv4 address/prefix (%s); it gets no BGP peering",
                        obj.get("metadata", {}).get("name"), ANNOTATION_IPV4,
                        (obj.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_IPV4), exc)
            continue
        out[n.name] = n
    return out


# -- peerings (confd's client.go: BGPPeer objects -> global and per-node peer keys) ----------
@dataclass(frozen=True)
class _PeerData:
    ip: str
    as_num: str
    port: int = 0
    calico_node: bool = False
    rr_cluster_id: str = ""
    source_addr: str = "UseNodeIP"
    restart_time: str = ""
    keepalive_time: str = ""
    ttl_security: int = 0
    local_as: str = ""
    next_hop_mode: str = ""
    keep_next_hop: bool = False
    num_allow_local_as: int = 0
    password: str = ""
    reachable_by: str = ""  # a gateway: the peer is reached through a static /32 via it


def _seconds(duration) -> str:
    """A Kubernetes duration ("120s", "2m", "1m30s") as whole seconds, as confd rounds them."""
    if duration in (None, ""):
        return ""
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)(h|ms|m|s)", str(duration)):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return str(round(total))


def _split_ip_port(peer_ip: str) -> tuple[str, int] | None:
    """"10.0.0.1", "10.0.0.1:180" -> (ip, port); IPv6 peers (netsim is IPv4) and junk -> None."""
    host, _, port = peer_ip.partition(":")
    try:
        ipaddress.IPv4Address(host)
        return host, int(port) if port else 0
    except ValueError:
        return None


class _Peerings:
    def __init__(self, facts: Facts, nodes: dict[str, _Node]):
        self.nodes = nodes
        default = facts.bgp_configuration()
        self.global_as = str(default.get("asNumber") or calico.DEFAULT_AS)
        self.global_port = int(default.get("listenPort") or 0)
        self.ports = {n: int(facts.bgp_configuration(f"node.{n}").get("listenPort") or 0) for n in nodes}
        self.keys: dict[tuple, _PeerData] = {}
        self.node_ips = {n.ip for n in nodes.values() if n.ip}
        peers = sorted(facts.bgp_peers, key=lambda p: p.get("metadata", {}).get("name", ""))
        for global_pass in (True, False):
            for p in peers:
                spec = p.get("spec") or {}
                if global_pass == (not spec.get("node") and not spec.get("nodeSelector")):
                    self._forward(p, spec, global_pass)
        for p in peers:
            self._reverse(p, p.get("spec") or {})

    def _matching(self, selector: str, what: str) -> list[str]:
        try:
            pred = compile_selector(selector)
        except SelectorError as exc:
            log.warning("%s: %s; it selects no node", what, exc)
            return []
        return sorted(n for n, v in self.nodes.items() if pred(v.labels))

    def _emit(self, key: tuple, peer: _PeerData) -> None:
        if key in self.keys:
            return  # an explicit peering wins over a reverse one made later
        if key[0] == "node" and ("global", None, key[2], key[3]) in self.keys:
            return
        self.keys[key] = peer

    def _from_spec(self, spec: dict, **fields) -> dict:
        reachable_by = str(spec.get("reachableBy") or "")
        if reachable_by and _split_ip_port(reachable_by) != (reachable_by, 0):
            log.warning("BGPPeer reachableBy %r is not an IPv4 address; ignored", reachable_by)
            reachable_by = ""
        return dict(source_addr=spec.get("sourceAddress") or "UseNodeIP", reachable_by=reachable_by,
                    restart_time=_seconds(spec.get("maxRestartTime")),
                    keepalive_time=_seconds(spec.get("keepaliveTime")),
                    ttl_security=int(spec.get("ttlSecurity") or 0),
                    next_hop_mode=spec.get("nextHopMode") or "",
                    keep_next_hop=bool(spec.get("keepOriginalNextHop")) and not spec.get("nextHopMode"),
                    **fields)

    def _node_as_peer(self, name: str, spec: dict) -> _PeerData | None:
        n = self.nodes[name]
        if not n.ip:
            return None
        return _PeerData(ip=n.ip, as_num=n.asn or self.global_as, port=self.ports.get(name) or self.global_port,
                         rr_cluster_id=n.rr_cluster_id, **self._from_spec(spec))

    def _forward(self, obj: dict, spec: dict, global_pass: bool) -> None:
        what = f"BGPPeer {obj.get('metadata', {}).get('name')}"
        if global_pass:
            local = None
        elif spec.get("nodeSelector"):
            local = self._matching(spec["nodeSelector"], what + " nodeSelector")
        else:
            local = [spec["node"]]
        peers: list[_PeerData] = []
        if spec.get("peerSelector"):
            for name in self._matching(spec["peerSelector"], what + " peerSelector"):
                if (peer := self._node_as_peer(name, spec)) is not None:
                    peers.append(peer)
        else:
            parsed = _split_ip_port(str(spec.get("peerIP") or ""))
            if parsed is None:
                log.warning("%s: peerIP %r is not an IPv4 address[:port]; skipped", what, spec.get("peerIP"))
                return
            ip, port = parsed
            as_num = str(spec.get("asNumber") or self.global_as)
            if port == 0:
                owners = self._nodes_with(ip, as_num)
                if owners:
                    port = self.ports.get(owners[0]) or self.global_port
            peers.append(_PeerData(ip=ip, as_num=as_num, port=port, calico_node=ip in self.node_ips,
                                   local_as=str(spec.get("localASNumber") or ""),
                                   num_allow_local_as=int(spec.get("numAllowedLocalASNumbers") or 0),
                                   **self._from_spec(spec)))
        for peer in peers:
            if local is None:
                self._emit(("global", None, peer.ip, peer.port), peer)
            for name in local or ():
                self._emit(("node", name, peer.ip, peer.port), peer)

    def _nodes_with(self, ip: str, as_num: str) -> list[str]:
        return sorted(n for n, v in self.nodes.items() if v.ip == ip and (v.asn or self.global_as) == as_num)

    def _reverse(self, obj: dict, spec: dict) -> None:
        if spec.get("reversePeering") == "Manual":
            return
        what = f"BGPPeer {obj.get('metadata', {}).get('name')}"
        if spec.get("peerSelector"):
            local = self._matching(spec["peerSelector"], what + " peerSelector")
        else:
            parsed = _split_ip_port(str(spec.get("peerIP") or ""))
            if parsed is None:
                return
            local = self._nodes_with(parsed[0], str(spec.get("asNumber") or self.global_as))
        if not local:
            return
        if spec.get("nodeSelector"):
            remote = self._matching(spec["nodeSelector"], what + " nodeSelector")
        elif spec.get("node"):
            remote = [spec["node"]] if spec["node"] in self.nodes else []
        else:
            remote = sorted(self.nodes)
        for name in remote:
            peer = self._node_as_peer(name, spec)
            if peer is None:
                continue
            for here in local:
                self._emit(("node", here, peer.ip, peer.port), peer)

    def for_node(self, name: str) -> list[tuple[str, _PeerData]]:
        out = [("Global", p) for k, p in self.keys.items() if k[0] == "global"]
        out += [("Node", p) for k, p in self.keys.items() if k[0] == "node" and k[1] == name]
        return out


# -- rendering --------------------------------------------------------------------------------
@dataclass
class _Peer:
    name: str
    ip: str
    as_num: str
    kind: str  # mesh, global, node
    internal: bool = True  # iBGP: the peer's AS is this node's
    port: int = 0
    local_as: str = ""
    source: str = ""
    ttl_security: str = "off"
    passive: bool = False
    restart_time: str = ""
    keepalive_time: str = ""
    rr_cluster_id: str = ""
    next_hop_keep: bool = False
    next_hop_self: bool = False
    allow_local_as: int = 0
    password: str = ""


def _peer_name(prefix: str, ip: str, port: int) -> str:
    name = f"{prefix}_{ip.replace('.', '_')}"
    return f"{name}_port_{port}" if port else name


def _peers(me: _Node, node_as: str, facts: Facts, nodes: dict[str, _Node], peerings: _Peerings) -> list[_Peer]:
    default = facts.bgp_configuration()
    out: list[_Peer] = []
    mesh = default.get("nodeToNodeMeshEnabled", True) is not False
    if mesh and not me.rr_cluster_id:
        global_port = int(default.get("listenPort") or 0)
        restart = _seconds(default.get("nodeMeshMaxRestartTime"))
        for other in nodes.values():
            if not other.ip or other.ip == me.ip or other.rr_cluster_id:
                continue
            port = int(facts.bgp_configuration(f"node.{other.name}").get("listenPort") or 0) or global_port
            out.append(_Peer(f"Mesh_{other.ip.replace('.', '_')}", other.ip, other.asn or node_as, "mesh",
                             internal=(other.asn or node_as) == node_as, port=port, source=me.ip, restart_time=restart,
                             # String comparison, as confd does: one side connects, the other waits.
                             passive=other.ip > me.ip))
    for prefix, data in peerings.for_node(me.name):
        if data.ip == me.ip:
            continue
        effective_as = data.local_as or node_as
        peer = _Peer(_peer_name(prefix, data.ip, data.port), data.ip, data.as_num, prefix.lower(),
                     internal=data.as_num == effective_as, port=data.port,
                     local_as=data.local_as, source=me.ip if data.source_addr == "UseNodeIP" else "",
                     ttl_security=str(data.ttl_security) if data.ttl_security else "off",
                     restart_time=data.restart_time, keepalive_time=data.keepalive_time,
                     next_hop_self=data.next_hop_mode == "Self",
                     next_hop_keep=data.next_hop_mode == "Keep" or (data.keep_next_hop and data.as_num != effective_as),
                     allow_local_as=data.num_allow_local_as, password=data.password)
        if data.as_num == effective_as and me.rr_cluster_id and data.rr_cluster_id != me.rr_cluster_id:
            peer.rr_cluster_id = me.rr_cluster_id
        if prefix == "Global" and data.calico_node and data.ip > me.ip:
            peer.passive = True
        out.append(peer)
    return sorted(out, key=lambda p: p.name)


def _pool_modes(pool: dict) -> tuple[str, str, str]:
    spec = pool.get("spec") or {}
    return str(spec.get("cidr", "")), spec.get("ipipMode") or "Never", spec.get("vxlanMode") or "Never"


def _cluster_route_policy(default: dict) -> tuple[bool, bool]:
    """(IPIP routes requested of BIRD, BIRD programs no-encap pools' routes) from
    BGPConfiguration.programClusterRoutes; v3.33's default leaves IPIP to Felix."""
    return {"Disabled": (False, False), "Enabled": (True, True), "EnabledIPIPOnly": (True, False)}.get(
        default.get("programClusterRoutes") or "EnabledNoEncapOnly", (False, True))


def _pool_statement(cidr: str, action: str, comment: str = "", extra: str = "") -> str:
    body = f"{extra} {action}" if extra else action
    line = f"  if (net ~ {cidr}) then {{ {body}; }}"
    return f"{line} # {comment}" if comment else line


def _ipam_section(facts: Facts, me: _Node) -> list[str]:
    """bird_ipam.cfg: what goes to peers and what goes to the kernel."""
    default = facts.bgp_configuration()
    # BIRD programs IPIP routes only with krt_tunnel, an attribute of Calico's BIRD fork that
    # Debian's BIRD rejects: asked to, netsim leaves them to Felix, as v3.33's default does.
    ipip_asked, bird_noencap = _cluster_route_policy(default)
    tunnels = ["*.cali", "*.calico", "tunl0"]
    disabled, enabled, kernel_lines = [], [], []
    for pool in facts.ip_pools:
        cidr, ipip, vxlan = _pool_modes(pool)
        if not cidr or ":" in cidr:
            continue
        spec = pool.get("spec") or {}
        if spec.get("disableBGPExport"):
            disabled.append(_pool_statement(cidr, "reject", "BGP export is disabled."))
        else:
            enabled.append(_pool_statement(cidr, "accept"))
        if me.network is None:
            continue  # upstream renders no kernel statement without the node's subnet
        if vxlan != "Never":
            kernel_lines.append(_pool_statement(cidr, "reject", "VXLAN routes are handled by Felix."))
        elif ipip == "Never" and bird_noencap:
            kernel_lines.append(_pool_statement(cidr, "accept"))
        else:
            kernel_lines.append(_pool_statement(cidr, "reject", "Cluster routes are handled by Felix."))
    return [
        "# bird_ipam.cfg, inlined:",
        "# Generated by confd",
        "function reject_local_routes () {",
        "  # Don't export local routes learned via BPF as they should never leave the node.",
        "  if (defined(ifname)) then {",
        '     if (ifname ~ "bpf*.cali") then {',
        "        reject;",
        "     }",
        "  }",
        "}",
        "",
        "function calico_export_to_bgp_peers(bool internal_peer) {",
        "  # filter code terminates when it calls `accept;` or `reject;`,",
        *sorted(disabled),
        "  if (internal_peer) then {",
        "    if (defined(ifname)) then {",
        "      if (" + " || ".join(f'(ifname ~ "{t}")' for t in tunnels) + ") then {",
        "        reject;",
        "      }",
        "    }",
        "  }",
        "  reject_local_routes();",
        "  apply_communities();",
        "  calico_aggr();",
        *sorted(enabled),
        "}",
        "",
        "filter calico_kernel_programming {",
        "  if (defined(source) && (source = RTS_BGP) && !defined(krt_metric)) then {",
        f"      krt_metric = {NORMAL_PRIORITY};",
        "      if (defined(bgp_local_pref)) then {",
        f"          krt_metric = {BIRD_INT_MAX} - bgp_local_pref;",
        "      }",
        f"      if (krt_metric < {NORMAL_PRIORITY}) then {{",
        f"          preference = {OVERRIDE_PREFERENCE};",
        "      }",
        "  }",
        *(["  # programClusterRoutes asks BIRD for IPIP routes: that needs krt_tunnel, which Debian's BIRD",
           "  # 1.6.8 lacks (a Calico fork feature), so Felix programs them as with EnabledNoEncapOnly."]
          if ipip_asked and any(_pool_modes(p)[1] != "Never" for p in facts.ip_pools) else []),
        *sorted(kernel_lines),
        "  accept;",
        "}",
    ]


def _affine_blocks(facts: Facts, node: str) -> list[tuple[str, str]]:
    """(cidr, state) of the node's block affinities, in confd's order (by key name)."""
    out = {}
    for aff in facts.block_affinities:
        spec = aff.get("spec") or {}
        # Only confirmed affinities reach confd (a pending one may yet go to another node).
        if spec.get("node") != node or str(spec.get("deleted", "")).lower() == "true" \
                or (spec.get("state") or "confirmed") != "confirmed":
            continue
        try:
            cidr = ipaddress.IPv4Network(spec.get("cidr", ""))
        except ValueError:
            continue
        out[calico.block_name(cidr)] = (str(cidr), spec.get("state") or "")
    return [out[k] for k in sorted(out)]


def _aggr_section(facts: Facts, node: str, peerings: _Peerings) -> list[str]:
    """bird_aggr.cfg: the node's blocks as blackholes, static routes to peers given a
    reachableBy gateway, and calico_aggr()."""
    blocks = _affine_blocks(facts, node)
    lines = ["# bird_aggr.cfg, inlined:", "# Generated by confd", "template static static_template {"]
    if blocks:
        lines += ["   # IP blocks for this host.",
                  *(f"   route {cidr} blackhole;" for cidr, _ in blocks if not cidr.endswith("/32"))]
    via = {"Global": [], "Node": []}
    for prefix, data in peerings.for_node(node):
        if data.reachable_by:
            via[prefix].append(f"   route {data.ip}/32 via {data.reachable_by};")
    for prefix, what in (("Global", "global BGP peers"), ("Node", "node specific BGP peers")):
        if via[prefix]:
            lines += [f"   # Static routes needed for {what}.", *sorted(via[prefix])]
    added = bool(blocks or via["Global"] or via["Node"])
    if not added:
        lines.append("   # No IP blocks or static routes for this host.")
    lines.append("}")
    if added:
        lines += ["", "protocol static from static_template {", "}"]
    lines += ["", "# Aggregation of routes on this host; export the block, nothing beneath it.",
              "function calico_aggr ()", "{"]
    for cidr, block_state in blocks:
        lines.append(f"      # Block {cidr} is {block_state}" if block_state
                     else f"      # Block {cidr} is implicitly confirmed.")
        if block_state in ("", "confirmed"):
            lines += [f"      if ( net = {cidr} ) then {{ accept; }}",
                      f"      if ( net ~ {cidr} && krt_metric < {NORMAL_PRIORITY} ) then {{ accept; }}",
                      f"      if ( net ~ {cidr} ) then {{ reject; }}"]
    lines.append("}")
    return lines


def _peer_block(p: _Peer) -> list[str]:
    internal = "true" if p.internal else "false"
    lines = [f"protocol bgp {p.name} from bgp_template {{"]
    if p.local_as:
        lines.append(f"  local as {p.local_as};")
    lines.append(f"  neighbor {p.ip}{f' port {p.port}' if p.port else ''} as {p.as_num};")
    if p.source:
        lines.append(f"  source address {p.source};  # The local address we use for the TCP connection")
    if p.ttl_security == "off":
        lines += ["  ttl security off;", "  multihop;"]
    else:
        lines += ["  ttl security on;", f"  multihop {p.ttl_security};"]
    lines += [
        "  import filter {",
        f"    if (defined(bgp_local_pref)&&(bgp_local_pref > {BIRD_INT_MAX - NORMAL_PRIORITY})) then",
        f"      preference = {OVERRIDE_PREFERENCE};",
        "    accept;",
        "  };",
        "  export filter {",
        "    if (defined(source) && source = RTS_BGP && defined(bgp_local_pref)) then {",
        f"      krt_metric = {BIRD_INT_MAX} - bgp_local_pref;",
        "    } else {",
        f"      if (!defined(krt_metric)) then {{ krt_metric = {NORMAL_PRIORITY}; }}",
        f"      bgp_local_pref = {BIRD_INT_MAX} - krt_metric;",
        "    }",
        f"    calico_export_to_bgp_peers({internal});",
        "    reject;",
        "  };  # Only want to export routes for workloads.",
    ]
    if p.passive:
        lines.append("  passive on;")
    if p.restart_time:
        lines.append(f"  graceful restart time {p.restart_time};")
    if p.keepalive_time:
        lines.append(f"  keepalive time {p.keepalive_time};")
    if p.rr_cluster_id:
        lines += ["  rr client;", f"  rr cluster id {p.rr_cluster_id};"]
    if p.password:
        lines.append(f'  password "{p.password}";')
    if p.next_hop_keep:
        lines.append("  next hop keep;")
    if p.next_hop_self:
        lines.append("  next hop self;")
    if p.allow_local_as:
        lines.append(f"  allow local as {p.allow_local_as};")
    lines.append("}")
    return lines


_DIRECT_COMMENT = """ # Exclude cali* and kube-ipvs* but
                                          # include everything else.  In
                                          # IPVS-mode, kube-proxy creates a
                                          # kube-ipvs0 interface. We exclude
                                          # kube-ipvs0 because this interface
                                          # gets an address for every in use
                                          # cluster IP. We use static routes
                                          # for when we legitimately want to
                                          # export cluster IPs."""

_KERNEL = """# Configure synchronization between routing tables and kernel.
protocol kernel from kernel_template {
  export filter calico_kernel_programming; # Default is export none
  graceful restart;  # Turn on graceful restart to reduce potential flaps in
                     # routes when reloading BIRD configuration.  With a full
                     # automatic mesh, there is no way to prevent BGP from
                     # flapping since multiple nodes update their BGP
                     # configuration at the same time, GR is not guaranteed to
                     # work correctly in this scenario.
  merge paths on;    # Allow export multipath routes (ECMP)
}"""


def render(node: str, facts: Facts, *, log_path: str | None = None) -> str:
    """The BIRD 1.6 configuration calico/node's confd would write for ``node`` (bird.cfg with
    bird_aggr.cfg and bird_ipam.cfg inlined at its include lines).  Raises NodeNotReady when the
    node's Node object or its projectcalico.org/IPv4Address is missing, ValueError when that
    address is malformed."""
    obj = next((n for n in facts.nodes if n.get("metadata", {}).get("name") == node), None)
    if obj is None:
        raise NodeNotReady(f"node {node}: no Node object")
    try:
        me = _node_view(obj)
    except ValueError as exc:
        raise ValueError(f"node {node}: annotation {ANNOTATION_IPV4} "
                         f"{obj['metadata'].get('annotations', {}).get(ANNOTATION_IPV4)!r} is not an IPv4 "
                         f"address with its prefix ({exc}); fix: write it as 192.168.56.3/24") from None
    if me.ip is None:
        raise NodeNotReady(f"node {node}: no {ANNOTATION_IPV4} annotation yet (calico/node's startup writes it)")
    nodes = _nodes(facts)
    nodes[node] = me
    peerings = _Peerings(facts, nodes)
    default = facts.bgp_configuration()
    node_as = me.asn or str(default.get("asNumber") or calico.DEFAULT_AS)
    level = str(default.get("logSeverityScreen") or "info").lower()
    debug = {"debug": "all", "none": ""}.get(level, "{ states }")
    peer_debug = {"debug": "debug all;", "none": ""}.get(level, "debug { states, routes, filters, events };")
    interfaces = ", ".join([*(f'-"{i}"' for i in default.get("ignoredInterfaces") or ()),
                            '-"cali*"', '-"kube-ipvs*"', '"*"'])
    out = [f"# Rendered by netsim for node {node} as calico/node's confd renders bird.cfg,",
           "# with bird_aggr.cfg and bird_ipam.cfg inlined where bird.cfg includes them."]
    if log_path:
        out.append(f'log "{log_path}" all;')
    out += ["function apply_communities ()", "{", "}", "",
            "template kernel kernel_template {",
            "  learn;             # Learn all alien routes from the kernel",
            "  persist;           # Don't remove routes on bird shutdown",
            "  scan time 2;       # Scan kernel routing table every 2 seconds",
            "  import all;", "}", "",
            "template direct direct_template {"]
    if debug:
        out.append(f"  debug {debug};")
    out.append(f"  interface {interfaces};" + (_DIRECT_COMMENT if not default.get("ignoredInterfaces") else ""))
    out += ["}", "", "# Generated by confd", *_aggr_section(facts, node, peerings), "", *_ipam_section(facts, me), "",
            f"router id {me.ip};"]
    listen_address = me.ip if default.get("bindMode") == "NodeIP" else ""
    listen_port = int(facts.bgp_configuration(f"node.{node}").get("listenPort") or default.get("listenPort") or 0)
    if listen_address or listen_port:
        out += ["# BGP listen configuration",
                "listen bgp" + (f" address {listen_address}" if listen_address else "")
                + (f" port {listen_port}" if listen_port else "") + ";"]
    out += ["", _KERNEL, "", "# Watch interface up/down events.", "protocol device {"]
    if debug:
        out.append(f"  debug {debug};")
    out += ["  scan time 2;    # Scan interfaces every 2 seconds", "}", "",
            "protocol direct from direct_template {", "}", "",
            "# Template for all BGP clients", "template bgp bgp_template {"]
    if peer_debug:
        out.append(f"  {peer_debug}")
    out += ['  description "Connection to BGP peer";', f"  local as {node_as};",
            "  gateway recursive; # This should be the default, but just in case.",
            "  add paths on;",
            "  graceful restart;  # See comment in kernel section about graceful restart.",
            "  connect delay time 2;", "  connect retry time 5;", "  error wait time 5,30;", "}", "",
            "# -------------- BGP Filters ------------------", "# No v4 BGPFilters configured"]
    peers = _peers(me, node_as, facts, nodes, peerings)
    if peers:
        out.append("# BGP Protocol Configurations")
        for p in peers:
            out += _peer_block(p)
    else:
        out.append("# No BGP peers configured for this node")
    return "\n".join(out) + "\n"
