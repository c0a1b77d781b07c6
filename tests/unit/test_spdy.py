"""SPDY/3.1 framing (netsim.apiserver.spdy): the wire layout the spec gives, round trips of every
frame type, the header compression context shared across a session's frames, and bad frames
rejected.  kubectl's port-forward over this framing is in tests/e2e/test_streams.py."""

import struct
import zlib

import pytest

from netsim.apiserver import spdy

HEADERS = {"streamtype": "data", "port": "8080", "requestid": "0"}


def test_the_dictionary_is_the_spec_one():
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b",utf-,*,enq=0.")
    # Every header block's zlib stream names it by that id (FDICT set, DICTID after the header).
    frame = spdy.Encoder().encode(spdy.SynReply(1, {"a": "b"}))
    cmf, flg, dictid = struct.unpack_from(">BBI", frame, 12)
    assert flg & 0x20 and dictid == 0xE3C6A7C2


def test_fixed_frames_have_the_spec_layout():
    enc = spdy.Encoder()
    assert enc.encode(spdy.Ping(1)) == bytes.fromhex("80030006 00000004 00000001")
    assert enc.encode(spdy.Data(1, b"hi", fin=True)) == bytes.fromhex("00000001 01000002") + b"hi"
    assert enc.encode(spdy.RstStream(3, spdy.CANCEL)) == bytes.fromhex("80030003 00000008 00000003 00000005")
    assert enc.encode(spdy.GoAway(5, spdy.GOAWAY_PROTOCOL_ERROR)) == bytes.fromhex(
        "80030007 00000008 00000005 00000001")
    assert enc.encode(spdy.WindowUpdate(0, 65536)) == bytes.fromhex("80030009 00000008 00000000 00010000")
    assert enc.encode(spdy.Settings(((0, 7, 65536),), clear=True)) == bytes.fromhex(
        "80030004 0100000c 00000001 00000007 00010000")


def test_syn_stream_layout_and_its_header_block():
    frame = spdy.Encoder().encode(spdy.SynStream(1, HEADERS, associated_id=0, priority=7, slot=0, fin=True))
    first, second, stream_id, assoc, pri, slot = struct.unpack_from(">IIIIBB", frame)
    assert first == 0x80030001 and second >> 24 == spdy.FLAG_FIN and second & 0xFFFFFF == len(frame) - 8
    assert (stream_id, assoc, pri, slot) == (1, 0, 7 << 5, 0)
    block = zlib.decompressobj(zdict=spdy.DICTIONARY).decompress(frame[18:])
    assert block == (b"\x00\x00\x00\x03" + b"\x00\x00\x00\x0astreamtype\x00\x00\x00\x04data"
                     + b"\x00\x00\x00\x04port\x00\x00\x00\x048080" + b"\x00\x00\x00\x09requestid\x00\x00\x00\x010")


ALL_FRAMES = [
    spdy.SynStream(1, HEADERS, associated_id=0, priority=3, slot=2),
    spdy.SynStream(3, {"x": "a\x00b"}, fin=True, unidirectional=True),
    spdy.SynReply(1),
    spdy.SynReply(3, {"status": "200"}, fin=True),
    spdy.RstStream(5, spdy.REFUSED_STREAM),
    spdy.Settings(((1, 4, 100), (0, 7, 1 << 20))),
    spdy.Settings(clear=True),
    spdy.Ping(7),
    spdy.GoAway(9, spdy.GOAWAY_OK),
    spdy.HeadersFrame(1, {"a": "b"}, fin=True),
    spdy.WindowUpdate(1, 32768),
    spdy.Data(1, b"payload"),
    spdy.Data(3, b"", fin=True),
    spdy.Data(5, bytes(range(256)) * 300),
]


def test_every_frame_round_trips_in_one_session():
    enc, dec = spdy.Encoder(), spdy.Decoder()
    wire = b"".join(enc.encode(f) for f in ALL_FRAMES)
    assert dec.feed(wire) == ALL_FRAMES
    assert dec.pending == 0


def test_frames_split_anywhere_reassemble():
    enc, dec = spdy.Encoder(), spdy.Decoder()
    wire = b"".join(enc.encode(f) for f in ALL_FRAMES[:10])
    got = []
    for i in range(len(wire)):  # one byte at a time: every boundary falls inside some frame
        got += dec.feed(wire[i:i + 1])
    assert got == ALL_FRAMES[:10]


def test_header_blocks_share_one_compression_context():
    enc = spdy.Encoder()
    frames = [enc.encode(spdy.SynStream(i, {**HEADERS, "requestid": str(i)})) for i in (1, 3, 5)]
    # Later blocks refer back to earlier ones: they are smaller than the first ...
    assert len(frames[1]) < len(frames[0]) and len(frames[2]) < len(frames[0])
    # ... decode in order with one Decoder ...
    dec = spdy.Decoder()
    assert [f.headers["requestid"] for f in dec.feed(b"".join(frames))] == ["1", "3", "5"]
    # ... and a Decoder that has not seen the first block cannot read the second.
    with pytest.raises(spdy.SpdyError):
        spdy.Decoder().feed(frames[1])
    # Data frames between them do not disturb the context.
    enc2, dec2 = spdy.Encoder(), spdy.Decoder()
    mixed = [spdy.SynReply(1, {"a": "1"}), spdy.Data(1, b"x" * 1000), spdy.HeadersFrame(1, {"a": "2"})]
    assert dec2.feed(b"".join(enc2.encode(f) for f in mixed)) == mixed


