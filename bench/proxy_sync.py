"""kube-proxy's iptables mode (proxy/iptables.py, proxy/iptables_sync.py): sync cost and
first-packet latency at scale, through iptables-legacy and iptables-nft.

    .venv/bin/python bench/proxy_sync.py [--sizes 100,1000,10000] [--backends legacy,nft]

For each backend and size, N synthetic Services x 3 endpoints (ServicePort objects, no
cluster) plus two real ones are synced by a Proxier into a throwaway "node" namespace that
has a bridge, a client pod and a pod running a TCP listener (the real Services' endpoint):

  full       the Proxier's first sync: one iptables-save, then one iptables-restore fed while
             the Services are rendered (render time is hidden behind the restore's parsing)
  raw        the same restore text, already in memory, fed to iptables-restore in a fresh
             namespace: the floor
  partial    one endpoint of one Service removed, then put back (median of the rounds), as
             upstream does it (every top-level chain rewritten) and with the opt-in
             skip_unchanged_top_level (KUBE-SERVICES left alone when it did not change)
  1st pkt    TCP connect() to a ClusterIP whose endpoint is the listener: the SYN walks the
             nat KUBE-SERVICES list; for the Service first in it and the one last in it

A full sync that would take longer than --full-limit seconds (iptables-nft at 10k Services:
upstream measured 203 s for 110k rules on this kernel) is stopped and reported as skipped;
the namespace is then filled in 1k-Service steps (one partial sync each) so that the partial
and first-packet figures can still be taken.  Whole run: about 3-4 minutes.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netsim import kernel  # noqa: E402
from netsim.model import names  # noqa: E402
from proxy import iptables as ipt  # noqa: E402
from proxy import iptables_sync, proxier  # noqa: E402
from proxy.model import Endpoint, ServicePort  # noqa: E402

NODE = "node"
CLUSTER_CIDR = "10.244.0.0/16"
BRIDGE_IP, POD_IP, CLIENT_IP = "10.244.0.1", "10.244.0.11", "10.244.0.20"
PORT = 8080
FIRST_IP, LAST_IP = "10.96.0.2", "10.96.0.3"


def synthetic(n: int) -> list[ServicePort]:
    """n Services x 3 endpoints (addresses that exist nowhere), plus the two real ones."""
    base_svc, base_ep = int(ipaddress.ip_address("10.96.0.16")), int(ipaddress.ip_address("10.200.0.2"))
    out = []
    for i in range(n):
        eps = tuple(Endpoint(str(ipaddress.ip_address(base_ep + 3 * i + j)), PORT, node=NODE) for j in range(3))
        out.append(ServicePort(f"ns{i % 50:02d}", f"svc{i:05d}", "http", "TCP", str(ipaddress.ip_address(base_svc + i)),
                               80, endpoints=eps))
    real = (Endpoint(POD_IP, PORT, node=NODE),)
    out.append(ServicePort("aaa", "first", "", "TCP", FIRST_IP, 80, endpoints=real))  # first in KUBE-SERVICES
    out.append(ServicePort("zzz", "last", "", "TCP", LAST_IP, 80, endpoints=real))  # last
    return sorted(out, key=lambda sp: (sp.key, sp.protocol))


def with_one_endpoint_less(sps: list[ServicePort]) -> list[ServicePort]:
    out = list(sps)
    mid = len(out) // 2
    out[mid] = replace(out[mid], endpoints=out[mid].endpoints[:-1])
    return out


@dataclass
class Lab:
    """A node namespace with a bridge, a pod with a listener and a client pod; and an empty
    namespace for the raw restore."""

    prefix: str
    made: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    socks: list[socket.socket] = field(default_factory=list)

    def name(self, member: str) -> str:
        return names.netns_name(self.prefix, member)

    def build(self) -> Lab:
        opened = {}
        for member in ("node", "pod", "client", "raw"):
            opened[member] = kernel.Namespace.create(self.name(member))
            self.made.append(self.name(member))
        node = opened["node"]
        with node.batch() as b:
            b.set_link("lo", index=1, up=True)
            b.add_bridge("br0", 1500)
        br = node.index("br0")
        with node.batch() as b:
            b.add_address(br, f"{BRIDGE_IP}/24")
            b.set_link("br0", index=br, up=True)
        for host_if, member, ip in (("vp", "pod", POD_IP), ("vc", "client", CLIENT_IP)):
            peer = opened[member]
            with node.batch() as b:
                b.add_veth(host_if, "eth0", peer, 1500)
            with node.batch() as b:
                b.set_link(host_if, master=br, up=True)
            eth0 = peer.index("eth0")
            with peer.batch() as b:
                b.set_link("lo", index=1, up=True)
                b.set_link("eth0", index=eth0, up=True)
                b.add_address(eth0, f"{ip}/24")
                b.replace_route("default", gateway=BRIDGE_IP)
        node.sysctl("net.ipv4.ip_forward", 1)
        node.sysctl("net.bridge.bridge-nf-call-iptables", 1)
        for ns in opened.values():
            ns.close()
        srv = kernel.socket_in(self.name("pod"), socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", PORT))
        srv.listen(512)
        srv.settimeout(0.2)
        self.socks.append(srv)

        def accept_loop():
            while not self.stop.is_set():
                try:
                    conn, _ = srv.accept()
                except (TimeoutError, OSError):
                    continue
                conn.close()
        t = threading.Thread(target=accept_loop, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=2)
        for s in self.socks:
            s.close()
        kernel.remove_netns(self.made)

    def connect_us(self, ip: str) -> float:
        with kernel.socket_in(self.name("client"), socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            t = time.perf_counter()
            s.connect((ip, 80))
            return (time.perf_counter() - t) * 1e6


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def run_one(backend: str, n: int, rounds: int, full_limit: float, probes: int) -> dict:
    row: dict = {"backend": backend, "services": n}
    lab = Lab(f"kpb{os.getpid() % 100000}{backend[0]}{n}").build()
    try:
        sps = synthetic(n)
        less = with_one_endpoint_less(sps)
        t = time.perf_counter()
        cold = ipt.render(sps, node=NODE, node_ips=[BRIDGE_IP], cluster_cidr=CLUSTER_CIDR)
        row["render"] = time.perf_counter() - t
        row["rules"] = cold.rule_count()
        ipt.port_proto_hash.cache_clear()  # the Proxier's first render starts cold too
        p = iptables_sync.Proxier(lab.name("node"), node=NODE, node_ips=[BRIDGE_IP], cluster_cidr=CLUSTER_CIDR,
                        backend=backend, timeout=full_limit)
        try:
            r = p.sync(sps)
            row["full"], row["full_restore"], row["bytes"] = r.total_s, r.restore_s, r.restore_bytes
            print(f"  {backend} {n}: full sync: iptables-save {r.save_s * 1000:.0f} ms, render while streaming the "
                  f"input {r.render_s * 1000:.0f} ms, restore after the last line {r.restore_s * 1000:.0f} ms",
                  file=sys.stderr)
        except proxier.ProxyError as exc:
            row["full_skipped"] = f"stopped after {full_limit:.0f} s ({exc})"
            p.timeout = proxier.TOOL_TIMEOUT
            t = time.perf_counter()
            step = 1000
            for k in range(step, len(sps) + step, step):
                p.sync(sps[:k])
            row["chunked"] = time.perf_counter() - t
        if "full" in row:
            t = time.perf_counter()
            proxier.run_in(kernel.netns_path(lab.name("raw")),
                           [p.backend.restore, "--noflush", "--counters", "-w", "5"],
                           p.last_restore_text.encode(), timeout=full_limit)
            row["raw"] = time.perf_counter() - t
        for mode, skip in (("partial", False), ("partial_skip", True)):
            p.skip_unchanged_top_level = skip
            totals, restores = [], []
            for i in range(rounds * 2):
                r = p.sync(less if i % 2 == 0 else sps)
                assert not r.full and r.services_written == 1, r
                totals.append(r.total_s)
                restores.append(r.restore_s)
            row[mode], row[mode + "_restore"] = median(totals), median(restores)
        for ip in (FIRST_IP, LAST_IP):
            lab.connect_us(ip)  # warm: ARP, route cache
        samples: dict[str, list[float]] = {"first": [], "last": []}
        for _ in range(probes):
            for ip, key in ((FIRST_IP, "first"), (LAST_IP, "last")):
                samples[key].append(lab.connect_us(ip))
        for key, values in samples.items():
            row[f"pkt_{key}"], row[f"pkt_{key}_p90"] = median(values), pct(values, 0.9)
    finally:
        lab.close()
    return row


def fmt_s(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--backends", default="legacy,nft")
    parser.add_argument("--rounds", type=int, default=3, help="change/revert pairs per partial-sync figure")
    parser.add_argument("--probes", type=int, default=300, help="connections per first-packet figure")
    parser.add_argument("--full-limit", type=float, default=120.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bench makes network namespaces")
    rows = []
    started = time.perf_counter()
    for backend in args.backends.split(","):
        for n in (int(x) for x in args.sizes.split(",")):
            row = run_one(backend, n, args.rounds, args.full_limit, args.probes)
            rows.append(row)
            print(f"  {backend:6} {n:>6}: done ({time.perf_counter() - started:.0f} s in)", file=sys.stderr, flush=True)

    print()
    print(f"{'backend':7} {'svcs':>6} {'rules':>7} {'render':>7} {'full':>8} {'raw':>8} {'ratio':>5}  "
          f"{'partial (restore)':>19}  {'skip-top (restore)':>19}  {'1st pkt p50/p90 us: first':>26} {'last':>11}")
    for r in rows:
        ratio = f"{r['full'] / r['raw']:.2f}" if "full" in r and "raw" in r else "-"
        print(f"{r['backend']:7} {r['services']:>6} {r['rules']:>7} {fmt_s(r['render']):>7} "
              f"{fmt_s(r.get('full')) if 'full' in r else 'skipped':>8} {fmt_s(r.get('raw')):>8} {ratio:>5}  "
              f"{fmt_s(r['partial']):>8} ({fmt_s(r['partial_restore']):>7})  "
              f"{fmt_s(r['partial_skip']):>8} ({fmt_s(r['partial_skip_restore']):>7})  "
              f"{r['pkt_first']:>17.0f}/{r['pkt_first_p90']:<8.0f} {r['pkt_last']:>5.0f}/{r['pkt_last_p90']:<5.0f}")
    for r in rows:
        if "full_skipped" in r:
            print(f"\n{r['backend']} {r['services']}: full sync skipped: {r['full_skipped']}; the raw restore of "
                  f"the same text is skipped with it (it is the bulk of a full sync).  Filled in 1k-Service "
                  f"partial syncs instead: {r['chunked']:.1f} s.")
    by = {(r["backend"], r["services"]): r for r in rows}
    print("\nupstream, this kernel: 110k rules restored in 203 s through iptables-nft, 1.6 s through iptables-legacy")
    for n in sorted({r["services"] for r in rows}):
        leg, nft = by.get(("legacy", n)), by.get(("nft", n))
        if leg and nft and "full" in leg:
            nft_full = fmt_s(nft["full"]) if "full" in nft else f"> {args.full_limit:.0f} s"
            print(f"{n:>6} Services ({leg['rules']} rules): full sync legacy {fmt_s(leg['full'])}, nft {nft_full}; "
                  f"one endpoint change legacy {fmt_s(leg['partial'])}, nft {fmt_s(nft['partial'])} "
                  f"(skip-top: {fmt_s(leg['partial_skip'])} / {fmt_s(nft['partial_skip'])})")
    for r in rows:
        if r["services"] >= 10000 and "full" in r and "raw" in r:
            print(f"target full <= 1.3x raw ({r['backend']}, {r['services']}): {r['full'] / r['raw']:.2f}x")
    for r in rows:
        if r["services"] >= 10000:
            print(f"target one endpoint change <= 150 ms ({r['backend']}, {r['services']}): upstream-style "
                  f"{fmt_s(r['partial'])}, skip-top {fmt_s(r['partial_skip'])}")
    print(f"\nbench took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
