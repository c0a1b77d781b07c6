"""The cluster fabric: an underlay LAN with nodes and external hosts on it.

Reads like the picture::

    c = Cluster("demo")
    c.add_node("control-plane", role="control-plane")
    c.add_node("worker1")
    c.add_host("client")
    c.up()
    c.ping_all()          # {(src, dst): rtt_ms or None}
    c.down()

The underlay is a bridge in a namespace of its own (it plays the physical LAN and its
router); each node or host is a namespace whose ``eth0`` is a veth into that bridge.
Nothing is created in the host's own namespace.

This module is the kernel's side of a cluster and the state file that records it; what else
ends with a cluster (its agents, its objects in the store) is netsim.fabric.lifecycle's
``teardown``, which a failed `up` or `join` and ``down`` call.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Callable

from netsim import kernel
from netsim.fabric import join
from netsim.fabric.lifecycle import teardown
from netsim.kernel.ping import ping
from netsim.model import names, state
from netsim.model.scenario import Scenario, gateway_of
from netsim.model.state import ClusterState, Joined, Member, Underlay, Uplink

Progress = Callable[[str], None]

LOOPBACK_INDEX = 1
FIRST_FREE_INDEX = 2


def store_url_for(cluster: str, store: str | None) -> str:
    """SQLite in the cluster's state directory by default.  An etcd URL without a key prefix
    gets ``/netsim/<cluster>``: several clusters can share one etcd, and `down` removes only
    its own keys."""
    if not store:
        return str(state.cluster_dir(cluster) / "store.db")
    if store.startswith("etcd://") and "/" not in store.removeprefix("etcd://").rstrip("/"):
        return f"{store.rstrip('/')}/netsim/{cluster}"
    return store


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
                 scenario: Scenario | None = None, source: str | None = None, store: str | None = None):
        if not names.DNS_LABEL.match(name) or len(name) > names.CLUSTER_NAME_MAX:
            raise ValueError(f"cluster name {name!r} must be a DNS label of at most "
                             f"{names.CLUSTER_NAME_MAX} characters")
        self.name = name
        self.subnet = ipaddress.IPv4Network(underlay)
        self.mtu = mtu
        self.scenario = scenario
        self.source = source
        # The control-plane store: SQLite in the state directory unless an etcd URL is given.
        self.store_url = store_url_for(name, store)
        self._wanted: list[tuple[str, str, str | None, str | None, dict]] = []  # name, kind, ip, role, labels
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
        c = cls(name or scenario.name, str(net.underlaySubnet), net.underlayMTU, scenario, source, store)
        for n in scenario.nodes:
            c.add_node(n.name, role=n.role, ip=str(n.ip) if n.ip else None, labels=n.labels)
        for h in scenario.externalHosts:
            c.add_host(h.name, ip=str(h.ip) if h.ip else None)
        return c

    def add_node(self, name: str, role: str = "worker", ip: str | None = None,
                 labels: dict | None = None) -> Member:
        self._wanted.append((name, "node", ip, role, labels or {}))
        return self._replan()[name]

    def remove_member(self, name: str) -> None:
        """Forget a member; the next `up` removes its namespace."""
        self._wanted = [w for w in self._wanted if w[0] != name]
        self._replan()

    def add_host(self, name: str, ip: str | None = None) -> Member:
        self._wanted.append((name, "host", ip, None, {}))
        return self._replan()[name]

    def _replan(self) -> dict[str, Member]:
        if len({w[0] for w in self._wanted}) != len(self._wanted):
            dup = self._wanted.pop()[0]
            raise ValueError(f"{dup!r} is already a member of cluster {self.name}")
        ips = plan_addresses(self.subnet, [(w[0], w[2]) for w in self._wanted if w[1] == "node"],
                             [(w[0], w[2]) for w in self._wanted if w[1] == "host"])
        self.members = {
            n: Member(name=n, kind=kind, ip=ips[n], netns=names.netns_name(self.name, n),
                      uplink=names.ifname(n), role=role, labels=labels)
            for n, kind, _ip, role, labels in self._wanted
        }
        return self.members

    @property
    def gateway(self) -> str:
        return str(gateway_of(self.subnet))

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
        bridge = self._ensure_underlay(lan)
        progress(f"underlay {self.subnet} ready (bridge {names.UNDERLAY_BRIDGE}, gateway {self.gateway})")
        t1 = time.perf_counter()
        uplinks = lan.links()
        with lan.batch() as attach:
            for m in self.members.values():
                self._ensure_member(self._namespace(m.netns, created), m, lan, uplinks, created)
                link = uplinks.get(m.uplink)
                if not link or link["master"] != bridge or not link["up"]:
                    attach.set_link(m.uplink, master=bridge, up=True)
        self._wait_operational(lan)
        self._bridge_up(lan, bridge)
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

    def _bridge_up(self, lan: kernel.Namespace, bridge: int) -> None:
        """Set the underlay bridge up once its ports are operational: opening it then finds a
        forwarding port, turns its carrier on and activates its qdisc at once.  Opened empty,
        its carrier would come on only at linkwatch's next non-urgent run, up to a second
        later, and until then the gateway address could not answer."""
        with lan.batch() as b:
            b.set_link(names.UNDERLAY_BRIDGE, index=bridge, up=True)
        _wait_links({lan: {names.UNDERLAY_BRIDGE}}, lambda link: link["carrier"], 3.0)

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

    def _ensure_underlay(self, lan: kernel.Namespace) -> int:
        """Bridge, gateway address and forwarding of the underlay; returns the bridge's index."""
        bridge = lan.links().get(names.UNDERLAY_BRIDGE, {}).get("index")
        if bridge is None:
            with lan.batch() as b:
                b.add_bridge(names.UNDERLAY_BRIDGE, self.mtu)
            bridge = lan.index(names.UNDERLAY_BRIDGE)
        with lan.batch() as b:
            b.set_link("lo", index=LOOPBACK_INDEX, up=True)
            b.add_address(bridge, f"{self.gateway}/{self.subnet.prefixlen}")
        # The underlay's router forwards between the LAN and the load-balancer routes later
        # issues add; it is a namespace of its own, so this never touches the host.
        lan.sysctl("net.ipv4.ip_forward", 1)
        return bridge

    def _ensure_member(self, ns: kernel.Namespace, m: Member, lan: kernel.Namespace,
                       uplinks: dict[str, dict], created: list[str]) -> None:
        """The member's eth0 (a veth into the underlay), its address and default route, in one
        batch.  A fresh namespace holds only lo (ifindex 1), so eth0 is created with ifindex 2
        and the same batch can address it; an existing one is asked."""
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
                b.add_veth(names.NODE_UPLINK, m.uplink, lan, self.mtu, index=FIRST_FREE_INDEX)
                eth0 = {"index": FIRST_FREE_INDEX}
            b.set_link("lo", index=LOOPBACK_INDEX, up=True)
            b.set_link(names.NODE_UPLINK, index=eth0["index"], up=True)
            b.add_address(eth0["index"], f"{m.ip}/{self.subnet.prefixlen}")
            b.replace_route("default", gateway=self.gateway)
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
                              bridge=None if self.joined else names.UNDERLAY_BRIDGE),
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
                join.attach(member.netns, uplink, member.ip, self.gateway, created)
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
    c = Cluster(st.name, st.underlay.subnet, st.underlay.mtu, source=st.source, store=st.store)
    for m in st.members:
        if m.kind == "node":
            c.add_node(m.name, role=m.role or "worker", ip=m.ip, labels=m.labels)
        else:
            c.add_host(m.name, ip=m.ip)
    c.phase = st.phase
    c.joined = st.join
    return c
