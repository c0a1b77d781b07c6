"""The API server as a process of its cluster: `netsim apiserver --cluster NAME --store URL`,
started by `up` (and by `join` on the control-plane node's machine), found by its command line
(also by `down --all` when the cluster's state is gone) and stopped by `down`, like the agents
(netsim.fabric.daemon).

It listens on 127.0.0.1 on a free port, and on the control-plane node's address :6443 inside
the node's network namespace (where the kubernetes Service sends pods), and writes where it
listens to ``apiserver.json`` in the state directory once both sockets are bound.
May import: the standard library, aiohttp, netsim.kernel, netsim.model, netsim.api and
netsim.apiserver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web

from netsim import kernel
from netsim.api.store import open_store
from netsim.apiserver import pki
from netsim.apiserver.app import make_app
from netsim.model import state

LOG_FILE = "apiserver.log"
INFO_FILE = "apiserver.json"
SECURE_PORT = 6443

log = logging.getLogger("netsim.apiserver")


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

def ssl_context(p: pki.Paths) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(p.ca_crt))
    ctx.load_cert_chain(str(p.server_crt), str(p.server_key))
    # Optional, not required: a client without a certificate gets a 401 Status (as from
    # kube-apiserver), not a failed handshake; one with a certificate of another CA still fails.
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def _listener(address: str, port: int, netns: str | None) -> socket.socket:
    sock = kernel.socket_in(netns, socket.AF_INET, socket.SOCK_STREAM) if netns else \
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(512)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def serve(cluster: str, store_url: str, node_netns: str | None, node_ip: str | None) -> None:
    """Run the server until SIGTERM/SIGINT."""
    p = pki.paths(cluster)
    store = open_store(store_url)
    loopback = _listener("127.0.0.1", 0, None)
    in_node = _listener(node_ip, SECURE_PORT, node_netns) if node_netns and node_ip else None
    ctx = ssl_context(p)

    async def main() -> None:
        app = make_app(store, cluster)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.SockSite(runner, loopback, ssl_context=ctx).start()
        if in_node is not None:
            await web.SockSite(runner, in_node, ssl_context=ctx).start()
        port = loopback.getsockname()[1]
        tmp = info_path(cluster).with_name(f".{INFO_FILE}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "port": port, "nodeAddress": node_ip}, f)
        os.replace(tmp, info_path(cluster))
        log.info("serving on https://127.0.0.1:%d%s", port, f" and https://{node_ip}:{SECURE_PORT}" if in_node else "")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        with contextlib.suppress(OSError):
            info = read_info(cluster)
            if info and info.get("pid") == os.getpid():
                info_path(cluster).unlink()
        store.close()


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
