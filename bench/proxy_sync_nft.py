"""kube-proxy's nftables mode (proxy/nftables.py): sync cost and first-packet latency at scale.

    .venv/bin/python bench/proxy_sync_nft.py [--sizes 100,1000,10000] [--rounds 10] [--upstream-sizes 1000]

For each size, N synthetic Services x 3 endpoints (plus two real ones whose endpoint is a TCP
listener; the lab and Services of bench/proxy_sync.py) are synced by a Proxier into a
throwaway node namespace:

  full       the Proxier's first sync (render + text + one libnftables transaction)
  raw nft    the same transaction text, in memory, piped to ``nft -f -`` in a fresh namespace:
             the floor for that text through the nft tool
  partial    one endpoint of one Service removed, then put back (median of the rounds), through
             libnftables in-process ("lib") and through ``nft -f -`` ("exec")
  1st pkt    TCP connect() to the first and the last real Service (median / p90, us): the SYN's
             lookup is one verdict-map lookup, whatever the number of Services
  upstream   the same with upstream's layout (fast=False: per-endpoint chains, one anonymous
             numgen vmap per service) for the sizes in --upstream-sizes
             (--upstream-sizes 1000,10000: its 10k full sync alone takes 80 s)

Whole run with the defaults: about 15 s (with upstream 10k: 3 minutes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import proxy_sync as ps  # noqa: E402  (bench/proxy_sync.py: its lab and Services)

from netsim import kernel  # noqa: E402
from proxy import nftables as nf  # noqa: E402
from proxy.proxier import run_in  # noqa: E402


def run_one(n: int, rounds: int, probes: int, fast: bool) -> dict:
    row: dict = {"services": n, "layout": "fast" if fast else "upstream"}
    lab = ps.Lab(f"kpnb{os.getpid() % 100000}{'f' if fast else 'u'}{n}").build()
    try:
        sps = ps.synthetic(n)
        less = ps.with_one_endpoint_less(sps)
        nf.hash_and_truncate.cache_clear()
        p = nf.Proxier(lab.name("node"), node=ps.NODE, node_ips=[ps.BRIDGE_IP], cluster_cidr=ps.CLUSTER_CIDR, fast=fast)
        try:
            r = p.sync(sps)
            row.update(full=r.total_s, full_apply=r.apply_s, bytes=r.bytes, chains=r.chains_written)
            print(f"  {row['layout']} {n}: full sync: render {r.render_s * 1000:.0f} ms, "
                  f"text {r.text_s * 1000:.0f} ms, "
                  f"transaction {r.apply_s * 1000:.0f} ms, {r.bytes / 1e6:.1f} MB, {r.chains_written} chains",
                  file=sys.stderr)
            t = time.perf_counter()
            run_in(kernel.netns_path(lab.name("raw")), ["nft", "-f", "-"], p.last_text.encode())
            row["raw"] = time.perf_counter() - t
            for backend in ("lib", "exec"):
                if backend == "exec":
                    p.close()  # from here on: nft -f - per sync
                totals, applies = [], []
                for i in range(rounds * 2):
                    r = p.sync(less if i % 2 == 0 else sps)
                    assert not r.full and r.services_written == 1, r
                    totals.append(r.total_s)
                    applies.append(r.apply_s)
                row[f"partial_{backend}"], row[f"partial_{backend}_apply"] = ps.median(totals), ps.median(applies)
            for ip in (ps.FIRST_IP, ps.LAST_IP):
                lab.connect_us(ip)
            samples: dict[str, list[float]] = {"first": [], "last": []}
            for _ in range(probes):
                for ip, key in ((ps.FIRST_IP, "first"), (ps.LAST_IP, "last")):
                    samples[key].append(lab.connect_us(ip))
            for key, values in samples.items():
                row[f"pkt_{key}"], row[f"pkt_{key}_p90"] = ps.median(values), ps.pct(values, 0.9)
        finally:
            p.close()
    finally:
        lab.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--upstream-sizes", default="1000",
                        help="sizes to run with upstream's layout too ('' for none)")
    parser.add_argument("--rounds", type=int, default=10, help="partial syncs: remove/put back pairs")
    parser.add_argument("--probes", type=int, default=300, help="connections per first-packet figure")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it creates network namespaces")
    runs = [(int(s), True) for s in args.sizes.split(",") if s]
    runs += [(int(s), False) for s in args.upstream_sizes.split(",") if s]
    rows = []
    for n, fast in runs:
        rows.append(run_one(n, args.rounds, args.probes, fast))
    print()
    print(f"{'services':>8} {'layout':>8} {'chains':>7} {'MB':>5} {'full s':>7} {'(txn)':>7} {'raw nft -f':>10}  "
          f"{'partial ms lib (txn)':>20} {'exec (txn)':>14}  {'1st pkt us p50/p90: first':>26} {'last':>11}")
    for r in rows:
        print(f"{r['services']:>8} {r['layout']:>8} {r['chains']:>7} {r['bytes'] / 1e6:>5.1f} {r['full']:>7.2f} "
              f"{r['full_apply']:>7.2f} {r['raw']:>10.2f}  "
              f"{r['partial_lib'] * 1000:>12.1f} ({r['partial_lib_apply'] * 1000:>5.1f}) "
              f"{r['partial_exec'] * 1000:>6.1f} ({r['partial_exec_apply'] * 1000:>5.1f})  "
              f"{r['pkt_first']:>17.0f}/{r['pkt_first_p90']:<8.0f} {r['pkt_last']:>5.0f}/{r['pkt_last_p90']:<5.0f}")


if __name__ == "__main__":
    main()
