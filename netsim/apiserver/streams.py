"""The streaming subresources of a pod: pods/exec (and pods/attach), pods/portforward and pods/log,
as aiohttp handlers the API server routes to once it has found the pod.

exec speaks the WebSocket channel protocols of k8s.io/apimachinery/pkg/util/remotecommand:
every binary message is one channel byte and data (0 stdin, 1 stdout, 2 stderr, 3 error, 4
resize); ``v5.channel.k8s.io`` (what kubectl 1.32 asks for) adds channel 255, the client's
"this stream is closed" signal (kubectl sends [255, 0] at the end of its stdin);
``v4.channel.k8s.io`` (the Python client's) and ``v4.base64.channel.k8s.io`` (text messages,
the channel as an ASCII digit, data in base64) work the same without it.  The error channel
carries the command's end as a Status, as the kubelet writes it: Success, or Failure with
reason NonZeroExitCode and the exit code as the ExitCode cause, which kubectl exits with.  The
command is a host process in the pod's network namespace, started as `netsim exec` starts it
(netsim.node.podexec: `ip netns exec`, so the pod's resolv.conf applies); with tty=true it gets
a pseudo-terminal that channel 4 resizes.

port-forward speaks the kubelet's WebSocket port-forward protocol (``v4.channel.k8s.io``,
``v4.base64.channel.k8s.io`` or none): port i of the ``ports`` query has data channel 2i and
error channel 2i+1, and the first message on each carries the port (uint16, little-endian).
Each port is one TCP connection to localhost:port made inside the pod's namespace, as the
kubelet dials it.  The official Python client (``kubernetes.stream.portforward``) uses this
protocol.  kubectl 1.32 speaks SPDY/3.1 instead (netsim.apiserver.spdyforward): first tunnelled
in WebSocket binary messages (subprotocol ``SPDY/3.1+portforward.k8s.io``), else over a plain
``Upgrade: SPDY/3.1`` with ``X-Stream-Protocol-Version: portforward.k8s.io``, after whose 101
aiohttp hands over the connection's raw bytes; both serve the same session.  exec over SPDY
is refused with a Status (kubectl 1.32 execs over ``v5.channel.k8s.io``).

log reads the pod's responder log (netsim.node.podlog) with follow, tailLines, sinceSeconds,
sinceTime, timestamps and limitBytes.

HTTP and WebSocket framing is aiohttp's; this module only knows the channel bytes.  May use
netsim.apiserver.spdyforward, netsim.node (podexec, podlog), netsim.kernel and netsim.model.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import fcntl
import functools
import json
import os
import pty
import signal
import socket
import struct
import termios
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import WSMsgType, web

from netsim import kernel
from netsim.apiserver import spdyforward
from netsim.node import podexec, podlog

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
V5, V4, V4_BASE64 = "v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io"
EXEC_PROTOCOLS = (V5, V4, V4_BASE64)
PORTFORWARD_PROTOCOLS = (V4, V4_BASE64)
SPDY_TUNNEL_PREFIX = "SPDY/3.1+"
SPDY_TUNNEL = SPDY_TUNNEL_PREFIX + spdyforward.PROTOCOL
SPDY_UPGRADE = "SPDY/3.1"
STREAM_PROTOCOL_HEADER = "X-Stream-Protocol-Version"
RAW_BUFFER = 1024 * 1024  # bytes of a plain SPDY connection read ahead before reading pauses
CHUNK = 32 * 1024
FOLLOW_POLL_S = 0.2
# A WebSocket ping every 5 s keeps an idle exec or port-forward open through kubectl's read
# deadline (it pings us; aiohttp answers) and finds a vanished client.
HEARTBEAT_S = 5.0

Handler = Callable[[web.Request, dict, str], Awaitable[web.StreamResponse]]


# -- Status bodies ---------------------------------------------------------------------------

def status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def error_response(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(status(code, reason, message), status=code)


def exit_status(code: int | None) -> dict:
    """What the error channel carries when the command ends, as the kubelet writes it."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    if code is not None and code < 0:  # killed by a signal: the shell's convention, 128 + signal
        code = 128 - code
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: exit status {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


# -- channel framing (pure) ------------------------------------------------------------------

def encode(protocol: str, channel: int, data: bytes) -> bytes | str:
    """One message on ``channel``: binary for the binary protocols, a digit and base64 text for
    the base64 one."""
    if protocol == V4_BASE64:
        return chr(ord("0") + channel) + base64.b64encode(data).decode()
    return bytes([channel]) + data


def decode(protocol: str, message: bytes | str) -> tuple[int, bytes]:
    """(channel, data) of one message from the client; ValueError for an empty or bad one."""
    if isinstance(message, str):
        if protocol != V4_BASE64 or not message:
            raise ValueError("text message on a binary channel protocol")
        return ord(message[0]) - ord("0"), base64.b64decode(message[1:])
    if not message:
        raise ValueError("empty message: no channel byte")
    return message[0], bytes(message[1:])


def port_prefix(port: int) -> bytes:
    """The first message on a port's data and error channels: the port, little-endian."""
    return struct.pack("<H", port)


def parse_ports(query) -> list[int]:
    """The ports of a port-forward request (``ports`` as the API server takes it, ``port`` as the
    kubelet does; repeated or comma-separated); ValueError naming the bad one."""
    values = query.getall("ports", []) + query.getall("port", [])
    if not values:
        raise ValueError('query parameter "ports" is required')
    ports = []
    for value in values:
        for p in value.split(","):
            p = p.strip()
            if not p.isdigit() or not 1 <= int(p) <= 65535:
                raise ValueError(f"port {p!r} must be a number from 1 to 65535")
            ports.append(int(p))
    return ports


def _flag(query, name: str, default: bool = False) -> bool:
    value = query.get(name)
    if value is None:
        return default
    return value.lower() in ("true", "1", "yes", "")


# -- checks shared by the handlers -----------------------------------------------------------

def _container(pod: dict, query) -> tuple[str | None, web.Response | None]:
    """The container the request names (or the pod's only one), or the error kubectl shows."""
    names = [c["name"] for c in pod["spec"].get("containers", [])]
    pod_name = pod["metadata"]["name"]
    wanted = query.get("container")
    if wanted:
        if wanted not in names:
            return None, error_response(400, "BadRequest", f"container {wanted} is not valid for pod {pod_name}")
        return wanted, None
    if len(names) == 1:
        return names[0], None
    return None, error_response(400, "BadRequest", f"a container name must be specified for pod {pod_name}, "
                                                   f"choose one of: [{' '.join(names)}]")


def _running(pod: dict, cluster: str, container: str) -> tuple[str | None, web.Response | None]:
    phase = pod.get("status", {}).get("phase", "Pending")
    name = pod["metadata"]["name"]
    if phase in ("Succeeded", "Failed"):
        return None, error_response(400, "BadRequest", f"cannot exec into a container in a completed pod; "
                                                       f"current phase is {phase}")
    netns = podexec.running_netns(cluster, pod) if phase == "Running" else None
    if netns is None:
        if phase != "Running":
            return None, error_response(400, "BadRequest",
                                        f'container "{container}" in pod "{name}" is waiting to start: '
                                        "ContainerCreating")
        return None, error_response(400, "BadRequest",
                                    f"pod {name} runs on a node whose agent is on another machine; its network "
                                    "namespace is not here (run the command on that machine with `netsim exec`)")
    return netns, None


def _spdy_refusal(what: str) -> web.Response:
    return error_response(400, "BadRequest",
                          f"netsim's API server serves {what} over WebSocket channel protocols "
                          f"({', '.join(EXEC_PROTOCOLS)}), not SPDY. Use a client that speaks them "
                          "(kubectl 1.30 or later), or `netsim exec pod/NS/NAME`")


def _requested(request: web.Request) -> list[str]:
    return [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]


def _is_spdy(request: web.Request, protocols: tuple[str, ...]) -> bool:
    """A SPDY upgrade, or a WebSocket that asks only for SPDY tunnelled inside it."""
    requested = _requested(request)
    return request.headers.get("Upgrade", "").lower() != "websocket" or (
        any(p.startswith(SPDY_TUNNEL_PREFIX) for p in requested) and not any(p in protocols for p in requested))


async def _websocket(request: web.Request, protocols: tuple[str, ...], what: str,
                     allow_none: bool = False) -> tuple[web.WebSocketResponse | None, web.Response | None]:
    """The accepted WebSocket and its protocol, or the Status to answer with instead."""
    requested = _requested(request)
    if _is_spdy(request, protocols):
        return None, _spdy_refusal(what)
    if not any(p in protocols for p in requested) and not (allow_none and not requested):
        return None, error_response(400, "BadRequest",
                                    f"none of the requested WebSocket subprotocols ({', '.join(requested) or 'none'}) "
                                    f"is served for {what}; use one of: {', '.join(protocols)}")
    ws = web.WebSocketResponse(protocols=protocols, heartbeat=HEARTBEAT_S, max_msg_size=0)
    ready = ws.can_prepare(request)
    if not ready.ok:
        return None, error_response(400, "BadRequest", f"not a valid WebSocket upgrade for {what}")
    await ws.prepare(request)
    return ws, None


# -- exec --------------------------------------------------------------------------------------

class _Session:
    """One exec: the process, its pipes or terminal, and the socket it talks through."""

    def __init__(self, ws: web.WebSocketResponse, protocol: str):
        self.ws, self.protocol = ws, protocol
        self.lock = asyncio.Lock()  # one writer at a time on the socket
        self.master: int | None = None  # the pty's master side, with tty=true

    async def send(self, channel: int, data: bytes) -> None:
        message = encode(self.protocol, channel, data)
        async with self.lock:
            if self.ws.closed:
                return
            if isinstance(message, str):
                await self.ws.send_str(message)
            else:
                await self.ws.send_bytes(message)


def _set_winsize(fd: int, data: bytes) -> None:
    size = json.loads(data)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", int(size.get("Height", 0)),
                                                    int(size.get("Width", 0)), 0, 0))


