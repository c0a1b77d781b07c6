"""HTTP through the ingress-nginx controller against straight to the pod, and how long an
Ingress change takes to answer, in one run.

    .venv/bin/python bench/ingress.py [--seconds 3] [--concurrency 4] [--changes 10]

`netsim up scenarios/ingress.yaml` (the notes' backend.aa.com / frontend.aa.com example, the
ingress-nginx add-on with Debian's nginx in the controller pod, its LoadBalancer address).
Load: --concurrency client processes, each standing in one namespace and sending GET requests
one after another for --seconds, a new connection per request (the responder closes each, as
`Connection: close`); a request counts when a 200 came back from the expected pod's echo.
Three paths, the same client code:
  - host/client -> the controller's LoadBalancer address -> nginx -> a backend pod (Host: backend.aa.com);
  - pod/default/client -> the controller's ClusterIP -> nginx -> a backend pod;
  - pod/default/client -> a backend pod's IP:8080, no proxy: the peer the others are compared with.
Prints requests/s, p50/p99 latency and the ratio to the direct path.  Every pod's responder
is one asyncio loop in its node's agent (Python), so the direct path measures that loop, and
the two proxied paths add nginx's two connections (client side, upstream) per request on the
same 2 cores.

Then the route change: --changes times, the Ingress gets one more path (/v2-N on
backend.aa.com, to the frontend Service) written to the store from this process, as `kubectl
apply` writes it, and the external client asks for /v2-N every 2 ms until a frontend pod
answers it (before that, Prefix / sends it to the backend).  Prints p50/max ms from the write
to the first answer by the new route.  The cluster is removed at the end.  Root.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netsim import kernel  # noqa: E402
from netsim.model import names  # noqa: E402
from netsim.observe import httpprobe  # noqa: E402

CONTROLLER = ("ingress-nginx", "ingress-nginx-controller")


def netsim(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netsim", *args], cwd=ROOT, capture_output=True, text=True,
                          check=check, timeout=300)


def _load(netns: str, ip: str, port: int, host: str, path: str, want: str, seconds: float, out) -> None:
    """One client process: requests one after another from ``netns`` until the time is up;
    sends back (latencies in ms of good answers, failures)."""
    import socket

    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: netsim-bench\r\nConnection: close\r\n\r\n"
               ).encode()
    lat, bad = [], 0
    with kernel.entered(kernel.netns_path(netns)):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                with socket.create_connection((ip, port), timeout=2) as s:
                    s.sendall(request)
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
            except OSError:
                bad += 1
                continue
            ms = (time.perf_counter() - t0) * 1000
            parsed = httpprobe.parse_response(data)
            if parsed and parsed[0] == 200 and json.loads(parsed[2]).get("pod", "").startswith(want):
                lat.append(ms)
            else:
                bad += 1
    out.send((lat, bad))


def load(netns: str, ip: str, port: int, host: str, path: str, want: str, seconds: float,
         concurrency: int) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, failures) of ``concurrency`` client processes."""
    ctx = multiprocessing.get_context("fork")
    pipes, procs = [], []
    for _ in range(concurrency):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_load, args=(netns, ip, port, host, path, want, seconds, send))
        p.start()
        pipes.append(recv)
        procs.append(p)
    lat, bad = [], 0
    for recv, p in zip(pipes, procs, strict=True):
        got, failed = recv.recv()
        lat += got
        bad += failed
        p.join(timeout=10)
    lat.sort()
    if not lat:
        return 0.0, float("nan"), float("nan"), bad
    return len(lat) / seconds, statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))], bad


def route_changes(cluster: str, netns: str, lb: str, rounds: int) -> list[float]:
    """ms from writing one more Ingress path to the first answer by its backend."""
    from netsim.api import registry
    from netsim.api.store import open_store
    from netsim.fabric import load_cluster
    from netsim.model import k8s

    store = open_store(load_cluster(cluster).store_url)
    out = []
    try:
        for i in range(rounds):
            ing = store.get(k8s.key("Ingress", "default", "aa-com"))
            ing.pop("status", None)
            rule = next(r for r in ing["spec"]["rules"] if r["host"] == "backend.aa.com")
            rule["http"]["paths"].append({"path": f"/v2-{i}", "pathType": "Prefix", "backend": {
                "service": {"name": "frontend", "port": {"number": 80}}}})
            t0 = time.monotonic()
            registry.apply(store, [ing])
            while True:
                r = httpprobe.request(netns, lb, 80, "backend.aa.com", f"/v2-{i}", timeout=1)
                if (r.get("responder") or "").startswith("frontend-"):
                    out.append((time.monotonic() - t0) * 1000)
                    break
                if time.monotonic() - t0 > 30:
                    raise SystemExit(f"the new path /v2-{i} never answered from the frontend: {r}")
                time.sleep(0.002)
    finally:
        store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--changes", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bench creates network namespaces")
    with tempfile.TemporaryDirectory(prefix="netsim-ingress-") as tmp:
        os.environ["NETSIM_STATE_DIR"] = str(Path(tmp) / "state")
        os.environ["KUBECONFIG"] = str(Path(tmp) / "kubeconfig")
        cluster = f"ib{os.getpid() % 10000}"
        try:
            netsim("up", str(ROOT / "scenarios" / "ingress.yaml"), "--name", cluster)
            pods = json.loads(netsim("get", "pods", "-A", "-o", "json", "-c", cluster).stdout)["items"]
            svc = json.loads(netsim("get", "svc", "-n", CONTROLLER[0], CONTROLLER[1], "-o", "json",
                                    "-c", cluster).stdout)
            lb = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
            backend = next(p for p in pods if p["metadata"]["name"].startswith("backend-"))
            client_host = names.netns_name(cluster, "client")
            from netsim.node import podnet

            client_pod = podnet.pod_netns(cluster, "default", "client")
            paths = [
                ("external: LB -> nginx -> pod", client_host, lb, 80, "backend-"),
                ("pod: ClusterIP -> nginx -> pod", client_pod, svc["spec"]["clusterIP"], 80, "backend-"),
                ("pod: straight to the pod", client_pod, backend["status"]["podIP"], 8080,
                 backend["metadata"]["name"]),
            ]
            results = {what: load(ns, ip, port, "backend.aa.com", "/bench?x=1", want, args.seconds,
                                  args.concurrency) for what, ns, ip, port, want in paths}
            changes = route_changes(cluster, client_host, lb, args.changes)
        finally:
            netsim("down", cluster, check=False)
    base = results["pod: straight to the pod"][0]
    print(f"HTTP GET, a new connection per request, {args.concurrency} clients x {args.seconds:g} s "
          f"(nginx {nginx_version()}, worker_processes 1)")
    print(f"{'path':<32} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'failed':>6} {'ratio':>6}")
    for what, (rps, p50, p99, bad) in results.items():
        print(f"{what:<32} {rps:8.0f} {p50:7.2f} {p99:7.2f} {bad:6d} {rps / base if base else 0:6.2f}")
    print(f"\nIngress path added -> the new route answers through the LB: p50 {statistics.median(changes):.0f} ms, "
          f"max {max(changes):.0f} ms ({len(changes)} changes)")


def nginx_version() -> str:
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
    return out.stderr.strip().rpartition("/")[2] or "?"


if __name__ == "__main__":
    main()