def control(kind: int, payload: bytes, flags: int = 0, version: int = 3) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, kind, flags << 24 | len(payload)) + payload


def block(raw: bytes) -> bytes:
    z = zlib.compressobj(zdict=spdy.DICTIONARY)
    return z.compress(raw) + z.flush(zlib.Z_SYNC_FLUSH)


def pairs(*items: tuple[bytes, bytes], count: int | None = None) -> bytes:
    out = struct.pack(">I", len(items) if count is None else count)
    for name, value in items:
        out += struct.pack(">I", len(name)) + name + struct.pack(">I", len(value)) + value
    return out


BAD = {
    "version 2": control(spdy.PING, struct.pack(">I", 1), version=2),
    "short PING": control(spdy.PING, b"\x00\x00\x01"),
    "long RST_STREAM": control(spdy.RST_STREAM, bytes(12)),
    "RST_STREAM status 0": control(spdy.RST_STREAM, struct.pack(">II", 1, 0)),
    "RST_STREAM on stream 0": control(spdy.RST_STREAM, struct.pack(">II", 0, 5)),
    "GOAWAY of 4 bytes": control(spdy.GOAWAY, bytes(4)),
    "WINDOW_UPDATE delta 0": control(spdy.WINDOW_UPDATE, struct.pack(">II", 1, 0)),
    "SETTINGS count mismatch": control(spdy.SETTINGS, struct.pack(">III", 2, 7, 1)),
    "SETTINGS without count": control(spdy.SETTINGS, b"\x00"),
    "data on stream 0": struct.pack(">II", 0, 2) + b"hi",
    "SYN_STREAM on stream 0": control(spdy.SYN_STREAM, struct.pack(">IIBB", 0, 0, 0, 0) + block(pairs())),
    "SYN_STREAM too short": control(spdy.SYN_STREAM, bytes(6)),
    "SYN_REPLY too short": control(spdy.SYN_REPLY, bytes(2)),
    "header block not zlib": control(spdy.SYN_REPLY, struct.pack(">I", 1) + b"not zlib at all"),
    "header block with upper case": control(spdy.SYN_REPLY, struct.pack(">I", 1) + block(pairs((b"Port", b"1")))),
    "header name repeated": control(spdy.SYN_REPLY, struct.pack(">I", 1) + block(pairs((b"a", b"1"), (b"a", b"2")))),
    "empty header name": control(spdy.SYN_REPLY, struct.pack(">I", 1) + block(pairs((b"", b"1")))),
    "truncated header block": control(spdy.SYN_REPLY, struct.pack(">I", 1) + block(pairs((b"a", b"1"))[:-1])),
    "bytes after the pairs": control(spdy.SYN_REPLY, struct.pack(">I", 1) + block(pairs((b"a", b"1")) + b"xx")),
    "pair count beyond the block": control(spdy.SYN_REPLY, struct.pack(">I", 1) + block(pairs(count=10 ** 6))),
    "header block not UTF-8": control(spdy.SYN_REPLY, struct.pack(">I", 1) + block(pairs((b"a", b"\xff")))),
    "header block bomb": control(spdy.SYN_REPLY, struct.pack(">I", 1)
                                 + block(pairs((b"a", b"x" * (spdy.MAX_HEADER_BLOCK + 1))))),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_frames_are_rejected_and_the_decoder_stays_broken(name):
    dec = spdy.Decoder()
    with pytest.raises(spdy.SpdyError):
        dec.feed(BAD[name])
    with pytest.raises(spdy.SpdyError):  # its zlib context may be half-advanced: no more frames
        dec.feed(spdy.Encoder().encode(spdy.Ping(1)))


def test_a_header_block_that_ends_the_zlib_stream_is_rejected():
    z = zlib.compressobj(zdict=spdy.DICTIONARY)
    finished = z.compress(pairs((b"a", b"1"))) + z.flush()  # Z_FINISH: the shared stream would end
    with pytest.raises(spdy.SpdyError, match="ends the zlib stream"):
        spdy.Decoder().feed(control(spdy.SYN_REPLY, struct.pack(">I", 1) + finished))


def test_unknown_control_frames_are_skipped():
    dec = spdy.Decoder()
    unknown = control(10, b"credential frame of SPDY/3, gone in 3.1")
    assert dec.feed(unknown + spdy.Encoder().encode(spdy.Ping(3))) == [spdy.Ping(3)]


def test_the_encoder_refuses_what_the_wire_cannot_say():
    enc = spdy.Encoder()
    for frame in (spdy.Data(0, b"x"), spdy.SynReply(0), spdy.RstStream(1 << 31, 1), spdy.WindowUpdate(1, 0),
                  spdy.SynStream(1, {"Upper": "x"}), spdy.SynStream(1, priority=8),
                  spdy.Data(1, bytes(spdy.MAX_LENGTH + 1))):
        with pytest.raises(spdy.SpdyError):
            enc.encode(frame)
    with pytest.raises(TypeError):
        enc.encode("not a frame")


def test_a_partial_frame_waits_for_the_rest():
    dec = spdy.Decoder()
    wire = spdy.Encoder().encode(spdy.Data(1, b"x" * 100))
    assert dec.feed(wire[:50]) == [] and dec.pending == 50
    assert dec.feed(wire[50:]) == [spdy.Data(1, b"x" * 100)] and dec.pending == 0
