"""Cluster DNS (netsim/node/dns.py): queries per second from one pod.

    .venv/bin/python bench/dns.py [--seconds 3] [--window 64]

Brings up scenarios/basic.yaml (2 CoreDNS pods behind kube-dns 10.96.0.10) and, from the
`client` pod's namespace, asks A queries for `web.default.svc.cluster.local` over UDP:

  serial     one query at a time (what a resolver does): queries/s and latency p50/p99
  window     --window queries in flight (a busy pod): queries/s

each through the kube-dns ClusterIP (kube-proxy DNATs every query to one of the DNS pods) and
straight to one DNS pod's IP.  The answers are checked (the ClusterIP of `web`).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dnslib import DNSRecord  # noqa: E402

from netsim import kernel  # noqa: E402
from netsim.model import names  # noqa: E402
from netsim.node import podnet  # noqa: E402

NAME = "web.default.svc.cluster.local"


def netsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netsim", *args], capture_output=True, text=True, check=True,
                          cwd=ROOT, timeout=300)


def serial(netns: str, server: str, want: str, seconds: float) -> tuple[float, list[float]]:
    lat = []
    with kernel.socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.connect((server, 53))
        end = time.perf_counter() + seconds
        qid = 0
        while time.perf_counter() < end:
            qid = (qid + 1) & 0xFFFF
            q = DNSRecord.question(NAME)
            q.header.id = qid
            t = time.perf_counter()
            s.send(q.pack())
            reply = DNSRecord.parse(s.recv(4096))
            lat.append(time.perf_counter() - t)
            assert reply.header.id == qid and str(reply.rr[0].rdata) == want, reply
    return len(lat) / seconds, lat


def windowed(netns: str, server: str, want: str, seconds: float, window: int) -> float:
    q = DNSRecord.question(NAME)
    packets = []
    for i in range(65536):
        q.header.id = i
        packets.append(q.pack())
    answered = 0
    with kernel.socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        s.connect((server, 53))
        in_flight, sent = 0, 0
        end = time.perf_counter() + seconds
        check_every = 997
        while time.perf_counter() < end:
            while in_flight < window:
                s.send(packets[sent & 0xFFFF])
                sent += 1
                in_flight += 1
            ready, _, _ = select.select([s], [], [], 0.5)
            if not ready:
                in_flight = 0  # a lost datagram: refill the window
                continue
            while True:
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    break
                answered += 1
                in_flight -= 1
                if answered % check_every == 0:
                    assert str(DNSRecord.parse(data).rr[0].rdata) == want
    return answered / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--window", type=int, default=64)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: it creates network namespaces")
    name = f"dnsb{os.getpid() % 100000}"
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["NETSIM_STATE_DIR"] = str(Path(tmp) / "state")
        try:
            netsim("up", str(ROOT / "scenarios" / "basic.yaml"), "--name", name)
            web = json.loads(netsim("get", "svc", "web", "-o", "json", "-c", name).stdout)["spec"]["clusterIP"]
            dns_pods = json.loads(netsim("get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns", "-o", "json",
                                         "-c", name).stdout)["items"]
            client = podnet.pod_netns(name, "default", "client")
            rows = []
            for label, server in (("kube-dns ClusterIP", "10.96.0.10"),
                                  ("one DNS pod", dns_pods[0]["status"]["podIP"])):
                serial(client, server, web, 0.3)  # warm up (conntrack, ARP)
                qps, lat = serial(client, server, web, args.seconds)
                lat.sort()
                wqps = windowed(client, server, web, args.seconds, args.window)
                rows.append((label, qps, statistics.median(lat) * 1e6, lat[int(0.99 * (len(lat) - 1))] * 1e6, wqps))
            print(f"\ncluster DNS, queries for {NAME} from pod default/client (UDP, {args.seconds:g} s each)")
            print(f"{'to':<20} {'serial q/s':>10} {'p50 us':>8} {'p99 us':>8} {f'window {args.window} q/s':>16}")
            for label, qps, p50, p99, wqps in rows:
                print(f"{label:<20} {qps:>10.0f} {p50:>8.0f} {p99:>8.0f} {wqps:>16.0f}")
        finally:
            subprocess.run([sys.executable, "-m", "netsim", "down", name], capture_output=True, timeout=120)
            assert not kernel.list_netns(names.cluster_prefix(name))


if __name__ == "__main__":
    main()
