"""NetworkPolicy (netsim/node/policy.py): cost of programming a node's table, and what it adds to a
new connection's latency.

    .venv/bin/python bench/policy.py [--sizes 0,100,1000] [--runs 5] [--probes 500] [--allow-at last]

Needs root (it makes network namespaces).  Uses the lab of bench/proxy_sync.py: a "node"
namespace with a bridge br0 (bridge-nf-call-iptables=1, so br_netfilter hands bridged IPv4
packets to the ``ip`` family's forward hook), a pod 10.244.0.11 with a TCP listener on 8080
and a client pod 10.244.0.20.  For each N, N synthetic NetworkPolicies in namespace "default"
all select the listener (app=web), each with one ingress rule: plain podSelector peers,
namespaceSelector + podSelector peers, ipBlocks with excepts (plus a pod peer), endPort ranges,
and every tenth also isolates egress.  About 400 remote pods (10.244.1-2.x, five namespaces)
give the peer sets realistic sizes.  Exactly one policy admits the client (role=client-0); by
default it is the last policy (--allow-at last), --allow-at first puts it first.  (netsim.node.policy
folds every policy's rules into a few set lookups per pod, so the position no longer matters;
when each rule was its own nft rule, "last" was the worst case: +104 us p50 at 1000.)

  render    policy.render(...) for the node's two local pods + Table.text (median of --runs)
  bytes     the table text
  apply     Enforcer.apply: the whole table replaced in one libnftables transaction, through a
            fresh Enforcer each run so that every run really applies (median)
  rules     rules in the per-pod chains; sets: named sets (peer sets, named-port sets)
  connect   TCP connect() from the client pod to 10.244.0.11:8080 across the bridge, median and
            p90 over --probes connections, with no table at all ("none") and with each N's
            table applied

Then, with the largest N: the client must connect (allow check), and with the same policies
rendered for a label-less client (no policy admits it) a connect must time out after 0.5 s
(deny check); the bench fails loudly otherwise.  Whole run with the defaults: about 5 s.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import proxy_sync as ps  # noqa: E402  (bench/proxy_sync.py: its lab)

from netsim import kernel  # noqa: E402
from netsim.node import policy  # noqa: E402

NS = "default"
NODE_IPS = ["192.168.56.2", ps.BRIDGE_IP]
TEAMS = 5
REMOTE_PODS = 400


def namespaces() -> dict[str, dict]:
    out = {NS: {"kubernetes.io/metadata.name": NS}, "kube-system": {"kubernetes.io/metadata.name": "kube-system"}}
    for t in range(TEAMS):
        out[f"team-{t}"] = {"kubernetes.io/metadata.name": f"team-{t}", "team": f"t{t}"}
    return out


def pods(client_labels: dict) -> tuple[list[policy.PodInfo], list[policy.PodInfo]]:
    """(every pod, the node's local pods)."""
    listener = policy.PodInfo(NS, "web", ps.POD_IP, {"app": "web"}, ps.NODE, (("http", "TCP", ps.PORT),))
    client = policy.PodInfo(NS, "client", ps.CLIENT_IP, dict(client_labels), ps.NODE)
    remote = []
    spaces = [NS] + [f"team-{t}" for t in range(TEAMS)]
    for k in range(REMOTE_PODS):
        ip = f"10.244.{1 + k // 200}.{1 + k % 200}"
        remote.append(policy.PodInfo(spaces[k % len(spaces)], f"r{k:04d}", ip, {"role": f"client-{k % 10}"},
                                     f"node-{2 + k % 3}"))
    for k in range(2):
        remote.append(policy.PodInfo("kube-system", f"coredns-{k}", f"10.244.3.{10 + k}", {"k8s-app": "kube-dns"},
                                     "node-2", (("dns", "UDP", 53),)))
    return [listener, client, *remote], [listener, client]


def synthetic(n: int, allow_at: str) -> list[dict]:
    """n policies selecting the listener; exactly one (the first or the last by name) admits
    role=client-0 on 8080/TCP, the others admit roles client-1..9 or address blocks the client
    is not in."""
    allow_index = 0 if allow_at == "first" else n - 1
    out = []
    for i in range(n):
        role = {"matchLabels": {"role": f"client-{1 + i % 9}"}}
        ports = [{"protocol": "TCP", "port": ps.PORT}]
        kind = i % 4
        if i == allow_index:
            peers = [{"podSelector": {"matchLabels": {"role": "client-0"}}}]
        elif kind == 0:
            peers = [{"podSelector": role}]
        elif kind == 1:
            ns_sel = ({"matchLabels": {"team": f"t{i % TEAMS}"}} if i % 8 == 1 else
                      {"matchExpressions": [{"key": "team", "operator": "In", "values": [f"t{i % TEAMS}", "t0"]}]})
            peers = [{"namespaceSelector": ns_sel, "podSelector": role}]
        elif kind == 2:
            if i % 8 == 2:
                block = {"cidr": f"10.244.{1 + i % 3}.0/24", "except": [f"10.244.{1 + i % 3}.{(i // 8) % 4 * 64}/26"]}
            else:
                block = {"cidr": "172.16.0.0/12", "except": [f"172.{16 + i % 16}.{i % 256}.0/24"]}
            peers = [{"ipBlock": block}, {"podSelector": role}]
        else:
            peers = [{"podSelector": role}]
            ports = [{"protocol": "TCP", "port": 8000, "endPort": 8100}]
        spec: dict = {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": peers, "ports": ports}]}
        if i % 10 == 9:
            spec["policyTypes"] = ["Ingress", "Egress"]
            dns = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
            spec["egress"] = [{"to": [dns], "ports": [{"protocol": "UDP", "port": "dns"}]}]
        out.append({"metadata": {"namespace": NS, "name": f"pol-{i:04d}"}, "spec": spec})
    return out


def connect_us(lab: ps.Lab, timeout: float = 2.0) -> float:
    """One TCP connect() from the client pod to the listener, in microseconds."""
    with kernel.socket_in(lab.name("client"), socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        t = time.perf_counter()
        s.connect((ps.POD_IP, ps.PORT))
        return (time.perf_counter() - t) * 1e6


def sample_connects(lab: ps.Lab, probes: int) -> tuple[float, float]:
    for _ in range(50):
        connect_us(lab)  # warm: ARP, route cache, the interpreter's and the CPU's caches
    values = [connect_us(lab) for _ in range(probes)]
    return ps.median(values), ps.pct(values, 0.9)


def program(node_path: str, pols: list[dict], client_labels: dict) -> tuple[float, float, int, str, policy.Table]:
    """render + text + apply through a fresh Enforcer: (render s, apply s, bytes, text, table)."""
    every, local = pods(client_labels)
    nss = namespaces()
    t = time.perf_counter()
    table = policy.render(pols, every, nss, local, NODE_IPS)
    text = table.text(NODE_IPS)
    render_s = time.perf_counter() - t
    enf = policy.Enforcer(node_path)
    try:
        t = time.perf_counter()
        applied = enf.apply(text)
        apply_s = time.perf_counter() - t
    finally:
        enf.close()
    assert applied
    return render_s, apply_s, len(text.encode()), text, table


def check_verdict(pols: list[dict], client_labels: dict, want: bool) -> None:
    """The semantics (policy.evaluate) agree with what the bench expects of the kernel."""
    every, _ = pods(client_labels)
    v = policy.evaluate(pols, every, namespaces(), ps.CLIENT_IP, ps.POD_IP, "TCP", ps.PORT, NODE_IPS)
    if v.allowed != want:
        raise SystemExit(f"policy.evaluate says allowed={v.allowed}, the bench expected {want}: {v.reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,100,1000")
    parser.add_argument("--runs", type=int, default=5, help="programs per render/apply figure")
    parser.add_argument("--probes", type=int, default=500, help="connections per latency figure")
    parser.add_argument("--allow-at", choices=("first", "last"), default="last",
                        help="where the policy admitting the client sits in the ingress chain")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bench makes network namespaces")
    sizes = [int(x) for x in args.sizes.split(",")]
    started = time.perf_counter()
    client = {"role": "client-0"}
    rows = []
    lab = ps.Lab(f"npb{os.getpid() % 100000}").build()
    enf = None
    try:
        node_path = kernel.netns_path(lab.name("node"))
        with kernel.entered(node_path), open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
            bnf = f.read().strip()  # /proc/sys/net resolves against the opening thread's namespace
        if bnf != "1":
            raise SystemExit(f"bridge-nf-call-iptables is {bnf} in the node namespace: bridged traffic would not "
                             "reach the forward hook")
        p50, p90 = sample_connects(lab, args.probes)  # before any Enforcer
        rows.append({"n": "none", "p50": p50, "p90": p90})
        print(f"  no table: connect p50 {p50:.0f} us", file=sys.stderr)
        enf = policy.Enforcer(node_path)
        for n in sizes:
            pols = synthetic(n, args.allow_at)
            renders, applies = [], []
            for _ in range(args.runs):
                render_s, apply_s, size, text, table = program(node_path, pols, client)
                renders.append(render_s)
                applies.append(apply_s)
            rules = sum(len(r) for r in table.chains.values())
            if n == max(sizes):
                check_verdict(pols, client, True)
                try:
                    connect_us(lab, timeout=0.5)
                except OSError as exc:
                    raise SystemExit(f"allow check FAILED: no connection with {n} policies: {exc!r}") from exc
                print(f"allow check: connected ({n} policies, client role=client-0)")
            p50, p90 = sample_connects(lab, args.probes)
            rows.append({"n": n, "render": ps.median(renders), "apply": ps.median(applies), "bytes": size,
                         "rules": rules, "sets": len(table.sets), "p50": p50, "p90": p90})
            print(f"  {n} policies: done ({time.perf_counter() - started:.0f} s in)", file=sys.stderr, flush=True)

        n = max(sizes)
        pols = synthetic(n, args.allow_at)
        check_verdict(pols, {}, not n)
        program(node_path, pols, {})  # the same policies, the client label-less: nothing admits it
        try:
            connect_us(lab, timeout=0.5)
        except TimeoutError:
            print(f"deny check: blocked ({n} policies, label-less client: connect timed out after 0.5 s)")
        except OSError as exc:
            raise SystemExit(f"deny check FAILED: expected the SYN to be dropped (a timeout), got {exc!r}") from exc
        else:
            if n:
                raise SystemExit(f"deny check FAILED: a client no policy admits connected with {n} policies")
            print("deny check: skipped (no policies)")
        enf.remove()
    finally:
        if enf is not None:
            enf.close()
        lab.close()

    print()
    print(f"{'policies':>8} {'render ms':>10} {'bytes':>8} {'apply ms':>9} {'rules':>6} {'sets':>5} "
          f"{'connect us p50/p90':>19}")
    for r in rows:
        if r["n"] == "none":
            print(f"{'none':>8} {'-':>10} {'-':>8} {'-':>9} {'-':>6} {'-':>5} {r['p50']:>10.0f}/{r['p90']:<8.0f}"
                  " (no table at all)")
            continue
        print(f"{r['n']:>8} {r['render'] * 1000:>10.1f} {r['bytes']:>8} {r['apply'] * 1000:>9.1f} {r['rules']:>6} "
              f"{r['sets']:>5} {r['p50']:>10.0f}/{r['p90']:.0f}")
    by = {r["n"]: r for r in rows}
    top = max(sizes)
    if top in by:
        d50 = by[top]["p50"] - by["none"]["p50"]
        d90 = by[top]["p90"] - by["none"]["p90"]
        print(f"\nconnect latency with {top} policies vs 0 (no table): {d50:+.0f} us (p50), {d90:+.0f} us (p90); "
              f"the admitting policy is the {args.allow_at} one")
    print(f"bench took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