async def _pump_stream(session: _Session, reader: asyncio.StreamReader, channel: int) -> None:
    while chunk := await reader.read(CHUNK):
        await session.send(channel, chunk)


async def _pump_pty(session: _Session, master: int) -> None:
    """The terminal's output to stdout until the process side closes (EIO on Linux)."""
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(master, readable.set)
    try:
        while True:
            await readable.wait()
            readable.clear()
            try:
                chunk = os.read(master, CHUNK)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not chunk:
                return
            await session.send(STDOUT, chunk)
    finally:
        loop.remove_reader(master)


async def _client_input(session: _Session, proc: asyncio.subprocess.Process) -> None:
    """stdin, resize and (v5) close messages from the client, until it closes the socket."""
    async for msg in session.ws:
        if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
            break
        try:
            channel, data = decode(session.protocol, msg.data)
        except ValueError:
            continue
        if channel == STDIN:
            if session.master is not None:
                os.write(session.master, data)
            elif proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.write(data)
                with contextlib.suppress(ConnectionError):
                    await proc.stdin.drain()
        elif channel == RESIZE and session.master is not None:
            with contextlib.suppress(ValueError, OSError, TypeError):
                _set_winsize(session.master, data)
        elif channel == CLOSE and session.protocol == V5 and data[:1] == bytes([STDIN]):
            if session.master is not None:
                os.write(session.master, b"\x04")  # end of input, as a terminal says it
            elif proc.stdin is not None:
                proc.stdin.close()


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


