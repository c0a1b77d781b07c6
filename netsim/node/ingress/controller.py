"""The agent as the controller process of L7 proxy pods: one Debian nginx per proxy pod, run in
the pod's network namespace with a configuration rendered by nginx.py.

Generic over what a proxy is: a ProxyKind says which pods are its proxies (ingress-nginx's
controller image; the gateway helper registers Gateway proxies) and how to compute a pod's
ProxyConfig from the cluster's objects.  ``Proxies`` keeps one ``Nginx`` per proxy pod:
the configuration file is written atomically, checked with ``nginx -t`` and signalled (SIGHUP)
only when its text changed; a dead nginx is started again; ``remove`` stops it and deletes its
directory.  A config is recomputed only when an object of the kind's watched kinds (Ingress,
Service, EndpointSlice, ...) or the pod itself changed.

nginx is started from the agent's long-lived pod-sync thread with PR_SET_PDEATHSIG, so a dead
agent takes the master with it; its worker (which outlives a SIGKILLed master) is found by its
namespace and killed on the next start, and kernel.remove_netns (pod delete, `netsim down`)
kills every process of the namespace anyway.

Knows: netsim.kernel (namespaces, processes), netsim.model (where files go; what a controller pod is), nginx.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from netsim import kernel
from netsim.model import ingress_nginx, state
from netsim.node.ingress import nginx
from netsim.node.ingress.routes import ProxyConfig

log = logging.getLogger("netsim.node.ingress")

NGINX = "/usr/sbin/nginx"
START_TIMEOUT_S = 5.0
RELOAD_TIMEOUT_S = 3.0
INGRESS_KINDS = ("Ingress", "IngressClass", "Service", "EndpointSlice", "Secret")
PR_SET_PDEATHSIG = 1


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (NGINX if os.access(NGINX, os.X_OK) else None)


# -- ingress-nginx's controller pods (what they are and their flags: netsim.model.ingress_nginx) --
def ingress_nginx_config(pod: dict, objects: Callable[[str], list[dict]]) -> ProxyConfig:
    """The ProxyConfig of an ingress-nginx controller pod, as its flags parameterise it."""
    from netsim.node.ingress import ingress  # the Ingress translator (netsim.node.ingress.ingress)

    args = ingress_nginx.controller_args(pod)
    meta = pod["metadata"]
    name = args.publish_service or f"{meta['namespace']}/{meta['name']}"
    return ingress.proxy_config(name, objects("Ingress"), objects("IngressClass"), objects("Service"),
                                objects("EndpointSlice"), objects("Secret"), args=args)


@dataclass(frozen=True)
class ProxyKind:
    """A kind of proxy pod: which pods, and their configuration from the cluster's objects
    (``objects(kind)`` lists the cache's objects of a kind).  ``kinds``: the object kinds whose
    change can change a config; no other change recomputes it."""
    name: str
    claims: Callable[[dict], bool]
    config: Callable[[dict, Callable[[str], list[dict]]], ProxyConfig]
    kinds: tuple[str, ...] = INGRESS_KINDS


INGRESS_NGINX = ProxyKind("ingress-nginx", ingress_nginx.is_controller_pod, ingress_nginx_config)


def listen_ports(config: ProxyConfig) -> set[int]:
    """The ports nginx takes in the pod (the responders keep the pod's other ports)."""
    ports = {config.http_port, config.https_port}
    for s in config.servers:
        ports.update(s.listeners)
    return ports


def claiming(kinds: list[ProxyKind] | tuple[ProxyKind, ...], pod: dict) -> ProxyKind | None:
    """The first of ``kinds`` whose proxy ``pod`` is; None for any other pod and for one on the
    host's network (nginx would take the node's own ports)."""
    if (pod.get("spec") or {}).get("hostNetwork"):
        return None
    return next((k for k in kinds if k.claims(pod)), None)


# -- one nginx -------------------------------------------------------------------------------
def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def nginx_pids_in(netns: str) -> list[int]:
    """nginx processes in a namespace (a master's orphaned worker among them)."""
    if not kernel.netns_exists(netns):
        return []
    out = []
    for pid in kernel.pids_in_netns([netns]):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "nginx":
                out.append(pid)
    return out


def _get(netns: str, path: str, timeout: float = 0.5) -> str | None:
    """GET from the status server inside the pod; None if it does not answer."""
    try:
        with kernel.socket_in(netns, socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(("127.0.0.1", nginx.STATUS_PORT))
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return None
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return body.strip() if head.startswith("HTTP/1.1 200") else None


@dataclass
class Nginx:
    """nginx for one proxy pod: ``apply`` makes it run ``config``; True once it answers with it."""
    netns: str
    prefix: Path
    access_log: Path | None = None
    proc: subprocess.Popen | None = None
    text: str = ""  # the configuration the running master was given
    loaded: str = ""  # the config id the workers were seen answering with
    reloads: int = 0
    last_reload_ms: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def apply(self, config: ProxyConfig) -> bool:
        want = nginx.config_id(config)
        text = nginx.render(config, str(self.prefix), str(self.access_log) if self.access_log else None)
        if self.alive() and text == self.text:
            if self.loaded != want:
                self.loaded = want if self._wait_loaded(want, 0.0) else self.loaded
            return self.loaded == want
        self.prefix.mkdir(mode=0o700, parents=True, exist_ok=True)
        nginx.write_files(config, str(self.prefix))
        candidate = self.prefix / "nginx.conf.new"
        nginx.write_atomic(candidate, text)
        test = subprocess.run([nginx_binary() or NGINX, "-t", "-q", "-p", str(self.prefix), "-c", str(candidate),
                               "-e", "stderr"], capture_output=True, text=True, timeout=30)
        if test.returncode != 0:
            lines = test.stderr.strip().splitlines()
            message = [line for line in lines if "[emerg]" in line][:1] or lines[-1:] or ["nginx -t failed"]
            log.error("nginx %s: the new configuration is refused, keeping the old one: %s", self.prefix.name,
                      message[0])
            self.errors = message
            candidate.unlink(missing_ok=True)
            return self.alive() and bool(self.loaded)
        os.replace(candidate, self.conf)
        self.errors = []
        started = time.monotonic()
        if self.alive():
            old = self.workers()
            self.proc.send_signal(signal.SIGHUP)
            self.reloads += 1
            # Loaded once a new worker answers with it and no old worker still accepts.
            ok = self._wait_loaded(want, RELOAD_TIMEOUT_S, old)
        else:
            self.loaded = ""
            self._start()
            ok = self._wait_loaded(want, START_TIMEOUT_S)
        self.text = text
        if ok:
            self.loaded = want
            self.last_reload_ms = (time.monotonic() - started) * 1000
        return ok

    def _start(self) -> None:
        for pid in nginx_pids_in(self.netns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # an earlier agent's (or master's) leftovers hold the ports
        err = open(self.prefix / "error.log", "ab")  # noqa: SIM115 (handed to the child)
        try:
            with kernel.entered(kernel.netns_path(self.netns)):
                self.proc = subprocess.Popen(
                    [nginx_binary() or NGINX, "-p", str(self.prefix), "-c", str(self.conf), "-e", "stderr",
                     "-g", "daemon off;"],
                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, env={"TZ": "UTC", "PATH": "/usr/sbin:/usr/bin"},
                    preexec_fn=_die_with_parent, close_fds=True)  # noqa: PLW1509 (prctl only)
        finally:
            err.close()
        log.info("nginx %s started (pid %d)", self.prefix.name, self.proc.pid)

    def workers(self) -> list[int]:
        """The master's workers that still accept connections."""
        if not self.alive():
            return []
        out = []
        for pid in nginx_pids_in(self.netns):
            with contextlib.suppress(OSError, IndexError):
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])
                title = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode(errors="replace")
                if ppid == self.proc.pid and title.endswith("worker process"):
                    out.append(pid)
        return out

    def _wait_loaded(self, want: str, timeout: float, old: list[int] = ()) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if _get(self.netns, "/configuration") == want and not set(old) & set(self.workers()):
                return True
            if time.monotonic() >= deadline or not self.alive():
                return False
            time.sleep(0.005)

    def rotate_log(self, max_bytes: int) -> None:
        """The access log past max_bytes moves to .1 and nginx reopens it (SIGUSR1)."""
        if self.access_log is None or not self.alive():
            return
        with contextlib.suppress(FileNotFoundError):
            if self.access_log.stat().st_size > max_bytes:
                os.replace(self.access_log, self.access_log.with_name(self.access_log.name + ".1"))
                self.proc.send_signal(signal.SIGUSR1)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)  # fast shutdown: the master ends its workers
                try:
                    self.proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=3)
            self.proc = None
        kernel.terminate(nginx_pids_in(self.netns), 1.0)
        shutil.rmtree(self.prefix, ignore_errors=True)


