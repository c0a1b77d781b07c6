"""The kernel's own accounts of what netfilter did to a packet, read from netlink in one
namespace: nftables trace events (``nft monitor trace``'s source) and the TRACE lines that
iptables-legacy hands to the namespace's logger, bound here to nfnetlink_log.

Both follow packets whose ``skb->nf_trace`` is set; `netsim trace` sets it with one nftables
rule (``meta nftrace set 1``) that matches only the traced flow, so nothing else is reported.
The parsers are small: netlink TLVs, no library speaks these two message families."""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass, field

from netsim import kernel

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNLGRP_NFTRACE = 9
NFNL_SUBSYS_ULOG = 4
NFNL_SUBSYS_NFTABLES = 10
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NFT_MSG_TRACE = 17
NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND = 1, 2
NFULNL_COPY_PACKET = 2
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_QTHRESH = 1, 2, 5
NFULA_PACKET_HDR, NFULA_IFINDEX_INDEV, NFULA_IFINDEX_OUTDEV, NFULA_PAYLOAD, NFULA_PREFIX = 1, 4, 5, 9, 10
HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
NF_VERDICTS = {0: "drop", 1: "accept", 2: "stolen", 3: "queue", 4: "repeat", 5: "stop",
               -1: "continue", -2: "break", -3: "jump", -4: "goto", -5: "return"}
TRACE_TYPES = {1: "policy", 2: "return", 3: "rule"}
_HDR = struct.Struct("=IHHII")


@dataclass
class RuleEvent:
    """One rule (or chain policy) a traced packet met in one namespace."""
    source: str                  # "nft" or "iptables"
    table: str
    chain: str
    kind: str                    # rule, policy or return
    verdict: str | None = None   # nft: accept/drop/jump/...; iptables: filled from the rule's target
    target_chain: str | None = None
    handle: int | None = None    # nft rule handle
    rulenum: int | None = None   # iptables rule number within the chain
    iif: int = 0
    oif: int = 0
    hook: str | None = None
    packet: bytes = b""          # the IP packet (network header onwards) as the hook saw it
    text: str = ""               # the rule as `nft list` / `iptables-save` print it
    extra: dict = field(default_factory=dict)


def _attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[offset + 4:offset + length]  # without NESTED / NET_BYTEORDER flags
        offset += (length + 3) & ~3
    return out


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _messages(data: bytes):
    offset = 0
    while offset + _HDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _HDR.unpack_from(data, offset)
        if length < _HDR.size:
            break
        yield kind, data[offset + _HDR.size:offset + length]
        offset += (length + 3) & ~3


def _nfnl(msg_type: int, family: int, res_id: int, attrs: bytes, seq: int) -> bytes:
    body = struct.pack("=BBH", family, 0, socket.htons(res_id)) + attrs
    return _HDR.pack(_HDR.size + len(body), msg_type, kernel.NLM_F_REQUEST | kernel.NLM_F_ACK, seq, 0) + body


class _Listener:
    def __init__(self, netns: str):
        self.netns = netns
        self.sock = kernel.socket_in(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind((0, 0))
        self.sock.setblocking(False)
        self.raw: list[bytes] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> None:
        while True:
            try:
                self.raw.append(self.sock.recv(1 << 16))
            except BlockingIOError:
                return

    def close(self) -> None:
        self.sock.close()


class NftTraceListener(_Listener):
    """nftables trace events (NFNLGRP_NFTRACE) of one namespace."""

    def __init__(self, netns: str):
        super().__init__(netns)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTRACE)

    def events(self) -> list[RuleEvent]:
        """Only a traversal's first event carries the packet's headers; the others share its
        trace id and get them from it.  A rule event with no rule and verdict "continue" (the
        end of a chain) says nothing the chain's policy or return event does not."""
        out = []
        packets: dict[bytes, bytes] = {}
        for chunk in self.raw:
            for kind, body in _messages(chunk):
                if kind != (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE):
                    continue
                a = _attrs(body, 4)
                trace_id = a.get(6, b"")
                if 8 in a:
                    packets[trace_id] = a[8] + a.get(9, b"")
                kind_ = TRACE_TYPES.get(struct.unpack("!I", a[4])[0] if 4 in a else 0, "rule")
                verdict = target = None
                if 5 in a:
                    v = _attrs(a[5])
                    if 1 in v:
                        verdict = NF_VERDICTS.get(struct.unpack("!i", v[1])[0], "?")
                    if 2 in v:
                        target = v[2].rstrip(b"\0").decode()
                if 16 in a:
                    verdict = NF_VERDICTS.get(struct.unpack("!I", a[16])[0], "?")
                if kind_ == "rule" and 3 not in a and verdict == "continue":
                    continue
                out.append(RuleEvent(
                    source="nft", table=a.get(1, b"").rstrip(b"\0").decode(),
                    chain=a.get(2, b"").rstrip(b"\0").decode(), kind=kind_, verdict=verdict, target_chain=target,
                    handle=struct.unpack("!Q", a[3])[0] if 3 in a else None,
                    iif=struct.unpack("!I", a[10])[0] if 10 in a else 0,
                    oif=struct.unpack("!I", a[12])[0] if 12 in a else 0,
                    packet=packets.get(trace_id, b"")))
        return out


