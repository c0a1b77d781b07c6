"""`netsim graph`: a Graphviz picture of a running cluster.

Two halves: :func:`gather` reads what the cluster is (its state file, the control-plane store
and the kernel objects in the node namespaces) into a :class:`Topology` of plain dataclasses,
and :func:`render` turns a Topology, and optionally a trace of `netsim trace -o json`, into
DOT text with no I/O at all.  :func:`write` renders DOT into .svg/.png with Graphviz's `dot`.

Vertex names are the references the other commands take, so a picture and a command line
speak of the same things: ``node/worker1`` (its ``eth0`` side), ``node/worker1/cni0``,
``node/worker1/flannel.1``, ``host/client``, ``pod/default/web-x``, ``svc/default/web`` and
``underlay`` (the LAN bridge; with several segments the router, each segment then being
``segment/<subnet>``).  Each node is a Graphviz cluster ``cluster_node_<name>`` holding its
devices and, per Kubernetes namespace, a cluster of its pods.

In calico mode there is no bridge: a pod's edge goes to its node, labelled with its cali veth;
Calico's tunnel devices are ``node/<name>/vxlan.calico`` and ``node/<name>/tunl0`` (IPIP has no
fdb: a route via tunl0 to a node is the tunnel to it); BGP sessions, read from each node's
BIRD control socket as `netsim bgp status` reads them, are edges between nodes with each
end's state.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path

import graphviz

from netsim import kernel
from netsim.api.store import NotFound, Store
from netsim.model import k8s, names
from netsim.model.scenario import gateway_of
from netsim.node import podnet
from netsim.observe import routes

FORMATS = ("dot", "svg", "png")
TUNNEL_COLOR = "#1f5fbf"
ENDPOINT_COLOR = "#2e7d32"
TRACE_COLOR = "#d50000"
REPLY_COLOR = "#6a1b9a"
FREE_EDGE = {"weight": "0"}  # not constraint=false: dot 2.43 fails on that between clusters



class GraphError(ValueError):
    """Something the user can fix: a bad trace file, an unknown output format (exit code 2)."""

    code = 2


class RenderError(GraphError):
    """Graphviz could not render, or the file could not be written (exit code 1)."""

    code = 1


# -- the cluster description ------------------------------------------------------------------
@dataclass
class Underlay:
    subnet: str
    gateway: str
    bridge: str
    netns: str
    mtu: int
    # Segments after the first, routed by the underlay: (subnet, bridge, gateway).
    more_segments: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class Vxlan:
    vni: int | None
    port: int | None
    local: str | None
    mtu: int | None
    addresses: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)  # remote node IPs in its fdb
    device: str = "flannel.1"                        # or Calico's vxlan.calico


@dataclass
class Ipip:
    """Calico's tunl0: one IPIP device to every peer; its peers are the nodes its routes lead to."""
    mtu: int | None
    addresses: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)  # node IPs of the routes via tunl0
    device: str = "tunl0"


@dataclass
class BgpPeer:
    """One BGP session of a node's BIRD, as `netsim bgp status` reads it."""
    address: str
    type: str       # node-to-node mesh, global, node specific
    state: str      # up, start
    info: str       # Established, Active, Connect, ...
    since: str = ""


@dataclass
class Node:
    name: str
    role: str
    ip: str
    netns: str
    ready: bool | None = None
    pod_cidr: str | None = None
    present: bool = True  # its namespace exists
    cni0: list[str] | None = None  # cni0's addresses; None: no bridge (yet)
    bridge_ports: list[str] = field(default_factory=list)  # host-side pod veths on cni0
    vxlan: Vxlan | None = None
    routes: list[str] = field(default_factory=list)  # host-gw style: "<subnet> via <node ip>"
    # calico: pod IP -> host-side cali veth (from the workload routes), tunl0, the node's own
    # blocks (blackholes), BGP sessions (None: no BIRD answers; bgp_error says why)
    veths: dict[str, str] = field(default_factory=dict)
    ipip: Ipip | None = None
    blocks: list[str] = field(default_factory=list)
    bgp: list[BgpPeer] | None = None
    bgp_error: str | None = None
    segment: str | None = None  # the underlay segment its eth0 is on


@dataclass
class Host:
    name: str
    ip: str
    netns: str
    segment: str | None = None


@dataclass
class Calico:
    """The default IPPool, as the picture's title says it."""
    cidr: str | None
    ipip: str = "Never"
    vxlan: str = "Never"
    nat_outgoing: bool = False
    block_size: int | None = None

    def mode(self) -> str:
        encap = []
        if self.ipip != "Never":
            encap.append(f"IPIP {self.ipip}")
        if self.vxlan != "Never":
            encap.append(f"VXLAN {self.vxlan}")
        return " · ".join(encap) or "no encapsulation (BGP)"


