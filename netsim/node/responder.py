"""The built-in responders that stand in for containers.

netsim runs no images: every declared containerPort of a pod gets a TCP and a UDP listener
inside the pod's namespace that answers with the pod's name and the client address it saw,
as agnhost's serve-hostname and netexec do, so load balancing and source-IP rewrites are
visible.  All listeners of a node agent share one asyncio loop in one thread: a socket keeps
the namespace it was created in, so one process serves every pod.

The answer is one JSON line.  A TCP client that opens with an HTTP request line gets it as
an HTTP/1.1 response (curl works) and the responder is an echo server, as the Ingress and
Gateway API conformance suites' echoserver is: the answer also carries the request's
`method`, `path` (with the query), `proto`, `host` and `headers` (canonical names, each a list
of values), so what a proxy changed on the way is visible.  `GET /status/NNN` answers with
status NNN (as echo-basic does); HEAD gets the headers only; a request body (Content-Length)
is read and dropped; every answer closes the connection.  A silent client (nc) gets the line
after a short wait.  Every connection (every UDP datagram) answered is one line of the pod's
log (netsim.node.podlog), which `kubectl logs` shows.
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
MAX_REQUEST = 8192  # the request line and headers; more gets 431, as Go's server does
MAX_BODY = 1 << 20  # read and dropped; a longer body is cut short (the connection closes anyway)
HEADER_WAIT_S = 2.0
STATUS_PATH = re.compile(r"^/status/(\d{3})$")
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass
class Request:
    """What an HTTP client sent: the head parsed, the body (if any) dropped."""

    method: str
    path: str  # as sent: with the query
    proto: str
    host: str
    headers: dict[str, list[str]]
    length: int = 0  # Content-Length


def canonical(name: str) -> str:
    """Go's canonical MIME header key (x-forwarded-for -> X-Forwarded-For), as echo-basic shows them."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def parse_head(head: bytes) -> Request | None:
    """The request line and header lines (without the blank line); None when not HTTP/1.x."""
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers: dict[str, list[str]] = {}
    host = ""
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            continue
        if name.lower() == "host":
            host = value.strip()  # Go's server moves Host out of the header map
            continue
        headers.setdefault(canonical(name), []).append(value.strip())
    try:
        length = max(0, int(headers.get("Content-Length", ["0"])[0]))
    except ValueError:
        length = 0
    return Request(parts[0], parts[1], parts[2], host, headers, length)


def http_response(status: int, body: bytes, head_only: bool = False) -> bytes:
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (status, REASONS.get(status, "Status").encode(), len(body))
            + (b"" if head_only else body))


@dataclass(frozen=True)
class Identity:
    pod: str
    namespace: str
    node: str

    def answer(self, client: tuple[str, int], port: int, proto: str, request: Request | None = None) -> bytes:
        out = {"pod": self.pod, "namespace": self.namespace, "node": self.node,
               "client": f"{client[0]}:{client[1]}", "port": port, "protocol": proto}
        if request is not None:
            out.update(method=request.method, path=request.path, proto=request.proto, host=request.host,
                       headers=request.headers)
        return (json.dumps(out, separators=(",", ":")) + "\n").encode()


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
                if HTTP_REQUEST.match(first):
                    status, request = await _read_request(reader, first)
                    if request is not None and (m := STATUS_PATH.match(request.path)):
                        status = int(m[1])
                    body = identity.answer(client, port, "tcp", request)
                    writer.write(http_response(status, body, request is not None and request.method == "HEAD"))
                    line = f" {first.decode(errors='replace').strip()} {status}"
                else:
                    writer.write(identity.answer(client, port, "tcp"))
                    line = ""
                if log:
                    log.write(f"tcp {client[0]}:{client[1]} -> :{port}{line}")
                await writer.drain()
            except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        return await asyncio.start_server(handle, sock=sock)


async def _read_request(reader: asyncio.StreamReader, first: bytes) -> tuple[int, Request | None]:
    """The rest of an HTTP request after its first line: the headers up to the blank line (over
    as many segments as the client sends them), then Content-Length bytes of body, dropped.
    (status, request); 431 and no request when the head is too large."""
    head, size = [first], len(first)
    while True:
        line = await asyncio.wait_for(reader.readline(), HEADER_WAIT_S)
        size += len(line)
        if line in (b"\r\n", b"\n", b""):
            break
        if size > 8 * MAX_REQUEST:
            return 431, None  # unread input makes the close a reset
        head.append(line)
    if size > MAX_REQUEST:
        return 431, None  # the head was read to its end, so the client reads the answer
    request = parse_head(b"".join(head).rstrip(b"\r\n"))
    if request is None:
        return 400, None
    left = min(request.length, MAX_BODY)
    while left > 0:
        chunk = await asyncio.wait_for(reader.read(min(left, 65536)), HEADER_WAIT_S)
        if not chunk:
            break
        left -= len(chunk)
    return 200, request
