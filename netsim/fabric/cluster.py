"""The cluster fabric: an underlay LAN with nodes and external hosts on it.

Reads like the picture::

    c = Cluster("demo")
    c.add_node("control-plane", role="control-plane")
    c.add_node("worker1")
    c.add_host("client")
    c.up()
    c.ping_all()          # {(src, dst): rtt_ms or None}
    c.down()

The underlay is a namespace of its own that plays the physical LAN and its router: one
bridge per L2 segment (``br-underlay`` for the first, ``br-underlay<i>`` for the others),
each holding the router's address on that segment, with forwarding on between them.  Each
node or host is a namespace whose ``eth0`` is a veth into its segment's bridge, with the
segment's gateway as its default route.  Nothing is created in the host's own namespace.

This module is the kernel's side of a cluster and the state file that records it; what else
ends with a cluster (its agents, its objects in the store) is netsim.fabric.lifecycle's
``teardown``, which a failed `up` or `join` and ``down`` call.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import time
from collections.abc import Callable

from netsim import kernel
from netsim.fabric import join
from netsim.fabric.lifecycle import teardown
from netsim.kernel.ping import ping
from netsim.model import names, state
from netsim.model.scenario import Scenario, gateway_of
from netsim.model.state import ClusterState, Joined, Member, Segment, Underlay, Uplink

Progress = Callable[[str], None]

LOOPBACK_INDEX = 1
FIRST_FREE_INDEX = 2


def _first_free_index(ns: kernel.Namespace) -> int:
    if not _fallback_tunnels():
        return FIRST_FREE_INDEX
    return max((link["index"] for link in ns.links().values()), default=LOOPBACK_INDEX) + 1


def _fallback_tunnels() -> bool:
    """Whether new namespaces get the tunnel modules' fallback devices (ipip's tunl0, ...)."""
    try:
        with open("/proc/sys/net/core/fb_tunnels_only_for_init_net") as f:
            if f.read().strip() != "0":
                return False
    except OSError:
        pass
    return any(os.path.exists(f"/sys/module/{mod}") for mod in ("ipip", "ip_gre", "sit", "ip6_tunnel", "ip_vti",
                                                                 "ip6_vti", "ip6_gre"))


def store_url_for(cluster: str, store: str | None) -> str:
    """SQLite in the cluster's state directory by default.  An etcd URL without a key prefix
    gets ``/netsim/<cluster>``: several clusters can share one etcd, and `down` removes only
    its own keys."""
    if not store:
        return str(state.cluster_dir(cluster) / "store.db")
    if store.startswith("etcd://") and "/" not in store.removeprefix("etcd://").rstrip("/"):
        return f"{store.rstrip('/')}/netsim/{cluster}"
    return store


def plan_members(segments: list[ipaddress.IPv4Network],
                 wanted: list[tuple[str, str, str | None, str | None]]) -> dict[str, tuple[str, ipaddress.IPv4Network]]:
    """Segment and underlay address of every member of ``wanted`` (name, "node"|"host", ip,
    subnet): its ``subnet``, else the segment holding its ``ip``, else the first segment; then
    each segment's addresses as :func:`plan_addresses` gives them."""
    listed = ", ".join(map(str, segments))
    placed: dict[str, ipaddress.IPv4Network] = {}
    for name, _kind, ip, subnet in wanted:
        addr = ipaddress.IPv4Address(ip) if ip else None
        if subnet is not None:
            seg = ipaddress.IPv4Network(subnet)
            if seg not in segments:
                raise ValueError(f"{name}: subnet {seg} is not one of the underlay's segments ({listed}); "
                                 "fix: use one of them, or add it to networking.underlaySubnets")
        else:
            seg = next((s for s in segments if addr is not None and addr in s), segments[0])
        if addr is not None and (addr not in seg or addr in (seg.network_address, seg.broadcast_address)):
            raise ValueError(f"{name}: ip {addr} is not a host address of underlay segment {seg}; "
                             f"fix: use an address inside one of {listed}")
        if addr is not None and addr == gateway_of(seg):
            raise ValueError(f"{name}: ip {addr} is the underlay gateway of {seg}; fix: pick another address")
        placed[name] = seg
    out: dict[str, tuple[str, ipaddress.IPv4Network]] = {}
    for seg in segments:
        here = [w for w in wanted if placed[w[0]] == seg]
        ips = plan_addresses(seg, [(w[0], w[2]) for w in here if w[1] == "node"],
                             [(w[0], w[2]) for w in here if w[1] == "host"])
        out.update({n: (ip, seg) for n, ip in ips.items()})
    return out


