"""The SPDY port-forward session (netsim.apiserver.spdyforward) over real loopback sockets: a
client speaking the framing as kubectl does, the session on the other end of a TCP connection,
and its dial reaching a real echo server on 127.0.0.1 (the pod's port in e2e).  kubectl itself
against a cluster is in tests/e2e/test_streams.py."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from netsim.apiserver import spdy, spdyforward


class StreamConn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def read(self) -> bytes:
        return await self.reader.read(65536)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


class Client:
    """kubectl's side, minimally: frames out, frames in."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.enc, self.dec = spdy.Encoder(), spdy.Decoder()
        self.frames: list[spdy.Frame] = []  # received, not yet looked at by until()
        self.history: list[spdy.Frame] = []  # everything received

    def send(self, *frames: spdy.Frame) -> None:
        for f in frames:
            self.writer.write(self.enc.encode(f))

    async def until(self, pred, timeout: float = 5.0) -> list[spdy.Frame]:
        """Frames received until one satisfies pred (all of them, that one last)."""
        async def loop():
            seen = []
            while True:
                while self.frames:
                    f = self.frames.pop(0)
                    seen.append(f)
                    if pred(f):
                        return seen
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError(f"connection closed after {seen}")
                new = self.dec.feed(data)
                self.frames += new
                self.history += new
        return await asyncio.wait_for(loop(), timeout)

    async def stream_bytes(self, stream_id: int) -> bytes:
        """Everything on a stream up to its FIN (frames seen earlier count too)."""
        def fin(f):
            return isinstance(f, spdy.Data) and f.stream_id == stream_id and f.fin
        if not any(fin(f) for f in self.history):
            await self.until(fin)
        return b"".join(f.data for f in self.history if isinstance(f, spdy.Data) and f.stream_id == stream_id)


def pair(port: int, request_id: str, first: int) -> tuple[spdy.SynStream, spdy.SynStream]:
    h = {"port": str(port), "requestid": request_id}
    return (spdy.SynStream(first, {**h, "streamtype": "error"}),
            spdy.SynStream(first + 2, {**h, "streamtype": "data"}))


@contextlib.asynccontextmanager
async def session(pod_port: int | None = None, timeout: float | None = None):
    """A session on a loopback listener, its dial to the echo server; yields a Client."""
    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    async def slow_count(reader, writer):
        await asyncio.sleep(0.5)  # the client's bytes pile up meanwhile
        total = 0
        while data := await reader.read(65536):
            total += len(data)
        writer.write(str(total).encode())
        await writer.drain()
        writer.close()

    pod = await asyncio.start_server(echo, "127.0.0.1", 0)
    slow = await asyncio.start_server(slow_count, "127.0.0.1", 0)
    ports = {80: pod.sockets[0].getsockname()[1], 82: slow.sockets[0].getsockname()[1]}

    async def dial(port: int):
        if port not in ports:
            raise spdyforward.ForwardError(f"dial tcp4 127.0.0.1:{port}: connect: connection refused")
        return await asyncio.open_connection("127.0.0.1", ports[port])

    sessions = []

    async def serve(reader, writer):
        s = spdyforward.Session(StreamConn(reader, writer), dial, "web-1", "uid-1")
        sessions.append(s)
        await s.run()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        yield Client(reader, writer)
    finally:
        writer.close()
        for s in (server, pod, slow):
            s.close()
            await s.wait_closed()


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 20))


def test_a_pair_of_streams_forwards_to_the_pod_port_and_closes_as_kubelet_does():
    async def body():
        async with session() as c:
            err, data = pair(80, "0", 1)
            c.send(err, spdy.Data(1, b"", fin=True))  # kubectl closes its side of the error stream
            assert spdy.SynReply(1) in await c.until(lambda f: isinstance(f, spdy.SynReply))
            c.send(data)
            await c.until(lambda f: f == spdy.SynReply(3))
            c.send(spdy.Data(3, b"hello "), spdy.Data(3, b"world", fin=True))
            assert await c.stream_bytes(3) == b"HELLO WORLD"  # the pod's answer, then FIN when it closed
            assert await c.stream_bytes(1) == b""  # no error, and the error stream closes too
    run(body())


def test_several_connections_interleave_on_one_session():
    async def body():
        async with session() as c:
            frames = [*pair(80, "0", 1), *pair(80, "1", 5)]
            c.send(*frames)
            await c.until(lambda f: f == spdy.SynReply(7))
            c.send(spdy.Data(7, b"b" * 100000), spdy.Data(3, b"a"), spdy.Data(3, b"", fin=True),
                   spdy.Data(7, b"", fin=True))
            assert await c.stream_bytes(3) == b"A"
            assert await c.stream_bytes(7) == b"B" * 100000
            assert await c.stream_bytes(1) == await c.stream_bytes(5) == b""
    run(body())


