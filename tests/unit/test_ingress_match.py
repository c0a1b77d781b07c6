"""match.explain on hand-built ProxyConfigs: nginx's server choice (exact, wildcard of one or of
many labels, default server, listen ports), its location search (exact, longest prefix, regexes in
order, ^~, the 301 of a prefix ending in /), URI normalisation, rewrites, redirects, fixed
statuses, canaries by header/cookie/weight, affinity, weighted backends and header/method
variants (the Gateway API's), and the JSON form explain prints."""

from __future__ import annotations

import json

import pytest

from netsim.node.ingress.match import blocks, explain, normalize, rewrite
from netsim.node.ingress.routes import (
    TLS,
    Backend,
    Canary,
    Endpoint,
    HeaderMatch,
    Location,
    ProxyConfig,
    Redirect,
    Server,
)


def be(name: str, *ips: str, weight: int = 1) -> Backend:
    return Backend(upstream=f"default-{name}-80", namespace="default", service=name, port="80",
                   endpoints=tuple(Endpoint(ip, 8080) for ip in ips), weight=weight)


def loc(path: str, match: str = "Prefix", backend: Backend | None = None, **kw) -> Location:
    return Location(path=path, match=match, backends=(backend,) if backend else (), source=f"{match} {path}", **kw)


def cfg(*servers: Server, **kw) -> ProxyConfig:
    return ProxyConfig(name="t", servers=servers, **kw)


A, B, C = be("a", "10.0.0.1"), be("b", "10.0.0.2"), be("c", "10.0.0.3")


def svc(d) -> str | None:
    return d.backend.service if d.backend else None


def test_exact_beats_longest_prefix_beats_shorter():
    c = cfg(Server("h", (loc("/", backend=A), loc("/x", backend=B), loc("/x/y", "Exact", C))))
    assert svc(explain(c, "h", "/x/y")) == "c"
    assert svc(explain(c, "h", "/x/y/z")) == "b"
    assert svc(explain(c, "h", "/xy")) == "a"
    d = explain(c, "h", "/x/y/z")
    assert d.block == "location /x/" and "longest" in d.location_why
    assert [(c.block, c.matched) for c in d.candidates] == [
        ("location = /x/y", False), ("location /x/", True), ("location = /x", False), ("location /", True)]


def test_regexes_in_order_after_the_prefix_unless_caret_tilde():
    c = cfg(Server("h", (loc("/api", backend=A), loc("/api/v[0-9]", "Regex", B), loc("/api/.*", "Regex", C))))
    d = explain(c, "h", "/API/v2")
    assert svc(d) == "b" and "first matching regex" in d.location_why
    assert svc(explain(c, "h", "/api/x")) == "c"
    assert svc(explain(c, "h", "/api")) == "a"  # the exact "= /api" block
    c = cfg(Server("h", (loc("/static/", "Nginx", A), loc("/static/.*png", "Regex", B))))
    assert svc(explain(c, "h", "/static/a.png")) == "b"


def test_nginx_prefix_ending_in_slash_redirects_the_bare_path():
    c = cfg(Server("h", (loc("/", backend=A), loc("/docs/", "Nginx", B))))
    d = explain(c, "h", "/docs?x=1")
    assert (d.status, d.redirect) == (301, "http://h/docs/?x=1")
    assert svc(explain(c, "h", "/docs/a")) == "b"
    assert svc(explain(c, "h", "/docsx")) == "a"


def test_exact_ending_in_slash_is_a_case_sensitive_whole_path_regex():
    c = cfg(Server("h", (loc("/", status=404), loc("/a.b/", "Exact", A), loc("/x", backend=B))))
    assert [b.text for b in blocks(c.servers[0])][0] == 'location ~ "^/a\\.b/$"'
    assert svc(explain(c, "h", "/a.b/")) == "a"
    for miss in ("/a.b", "/A.B/", "/axb/", "/a.b/c"):
        assert explain(c, "h", miss).status == 404, miss


def test_blocks_render_contract():
    s = Server("h", (loc("/a/b/", backend=A), loc("/a/b", "Exact", B), loc("/r(.*)", "Regex", C),
                     loc("/n", "Nginx", A), loc("/", backend=A)))
    # Longest Location path first (stable), as nginx.py sorts.
    assert [b.text for b in blocks(s)] == ['location ~* "^/r(.*)"', "location /a/b/", "location = /a/b",
                                           "location /n", "location /"]
    assert blocks(s)[2].locations[0].backends == (B,)  # the Exact owns "= /a/b", not the Prefix clone


