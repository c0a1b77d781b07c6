"""The standalone plugin server: netsim's plugins fast with no cluster up.

When no agent's plugin server is there (podman, containerd or cnitool calling netsim's
plugins on their own), the compiled launcher (shim.c) connects to this per-host server,
starting it on the first call: ``python -m netsim.cni.standalone --ready-fd N``.  It serves
the same calls as the agent's server (netsim.cni.server.PluginServer), one per thread, and
exits after IDLE_S seconds without a call, so a call pays Python's cold start (~250 ms) once
per busy period instead of every time.

Owned by netsim: the socket and its lock live in /run/netsim/cni-standalone/, one pair per
interpreter and netsim install (the launchers' key), and `netsim down --all` stops every such
server (stop_all).  An exclusive flock on the lock file makes starting race-free: of two
launchers starting a server at once, the second server finds the lock held and exits, and its
launcher connects to the first.  May use netsim.cni.server and the standard library.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import signal
import threading
import time

DIR = "/run/netsim/cni-standalone"
IDLE_S = 60
START_S = 10


def socket_path(key: str) -> str:
    return os.path.join(DIR, f"{key}.sock")


def _lock_path(sock: str) -> str:
    return sock[: -len(".sock")] + ".lock"


def _leave_callers_namespaces() -> None:
    """The first caller may run inside `ip netns exec` (its network and mount namespace): a
    long-lived server must not hold those alive, so it joins the host's (pid 1's).  Each call
    enters its caller's network namespace anyway."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for ns, flag in (("mnt", 0x00020000), ("net", 0x40000000)):  # CLONE_NEWNS, CLONE_NEWNET
        try:
            fd = os.open(f"/proc/1/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            libc.setns(fd, flag)  # best effort: without it the server still works
        finally:
            os.close(fd)
        if ns == "mnt":
            os.chdir("/")


def serve(sock_path: str, ready_fd: int | None = None, idle_s: float = IDLE_S) -> None:
    """Serve on ``sock_path`` until idle for ``idle_s`` (or SIGTERM); return at once when
    another server holds the lock."""
    from netsim import kernel
    from netsim.cni.server import PluginServer

    _leave_callers_namespaces()
    os.makedirs(DIR, mode=0o700, exist_ok=True)
    lock = os.open(_lock_path(sock_path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        # Another server runs or is starting: give it up to START_S to listen, then leave
        # (closing ready_fd tells our launcher to try its socket).
        os.close(lock)
        deadline = time.monotonic() + START_S
        while not os.path.exists(sock_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        return
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stop.set, daemon=True).start())
    kernel.load_codec()  # the netlink codec now, not during the first call
    server = PluginServer(sock_path).start()
    if ready_fd is not None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)
    calls, last = 0, time.monotonic()
    try:
        while not stop.wait(1):
            busy = any(t.name == "cni-call" for t in threading.enumerate())
            if busy or server.calls != calls:
                calls, last = server.calls, time.monotonic()
            elif time.monotonic() - last >= idle_s:
                break
    finally:
        # Unlink first: a launcher that finds no socket starts a new server (which waits on
        # the lock); one that connected before the close gets no answer and retries.
        server.stop()
        while any(t.name == "cni-call" for t in threading.enumerate()):
            time.sleep(0.05)
        os.close(lock)


def running(key: str | None = None) -> list[int]:
    """Pids of the standalone servers on this host (or the one for ``key``)."""
    pids = []
    for path in glob.glob(os.path.join(DIR, f"{key or '*'}.lock")):
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                with contextlib.suppress(ValueError):
                    pids.append(int(f.read().strip() or 0))
                continue
        os.unlink(path)  # nobody holds it: a server that ended
    return [p for p in pids if p > 0]


def stop_all(timeout_s: float = 10, key: str | None = None) -> list[int]:
    """Stop every standalone server (or the one for ``key``): SIGTERM, then wait; returns
    their pids."""
    pids = running(key)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and running(key):
        time.sleep(0.05)
    for pid in running(key):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="netsim.cni.standalone")
    parser.add_argument("path")
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--idle", type=float, default=IDLE_S)
    args = parser.parse_args(argv)
    serve(args.path, args.ready_fd, args.idle)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
