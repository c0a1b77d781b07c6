"""BGP as calico/node does it: one Debian BIRD 1.6.8 per node namespace with the configuration
calico/node's confd would write (birdcfg.render, re-exported here), so node-to-node sessions are
real TCP 179 sessions and each node learns the others' IPAM blocks.

``Birds`` runs the daemons: `bird -c CFG -s CTL -P PID -R` started inside the node's namespace
(it daemonises, so an agent that dies or restarts leaves BGP up and the next agent adopts it),
files under netsim.model.state.cluster_dir(cluster)/bird/<node>.cfg|.ctl|.pid|.log; a new config is
checked with `bird -p` and loaded with the control socket's `configure` (what `birdc configure`
sends); ``check`` starts a dead one again (-R: graceful restart recovery, so the routes the kernel
kept are not flushed while the sessions come back).  ``protocols`` reads `show protocols` from a
control socket as `calicoctl node status` does.  ``kill_leftovers`` is `netsim down`'s.

Knows: netsim.kernel (namespaces, processes), netsim.model (state paths), birdcfg.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from netsim import kernel
from netsim.model import state
from netsim.node.calico.birdcfg import (  # noqa: F401 (the contract's names live in bird)
    ANNOTATION_AS,
    ANNOTATION_IPV4,
    ANNOTATION_RR,
    KINDS,
    Facts,
    NodeNotReady,
    render,
)
from netsim.node.podnet import write_file

log = logging.getLogger("netsim.node.calico.bird")

BIRD = "/usr/sbin/bird"
CHECK_S = 2.0  # how often the agent's loop looks for a dead BIRD (sync returns it)
START_TIMEOUT_S = 10.0
STOP_GRACE_S = 3.0
PEER_TYPES = {"Global": "global", "Mesh": "node-to-node mesh", "Node": "node specific"}
_PEER_NAME = re.compile(r"^(Global|Node|Mesh)_(.+)$")


class BirdError(RuntimeError):
    pass


# -- the control socket ---------------------------------------------------------------------
def command(ctl: str | Path, line: str, timeout: float = 2.0) -> list[tuple[int, str]]:
    """One command on a BIRD control socket, as birdc sends it: [(reply code, text)], the
    continuation lines carrying the code of the line they continue.  BirdError when BIRD does
    not answer or answers with an error code (8xxx, 9xxx)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(ctl))
            f = s.makefile("rb")
            banner = f.readline().decode(errors="replace")
            if not banner.startswith("0001"):
                raise BirdError(f"{ctl}: not a BIRD control socket (it said {banner.strip()!r})")
            s.sendall(line.encode() + b"\n")
            out: list[tuple[int, str]] = []
            code = 0
            while True:
                raw = f.readline()
                if not raw:
                    raise BirdError(f"{ctl}: BIRD closed the socket during {line!r}")
                text = raw.decode(errors="replace").rstrip("\n")
                if text.startswith(" "):
                    out.append((code, text[1:]))
                    continue
                if len(text) < 5 or not text[:4].isdigit():
                    raise BirdError(f"{ctl}: unexpected reply line {text!r}")
                code = int(text[:4])
                out.append((code, text[5:]))
                if text[4] == " ":
                    break
    except OSError as exc:
        raise BirdError(f"{ctl}: BIRD does not answer: {exc}") from None
    if code >= 8000:
        raise BirdError(f"{ctl}: {line}: {out[-1][1]}")
    return out


def protocols(ctl_path: str | Path, timeout: float = 2.0) -> list[dict]:
    """`show protocols` read from a BIRD control socket, as calicoctl node status reads it: one row
    per Calico BGP peer (Mesh_/Node_/Global_ protocols) with peerAddress, peerType, state ("up",
    "start"), since, info ("Established", "Active Socket: Connection refused", ...), and name."""
    lines = command(ctl_path, "show protocols", timeout)
    headings = next((text.split() for code, text in lines if code == 2002), None)
    if headings != ["name", "proto", "table", "state", "since", "info"]:
        raise BirdError(f"{ctl_path}: unknown `show protocols` headings {headings!r} (calicoctl needs BIRD 1.x's)")
    rows = []
    for code, text in lines:
        cols = text.split()
        if code != 1002 or len(cols) < 6 or cols[1] != "BGP":
            continue
        m = _PEER_NAME.match(cols[0])
        if m is None:
            continue
        rows.append({"name": cols[0], "peerAddress": m.group(2).split("_port_")[0].replace("_", "."),
                     "peerType": PEER_TYPES[m.group(1)], "state": cols[3], "since": cols[4],
                     "info": " ".join(cols[5:])})
    return rows