async def exec_pod(request: web.Request, pod: dict, cluster: str) -> web.StreamResponse:
    """pods/exec: run ``command`` in the pod's namespace, its streams on WebSocket channels."""
    q = request.query
    command = q.getall("command", [])
    container, err = _container(pod, q)
    if err:
        return err
    if not command:
        return error_response(400, "BadRequest", "you must specify at least one command for the container")
    want_in, want_out, want_err, tty = (_flag(q, "stdin"), _flag(q, "stdout", True), _flag(q, "stderr", True),
                                       _flag(q, "tty"))
    if tty:
        want_err = False  # a terminal has one output, as the kubelet rejects stderr with tty
    if not (want_in or want_out or want_err):
        return error_response(400, "BadRequest", "you must specify at least 1 of stdin, stdout, stderr")
    netns, err = _running(pod, cluster, container)
    if err:
        return err
    ws, err = await _websocket(request, EXEC_PROTOCOLS, "exec")
    if err:
        return err
    session = _Session(ws, ws.ws_protocol or V4)
    argv = podexec.argv(netns, command)
    if tty:
        master, slave = pty.openpty()
        os.set_blocking(master, False)
        session.master = master
        # setsid -c: a new session (and process group, which _kill ends) whose controlling
        # terminal is the pty, so ^C reaches the command.
        proc = await asyncio.create_subprocess_exec("setsid", "-w", "-c", *argv, stdin=slave, stdout=slave,
                                                    stderr=slave)
        os.close(slave)
    else:
        pipe, null = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        proc = await asyncio.create_subprocess_exec(*argv, stdin=pipe if want_in else null,
                                                    stdout=pipe if want_out else null,
                                                    stderr=pipe if want_err else null, start_new_session=True)
    # As the kubelet does: an empty message on the lowest writable channel says "established".
    await session.send(STDOUT if want_out else STDERR if want_err else ERROR, b"")
    outputs = []
    if tty:
        outputs.append(asyncio.ensure_future(_pump_pty(session, session.master)))
    else:
        outputs += [asyncio.ensure_future(_pump_stream(session, stream, ch))
                    for stream, ch in ((proc.stdout, STDOUT), (proc.stderr, STDERR)) if stream is not None]
    client = asyncio.ensure_future(_client_input(session, proc))
    done = asyncio.ensure_future(asyncio.gather(proc.wait(), *outputs))
    try:
        await asyncio.wait({done, client}, return_when=asyncio.FIRST_COMPLETED)
        if done.done():
            await session.send(ERROR, json.dumps(exit_status(proc.returncode)).encode())
            await ws.close()
    finally:
        _kill(proc)  # the client went away first: its command goes too
        for task in (client, done, *outputs):
            task.cancel()
        await asyncio.gather(client, done, *outputs, return_exceptions=True)
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()
        if session.master is not None:
            os.close(session.master)
        if not ws.closed:
            await ws.close()
    return ws


