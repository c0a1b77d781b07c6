"""flanneld's subnet manager, on netsim's control-plane store, in flannel's own layout.

    /coreos.com/network/config             {"Network", "SubnetLen", "Backend": {"Type", "VNI", "Port", ...}}
    /coreos.com/network/subnets/<a.b.c.d-len>   {"PublicIP", "BackendType", "BackendData": {"VNI", "VtepMAC"}}

(the store adds its resourceVersion under "metadata", which flannel's readers ignore).  Each
node holds one lease, found again by its PublicIP after a restart; the node's spec.podCIDR
shows it.  The kernel side (flannel.1, fdb, neighbours, routes, masquerade) is
netsim.node.overlay; this module only decides who has which subnet.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass

from netsim.api.store import AlreadyExists, Conflict, NotFound, Store, StoreError
from netsim.model import k8s

log = logging.getLogger("netsim.node.flanneld")

PREFIX = "/coreos.com/network/"
CONFIG_KEY = PREFIX + "config"
SUBNETS = PREFIX + "subnets/"
DEFAULT_VNI = 1
DEFAULT_PORT = 8472


@dataclass(frozen=True)
class NetworkConfig:
    network: ipaddress.IPv4Network
    subnet_len: int
    backend_type: str = "vxlan"
    vni: int = DEFAULT_VNI
    port: int = DEFAULT_PORT
    direct_routing: bool = False

    def to_json(self) -> dict:
        backend: dict = {"Type": self.backend_type}
        if self.backend_type == "vxlan":
            backend.update(VNI=self.vni, Port=self.port, DirectRouting=self.direct_routing)
        return {"Network": str(self.network), "SubnetLen": self.subnet_len, "Backend": backend}

    @classmethod
    def from_json(cls, d: dict) -> NetworkConfig:
        backend = d.get("Backend") or {}
        return cls(ipaddress.IPv4Network(d["Network"]), int(d.get("SubnetLen", 24)),
                   backend.get("Type", "vxlan"), int(backend.get("VNI", DEFAULT_VNI)),
                   int(backend.get("Port", DEFAULT_PORT)), bool(backend.get("DirectRouting", False)))


@dataclass(frozen=True)
class Lease:
    subnet: ipaddress.IPv4Network
    public_ip: str
    backend_type: str
    vtep_mac: str | None


def write_config(store: Store, config: NetworkConfig) -> None:
    store.put(CONFIG_KEY, config.to_json())


def read_config(store: Store) -> NetworkConfig:
    return NetworkConfig.from_json(store.get(CONFIG_KEY))


def lease_key(subnet: ipaddress.IPv4Network) -> str:
    return f"{SUBNETS}{subnet.network_address}-{subnet.prefixlen}"


def leases(store: Store) -> tuple[list[Lease], int]:
    """Every lease, and the revision they are consistent at."""
    items, rev = store.list(SUBNETS)
    out = []
    for value in items:
        try:
            subnet = ipaddress.IPv4Network(value["Subnet"])
        except (KeyError, TypeError, ValueError):
            continue
        data = value.get("BackendData") or {}
        out.append(Lease(subnet, value.get("PublicIP", ""), value.get("BackendType", ""), data.get("VtepMAC")))
    return out, rev


def _lease_value(subnet: ipaddress.IPv4Network, public_ip: str, config: NetworkConfig, vtep_mac: str | None) -> dict:
    value: dict = {"PublicIP": public_ip, "BackendType": config.backend_type,
                   # The key names the subnet; flannel's readers take it from there.  It is kept
                   # in the value too, because a store listing returns values only.
                   "Subnet": str(subnet)}
    if config.backend_type == "vxlan":
        value["BackendData"] = {"VNI": config.vni, "VtepMAC": vtep_mac}
    return value


def acquire(store: Store, config: NetworkConfig, public_ip: str, vtep_mac: str | None) -> ipaddress.IPv4Network:
    """The subnet this node holds: its existing lease (by PublicIP, refreshed if its backend
    data changed), else the first free subnet of the network, claimed atomically."""
    for _ in range(10):
        held, _ = leases(store)
        mine = [lease for lease in held if lease.public_ip == public_ip]
        if mine:
            lease = mine[0]
            want = _lease_value(lease.subnet, public_ip, config, vtep_mac)
            key = lease_key(lease.subnet)
            try:
                have = store.get(key)
            except NotFound:
                continue
            if any(have.get(k) != v for k, v in want.items()):
                try:
                    store.update(key, want, int(have["metadata"]["resourceVersion"]))
                except (Conflict, NotFound):
                    continue
            return lease.subnet
        taken = {lease.subnet for lease in held}
        free = next((s for s in config.network.subnets(new_prefix=config.subnet_len) if s not in taken), None)
        if free is None:
            raise RuntimeError(f"flannel: network {config.network} has no free /{config.subnet_len} left")
        try:
            store.create(lease_key(free), _lease_value(free, public_ip, config, vtep_mac))
        except AlreadyExists:
            continue  # another node took it first: look again
        return free
    raise RuntimeError(f"flannel: could not acquire a lease for {public_ip} (too much contention)")


def release(store: Store, public_ip: str) -> list[str]:
    """Delete the leases of a node that left; the subnets they name."""
    gone = []
    for lease in leases(store)[0]:
        if lease.public_ip == public_ip:
            try:
                store.delete(lease_key(lease.subnet))
                gone.append(str(lease.subnet))
            except NotFound:
                pass
    return gone


# -- the daemon -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalNode:
    name: str
    netns: str
    ip: str
    uplink: str = "eth0"
    # Its underlay segment's prefix length (segments may differ); None: the underlay subnet's.
    prefixlen: int | None = None


class Flanneld:
    """flanneld for the nodes one agent runs: a lease each, then the overlay of every node
    converged to all current leases, again whenever a lease or the config changes (a watch
    on /coreos.com/network/) and at least every ``resync_s``."""

    def __init__(self, store: Store, nodes: list[LocalNode], underlay_subnet: str, underlay_mtu: int, stop,
                 resync_s: float = 10.0):
        self.store = store
        self.nodes = nodes
        self.underlay = ipaddress.IPv4Network(underlay_subnet)
        self.underlay_mtu = underlay_mtu
        self.stop = stop
        self.resync_s = resync_s
        self.config: NetworkConfig | None = None
        self.subnets: dict[str, ipaddress.IPv4Network] = {}
        self.off_link: dict[str, set[tuple[str, str]]] = {}  # node -> host-gw routes it cannot have, as said

    def backend(self):
        from netsim.node import overlay

        c = self.config
        return overlay.Backend(c.backend_type, c.vni, c.port, c.direct_routing)

    def mtu(self) -> int:
        from netsim.node import overlay

        return overlay.mtu_for(self.backend(), self.underlay_mtu)

    def acquire_all(self) -> dict[str, ipaddress.IPv4Network]:
        """(Re)read the config and hold a lease per node; returns node -> subnet."""
        from netsim.node import overlay

        self.config = read_config(self.store)
        for node in self.nodes:
            mac = overlay.vtep_mac(node.name) if self.config.backend_type == "vxlan" else None
            self.subnets[node.name] = acquire(self.store, self.config, node.ip, mac)
        return dict(self.subnets)

    def converge(self) -> int:
        """One pass over every local node; returns the store revision it reflects."""
        from netsim.node import overlay

        held, rev = leases(self.store)
        backend = self.backend()
        for node in self.nodes:
            subnet = self.subnets.get(node.name)
            if subnet is None:
                continue
            remotes = [overlay.Lease(str(lease.subnet), lease.public_ip, lease.vtep_mac) for lease in held
                       if lease.public_ip != node.ip and lease.subnet != subnet]
            prefixlen = node.prefixlen or self.underlay.prefixlen
            changed = overlay.converge(
                node.netns, node_ip=node.ip, underlay_prefixlen=prefixlen, uplink=node.uplink,
                network=str(self.config.network), subnet=str(subnet), backend=backend,
                mac=overlay.vtep_mac(node.name), underlay_mtu=self.underlay_mtu, remotes=remotes)
            if changed and any(changed.values()):
                log.info("flannel %s: %s", node.name, changed)
            self._report_off_link(node, overlay.off_link(backend, node.ip, prefixlen, remotes))
        return rev

    def _report_off_link(self, node: LocalNode, missing: list) -> None:
        """Say once (per change) which host-gw routes this node cannot have, as flanneld logs
        each route the kernel refuses, naming the nodes and the fix."""
        now = {(lease.subnet, lease.public_ip) for lease in missing}
        if now == self.off_link.get(node.name, set()):
            return
        self.off_link[node.name] = now
        if not now:
            return
        owners = self._node_names()
        for subnet, ip in sorted(now):
            log.error("flannel %s: error adding route to %s via %s dev %s: network is unreachable (node %s at %s "
                      "is on another underlay segment than %s at %s/%s; host-gw routes need L2 adjacency). "
                      "fix: use networking.backend: vxlan (directRouting: true keeps direct routes within a "
                      "segment), or put the nodes on one segment", node.name, subnet, ip, node.uplink,
                      owners.get(ip, "?"), ip, node.name, node.ip, node.prefixlen or self.underlay.prefixlen)

    def _node_names(self) -> dict[str, str]:
        """InternalIP -> node name, from the Node objects (a lease names only the address)."""
        try:
            nodes = self.store.list(k8s.prefix("Node"))[0]
        except StoreError:
            return {}
        return {a["address"]: n["metadata"]["name"] for n in nodes
                for a in n.get("status", {}).get("addresses", []) if a.get("type") == "InternalIP"}

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                config = read_config(self.store)
                if config != self.config:
                    self.acquire_all()
                rev = self.converge()
            except Exception:  # a failed pass is retried; the agent must not die of it
                log.exception("flannel: converge failed; retrying in 1s")
                self.stop.wait(1.0)
                continue
            self._wait_for_change(rev)

    def _wait_for_change(self, rev: int) -> None:
        """Until a write under /coreos.com/network/ after ``rev``, the resync period, or stop."""
        deadline = time.monotonic() + self.resync_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                for _event in self.store.watch(PREFIX, after=rev, timeout=1.0):
                    return
            except StoreError as exc:
                log.warning("flannel: watch failed (%s)", exc)
                self.stop.wait(0.5)
