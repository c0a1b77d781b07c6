"""The agent as a background process of a cluster: started by `up`, found and stopped by `down`.

Agents are found by their command line (``netsim agent --cluster NAME``), not only by a pid
file, so a `down` after a lost state directory still stops them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from netsim.kernel import terminate
from netsim.model import state

LOG_FILE = "agent.log"


def _processes() -> list[tuple[int, list[str]]]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        out.append((int(entry), [a.decode(errors="replace") for a in argv]))
    return out


def agent_pids(cluster: str | None) -> list[int]:
    """The agents of ``cluster``, or of every cluster with None."""
    return [pid for pid, args in _processes()
            if "agent" in args and "netsim" in " ".join(args[:3])
            and (cluster is None or _cluster_arg(args) == cluster)]


def agent_clusters() -> list[str]:
    """The clusters whose agent runs here."""
    return sorted({c for _, args in _processes() if "agent" in args and "netsim" in " ".join(args[:3])
                   and (c := _cluster_arg(args))})


def plugin_server_pids() -> list[int]:
    """CNI plugin server processes (an agent's pool workers end with their agent)."""
    return [pid for pid, args in _processes() if "netsim.cni.server" in args]


def _cluster_arg(args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "--cluster" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--cluster="):
            return a.split("=", 1)[1]
    return None


def start_agent(cluster: str, store_url: str, controllers: bool = True, nodes: list[str] | None = None) -> int:
    log_path = state.cluster_dir(cluster) / LOG_FILE
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    cmd = [sys.executable, "-m", "netsim", "agent", "--cluster", cluster, "--store", store_url]
    for node in nodes or []:
        cmd += ["--node", node]
    if controllers:
        cmd.append("--controllers")
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True,
                                close_fds=True)
    finally:
        os.close(fd)
    return proc.pid


def stop_agents(cluster: str, grace: float = 5.0) -> list[int]:
    """SIGTERM the cluster's agents, SIGKILL what is left after ``grace`` seconds."""
    pids = agent_pids(cluster)
    terminate(pids, grace)
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap, when this process started it (`up` after a restart)
    return pids