async def attach(request: web.Request, pod: dict, cluster: str) -> web.StreamResponse:
    """pods/attach: netsim runs no container process, so there is nothing to attach to."""
    return error_response(400, "BadRequest", f"pod {pod['metadata']['name']} runs no container process in netsim "
                                             "(its ports are answered by the built-in responder); use exec instead")


# -- port-forward ------------------------------------------------------------------------------

async def _dial(netns: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to localhost:port inside the pod's namespace, as the kubelet dials it;
    ForwardError with the kubelet's words when nothing answers."""
    loop = asyncio.get_running_loop()
    sock = kernel.socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 10)
    except (OSError, TimeoutError) as exc:
        sock.close()
        reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else "timed out"
        raise spdyforward.ForwardError(f"failed to connect to localhost:{port} inside its network namespace: "
                                       f"dial tcp4 127.0.0.1:{port}: connect: {reason.lower()}") from exc
    return await asyncio.open_connection(sock=sock)


async def _forward_port(session: _Session, index: int, port: int, netns: str, pod_name: str,
                        inbox: asyncio.Queue) -> None:
    """One forwarded port: connect inside the pod, then copy both ways until either side ends."""
    data_ch, err_ch = 2 * index, 2 * index + 1
    await session.send(data_ch, port_prefix(port))
    await session.send(err_ch, port_prefix(port))
    try:
        reader, writer = await _dial(netns, port)
    except spdyforward.ForwardError as exc:
        await session.send(err_ch, f"error forwarding port {port} to pod {pod_name}: {exc}".encode())
        return

    async def upstream() -> None:
        while (data := await inbox.get()) is not None:
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    up = asyncio.ensure_future(upstream())
    try:
        await _pump_stream(session, reader, data_ch)
    except OSError as exc:
        await session.send(err_ch, f"error forwarding port {port}: {exc}".encode())
    finally:
        up.cancel()
        await asyncio.gather(up, return_exceptions=True)
        writer.close()


class _WebSocketConn:
    """SPDY tunnelled in WebSocket binary messages (kubectl's PortForwardWebsockets): frames may
    span messages, so the session sees a byte stream."""

    def __init__(self, ws: web.WebSocketResponse):
        self.ws = ws

    async def read(self) -> bytes:
        while True:
            msg = await self.ws.receive()
            if msg.type != WSMsgType.BINARY:
                return b""  # closed, an error, or text, which the tunnel never carries
            if msg.data:
                return msg.data

    async def write(self, data: bytes) -> None:
        await self.ws.send_bytes(data)


