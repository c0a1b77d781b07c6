"""flannel's dataplane on one node, as one idempotent reconciler.

A node is a network namespace whose ``eth0`` sits on the underlay; its pods hang off the
bridge ``cni0`` with addresses from the node's lease (say 10.244.1.0/24).  :func:`converge`
gives the node exactly the kernel objects flanneld would, for its own lease and the leases
of every other node:

* vxlan backend: the device ``flannel.1`` (VXLAN, VNI 1, dstport 8472, local = the node's
  underlay address, on eth0, no learning, MTU underlay - 50) holding ``<subnet>.0/32``; per
  remote lease a permanent ARP entry ``<remote>.0 -> its VTEP MAC``, a permanent fdb entry
  ``VTEP MAC -> its underlay address`` and the route ``<remote>/24 via <remote>.0 dev
  flannel.1 onlink``.  With DirectRouting, a remote on the node's own underlay subnet gets
  the host-gw route instead.
* host-gw backend: per remote lease ``<remote>/24 via <its underlay address> dev eth0``, for
  remotes on the node's own underlay segment only: a next hop behind the underlay's router is
  not on-link and the kernel refuses the route (:func:`off_link`), as it does to flanneld.
* either: flannel's masquerade chain (nat FLANNEL-POSTRTG) and forward chain (filter
  FLANNEL-FWD), jumped to from POSTROUTING and FORWARD, and ip_forward on.

Every pass reads what the kernel holds (one link query, one dump each of routes, neighbours
and fdb entries, one iptables-save) and sends only the difference, in one netlink batch and
at most one iptables-restore; a pass over an unchanged node sends nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
from dataclasses import dataclass

from netsim import kernel
from netsim.kernel import netfilter, vtep

log = logging.getLogger("netsim.node.overlay")

DEVICE = "flannel.1"
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
KUBE_PROXY_MARK = "0x4000/0x4000"  # kube-proxy's masquerade mark: it does its own SNAT
MASQ_CHAIN, MASQ_COMMENT = "FLANNEL-POSTRTG", "flanneld masq"
FWD_CHAIN, FWD_COMMENT = "FLANNEL-FWD", "flanneld forward"
MULTICAST = "224.0.0.0/4"
BACKENDS = ("vxlan", "host-gw")
CHANGE_KEYS = ("link", "addresses", "routes", "neighbours", "fdb", "iptables", "sysctl")


@dataclass(frozen=True)
class Backend:
    type: str = "vxlan"  # "vxlan" or "host-gw"
    vni: int = 1
    port: int = 8472
    direct_routing: bool = False  # vxlan: remotes on the same underlay subnet get host-gw routes


@dataclass(frozen=True)
class Lease:
    subnet: str  # "10.244.2.0/24"
    public_ip: str  # the remote node's underlay address
    vtep_mac: str | None = None  # its flannel.1 MAC (vxlan)


def vtep_mac(node_name: str) -> str:
    """A stable MAC for a node's VTEP: unicast, locally administered, from a hash of the name
    (flanneld picks a random one and publishes it in the lease; a stable one survives restarts)."""
    digest = bytearray(hashlib.sha256(b"netsim-vtep/" + node_name.encode()).digest()[:6])
    digest[0] = (digest[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in digest)


def mtu_for(backend: Backend, underlay_mtu: int) -> int:
    """The MTU pods and flannel.1 get (flannel's FLANNEL_MTU)."""
    _check_backend(backend)
    return underlay_mtu - VXLAN_OVERHEAD if backend.type == "vxlan" else underlay_mtu


def _check_backend(backend: Backend) -> None:
    if backend.type not in BACKENDS:
        raise ValueError(f"flannel backend {backend.type!r} is not supported (use one of {', '.join(BACKENDS)})")


# -- the reconciler ------------------------------------------------------------------------
def converge(netns: str, *, node_ip: str, underlay_prefixlen: int, uplink: str, network: str, subnet: str,
             backend: Backend, mac: str, underlay_mtu: int, remotes: list[Lease]) -> dict:
    """Make namespace ``netns`` hold flannel's state for lease ``subnet`` of ``network`` and the
    ``remotes``, removing whatever is stale.  Returns how many objects of each kind it changed
    (all 0 when the kernel already matched)."""
    _check_backend(backend)
    net = ipaddress.ip_network(network)
    own = ipaddress.ip_network(subnet)
    if not own.subnet_of(net):
        raise ValueError(f"subnet {own} is not inside network {net}")
    changes = dict.fromkeys(CHANGE_KEYS, 0)
    ns = kernel.Namespace.open(netns)
    try:
        up = ns.link(uplink)
        if up is None:
            raise kernel.KernelError(f"no uplink {uplink!r} in namespace {netns}")
        if backend.type == "vxlan":
            dev = _ensure_device(ns, backend, node_ip, up["index"], mac.lower(),
                                 mtu_for(backend, underlay_mtu), own, changes)
        else:
            dev = None
            if ns.link(DEVICE) is not None:
                with ns.batch() as b:
                    b.delete_link(DEVICE)  # its routes, neighbours and fdb entries go with it
                changes["link"] += 1
        routes, neigh, fdb = _plan(backend, node_ip, underlay_prefixlen, up["index"], dev, net, own, remotes)
        with ns.batch() as b:
            _sync_routes(ns, b, net, own, routes, changes)
            if dev is not None:
                changes["neighbours"] += vtep.sync_neighbours(ns, b, dev, neigh)
                changes["fdb"] += vtep.sync_fdb(ns, b, dev, fdb)
        if ns.sysctl("net.ipv4.ip_forward") != "1":
            ns.sysctl("net.ipv4.ip_forward", 1)
            changes["sysctl"] += 1
        changes["sysctl"] += _bridge_netfilter(ns)
    finally:
        ns.close()
    changes["iptables"] = _ensure_iptables(netns, net, own)
    return changes


def _bridge_netfilter(ns: kernel.Namespace) -> int:
    """kubeadm's prerequisite: bridged traffic between pods of one node goes through the
    netfilter hooks (a Service whose endpoint is on the client's node, NetworkPolicy between
    neighbours).  A kernel that has not loaded br_netfilter yet (a fresh VM, the qemu guest)
    gets it loaded, as kubeadm's preflight asks of the admin."""
    key = "net.bridge.bridge-nf-call-iptables"
    try:
        value = ns.sysctl(key)
    except FileNotFoundError:
        with contextlib.suppress(netfilter.ToolError):
            netfilter.run(["modprobe", "br_netfilter"], check=False)
        try:
            value = ns.sysctl(key)
        except FileNotFoundError:
            log.warning("br_netfilter is not available: same-node Service and policy traffic bypasses the rules")
            return 0
        _host_bridges_as_before()
    if value != "1":
        ns.sysctl(key, 1)
        return 1
    return 0


def _host_bridges_as_before() -> None:
    """Loading br_netfilter turns the bridge-nf-call sysctls on in every namespace, the host's
    own too, so the host's bridges (docker0, virbr0) would start passing their traffic through
    its firewall.  The sysctls are per namespace and only the nodes need them: the host's go
    back to off, which is how its bridges behaved before the module was there."""
    for table in ("iptables", "ip6tables", "arptables"):
        with contextlib.suppress(OSError):
            kernel.sysctl(f"net.bridge.bridge-nf-call-{table}", 0)
    log.info("loaded br_netfilter; the host's own bridge-nf-call sysctls set back to 0")


def remove(netns: str, *, network: str) -> None:
    """Take flannel's state out of ``netns``: flannel.1 (and with it its neighbour and fdb
    entries and routes), the routes into ``network`` flannel made (protocol "boot", as
    flanneld's), and the FLANNEL-* chains with every jump to them."""
    net = ipaddress.ip_network(network)
    ns = kernel.Namespace.open(netns)
    try:
        if ns.link(DEVICE) is not None:
            with ns.batch() as b:
                b.delete_link(DEVICE)
        with ns.batch() as b:
            for r in ns.route_entries():
                if r["dst"] != "default" and r["proto"] == kernel.RTPROT_BOOT \
                        and ipaddress.ip_network(r["dst"]).subnet_of(net):
                    b.delete_route(r["dst"], gateway=r["gateway"], oif=r["oif"], priority=r["priority"])
    finally:
        ns.close()
    tables = netfilter.save(netns=netns)
    lines: dict[str, list[str]] = {}
    for table, chain in (("nat", MASQ_CHAIN), ("filter", FWD_CHAIN)):
        t = tables[table]
        if chain not in t.chains:
            continue
        out = lines.setdefault(table, [])
        out += [f"-D {other} {rule}" for other, rule in t.jumps(chain) if other != chain]
        out += [f"-F {chain}", f"-X {chain}"]
    if lines:
        netfilter.restore(netfilter.restore_text(lines), netns=netns)


# -- links and addresses -------------------------------------------------------------------
def _ensure_device(ns: kernel.Namespace, backend: Backend, node_ip: str, uplink_index: int, mac: str, mtu: int,
                   own: ipaddress.IPv4Network, changes: dict) -> int:
    """flannel.1 as wanted, up, holding only ``<own network address>/32``; returns its index."""
    index, links, addresses = vtep.ensure_vxlan(ns, DEVICE, vni=backend.vni, port=backend.port, local=node_ip,
                                                link=uplink_index, mac=mac, mtu=mtu,
                                                addresses={f"{own.network_address}/32"})
    changes["link"] += links
    changes["addresses"] += addresses
    return index


# -- routes, neighbours, fdb ---------------------------------------------------------------
Route = tuple[str, int, bool]  # gateway, oif, onlink


def _plan(backend: Backend, node_ip: str, underlay_prefixlen: int, uplink_index: int, dev: int | None,
          net: ipaddress.IPv4Network, own: ipaddress.IPv4Network,
          remotes: list[Lease]) -> tuple[dict[str, Route], dict[str, str], set[tuple[str, str]]]:
    """What the remotes call for: routes {dst: (gateway, oif, onlink)}, ARP entries {ip: mac}
    and fdb entries {(mac, underlay ip)}."""
    underlay = ipaddress.ip_network(f"{node_ip}/{underlay_prefixlen}", strict=False)
    routes: dict[str, Route] = {}
    neigh: dict[str, str] = {}
    fdb: set[tuple[str, str]] = set()
    for lease in remotes:
        sn = ipaddress.ip_network(lease.subnet)
        if not sn.subnet_of(net) or sn.overlaps(own):
            log.warning("ignoring lease %s (%s): not a remote subnet of %s", sn, lease.public_ip, net)
            continue
        on_link = ipaddress.ip_address(lease.public_ip) in underlay
        if backend.type == "host-gw" and not on_link:
            continue  # the kernel refuses a gateway that is not on-link: see off_link()
        if backend.type == "host-gw" or (backend.direct_routing and on_link):
            routes[str(sn)] = (lease.public_ip, uplink_index, False)
            continue
        if not lease.vtep_mac:
            log.warning("ignoring lease %s (%s): no VTEP MAC", sn, lease.public_ip)
            continue
        gateway = str(sn.network_address)
        vmac = lease.vtep_mac.lower()
        routes[str(sn)] = (gateway, dev, True)
        neigh[gateway] = vmac
        fdb.add((vmac, lease.public_ip))
    return routes, neigh, fdb


def off_link(backend: Backend, node_ip: str, underlay_prefixlen: int, remotes: list[Lease]) -> list[Lease]:
    """The remotes a host-gw node cannot route to: their address is not on the node's own
    underlay segment, so ``<subnet> via <it> dev eth0`` has a gateway that is not on-link,
    which the kernel refuses (flanneld logs it and goes on without the route).  Their pods are
    unreachable from this node's; VXLAN (whose outer packets the underlay routes) is the fix."""
    if backend.type != "host-gw":
        return []
    underlay = ipaddress.ip_network(f"{node_ip}/{underlay_prefixlen}", strict=False)
    return [lease for lease in remotes if ipaddress.ip_address(lease.public_ip) not in underlay]


def _sync_routes(ns: kernel.Namespace, b: kernel.Batch, net: ipaddress.IPv4Network, own: ipaddress.IPv4Network,
                 wanted: dict[str, Route], changes: dict) -> None:
    """Main-table routes into ``net`` (connected routes and anything overlapping the node's own
    subnet aside: those are cni0's and its pods') become exactly ``wanted``."""
    current: dict[str, list[dict]] = {}
    for r in ns.route_entries():
        if r["dst"] == "default" or r["proto"] == kernel.RTPROT_KERNEL:
            continue
        dst = ipaddress.ip_network(r["dst"])
        if dst.subnet_of(net) and not dst.overlaps(own):
            current.setdefault(r["dst"], []).append(r)
    for dst, entries in sorted(current.items()):
        want = wanted.get(dst)
        for r in entries:
            if want is not None and not r["priority"]:
                continue  # the route replace_route below rewrites, if it differs
            b.delete_route(dst, gateway=r["gateway"], oif=r["oif"], priority=r["priority"])
            changes["routes"] += 1
    for dst, (gateway, oif, onlink) in sorted(wanted.items()):
        if not any(_route_is(r, gateway, oif, onlink) for r in current.get(dst, [])):
            b.replace_route(dst, gateway=gateway, oif=oif, onlink=onlink, proto=kernel.RTPROT_BOOT)
            changes["routes"] += 1


def _route_is(r: dict, gateway: str, oif: int, onlink: bool) -> bool:
    return (r["gateway"] == gateway and r["oif"] == oif and r["onlink"] == onlink and not r["priority"]
            and r["proto"] == kernel.RTPROT_BOOT and r["type"] == 1)


# -- iptables ------------------------------------------------------------------------------
def flannel_rules(network: str, subnet: str) -> dict[tuple[str, str], list[list[str]]]:
    """flanneld's rules, in its order, as iptables-save prints them: {(table, chain): [rule
    tokens]}.  The jumps from the built-in chains are under (table, "POSTROUTING"/"FORWARD")."""
    net, own = str(ipaddress.ip_network(network)), str(ipaddress.ip_network(subnet))
    masq = ["-m", "comment", "--comment", MASQ_COMMENT]
    fwd = ["-m", "comment", "--comment", FWD_COMMENT]
    return {
        ("nat", "POSTROUTING"): [[*masq, "-j", MASQ_CHAIN]],
        ("nat", MASQ_CHAIN): [
            ["-m", "mark", "--mark", KUBE_PROXY_MARK, *masq, "-j", "RETURN"],  # kube-proxy SNATs these
            ["-s", own, "-d", net, *masq, "-j", "RETURN"],  # pod to pod: no NAT
            ["-s", net, "-d", own, *masq, "-j", "RETURN"],
            ["!", "-s", net, "-d", own, *masq, "-j", "RETURN"],  # from outside to a pod here: keep the source
            ["-s", net, "!", "-d", MULTICAST, *masq, "-j", "MASQUERADE", "--random-fully"],  # pods to outside
            ["!", "-s", net, "-d", net, *masq, "-j", "MASQUERADE", "--random-fully"],  # the node to pods
        ],
        ("filter", "FORWARD"): [[*fwd, "-j", FWD_CHAIN]],
        ("filter", FWD_CHAIN): [
            ["-s", net, *fwd, "-j", "ACCEPT"],
            ["-d", net, *fwd, "-j", "ACCEPT"],
        ],
    }


def _ensure_iptables(netns: str, net: ipaddress.IPv4Network, own: ipaddress.IPv4Network) -> int:
    """The FLANNEL chains exactly as wanted (rewritten whole when not) and one jump to each;
    returns 1 if an iptables-restore was needed, else 0."""
    rules = flannel_rules(str(net), str(own))
    tables = netfilter.save(netns=netns)
    lines: dict[str, list[str]] = {}
    for table, builtin, chain in (("nat", "POSTROUTING", MASQ_CHAIN), ("filter", "FORWARD", FWD_CHAIN)):
        t = tables[table]
        out: list[str] = []
        if [netfilter.tokens(rule) for rule in t.rules(chain)] != rules[(table, chain)]:
            # Declaring a chain under --noflush empties it (or creates it): then refill it in order.
            out.append(f":{chain} - [0:0]")
            out += [netfilter.line("-A", chain, rule) for rule in rules[(table, chain)]]
        jump = rules[(table, builtin)][0]
        found = sum(1 for rule in t.rules(builtin) if netfilter.tokens(rule) == jump)
        if found == 0:
            out.append(netfilter.line("-A", builtin, jump))
        out += [netfilter.line("-D", builtin, jump)] * max(found - 1, 0)
        if out:
            lines[table] = out
    if not lines:
        return 0
    netfilter.restore(netfilter.restore_text(lines), netns=netns)
    return 1