def plan_addresses(subnet: ipaddress.IPv4Network, nodes: list[tuple[str, str | None]],
                   hosts: list[tuple[str, str | None]]) -> dict[str, str]:
    """Underlay address of every member.  Explicit addresses are kept; nodes then fill upward
    from after the gateway and hosts downward from the top, so adding a node never renumbers
    a host."""
    taken = {ipaddress.IPv4Address(ip) for _, ip in nodes + hosts if ip}
    taken.add(gateway_of(subnet))
    out: dict[str, str] = {}
    ascending = (a for a in subnet.hosts() if a not in taken)
    for name, ip in nodes:
        out[name] = ip or str(next(ascending))
        taken.add(ipaddress.IPv4Address(out[name]))
    top = subnet.broadcast_address - 1
    descending = (a for a in (top - i for i in range(subnet.num_addresses - 2)) if a not in taken)
    for name, ip in hosts:
        out[name] = ip or str(next(descending))
    return out


class Cluster:
    def __init__(self, name: str = "netsim", underlay: str = "192.168.56.0/24", mtu: int = 1500,
                 scenario: Scenario | None = None, source: str | None = None, store: str | None = None,
                 segments: list[str] | None = None):
        if not names.DNS_LABEL.match(name) or len(name) > names.CLUSTER_NAME_MAX:
            raise ValueError(f"cluster name {name!r} must be a DNS label of at most "
                             f"{names.CLUSTER_NAME_MAX} characters")
        self.name = name
        # The underlay's L2 segments, the default one first; ``underlay`` alone is one segment.
        self.segments = [ipaddress.IPv4Network(s) for s in segments] if segments else [ipaddress.IPv4Network(underlay)]
        self.subnet = self.segments[0]
        self.mtu = mtu
        self.scenario = scenario
        self.source = source
        # The control-plane store: SQLite in the state directory unless an etcd URL is given.
        self.store_url = store_url_for(name, store)
        self._wanted: list[tuple[str, str, str | None, str | None, dict, str | None]] = []  # name, kind, ip, role,
        # labels, subnet
        self.members: dict[str, Member] = {}
        self._handles: dict[str, kernel.Namespace] = {}
        self.phase: str | None = None
        # Set on a machine that joined a multi-machine cluster (`netsim join`): its one node,
        # the NIC it was given and whether this machine runs the controllers.
        self.joined: Joined | None = None

    # -- building the picture -------------------------------------------------------------
    @classmethod
    def from_scenario(cls, scenario: Scenario, name: str | None = None, source: str | None = None,
                      store: str | None = None) -> Cluster:
        net = scenario.networking
        c = cls(name or scenario.name, str(net.underlaySubnet), net.underlayMTU, scenario, source, store,
                segments=[str(s) for s in net.segments])
        for n in scenario.nodes:
            c.add_node(n.name, role=n.role, ip=str(n.ip) if n.ip else None, labels=n.labels,
                       subnet=str(n.subnet) if n.subnet else None)
        for h in scenario.externalHosts:
            c.add_host(h.name, ip=str(h.ip) if h.ip else None, subnet=str(h.subnet) if h.subnet else None)
        return c

    def add_node(self, name: str, role: str = "worker", ip: str | None = None,
                 labels: dict | None = None, subnet: str | None = None) -> Member:
        """A node on segment ``subnet`` (default: the one holding ``ip``, else the first)."""
        self._wanted.append((name, "node", ip, role, labels or {}, subnet))
        return self._replan()[name]

    def remove_member(self, name: str) -> None:
        """Forget a member; the next `up` removes its namespace."""
        self._wanted = [w for w in self._wanted if w[0] != name]
        self._replan()

    def add_host(self, name: str, ip: str | None = None, subnet: str | None = None) -> Member:
        self._wanted.append((name, "host", ip, None, {}, subnet))
        return self._replan()[name]

    def _replan(self) -> dict[str, Member]:
        if len({w[0] for w in self._wanted}) != len(self._wanted):
            dup = self._wanted.pop()[0]
            raise ValueError(f"{dup!r} is already a member of cluster {self.name}")
        try:
            plan = plan_members(self.segments, [(w[0], w[1], w[2], w[5]) for w in self._wanted])
        except ValueError:
            self._wanted.pop()  # the member just asked for; the others stand as planned
            raise
        self.members = {
            n: Member(name=n, kind=kind, ip=plan[n][0], netns=names.netns_name(self.name, n),
                      uplink=names.ifname(n), role=role, labels=labels, subnet=str(plan[n][1]))
            for n, kind, _ip, role, labels, _subnet in self._wanted
        }
        return self.members

    @property
    def gateway(self) -> str:
        """The router's address on the first segment."""
        return str(gateway_of(self.subnet))

    def gateway_for(self, m: Member) -> str:
        """The router's address on ``m``'s segment: its default route."""
        return str(gateway_of(ipaddress.IPv4Network(m.subnet)))

    def bridge_of(self, m: Member) -> str:
        return names.underlay_bridge(self.segments.index(ipaddress.IPv4Network(m.subnet)))

    @property
    def underlay_netns(self) -> str:
        return names.netns_name(self.name, names.UNDERLAY_MEMBER)

    def nodes(self) -> list[Member]:
        return [m for m in self.members.values() if m.kind == "node"]

    def hosts(self) -> list[Member]:
        return [m for m in self.members.values() if m.kind == "host"]

    # -- realising it -----------------------------------------------------------------------
    def up(self, progress: Progress = lambda _msg: None) -> dict:
        """Converge the kernel to this cluster: create what is missing, remove members that are
        no longer wanted.  Safe to run on a cluster that is already up.  Any failure (or
        SIGINT/SIGTERM, which the CLI turns into KeyboardInterrupt) removes what this call made."""
        with state.state_lock():
            fresh = not kernel.netns_exists(self.underlay_netns)
            self._save_state("creating")
            created: list[str] = []
            try:
                timings = self._converge(created, progress)
            except BaseException:
                progress("failed: rolling back")
                self._close_handles()
                if fresh:
                    teardown(self.name)
                else:
                    kernel.remove_netns(created)
                    self._save_state("up")
                raise
            finally:
                self._close_handles()
            self._save_state("up")
            return timings

    def _converge(self, created: list[str], progress: Progress) -> dict:
        t0 = time.perf_counter()
        kernel.ensure_netns_dir()
        lan = self._namespace(self.underlay_netns, created)
        bridges = self._ensure_underlay(lan)
        if len(self.segments) == 1:
            progress(f"underlay {self.subnet} ready (bridge {names.UNDERLAY_BRIDGE}, gateway {self.gateway})")
        else:
            progress(f"underlay ready: {len(self.segments)} segments routed by the underlay's router ("
                     + ", ".join(f"{seg} on {names.underlay_bridge(i)} via {gateway_of(seg)}"
                                 for i, seg in enumerate(self.segments)) + ")")
        t1 = time.perf_counter()
        uplinks = lan.links()
        with lan.batch() as attach:
            for m in self.members.values():
                self._ensure_member(self._namespace(m.netns, created), m, lan, uplinks, created)
                bridge = bridges[self.bridge_of(m)]
                link = uplinks.get(m.uplink)
                if not link or link["master"] != bridge or not link["up"]:
                    attach.set_link(m.uplink, master=bridge, up=True)
        self._wait_operational(lan)
        self._bridges_up(lan, bridges)
        progress(f"{_count(self.nodes(), 'node')} and {_count(self.hosts(), 'external host')} on the underlay")
        t2 = time.perf_counter()
        # Pod namespaces (nsim.<cluster>.<namespace>.<pod>) belong to the agent, not the fabric.
        stale = [ns for ns in kernel.list_netns(names.cluster_prefix(self.name))
                 if ns != self.underlay_netns and ns not in {m.netns for m in self.members.values()}
                 and "." not in ns.removeprefix(names.cluster_prefix(self.name))]
        if stale:
            # Namespaces are freed asynchronously; cut their uplinks now so the underlay
            # forgets them before `up` returns.
            prefix = names.cluster_prefix(self.name)
            with lan.batch() as cut:
                for ns in stale:
                    cut.delete_link(names.ifname(ns.removeprefix(prefix)))
            kernel.remove_netns(stale)
            progress(f"removed {len(stale)} members no longer in the scenario")
        return {"underlay_s": t1 - t0, "members_s": t2 - t1, "total_s": time.perf_counter() - t0}

    def _wait_operational(self, lan: kernel.Namespace, timeout: float = 3.0) -> None:
        """The kernel turns a veth's carrier into operstate, and activates the qdisc that lets
        its packets out, from its linkwatch work, a moment after the link is set up.  Wait for
        it, so that a cluster that is "up" passes packets."""
        pending = {lan: {m.uplink for m in self.members.values()}}
        pending.update({self._handles[m.netns]: {names.NODE_UPLINK} for m in self.members.values()})
        _wait_links(pending, lambda link: link["operstate"] == "UP", timeout)

    def _bridges_up(self, lan: kernel.Namespace, bridges: dict[str, int]) -> None:
        """Set the segments' bridges up once their ports are operational: opening one then
        finds a forwarding port, turns its carrier on and activates its qdisc at once.  Opened
        empty, its carrier would come on only at linkwatch's next non-urgent run, up to a
        second later, and until then the gateway address could not answer.  A segment with
        no member has no port and so no carrier: nothing to wait for there."""
        with lan.batch() as b:
            for name, index in bridges.items():
                b.set_link(name, index=index, up=True)
        populated = {self.bridge_of(m) for m in self.members.values()}
        if populated:
            _wait_links({lan: populated}, lambda link: link["carrier"], 3.0)

    def _namespace(self, netns: str, created: list[str]) -> kernel.Namespace:
        if netns not in self._handles:
            if kernel.netns_exists(netns):
                self._handles[netns] = kernel.Namespace.open(netns)
            else:
                # A bare file (a killed `up` between creat and mount) is not a namespace.
                kernel.delete_netns(netns)
                self._handles[netns] = kernel.Namespace.create(netns)
                created.append(netns)
        return self._handles[netns]

    def _ensure_underlay(self, lan: kernel.Namespace) -> dict[str, int]:
        """A bridge per segment with the router's address on it, and forwarding; returns
        {bridge name: index}.  Bridges of segments no longer wanted go."""
        wanted = {names.underlay_bridge(i): seg for i, seg in enumerate(self.segments)}
        links = lan.links()
        stale = [n for n in links if re.fullmatch(rf"{names.UNDERLAY_BRIDGE}\d+", n) and n not in wanted]
        missing = [n for n in wanted if n not in links]
        if stale or missing:
            with lan.batch() as b:
                for name in stale:
                    b.delete_link(name)
                for name in missing:
                    b.add_bridge(name, self.mtu)
        bridges = {name: lan.index(name) if name in missing else links[name]["index"] for name in wanted}
        with lan.batch() as b:
            b.set_link("lo", index=LOOPBACK_INDEX, up=True)
            for name, seg in wanted.items():
                b.add_address(bridges[name], f"{gateway_of(seg)}/{seg.prefixlen}")
        # The underlay's router forwards between its segments and to the load-balancer routes;
        # it is a namespace of its own, so this never touches the host.
        lan.sysctl("net.ipv4.ip_forward", 1)
        return bridges

    def _ensure_member(self, ns: kernel.Namespace, m: Member, lan: kernel.Namespace,
                       uplinks: dict[str, dict], created: list[str]) -> None:
        """The member's eth0 (a veth into the underlay), its address and default route, in one
        batch.  eth0 is created with the first free ifindex so the same batch can address it: 2
        in a fresh namespace that holds only lo, past the fallback tunnels (tunl0, sit0, ...) a
        kernel with tunnel modules loaded puts into every new namespace; an existing one is asked."""
        fresh = m.netns in created
        eth0 = None if fresh or m.uplink not in uplinks else ns.links().get(names.NODE_UPLINK)
        if eth0 is None and not fresh:
            # Half a pair left by a crash: start the pair over.
            with lan.batch() as cut:
                cut.delete_link(m.uplink)
            with ns.batch() as b:
                b.delete_link(names.NODE_UPLINK)
                b.add_veth(names.NODE_UPLINK, m.uplink, lan, self.mtu)
            eth0 = {"index": ns.index(names.NODE_UPLINK)}
        with ns.batch() as b:
            if eth0 is None:
                index = _first_free_index(ns)
                b.add_veth(names.NODE_UPLINK, m.uplink, lan, self.mtu, index=index)
                eth0 = {"index": index}
            b.set_link("lo", index=LOOPBACK_INDEX, up=True)
            b.set_link(names.NODE_UPLINK, index=eth0["index"], up=True)
            b.add_address(eth0["index"], m.cidr)
            b.replace_route("default", gateway=self.gateway_for(m))
        if m.kind == "node":
            ns.sysctl("net.ipv4.ip_forward", 1)

    def _close_handles(self) -> None:
        for h in self._handles.values():
            with contextlib.suppress(Exception):
                h.close()
        self._handles.clear()

    def _save_state(self, phase: str) -> None:
        state.write_state(self.name, ClusterState(
            name=self.name,
            phase=phase,
            source=self.source,
            store=self.store_url,
            # A joined machine's underlay is the real LAN its NIC is on.
            underlay=Underlay(str(self.subnet), self.gateway, self.mtu,
                              netns=None if self.joined else self.underlay_netns,
                              bridge=None if self.joined else names.UNDERLAY_BRIDGE,
                              segments=[Segment(str(seg), str(gateway_of(seg)),
                                                None if self.joined else names.underlay_bridge(i))
                                        for i, seg in enumerate(self.segments)]),
            join=self.joined,
            members=list(self.members.values()),
            scenario=self.scenario.model_dump(mode="json", by_alias=True) if self.scenario else None,
            updated=time.time(),
        ))

    def join(self, node: str, uplink: Uplink, controllers: bool) -> None:
        """This machine's part of a multi-machine cluster: the node's namespace with the
        machine's NIC as its eth0.  The NIC's configuration is in the state before the NIC
        moves, so any failure (or a later `down`) gives it back."""
        member = self.members[node]
        with state.state_lock():
            self.joined = Joined(node, uplink, controllers)
            self._save_state("creating")
            created: list[str] = []
            try:
                join.attach(member.netns, uplink, member.ip, self.gateway_for(member), created)
            except BaseException:
                teardown(self.name)
                raise
            self._save_state("up")

    # -- taking it away -------------------------------------------------------------------
    def down(self) -> list[str]:
        with state.state_lock():
            return teardown(self.name)

    # -- looking at it ---------------------------------------------------------------------
    def ping(self, src: str, dst: str, timeout: float = 1.0) -> float | None:
        """RTT in ms from member ``src`` to member or address ``dst``, or None."""
        target = self.members[dst].ip if dst in self.members else dst
        return ping(self.members[src].netns, target, timeout)

    def ping_all(self, timeout: float = 1.0) -> dict[tuple[str, str], float | None]:
        return {(a, b): self.ping(a, b, timeout)
                for a in self.members for b in self.members if a != b}