class LegacyTraceListener(_Listener):
    """iptables-legacy TRACE lines of one namespace: the namespace's IPv4 logger is switched to
    nfnetlink_log for the duration (and switched back by :meth:`close`), and this socket binds
    group 0, where the kernel sends log lines that name no group."""

    SYSCTL = "net.netfilter.nf_log.2"

    def __init__(self, netns: str):
        super().__init__(netns)
        self._seq = 0
        self._config(NFULNL_CFG_CMD_UNBIND, check=False)  # a group another listener left bound
        self._config(NFULNL_CFG_CMD_BIND)
        mode = struct.pack("!IBB", 0xFFFF, NFULNL_COPY_PACKET, 0)
        self._send(_attr(NFULA_CFG_MODE, mode) + _attr(NFULA_CFG_QTHRESH, struct.pack("!I", 1)))
        self.previous_logger = kernel.sysctl(self.SYSCTL, netns=netns)
        kernel.sysctl(self.SYSCTL, "nfnetlink_log", netns=netns)

    def _config(self, command: int, check: bool = True) -> None:
        self._send(_attr(NFULA_CFG_CMD, struct.pack("B", command)), check)

    def _send(self, attrs: bytes, check: bool = True) -> None:
        self._seq += 1
        self.sock.setblocking(True)
        try:
            self.sock.send(_nfnl(NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG, socket.AF_UNSPEC, 0, attrs, self._seq))
            for kind, body in _messages(self.sock.recv(65536)):
                if kind == kernel.NLMSG_ERROR:
                    code = struct.unpack_from("=i", body)[0]
                    if code and check:
                        raise OSError(-code, f"nfnetlink_log config in {self.netns}")
        finally:
            self.sock.setblocking(False)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the namespace went away with its cluster
            kernel.sysctl(self.SYSCTL, self.previous_logger or "NONE", netns=self.netns)
        super().close()

    def events(self) -> list[RuleEvent]:
        out = []
        for chunk in self.raw:
            for kind, body in _messages(chunk):
                if kind != (NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET):
                    continue
                a = _attrs(body, 4)
                prefix = a.get(NFULA_PREFIX, b"").rstrip(b"\0").decode(errors="replace").strip()
                if not prefix.startswith("TRACE:"):
                    continue
                # "TRACE: nat:KUBE-SVC-XYZ:rule:2": table, chain, rule/return/policy, number
                table, chain, kind_, number = prefix.split(":", 1)[1].strip().rsplit(":", 3)[-4:]
                hook = None
                if NFULA_PACKET_HDR in a:
                    hooknum = a[NFULA_PACKET_HDR][2]
                    hook = HOOKS[hooknum] if hooknum < len(HOOKS) else None
                out.append(RuleEvent(
                    source="iptables", table=table, chain=chain, kind=kind_,
                    rulenum=int(number) if number.isdigit() else None, hook=hook,
                    iif=struct.unpack("!I", a[NFULA_IFINDEX_INDEV])[0] if NFULA_IFINDEX_INDEV in a else 0,
                    oif=struct.unpack("!I", a[NFULA_IFINDEX_OUTDEV])[0] if NFULA_IFINDEX_OUTDEV in a else 0,
                    packet=a.get(NFULA_PAYLOAD, b"")))
        return out
