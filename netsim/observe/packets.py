"""Reading captured frames: Ethernet, IPv4, the L4 ports, VXLAN's inner frame, IPIP's inner
packet (IP protocol 4, Calico's tunl0), and an ICMP error's quoted packet, enough to follow
one flow through NAT and encapsulation.  Pure functions on bytes: a capture of thousands of
frames is filtered without building a scapy object per frame (scapy builds the packet
`netsim trace` sends, and writes the pcap)."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

VXLAN_PORTS = (8472, 4789)  # flannel's (the Linux default) and IANA's (Calico's)
IPPROTO_IPIP = 4
PROTOS = {1: "ICMP", 4: "IPIP", 6: "TCP", 17: "UDP", 132: "SCTP"}
# A packet socket on a device without a link-layer header (ipip's tunl0 is ARPHRD_TUNNEL)
# hands over the bare IP packet; the capture gives it this Ethernet header so every frame,
# and the pcap, reads alike.
ETHER_IPV4 = b"\0" * 12 + b"\x08\x00"
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772
TCP_FLAGS = "FSRPAUEC"
ICMP_TYPES = {0: "echo-reply", 3: "unreachable", 8: "echo-request", 11: "time-exceeded"}
UNREACH_CODES = {0: "net", 1: "host", 3: "port", 9: "net-prohibited", 10: "host-prohibited",
                 13: "admin-prohibited"}


@dataclass(frozen=True)
class IPv4:
    src: str
    dst: str
    proto: int
    ident: int
    sport: int = 0          # TCP/UDP ports; for ICMP echo: the echo id in both
    dport: int = 0
    flags: str = ""         # TCP flags
    icmp_type: int = -1
    icmp_code: int = -1
    quoted: IPv4 | None = None  # the packet an ICMP error is about

    @property
    def proto_name(self) -> str:
        return PROTOS.get(self.proto, str(self.proto))

    def endpoints(self) -> str:
        if self.proto in (6, 17, 132):
            return f"{self.src}:{self.sport} > {self.dst}:{self.dport}"
        return f"{self.src} > {self.dst}"

    def summary(self) -> str:
        text = f"{self.endpoints()} {self.proto_name}"
        if self.proto == 6:
            text += f" [{self.flags or '.'}]"
        elif self.proto == 1:
            text += f" {ICMP_TYPES.get(self.icmp_type, self.icmp_type)}"
            if self.icmp_type == 3:
                text += f" ({UNREACH_CODES.get(self.icmp_code, self.icmp_code)})"
            elif self.icmp_type in (0, 8):
                text += f" id {self.sport}"
            if self.quoted is not None:
                text += f" about {self.quoted.endpoints()} {self.quoted.proto_name}"
        return text


@dataclass(frozen=True)
class Frame:
    """What one captured frame carries: the packet, and the outer packet when encapsulated
    (``encap``: "vxlan" with its VNI, or "ipip")."""
    packet: IPv4
    outer: IPv4 | None = None
    vni: int | None = None
    encap: str | None = None

    def encapsulation(self) -> str:
        """The outer header in words: "VXLAN VNI 4096, UDP 4789, A -> B" or "IPIP (IP protocol 4), A -> B"."""
        o = self.outer
        if o is None:
            return ""
        if self.encap == "ipip":
            return f"IPIP (IP protocol 4), {o.src} -> {o.dst}"
        return f"VXLAN VNI {self.vni}, UDP {o.dport}, {o.src} -> {o.dst}"

    def summary(self) -> str:
        p, o = self.packet, self.outer
        if o is None:
            return p.summary()
        if self.encap == "ipip":
            return f"IPIP {o.src} > {o.dst} | {p.summary()}"
        return f"VXLAN {o.src}:{o.sport} > {o.dst}:{o.dport} VNI {self.vni} | {p.summary()}"


def parse_ip(data: bytes, quoted: bool = False) -> IPv4 | None:
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 0x0F) * 4
    ident, = struct.unpack_from("!H", data, 4)
    proto = data[9]
    src, dst = socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20])
    l4 = data[ihl:]
    if proto in (6, 17, 132) and len(l4) >= 4:
        sport, dport = struct.unpack_from("!HH", l4)
        flags = ""
        if proto == 6 and len(l4) >= 14:
            flags = "".join(f for i, f in enumerate(TCP_FLAGS) if l4[13] >> i & 1)
        return IPv4(src, dst, proto, ident, sport, dport, flags)
    if proto == 1 and len(l4) >= 8:
        kind, code = l4[0], l4[1]
        if kind in (0, 8):
            echo_id, = struct.unpack_from("!H", l4, 4)
            return IPv4(src, dst, proto, ident, echo_id, echo_id, icmp_type=kind, icmp_code=code)
        inner = None if quoted else parse_ip(l4[8:], quoted=True)
        return IPv4(src, dst, proto, ident, icmp_type=kind, icmp_code=code, quoted=inner)
    return IPv4(src, dst, proto, ident)


def link_frame(data: bytes, hatype: int) -> bytes:
    """A captured frame as Ethernet: one from a device without a link-layer header (tunl0)
    gets :data:`ETHER_IPV4` in front."""
    if hatype in (ARPHRD_ETHER, ARPHRD_LOOPBACK) or not data or data[0] >> 4 != 4:
        return data
    return ETHER_IPV4 + data


def parse_frame(frame: bytes) -> Frame | None:
    """An Ethernet frame (VLAN tags skipped); VXLAN is opened to its inner frame, IPIP to its
    inner packet."""
    offset = 12
    while offset + 2 <= len(frame) and frame[offset:offset + 2] in (b"\x81\x00", b"\x88\xa8"):
        offset += 4
    if frame[offset:offset + 2] != b"\x08\x00":
        return None
    packet = parse_ip(frame[offset + 2:])
    if packet is None:
        return None
    if packet.proto == 17 and packet.dport in VXLAN_PORTS:
        ihl = (frame[offset + 2] & 0x0F) * 4
        vxlan = frame[offset + 2 + ihl + 8:]
        if len(vxlan) >= 8 and vxlan[0] & 0x08:
            inner = parse_frame(vxlan[8:])
            if inner is not None:
                return Frame(inner.packet, packet, int.from_bytes(vxlan[4:7], "big"), "vxlan")
    if packet.proto == IPPROTO_IPIP:
        ihl = (frame[offset + 2] & 0x0F) * 4
        inner = parse_ip(frame[offset + 2 + ihl:])
        if inner is not None:
            return Frame(inner, packet, None, "ipip")
    return Frame(packet)


def is_redirect(p: IPv4) -> bool:
    """An ICMP redirect: a router's advice to the sender (the underlay's router tells a host on
    the same segment to go straight to a node), not an answer; the packet went on."""
    return p.proto == 1 and p.icmp_type == 5


@dataclass(frozen=True)
class Flow:
    """The traced connection as it left its source."""
    proto: int
    src: str
    sport: int   # for ICMP: the echo id
    dst: str
    dport: int
    ident: int   # the first packet's IP ID: NAT keeps it, so it names that packet at every hop

    def is_forward(self, p: IPv4) -> bool:
        """The traced packet itself, whatever NAT made of its addresses and ports: NAT keeps
        the IP ID."""
        return p.proto == self.proto and p.ident == self.ident and (p.proto != 1 or p.icmp_type == 8)

    def is_reply_home(self, p: IPv4) -> bool:
        """An answer as it reaches the source (every NAT undone)."""
        if p.dst != self.src or is_redirect(p):
            return False
        if p.proto == 1 and p.quoted is not None:
            return p.quoted.ident == self.ident
        if p.proto == 1:
            return p.icmp_type == 0 and p.sport == self.sport
        return p.proto == self.proto and p.dport == self.sport


class Follower:
    """Tells the traced packet and its answers apart from everything else, at every hop: the
    forward packet by its IP ID; an answer by being the mirror image of some form the forward
    packet took (so a reply between a masquerading node and the backend, with the node's
    address and a port NAT chose, is still recognised)."""

    def __init__(self, flow: Flow):
        self.flow = flow
        self.views: set[tuple[str, int, str, int]] = set()

    def learn(self, p: IPv4) -> None:
        if self.flow.is_forward(p):
            self.views.add((p.src, p.sport, p.dst, p.dport))

    def direction(self, p: IPv4) -> str | None:
        if self.flow.is_forward(p):
            return "fwd"
        if is_redirect(p):
            return None
        if p.proto == 1 and p.quoted is not None:
            return "rev" if p.quoted.ident == self.flow.ident else None
        if p.proto != self.flow.proto:
            return None
        if p.proto == 1 and p.icmp_type != 0:
            return None
        return "rev" if (p.dst, p.dport, p.src, p.sport) in self.views else None
