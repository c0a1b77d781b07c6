"""What kube-proxy's three modes (iptables, nftables, IPVS) share.

* :class:`Proxier` -- the protocol kube-proxy drives every mode's proxier through, as
  upstream's ``proxy.Provider``; :mod:`proxy.kubeproxy` states that each mode implements it.
* :class:`BaseProxier` -- the bookkeeping all three keep between syncs (when the next one
  must be full, the last ruleset applied) and upstream's stale UDP conntrack cleanup
  (``pkg/proxy/conntrack`` CleanStaleEntries), which every mode runs after a sync that
  changed a UDP service port.
* :func:`run_in` -- the tools, through :mod:`netsim.kernel.netfilter`, failing with
  :class:`ProxyError`, the one error kube-proxy's loop catches for every mode.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from netsim import kernel
from netsim.kernel import netfilter
from proxy.model import ServicePort

# A full iptables sync of 10k Services restores 110k rules: minutes through iptables-nft.
TOOL_TIMEOUT = 600.0


class ProxyError(RuntimeError):
    pass


@dataclass(frozen=True)
class Backend:
    """One iptables backend's tools (legacy and nft rules live side by side in the kernel)."""

    name: str
    iptables: str
    save: str
    restore: str


BACKENDS = {
    "legacy": Backend("legacy", "iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore"),
    "nft": Backend("nft", "iptables-nft", "iptables-nft-save", "iptables-nft-restore"),
}
DEFAULT_BACKEND = "legacy"


@dataclass
class BaseSyncResult:
    """What one sync did, and how long it took (seconds): the part every mode reports (kube-proxy
    logs it, :meth:`BaseProxier.finish_sync` fills it in); each mode adds its own steps."""

    full: bool
    reason: str  # why a full sync ("start", "forced", "after failure", ...), or "partial"
    services: int = 0  # service ports with rules
    conntrack_deleted: int = 0
    render_s: float = 0.0
    conntrack_s: float = 0.0
    total_s: float = 0.0


@runtime_checkable
class Proxier(Protocol):
    """A mode's proxier for one node namespace: ``sync`` makes the namespace hold exactly the
    rules of these Service ports (full or partial, as the proxier decides), ``cleanup`` takes
    every rule of its mode out (upstream's CleanupLeftovers), ``close`` lets go of what it holds."""

    def sync(self, service_ports: Iterable[ServicePort]) -> BaseSyncResult: ...

    def force_full_sync(self, reason: str = "forced") -> None: ...

    def clean_stale_conntrack(self, ruleset: Any = None) -> int: ...

    def cleanup(self) -> None: ...

    def close(self) -> None: ...


def run_in(netns_path: str, argv: Sequence[str], stdin: bytes = b"", timeout: float = TOOL_TIMEOUT,
           check: bool = True):
    """Run a tool in the namespace at ``netns_path`` (see :func:`netsim.kernel.netfilter.run`)."""
    try:
        return netfilter.run(argv, netns=netns_path, stdin=stdin, timeout=timeout, check=check)
    except netfilter.ToolError as exc:
        raise ProxyError(str(exc)) from exc


@dataclass(frozen=True)
class UDPTrack:
    """What stale-flow cleanup needs of a UDP service port: its IPs, NodePort and serving endpoint IPs."""

    ips: tuple[str, ...]
    port: int
    node_port: int
    serving: frozenset[str]


def udp_changed(previous, current) -> bool:
    """Whether any UDP service port's IPs or serving endpoints differ between two rulesets
    (any mode's: each maps service port names to rules with a ``udp`` :class:`UDPTrack`)."""
    old = {} if previous is None else {k: r.udp for k, r in previous.services.items() if r.udp is not None}
    new = {k: r.udp for k, r in current.services.items() if r.udp is not None}
    return old != new