@dataclass
class Pod:
    namespace: str
    name: str
    ip: str | None
    node: str | None
    netns: str | None  # None for hostNetwork pods (they live in the node's namespace)
    phase: str = "Pending"

    @property
    def ref(self) -> str:
        return f"pod/{self.namespace}/{self.name}"


@dataclass
class Endpoint:
    ip: str
    pod: str | None  # "namespace/name" from the slice's targetRef
    ready: bool = True


@dataclass
class Service:
    namespace: str
    name: str
    type: str
    cluster_ip: str | None
    ports: list[str] = field(default_factory=list)  # "80/TCP → 8080 · nodePort 30080"
    external: list[str] = field(default_factory=list)
    endpoints: list[Endpoint] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"svc/{self.namespace}/{self.name}"


@dataclass
class Topology:
    cluster: str
    underlay: Underlay
    backend: str | None = None  # flannel's Backend.Type from the store
    proxy_mode: str | None = None
    pod_subnet: str | None = None
    service_subnet: str | None = None
    nodes: list[Node] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    cni: str = "canal"
    calico: Calico | None = None  # the default IPPool in calico mode


# -- reading a running cluster ---------------------------------------------------------------
def gather(cluster, store: Store) -> Topology:
    """What ``cluster`` (a netsim.fabric.Cluster) is right now: members from its state,
    objects from ``store``, devices, addresses, fdb entries and routes from the kernel, and in
    calico mode each node's BGP sessions from its BIRD's control socket."""
    from netsim.api import registry
    from netsim.node import flanneld

    config = registry.read_config(store)
    backend = None
    if config.cni != "calico":
        with contextlib.suppress(NotFound):
            backend = flanneld.read_config(store).backend_type
    more = [(str(seg), names.underlay_bridge(i), str(gateway_of(seg)))
            for i, seg in enumerate(cluster.segments) if i]
    topo = Topology(cluster.name, Underlay(str(cluster.subnet), cluster.gateway, names.UNDERLAY_BRIDGE,
                                           cluster.underlay_netns, cluster.mtu, more),
                    backend=backend, cni=config.cni, proxy_mode=config.proxy_mode, pod_subnet=config.pod_subnet,
                    service_subnet=config.service_subnet)
    if config.cni == "calico":
        topo.calico = _calico_pool(store)
    node_objs = {o["metadata"]["name"]: o for o in store.list(k8s.prefix("Node"))[0]}
    owners = {m.ip: m.name for m in cluster.nodes()}
    owners.update(tunnel_owners(node_objs.values()))
    segments = [str(s) for s in cluster.segments]
    for m in cluster.nodes():
        obj = node_objs.get(m.name, {})
        conditions = obj.get("status", {}).get("conditions", [])
        ready = next((c["status"] == "True" for c in conditions if c.get("type") == "Ready"), None)
        node = Node(m.name, m.role or "worker", m.ip, m.netns, ready, obj.get("spec", {}).get("podCIDR"),
                    segment=segment_of(m.ip, segments))
        node.present = kernel.netns_exists(m.netns)
        if node.present:
            apply_node_state(node, read_node_state(m.netns), config.pod_subnet, owners)
        if config.cni == "calico":
            read_bgp(node, cluster.name)
        topo.nodes.append(node)
    topo.hosts = [Host(h.name, h.ip, h.netns, segment_of(h.ip, segments)) for h in cluster.hosts()]
    for o in store.list(k8s.prefix("Pod"))[0]:
        meta, spec, st = o["metadata"], o.get("spec", {}), o.get("status", {})
        netns = None if spec.get("hostNetwork") else podnet.pod_netns(cluster.name, meta["namespace"], meta["name"])
        phase = "Terminating" if meta.get("deletionTimestamp") else st.get("phase", "Pending")
        topo.pods.append(Pod(meta["namespace"], meta["name"], st.get("podIP"), spec.get("nodeName"), netns, phase))
    slices: dict[tuple[str, str], list[dict]] = {}
    for s in store.list(k8s.prefix("EndpointSlice"))[0]:
        svc = (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        if svc:
            slices.setdefault((s["metadata"]["namespace"], svc), []).append(s)
    for o in store.list(k8s.prefix("Service"))[0]:
        topo.services.append(_service(o, slices.get((o["metadata"]["namespace"], o["metadata"]["name"]), [])))
    return topo


def segment_of(ip: str, segments: list[str]) -> str | None:
    addr = ipaddress.ip_address(ip)
    return next((s for s in segments if addr in ipaddress.ip_network(s)), None)


def tunnel_owners(node_objs) -> dict[str, str]:
    """Calico's tunnel addresses (the Node annotations calico/node writes) -> node name."""
    from netsim.node.calico import felix

    out = {}
    for obj in node_objs:
        notes = obj["metadata"].get("annotations") or {}
        for key in (felix.IPIP_ADDR, felix.VXLAN_ADDR):
            if notes.get(key):
                out[notes[key]] = obj["metadata"]["name"]
    return out


def _calico_pool(store: Store) -> Calico:
    from netsim.model import calico

    try:
        spec = store.get(k8s.key("IPPool", None, calico.DEFAULT_POOL)).get("spec") or {}
    except NotFound:
        return Calico(None)
    return Calico(spec.get("cidr"), spec.get("ipipMode") or "Never", spec.get("vxlanMode") or "Never",
                  bool(spec.get("natOutgoing")), spec.get("blockSize"))


def read_bgp(node: Node, cluster: str) -> None:
    """The node's BGP sessions from its BIRD's control socket (`netsim bgp status`'s source)."""
    from netsim.node.calico import bird

    ctl = bird.bird_dir(cluster) / f"{node.name}.ctl"
    if not ctl.exists():
        return  # no BIRD on this node: VXLAN pools run none (upstream's calico_backend "vxlan")
    try:
        rows = bird.protocols(ctl)
    except bird.BirdError as exc:
        node.bgp_error = str(exc)
        return
    node.bgp = bgp_peers(rows)


def bgp_peers(rows: list[dict]) -> list[BgpPeer]:
    return [BgpPeer(r["peerAddress"], r["peerType"], r["state"], r["info"], r.get("since", "")) for r in rows]


TUNNEL_DEVICES = ("flannel.1", "vxlan.calico")


def read_node_state(netns: str) -> dict:
    """What the picture needs of a node's namespace, as plain data (tests record it): links,
    addresses, the main table's routes, and the VXLAN devices with their fdb."""
    with kernel.Namespace.open(netns) as ns:
        links = ns.links()
        state = {"links": links, "addresses": {k: sorted(v) for k, v in ns.addresses().items()},
                 "routes": ns.route_entries(), "tunnels": {}, "fdb": {}}
        for dev in TUNNEL_DEVICES:
            if dev in links:
                info = ns.vxlan(dev)
                if info is not None:
                    state["tunnels"][dev] = info
                    state["fdb"][dev] = ns.fdb(info["index"])
        if "tunl0" in links:
            state["tunnels"]["tunl0"] = {"name": "tunl0", **links["tunl0"]}
    return state


def apply_node_state(node: Node, state: dict, pod_subnet: str, owners: dict[str, str]) -> None:
    """Fill ``node``'s devices and routes in from :func:`read_node_state`'s data.  ``owners``:
    node IP or tunnel address -> node name."""
    links, addrs = state["links"], state["addresses"]
    by_index = {v["index"]: k for k, v in links.items()}
    pod_net = ipaddress.ip_network(pod_subnet)
    cni0 = links.get(podnet.BRIDGE)
    if cni0 is not None:
        node.cni0 = sorted(addrs.get(podnet.BRIDGE, ()))
        node.bridge_ports = sorted(k for k, v in links.items() if v.get("master") == cni0["index"])
    for dev in TUNNEL_DEVICES:
        info = state["tunnels"].get(dev)
        if info is not None and info.get("kind") == "vxlan":
            peers = {e["dst"] for e in state["fdb"].get(dev, []) if e.get("dst")}
            node.vxlan = Vxlan(info.get("vni"), info.get("port"), info.get("local"), info.get("mtu"),
                               sorted(addrs.get(dev, ())), sorted(peers, key=_ip_key), dev)
    tunl0 = state["tunnels"].get("tunl0")
    tunl0_index = tunl0["index"] if tunl0 and tunl0.get("kind") == "ipip" else None
    uplink = links.get(names.NODE_UPLINK, {}).get("index")
    ipip_peers = set()
    for r in state["routes"]:
        if r["dst"] == "default" or r.get("cloned"):
            continue
        dst = ipaddress.ip_network(r["dst"], strict=False)
        if not dst.subnet_of(pod_net):
            continue
        dev = by_index.get(r["oif"])
        if r.get("type") == routes.RTN_BLACKHOLE:
            node.blocks.append(r["dst"])
            continue
        if dev and dev.startswith("cali") and dst.prefixlen == 32:
            node.veths[str(dst.network_address)] = dev
            continue
        if tunl0_index is not None and r["oif"] == tunl0_index and r.get("gateway"):
            ipip_peers.add(r["gateway"])  # drawn as a tunnel, as vxlan devices' routes are
        if not r.get("gateway") or r["oif"] != uplink:
            continue
        # Routes to other nodes' pods straight over eth0: flannel's host-gw (or VXLAN's
        # DirectRouting), Calico's BGP routes (proto bird) and CrossSubnet's same-segment ones (proto 80).
        via = owners.get(r["gateway"])
        tag = f" proto {routes.PROTO_NAMES.get(r.get('proto'), r.get('proto'))}" \
            if r.get("proto") in (routes.RTPROT_BIRD, routes.RTPROT_FELIX) else ""
        node.routes.append(f"{r['dst']} via {r['gateway']}" + (f" ({via})" if via else "")
                           + f" dev {dev or r['oif']}{tag}")
    if tunl0_index is not None:
        node.ipip = Ipip(tunl0.get("mtu"), sorted(addrs.get("tunl0", ())), sorted(ipip_peers, key=_ip_key))


def _ip_key(ip: str):
    try:
        return (0, ipaddress.ip_address(ip))
    except ValueError:
        return (1, ip)


def _service(o: dict, slices: list[dict]) -> Service:
    meta, spec, st = o["metadata"], o.get("spec", {}), o.get("status", {})
    kind = spec.get("type", "ClusterIP")
    ports = []
    for p in spec.get("ports", []):
        text = f"{p.get('name') + ' ' if p.get('name') else ''}{p['port']}/{p.get('protocol', 'TCP')}"
        target = p.get("targetPort")
        if target is not None and str(target) != str(p["port"]):
            text += f" → {target}"
        if p.get("nodePort"):
            text += f" · nodePort {p['nodePort']}"
        ports.append(text)
    external = [i["ip"] for i in st.get("loadBalancer", {}).get("ingress", []) if i.get("ip")]
    external += spec.get("externalIPs", [])
    if kind == "ExternalName" and spec.get("externalName"):
        external.append(spec["externalName"])
    endpoints = []
    for s in slices:
        for e in s.get("endpoints") or []:
            ref = e.get("targetRef") or {}
            pod = f"{ref.get('namespace') or meta['namespace']}/{ref['name']}" \
                if ref.get("kind", "Pod") == "Pod" and ref.get("name") else None
            ready = (e.get("conditions") or {}).get("ready") is not False
            endpoints.extend(Endpoint(ip, pod, ready) for ip in e.get("addresses") or [])
    cluster_ip = spec.get("clusterIP")
    return Service(meta["namespace"], meta["name"], kind, cluster_ip, ports, external, endpoints)


# -- the trace overlay --------------------------------------------------------------------------
@dataclass
class TracePath:
    vertices: list[tuple[str, list[int]]]  # the vertex of each run of captures, and their steps


def load_trace(path: Path) -> dict:
    """A `netsim trace -o json` document, checked for the fields the overlay uses."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise GraphError(f"--trace {path}: cannot read it: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise GraphError(f"--trace {path}: not JSON: {exc}") from None
    check_trace(doc, str(path))
    return doc


def check_trace(doc, source: str = "trace") -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("hops"), list):
        raise GraphError(f"--trace {source}: not a trace: expected an object with a `hops` list "
                         "(the output of `netsim trace ... -o json`)")
    for key in ("hops", "reply"):
        for i, hop in enumerate(doc.get(key) or []):
            if not isinstance(hop, dict):
                raise GraphError(f"--trace {source}: {key}[{i}] is not an object")
            if hop.get("kind") == "capture" and not isinstance(hop.get("netns"), str):
                raise GraphError(f"--trace {source}: {key}[{i}] (step {hop.get('step', i + 1)}) is a capture "
                                 "without a `netns`")
    if doc.get("reply") is not None and not isinstance(doc["reply"], list):
        raise GraphError(f"--trace {source}: `reply` must be a list")
    if doc.get("verdict") is not None and not isinstance(doc["verdict"], dict):
        raise GraphError(f"--trace {source}: `verdict` must be an object")


def _node_vertex(node: Node, interface: str | None) -> str:
    if node.vxlan is not None and interface == node.vxlan.device:
        return f"node/{node.name}/{node.vxlan.device}"
    if node.ipip is not None and interface == node.ipip.device:
        return f"node/{node.name}/{node.ipip.device}"
    if interface == podnet.BRIDGE or (interface and interface in node.bridge_ports) \
            or (interface and interface.startswith("veth") and node.cni0 is not None):
        return f"node/{node.name}/cni0"
    return f"node/{node.name}"


def locate(topo: Topology, netns: str, interface: str | None) -> str | None:
    """The vertex a capture in (``netns``, ``interface``) belongs to, or None.  On an underlay
    of several segments, a member's port is its segment's vertex and a segment's bridge
    (where the router takes a packet in or sends it out) the router's."""
    if netns == topo.underlay.netns:
        if topo.underlay.more_segments and interface:
            member = next((m for m in [*topo.nodes, *topo.hosts] if m.name == interface and m.segment), None)
            if member is not None:
                return segment_vertex(member.segment)
        return "underlay"
    for n in topo.nodes:
        if n.netns == netns:
            return _node_vertex(n, interface)
    for h in topo.hosts:
        if h.netns == netns:
            return f"host/{h.name}"
    for p in topo.pods:
        if p.netns == netns:
            return p.ref
    return None


def trace_path(topo: Topology, hops: list[dict], what: str = "hop") -> TracePath:
    """The capture hops, in order, as vertices; consecutive captures at one vertex are one stop."""
    out: list[tuple[str, list[int]]] = []
    for i, hop in enumerate(hops):
        if hop.get("kind") != "capture":
            continue
        step = hop.get("step", i + 1)
        vertex = locate(topo, hop["netns"], hop.get("interface"))
        if vertex is None:
            where = f" ({hop['where']})" if hop.get("where") else ""
            raise GraphError(f"trace {what} {step}{where}: network namespace {hop['netns']!r} is not part of "
                             f"cluster {topo.cluster!r} (a trace of another cluster, or a pod that is gone?)")
        if out and out[-1][0] == vertex:
            out[-1][1].append(step)
        else:
            out.append((vertex, [step]))
    return TracePath(out)


def segment_vertex(subnet: str) -> str:
    return f"segment/{subnet}"


def _steps(steps: list[int]) -> str:
    return ",".join(map(str, steps)) if len(steps) <= 3 else f"{steps[0]},…,{steps[-1]}"


# -- DOT -------------------------------------------------------------------------------------
def _t(text: object) -> str:
    """Text for a DOT label: backslashes are DOT's escapes, so a literal one is doubled."""
    return str(text).replace("\\", "\\\\")


def _lines(*parts: object) -> str:
    return "\\n".join(_t(p) for p in parts if p not in (None, ""))


def _cluster_id(*parts: str) -> str:
    return "cluster_" + "_".join(p.replace("-", "_").replace(".", "_") for p in parts)


def render(topo: Topology, trace: dict | None = None) -> str:
    """DOT text for ``topo``, with ``trace`` (a `netsim trace -o json` document) drawn over it."""
    forward = reply = None
    if trace is not None:
        check_trace(trace)
        forward = trace_path(topo, trace.get("hops") or [], "hop")
        reply = trace_path(topo, trace.get("reply") or [], "reply hop")
    on_path = {v for p in (forward, reply) if p for v, _ in p.vertices}

    g = graphviz.Digraph(topo.cluster)
    title = [f"netsim cluster {topo.cluster}",
             " · ".join(x for x in (
                 f"flannel backend {topo.backend}" if topo.backend else None,
                 *_calico_title(topo),
                 f"kube-proxy {topo.proxy_mode}" if topo.proxy_mode else None,
                 f"pods {topo.pod_subnet}" if topo.pod_subnet else None,
                 f"services {topo.service_subnet}" if topo.service_subnet else None) if x)]
    if trace is not None:
        title += _verdict_lines(trace)
    g.attr("graph", label=_lines(*title), labelloc="t", fontname="Helvetica", fontsize="16", rankdir="TB",
           newrank="true", compound="true", nodesep="0.3", ranksep="0.6")
    g.attr("node", shape="box", style="rounded,filled", fillcolor="white", fontname="Helvetica", fontsize="11")
    g.attr("edge", fontname="Helvetica", fontsize="10", arrowhead="none", color="#777777")

    def mark(vertex: str) -> dict:
        return {"color": TRACE_COLOR, "penwidth": "2.5"} if vertex in on_path else {}

    u = topo.underlay
    routed = bool(u.more_segments)
    g.node("underlay", label=_lines("underlay router" if routed else None,
                                    f"underlay LAN {u.subnet}", f"bridge {u.bridge} · gateway {u.gateway}",
                                    *(f"routed to {subnet} · bridge {bridge} · gateway {gateway}"
                                      for subnet, bridge, gateway in u.more_segments),
                                    f"MTU {u.mtu}"),
           fillcolor="#ffe0b2", shape="box", style="filled,bold", tooltip=u.netns, **mark("underlay"))
    if routed:  # one vertex per L2 segment, each behind the router
        for subnet, bridge, gateway in [(u.subnet, u.bridge, u.gateway), *u.more_segments]:
            seg = segment_vertex(subnet)
            g.node(seg, label=_lines(f"segment {subnet}", f"bridge {bridge}"), fillcolor="#fff3e0",
                   shape="box", style="filled", tooltip=f"{u.netns} {bridge}", **mark(seg))
            g.edge(seg, "underlay", label=f"gateway {gateway}", tooltip=f"{bridge} {gateway}")

    def attach(vertex: str, segment: str | None, tooltip: str = "") -> None:
        g.edge(vertex, segment_vertex(segment) if routed and segment else "underlay",
               **({"tooltip": tooltip} if tooltip else {}))

    pods_by_node: dict[str | None, list[Pod]] = {}
    node_names = {n.name for n in topo.nodes}
    for p in topo.pods:
        pods_by_node.setdefault(p.node if p.node in node_names else None, []).append(p)

    for n in topo.nodes:
        _node_cluster(g, n, pods_by_node.get(n.name, []), mark, calico=topo.cni == "calico")
        attach(f"node/{n.name}", n.segment, f"{n.name} eth0 {n.ip}")
    for h in topo.hosts:
        g.node(f"host/{h.name}", label=_lines(f"external host {h.name}", f"eth0 {h.ip}"), fillcolor="#eeeeee",
               shape="box3d", style="filled", tooltip=h.netns, **mark(f"host/{h.name}"))
        attach(f"host/{h.name}", h.segment)
    unplaced = pods_by_node.get(None, [])
    if unplaced:
        with g.subgraph(name="cluster_unscheduled") as s:
            s.attr(label="pods on no node", style="dashed", color="#999999")
            for p in unplaced:
                _pod_vertex(s, p, mark)

    _tunnels(g, topo)
    _bgp_sessions(g, topo)
    _services(g, topo, mark)
    if forward:
        _draw_path(g, forward, TRACE_COLOR, "bold", "")
    if reply:
        _draw_path(g, reply, REPLY_COLOR, "dashed,bold", "reply ")
    return g.source


def _verdict_lines(trace: dict) -> list[str]:
    head = f"trace {trace.get('from', '?')} → {trace.get('to', '?')}"
    if trace.get("protocol") or trace.get("port"):
        head += f" {trace.get('protocol', '')}/{trace.get('port', '')}".rstrip("/")
    verdict = trace.get("verdict") or {}
    lines = [head]
    if verdict:
        line = f"verdict: {verdict.get('result', '?')}"
        if verdict.get("where"):
            line += f" at {verdict['where']}"
        lines.append(line)
        if verdict.get("reason"):
            lines.append(str(verdict["reason"]))
    lines.append("red: request path · purple dashed: reply path · numbers: trace steps")
    return lines


def _calico_title(topo: Topology) -> list[str]:
    c = topo.calico
    if c is None:
        return []
    return [f"calico {c.mode()}", "natOutgoing" if c.nat_outgoing else None,
            f"blocks /{c.block_size}" if c.block_size else None]


def _node_cluster(g: graphviz.Digraph, n: Node, pods: list[Pod], mark, calico: bool = False) -> None:
    with g.subgraph(name=_cluster_id("node", n.name)) as s:
        s.attr(label=f"node {n.name}", style="rounded,filled", fillcolor="#f3f6fa", color="#5c6bc0",
               fontname="Helvetica-Bold", tooltip=n.netns)
        state = "Ready" if n.ready else "NotReady" if n.ready is False else None
        status = " · ".join(x for x in (n.role, state) if x)
        lines = [n.name, status, f"eth0 {n.ip}"]
        if not n.present:
            lines.append("namespace missing")
        if calico:
            lines += [f"IPAM block {b} (blackhole)" for b in n.blocks]
            if n.bgp is not None:
                up = sum(1 for p in n.bgp if p.info.startswith("Established"))
                lines.append(f"BIRD: {up}/{len(n.bgp)} BGP sessions Established")
            elif n.bgp_error:
                lines.append("BIRD does not answer")
            if n.routes:
                lines.append("routes over eth0:")
                lines += n.routes
        elif n.routes:
            lines.append("host-gw routes:" if n.vxlan is None else "direct routes:")
            lines += n.routes
        s.node(f"node/{n.name}", label=_lines(*lines), fillcolor="#c5cae9", tooltip=n.netns,
               **({"style": "rounded,filled,dashed", "color": "red"} if not n.present else {}),
               **mark(f"node/{n.name}"))
        cidr = f"pod CIDR {n.pod_cidr}" if n.pod_cidr else "no pod CIDR yet"
        if n.cni0 is not None:
            s.node(f"node/{n.name}/cni0", label=_lines(f"cni0 {', '.join(n.cni0) or '(no address)'}", cidr,
                                                       f"{len(n.bridge_ports)} pod veths"),
                   fillcolor="#dcedc8", **mark(f"node/{n.name}/cni0"))
        elif not calico:  # calico has no bridge: each pod's veth is routed by the node
            s.node(f"node/{n.name}/cni0", label=_lines("cni0 (no pods yet)", cidr), fillcolor="#f1f8e9",
                   style="rounded,filled,dashed", **mark(f"node/{n.name}/cni0"))
        if n.cni0 is not None or not calico:
            s.edge(f"node/{n.name}/cni0", f"node/{n.name}", tooltip="routed by the node")
        if n.vxlan is not None:
            v = n.vxlan
            vertex = f"node/{n.name}/{v.device}"
            s.node(vertex, label=_lines(f"{v.device} VXLAN VNI {v.vni}", f"UDP {v.port} · local {v.local}",
                                        f"{', '.join(v.addresses)} · MTU {v.mtu}"),
                   fillcolor="#bbdefb", **mark(vertex))
            s.edge(vertex, f"node/{n.name}", tooltip="encapsulated over eth0")
        if n.ipip is not None:
            t = n.ipip
            vertex = f"node/{n.name}/{t.device}"
            s.node(vertex, label=_lines(f"{t.device} IPIP (IP protocol 4)",
                                        f"{', '.join(t.addresses) or '(no address)'} · MTU {t.mtu}"),
                   fillcolor="#bbdefb", **mark(vertex))
            s.edge(vertex, f"node/{n.name}", tooltip="encapsulated over eth0")
        by_ns: dict[str, list[Pod]] = {}
        for p in pods:
            if p.netns is None:  # hostNetwork: the node's own namespace
                _pod_vertex(s, p, mark, host_network=True)
                s.edge(p.ref, f"node/{n.name}", style="dotted")
            else:
                by_ns.setdefault(p.namespace, []).append(p)
        for ns in sorted(by_ns):
            with s.subgraph(name=_cluster_id("node", n.name, "ns", ns)) as nss:
                nss.attr(label=f"namespace {ns}", style="rounded,filled", fillcolor="#fffde7", color="#c0ca33",
                         fontname="Helvetica")
                for p in sorted(by_ns[ns], key=lambda p: p.name):
                    _pod_vertex(nss, p, mark)
            for p in by_ns[ns]:
                if calico:
                    veth = n.veths.get(p.ip or "")
                    s.edge(p.ref, f"node/{n.name}", label=veth or "", fontsize="9",
                           tooltip=f"{p.ref} eth0 ↔ {veth or 'no cali veth route'} (routed /32, proxy ARP "
                                   "for 169.254.1.1)")
                else:
                    s.edge(p.ref, f"node/{n.name}/cni0", tooltip=f"{p.ref} eth0 ↔ veth on cni0")


def _pod_vertex(s: graphviz.Digraph, p: Pod, mark, host_network: bool = False) -> None:
    lines = [p.name, p.ip or "no IP"]
    if host_network:
        lines.append(f"hostNetwork ({p.namespace})")
    if p.phase != "Running":
        lines.append(p.phase)
    s.node(p.ref, label=_lines(*lines), shape="box", fillcolor="white" if p.phase == "Running" else "#eeeeee",
           tooltip=p.netns or "node namespace", **mark(p.ref))


def _tunnels(g: graphviz.Digraph, topo: Topology) -> None:
    """One edge per pair of nodes whose tunnel devices point at each other: a VXLAN device's
    fdb entries (flannel.1, vxlan.calico), tunl0's routes (IPIP has no fdb: a route via a
    node's address is the tunnel to it)."""
    by_ip = {n.ip: n for n in topo.nodes}

    def pairs(kind: str):
        seen: set[frozenset[str]] = set()
        for n in topo.nodes:
            dev = getattr(n, kind)
            if dev is None:
                continue
            for peer_ip in dev.peers:
                peer = by_ip.get(peer_ip)
                if peer is None or getattr(peer, kind) is None or peer.name == n.name:
                    continue
                pair = frozenset((n.name, peer.name))
                if pair in seen:
                    continue
                seen.add(pair)
                yield n, peer, n.ip in getattr(peer, kind).peers

    for n, peer, both in pairs("vxlan"):
        a, b = sorted((n.name, peer.name))
        g.edge(f"node/{a}/{n.vxlan.device}", f"node/{b}/{peer.vxlan.device}",
               label=f"VXLAN VNI {n.vxlan.vni} UDP {n.vxlan.port}", color=TUNNEL_COLOR, fontcolor=TUNNEL_COLOR,
               style="bold" if both else "dashed", dir="both" if both else "forward", arrowsize="0.6",
               **FREE_EDGE, tooltip=f"{n.ip} ↔ {peer.ip}" + ("" if both else " (one way only)"))
    for n, peer, both in pairs("ipip"):
        a, b = sorted((n.name, peer.name))
        g.edge(f"node/{a}/tunl0", f"node/{b}/tunl0", label="IPIP (IP protocol 4)", color=TUNNEL_COLOR,
               fontcolor=TUNNEL_COLOR, style="bold" if both else "dashed", dir="both" if both else "forward",
               arrowsize="0.6", **FREE_EDGE, tooltip=f"{n.ip} ↔ {peer.ip}" + ("" if both else " (one way only)"))


BGP_UP_COLOR = "#2e7d32"
BGP_DOWN_COLOR = "#c62828"


def _bgp_sessions(g: graphviz.Digraph, topo: Topology) -> None:
    """One edge per BGP session: between two nodes (each end's state, from its own BIRD), or
    from a node to the external host or address it peers with."""
    by_ip = {n.ip: n for n in topo.nodes}
    hosts = {h.ip: h for h in topo.hosts}
    seen: set[frozenset[str]] = set()
    for n in topo.nodes:
        for p in n.bgp or []:
            peer = by_ip.get(p.address)
            if peer is not None and peer.name == n.name:
                continue
            if peer is not None:
                pair = frozenset((n.name, peer.name))
                if pair in seen:
                    continue
                seen.add(pair)
                back = next((q for q in peer.bgp or [] if q.address == n.ip), None)
                ends = {n.name: p.info or p.state, peer.name: (back.info or back.state) if back else
                        ("no BIRD" if peer.bgp is None else "no session")}
                a, b = sorted(pair)
                tail, head = f"node/{a}", f"node/{b}"
            else:
                host = hosts.get(p.address)
                head = f"host/{host.name}" if host else f"bgp/{p.address}"
                if host is None:
                    g.node(head, label=_lines("BGP peer", p.address), shape="note", fillcolor="#eeeeee")
                ends = {n.name: p.info or p.state}
                tail = f"node/{n.name}"
            states = set(ends.values())
            up = all(v.startswith("Established") for v in states)
            text = "BGP " + (next(iter(states)) if len(states) == 1 else
                             " / ".join(f"{k}: {v}" for k, v in sorted(ends.items())))
            g.edge(tail, head, label=text, color=BGP_UP_COLOR if up else BGP_DOWN_COLOR,
                   fontcolor=BGP_UP_COLOR if up else BGP_DOWN_COLOR, style="solid" if up else "dashed",
                   penwidth="1.5", **FREE_EDGE,
                   tooltip=f"{p.type}: {n.ip} ↔ {p.address}, TCP 179" + (f", since {p.since}" if p.since else ""))


def _services(g: graphviz.Digraph, topo: Topology, mark) -> None:
    pods = {f"{p.namespace}/{p.name}": p for p in topo.pods}
    by_ip = {p.ip: p for p in topo.pods if p.ip and p.netns}
    by_ns: dict[str, list[Service]] = {}
    for s in topo.services:
        by_ns.setdefault(s.namespace, []).append(s)
    stray: set[str] = set()
    for ns in sorted(by_ns):
        with g.subgraph(name=_cluster_id("svc", ns)) as sg:
            sg.attr(label=f"Services in {ns}", style="rounded,dashed", color="#ef6c00", fontname="Helvetica")
            for s in sorted(by_ns[ns], key=lambda s: s.name):
                ip = "headless" if s.cluster_ip in (None, "None") else f"ClusterIP {s.cluster_ip}" \
                    if s.cluster_ip else None
                kind = ip if s.type == "ClusterIP" else " · ".join(x for x in (s.type, ip) if x)
                lines = [f"svc {s.name}", kind, *s.ports]
                if s.external:
                    lines.append("external " + ", ".join(s.external))
                if not s.endpoints:
                    lines.append("no endpoints")
                sg.node(s.ref, label=_lines(*lines), shape="hexagon", style="filled", fillcolor="#ffe0b2",
                        tooltip=f"{s.namespace}/{s.name}", **mark(s.ref))
    for s in topo.services:
        targets: dict[str, bool] = {}
        for e in s.endpoints:
            pod = pods.get(e.pod) if e.pod else by_ip.get(e.ip)
            vertex = pod.ref if pod else f"ip/{e.ip}"
            if pod is None:
                stray.add(e.ip)
            targets[vertex] = targets.get(vertex, False) or e.ready
        for vertex, ready in targets.items():
            g.edge(s.ref, vertex, color=ENDPOINT_COLOR if ready else "#9e9e9e", arrowhead="normal",
                   arrowsize="0.6", style="solid" if ready else "dotted",
                   tooltip=f"endpoint of {s.ref}" + ("" if ready else " (not ready)"))
    for ip in sorted(stray, key=_ip_key):
        g.node(f"ip/{ip}", label=_lines("endpoint", ip), shape="note", fillcolor="#eeeeee")


def _draw_path(g: graphviz.Digraph, path: TracePath, color: str, style: str, prefix: str) -> None:
    stops = path.vertices
    if len(stops) == 1:
        vertex, steps = stops[0]
        g.node(vertex, xlabel=f"{prefix}{_steps(steps)}", fontcolor=color)
        return
    for (a, steps_a), (b, steps_b) in zip(stops, stops[1:], strict=False):
        g.edge(a, b, label=f"{prefix}{_steps(steps_a)}→{_steps(steps_b)}", color=color, fontcolor=color,
               style=style, penwidth="2.5", arrowhead="normal", **FREE_EDGE)


# -- output ------------------------------------------------------------------------------------
def output_format(path: str | None) -> str:
    """dot, svg or png from an -o file name; an unknown extension is the user's to fix."""
    if path is None:
        return "dot"
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise GraphError(f"-o {path}: unknown extension {('.' + suffix) if suffix else '(none)'}; "
                         "use FILE.svg, FILE.png or FILE.dot (or no -o for DOT on stdout)")
    return suffix


def write(dot: str, path: str) -> None:
    """Write ``dot`` to ``path``: the text itself for .dot, else rendered by Graphviz's `dot`."""
    fmt = output_format(path)
    if fmt == "dot":
        data = dot.encode()
    else:
        try:
            data = graphviz.Source(dot).pipe(format=fmt)
        except graphviz.ExecutableNotFound:
            raise RenderError(f"-o {path}: rendering {fmt.upper()} needs Graphviz's `dot` program (apt-get install "
                             "graphviz); -o FILE.dot writes the DOT text without it") from None
        except graphviz.CalledProcessError as exc:
            detail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
            raise RenderError(f"-o {path}: dot failed: {detail[-1] if detail else exc}") from None
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise RenderError(f"-o {path}: cannot write it: {exc.strerror or exc}") from None
