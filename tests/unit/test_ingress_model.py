"""The Ingress translation (netsim.node.ingress.ingress.proxy_config) against the ingress
conformance suite's features (kubernetes-sigs/ingress-controller-conformance features/*.feature:
host_rules, path_rules, default_backend, ingress_class, load_balancing), each checked through
match.explain as a request would be, and every nginx.ingress.kubernetes.io annotation netsim
implements.  tests/e2e sends the same requests through the real nginx."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsim.model import ingress_nginx
from netsim.node.ingress.match import blocks
from tests.unit.ingress_objects import World, ing, path, rule, served_by, service, tls_secret


def status_and_service(cfg, url: str, headers: dict | None = None) -> tuple[int, str | None]:
    d = served_by(cfg, url, headers)
    return d.status, d.backend.service if d.backend and d.status == 200 else None


# --- host_rules.feature --------------------------------------------------------------------------

@pytest.fixture
def host_rules():
    w = World("wildcard-foo-com", "foo-bar-com")
    w.secrets.append(tls_secret("conformance-tls", cert="FOO-BAR-CERT", key="FOO-BAR-KEY"))
    return w.config(ing("host-rules", rule("*.foo.com", path("/", "wildcard-foo-com")),
                        rule("foo.bar.com", path("/", "foo-bar-com", port="http")),
                        tls=[{"hosts": ["foo.bar.com"], "secretName": "conformance-tls"}]))


@pytest.mark.parametrize("url,status,svc", [
    ("https://foo.bar.com/", 200, "foo-bar-com"),
    ("http://subdomain.bar.com/", 404, None),
    ("https://bar.foo.com/", 200, "wildcard-foo-com"),
    ("http://baz.bar.foo.com/", 404, None),  # the wildcard covers exactly one label
    ("http://foo.com/", 404, None),
    ("https://FOO.bar.com:443/", 200, "foo-bar-com"),  # host compared case-insensitively, port stripped
])
def test_host_rules(host_rules, url, status, svc):
    assert status_and_service(host_rules, url) == (status, svc)


def test_host_rules_tls_secret_by_sni_and_308_redirect(host_rules):
    d = served_by(host_rules, "https://foo.bar.com/")
    assert d.tls is not None and d.tls.secret == "default/conformance-tls" and d.tls.cert_pem == "FOO-BAR-CERT"
    d = served_by(host_rules, "http://foo.bar.com/a/b/?q=1")
    assert (d.status, d.redirect) == (308, "https://foo.bar.com/a/b/?q=1")
    d = served_by(host_rules, "http://foo.bar.com/a/b/")
    assert (d.status, d.redirect) == (308, "https://foo.bar.com/a/b")  # lua_ingress drops the trailing slash
    # The Ingress has a TLS section: its other hosts get the self-signed fallback, and with it the
    # redirect (controller.go createServers + certificate.lua); the suite's client follows it.
    d = served_by(host_rules, "http://bar.foo.com/")
    assert (d.status, d.redirect) == (308, "https://bar.foo.com")
    assert served_by(host_rules, "https://bar.foo.com/").tls.secret == ""


def test_named_service_port_resolves_to_target_port(host_rules):
    d = served_by(host_rules, "https://foo.bar.com/")
    assert d.backend.upstream == "default-foo-bar-com-http"
    assert [(e.ip, e.port) for e in d.endpoints] == [("10.244.2.2", 8080)]


# --- path_rules.feature --------------------------------------------------------------------------

@pytest.fixture
def path_rules():
    w = World("foo-exact", "foo-prefix", "aaa-slash-bbb-prefix", "aaa-prefix", "aaa-slash-bbb-slash-prefix",
              "foo-slash-exact")
    return w.config(ing(
        "path-rules",
        rule("exact-path-rules", path("/foo", "foo-exact", kind="Exact")),
        rule("prefix-path-rules", path("/foo", "foo-prefix"), path("/aaa/bbb", "aaa-slash-bbb-prefix"),
             path("/aaa", "aaa-prefix")),
        rule("mixed-path-rules", path("/foo", "foo-prefix"), path("/foo", "foo-exact", kind="Exact")),
        rule("trailing-slash-path-rules", path("/aaa/bbb/", "aaa-slash-bbb-slash-prefix"),
             path("/foo/", "foo-slash-exact", kind="Exact"))))


@pytest.mark.parametrize("url,status,svc", [
    ("http://exact-path-rules/foo", 200, "foo-exact"),
    ("http://exact-path-rules/foo/", 404, None),
    ("http://exact-path-rules/FOO", 404, None),
    ("http://exact-path-rules/bar", 404, None),
    ("http://prefix-path-rules/foo", 200, "foo-prefix"),
    ("http://prefix-path-rules/foo/", 200, "foo-prefix"),
    ("http://prefix-path-rules/FOO", 404, None),
    ("http://prefix-path-rules/aaa/bbb", 200, "aaa-slash-bbb-prefix"),
    ("http://prefix-path-rules/aaa/bbb/ccc", 200, "aaa-slash-bbb-prefix"),
    ("http://prefix-path-rules/aaa/ccc", 200, "aaa-prefix"),
    ("http://prefix-path-rules/aaaccc", 404, None),
    ("http://mixed-path-rules/foo", 200, "foo-exact"),
    ("http://mixed-path-rules/foo/x", 200, "foo-prefix"),
    ("http://trailing-slash-path-rules/aaa/bbb", 200, "aaa-slash-bbb-slash-prefix"),  # ingress-nginx gets this wrong
    ("http://trailing-slash-path-rules/aaa/bbb/", 200, "aaa-slash-bbb-slash-prefix"),
    ("http://trailing-slash-path-rules/foo", 404, None),
    ("http://trailing-slash-path-rules/foo/", 200, "foo-slash-exact"),
])
def test_path_rules(path_rules, url, status, svc):
    assert status_and_service(path_rules, url) == (status, svc)


def test_prefix_renders_like_ingress_nginx_plus_the_slashless_exact(path_rules):
    by_host = {s.hostname: [b.text for b in blocks(s)] for s in path_rules.servers}
    assert by_host["prefix-path-rules"] == ["location /aaa/bbb/", "location = /aaa/bbb", "location /foo/",
                                            "location = /foo", "location /aaa/", "location = /aaa", "location /"]
    # An Exact of the same path takes the "= /foo" block: nginx would refuse a duplicate.
    assert by_host["mixed-path-rules"] == ["location = /foo", "location /foo/", "location /"]
    mixed = next(s for s in path_rules.servers if s.hostname == "mixed-path-rules")
    assert [loc.match for loc in mixed.locations] == ["Exact", "Prefix", "Prefix"]  # Exact first on a tie
    # An Exact ending in / is a regex of the whole path: "= /foo/" would answer /foo with a 301.
    assert by_host["trailing-slash-path-rules"][:3] == ["location /aaa/bbb/", "location = /aaa/bbb",
                                                         'location ~ "^/foo/$"']


def test_implementation_specific_is_prefix_as_in_ingress_nginx():
    w = World("a")
    cfg = w.config(ing("i", rule("h", path("/app", "a", kind="ImplementationSpecific"))))
    assert status_and_service(cfg, "http://h/app/x") == (200, "a")
    assert status_and_service(cfg, "http://h/application") == (404, None)
    assert [loc.match for loc in cfg.servers[1].locations] == ["Prefix", "Prefix"]


# --- default_backend.feature and load_balancing.feature ----------------------------------------

@pytest.mark.parametrize("url", ["http://my-host/", "http://my-host/sub-path", "http://some-host/",
                                 "http://10.0.0.1/resource", "http://some-host/resource"])
def test_default_backend_takes_everything(url):
    w = World("echo-service")
    cfg = w.config(ing("default-backend", default="echo-service"))
    d = served_by(cfg, url)
    assert (d.status, d.backend.service, d.server) == (200, "echo-service", "_")
    assert d.upstream_path == "/" + url.split("/", 3)[3]
    assert cfg.default_backend is not None and cfg.default_backend.service == "echo-service"


def test_load_balancing_over_every_ready_endpoint():
    w = World()
    ips = w.backend("echo-service", replicas=10)
    w.slices[0]["endpoints"].append({"addresses": ["10.244.9.9"], "conditions": {"ready": False}})
    cfg = w.config(ing("load-balancing", default="echo-service"))
    d = served_by(cfg, "http://load-balancing/")
    assert sorted(e.ip for e in d.endpoints) == sorted(ips)  # the not-ready one is left out
    assert all(e.port == 8080 for e in d.endpoints)


def test_rules_default_backend_serves_unmatched_paths_of_its_hosts_only():
    w = World("web", "fallback")
    cfg = w.config(ing("i", rule("h", path("/web", "web")), default="fallback"))
    assert status_and_service(cfg, "http://h/other") == (200, "fallback")
    assert status_and_service(cfg, "http://elsewhere/") == (404, None)  # the catch-all stays the controller's


def test_oldest_default_backend_wins_the_catch_all():
    w = World("old", "new")
    cfg = w.config(ing("b", default="new", ts="2026-01-02T00:00:00Z"), ing("a", default="old"))
    assert status_and_service(cfg, "http://x/") == (200, "old")


# --- ingress_class.feature -----------------------------------------------------------------------

def test_ingress_class():
    w = World("ingress-class-prefix", "legacy", "classless")
    cfg = w.config(ing("test-ingress-class", rule("ingress-class", path("/", "ingress-class-prefix")),
                       cls="some-invalid-class-name"),
                   ing("theirs", rule("theirs", path("/", "ingress-class-prefix")), cls="other"),
                   ing("legacy", rule("legacy", path("/", "legacy")), cls=None,
                       annotations={"kubernetes.io/ingress.class": "nginx"}),
                   ing("classless", rule("classless", path("/", "classless")), cls=None))
    assert status_and_service(cfg, "http://ingress-class/") == (404, None)
    assert status_and_service(cfg, "http://theirs/") == (404, None)
    assert status_and_service(cfg, "http://legacy/") == (200, "legacy")
    assert status_and_service(cfg, "http://classless/") == (404, None)
    assert "no such IngressClass" in cfg.extra["ignored Ingress default/test-ingress-class"]
    assert "example.com/other" in cfg.extra["ignored Ingress default/theirs"]
    cfg = w.config(ing("classless", rule("classless", path("/", "classless")), cls=None),
                   args=ingress_nginx.ControllerArgs(watch_without_class=True))
    assert status_and_service(cfg, "http://classless/") == (200, "classless")


# --- merging, conflicts, backends ------------------------------------------------------------------

def test_same_host_merges_across_ingresses_oldest_wins_a_conflict():
    w = World("a", "b", "c")
    cfg = w.config(ing("second", rule("h", path("/x", "b"), path("/y", "c")), ts="2026-01-02T00:00:00Z"),
                   ing("first", rule("h", path("/x/", "a"))))
    assert status_and_service(cfg, "http://h/x") == (200, "a")  # /x/ and /x render the same: the oldest keeps it
    assert status_and_service(cfg, "http://h/y") == (200, "c")
    assert any("already served by Ingress default/first" in v for v in cfg.extra.values())


def test_equal_timestamps_order_by_namespace_name_descending():
    w = World("a", "b")
    cfg = w.config(ing("aaa", rule("h", path("/", "a"))), ing("bbb", rule("h", path("/", "b"))))
    assert status_and_service(cfg, "http://h/") == (200, "b")  # store.go: "in > jn"


def test_missing_service_or_no_ready_endpoint_is_503():
    w = World("up")
    w.services.append(service("down"))
    w.slices.append({"metadata": {"name": "down-x", "namespace": "default",
                                  "labels": {"kubernetes.io/service-name": "down"}},
                     "endpoints": [{"addresses": ["10.244.7.7"], "conditions": {"ready": False}}],
                     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
    cfg = w.config(ing("i", rule("h", path("/up", "up"), path("/down", "down"), path("/gone", "nosuch"))))
    assert served_by(cfg, "http://h/up").status == 200
    d = served_by(cfg, "http://h/down")
    assert (d.status, d.backend.missing) == (503, "Service default/down has no ready endpoint")
    d = served_by(cfg, "http://h/gone")
    assert (d.status, d.backend.missing) == (503, "no Service default/nosuch")
    assert d.backend.upstream == "default-nosuch-8080"




def test_named_target_port_resolved_per_endpoint_slice():
    w = World()
    w.services.append({"metadata": {"name": "web", "namespace": "default"},
                       "spec": {"clusterIP": "10.96.0.50",
                                "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}})
    # Two slices: pods whose "http" port differs (the EndpointSlice controller groups them by port).
    for i, (ip, port) in enumerate([("10.244.1.5", 8080), ("10.244.2.5", 9090)]):
        w.slices.append({"metadata": {"name": f"web-{i}", "namespace": "default",
                                      "labels": {"kubernetes.io/service-name": "web"}},
                         "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
                         "ports": [{"name": "web", "port": port, "protocol": "TCP"}]})
    cfg = w.config(ing("i", rule("h", path("/", "web", port=80))))
    d = served_by(cfg, "http://h/")
    assert [(e.ip, e.port) for e in d.endpoints] == [("10.244.1.5", 8080), ("10.244.2.5", 9090)]
    assert d.backend.upstream == "default-web-80"


def test_tls_missing_secret_is_the_self_signed_fallback_and_still_redirects():
    w = World("a")
    cfg = w.config(ing("i", rule("h", path("/", "a")), tls=[{"hosts": ["h"], "secretName": "nope"}]))
    server = next(s for s in cfg.servers if s.hostname == "h")
    assert (server.tls.secret, server.tls.cert_pem, server.tls.key_pem) == ("", "", "")
    assert served_by(cfg, "http://h/").status == 308


# --- annotations -------------------------------------------------------------------------------------

def test_ssl_redirect_false():
    w = World("a")
    w.secrets.append(tls_secret("s"))
    cfg = w.config(ing("i", rule("h", path("/", "a")), tls=[{"hosts": ["h"], "secretName": "s"}],
                       annotations={"ssl-redirect": "false"}))
    assert served_by(cfg, "http://h/").status == 200
    cfg = w.config(ing("i", rule("h", path("/", "a")), annotations={"force-ssl-redirect": "true"}))
    assert served_by(cfg, "http://h/").status == 308


def test_rewrite_target_with_capture_groups_turns_the_host_into_regexes():
    w = World("web", "other")
    cfg = w.config(
        ing("rw", rule("h", path("/something(/|$)(.*)", "web", kind="ImplementationSpecific")),
            annotations={"rewrite-target": "/$2", "use-regex": "true"}),
        ing("plain", rule("h", path("/exact", "other", kind="Exact")), ts="2026-01-02T00:00:00Z"))
    server = next(s for s in cfg.servers if s.hostname == "h")
    assert {loc.match for loc in server.locations} == {"Regex"}
    d = served_by(cfg, "http://h/something/new?x=1")
    assert (d.status, d.backend.service, d.upstream_path) == (200, "web", "/new?x=1")
    assert served_by(cfg, "http://h/something").upstream_path == "/"
    # The quirk users trip on (ingress-nginx#8208): another Ingress's rewrite makes Exact a prefix regex.
    assert status_and_service(cfg, "http://h/exactly") == (200, "other")


def test_use_regex_paths_are_case_insensitive_and_ordered_longest_first():
    w = World("short", "long")
    cfg = w.config(ing("r", rule("h", path("/a.*", "short", kind="ImplementationSpecific"),
                                 path("/api/v[0-9]+", "long", kind="ImplementationSpecific")),
                       annotations={"use-regex": "true"}))
    assert status_and_service(cfg, "http://h/API/v2/x") == (200, "long")
    assert status_and_service(cfg, "http://h/abc") == (200, "short")


def test_backend_protocol_and_service_upstream():
    w = World("a")
    cfg = w.config(ing("i", rule("h", path("/", "a")), annotations={"backend-protocol": "HTTPS",
                                                                  "service-upstream": "true"}))
    d = served_by(cfg, "http://h/")
    assert d.backend.protocol == "HTTPS"
    assert d.backend.cluster_ip == "10.96.0.11:8080"
    assert [(e.ip, e.port) for e in d.endpoints] == [("10.96.0.11", 8080)]


def test_affinity_cookie():
    w = World("a")
    cfg = w.config(ing("i", rule("h", path("/", "a")), annotations={"affinity": "cookie"}))
    assert served_by(cfg, "http://h/").location.affinity_cookie == "INGRESSCOOKIE"
    cfg = w.config(ing("i", rule("h", path("/", "a")), annotations={"affinity": "cookie",
                                                                  "session-cookie-name": "route"}))
    assert served_by(cfg, "http://h/").location.affinity_cookie == "route"


def test_default_backend_annotation_replaces_a_backend_without_endpoints():
    w = World("fallback")
    w.services.append(service("empty"))
    cfg = w.config(ing("i", rule("h", path("/", "empty")), annotations={"default-backend": "fallback"}))
    d = served_by(cfg, "http://h/")
    assert (d.status, d.backend.service) == (200, "fallback")
    assert d.backend.upstream == "custom-default-backend-default-fallback"


def test_app_root_redirects_the_root_only():
    w = World("a")
    cfg = w.config(ing("i", rule("h", path("/", "a")), annotations={"app-root": "/app"}))
    d = served_by(cfg, "http://h/")
    assert (d.status, d.redirect) == (302, "http://h/app")
    assert served_by(cfg, "http://h/app").status == 200


def test_canary_ingress_is_attached_not_served_alone():
    w = World("main", "canary")
    cfg = w.config(ing("main", rule("h", path("/", "main"))),
                   ing("canary", rule("h", path("/", "canary")), ts="2026-01-02T00:00:00Z",
                       annotations={"canary": "true", "canary-by-header": "X-Canary", "canary-weight": "30"}))
    server = next(s for s in cfg.servers if s.hostname == "h")
    (loc,) = server.locations
    assert loc.backends[0].service == "main"
    (c,) = loc.canaries
    assert (c.backend.service, c.header, c.weight, c.weight_total) == ("canary", "X-Canary", 30, 100)


def test_canary_without_a_main_ingress_is_dropped():
    w = World("canary")
    cfg = w.config(ing("canary", rule("h", path("/", "canary")), annotations={"canary": "true"}))
    assert all(s.hostname != "h" for s in cfg.servers)
    assert status_and_service(cfg, "http://h/") == (404, None)


# --- the API's path semantics, on generated rules -------------------------------------------------

SEGMENTS = st.sampled_from(["a", "b", "aa", "A"])
PATHS = st.lists(SEGMENTS, max_size=3).map(lambda s: "/" + "/".join(s))


def api_choice(rules: list[tuple[str, str]], request: str) -> int | None:
    """networking/v1 types.go: Exact is equality; Prefix is element-wise, trailing slashes ignored;
    the longest path wins, Exact before Prefix on a tie."""
    req = [e for e in request.split("/") if e]
    best = None
    for i, (kind, p) in enumerate(rules):
        elems = [e for e in p.split("/") if e]
        ok = p == request if kind == "Exact" else req[:len(elems)] == elems
        if ok:
            rank = (len("/".join(elems)), kind == "Exact")
            if best is None or rank > best[0]:
                best = (rank, i)
    return None if best is None else best[1]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["Exact", "Prefix"]), PATHS, st.booleans()), min_size=1, max_size=5),
       PATHS, st.booleans())
def test_prefix_and_exact_semantics_match_the_api(raw, request, trailing):
    rules, seen = [], set()
    for kind, p, slash in raw:
        if slash and p != "/":
            p += "/"
        # One rule per (kind, path as the API compares it): a second is a conflict the oldest wins.
        norm = p if kind == "Exact" else p.rstrip("/") or "/"
        if (kind, norm) not in seen:
            seen.add((kind, norm))
            rules.append((kind, p))
    request += "/" if trailing and request != "/" else ""
    w = World(*[f"s{i}" for i in range(len(rules))])
    cfg = w.config(ing("i", rule("h", *[path(p, f"s{i}", kind=kind) for i, (kind, p) in enumerate(rules)])))
    want = api_choice(rules, request)
    assert status_and_service(cfg, "http://h" + request) == ((200, f"s{want}") if want is not None else (404, None))


def test_a_hostless_root_rule_does_not_replace_an_older_catch_all_backend():
    w = World("catch", "rule")
    cfg = w.config(ing("a", default="catch"), ing("b", rule(None, path("/", "rule"), path("/r", "rule")),
                                                  ts="2026-01-02T00:00:00Z"))
    assert status_and_service(cfg, "http://any/") == (200, "catch")
    assert status_and_service(cfg, "http://any/r") == (200, "rule")
