"""Per-cluster state files under /run/netsim/<cluster>/ (or $NETSIM_STATE_DIR).

The state is written *before* the kernel is touched (phase "creating"), so a `down` after a
killed `up` knows what the cluster was meant to be.  Files are root-only: the scenario may
carry anything a user wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from netsim.kernel import list_netns
from netsim.model.names import NETNS_ROOT, cluster_of_netns

STATE_FILE = "cluster.json"


def state_root() -> Path:
    return Path(os.environ.get("NETSIM_STATE_DIR", "/run/netsim"))


def cluster_dir(cluster: str) -> Path:
    return state_root() / cluster


def read_state(cluster: str) -> dict | None:
    try:
        return json.loads((cluster_dir(cluster) / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_state(cluster: str, state: dict) -> None:
    directory = cluster_dir(cluster)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = directory / f".{STATE_FILE}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2, sort_keys=True)
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
