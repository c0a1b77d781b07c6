"""ICMP echo from inside a namespace, without a `ping` process per probe."""

from __future__ import annotations

import itertools
import os
import select
import socket
import struct
import time

from netsim import kernel

_ids = itertools.count((os.getpid() << 4) & 0xFFFF)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload


def ping(netns: str, dst: str, timeout: float = 1.0) -> float | None:
    """Round-trip time in ms of one echo from ``netns`` to ``dst``, or None if no reply came
    within ``timeout`` seconds."""
    ident = next(_ids) & 0xFFFF
    payload = struct.pack("!d", time.monotonic()) + b"netsim"
    with kernel.socket_in(netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        start = time.monotonic()
        try:
            sock.sendto(echo_request(ident, 1, payload), (dst, 0))
        except OSError:  # e.g. ENETUNREACH: no route, so no reply
            return None
        deadline = start + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            packet, (src, _) = sock.recvfrom(2048)
            ihl = (packet[0] & 0x0F) * 4
            icmp_type, _, _, rid, _ = struct.unpack("!BBHHH", packet[ihl:ihl + 8])
            if icmp_type == 0 and rid == ident and src == dst:
                return (time.monotonic() - start) * 1000
    return None
