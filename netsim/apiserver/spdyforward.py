"""A pods/portforward session over SPDY/3.1, as the kubelet serves kubectl's port-forward
(k8s.io/kubelet's cri/streaming/portforward httpstream handler): the client opens, per local
connection, a pair of streams sharing a ``requestid`` header, one with ``streamtype: error``
and one with ``streamtype: data``, both naming the pod ``port``.  Each stream gets a SYN_REPLY
at once (the client waits for it); once a pair is complete, the data stream is piped to a TCP
connection the session's ``dial`` opens to that port in the pod, and a failure is written as
text on the error stream.  When the pod side ends, the error stream and then the data stream
are closed (an empty DATA frame with FIN), which is what kubectl waits for.  Streams with
missing or bad headers are reset, as the kubelet rejects them; a pair left half-made for
PAIR_TIMEOUT_S is given up with the kubelet's "timed out waiting for streams".  PINGs from
the client are echoed; SETTINGS, WINDOW_UPDATE and HEADERS are ignored (see netsim.apiserver.spdy
on flow control).

The session knows nothing of HTTP or WebSocket: it reads bytes from and writes bytes to a
Conn, so the same session serves SPDY tunnelled in WebSocket messages and a plain SPDY upgrade
(netsim.apiserver.streams adapts both).  May use asyncio and netsim.apiserver.spdy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from netsim.apiserver import spdy

PROTOCOL = "portforward.k8s.io"
STREAM_TYPE, PORT, REQUEST_ID = "streamtype", "port", "requestid"
ERROR, DATA = "error", "data"
PAIR_TIMEOUT_S = 30.0  # the kubelet's default stream creation timeout
CHUNK = 32 * 1024
INBOX_FRAMES = 64  # frames queued towards one pod connection before the reader waits


class Conn(Protocol):
    """The byte pipe under a session."""

    async def read(self) -> bytes:
        """The next bytes from the client; b"" once it has gone."""

    async def write(self, data: bytes) -> None:
        """Bytes to the client, in order."""


class ForwardError(Exception):
    """The pod's port could not be reached; the message goes on the error stream."""


Dial = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@dataclass
class _Stream:
    stream_id: int
    kind: str
    port: int
    inbox: asyncio.Queue = field(default_factory=asyncio.Queue)  # the client's bytes; None at its end
    room: asyncio.Event = field(default_factory=asyncio.Event)  # the inbox is short enough to add to
    consuming: bool = False  # the pod connection is open and takes the inbox
    dropped: bool = False  # the pod connection is gone: the client's bytes are dropped
    remote_done: bool = False  # the client sent FIN or RST_STREAM
    closed: bool = False  # we sent FIN or RST_STREAM
    writer: asyncio.StreamWriter | None = None  # the pod connection, once dialled


@dataclass
class _Pair:
    request_id: str
    error: _Stream | None = None
    data: _Stream | None = None
    timer: asyncio.TimerHandle | None = None


def port_of(headers: dict[str, str]) -> int:
    """The ``port`` header as the kubelet parses it; ValueError saying what is wrong."""
    value = headers.get(PORT, "")
    if not value:
        raise ValueError(f'"{PORT}" header is required')
    if not value.isdigit() or int(value) > 65535:
        raise ValueError(f"unable to parse {value!r} as a port")
    if int(value) < 1:
        raise ValueError(f"port {value!r} must be > 0")
    return int(value)


def request_id_of(headers: dict[str, str], stream_id: int) -> str:
    """The pair a stream belongs to; clients older than the ``requestid`` header open the error
    stream and then the data stream with consecutive odd ids, as the kubelet assumes."""
    if headers.get(REQUEST_ID):
        return headers[REQUEST_ID]
    return str(stream_id if headers.get(STREAM_TYPE) == ERROR else stream_id - 2)


