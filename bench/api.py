"""The API server's rates beside the store's: what HTTPS, routing and JSON cost over store calls.

    .venv/bin/python bench/api.py [--seconds 1.5] [--concurrency 4] [--watch-writes 300] [--etcd]

A real `netsim apiserver` process (as `up` starts it, here without a node namespace) for a
throwaway cluster: a temporary state directory with its PKI, a SQLite store, the namespaces a
cluster starts with; no nodes, agents or controllers, so the pods are stored through the API
(POST, the registry's admission and defaults) but never scheduled or wired.  The client is
aiohttp over HTTPS with the admin's client certificate, keep-alive, a fixed number of requests
in flight.  Beside each figure: the same operation on the store in this process (store.get,
store.list, store.watch), one call at a time.  Watch delivery is the time from a store write
(in this process) to its event reaching the watcher: a watch=1 HTTP stream, or store.watch
polling as the server's own store watch does.  --etcd: all of it again on an etcd started for the
run.  The server and everything of the run are removed at the end.  Root (the API server runs as root only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402

from netsim.api import registry  # noqa: E402
from netsim.api.store import open_store  # noqa: E402
from netsim.api.store.etcd_server import temporary_etcd  # noqa: E402
from netsim.model import k8s  # noqa: E402

NS = "default"
PODS = f"/api/v1/namespaces/{NS}/pods"


def pod(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"p{i}", "namespace": NS, "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}]}]}}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


class Api:
    """aiohttp session to the server: keep-alive, at most ``concurrency`` connections."""

    def __init__(self, base: str, ctx: ssl.SSLContext, concurrency: int):
        self.base = base
        self.concurrency = concurrency
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=concurrency),
                                             headers={"Accept": "application/json"})

    async def close(self) -> None:
        await self.session.close()

    async def request(self, method: str, path: str, body: dict | None = None) -> dict:
        async with self.session.request(method, self.base + path, json=body) as r:
            doc = json.loads(await r.read())
            if r.status >= 300:
                raise RuntimeError(f"{method} {path}: {r.status} {doc.get('message')}")
            return doc

    async def rate(self, path: str, seconds: float, server_pid: int) -> tuple[float, float]:
        """GETs of path per second, ``concurrency`` in flight, each answer read whole (not decoded:
        the client's JSON decoding would bound the figure, not the server's work); and the server's
        CPU time per request."""
        done = 0
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                async with self.session.get(self.base + path) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"GET {path}: {r.status}")
                done += 1

        cpu0, t0 = cpu_seconds(server_pid), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        return done / (time.perf_counter() - t0), (cpu_seconds(server_pid) - cpu0) / done

    async def create(self, first: int, last: int) -> float:
        """POST pods p<first>..p<last-1>; creations per second."""
        it = iter(range(first, last))

        async def worker() -> None:
            for i in it:
                await self.request("POST", PODS, pod(i))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        return (last - first) / (time.perf_counter() - t0)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def store_rate(fn, seconds: float) -> float:
    done = 0
    t0 = time.perf_counter()
    stop = t0 + seconds
    while time.perf_counter() < stop:
        fn()
        done += 1
    return done / (time.perf_counter() - t0)


def writer(store, writes: int, gap: float) -> None:
    """Overwrite p0 ``writes`` times, each stamped with when it was written; the gap varies so
    that the writes fall at every phase of the watchers' polling."""
    for i in range(writes):
        obj = pod(0)
        obj["metadata"]["annotations"] = {"bench/sent": repr(time.perf_counter())}
        store.put(k8s.key("Pod", NS, "p0"), obj)
        time.sleep(gap * (0.5 + (i * 7919 % 100) / 100))


def lag_of(obj: dict) -> float | None:
    sent = obj["metadata"].get("annotations", {}).get("bench/sent")
    return time.perf_counter() - float(sent) if sent else None


async def api_watch_lags(api: Api, store, writes: int, gap: float) -> list[float]:
    rv = str(store.revision())
    lags: list[float] = []
    async with api.session.get(f"{api.base}{PODS}?watch=1&resourceVersion={rv}&fieldSelector=metadata.name%3Dp0",
                               timeout=aiohttp.ClientTimeout(total=60)) as r:
        if r.status != 200:
            raise RuntimeError(f"watch: {r.status} {await r.text()}")
        thread = threading.Thread(target=writer, args=(store, writes, gap))
        thread.start()
        try:
            async for line in r.content:
                lag = lag_of(json.loads(line)["object"])
                if lag is not None:
                    lags.append(lag)
                if len(lags) == writes:
                    break
        finally:
            await asyncio.to_thread(thread.join)
    return lags


def store_watch_lags(url: str, store, writes: int, gap: float, poll: float) -> list[float]:
    lags: list[float] = []
    start = store.revision()
    reader = open_store(url, **({"poll_interval": poll} if url.startswith("sqlite:") else {}))
    thread = threading.Thread(target=writer, args=(store, writes, gap))
    thread.start()
    try:
        for ev in reader.watch(k8s.key("Pod", NS, "p0"), after=start, timeout=10):
            lag = lag_of(ev.object)
            if lag is not None:
                lags.append(lag)
            if len(lags) == writes:
                break
    finally:
        thread.join()
        reader.close()
    return lags