def test_a_refused_port_is_reported_on_the_error_stream():
    async def body():
        async with session() as c:
            c.send(*pair(81, "0", 1))
            text = await c.stream_bytes(1)
            assert text.decode() == ("error forwarding port 81 to pod web-1, uid uid-1: "
                                     "dial tcp4 127.0.0.1:81: connect: connection refused")
            assert await c.stream_bytes(3) == b""  # and the data stream closes with nothing on it
    run(body())


def test_pings_are_echoed_and_bad_streams_reset():
    async def body():
        async with session() as c:
            c.send(spdy.Ping(1), spdy.Settings(((0, 7, 1 << 20),)), spdy.WindowUpdate(0, 1000))
            assert (await c.until(lambda f: isinstance(f, spdy.Ping)))[-1] == spdy.Ping(1)
            c.send(spdy.SynStream(1, {"streamtype": "data"}))  # no port
            assert (await c.until(lambda f: isinstance(f, spdy.RstStream)))[-1] == spdy.RstStream(
                1, spdy.REFUSED_STREAM)
            c.send(spdy.SynStream(3, {"streamtype": "bogus", "port": "80"}))
            assert (await c.until(lambda f: isinstance(f, spdy.RstStream)))[-1].stream_id == 3
            c.send(spdy.SynStream(2, {"streamtype": "data", "port": "80"}))  # even: the server's ids
            assert (await c.until(lambda f: isinstance(f, spdy.RstStream)))[-1] == spdy.RstStream(
                2, spdy.PROTOCOL_ERROR)
            c.send(spdy.Data(99, b"to a stream never opened"))
            assert (await c.until(lambda f: isinstance(f, spdy.RstStream)))[-1] == spdy.RstStream(
                99, spdy.INVALID_STREAM)
    run(body())


def test_a_broken_frame_gets_goaway_and_the_session_ends():
    async def body():
        async with session() as c:
            c.writer.write(b"\x80\x03\x00\x06\x00\x00\x00\x02xx")  # PING of 2 bytes
            frames = await c.until(lambda f: isinstance(f, spdy.GoAway))
            assert frames[-1].status == spdy.GOAWAY_PROTOCOL_ERROR
            assert await c.reader.read() == b""  # and the connection closes
    run(body())


def test_old_clients_without_request_ids_pair_by_stream_id():
    async def body():
        async with session() as c:
            c.send(spdy.SynStream(1, {"streamtype": "error", "port": "80"}),
                   spdy.SynStream(3, {"streamtype": "data", "port": "80"}))
            await c.until(lambda f: f == spdy.SynReply(3))
            c.send(spdy.Data(3, b"old", fin=True))
            assert await c.stream_bytes(3) == b"OLD"
    run(body())


def test_a_half_made_pair_times_out_with_the_kubelets_message(monkeypatch):
    monkeypatch.setattr(spdyforward, "PAIR_TIMEOUT_S", 0.2)

    async def body():
        async with session() as c:
            c.send(pair(80, "0", 1)[0])
            assert await c.stream_bytes(1) == b"timed out waiting for streams"
    run(body())


@pytest.mark.parametrize(("headers", "message"), [
    ({}, '"port" header is required'), ({"port": "x"}, "unable to parse"), ({"port": "0"}, "must be > 0"),
    ({"port": "70000"}, "unable to parse")])
def test_port_header_errors(headers, message):
    with pytest.raises(ValueError, match=message):
        spdyforward.port_of(headers)


def test_a_large_upload_to_a_slow_pod_is_held_back_not_lost(monkeypatch):
    waits = []
    real_wait = asyncio.Event.wait

    async def counting_wait(self):
        waits.append(self)
        return await real_wait(self)

    monkeypatch.setattr(asyncio.Event, "wait", counting_wait)

    async def body():
        async with session() as c:
            c.send(*pair(82, "0", 1))
            await c.until(lambda f: f == spdy.SynReply(3))
            for _ in range(640):  # 20 MB: more than the socket buffers and the session's queue hold
                c.send(spdy.Data(3, b"x" * 32768))
            c.send(spdy.Data(3, b"", fin=True))
            assert await asyncio.wait_for(c.stream_bytes(3), 15) == str(640 * 32768).encode()
    run(body())
    assert waits  # the session's reader waited for room instead of queueing all 20 MB


def test_a_reset_data_stream_ends_the_pod_connection():
    async def body():
        async with session() as c:
            c.send(*pair(80, "0", 1))
            await c.until(lambda f: f == spdy.SynReply(3))
            c.send(spdy.Data(3, b"ping"))
            await c.until(lambda f: f == spdy.Data(3, b"PING"))
            c.send(spdy.RstStream(3, spdy.CANCEL))
            assert await c.stream_bytes(1) == b""  # the error stream closes: the forward is over
            assert not any(isinstance(f, spdy.Data) and f.stream_id == 3 and f.fin for f in c.history)
    run(body())