class Session:
    """One port-forward connection: run() until the client goes, then every pod connection it
    opened is closed."""

    def __init__(self, conn: Conn, dial: Dial, pod: str, uid: str = ""):
        self.conn, self.dial, self.pod, self.uid = conn, dial, pod, uid
        self.encoder, self.decoder = spdy.Encoder(), spdy.Decoder()
        self.lock = asyncio.Lock()  # one frame at a time, encoded in the order it is written
        self.streams: dict[int, _Stream] = {}
        self.pairs: dict[str, _Pair] = {}
        self.tasks: set[asyncio.Task] = set()
        self.last_stream_id = 0

    async def send(self, frame: spdy.Frame) -> None:
        async with self.lock:
            await self.conn.write(self.encoder.encode(frame))

    async def run(self) -> None:
        try:
            while data := await self.conn.read():
                try:
                    frames = self.decoder.feed(data)
                except spdy.SpdyError:
                    await self.send(spdy.GoAway(self.last_stream_id, spdy.GOAWAY_PROTOCOL_ERROR))
                    return
                for frame in frames:
                    if not await self._handle(frame):
                        return
        except ConnectionError:
            pass  # the client went away mid-write
        finally:
            await self.close()

    async def close(self) -> None:
        for pair in self.pairs.values():
            if pair.timer:
                pair.timer.cancel()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- frames from the client -------------------------------------------------------------

    async def _handle(self, frame: spdy.Frame) -> bool:
        """Act on one frame; False ends the session."""
        match frame:
            case spdy.SynStream():
                await self._open(frame)
            case spdy.Data(stream_id, data, fin):
                stream = self.streams.get(stream_id)
                if stream is None:
                    if stream_id > self.last_stream_id:  # never opened: the spec's INVALID_STREAM
                        await self.send(spdy.RstStream(stream_id, spdy.INVALID_STREAM))
                    return True
                if data and not stream.remote_done and not stream.dropped and stream.kind == DATA:
                    stream.inbox.put_nowait(data)
                    # Backpressure: a slow pod holds the client's further frames back here.
                    while stream.consuming and stream.inbox.qsize() > INBOX_FRAMES:
                        stream.room.clear()
                        await stream.room.wait()
                if fin:
                    self._finish(stream)
            case spdy.RstStream(stream_id):
                if stream := self.streams.get(stream_id):
                    stream.closed = True  # the client wants no more on it: end the pod connection too
                    if stream.writer is not None:
                        stream.writer.close()
                    self._finish(stream)
            case spdy.Ping(ping_id) if ping_id % 2 == 1:  # the client's (odd): echo it
                await self.send(frame)
            case spdy.GoAway():
                return False
        return True

    def _finish(self, stream: _Stream) -> None:
        """The client's side of the stream has ended."""
        if not stream.remote_done:
            stream.remote_done = True
            stream.inbox.put_nowait(None)
        if stream.closed:
            self.streams.pop(stream.stream_id, None)

    async def _open(self, frame: spdy.SynStream) -> None:
        sid, headers = frame.stream_id, frame.headers
        if sid % 2 == 0 or sid <= self.last_stream_id:
            await self.send(spdy.RstStream(sid, spdy.PROTOCOL_ERROR))  # ids from the client rise and are odd
            return
        self.last_stream_id = sid
        kind = headers.get(STREAM_TYPE, "")
        try:
            port = port_of(headers)
            if kind not in (ERROR, DATA):
                raise ValueError(f'"{STREAM_TYPE}" header must be {ERROR} or {DATA}, not {kind!r}')
        except ValueError:
            await self.send(spdy.RstStream(sid, spdy.REFUSED_STREAM))
            return
        stream = _Stream(sid, kind, port)
        self.streams[sid] = stream
        await self.send(spdy.SynReply(sid))
        if frame.fin:
            self._finish(stream)
        request_id = request_id_of(headers, sid)
        pair = self.pairs.get(request_id)
        if pair is None:
            pair = self.pairs[request_id] = _Pair(request_id)
            pair.timer = asyncio.get_running_loop().call_later(PAIR_TIMEOUT_S, lambda: self._spawn(self._expire(pair)))
        if getattr(pair, kind) is not None:
            await self._close(stream, reset=True)  # a second error (or data) stream for one request
            return
        setattr(pair, kind, stream)
        if pair.error and pair.data:
            pair.timer.cancel()
            del self.pairs[request_id]
            self._spawn(self._forward(pair.error, pair.data))

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- frames to the client ---------------------------------------------------------------

    async def _close(self, stream: _Stream, reset: bool = False) -> None:
        if stream.closed:
            return
        stream.closed = True
        with contextlib.suppress(ConnectionError):
            await self.send(spdy.RstStream(stream.stream_id, spdy.CANCEL) if reset
                            else spdy.Data(stream.stream_id, b"", fin=True))
        if stream.remote_done:
            self.streams.pop(stream.stream_id, None)

    async def _error(self, stream: _Stream, message: str) -> None:
        if not stream.closed:
            with contextlib.suppress(ConnectionError):
                await self.send(spdy.Data(stream.stream_id, message.encode()))

    async def _expire(self, pair: _Pair) -> None:
        self.pairs.pop(pair.request_id, None)
        if pair.error:
            await self._error(pair.error, "timed out waiting for streams")
        for stream in (pair.error, pair.data):
            if stream:
                await self._close(stream)

    async def _forward(self, error: _Stream, data: _Stream) -> None:
        """One forwarded connection: the data stream to and from the pod's port."""
        port = data.port
        try:
            try:
                reader, writer = await self.dial(port)
            except ForwardError as exc:
                await self._error(error, f"error forwarding port {port} to pod {self.pod}, uid {self.uid}: {exc}")
                return
            data.writer, data.consuming = writer, True
            up = asyncio.ensure_future(self._upstream(data, writer))
            try:
                while not data.closed and (chunk := await reader.read(CHUNK)):
                    await self.send(spdy.Data(data.stream_id, chunk))
            except OSError as exc:
                await self._error(error, f"error forwarding port {port} to pod {self.pod}, uid {self.uid}: {exc}")
            finally:
                up.cancel()
                await asyncio.gather(up, return_exceptions=True)
                writer.close()
        finally:
            data.consuming, data.dropped = False, True
            data.room.set()
            await self._close(error)  # the error stream first, as the kubelet's deferred closes run
            await self._close(data)

    async def _upstream(self, data: _Stream, writer: asyncio.StreamWriter) -> None:
        """The client's bytes to the pod; its FIN half-closes the pod connection."""
        try:
            while (chunk := await data.inbox.get()) is not None:
                if data.inbox.qsize() <= INBOX_FRAMES:
                    data.room.set()
                writer.write(chunk)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()
        except OSError:
            pass
        finally:
            data.consuming, data.dropped = False, True  # a reader waiting for room goes on, and drops
            data.room.set()


__all__ = ["DATA", "ERROR", "PAIR_TIMEOUT_S", "PROTOCOL", "Conn", "ForwardError", "Session", "port_of",
           "request_id_of"]
