"""Per-cluster state files under /run/netsim/<cluster>/ (or $NETSIM_STATE_DIR), and their model.

The state is written *before* the kernel is touched (phase "creating"), so a `down` after a
killed `up` knows what the cluster was meant to be.  Files are root-only: the scenario may
carry anything a user wrote.

:class:`ClusterState` is the file: the fabric (`up`, `join`) writes it and everything else
(`down`, the agent, `status`, the CLI's commands on a running cluster) reads it through
:func:`read_state`.  Its JSON keys are the field names, as the file always had them.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from netsim.kernel import list_netns
from netsim.model.names import NETNS_ROOT, cluster_of_netns

STATE_FILE = "cluster.json"


@dataclass
class Member:
    """A namespace on the underlay: a node, or an external host that is not part of the cluster."""

    name: str
    kind: str  # "node" or "host"
    ip: str
    netns: str
    uplink: str  # this member's veth end inside the underlay namespace
    role: str | None = None  # nodes only: "control-plane" or "worker"
    labels: dict[str, str] = field(default_factory=dict)
    # The underlay segment (L2 subnet) it sits on; files written before segments existed have
    # none, and ClusterState fills in the first segment, where every member then was.
    subnet: str | None = None

    @property
    def cidr(self) -> str:
        """Its eth0 address with the segment's prefix length: "192.168.57.3/24"."""
        return f"{self.ip}/{ipaddress.IPv4Network(self.subnet).prefixlen}" if self.subnet else self.ip


@dataclass
class Uplink:
    """A joined machine's NIC as it was before it was given to the node: what `down` restores."""

    name: str
    mac: str
    mtu: int
    up: bool
    addresses: list[dict] = field(default_factory=list)  # [{cidr, broadcast}]
    routes: list[dict] = field(default_factory=list)  # route_entries() through it, kernel routes left out


@dataclass
class Joined:
    """This machine's part of a multi-machine cluster (`netsim join`)."""

    node: str
    uplink: Uplink
    controllers: bool = False  # whether this machine's agent runs the controllers


@dataclass
class Segment:
    """One L2 segment of the underlay ("a rack"): a bridge in the underlay's namespace holding
    the router's address on it."""

    subnet: str
    gateway: str
    bridge: str | None = None  # None on a joined machine


@dataclass
class Underlay:
    # The first (default) segment's subnet, gateway and bridge, as the file always had them.
    subnet: str
    gateway: str
    mtu: int
    # The underlay's namespace and bridge; None on a joined machine, whose underlay is the
    # real LAN its NIC is on.
    netns: str | None = None
    bridge: str | None = None
    # Every segment, the first one first; the underlay's namespace routes between them.
    # Empty in files written before segments existed: ClusterState fills in the one segment.
    segments: list[Segment] = field(default_factory=list)

    def segment(self, subnet: str | None) -> Segment:
        """The segment of ``subnet`` (a member's), the first one for None."""
        return next((s for s in self.segments if s.subnet == subnet), self.segments[0])


class ClusterState(BaseModel):
    # Keys this version does not know (a file from another netsim) are dropped on purpose:
    # `up` rewrites the whole file from its Cluster, so none of them would survive anyway.
    model_config = ConfigDict(extra="ignore")

    name: str
    phase: str  # "creating" until `up` or `join` has finished, then "up"
    underlay: Underlay
    source: str | None = None  # the scenario file `up` was given
    store: str | None = None  # the control-plane store's URL
    join: Joined | None = None
    members: list[Member] = []
    # The scenario as written (aliases and all), kept as JSON rather than re-validated: it is a
    # record of what the user asked for, and a stricter later version must still read it.
    scenario: dict[str, Any] | None = None
    updated: float = 0.0  # time.time() of the write

    @model_validator(mode="after")
    def _one_segment_before_segments(self) -> ClusterState:
        """A file from before segments: one segment, the underlay's, holding every member."""
        u = self.underlay
        if not u.segments:
            u.segments = [Segment(u.subnet, u.gateway, u.bridge)]
        for m in self.members:
            if m.subnet is None:
                m.subnet = u.segments[0].subnet
        return self

    def nodes(self) -> list[Member]:
        return [m for m in self.members if m.kind == "node"]

    def hosts(self) -> list[Member]:
        return [m for m in self.members if m.kind == "host"]

    def cluster_roles(self) -> list[str | None]:
        """The role of every node of the cluster, also those on other machines: a joined
        machine's members hold its one node, its scenario all of them."""
        if self.join:
            return [n.get("role") for n in (self.scenario or {}).get("nodes", [])]
        return [m.role for m in self.nodes()]


def state_root() -> Path:
    return Path(os.environ.get("NETSIM_STATE_DIR", "/run/netsim"))


def cluster_dir(cluster: str) -> Path:
    return state_root() / cluster


def read_state(cluster: str) -> ClusterState | None:
    """None when the cluster has no state here, or state that is not a cluster's (a torn or
    foreign file): callers treat both as "no state", as `status` shows and `down` cleans up."""
    try:
        return ClusterState.model_validate_json((cluster_dir(cluster) / STATE_FILE).read_text())
    except (FileNotFoundError, ValidationError):
        return None


def write_state(cluster: str, state: ClusterState) -> None:
    directory = cluster_dir(cluster)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = directory / f".{STATE_FILE}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state.model_dump(mode="json"), f, indent=2, sort_keys=True)
    os.replace(tmp, directory / STATE_FILE)


def remove_state(cluster: str) -> None:
    shutil.rmtree(cluster_dir(cluster), ignore_errors=True)


@contextlib.contextmanager
def state_lock() -> Iterator[None]:
    """Serialise `up` and `down` across processes.  The lock is the state directory itself,
    so it leaves no lock file behind."""
    root = state_root()
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_state_root_if_empty() -> None:
    with contextlib.suppress(OSError):
        state_root().rmdir()


def known_clusters() -> list[str]:
    """Clusters with state or with namespaces on this host (a crashed `up` may leave either)."""
    names = set()
    root = state_root()
    if root.is_dir():
        names.update(p.name for p in root.iterdir() if p.is_dir() and (p / STATE_FILE).exists())
    for ns in list_netns(NETNS_ROOT + "."):
        cluster = cluster_of_netns(ns)
        if cluster:
            names.add(cluster)
    return sorted(names)
