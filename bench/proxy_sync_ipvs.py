"""kube-proxy's IPVS mode (proxy/ipvs.py): sync cost and first-packet latency at scale.

    .venv/bin/python bench/proxy_sync_ipvs.py [--sizes 100,1000,10000] [--rounds 5]

Needs a kernel with ip_vs.  Where this one has none, the bench runs itself in the qemu guest
of netsim.kernel.guest and prints what it printed there -- under software emulation (TCG) when
/dev/kvm does not work, so its times are the guest's, several times a real machine's, and
comparable only with each other (the floor below is measured in the same guest).

For each size, N synthetic Services x 3 endpoints plus two real ones (bench/proxy_sync.py's
lab and Services) are synced by a Proxier into a throwaway node namespace:

  full       the Proxier's first sync: render, ipset restore, iptables-restore, kube-ipvs0's
             addresses (one netlink batch), ipvsadm -Sn + ipvsadm -R of every virtual server
  raw        the same ipset and ipvsadm input, already rendered, restored into a fresh
             namespace: the floor for those two tools
  partial    one endpoint of one Service removed, then put back (median of the rounds): an
             ipvsadm -Sn to see the kernel's table, one -d or -a, no iptables rewrite
  1st pkt    TCP connect() to the first and the last real Service (median / p90, us): IPVS
             finds the virtual server in a hash table, whatever the number of Services
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
from netsim.kernel import guest  # noqa: E402
from proxy import ipvs  # noqa: E402
from proxy.proxier import run_in  # noqa: E402


def run_one(n: int, rounds: int, probes: int) -> dict:
    row: dict = {"services": n}
    lab = ps.Lab(f"kpvb{os.getpid() % 100000}{n}").build()
    try:
        sps = ps.synthetic(n)
        less = ps.with_one_endpoint_less(sps)
        p = ipvs.Proxier(lab.name("node"), node=ps.NODE, node_ips=[ps.BRIDGE_IP], cluster_cidr=ps.CLUSTER_CIDR)
        r = p.sync(sps)
        row.update(full=r.total_s, servers=r.servers)
        print(f"  {n}: full sync: render {r.render_s * 1000:.0f} ms, ipset {r.ipset_s * 1000:.0f} ms, "
              f"iptables {r.iptables_s * 1000:.0f} ms, ipvsadm {r.ipvs_s * 1000:.0f} ms "
              f"({r.ipvs_commands} commands), total {r.total_s * 1000:.0f} ms", file=sys.stderr)
        raw = kernel.netns_path(lab.name("raw"))
        ruleset = p.last
        sets_text = ipvs.ipset_text(None, ruleset.ipsets).encode()
        ipvs_text = ("\n".join(ipvs.diff_commands({}, ruleset.servers)) + "\n").encode()
        # IPVS takes only real servers it can route to (unicast): give the namespace an address
        # and a way out.
        run_in(raw, ["ip", "link", "add", "d0", "type", "dummy"])
        run_in(raw, ["ip", "addr", "add", "192.0.2.1/24", "dev", "d0"])
        run_in(raw, ["ip", "link", "set", "d0", "up"])
        run_in(raw, ["ip", "route", "add", "default", "dev", "d0"])
        t = time.perf_counter()
        run_in(raw, ["ipset", "restore"], sets_text)
        run_in(raw, ["ipvsadm", "-R"], ipvs_text)
        row["raw"] = time.perf_counter() - t
        totals, ipvs_s = [], []
        for i in range(rounds * 2):
            r = p.sync(less if i % 2 == 0 else sps)
            assert not r.full and r.ipvs_commands == 1 and not r.iptables_written, r
            totals.append(r.total_s)
            ipvs_s.append(r.ipvs_s)
        row["partial"], row["partial_ipvs"] = ps.median(totals), ps.median(ipvs_s)
        for ip in (ps.FIRST_IP, ps.LAST_IP):
            lab.connect_us(ip)
        samples: dict[str, list[float]] = {"first": [], "last": []}
        for _ in range(probes):
            for ip, key in ((ps.FIRST_IP, "first"), (ps.LAST_IP, "last")):
                samples[key].append(lab.connect_us(ip))
        for key, values in samples.items():
            row[f"pkt_{key}"], row[f"pkt_{key}_p90"] = ps.median(values), ps.pct(values, 0.9)
        p.cleanup()
    finally:
        lab.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--rounds", type=int, default=5, help="partial syncs: remove/put back pairs")
    parser.add_argument("--probes", type=int, default=200, help="connections per first-packet figure")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it creates network namespaces")
    why = ipvs.load_ipvs()
    if why:
        if os.environ.get("NETSIM_IN_GUEST"):
            sys.exit(f"no IPVS even in the guest: {why}")
        print(f"# {why}: running in a qemu guest (netsim.kernel.guest)", file=sys.stderr)
        rc, output = guest.run([sys.executable, *sys.argv], cwd=str(ROOT), timeout=3000,
                               echo=lambda s: print(f"# {s}", file=sys.stderr))
        sys.stdout.write(output)
        sys.exit(rc)
    if not os.path.exists("/proc/sys/net/bridge"):
        run_in("/proc/self/ns/net", ["modprobe", "br_netfilter"], check=False)
    rows = [run_one(int(s), args.rounds, args.probes) for s in args.sizes.split(",") if s]
    where = f"kernel {os.uname().release}" + (" in the qemu guest" if os.environ.get("NETSIM_IN_GUEST") else "")
    print(f"\nIPVS mode, {where}")
    print(f"{'services':>8} {'servers':>8} {'full s':>7} {'raw s':>6}  {'partial ms (ipvsadm)':>21}  "
          f"{'1st pkt us p50/p90: first':>26} {'last':>11}")
    for r in rows:
        print(f"{r['services']:>8} {r['servers']:>8} {r['full']:>7.2f} {r['raw']:>6.2f}  "
              f"{r['partial'] * 1000:>12.1f} ({r['partial_ipvs'] * 1000:>5.1f})  "
              f"{r['pkt_first']:>17.0f}/{r['pkt_first_p90']:<8.0f} {r['pkt_last']:>5.0f}/{r['pkt_last_p90']:<5.0f}")


if __name__ == "__main__":
    main()