def _wait_links(pending: dict[kernel.Namespace, set[str]], ready: Callable[[dict], bool],
                timeout: float) -> None:
    """Poll until ``ready`` holds for every named link, or fail naming those that never got there."""
    deadline = time.monotonic() + timeout
    while True:
        for ns in list(pending):
            links = ns.links()
            pending[ns] = {name for name in pending[ns] if name not in links or not ready(links[name])}
            if not pending[ns]:
                del pending[ns]
        if not pending:
            return
        if time.monotonic() > deadline:
            stuck = ", ".join(f"{ns.name}/{name}" for ns, names_ in pending.items() for name in names_)
            raise kernel.KernelError(f"links not operational after {timeout}s: {stuck}")
        time.sleep(0.002)


def _count(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def load_cluster(cluster: str) -> Cluster | None:
    """Rebuild the picture of a running cluster from its state file."""
    st = state.read_state(cluster)
    if st is None:
        return None
    c = Cluster(st.name, st.underlay.subnet, st.underlay.mtu, source=st.source, store=st.store,
                segments=[s.subnet for s in st.underlay.segments])
    for m in st.members:
        if m.kind == "node":
            c.add_node(m.name, role=m.role or "worker", ip=m.ip, labels=m.labels, subnet=m.subnet)
        else:
            c.add_host(m.name, ip=m.ip, subnet=m.subnet)
    c.phase = st.phase
    c.joined = st.join
    return c
