"""kube-proxy's iptables mode, the kernel half: the :class:`Proxier` that holds the last
ruleset :mod:`proxy.iptables` rendered for one node namespace and syncs to a new one with ONE
``iptables-restore --noflush`` run in that namespace (after upstream's
``pkg/proxy/iptables/proxier.go`` syncProxyRules).

Partial syncs as upstream: the chains of service ports whose rules did not change are
neither declared (which would flush them) nor rewritten; the top-level chains always are
(unless ``skip_unchanged_top_level``); chains that went away are flushed and deleted.  A full
sync on the first call, when the canary is gone, after a failure, and every
``full_sync_every`` partial syncs.  The jumps from the built-in chains (upstream's
iptablesJumpChains, done there with an ``iptables -C``/``-I`` pair each) and the
``KUBE-PROXY-CANARY`` chains (upstream's iptables Monitor: mangle, nat, filter) go into the
same restore on a full sync, after one ``iptables-save`` says which jumps exist and which
stale service chains a previous run left.  Only kube-proxy's chains are named, so FLANNEL-*,
CNI-* and the rest of the tables stay as they are.

Where this differs from upstream, on purpose: a service port counts as changed when its
rendered chains differ (upstream: when its Service or EndpointSlices changed), and a partial
sync knows stale chains from its last ruleset instead of an iptables-save; the mangle canary
is checked on each sync with one ``iptables -S`` (upstream polls it every syncPeriod); a
partial restore that fails (someone deleted our chains) is followed at once by a full sync;
a full sync streams its input while rendering (nat first, each service port's chain lines
just before its rules: the same rules, and the rendering hidden behind the restore's own
parsing).

this kernel (6.18, iptables 1.8.9).  10k Services x 3 endpoints is 110k rules, upstream's
data point (110k rules: 203 s through iptables-nft, 1.6 s through iptables-legacy):

  ================================  ===============  ===================
  10k Services (110k rules)         legacy           nft
  ================================  ===============  ===================
  full sync (raw restore alone)     1.9 s (1.9 s)    > 120 s, stopped
  one endpoint change, upstream     0.77 s           1.16 s
  ... with skip_unchanged_top_level 0.59 s           0.16 s
  1k Services: full / one change    0.12 s / 60 ms   0.53 s / 96 ms
  ================================  ===============  ===================

nft's cost grows far faster than legacy's (the trend upstream saw): one nft transaction of
110k rules did not finish in 120 s (a lone run took 295 s), while the same rules added 11k
at a time take ~19 s.  Any change through iptables-legacy-restore reads and rewrites the
whole nat table (~0.6 s at 110k rules), so legacy cannot make a 150 ms endpoint change at
10k Services; nft can come close (0.16 s) only with the opt-in skip of unchanged top-level
chains, and then pays minutes for each full sync (start, flush, every ``full_sync_every``).
Legacy wins every figure in upstream's mode.  The first packet of a connection walks
KUBE-SERVICES linearly: the last of 10k Services costs ~65 us more than the first (legacy;
~160 us through nft's xt compat).  Legacy and nft rules can share a namespace (the kernel
runs both; flannel here uses the system ``iptables``, nft): NAT binds once per connection
and the masquerade mark is a packet mark, so flannel's ``-m mark --mark 0x4000/0x4000 -j
RETURN`` sees kube-proxy's mark either way.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from netsim import kernel
from netsim.kernel import netfilter
from proxy.iptables import (
    FILTER_TOP,
    JUMPS,
    KUBE_FIREWALL,
    KUBE_PROXY_CANARY,
    KUBELET_JUMPS,
    NAT_TOP,
    Renderer,
    Ruleset,
    ServiceRules,
    global_rules,
    is_service_chain,
)
from proxy.model import ServicePort
from proxy.proxier import BACKENDS, DEFAULT_BACKEND, TOOL_TIMEOUT, BaseProxier, BaseSyncResult, ProxyError, udp_changed


@dataclass
class SyncResult(BaseSyncResult):
    """What one :meth:`Proxier.sync` did.  Its reasons for a full sync: "start", "canary",
    "periodic", "forced", "after failure", "partial restore failed"."""

    services_written: int = 0  # service ports whose own chains were declared and rewritten
    chains_written: int = 0
    chains_deleted: int = 0
    jumps_added: int = 0
    top_chains_skipped: int = 0  # with skip_unchanged_top_level
    lines: int = 0  # restore input lines
    restore_bytes: int = 0
    canary_s: float = 0.0
    save_s: float = 0.0
    restore_s: float = 0.0
    partial_failure: str = ""


class Proxier(BaseProxier):
    """kube-proxy's iptables proxier for one node namespace (``netns``: its name under
    /run/netns).  ``sync(service_ports)`` makes the namespace's tables hold exactly the
    rendered ruleset; see the module docstring for full and partial syncs."""

    def __init__(self, netns: str, *, node: str, node_ips: Sequence[str], cluster_cidr: str,
                 backend: str = DEFAULT_BACKEND, masquerade_all: bool = False, localhost_nodeports: bool = True,
                 full_sync_every: int = 100, conntrack_cleanup: bool = True, conntrack_bin: str = "conntrack",
                 skip_unchanged_top_level: bool = False, timeout: float = TOOL_TIMEOUT,
                 netns_path: str | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"unknown iptables backend {backend!r}: one of {sorted(BACKENDS)}")
        super().__init__(netns, netns_path=netns_path, timeout=timeout, full_sync_every=full_sync_every,
                         conntrack_cleanup=conntrack_cleanup, conntrack_bin=conntrack_bin)
        self.backend = BACKENDS[backend]
        # Upstream rewrites every top-level chain on every sync; with this, a partial sync
        # leaves out those whose rules are what the last sync wrote (KUBE-SERVICES is 10k
        # rules at 10k Services, most of a one-endpoint change's restore).
        self.skip_unchanged_top_level = skip_unchanged_top_level
        if localhost_nodeports:
            # As upstream: NodePorts on 127.0.0.1 need route_localnet (KUBE-FIREWALL guards it).
            kernel.sysctl("net.ipv4.conf.all.route_localnet", 1, netns=self.path)
        try:
            liberal = kernel.sysctl("net.netfilter.nf_conntrack_tcp_be_liberal", netns=self.path) != "0"
        except OSError:  # no nf_conntrack in this kernel yet
            liberal = False
        self.renderer = Renderer(node=node, node_ips=node_ips, cluster_cidr=cluster_cidr,
                                 masquerade_all=masquerade_all, localhost_nodeports=localhost_nodeports,
                                 conntrack_tcp_liberal=liberal)
        self.last: Ruleset | None = None
        self.last_restore_text = ""

    # -- tools ---------------------------------------------------------------------------
    def iptables(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run([self.backend.iptables, "-w", "5", *args], check=check)

    def restore(self, text: str) -> None:
        self.run([self.backend.restore, "--noflush", "--counters", "-w", "5"], text.encode())

    def canary_present(self) -> bool:
        return self.iptables("-t", "mangle", "-S", KUBE_PROXY_CANARY, check=False).returncode == 0

    # -- syncing -------------------------------------------------------------------------
    def sync(self, service_ports: Iterable[ServicePort]) -> SyncResult:
        t0 = time.perf_counter()
        sps = list(service_ports)
        full, reason = self.need_full_sync, self._full_reason
        canary_s = 0.0
        if not full and self._partials >= self.full_sync_every:
            full, reason = True, "periodic"
        if not full:
            present = self.canary_present()
            canary_s = time.perf_counter() - t0
            if not present:
                full, reason = True, "canary"
        result = SyncResult(full=full, reason=reason if full else "partial", canary_s=canary_s)
        if full:
            ruleset = self._full_streaming(sps, result)
        else:
            t = time.perf_counter()
            ruleset = self.renderer.render(sps)
            result.render_s = time.perf_counter() - t
            try:
                self._partial(ruleset, result)
            except ProxyError as exc:
                # Someone changed the tables under us (deleted a chain we rely on): start over.
                result.partial_failure = str(exc)
                result.full, result.reason = True, "partial restore failed"
                self._full(ruleset, result)
        return self.finish_sync(ruleset, result, udp_changed(self.last, ruleset), t0)

    def _saved_state(self, result: SyncResult) -> netfilter.Saved:
        t = time.perf_counter()
        try:
            return self.saved(self.backend)
        except ProxyError:
            self.force_full_sync("after failure")
            raise
        finally:
            result.save_s += time.perf_counter() - t

    def _full(self, ruleset: Ruleset, result: SyncResult) -> None:
        """A full sync of an already rendered ruleset, in upstream's layout."""
        saved = self._saved_state(result)
        jumps = [j for j in ruleset.jumps if not j.present_in(saved)]
        active = ruleset.service_chains()
        stale = sorted(c for c in saved["nat"].chains if is_service_chain(c) and c not in active)
        text = ruleset.restore_text(full=True, stale_chains=stale, jumps=jumps, canary=True)
        result.services_written = len(ruleset.services)
        result.chains_written = len(active)
        result.chains_deleted = len(stale)
        result.jumps_added = len(jumps)
        self._apply(text, result)

    def _full_streaming(self, sps: list[ServicePort], result: SyncResult) -> Ruleset:
        """A full sync that renders while iptables-restore already reads: the restore input is
        written service by service as each is rendered, so Python's rendering overlaps the
        restore's parsing.  The same rules as :meth:`Ruleset.restore_text` (full), laid out
        for streaming: nat first, each service port's chain lines just before its rules (a
        jump's target must be declared before the jump), then filter and the mangle canary."""
        saved = self._saved_state(result)
        opts = self.renderer.options
        jumps = [j for j in JUMPS + (KUBELET_JUMPS if opts.localhost_nodeports else ()) if not j.present_in(saved)]
        with tempfile.TemporaryFile() as err:
            t = time.perf_counter()
            try:
                proc = netfilter.start([self.backend.restore, "--noflush", "--counters", "-w", "5"], netns=self.path,
                                       stderr=err)
            except netfilter.ToolError as exc:
                raise ProxyError(str(exc)) from exc
            timer = threading.Timer(self.timeout, proc.kill)
            timer.start()
            parts: list[str] = []
            pending: list[str] = []
            size = 0
            render_s = 0.0

            def write(lines: list[str]) -> None:
                nonlocal size
                chunk = "\n".join(lines) + "\n"
                pending.append(chunk)
                size += len(chunk)
                if size >= 1 << 16:
                    flush()

            def flush() -> None:
                nonlocal size
                if pending:
                    data = "".join(pending)
                    parts.append(data)
                    pending.clear()
                    size = 0
                    proc.stdin.write(data.encode())

            def on_service(rules: ServiceRules) -> None:
                lines = [f":{ch} - [0:0]" for ch in rules.chains]
                lines += [line for table, _, line in rules.top if table == "nat"]
                for own in rules.chains.values():
                    lines += own
                write(lines)

            try:
                try:
                    head = ["*nat", *(f":{c} - [0:0]" for c in NAT_TOP), f":{KUBE_PROXY_CANARY} - [0:0]"]
                    head += [f"-I {j.chain} {j.args()}" for j in jumps if j.table == "nat"]
                    nat_head = global_rules(opts)[2]
                    write(head + nat_head)
                    r0 = time.perf_counter()
                    ruleset = self.renderer.render(sps, on_service=on_service)
                    render_s = time.perf_counter() - r0
                    active = ruleset.service_chains()
                    stale = sorted(c for c in saved["nat"].chains if is_service_chain(c) and c not in active)
                    tail = [f":{c} - [0:0]" for c in stale] + [f"-X {c}" for c in stale] + ruleset.nat_tail + ["COMMIT"]
                    tail += ["*filter", *(f":{c} - [0:0]" for c in ruleset.top_chains("filter")),
                             f":{KUBE_PROXY_CANARY} - [0:0]"]
                    tail += [f"-I {j.chain} {j.args()}" for j in jumps if j.table == "filter"]
                    tail += ruleset.filter_head
                    for rules in ruleset.services.values():
                        tail += [line for table, _, line in rules.top if table == "filter"]
                    tail += ruleset.filter_tail + ["COMMIT", "*mangle", f":{KUBE_PROXY_CANARY} - [0:0]", "COMMIT"]
                    write(tail)
                    flush()
                    proc.stdin.close()
                except BrokenPipeError:
                    pass  # the restore died (error or timeout): its exit status says which
                returncode = proc.wait()
            finally:
                timer.cancel()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            elapsed = time.perf_counter() - t
            result.render_s += render_s
            result.restore_s += elapsed - render_s  # what the restore cost beyond rendering
            text = "".join(parts)
            result.lines, result.restore_bytes = text.count("\n"), len(text)
            if returncode != 0:
                err.seek(0)
                message = err.read().decode(errors="replace").strip()
                self.force_full_sync("after failure")
                if returncode < 0 and not message:
                    message = f"killed after {self.timeout}s"
                raise ProxyError(f"{self.backend.restore} in {self.path} failed ({returncode}): {message}")
            self.last_restore_text = text
            result.services_written = len(ruleset.services)
            result.chains_written = len(active)
            result.chains_deleted = len(stale)
            result.jumps_added = len(jumps)
            return ruleset

    def _partial(self, ruleset: Ruleset, result: SyncResult) -> None:
        last = self.last
        assert last is not None
        changed = [k for k, r in ruleset.services.items() if not r.same_chains(last.services.get(k))]
        # Chain names hash the service port's name: only a changed or removed one can leave chains behind.
        stale = []
        for key, old in last.services.items():
            new = ruleset.services.get(key)
            if new is not old:
                stale += [c for c in old.chains if new is None or c not in new.chains]
        skip: list[tuple[str, str]] = []
        if self.skip_unchanged_top_level:
            if list(ruleset.services) == list(last.services) and all(
                    r.top == last.services[k].top for k, r in ruleset.services.items() if r is not last.services[k]):
                skip = list(ruleset.top_rules_keys())  # same services in the same order, same top rules: all alike
            else:
                old = last.top_rules()
                skip = [k for k, rules in ruleset.top_rules().items() if old.get(k) == rules]
        text = ruleset.restore_text(changed_services=changed, stale_chains=stale, skip_top=skip)
        result.top_chains_skipped = len(skip)
        result.services_written = len(changed)
        result.chains_written = sum(len(ruleset.services[k].chains) for k in changed)
        result.chains_deleted = len(stale)
        self._apply(text, result)

    def _apply(self, text: str, result: SyncResult) -> None:
        t = time.perf_counter()
        result.lines = text.count("\n")
        result.restore_bytes = len(text)
        if not text.strip():  # a partial sync that found nothing to write
            self.last_restore_text = text
            return
        try:
            self.restore(text)
        except ProxyError:
            if result.full:
                self.force_full_sync("after failure")
            raise
        finally:
            result.restore_s += time.perf_counter() - t
        self.last_restore_text = text

    # -- teardown ------------------------------------------------------------------------
    def cleanup(self) -> None:
        """upstream's CleanupLeftovers: the jumps out of the built-in chains, then every
        kube-proxy chain in nat and filter, and the canaries; nothing else is touched.  Unlike
        upstream it takes KUBE-FIREWALL too: there is no kubelet here to share it with."""
        saved = self.saved(self.backend)
        out: list[str] = []
        for table in ("filter", "nat"):
            body = [f"-D {j.chain} {j.args()}" for j in JUMPS + KUBELET_JUMPS
                    if j.table == table and j.present_in(saved)]
            ours = sorted(c for c in saved[table].chains if c.startswith("KUBE-") and
                          (c in FILTER_TOP + NAT_TOP + (KUBE_FIREWALL, KUBE_PROXY_CANARY) or is_service_chain(c)))
            if body or ours:
                out += [f"*{table}", *[f":{c} - [0:0]" for c in ours], *body, *[f"-X {c}" for c in ours], "COMMIT"]
        if KUBE_PROXY_CANARY in saved["mangle"].chains:
            out += ["*mangle", f":{KUBE_PROXY_CANARY} - [0:0]", f"-X {KUBE_PROXY_CANARY}", "COMMIT"]
        if out:
            self.restore("\n".join(out) + "\n")
        self.last = None
        self.force_full_sync("start")


__all__ = ["Proxier", "SyncResult"]
