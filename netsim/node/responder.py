"""The built-in responders that stand in for containers.

netsim runs no images: every declared containerPort of a pod gets a TCP and a UDP listener
inside the pod's namespace that answers with the pod's name and the client address it saw,
as agnhost's serve-hostname and netexec do, so load balancing and source-IP rewrites are
visible.  All listeners of a node agent share one asyncio loop in one thread: a socket keeps
the namespace it was created in, so one process serves every pod.

The answer is one JSON line.  A TCP client that opens with an HTTP request line gets it as
an HTTP response (curl works); a silent client (nc) gets the line after a short wait.  Every
connection (every UDP datagram) answered is one line of the pod's log (netsim.node.podlog),
which `kubectl logs` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from netsim import kernel
from netsim.node import dns, podlog

log = logging.getLogger("netsim.node.responder")

HTTP_REQUEST = re.compile(rb"^[A-Z]{3,7} \S+ HTTP/1\.[01]\r?\n")
SILENT_CLIENT_WAIT_S = 0.2
MAX_REQUEST = 8192


@dataclass(frozen=True)
class Identity:
    pod: str
    namespace: str
    node: str

    def answer(self, client: tuple[str, int], port: int, proto: str) -> bytes:
        return (json.dumps({"pod": self.pod, "namespace": self.namespace, "node": self.node,
                            "client": f"{client[0]}:{client[1]}", "port": port, "protocol": proto},
                           separators=(",", ":")) + "\n").encode()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, identity: Identity, port: int, log: podlog.Writer | None):
        self.identity, self.port, self.log = identity, port, log

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(self.identity.answer(addr, self.port, "udp"), addr)
        if self.log:
            self.log.write(f"udp {addr[0]}:{addr[1]} -> :{self.port}")


class Responders:
    """Listeners per pod: ``ensure`` opens what a pod declares, ``remove`` closes them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="responders", daemon=True)
        self.thread.start()
        self.pods: dict[str, tuple[tuple, list]] = {}  # key -> ((netns, identity, ports, dns, log), handles)
        self.dns = dns.Server(self.loop)  # the cluster DNS, for pods that run it

    def close(self) -> None:
        for key in list(self.pods):
            self.remove(key)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    def ensure(self, key: str, netns: str, identity: Identity, ports: list[int],
               dns_ports: list[int] = (), log: Path | None = None) -> list[str]:
        """Listen on ``ports`` (TCP and UDP) in ``netns``, answering as the responder (and
        writing a line per answer to ``log``), and on ``dns_ports`` answering as the cluster
        DNS; returns what could not be opened."""
        dns_ports = tuple(sorted(set(dns_ports)))
        wanted = (netns, identity, tuple(sorted(set(ports) - set(dns_ports))), dns_ports, log)
        if key in self.pods and self.pods[key][0] == wanted:
            return []
        self.remove(key)
        failed = []
        writer = podlog.Writer(log) if log is not None else None
        handles: list = [writer] if writer else []
        for port, is_dns in [(p, False) for p in wanted[2]] + [(p, True) for p in dns_ports]:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                try:
                    sock = kernel.socket_in(netns, socket.AF_INET, kind)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(("0.0.0.0", port))
                    sock.setblocking(False)
                    if kind == socket.SOCK_STREAM:
                        sock.listen(128)
                except OSError as exc:
                    failed.append(f"{'tcp' if kind == socket.SOCK_STREAM else 'udp'}/{port}: {exc.strerror}")
                    with contextlib.suppress(Exception):
                        sock.close()
                    continue
                serve = self.dns.serve(sock, kind) if is_dns else self._serve(sock, kind, identity, port, writer)
                fut = asyncio.run_coroutine_threadsafe(serve, self.loop)
                handles.append(fut.result(timeout=5))
        self.pods[key] = (wanted, handles)
        return failed

    def remove(self, key: str) -> None:
        entry = self.pods.pop(key, None)
        if entry:
            for handle in entry[1]:
                self.loop.call_soon_threadsafe(handle.close)

    async def _serve(self, sock: socket.socket, kind: int, identity: Identity, port: int,
                     log: podlog.Writer | None):
        if kind == socket.SOCK_DGRAM:
            transport, _ = await self.loop.create_datagram_endpoint(lambda: _Udp(identity, port, log), sock=sock)
            return transport

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            client = writer.get_extra_info("peername")
            try:
                try:
                    first = await asyncio.wait_for(reader.readline(), SILENT_CLIENT_WAIT_S)
                except (TimeoutError, ValueError):
                    first = b""
                body = identity.answer(client, port, "tcp")
                if HTTP_REQUEST.match(first):
                    size = len(first)
                    while size < MAX_REQUEST:
                        line = await asyncio.wait_for(reader.readline(), 2)
                        size += len(line)
                        if line in (b"\r\n", b"\n", b""):
                            break
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
                else:
                    writer.write(body)
                if log:
                    request = f" {first.decode(errors='replace').strip()}" if HTTP_REQUEST.match(first) else ""
                    log.write(f"tcp {client[0]}:{client[1]} -> :{port}{request}")
                await writer.drain()
            except (TimeoutError, OSError):
                pass
            finally:
                writer.close()

        return await asyncio.start_server(handle, sock=sock)
