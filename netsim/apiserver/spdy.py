"""SPDY/3.1 framing, as kubectl's port-forward speaks it (moby/spdystream under
k8s.io/apimachinery's httpstream/spdy): the nine frame types as plain values, an Encoder and an
incremental Decoder.  Written here because no maintained Python library implements SPDY (the
protocol was retired for HTTP/2; kubectl still uses it for port-forward).

Wire format (draft-mbelshe-httpbis-spdy-00 with the 3.1 session window): a control frame is
``1 | version(15) | type(16) | flags(8) | length(24) | payload``, a data frame is
``0 | stream-id(31) | flags(8) | length(24) | data``.  Header blocks (SYN_STREAM, SYN_REPLY,
HEADERS) are ``count(32)`` then ``len(32) name len(32) value`` pairs, names lower-case, several
values of one name joined by NUL; each block is deflated with zlib primed with the SPDY/3
dictionary and ended with a sync flush, and the compression context runs across every block of
one direction of a session, so one Encoder and one Decoder serve one connection each way.

Flow control: spdystream neither sends WINDOW_UPDATE nor honours one, so frames are encoded and
decoded here and a session may ignore them (honouring the 64 KiB initial window would stall a
transfer to kubectl, which never opens it).  Unknown control frame types are skipped, as the
spec asks; everything else malformed raises SpdyError and leaves the Decoder unusable, since
its zlib context can no longer be trusted.  Pure: the standard library only.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN, FLAG_UNIDIRECTIONAL, FLAG_CLEAR_SETTINGS = 0x01, 0x02, 0x01
# RST_STREAM status codes
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, UNSUPPORTED_VERSION, CANCEL, INTERNAL_ERROR = 1, 2, 3, 4, 5, 6
FLOW_CONTROL_ERROR, STREAM_IN_USE, STREAM_ALREADY_CLOSED, FRAME_TOO_LARGE = 7, 8, 9, 11
# GOAWAY status codes
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, GOAWAY_INTERNAL_ERROR = 0, 1, 2
SETTINGS_INITIAL_WINDOW_SIZE = 7
MAX_LENGTH = (1 << 24) - 1  # the 24-bit length field
MAX_STREAM_ID = (1 << 31) - 1
MAX_HEADER_BLOCK = 256 * 1024  # decompressed; a port-forward stream's headers are a few dozen bytes
HEADER_SIZE = 8

# The SPDY/3 header dictionary (spec section 2.6.10.1): length-prefixed header names and common
# values, then a run of status codes, reason phrases, dates and media types.  Its Adler-32,
# 0xe3c6a7c2, is the dictionary id in every header block's zlib stream.
_WORDS = ("options head post put delete trace accept accept-charset accept-encoding accept-language "
          "accept-ranges age allow authorization cache-control connection content-base content-encoding "
          "content-language content-length content-location content-md5 content-range content-type date etag "
          "expect expires from host if-match if-modified-since if-none-match if-range if-unmodified-since "
          "last-modified location max-forwards pragma proxy-authenticate proxy-authorization range referer "
          "retry-after server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate "
          "method get status 200_OK version HTTP/1.1 url public set-cookie keep-alive origin")  # _ is a space
_TAIL = ("100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
         "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
         "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
         "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
         "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
         "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")


def _dictionary() -> bytes:
    words = [w.replace("_", " ").encode() for w in _WORDS.split()]
    return b"".join(struct.pack(">I", len(w)) + w for w in words) + _TAIL.encode()


DICTIONARY = _dictionary()


class SpdyError(ValueError):
    """A frame that breaks the protocol; the session should send GOAWAY and close."""


Headers = dict[str, str]  # name (lower-case) -> value; several values are joined by NUL


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    associated_id: int = 0
    priority: int = 0
    slot: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    entries: tuple[tuple[int, int, int], ...] = ()  # (flags, id, value)
    clear: bool = False


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = GOAWAY_OK


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes = b""
    fin: bool = False


Frame = SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame | WindowUpdate | Data


# -- header blocks -------------------------------------------------------------------------

def pack_headers(headers: Headers) -> bytes:
    """The uncompressed name/value block."""
    out = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        if not name or name != name.lower():
            raise SpdyError(f"header name {name!r} must be non-empty and lower-case")
        n, v = name.encode(), value.encode()
        out += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
    return b"".join(out)


def unpack_headers(block: bytes) -> Headers:
    """The name/value pairs of an uncompressed block; SpdyError for a truncated, overlong or
    otherwise invalid one (upper-case, empty or repeated names, as the spec forbids)."""
    if len(block) < 4:
        raise SpdyError("header block shorter than its pair count")
    (count,) = struct.unpack_from(">I", block)
    pos, headers = 4, {}

    def take() -> bytes:
        nonlocal pos
        if pos + 4 > len(block):
            raise SpdyError("header block truncated")
        (n,) = struct.unpack_from(">I", block, pos)
        if pos + 4 + n > len(block):
            raise SpdyError("header block truncated")
        pos += 4 + n
        return block[pos - n:pos]

    if count > len(block) // 8:  # every pair takes at least 8 bytes: refuse before looping
        raise SpdyError(f"header block claims {count} pairs in {len(block)} bytes")
    for _ in range(count):
        try:
            name, value = take().decode(), take().decode()
        except UnicodeDecodeError as exc:
            raise SpdyError(f"header block is not UTF-8: {exc}") from exc
        if not name or name != name.lower():
            raise SpdyError(f"header name {name!r} must be non-empty and lower-case")
        if name in headers:
            raise SpdyError(f"header {name!r} appears twice")
        headers[name] = value
    if pos != len(block):
        raise SpdyError(f"{len(block) - pos} bytes after the last header pair")
    return headers


# -- encoding ------------------------------------------------------------------------------

def _control(kind: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise SpdyError(f"control frame payload of {len(payload)} bytes exceeds {MAX_LENGTH}")
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload


def _stream_id(stream_id: int, zero_ok: bool = False) -> int:
    if not (0 if zero_ok else 1) <= stream_id <= MAX_STREAM_ID:
        raise SpdyError(f"stream id {stream_id} is out of range")
    return stream_id


class Encoder:
    """Frames to bytes for one direction of one session (it owns the header compression
    context, so every frame of that direction must go through the same Encoder, in order)."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(zdict=DICTIONARY)

    def _block(self, headers: Headers) -> bytes:
        return self._zlib.compress(pack_headers(headers)) + self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, frame: Frame) -> bytes:
        match frame:
            case Data(stream_id, data, fin):
                if len(data) > MAX_LENGTH:
                    raise SpdyError(f"data frame of {len(data)} bytes exceeds {MAX_LENGTH}")
                return struct.pack(">II", _stream_id(stream_id), (FLAG_FIN if fin else 0) << 24 | len(data)) + data
            case SynStream():
                flags = (FLAG_FIN if frame.fin else 0) | (FLAG_UNIDIRECTIONAL if frame.unidirectional else 0)
                if not 0 <= frame.priority <= 7 or not 0 <= frame.slot <= 255:
                    raise SpdyError("priority must be 0-7 and slot 0-255")
                return _control(SYN_STREAM, flags, struct.pack(">IIBB", _stream_id(frame.stream_id),
                                                               _stream_id(frame.associated_id, zero_ok=True),
                                                               frame.priority << 5, frame.slot)
                                + self._block(frame.headers))
            case SynReply(stream_id, headers, fin):
                return _control(SYN_REPLY, FLAG_FIN if fin else 0,
                                struct.pack(">I", _stream_id(stream_id)) + self._block(headers))
            case HeadersFrame(stream_id, headers, fin):
                return _control(HEADERS, FLAG_FIN if fin else 0,
                                struct.pack(">I", _stream_id(stream_id)) + self._block(headers))
            case RstStream(stream_id, status):
                return _control(RST_STREAM, 0, struct.pack(">II", _stream_id(stream_id), status))
            case Settings(entries, clear):
                body = struct.pack(">I", len(entries)) + b"".join(
                    struct.pack(">II", (flags << 24) | ident, value) for flags, ident, value in entries)
                return _control(SETTINGS, FLAG_CLEAR_SETTINGS if clear else 0, body)
            case Ping(ping_id):
                return _control(PING, 0, struct.pack(">I", ping_id))
            case GoAway(last, status):
                return _control(GOAWAY, 0, struct.pack(">II", _stream_id(last, zero_ok=True), status))
            case WindowUpdate(stream_id, delta):
                if not 1 <= delta <= MAX_STREAM_ID:
                    raise SpdyError(f"window delta {delta} must be from 1 to 2^31-1")
                return _control(WINDOW_UPDATE, 0, struct.pack(">II", _stream_id(stream_id, zero_ok=True), delta))
        raise TypeError(f"not a SPDY frame: {frame!r}")


