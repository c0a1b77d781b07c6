"""explain and the proxy cannot disagree: generated Ingresses (hosts, wildcards, Exact/Prefix/
ImplementationSpecific paths with and without trailing slashes, rewrite-target, use-regex, TLS
fallback, canaries by header/cookie/weight, defaultBackends) become a ProxyConfig, the agent's
nginx runner serves it with Debian's real nginx in a real namespace, responders stand behind it,
and every curl answer (status, the pod that answered, the path it received, the redirect) must be
what match.explain says.  Runs once the nginx runner (netsim.node.ingress.controller) is there."""

from __future__ import annotations

import json
import random
import subprocess

import pytest

controller = pytest.importorskip("netsim.node.ingress.controller", reason="needs the nginx runner")

from netsim.node.ingress import ingress  # noqa: E402
from netsim.node.ingress.match import explain  # noqa: E402
from tests.kernel.proxypod import responder_namespace  # noqa: E402
from tests.unit.ingress_objects import NGINX_CLASS, endpoint_slice, ing, path, rule, service  # noqa: E402

pytestmark = pytest.mark.skipif(controller.nginx_binary() is None, reason="no nginx (scripts/install-deps.sh)")

N = 6  # services s0..s5, each one responder pod s<i>-0 on 127.0.0.1:900<i>
SEGMENTS = ["a", "b", "aa", "A"]
HEADERS = [{}, {"X-C": "always"}, {"X-C": "never"}, {"X-C": "yes"}, {"X-C": "yas"}, {"Cookie": "ck=always"},
           {"Cookie": "ck=never", "X-C": "yes"}]


@pytest.fixture
def pod_ns():
    with responder_namespace("ngxe", N) as ns:
        yield ns


