"""The node agent's plugin server: runs plugin calls handed over by netsim.cni.shim.

A call runs on its own thread, which first enters the caller's network namespace (found from
the connecting process, SO_PEERCRED): the plugin code then sees exactly the namespace it
would have run in as a process.  The socket is root's only (0600 in a 0700 directory).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading

from netsim import kernel
from netsim.cni import spec

_UCRED = struct.Struct("iII")


def decode_request(data: bytes) -> tuple[str, dict[str, str], bytes]:
    n = int.from_bytes(data[:4], "little")
    plugin_type = data[4:4 + n].decode()
    off = 4 + n
    m = int.from_bytes(data[off:off + 4], "little")
    env_block = data[off + 4:off + 4 + m]
    env = {}
    for item in env_block.split(b"\0"):
        key, sep, value = item.decode(errors="surrogateescape").partition("=")
        if sep:
            env[key] = value
    return plugin_type, env, data[off + 4 + m:]


def bind(path: str) -> socket.socket:
    """The listening socket, root's only."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(512)
    return sock


class PluginServer:
    """Serves calls on one socket from threads of this process (``sock`` given: a socket
    bound by someone else, e.g. the pool's parent, which also owns the path)."""

    def __init__(self, path: str | None, sock: socket.socket | None = None):
        self.path = path
        self.sock = sock
        self.owns_path = sock is None
        self.thread: threading.Thread | None = None
        self.calls = 0

    def start(self) -> PluginServer:
        if self.sock is None:
            self.sock = bind(self.path)
        self.thread = threading.Thread(target=self._accept, name="cni-server", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            self.sock = None
        if self.owns_path and self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        if self.thread is not None:
            self.thread.join(timeout=2)


    def _accept(self) -> None:
        while self.sock is not None:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="cni-call", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                pid, _uid, _gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
                chunks = []
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
                plugin_type, env, stdin = decode_request(b"".join(chunks))
                if plugin_type not in spec.MODULES:
                    error = spec.CNIError(spec.INVALID_CONFIG, f"unknown plugin type {plugin_type!r}")
                    code, out = 1, spec.dump(error.to_json(spec.LATEST))
                else:
                    with kernel.entered(f"/proc/{pid}/ns/net"):
                        code, out = spec.run(plugin_type, env, stdin)
                self.calls += 1
                conn.sendall(code.to_bytes(4, "little", signed=True) + out)
            except OSError:
                return  # the caller went away; it falls back or fails on its own


class ServerPool:
    """The node agent's plugin server: worker processes accepting on one socket, so plugin
    work runs beside the agent's own threads instead of queueing on its GIL (on this 2-core
    machine, 300 pods came up in 5.2-6.2 s with the server in the agent's process)."""

    def __init__(self, path: str, processes: int = 2):
        self.path = path
        self.processes = processes
        self.sock: socket.socket | None = None
        self.workers: list = []

    def start(self) -> ServerPool:
        self.sock = bind(self.path)
        self.workers = [self._spawn() for _ in range(self.processes)]
        return self

    def _spawn(self):
        import subprocess
        import sys

        fd = self.sock.fileno()
        return subprocess.Popen(
            [sys.executable, "-m", "netsim.cni.server", "--fd", str(fd), "--parent", str(os.getpid())],
            pass_fds=[fd], stdin=subprocess.DEVNULL)

    def check(self) -> int:
        """Replace workers that died (a call waiting in the backlog would wait for nobody);
        returns how many were replaced."""
        dead = [i for i, w in enumerate(self.workers) if w.poll() is not None]
        for i in dead:
            self.workers[i] = self._spawn()
        return len(dead)

    def stop(self) -> None:
        kernel.terminate([w.pid for w in self.workers], grace=2.0)
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.wait(timeout=1)
        self.workers = []
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    """``python -m netsim.cni.server PATH`` serves on PATH until SIGTERM/SIGINT (benches,
    runtimes without an agent); ``--fd N --parent PID`` is a ServerPool worker, which also
    ends when its agent does (even after kill -9 of the agent: PR_SET_PDEATHSIG)."""
    import argparse
    import ctypes
    import signal

    parser = argparse.ArgumentParser(prog="netsim.cni.server")
    parser.add_argument("path", nargs="?")
    parser.add_argument("--fd", type=int)
    parser.add_argument("--parent", type=int)
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(_signum, _frame):
        # Not stop.set() here: the main thread may be inside stop.wait() holding the event's
        # lock when the handler runs on it (a worker was seen hung that way).
        threading.Thread(target=stop.set, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.parent:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != args.parent:
            return  # the agent died before we got here
    kernel.load_codec()  # import the netlink codec now, not during the first pod's ADD
    if args.fd is not None:
        server = PluginServer(None, socket.socket(fileno=args.fd)).start()
    else:
        server = PluginServer(args.path).start()
    try:
        while not stop.wait(0.5):
            if args.parent and os.getppid() != args.parent:
                break
    finally:
        server.stop()


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