@pytest.mark.parametrize("host,server", [
    ("www.foo.com", "www.foo.com"), ("WWW.Foo.com.", "www.foo.com"), ("x.foo.com:8080", "*.foo.com"),
    ("a.foo.com", "*.foo.com"), ("a.b.foo.com", "_"), ("a.b.bar.com", "*.bar.com"), ("", "_"),
])
def test_server_choice(host, server):
    c = cfg(Server("www.foo.com", (loc("/", backend=A),)), Server("*.foo.com", (loc("/", backend=B),)),
            Server("*.bar.com", (loc("/", backend=C),), wildcard="many"), Server("_", (loc("/", status=404),)))
    assert explain(c, host, "/").server == server
    d = explain(c, "www.foo.com", "/", port=8080)
    assert d.server is None and "no server listens on port 8080" in d.server_why


def test_one_label_hint_in_the_why():
    c = cfg(Server("*.foo.com", (loc("/", backend=B),)), Server("_", (loc("/", status=404),)))
    d = explain(c, "a.b.foo.com", "/")
    assert d.status == 404 and "*.foo.com matches exactly one label" in d.server_why


def test_no_server_falls_back_to_the_default_backend_or_the_status():
    c = cfg(Server("h", (loc("/", backend=A),), listeners=(8080,)))
    assert explain(c, "h", "/").status == 404
    assert explain(c, "h", "/", port=8080).status == 200
    c = cfg(Server("h", (loc("/x", backend=A),)), default_backend=B)
    assert svc(explain(c, "other", "/")) == "b"
    assert svc(explain(c, "h", "/y")) == "b"  # no location matched either


def test_https_reports_the_certificate():
    c = cfg(Server("h", (loc("/", backend=A),), tls=TLS("default/s", "C", "K")), Server("g", (loc("/", backend=A),)))
    assert explain(c, "h", "/", scheme="https").tls.secret == "default/s"
    d = explain(c, "g", "/", scheme="https")
    assert d.tls is None and "default (self-signed)" in d.notes[0]
    assert json.loads(json.dumps(explain(c, "h", "/", scheme="https").to_dict()))["tls"] == {"secret": "default/s"}


@pytest.mark.parametrize("raw,uri", [
    ("/a//b", "/a/b"), ("/a/./b", "/a/b"), ("/a/b/..", "/a/"), ("/a/../b", "/b"), ("/%61pi", "/api"), ("/..", None),
])
def test_normalize(raw, uri):
    assert normalize(raw) == uri


def test_matching_uses_the_normalized_uri_and_proxies_the_raw_one():
    c = cfg(Server("h", (loc("/", status=404), loc("/api", backend=A))))
    d = explain(c, "h", "/x/../api//v1?q=%20")
    assert svc(d) == "a" and d.upstream_path == "/x/../api//v1?q=%20"
    assert explain(c, "h", "/../x").status == 400


def test_rewrite_groups_and_query():
    assert rewrite("/something(/|$)(.*)", "/$2", "/something/new/x", "a=1") == "/new/x?a=1"
    assert rewrite("/app(?<rest>.*)", "/v2${rest}", "/APP/z", "") == "/v2/z"
    assert rewrite("/x", "/y?b=2", "/x", "a=1") == "/y?b=2&a=1"
    assert rewrite("/x", "/y?", "/x", "a=1") == "/y"
    assert rewrite("/x(.*)", "/$5", "/x", "") == "/"  # a missing group is empty


def test_ssl_redirect_redirect_and_status_answers():
    c = cfg(Server("h", (loc("/s", backend=A, ssl_redirect=True), loc("/r", "Exact", redirect=Redirect(
        scheme="https", hostname="x.com", port=8443, status=302)), loc("/gone", "Exact", status=500))))
    d = explain(c, "h:80", "/s/")
    assert (d.status, d.redirect) == (308, "https://h/s")
    assert explain(c, "h", "/s/", scheme="https").status == 200
    assert explain(c, "h", "/r?q").redirect == "https://x.com:8443/r?q"
    assert explain(c, "h", "/gone").status == 500


def test_no_backend_or_no_endpoint_is_503():
    c = cfg(Server("h", (loc("/none"), loc("/empty", backend=be("e")))))
    assert explain(c, "h", "/none").status == 503
    d = explain(c, "h", "/empty/")
    assert d.status == 503 and "no ready endpoint" in d.status_why


def canary_cfg(**kw) -> ProxyConfig:
    return cfg(Server("h", (loc("/", backend=A, canaries=(Canary(backend=C, **kw),)),)))


