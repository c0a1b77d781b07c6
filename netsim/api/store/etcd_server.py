"""A throwaway single-member etcd for tests and benchmarks: its own data directory and free
loopback ports, so it never meets the system's etcd (2379) or another run's."""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from netsim import kernel


class EtcdStartError(RuntimeError):
    pass


def find_etcd() -> str | None:
    """The etcd binary (Debian's etcd-server package puts it in /usr/bin), or None."""
    return shutil.which("etcd") or next((p for p in ("/usr/bin/etcd",) if os.access(p, os.X_OK)), None)


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills etcd when its parent dies, so even a test run
    killed with SIGKILL leaves no etcd behind."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@contextlib.contextmanager
def _inside(netns: str | None) -> Iterator[None]:
    if netns is None:
        yield
    else:
        with kernel.entered(kernel.netns_path(netns)):
            yield


def _answers(address: str, port: int, netns: str | None) -> bool:
    conn = http.client.HTTPConnection(address, port, timeout=1)
    try:
        with _inside(netns):  # the socket is made at connect
            conn.connect()
        conn.request("POST", "/v3/kv/range", body=b'{"key":"AA=="}', headers={"Content-Type": "application/json"})
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _start(binary: str, data_dir: Path, log_path: Path, startup_timeout: float, address: str,
           netns: str | None) -> tuple[subprocess.Popen, str]:
    with _inside(netns):
        client, peer = _free_port(address), _free_port(address)
    client_url, peer_url = f"http://{address}:{client}", f"http://{address}:{peer}"
    # ETCD_* variables configure etcd like flags; a user's (say ETCD_AUTO_COMPACTION_RETENTION)
    # has no business in this one.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    cmd = [binary, "--name", "netsim", "--data-dir", str(data_dir),
           "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
           "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
           "--initial-cluster", f"netsim={peer_url}", "--initial-cluster-state", "new",
           "--logger", "zap", "--log-outputs", str(log_path)]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                            # Its own session: a Ctrl-C meant for the tests would stop etcd
                            # under tests still tearing down.
                            start_new_session=True)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _answers(address, client, netns):
            return proc, client_url
        time.sleep(0.05)
    exited = proc.poll()
    _stop(proc)
    log = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    state = "did not answer" if exited is None else f"exited with {exited}"
    raise EtcdStartError(f"{binary} on {client_url} {state} within {startup_timeout} s; its log ends:\n{log}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def temporary_etcd(binary: str | None = None, startup_timeout: float = 30, attempts: int = 3,
                   address: str = "127.0.0.1", netns: str | None = None) -> Iterator[str]:
    """Start an etcd, yield its client URL (``http://127.0.0.1:PORT``), kill it and delete its
    data on the way out, whatever happened in between.  With ``netns`` it runs in that network
    namespace, listening on ``address`` there (a machine of a multi-machine test)."""
    binary = binary or find_etcd()
    if binary is None:
        raise EtcdStartError("etcd not found: install the etcd-server package (scripts/install-deps.sh)")
    base = Path(tempfile.mkdtemp(prefix="netsim-etcd-"))  # 0700, like etcd wants its data dir
    try:
        for attempt in range(1, attempts + 1):
            # The ports were free when picked; another process may take one before etcd binds
            # it, so a failed start gets fresh ports and a fresh data dir.
            try:
                proc, url = _start(binary, base / f"data{attempt}", base / f"etcd{attempt}.log", startup_timeout,
                                   address, netns)
                break
            except EtcdStartError:
                if attempt == attempts:
                    raise
        try:
            yield url
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(base, ignore_errors=True)