class _RawConn:
    """The connection after the 101 to a plain SPDY upgrade: aiohttp feeds every byte that
    arrives to feed_data, as it feeds its own WebSocket reader; writes go out unframed."""

    def __init__(self, request: web.Request, response: web.StreamResponse):
        self.protocol, self.response = request.protocol, response
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.buffered, self.paused = 0, False
        self.protocol.set_parser(self)
        self.protocol.keep_alive(False)

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.queue.put_nowait(bytes(data))
        self.buffered += len(data)
        if self.buffered > RAW_BUFFER and not self.paused:
            self.paused = True
            self.protocol.pause_reading()
        return False, b""

    def feed_eof(self) -> None:
        self.queue.put_nowait(b"")

    async def read(self) -> bytes:
        data = await self.queue.get()
        self.buffered -= len(data)
        if self.paused and self.buffered < RAW_BUFFER // 2:
            self.paused = False
            self.protocol.resume_reading()
        return data

    async def write(self, data: bytes) -> None:
        await self.response.write(data)


def _spdy_session(conn: spdyforward.Conn, pod: dict, netns: str) -> spdyforward.Session:
    meta = pod["metadata"]
    return spdyforward.Session(conn, functools.partial(_dial, netns), meta["name"], meta.get("uid", ""))


async def _spdy_upgrade(request: web.Request, pod: dict, netns: str) -> web.StreamResponse:
    """kubectl's fallback: a plain SPDY/3.1 upgrade, answered as k8s.io/apimachinery's
    httpstream/spdy answers it."""
    if "upgrade" not in request.headers.get("Connection", "").lower() or \
            request.headers.get("Upgrade", "").lower() != SPDY_UPGRADE.lower():
        return error_response(400, "BadRequest", "unable to upgrade: missing upgrade headers in request "
                                                 f"(want Connection: Upgrade and Upgrade: {SPDY_UPGRADE})")
    offered = [p.strip() for header in request.headers.getall(STREAM_PROTOCOL_HEADER, []) for p in header.split(",")]
    if spdyforward.PROTOCOL not in offered:
        return error_response(403, "Forbidden", f"unable to upgrade: unable to negotiate protocol: client supports "
                                                f"{offered}, server accepts [{spdyforward.PROTOCOL}]")
    resp = web.StreamResponse(status=101, headers={"Connection": "Upgrade", "Upgrade": SPDY_UPGRADE,
                                                   STREAM_PROTOCOL_HEADER: spdyforward.PROTOCOL})
    await resp.prepare(request)
    conn = _RawConn(request, resp)
    try:
        await _spdy_session(conn, pod, netns).run()
    finally:
        if request.transport is not None:
            request.transport.close()
    return resp


async def _spdy_tunnel(request: web.Request, pod: dict, netns: str) -> web.StreamResponse:
    """kubectl's first try: SPDY inside a WebSocket."""
    ws = web.WebSocketResponse(protocols=(SPDY_TUNNEL,), heartbeat=HEARTBEAT_S, max_msg_size=0)
    if not ws.can_prepare(request).ok:
        return error_response(400, "BadRequest", "not a valid WebSocket upgrade for port-forward")
    await ws.prepare(request)
    try:
        await _spdy_session(_WebSocketConn(ws), pod, netns).run()
    finally:
        await ws.close()
    return ws