# -- the daemons ------------------------------------------------------------------------------
def bird_dir(cluster: str) -> Path:
    return state.cluster_dir(cluster) / "bird"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def bird_pids(directory: Path) -> list[int]:
    """BIRD processes whose files are under ``directory`` (found by command line, so also those
    whose pid file or namespace is gone)."""
    marker = str(directory) + "/"
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() == "bird" and marker in _cmdline(int(entry)):
                    out.append(int(entry))
    return out


def _bird_binary() -> str:
    return shutil.which("bird") or BIRD


def check_config(path: str | Path) -> str | None:
    """`bird -p`: None when BIRD accepts the file, else its message."""
    try:
        res = subprocess.run([_bird_binary(), "-p", "-c", str(path)], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return f"{BIRD} not found; install Debian's bird package (scripts/install-deps.sh)"
    if res.returncode == 0:
        return None
    return (res.stderr.strip() or res.stdout.strip() or f"bird -p exited {res.returncode}").splitlines()[-1]


@dataclass
class Bird:
    """One node's BIRD: its files, and the config the running daemon was last given."""
    node: str
    netns: str
    directory: Path
    text: str = ""
    restarts: int = 0
    errors: list[str] = field(default_factory=list)

    def path(self, suffix: str) -> Path:
        return self.directory / f"{self.node}.{suffix}"

    @property
    def cfg(self) -> Path:
        return self.path("cfg")

    @property
    def ctl(self) -> Path:
        return self.path("ctl")

    @property
    def pidfile(self) -> Path:
        return self.path("pid")

    def pid(self) -> int | None:
        """The running daemon's pid, if it is alive and is this node's BIRD."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if kernel.process_alive(pid) and f"-s {self.ctl} " in _cmdline(pid) + " ":
            return pid
        return None

    def alive(self) -> bool:
        return self.pid() is not None

    def apply(self, text: str) -> bool:
        """Make the daemon run ``text``: validate, write, then `configure` a live one or start one."""
        running = self.alive()
        if running and text == self.text:
            return True
        on_disk = self.cfg.read_text() if self.cfg.exists() else None
        if on_disk != text:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            candidate = self.path("cfg.new")
            write_file(candidate, text, 0o600)
            problem = check_config(candidate)
            if problem:
                candidate.unlink(missing_ok=True)
                self.errors = [problem]
                log.error("bird %s: the new configuration is refused, keeping the old one: %s", self.node, problem)
                return running
            os.replace(candidate, self.cfg)
        self.errors = []
        if running:
            if on_disk != text:
                command(self.ctl, "configure", timeout=10)
                log.info("bird %s: configuration reloaded", self.node)
        else:
            self.start()
        self.text = text
        return True

    def start(self) -> None:
        for pid in bird_pids(self.directory):
            if f"-s {self.ctl} " in _cmdline(pid) + " ":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # a hung or orphaned one holds the socket
        self.ctl.unlink(missing_ok=True)
        self.pidfile.unlink(missing_ok=True)
        argv = [_bird_binary(), "-c", str(self.cfg), "-s", str(self.ctl), "-P", str(self.pidfile), "-R"]
        # BIRD daemonises after reading its config: the parent's exit status tells whether it
        # started, and the daemon keeps running in the namespace the thread stood in.
        with kernel.entered(kernel.netns_path(self.netns)):
            res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
                                 env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TZ": "UTC"})
        if res.returncode != 0:
            raise BirdError(f"bird {self.node}: {' '.join(argv)} exited {res.returncode}: "
                            f"{(res.stderr or res.stdout).strip()}")
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            pid = self.pid()
            if pid is not None and self.ctl.exists():
                with contextlib.suppress(BirdError):
                    command(self.ctl, "show status", timeout=1)
                    log.info("bird %s started in %s (pid %d)", self.node, self.netns, pid)
                    return
            if time.monotonic() >= deadline:
                raise BirdError(f"bird {self.node}: no pid file or control socket after {START_TIMEOUT_S:.0f}s")
            time.sleep(0.02)

    def stop(self, remove: bool = True) -> None:
        """SIGTERM (BIRD says goodbye to its peers; `persist` keeps its kernel routes), then SIGKILL."""
        pids = [p for p in bird_pids(self.directory) if f"-s {self.ctl} " in _cmdline(p) + " "]
        kernel.terminate(pids, STOP_GRACE_S)
        if remove:
            for suffix in ("ctl", "pid", "cfg", "cfg.new"):
                self.path(suffix).unlink(missing_ok=True)
        self.text = ""


def local_nodes(cluster: str) -> dict[str, str]:
    """This machine's nodes of ``cluster`` (name -> namespace): the state file's nodes whose
    namespace exists here."""
    st = state.read_state(cluster)
    if st is None:
        return {}
    return {m.name: m.netns for m in st.nodes() if kernel.netns_exists(m.netns)}


class Birds:
    """One BIRD per local node.  ``sync(source)`` renders each node's config from the objects
    (a Cache, a Store, a Facts or dicts), loads changed ones and starts missing or dead ones;
    it returns CHECK_S so an informer Loop calls it again to restart a BIRD that died."""

    def __init__(self, cluster: str, stop: threading.Event, nodes: Mapping[str, str] | None = None,
                 directory: str | Path | None = None):
        self.cluster = cluster
        self.stop = stop
        self.directory = Path(directory).resolve() if directory is not None else bird_dir(cluster)
        wanted = local_nodes(cluster) if nodes is None else dict(nodes)
        self.birds = {name: Bird(name, netns, self.directory) for name, netns in wanted.items()}
        self.errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def log_path(self, node: str) -> str:
        return str(self.directory / f"{node}.log")

    def ctl(self, node: str) -> Path:
        return self.birds[node].ctl

    def sync(self, source) -> float | None:
        facts = Facts.read(source)
        with self._lock:
            if self.stop.is_set():
                return None
            for name, b in self.birds.items():
                try:
                    text = render(name, facts, log_path=self.log_path(name))
                except ValueError as exc:  # NodeNotReady among them: Felix's startup has not run yet
                    if self.errors.get(name) != str(exc):
                        log.info("bird %s: not started: %s", name, exc)
                    self.errors[name] = str(exc)
                    continue
                try:
                    alive = b.alive()
                    if not b.text and alive and b.cfg.exists() and b.cfg.read_text() == text:
                        b.text = text  # an earlier agent's BIRD, already on this config: adopt it
                    elif b.text and not alive:
                        log.warning("bird %s died; starting it again (graceful restart recovery)", name)
                        b.restarts += 1
                    b.apply(text)
                    self.errors.pop(name, None)
                except (BirdError, OSError, subprocess.SubprocessError) as exc:
                    self.errors[name] = str(exc)
                    log.error("bird %s: %s", name, exc)
        return CHECK_S

    def check(self) -> list[str]:
        """Start again every BIRD that was running and died; returns their nodes."""
        restarted = []
        with self._lock:
            for name, b in self.birds.items():
                if not b.text or self.stop.is_set() or b.alive():
                    continue
                log.warning("bird %s died; starting it again (graceful restart recovery)", name)
                try:
                    b.start()
                    b.restarts += 1
                    restarted.append(name)
                except (BirdError, OSError, subprocess.SubprocessError) as exc:
                    self.errors[name] = str(exc)
                    log.error("bird %s: %s", name, exc)
        return restarted

    def stop_all(self) -> None:
        with self._lock:
            for b in self.birds.values():
                b.stop()
            with contextlib.suppress(OSError):
                self.directory.rmdir()  # only once empty: the logs stay for a post-mortem


def kill_leftovers(cluster: str, directory: str | Path | None = None) -> list[int]:
    """`netsim down`: every BIRD of the cluster, by its files' directory on its command line
    (so also after the agent was SIGKILLed or the namespaces are gone), then the directory."""
    where = Path(directory).resolve() if directory is not None else bird_dir(cluster)
    pids = bird_pids(where)
    kernel.terminate(pids, STOP_GRACE_S)
    shutil.rmtree(where, ignore_errors=True)
    return pids