# -- decoding ------------------------------------------------------------------------------

_FIXED = {RST_STREAM: 8, PING: 4, GOAWAY: 8, WINDOW_UPDATE: 8}


class Decoder:
    """Bytes to frames for one direction of one session: feed() whatever arrived, get the
    complete frames back; a partial frame waits for more."""

    def __init__(self, max_header_block: int = MAX_HEADER_BLOCK) -> None:
        self._zlib = zlib.decompressobj(zdict=DICTIONARY)
        self._buffer = bytearray()
        self._max_header_block = max_header_block
        self._broken: SpdyError | None = None

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        if self._broken:
            raise self._broken
        self._buffer += data
        frames = []
        try:
            while len(self._buffer) >= HEADER_SIZE:
                first, second = struct.unpack_from(">II", self._buffer)
                length = second & 0xFFFFFF
                if len(self._buffer) < HEADER_SIZE + length:
                    break
                payload = bytes(self._buffer[HEADER_SIZE:HEADER_SIZE + length])
                del self._buffer[:HEADER_SIZE + length]
                frame = self._frame(first, second >> 24, payload)
                if frame is not None:
                    frames.append(frame)
        except SpdyError as exc:
            self._broken = exc
            raise
        return frames

    def _headers(self, compressed: bytes) -> Headers:
        try:
            block = self._zlib.decompress(compressed, self._max_header_block + 1)
        except zlib.error as exc:
            raise SpdyError(f"header block does not decompress: {exc}") from exc
        if len(block) > self._max_header_block or self._zlib.unconsumed_tail:
            raise SpdyError(f"header block larger than {self._max_header_block} bytes")
        if self._zlib.eof:
            raise SpdyError("header block ends the zlib stream the session shares")
        return unpack_headers(block)

    def _frame(self, first: int, flags: int, payload: bytes) -> Frame | None:
        if not first & 0x80000000:
            stream_id = first & MAX_STREAM_ID
            if stream_id == 0:
                raise SpdyError("data frame on stream 0")
            return Data(stream_id, payload, bool(flags & FLAG_FIN))
        version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise SpdyError(f"SPDY version {version}; only {VERSION} is spoken")
        if kind in _FIXED and len(payload) != _FIXED[kind]:
            raise SpdyError(f"control frame type {kind} must carry {_FIXED[kind]} bytes, not {len(payload)}")
        fin = bool(flags & FLAG_FIN)
        if kind == SYN_STREAM:
            if len(payload) < 10:
                raise SpdyError("SYN_STREAM shorter than its fixed fields")
            stream_id, associated, priority, slot = struct.unpack_from(">IIBB", payload)
            return SynStream(self._nonzero(stream_id, "SYN_STREAM"), self._headers(payload[10:]),
                             associated & MAX_STREAM_ID, priority >> 5, slot, fin,
                             bool(flags & FLAG_UNIDIRECTIONAL))
        if kind in (SYN_REPLY, HEADERS):
            name = "SYN_REPLY" if kind == SYN_REPLY else "HEADERS"
            if len(payload) < 4:
                raise SpdyError(f"{name} shorter than its stream id")
            stream_id = self._nonzero(struct.unpack_from(">I", payload)[0], name)
            cls = SynReply if kind == SYN_REPLY else HeadersFrame
            return cls(stream_id, self._headers(payload[4:]), fin)
        if kind == RST_STREAM:
            stream_id, status = struct.unpack(">II", payload)
            if status == 0:
                raise SpdyError("RST_STREAM with status 0")
            return RstStream(self._nonzero(stream_id, "RST_STREAM"), status)
        if kind == SETTINGS:
            if len(payload) < 4:
                raise SpdyError("SETTINGS shorter than its entry count")
            (count,) = struct.unpack_from(">I", payload)
            if len(payload) != 4 + 8 * count:
                raise SpdyError(f"SETTINGS says {count} entries but carries {len(payload) - 4} bytes")
            entries = tuple((fi >> 24, fi & 0xFFFFFF, value)
                            for fi, value in struct.iter_unpack(">II", payload[4:]))
            return Settings(entries, bool(flags & FLAG_CLEAR_SETTINGS))
        if kind == PING:
            return Ping(struct.unpack(">I", payload)[0])
        if kind == GOAWAY:
            last, status = struct.unpack(">II", payload)
            return GoAway(last & MAX_STREAM_ID, status)
        if kind == WINDOW_UPDATE:
            stream_id, delta = struct.unpack(">II", payload)
            delta &= MAX_STREAM_ID
            if delta == 0:
                raise SpdyError("WINDOW_UPDATE with a delta of 0")
            return WindowUpdate(stream_id & MAX_STREAM_ID, delta)
        return None  # an unknown control frame type: ignored, as the spec says

    @staticmethod
    def _nonzero(stream_id: int, name: str) -> int:
        stream_id &= MAX_STREAM_ID
        if stream_id == 0:
            raise SpdyError(f"{name} on stream 0")
        return stream_id


__all__ = ["CANCEL", "DICTIONARY", "Data", "Decoder", "Encoder", "FLAG_FIN", "Frame", "GOAWAY_OK",
           "GOAWAY_PROTOCOL_ERROR", "GoAway", "HeadersFrame", "INTERNAL_ERROR", "PROTOCOL_ERROR", "Ping",
           "REFUSED_STREAM", "RstStream", "Settings", "SpdyError", "SynReply", "SynStream", "WindowUpdate",
           "pack_headers", "unpack_headers"]
