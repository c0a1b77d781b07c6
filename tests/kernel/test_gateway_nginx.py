"""The Gateway API's routing as the spec states it, against what real nginx does with the
ProxyConfig netsim.node.ingress.gateway makes: generated HTTPRoutes (hostnames exact, wildcard
and none; Exact and PathPrefix paths; header and method matches; routes of different ages)
are served by the agent's nginx runner in a real namespace with responders behind it, and every
curl answer must be the one ``spec_answer`` picks, a plain reading of the spec (hostname
precedence, then Exact, the longest path, a method, the most headers, the oldest route,
namespace/name, rule and match order; 500 for a rule without backends; 404 when nothing
matches); match.explain must say the same."""

from __future__ import annotations

import json
import random
import subprocess

import pytest

from netsim.controllers import gatewayapi as gw
from netsim.node.ingress import controller, gateway
from netsim.node.ingress.match import explain
from tests.kernel.proxypod import responder_namespace
from tests.unit.ingress_objects import endpoint_slice, service

pytestmark = pytest.mark.skipif(controller.nginx_binary() is None, reason="no nginx (scripts/install-deps.sh)")

N = 4  # services s0..s3, each one responder pod s<i>-0 on 127.0.0.1:900<i>
SEGMENTS = ["a", "b", "ab"]
HOSTS = ["x.example.com", "y.x.example.com", "other.org"]
HEADERS = [{}, {"X-V": "1"}, {"X-V": "2"}, {"X-V": "1", "X-W": "1"}]
GATEWAY = {"apiVersion": f"{gw.GROUP}/v1", "kind": "Gateway", "metadata": {"name": "g", "namespace": "default"},
           "spec": {"gatewayClassName": "netsim", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}


@pytest.fixture
def pod_ns():
    with responder_namespace("gwx", N) as ns:
        yield ns


def generated(rnd: random.Random) -> list[dict]:
    routes = []
    for k in range(rnd.randint(1, 4)):
        rules = []
        for _ in range(rnd.randint(1, 3)):
            matches = []
            for _ in range(rnd.randint(1, 2)):
                m: dict = {"path": {"type": rnd.choice(["Exact", "PathPrefix", "PathPrefix"]),
                                    "value": "/" + "/".join(rnd.choice(SEGMENTS) for _ in range(rnd.randint(0, 2)))}}
                if rnd.random() < 0.3:
                    m["headers"] = [{"name": "X-V", "value": rnd.choice("12")}]
                    if rnd.random() < 0.3:
                        m["headers"].append({"name": "X-W", "value": "1"})
                if rnd.random() < 0.15:
                    m["method"] = "POST"
                matches.append(m)
            rule: dict = {"matches": matches}
            if rnd.random() < 0.9:
                rule["backendRefs"] = [{"name": f"s{rnd.randrange(N)}", "port": 8080}]
            rules.append(rule)
        hostnames = rnd.choice([[], ["x.example.com"], ["*.example.com"], ["y.x.example.com", "other.org"]])
        routes.append({"apiVersion": f"{gw.GROUP}/v1", "kind": "HTTPRoute",
                       "metadata": {"name": f"r{k}", "namespace": "default",
                                    "creationTimestamp": f"2026-01-0{rnd.randint(1, 3)}T00:00:00Z"},
                       "spec": {"parentRefs": [{"name": "g"}], "hostnames": hostnames, "rules": rules}})
    return routes


def _host_rank(hostnames: list[str], host: str) -> tuple[int, int] | None:
    """The route's best hostname for the request: (characters of a matching exact name, of any
    matching name); None when none matches.  No hostnames: any host, the lowest rank."""
    if not hostnames:
        return (0, 0)
    ranks = [(len(h), len(h)) if h == host else (0, len(h)) for h in hostnames
             if h == host or (h.startswith("*.") and gw._wild_match(h, host))]
    return max(ranks, default=None)


def _path_ok(m: dict, path: str) -> bool:
    p = m["path"]
    if p["type"] == "Exact":
        return path == p["value"]
    base = p["value"].rstrip("/")
    return base == "" or path == base or path.startswith(base + "/")


def spec_answer(routes: list[dict], host: str, path: str, headers: dict, method: str) -> tuple[int, str | None]:
    best = None
    for r in routes:
        rank = _host_rank(r["spec"]["hostnames"], host)
        if rank is None:
            continue
        for ri, rule in enumerate(r["spec"]["rules"]):
            for mi, m in enumerate(rule["matches"]):
                hs = m.get("headers") or []
                if not _path_ok(m, path) or (m.get("method") and m["method"] != method) or \
                        any(headers.get(h["name"]) != h["value"] for h in hs):
                    continue
                key = (-rank[0], -rank[1], m["path"]["type"] != "Exact", -len(m["path"]["value"]),
                       not m.get("method"), -len(hs), r["metadata"]["creationTimestamp"], r["metadata"]["name"], ri, mi)
                if best is None or key < best[0]:
                    best = (key, rule)
    if best is None:
        return 404, None
    refs = best[1].get("backendRefs")
    return (200, refs[0]["name"]) if refs else (500, None)


def curl(ns: str, host: str, path: str, headers: dict, method: str) -> tuple[int, str | None]:
    args = ["ip", "netns", "exec", ns, "curl", "-s", "-m", "5", "-X", method, "-H", f"Host: {host}",
            "-w", "\n%{http_code}", *[a for k, v in headers.items() for a in ("-H", f"{k}: {v}")]]
    out = subprocess.run([*args, f"http://127.0.0.1{path}"], capture_output=True, text=True, timeout=30).stdout
    body, _, code = out.rpartition("\n")
    svc = json.loads(body)["pod"].rsplit("-", 1)[0] if code == "200" and body.startswith("{") else None
    return int(code), svc


def test_nginx_routes_as_the_spec_says(pod_ns, tmp_path):
    services = [service(f"s{i}", target=9000 + i) for i in range(N)]
    slices = [endpoint_slice(f"s{i}", ["127.0.0.1"], port=9000 + i) for i in range(N)]
    namespaces = [{"metadata": {"name": "default"}}]
    rnd = random.Random(22)
    n = controller.Nginx(pod_ns, tmp_path / "proxy", tmp_path / "access.log")
    mismatches, total = [], 0
    try:
        for case in range(16):
            routes = generated(rnd)
            cfg = gateway.proxy_config(GATEWAY, routes, [], services, slices, [], namespaces)
            assert n.apply(cfg), n.errors
            for _ in range(12):
                host = rnd.choice(HOSTS)
                path = "/" + "/".join(rnd.choice(SEGMENTS) for _ in range(rnd.randint(0, 3)))
                headers, method = rnd.choice(HEADERS), rnd.choice(["GET", "GET", "POST"])
                want = spec_answer(routes, host, path, headers, method)
                got = curl(pod_ns, host, path, headers, method)
                d = explain(cfg, host, path, headers, method=method)
                said = (d.status, d.backend.service if d.status == 200 and d.backend else None)
                total += 1
                if not want == got == said:
                    mismatches.append(f"case {case} {method} {host}{path} {headers}: spec {want}, nginx {got}, "
                                      f"explain {said} ({d.block})\n  {json.dumps(routes)}")
    finally:
        n.stop()
    print(f"the spec, nginx and explain agree on {total - len(mismatches)}/{total} requests")
    assert not mismatches, f"{len(mismatches)}/{total} disagree:\n" + "\n".join(mismatches[:5])