# -- every proxy pod of this agent -----------------------------------------------------------
@dataclass
class _Entry:
    kind: ProxyKind
    uid: str
    fingerprint: tuple = ()
    config: ProxyConfig | None = None
    applied: ProxyConfig | None = None  # the config nginx was last seen answering with
    nginx: Nginx | None = None


class Proxies:
    """The proxy pods of one agent.  Per pod sync: ``prepare`` (its config, recomputed only when
    a watched object or the pod changed), then ``run`` (nginx running it, True once it answers);
    ``remove`` when the pod goes, ``close`` when the agent stops."""

    def __init__(self, cluster: str, kinds: list[ProxyKind] | None = None):
        self.cluster = cluster
        self.kinds = list(kinds if kinds is not None else [INGRESS_NGINX])
        self.pods: dict[str, _Entry] = {}
        self._of_kind: Callable[[str], list[dict]] = lambda _kind: []
        self._objects: dict[str, list[dict]] = {}
        self._fingerprints: dict[str, tuple] = {}

    def claims(self, pod: dict) -> ProxyKind | None:
        return claiming(self.kinds, pod)

    def begin(self, of_kind: Callable[[str], list[dict]]) -> None:
        """Once per sync: where the objects come from.  They are listed (and fingerprinted, by
        keys and resourceVersions, to tell whether anything a config depends on changed) only
        when a proxy pod asks, so a cluster without one pays nothing."""
        self._of_kind = of_kind
        self._objects, self._fingerprints = {}, {}

    def _objects_of(self, kind_name: str) -> None:
        kind = next(k for k in self.kinds if k.name == kind_name)
        for k in kind.kinds:
            if k not in self._objects:
                self._objects[k] = self._of_kind(k)
        self._fingerprints[kind.name] = tuple(
            (o["metadata"].get("namespace"), o["metadata"]["name"], o["metadata"].get("resourceVersion"))
            for k in kind.kinds for o in self._objects[k])

    def prepare(self, key: str, pod: dict) -> ProxyConfig | None:
        """The pod's ProxyConfig (None if it is no proxy pod or its config cannot be made)."""
        kind = self.claims(pod)
        if kind is None:
            return None
        if kind.name not in self._fingerprints:
            self._objects_of(kind.name)
        spec = pod.get("spec") or {}
        fingerprint = (self._fingerprints.get(kind.name), repr(spec.get("containers")), pod["metadata"]["uid"])
        entry = self.pods.get(key)
        if entry is not None and entry.uid != pod["metadata"]["uid"]:
            self.remove(key)
            entry = None
        if entry is None:
            entry = self.pods[key] = _Entry(kind, pod["metadata"]["uid"])
        if entry.config is None or entry.fingerprint != fingerprint:
            try:
                entry.config = kind.config(pod, lambda k: self._objects.get(k, []))
                entry.fingerprint = fingerprint
            except Exception:
                log.exception("%s: the configuration of %s could not be computed", kind.name, key)
        return entry.config

    def run(self, key: str, netns: str, log_path: Path | None) -> bool:
        """nginx in ``netns`` serving the prepared config (waiting a bounded time for a reload
        to answer); True while it runs and answers (``settled``: with the current config)."""
        entry = self.pods.get(key)
        if entry is None or entry.config is None:
            return False
        if nginx_binary() is None:
            log.error("no nginx on this machine (scripts/install-deps.sh installs Debian's)")
            return False
        n = entry.nginx
        if n is None or n.netns != netns:
            if n is not None:
                n.stop()
            ns, name = key.split("/", 1)
            prefix = state.cluster_dir(self.cluster) / "proxies" / f"{ns}_{name}_{entry.uid}"
            n = entry.nginx = Nginx(netns, prefix, log_path)
        if n.proc is not None and not n.alive():
            log.warning("nginx of %s exited (%s); starting it again", key, n.proc.returncode)
            n.text = ""
            entry.applied = None
        n.rotate_log(1 << 20)
        if entry.applied is entry.config and n.alive():
            return True  # nothing changed since it answered with this config: no render
        reloads = n.reloads
        if n.apply(entry.config):
            entry.applied = entry.config
            if n.reloads != reloads:
                log.info("nginx of %s reloaded in %.1f ms", key, n.last_reload_ms or 0.0)
        # Ready while nginx runs and has answered with a configuration: a reload still under
        # way (or a refused configuration) does not take the pod out of its Service.
        return n.alive() and bool(n.loaded)

    def settled(self, key: str) -> bool:
        """Whether the pod's nginx answers with its current configuration."""
        entry = self.pods.get(key)
        return entry is None or (entry.config is not None and entry.applied is entry.config)

    def nginx(self, key: str) -> Nginx | None:
        entry = self.pods.get(key)
        return entry.nginx if entry else None

    def remove(self, key: str) -> None:
        entry = self.pods.pop(key, None)
        if entry is not None and entry.nginx is not None:
            entry.nginx.stop()

    def close(self) -> None:
        for key in list(self.pods):
            self.remove(key)


__all__ = ["INGRESS_KINDS", "INGRESS_NGINX", "Nginx", "ProxyKind", "Proxies", "ingress_nginx_config",
           "listen_ports", "nginx_pids_in"]