def test_canary_by_header():
    c = canary_cfg(header="X-Canary", weight=0)
    assert svc(explain(c, "h", "/", {"x-canary": "always"})) == "c"
    assert svc(explain(c, "h", "/", {"X-Canary": "never"})) == "a"
    assert svc(explain(c, "h", "/")) == "a"
    c = canary_cfg(header="X-Canary", header_value="v2")
    assert svc(explain(c, "h", "/", {"X-Canary": "v2"})) == "c"
    assert svc(explain(c, "h", "/", {"X-Canary": "always"})) == "a"  # with a value, "always" means nothing
    c = canary_cfg(header="X-Canary", header_pattern="^v[2-3]$")
    assert svc(explain(c, "h", "/", {"X-Canary": "v3"})) == "c"


def test_canary_by_cookie_then_weight():
    c = canary_cfg(cookie="canary", weight=100)
    assert svc(explain(c, "h", "/", {"Cookie": "a=b; canary=never"})) == "a"
    assert svc(explain(c, "h", "/")) == "c"  # weight 100 of 100
    d = explain(canary_cfg(weight=20, weight_total=200), "h", "/")
    assert d.shares == [("default-a-80", 0.9), ("default-c-80", 0.1)]
    assert {e.ip for e in d.endpoints} == {"10.0.0.1", "10.0.0.3"}
    assert d.status == 200 and "20/200" in d.canary


def test_affinity_cookie_keeps_the_primary():
    c = cfg(Server("h", (loc("/", backend=A, affinity_cookie="INGRESSCOOKIE",
                             canaries=(Canary(backend=C, weight=100),)),)))
    assert svc(explain(c, "h", "/", {"Cookie": "INGRESSCOOKIE=abc"})) == "a"
    assert svc(explain(c, "h", "/")) == "c"


def test_weighted_backends_and_header_method_variants():
    empty = be("e", weight=1)
    c = cfg(Server("h", (
        Location(path="/", match="Prefix", backends=(be("a", "10.0.0.1", weight=3), be("b", "10.0.0.2")),
                 headers=(HeaderMatch("env", "canary"),)),
        Location(path="/", match="Prefix", backends=(B, empty, be("z", weight=0)), method="POST"),
        Location(path="/", match="Prefix", backends=(C,)))))
    d = explain(c, "h", "/", {"env": "canary"})
    assert d.shares == [("default-a-80", 0.75), ("default-b-80", 0.25)] and d.backend is None
    d = explain(c, "h", "/", method="POST")
    assert d.status == 200 and d.shares == [("default-b-80", 0.5), ("default-e-80", 0.5)]
    assert "default-e-80 have no endpoint" in d.notes[0]
    d = explain(c, "h", "/")
    assert svc(d) == "c" and "variant 2" in d.location_why
    c = cfg(Server("h", (Location(path="/", match="Prefix", backends=(A,),
                                  headers=(HeaderMatch("v", "^1", "RegularExpression"),)),)))
    assert svc(explain(c, "h", "/", {"v": "12"})) == "a"
    d = explain(c, "h", "/", {"v": "2"})
    assert d.status == 404 and "does not match" in d.status_why


def test_decision_is_json():
    c = canary_cfg(header="X", weight=10)
    out = json.loads(json.dumps(explain(c, "h", "/").to_dict()))
    assert out["status"] == 200 and out["server"] == "h" and out["location"]["canaries"][0]["weight"] == 10


def test_conditional_variants_fall_through_to_shorter_prefixes():
    """HTTPRoute precedence: /foo with a header, else the rule for / (nginx.py renders the same)."""
    c = cfg(Server("h", (
        Location(path="/foo", match="Prefix", backends=(A,), headers=(HeaderMatch("env", "a"),)),
        Location(path="/foo", match="Exact", backends=(B,), method="POST"),
        Location(path="/", match="Prefix", backends=(C,)))))
    assert svc(explain(c, "h", "/foo/x", {"env": "a"})) == "a"
    d = explain(c, "h", "/foo/x")
    assert svc(d) == "c" and "variant 1" in d.location_why  # the /foo/ block falls through to /
    assert svc(explain(c, "h", "/foo", method="POST")) == "b"  # "= /foo": the Exact first
    assert svc(explain(c, "h", "/foo", {"env": "a"})) == "a"
    assert svc(explain(c, "h", "/foo")) == "c"
    c = cfg(Server("h", (Location(path="/foo", match="Prefix", backends=(A,), headers=(HeaderMatch("env", "a"),)),)))
    d = explain(c, "h", "/foo/x")
    assert d.status == 404 and "no variant matches" in d.status_why