class BaseProxier:
    """The state every mode's proxier keeps for one node namespace (``netns``: its name under
    /run/netns, or ``netns_path``), and what each does the same way."""

    def __init__(self, netns: str, *, netns_path: str | None, timeout: float, full_sync_every: int,
                 conntrack_cleanup: bool, conntrack_bin: str):
        self.netns = netns
        self.path = netns_path or kernel.netns_path(netns)
        self.timeout = timeout
        self.full_sync_every = full_sync_every
        self.conntrack_cleanup = conntrack_cleanup
        self.conntrack_bin = conntrack_bin
        self.last = None  # the ruleset the last sync applied
        self.need_full_sync = True
        self._full_reason = "start"
        self._partials = 0

    def run(self, argv: Sequence[str], stdin: bytes = b"", check: bool = True):
        return run_in(self.path, argv, stdin, self.timeout, check)

    def saved(self, backend: Backend) -> netfilter.Saved:
        """The namespace's tables as ``backend``'s iptables-save prints them."""
        return netfilter.parse_save(self.run([backend.save]).stdout.decode(errors="replace"))

    def force_full_sync(self, reason: str = "forced") -> None:
        self.need_full_sync, self._full_reason = True, reason

    def close(self) -> None:
        """Let go of what the proxier holds beyond its namespace's rules (nothing, but for libnftables')."""

    def finish_sync(self, ruleset, result, changed_udp: bool, t0: float):
        """The end of every sync: ``ruleset`` is now the last one applied, the next sync may be
        partial, stale UDP flows go when UDP service ports changed."""
        self.last = ruleset
        self.need_full_sync, self._full_reason = False, ""
        self._partials = 0 if result.full else self._partials + 1
        if self.conntrack_cleanup and changed_udp:
            t = time.perf_counter()
            result.conntrack_deleted = self.clean_stale_conntrack(ruleset)
            result.conntrack_s = time.perf_counter() - t
        result.services = len(ruleset.services)
        result.total_s = time.perf_counter() - t0
        return result

    def clean_stale_conntrack(self, ruleset=None) -> int:
        """upstream's CleanStaleEntries for UDP: every UDP flow to a service IP (cluster,
        external, load-balancer) or NodePort whose reply source is not a serving endpoint of
        that service is deleted, so its next datagram is load-balanced afresh.  One
        ``conntrack -L`` and one ``conntrack -D`` per stale (destination, reply source)."""
        ruleset = ruleset or self.last
        if ruleset is None:
            return 0
        by_ip: dict[tuple[str, int], frozenset[str]] = {}
        by_node_port: dict[int, frozenset[str]] = {}
        for rules in ruleset.services.values():
            u = rules.udp
            if u is None:
                continue
            for ip in u.ips:
                by_ip[(ip, u.port)] = u.serving
            if u.node_port:
                by_node_port[u.node_port] = u.serving
        if not by_ip and not by_node_port:
            return 0
        listing = self.run([self.conntrack_bin, "-L", "-p", "udp"], check=False)
        filters: set[tuple[str, ...]] = set()
        for line in listing.stdout.decode(errors="replace").splitlines():
            flow = parse_flow(line)
            if flow is None:
                continue
            orig_dst, orig_dport, reply_src = flow
            serving = by_ip.get((orig_dst, orig_dport))
            if serving is not None and reply_src not in serving:
                filters.add(("--orig-dst", orig_dst, "--orig-port-dst", str(orig_dport), "--reply-src", reply_src))
            serving = by_node_port.get(orig_dport)
            if serving is not None and reply_src not in serving:
                filters.add(("--orig-port-dst", str(orig_dport), "--reply-src", reply_src))
        deleted = 0
        for f in sorted(filters):
            proc = self.run([self.conntrack_bin, "-D", "-p", "udp", *f], check=False)
            out = (proc.stdout + proc.stderr).decode(errors="replace")
            if proc.returncode != 0 and "0 flow entries" not in out:
                raise ProxyError(f"conntrack -D {' '.join(f)} in {self.netns} failed: {out.strip()}")
            deleted += deleted_count(out)
        return deleted


def parse_flow(line: str) -> tuple[str, int, str] | None:
    """(original destination, original destination port, reply source) of a ``conntrack -L`` line."""
    srcs, dsts, dports = [], [], []
    for token in line.split():
        if token.startswith("src="):
            srcs.append(token[4:])
        elif token.startswith("dst="):
            dsts.append(token[4:])
        elif token.startswith("dport="):
            dports.append(token[6:])
    if len(srcs) < 2 or not dsts or not dports:
        return None
    with contextlib.suppress(ValueError):
        return dsts[0], int(dports[0]), srcs[1]
    return None


def deleted_count(out: str) -> int:
    """How many flows ``conntrack -D`` says it deleted."""
    for line in out.splitlines():
        if "flow entries have been deleted" in line:
            with contextlib.suppress(ValueError, IndexError):
                return int(line.split(":")[-1].split()[0])
    return 0
