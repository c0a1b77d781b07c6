"""The API server as a process of its cluster: `netsim apiserver --cluster NAME --store URL`,
started by `up` (and by `join` on the control-plane node's machine), found by its command line
(also by `down --all` when the cluster's state is gone) and stopped by `down`, like the agents
(netsim.fabric.daemon).

It listens on 127.0.0.1 on a free port, and on the control-plane node's address :6443 inside
the node's network namespace (where the kubernetes Service sends pods), and writes where it
listens to ``apiserver.json`` in the state directory once both sockets are bound.
The server itself (what runs in that process) is netsim.apiserver.server; this module stays
light, so that `down` and `up` load no HTTP stack to find, start or stop it.
May import: the standard library, netsim.kernel and netsim.model."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from netsim import kernel
from netsim.model import state

LOG_FILE = "apiserver.log"
INFO_FILE = "apiserver.json"
SECURE_PORT = 6443


def info_path(cluster: str) -> Path:
    return state.cluster_dir(cluster) / INFO_FILE


def read_info(cluster: str) -> dict | None:
    try:
        return json.loads(info_path(cluster).read_text())
    except (OSError, ValueError):
        return None


def server_url(cluster: str) -> str | None:
    info = read_info(cluster)
    return f"https://127.0.0.1:{info['port']}" if info else None


# -- the process ------------------------------------------------------------------------------

# -- finding, starting, stopping --------------------------------------------------------------

def _cluster_arg(args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "--cluster" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--cluster="):
            return a.split("=", 1)[1]
    return None


def _processes() -> list[tuple[int, list[str]]]:
    """(pid, argv) of every `netsim apiserver` process."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            args = [a.decode(errors="replace") for a in Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        if "apiserver" in args and "netsim" in " ".join(args[:3]):
            out.append((int(entry), args))
    return out


def pids(cluster: str | None) -> list[int]:
    """The API server processes of ``cluster`` (of every cluster with None), by command line."""
    return [pid for pid, args in _processes() if cluster is None or _cluster_arg(args) == cluster]


def clusters() -> list[str]:
    """The clusters whose API server runs here."""
    return sorted({c for _, args in _processes() if (c := _cluster_arg(args))})


def launch(cluster: str, store_url: str, node_netns: str | None, node_ip: str | None) -> subprocess.Popen:
    """Start the cluster's server (after stopping one that runs) without waiting for it: its
    imports and certificate loading overlap the rest of the bring-up (see wait_listening)."""
    stop(cluster)
    with contextlib.suppress(FileNotFoundError):
        info_path(cluster).unlink()
    log_path = state.cluster_dir(cluster) / LOG_FILE
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    cmd = [sys.executable, "-m", "netsim", "apiserver", "--cluster", cluster, "--store", store_url]
    if node_netns and node_ip:
        cmd += ["--node-netns", node_netns, "--node-address", node_ip]
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True,
                                close_fds=True)
    finally:
        os.close(fd)


def wait_listening(cluster: str, proc: subprocess.Popen, timeout: float) -> dict:
    """The launched server's info once it listens; RuntimeError with its log's end (and the
    server killed) if it exits or does not listen within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_info(cluster)
        if info and info.get("pid") == proc.pid:
            return info
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()
    log_path = state.cluster_dir(cluster) / LOG_FILE
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-5:]) if log_path.exists() else ""
    raise RuntimeError(f"the API server did not start within {timeout:g}s; {log_path} ends with:\n{tail}")


def start(cluster: str, store_url: str, node_netns: str | None, node_ip: str | None, timeout: float = 60.0) -> dict:
    """launch, then wait_listening."""
    return wait_listening(cluster, launch(cluster, store_url, node_netns, node_ip), timeout)


def stop(cluster: str, grace: float = 5.0) -> list[int]:
    found = pids(cluster)
    kernel.terminate(found, grace)
    for pid in found:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
    with contextlib.suppress(FileNotFoundError):
        info_path(cluster).unlink()
    return found