async def port_forward(request: web.Request, pod: dict, cluster: str) -> web.StreamResponse:
    """pods/portforward: the kubelet's WebSocket channel protocol, or kubectl's SPDY (see the
    module doc)."""
    websocket = request.headers.get("Upgrade", "").lower() == "websocket"
    tunnel = websocket and SPDY_TUNNEL in _requested(request)
    name = pod["metadata"]["name"]
    ports: list[int] = []
    if websocket and not tunnel:  # SPDY clients name their ports in stream headers instead
        try:
            ports = parse_ports(request.query)
        except ValueError as exc:
            return error_response(400, "BadRequest", str(exc))
    netns, err = _running(pod, cluster, (pod["spec"].get("containers") or [{}])[0].get("name", name))
    if err:
        return err
    if tunnel:
        return await _spdy_tunnel(request, pod, netns)
    if not websocket:
        return await _spdy_upgrade(request, pod, netns)
    ws, err = await _websocket(request, PORTFORWARD_PROTOCOLS, "port-forward", allow_none=True)
    if err:
        return err
    session = _Session(ws, ws.ws_protocol or V4)
    inboxes = [asyncio.Queue() for _ in ports]
    forwards = [asyncio.ensure_future(_forward_port(session, i, p, netns, name, inboxes[i]))
                for i, p in enumerate(ports)]

    async def client() -> None:
        async for msg in ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                break
            try:
                channel, data = decode(session.protocol, msg.data)
            except ValueError:
                continue
            if channel % 2 == 0 and channel // 2 < len(inboxes) and data:
                inboxes[channel // 2].put_nowait(data)
        for inbox in inboxes:
            inbox.put_nowait(None)

    reading = asyncio.ensure_future(client())
    all_done = asyncio.ensure_future(asyncio.gather(*forwards, return_exceptions=True))
    try:
        await asyncio.wait({reading, all_done}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reading, all_done, *forwards):
            task.cancel()
        await asyncio.gather(reading, all_done, *forwards, return_exceptions=True)
        await ws.close()
    return ws


# -- log -----------------------------------------------------------------------------------

def _since(query) -> datetime.datetime | None:
    if query.get("sinceSeconds"):
        seconds = int(query["sinceSeconds"])
        if seconds < 1:
            raise ValueError("sinceSeconds must be greater than 0")
        return datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
    if query.get("sinceTime"):
        return podlog.parse_time(query["sinceTime"])
    return None


async def pod_log(request: web.Request, pod: dict, cluster: str) -> web.StreamResponse:
    """pods/log: the responder's log, one line per connection the pod answered."""
    q = request.query
    container, err = _container(pod, q)
    if err:
        return err
    name = pod["metadata"]["name"]
    try:
        since = _since(q)
        tail = int(q["tailLines"]) if q.get("tailLines") else None
        limit = int(q["limitBytes"]) if q.get("limitBytes") else None
        if limit is not None and limit < 1:
            raise ValueError("limitBytes must be greater than 0")
    except ValueError as exc:
        return error_response(400, "BadRequest", f"invalid log options: {exc}")
    if _flag(q, "previous"):
        return error_response(400, "BadRequest", f'previous terminated container "{container}" in pod "{name}" '
                                                 "not found")
    if pod.get("status", {}).get("phase", "Pending") == "Pending":
        return error_response(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: '
                                                 "ContainerCreating")
    meta = pod["metadata"]
    log = podlog.path(cluster, meta["namespace"], name, meta["uid"])
    timestamps, follow = _flag(q, "timestamps"), _flag(q, "follow")
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await resp.prepare(request)
    sent = 0

    async def write(lines: list[str]) -> bool:
        """False once limitBytes is reached."""
        nonlocal sent
        data = "".join(lines).encode()
        if limit is not None:
            data = data[:limit - sent]
        if data:
            await resp.write(data)
            sent += len(data)
        return limit is None or sent < limit

    try:
        more = await write(podlog.render(podlog.read_lines(log, tail), since, tail, timestamps))
        if follow and more:
            await _follow(log, write, timestamps, lambda: request.transport is None or request.transport.is_closing())
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client went away
    return resp


async def _follow(log: Path, write: Callable[[list[str]], Awaitable[bool]], timestamps: bool,
                  gone: Callable[[], bool]) -> None:
    """New lines as they are written, until the log goes (the pod was deleted), the client
    disconnects or limitBytes is reached.  Rotation is seen as a new file."""
    try:
        f = open(log, encoding="utf-8", errors="replace")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return
    try:
        f.seek(0, os.SEEK_END)
        inode = os.fstat(f.fileno()).st_ino
        partial = ""
        while True:
            chunk = f.read()
            if chunk:
                partial += chunk
                *lines, partial = partial.split("\n")
                if lines and not await write(podlog.render([line + "\n" for line in lines], timestamps=timestamps)):
                    return
                continue
            await asyncio.sleep(FOLLOW_POLL_S)
            if gone():
                return
            try:
                now_inode = os.stat(log).st_ino
            except FileNotFoundError:
                return
            if now_inode != inode:  # rotated: read the new file from its start
                f.close()
                f = open(log, encoding="utf-8", errors="replace")  # noqa: SIM115
                inode = os.fstat(f.fileno()).st_ino
    finally:
        f.close()


__all__ = ["CLOSE", "ERROR", "EXEC_PROTOCOLS", "PORTFORWARD_PROTOCOLS", "RESIZE", "STDERR", "STDIN", "STDOUT",
           "V4", "V4_BASE64", "V5", "attach", "decode", "encode", "exec_pod", "exit_status", "parse_ports",
           "pod_log", "port_forward", "port_prefix", "status"]