def curl(ns: str, host: str, target: str, headers: dict[str, str]) -> tuple[int, str | None, str | None, str]:
    args = ["ip", "netns", "exec", ns, "curl", "-s", "--path-as-is", "-m", "5", "-H", f"Host: {host}",
            "-w", "\n%{http_code} %header{location}"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run([*args, f"http://127.0.0.1{target}"], capture_output=True, text=True, timeout=30).stdout
    body, _, tail = out.rpartition("\n")
    code, _, redirect = tail.partition(" ")
    svc = path_seen = None
    if code == "200" and body.startswith("{"):
        answer = json.loads(body)
        svc, path_seen = answer["pod"].rsplit("-", 1)[0], answer.get("path")
    return int(code), svc, path_seen, redirect


def generated(rnd: random.Random) -> list[dict]:
    def rpath() -> str:
        return "/" + "/".join(rnd.choice(SEGMENTS) for _ in range(rnd.randint(0, 3)))

    ings = []
    for k in range(rnd.randint(1, 3)):
        anns: dict[str, str] = {}
        if rnd.random() < 0.2:
            anns["rewrite-target"] = "/$1"
        if rnd.random() < 0.15:
            anns["use-regex"] = "true"
        if rnd.random() < 0.1:
            anns["ssl-redirect"] = "false"
        paths = []
        for _ in range(rnd.randint(1, 3)):
            p = rpath()
            if rnd.random() < 0.3 and p != "/":
                p += "/"
            if anns.get("rewrite-target") and rnd.random() < 0.5:
                p = p.rstrip("/") + "(/|$)(.*)"
            kind = rnd.choice(["Exact", "Prefix", "ImplementationSpecific"])
            paths.append(path(p, f"s{rnd.randrange(N)}", kind=kind))
        tls = [{"hosts": ["h"], "secretName": "missing"}] if rnd.random() < 0.15 else None
        host = rnd.choice(["h", "h", "*.w.com", None])
        default = f"s{rnd.randrange(N)}" if rnd.random() < 0.2 else None
        ings.append(ing(f"i{k}", rule(host, *paths), ts=f"2026-01-0{k + 1}T00:00:00Z", annotations=anns or None,
                        default=default, tls=tls))
    if rnd.random() < 0.4:
        main = ings[0]["spec"]["rules"][0]
        first = main["http"]["paths"][0]
        ca = {"canary": "true", "canary-by-header": "X-C", "canary-weight": rnd.choice(["0", "100"])}
        r = rnd.random()
        if r < 0.3:
            ca["canary-by-header-value"] = "yes"
        elif r < 0.5:
            ca["canary-by-header-pattern"] = "^y.s$"
        if rnd.random() < 0.4:
            ca["canary-by-cookie"] = "ck"
        canary_path = {**first, "backend": {"service": {"name": "s5", "port": {"number": 8080}}}}
        ings.append(ing("canary", {**main, "http": {"paths": [canary_path]}}, ts="2026-02-01T00:00:00Z",
                        annotations=ca))
    return ings


# The conformance suite's trailing-slash host (Exact /foo/ must not answer /foo: "= /foo/" would
# 301); a TLS host with a missing secret (308, the trailing slash dropped as lua_ingress does);
# force-ssl-redirect without TLS; an Exact /foo beside a Prefix /foo/ (the Exact owns "= /foo").
FIXED = ([ing("fixed", rule("h", path("/aaa/bbb/", "s1"), path("/foo/", "s2", kind="Exact")),
              tls=[{"hosts": ["h"], "secretName": "missing"}], annotations={"ssl-redirect": "false"}),
          ing("tls", rule("t", path("/", "s3")), tls=[{"hosts": ["t"], "secretName": "missing"}]),
          ing("force", rule("f", path("/", "s4")), annotations={"force-ssl-redirect": "true"}),
          ing("owner", rule("e", path("/foo/", "s4"), path("/foo", "s5", kind="Exact")))],
         [("h", "/foo"), ("h", "/foo/"), ("h", "/aaa/bbb"), ("h", "/aaa/bbb/c"), ("t", "/"), ("t", "/x/"),
          ("t", "/x/?q=1"), ("f", "/a"), ("e", "/foo"), ("e", "/foo/x")])


def test_explain_agrees_with_nginx_on_generated_ingresses(pod_ns, tmp_path):
    services = [service(f"s{i}", target=9000 + i) for i in range(N)]
    slices = [endpoint_slice(f"s{i}", ["127.0.0.1"], port=9000 + i) for i in range(N)]
    rnd = random.Random(22)
    n = controller.Nginx(pod_ns, tmp_path / "proxy", tmp_path / "access.log")
    mismatches, total = [], 0
    try:
        for case in range(21):
            fixed = case == 0
            cfg = ingress.proxy_config("t", FIXED[0] if fixed else generated(rnd), [NGINX_CLASS], services, slices, [])
            assert n.apply(cfg), n.errors
            for i in range(len(FIXED[1]) if fixed else 12):
                if fixed:
                    (host, target), headers = FIXED[1][i], {}
                else:
                    host = rnd.choice(["h", "x.w.com", "a.b.w.com", "other"])
                    target = "/" + "/".join(rnd.choice(SEGMENTS) for _ in range(rnd.randint(0, 3)))
                    target += rnd.choice(["", "/", "x", "?q=1"])
                    headers = rnd.choice(HEADERS)
                d = explain(cfg, host, target, headers)
                want = (d.status, d.backend.service if d.status == 200 and d.backend else None,
                        d.upstream_path if d.status == 200 else None, d.redirect or "")
                got = curl(pod_ns, host, target, headers)
                total += 1
                if want != got:
                    mismatches.append(f"case {case} {host}{target} {headers}: explain {want} ({d.block}), nginx {got}")
    finally:
        n.stop()
    print(f"explain and nginx agree on {total - len(mismatches)}/{total} requests")
    assert not mismatches, f"{len(mismatches)}/{total} disagree:\n" + "\n".join(mismatches[:10])