def row(label: str, api: tuple[float, float], direct: float) -> None:
    rate, cpu = api
    print(f"  {label:26} {rate:8.0f}/s {cpu * 1e6:9.0f} us {direct:9.0f}/s {direct / rate:8.1f}x")


async def run(args, backend: str, url: str) -> None:
    from netsim.apiserver import pki, process

    cluster = f"apibench{os.getpid() % 100000}"
    store = open_store(url)
    try:
        registry.bootstrap(store, registry.read_config(store))
        p = pki.ensure(pki.paths(cluster), pki.server_sans([], None))
        t0 = time.perf_counter()
        info = process.start(cluster, url, None, None)
        started = time.perf_counter() - t0
        try:
            ctx = ssl.create_default_context(cafile=str(p.ca_crt))
            ctx.load_cert_chain(str(p.admin_crt), str(p.admin_key))
            api = Api(f"https://127.0.0.1:{info['port']}", ctx, args.concurrency)
            try:
                await bench(api, info["pid"], store, backend, url, args, started)
            finally:
                await api.close()
        finally:
            process.stop(cluster)
    finally:
        store.close()


async def bench(api: Api, pid: int, store, backend: str, url: str, args, started: float) -> None:
    s = args.seconds
    print(f"API server: `netsim apiserver` process, {backend} store, started in {started * 1000:.0f} ms; "
          f"client: aiohttp over HTTPS (client certificate), keep-alive, {args.concurrency} requests in flight, "
          f"answers read whole, not decoded; server CPU: the server process's user+sys time per request")
    print("pods are stored through the API (POST: admission, defaults) in a cluster without nodes or "
          "controllers: never scheduled, no namespaces wired")
    print(f"store: the same {backend} store opened in the bench process, one call at a time (objects decoded); "
          f"machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    await api.request("GET", "/version")  # the connection and the server's first-request costs
    cpu0 = cpu_seconds(pid)
    await asyncio.sleep(2)
    print(f"server idle: {(cpu_seconds(pid) - cpu0) / 2 * 100:.1f}% of a CPU (its store watch waiting)")
    print(f"  {'':26} {'API':>10} {'server CPU':>12} {'store':>11} {'store/API':>9}")
    cpu0 = cpu_seconds(pid)
    created = await api.create(0, 100)
    create = (created, (cpu_seconds(pid) - cpu0) / 100)
    # Overwrites of p0, the only pod the store writes itself (the watch below writes it too).
    row("create pod (POST; put)", create, store_rate(lambda: store.put(k8s.key("Pod", NS, "p0"), pod(0)), s / 3))
    key, prefix = k8s.key("Pod", NS, "p1"), k8s.prefix("Pod", NS)
    for n in (100, 1000):
        if n == 1000:
            await api.create(100, 1000)
        row(f"GET one pod, {n} stored", await api.rate(f"{PODS}/p1", s, pid), store_rate(lambda: store.get(key), s))
        store_list = store_rate(lambda: store.list(prefix), s)
        row(f"LIST pods, {n} stored", await api.rate(PODS, s, pid), store_list)
    # A selector makes the server decode every object to match it (all 1000 match); limit=500 is
    # kubectl's first page.  Beside them, the same store.list.
    row("LIST, 1000, labelSelector", await api.rate(f"{PODS}?labelSelector=app%3Dbench", s, pid), store_list)
    row("LIST, 1000, limit=500", await api.rate(f"{PODS}?limit=500", s, pid), store_list)

    api_lags = [x * 1000 for x in await api_watch_lags(api, store, args.watch_writes, args.gap)]
    store_lags = [x * 1000 for x in store_watch_lags(url, store, args.watch_writes, args.gap, args.sqlite_poll)]
    how = (f"SQLite polled every {args.sqlite_poll * 1000:g} ms by both the server's store watch and the direct one"
           if backend == "sqlite" else "etcd's watch stream to both the server's store watch and the direct one")
    print(f"watch delivery, store write -> event at the watcher, {args.watch_writes} writes "
          f"~{args.gap * 1000:.0f} ms apart ({how}):")
    for label, lags in (("API (watch=1 HTTP stream)", api_lags), ("store.watch", store_lags)):
        if not lags:
            print(f"  {label:28} no event arrived")
            continue
        print(f"  {label:28} p50 {statistics.median(lags):6.2f} ms  p99 {pct(lags, 0.99):6.2f} ms  "
              f"({len(lags)}/{args.watch_writes})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="per rate figure")
    parser.add_argument("--concurrency", type=int, default=4, help="API requests in flight")
    parser.add_argument("--watch-writes", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.01, help="mean seconds between watched writes")
    parser.add_argument("--sqlite-poll", type=float, default=0.01,
                        help="the direct store.watch's poll interval (the server's store uses its default)")
    parser.add_argument("--etcd", action="store_true", help="an etcd store too (started for the run)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/api.py: run as root (the API server is root's)")
    with tempfile.TemporaryDirectory(prefix="netsim-api-bench-") as tmp:
        os.environ["NETSIM_STATE_DIR"] = f"{tmp}/state"
        try:
            asyncio.run(run(args, "sqlite", f"sqlite://{tmp}/store.db"))
            if args.etcd:
                with temporary_etcd() as endpoint:
                    print()
                    asyncio.run(run(args, "etcd", f"etcd://{endpoint.removeprefix('http://')}/bench"))
        finally:
            os.environ.pop("NETSIM_STATE_DIR")


if __name__ == "__main__":
    main()
