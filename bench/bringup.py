"""Time to bring up and tear down the fabric of 3, 10 and 50 nodes, beside the same kernel work
done by `ip -batch` in the same run (the floor: one `ip` process for the namespaces, one per
namespace for its links, addresses and routes).

    sudo .venv/bin/python bench/bringup.py [--sizes 3,10,50] [--repeat 3]

The floor leaves out what `ip` cannot batch: netsim also sets ip_forward in every node and
the underlay, checks what exists (so `up` converges), and writes its state file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netsim import kernel  # noqa: E402
from netsim.fabric import Cluster, teardown  # noqa: E402
from netsim.model import names


def build(n: int, name: str) -> Cluster:
    c = Cluster(name)
    c.add_node("control-plane", role="control-plane")
    for i in range(1, n):
        c.add_node(f"worker{i}")
    c.add_host("client")
    return c


def netsim_cycle(n: int, name: str) -> tuple[float, float]:
    c = build(n, name)
    t0 = time.perf_counter()
    c.up()
    t1 = time.perf_counter()
    assert c.ping("client", "control-plane") is not None, "netsim cluster does not pass packets"
    t2 = time.perf_counter()
    c.down()
    t3 = time.perf_counter()
    return t1 - t0, t3 - t2


def ip_batch(lines: list[str], netns: str | None = None) -> None:
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    subprocess.run(cmd, input="\n".join(lines) + "\n", text=True, check=True)


def ip_batch_cycle(n: int, name: str) -> tuple[float, float]:
    c = build(n, name)
    lan = c.underlay_netns
    members = list(c.members.values())
    plen = c.subnet.prefixlen
    t0 = time.perf_counter()
    ip_batch([f"netns add {lan}"] + [f"netns add {m.netns}" for m in members])
    lan_lines = [
        f"link add {names.UNDERLAY_BRIDGE} type bridge",
        f"addr add {c.gateway}/{plen} dev {names.UNDERLAY_BRIDGE}",
        f"link set {names.UNDERLAY_BRIDGE} up",
        "link set lo up",
    ]
    for m in members:
        lan_lines += [f"link add {m.uplink} type veth peer name eth0 netns {m.netns}",
                      f"link set {m.uplink} master {names.UNDERLAY_BRIDGE} up"]
    ip_batch(lan_lines, lan)
    for m in members:
        ip_batch(["link set lo up", f"addr add {m.ip}/{plen} dev eth0", "link set eth0 up",
                  f"route add default via {c.gateway}"], m.netns)
    t1 = time.perf_counter()
    from netsim.kernel.ping import ping

    assert ping(c.members["client"].netns, c.members["control-plane"].ip) is not None
    t2 = time.perf_counter()
    ip_batch([f"netns del {lan}"] + [f"netns del {m.netns}" for m in members])
    t3 = time.perf_counter()
    return t1 - t0, t3 - t2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,10,50")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/bringup.py creates namespaces: run it as root")
    os.environ.setdefault("NETSIM_STATE_DIR", tempfile.mkdtemp(prefix="netsim-bench-"))
    kernel.ensure_netns_dir()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for n in sizes:
        ours, floor = [], []
        for r in range(args.repeat):
            name = f"bench{n}r{r}"
            try:
                ours.append(netsim_cycle(n, name))
                floor.append(ip_batch_cycle(n, f"floor{n}r{r}"))
            finally:
                teardown(name)
                teardown(f"floor{n}r{r}")
        up_ms = statistics.median(u for u, _ in ours) * 1000
        down_ms = statistics.median(d for _, d in ours) * 1000
        fup_ms = statistics.median(u for u, _ in floor) * 1000
        fdown_ms = statistics.median(d for _, d in floor) * 1000
        rows.append((n, up_ms, down_ms, fup_ms, fdown_ms))
    print(f"fabric bring-up, median of {args.repeat} (members = nodes + 1 external host; ms)")
    print(f"{'nodes':>5} {'netsim up':>10} {'ip -batch up':>13} {'ratio':>6} "
          f"{'netsim down':>12} {'ip -batch down':>15} {'ratio':>6} {'up/node':>8}")
    for n, up, down, fup, fdown in rows:
        print(f"{n:>5} {up:>10.1f} {fup:>13.1f} {up / fup:>6.2f} {down:>12.1f} {fdown:>15.1f} "
              f"{down / fdown:>6.2f} {up / (n + 1):>8.2f}")


if __name__ == "__main__":
    main()
