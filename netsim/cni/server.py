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


class PluginServer:
    def __init__(self, path: str):
        self.path = path
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self.calls = 0

    def start(self) -> PluginServer:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(self.path)
        finally:
            os.umask(old)
        sock.listen(256)
        self.sock = sock
        self.thread = threading.Thread(target=self._accept, name="cni-server", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            self.sock = None
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


def main(path: str) -> None:
    """Serve plugin calls on ``path`` until SIGTERM/SIGINT (the agent embeds the same server;
    this entry point is for benches and runtimes without an agent)."""
    import signal

    server = PluginServer(path).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()


if __name__ == "__main__":
    import sys

    main(sys.argv[1])
