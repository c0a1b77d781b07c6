"""The Gateway API's HTTP conformance cases (gateway-api conformance/tests, the GATEWAY-HTTP
core) on netsim.node.ingress.gateway: the ProxyConfig a Gateway and its HTTPRoutes become, and
the status the spec asks for.  Requests are answered by match.explain (what nginx rendered from
the ProxyConfig does with them); ``_answer`` reads the contract directly where explain cannot
say it (query parameters).  The e2e
test sends the same requests through a real proxy."""

from __future__ import annotations

import re

import pytest

from netsim.controllers import gatewayapi as gw
from netsim.node.ingress import gateway, match
from netsim.node.ingress.routes import Location, ProxyConfig

NS = "gateway-conformance-infra"
GROUP = "gateway.networking.k8s.io"


def _gateway(listeners=None, name="same-namespace", ns=NS, **allowed):
    lis = listeners or [{"name": "http", "port": 80, "protocol": "HTTP",
                         "allowedRoutes": {"namespaces": {"from": allowed.get("frm", "Same")}}}]
    return {"apiVersion": f"{GROUP}/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": ns, "generation": 1, "uid": "g1"},
            "spec": {"gatewayClassName": "netsim", "listeners": lis}}


def _route(name, rules, hostnames=None, parent="same-namespace", ns=NS, created="2026-01-01T00:00:00Z", **ref):
    spec = {"parentRefs": [{"name": parent, **ref}], "rules": rules}
    if hostnames:
        spec["hostnames"] = hostnames
    return {"apiVersion": f"{GROUP}/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": ns, "generation": 1, "creationTimestamp": created},
            "spec": spec}


def _rule(backend=None, path=None, ptype="PathPrefix", **extra):
    rule = dict(extra)
    if path is not None:
        rule["matches"] = [{"path": {"type": ptype, "value": path}}]
    if backend is not None:
        rule["backendRefs"] = [{"name": backend, "port": 8080}]
    return rule


def _infra(ns=NS, names=("infra-backend-v1", "infra-backend-v2", "infra-backend-v3")):
    services, slices = [], []
    for i, n in enumerate(names, 1):
        services.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": n, "namespace": ns},
                         "spec": {"ports": [{"port": 8080, "targetPort": 3000}]}})
        slices.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                       "metadata": {"name": f"{n}-x", "namespace": ns, "labels": {"kubernetes.io/service-name": n}},
                       "ports": [{"port": 3000, "protocol": "TCP", "name": ""}],
                       "endpoints": [{"addresses": [f"10.244.{i}.5"], "conditions": {"ready": True}}]})
    return services, slices


NAMESPACES = [{"metadata": {"name": NS, "labels": {"kubernetes.io/metadata.name": NS}}},
              {"metadata": {"name": "other", "labels": {"kubernetes.io/metadata.name": "other", "team": "a"}}}]


def _config(gw_obj, routes, grants=(), services=None, slices=None) -> ProxyConfig:
    s, sl = _infra()
    return gateway.proxy_config(gw_obj, routes, list(grants), s if services is None else services,
                                sl if slices is None else slices, [], NAMESPACES)


def _statuses(gw_obj, routes, grants=(), addresses=("192.168.50.200",)):
    s, sl = _infra()
    return gateway.statuses(gw_obj, routes, list(grants), s, sl, [], NAMESPACES, list(addresses))


# -- the request side of the contract -------------------------------------------------------------

def _host_matches(server_host: str, host: str) -> bool:
    if server_host == "_" or server_host == host:
        return True
    return server_host.startswith("*.") and host.endswith(server_host[1:]) and len(host) > len(server_host) - 1


def _path_matches(loc: Location, path: str) -> bool:
    if loc.match == "Exact":
        return path == loc.path
    p = loc.path.rstrip("/")
    return p == "" or path == p or path.startswith(p + "/") or path == loc.path


def _answer(cfg: ProxyConfig, path: str, host: str = "example.com", headers=None, method="GET",
            port: int = 80) -> Location | int:
    """The location answering a request, or the status the proxy answers with itself."""
    host = host.split(":")[0].lower()
    path, _, query = path.partition("?")
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    for server in cfg.servers:  # exact hosts, then wildcards longest first, then "_" (as ordered)
        if port not in server.listeners or not _host_matches(server.hostname, host):
            continue
        for loc in server.locations:
            if not _path_matches(loc, path) or (loc.method and loc.method != method):
                continue
            if all(hdrs.get(h.name.lower()) == h.value if h.type == "Exact"
                   else re.fullmatch(h.value, hdrs.get(h.name.lower(), "")) for h in loc.headers) and \
                    all(params.get(q.name) == q.value for q in loc.query_params):
                return loc
        return cfg.no_match_status
    return cfg.no_match_status


def _backend(cfg, path, host="example.com", headers=None, method="GET", port=80, local=False) -> str | int:
    """The Service a request goes to, or the status the proxy answers with: by match.explain
    (what nginx rendered from cfg does), or by ``_answer`` (local=True) where explain cannot
    say it: query parameters."""
    if local:
        a = _answer(cfg, path, host, headers, method, port)
        if isinstance(a, int):
            return a
        if a.status:
            return a.status
        live = [b for b in a.backends if b.weight > 0]
        assert len(live) == 1, a
        return 500 if live[0].missing else live[0].service
    d = match.explain(cfg, host, path, headers, method=method, port=port)
    if d.status != 200:
        return d.status
    assert d.backend is not None, d
    return d.backend.service


def _loc(cfg, path, host="example.com") -> Location:
    return match.explain(cfg, host, path).location


def _cond(conds, type_):
    return next(c for c in conds if c["type"] == type_)


# -- conformance cases ------------------------------------------------------------------------------

def test_simple_same_namespace():
    gwo = _gateway()
    route = _route("gateway-conformance-infra-test", [_rule("infra-backend-v1")])
    cfg = _config(gwo, [route])
    assert _backend(cfg, "/") == "infra-backend-v1"
    loc = _loc(cfg, "/")
    assert [(e.ip, e.port) for e in loc.backends[0].endpoints] == [("10.244.1.5", 3000)]
    g, parents = _statuses(gwo, [route])
    assert _cond(g["conditions"], "Accepted")["status"] == "True"
    assert _cond(g["conditions"], "Programmed")["status"] == "True"
    assert g["addresses"] == [{"type": "IPAddress", "value": "192.168.50.200"}]
    assert g["listeners"][0]["attachedRoutes"] == 1
    assert g["listeners"][0]["supportedKinds"] == [{"group": GROUP, "kind": "HTTPRoute"}]
    (p,) = parents[(NS, "gateway-conformance-infra-test")]
    assert p["controllerName"] == "netsim.io/gateway-controller"
    assert p["parentRef"] == {"group": GROUP, "kind": "Gateway", "name": "same-namespace"}
    assert {c["type"]: (c["status"], c["reason"]) for c in p["conditions"]} == {
        "Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}


def test_no_address_is_not_programmed():
    g, _ = _statuses(_gateway(), [], addresses=())
    assert _cond(g["conditions"], "Programmed")["reason"] == "AddressNotAssigned"
    assert "addresses" not in g


MATCHING = [
    {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}, {"headers": [{"name": "version", "value": "one"}]}],
     "backendRefs": [{"name": "infra-backend-v1", "port": 8080}]},
    {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}, {"headers": [{"name": "version", "value": "two"}]}],
     "backendRefs": [{"name": "infra-backend-v2", "port": 8080}]},
]


@pytest.mark.parametrize("path,headers,want", [
    ("/", None, "infra-backend-v1"), ("/example", None, "infra-backend-v1"),
    ("/", {"Version": "one"}, "infra-backend-v1"), ("/v2", None, "infra-backend-v2"),
    ("/v2/example", None, "infra-backend-v2"), ("/", {"Version": "two"}, "infra-backend-v2"),
    ("/v2/", None, "infra-backend-v2"), ("/v2example", None, "infra-backend-v1"),
    ("/foo/v2/example", None, "infra-backend-v1"),
])
def test_matching(path, headers, want):
    assert _backend(_config(_gateway(), [_route("matching", MATCHING)]), path, headers=headers) == want


PATH_ORDER = [_rule("infra-backend-v1", "/match", "Exact"), _rule("infra-backend-v2", "/match/exact", "Exact"),
              _rule("infra-backend-v3", "/match/exact/one", "Exact"), _rule("infra-backend-v3", "/match/"),
              _rule("infra-backend-v1", "/match/prefix/"), _rule("infra-backend-v2", "/match/prefix/one")]


@pytest.mark.parametrize("path,want", [
    ("/match/exact/one", "infra-backend-v3"), ("/match/exact", "infra-backend-v2"), ("/match", "infra-backend-v1"),
    ("/match/prefix/one/any", "infra-backend-v2"), ("/match/prefix/any", "infra-backend-v1"),
    ("/match/any", "infra-backend-v3"),
])
def test_path_match_order(path, want):
    assert _backend(_config(_gateway(), [_route("path-matching-order", PATH_ORDER)]), path) == want


def test_precedence_method_headers_then_oldest_route():
    rules_old = [{"matches": [{"path": {"type": "PathPrefix", "value": "/p"}}],
                  "backendRefs": [{"name": "infra-backend-v1", "port": 8080}]}]
    rules_new = [{"matches": [{"path": {"type": "PathPrefix", "value": "/p"}, "method": "POST"},
                              {"path": {"type": "PathPrefix", "value": "/p"},
                               "headers": [{"name": "x", "value": "1"}, {"name": "y", "value": "2"}]},
                              {"path": {"type": "PathPrefix", "value": "/p"}, "queryParams": [{"name": "q",
                                                                                               "value": "1"}]}],
                  "backendRefs": [{"name": "infra-backend-v2", "port": 8080}]}]
    same_path = [{"matches": [{"path": {"type": "PathPrefix", "value": "/p"}}],
                  "backendRefs": [{"name": "infra-backend-v3", "port": 8080}]}]
    routes = [_route("b-new", rules_new, created="2026-01-02T00:00:00Z"),
              _route("z-old", rules_old, created="2026-01-01T00:00:00Z"),
              _route("a-old", same_path, created="2026-01-01T00:00:00Z")]
    cfg = _config(_gateway(), routes)
    assert _backend(cfg, "/p", method="POST") == "infra-backend-v2"  # a method match beats none
    assert _backend(cfg, "/p", headers={"x": "1", "y": "2"}) == "infra-backend-v2"
    assert _backend(cfg, "/p?q=1", local=True) == "infra-backend-v2"
    # Equal matches: the oldest route, and between routes as old, namespace/name order.
    assert _backend(cfg, "/p", local=True) == "infra-backend-v3"


HOSTNAME_GATEWAY = _gateway([
    {"name": "listener-1", "port": 80, "protocol": "HTTP", "hostname": "very.specific.com"},
    {"name": "listener-2", "port": 80, "protocol": "HTTP", "hostname": "*.wildcard.io"},
    {"name": "listener-3", "port": 80, "protocol": "HTTP", "hostname": "*.anotherwildcard.io"},
], name="httproute-hostname-intersection")
HOSTNAME_ROUTES = [
    _route("specific-host-matches-listener-specific-host", [_rule("infra-backend-v1", "/s1")],
           ["non.matching.com", "*.nonmatchingwildcard.io", "very.specific.com"], "httproute-hostname-intersection"),
    _route("specific-host-matches-listener-wildcard-host", [_rule("infra-backend-v2", "/s2")],
           ["non.matching.com", "wildcard.io", "foo.wildcard.io", "bar.wildcard.io", "foo.bar.wildcard.io"],
           "httproute-hostname-intersection"),
    _route("wildcard-host-matches-listener-specific-host", [_rule("infra-backend-v3", "/s3")],
           ["non.matching.com", "*.specific.com"], "httproute-hostname-intersection"),
    _route("wildcard-host-matches-listener-wildcard-host", [_rule("infra-backend-v1", "/s4")],
           ["*.anotherwildcard.io"], "httproute-hostname-intersection"),
    _route("no-intersecting-hosts", [_rule("infra-backend-v2", "/s5")],
           ["specific.but.wrong.com", "wildcard.io"], "httproute-hostname-intersection"),
]


@pytest.mark.parametrize("host,path,want", [
    ("very.specific.com", "/s1", "infra-backend-v1"), ("very.specific.com:1234", "/s1", "infra-backend-v1"),
    ("non.matching.com", "/s1", 404), ("foo.nonmatchingwildcard.io", "/s1", 404), ("foo.wildcard.io", "/s1", 404),
    ("very.specific.com", "/non-matching-prefix", 404),
    ("foo.wildcard.io", "/s2", "infra-backend-v2"), ("bar.wildcard.io", "/s2", "infra-backend-v2"),
    ("foo.bar.wildcard.io", "/s2", "infra-backend-v2"), ("non.matching.com", "/s2", 404),
    ("wildcard.io", "/s2", 404), ("very.specific.com", "/s2", 404), ("foo.wildcard.io", "/non-matching-prefix", 404),
    ("very.specific.com", "/s3", "infra-backend-v3"), ("non.matching.com", "/s3", 404),
    ("foo.specific.com", "/s3", 404), ("foo.wildcard.io", "/s3", 404),
    ("foo.anotherwildcard.io", "/s4", "infra-backend-v1"), ("bar.anotherwildcard.io", "/s4", "infra-backend-v1"),
    ("foo.bar.anotherwildcard.io", "/s4", "infra-backend-v1"), ("anotherwildcard.io", "/s4", 404),
    ("foo.wildcard.io", "/s4", 404), ("specific.but.wrong.com", "/s5", 404), ("wildcard.io", "/s5", 404),
])
def test_hostname_intersection(host, path, want):
    cfg = _config(HOSTNAME_GATEWAY, HOSTNAME_ROUTES)
    assert _backend(cfg, path, host=host) == want


def test_hostname_intersection_status():
    g, parents = _statuses(HOSTNAME_GATEWAY, HOSTNAME_ROUTES)
    reasons = {k[1]: _cond(v[0]["conditions"], "Accepted")["reason"] for k, v in parents.items()}
    assert reasons == {r["metadata"]["name"]: "Accepted" for r in HOSTNAME_ROUTES[:4]} | {
        "no-intersecting-hosts": "NoMatchingListenerHostname"}
    assert [x["attachedRoutes"] for x in g["listeners"]] == [2, 1, 1]


@pytest.mark.parametrize("listener,route,want", [
    (None, [], ["*"]), ("a.com", [], ["a.com"]), (None, ["x.io"], ["x.io"]),
    ("*.a.com", ["b.c.a.com"], ["b.c.a.com"]), ("*.a.com", ["a.com"], []),
    ("b.a.com", ["*.a.com"], ["b.a.com"]), ("*.a.com", ["*.b.a.com"], ["*.b.a.com"]),
    ("*.b.a.com", ["*.a.com"], ["*.b.a.com"]), ("*.a.com", ["*.a.com"], ["*.a.com"]), ("*.a.com", ["*.b.com"], []),
])
def test_intersect(listener, route, want):
    assert gw.intersect(listener, route) == want


def test_weight():
    route = _route("weighted-backends", [{"backendRefs": [
        {"name": "infra-backend-v1", "port": 8080, "weight": 70},
        {"name": "infra-backend-v2", "port": 8080, "weight": 30},
        {"name": "infra-backend-v3", "port": 8080, "weight": 0}]}])
    loc = _loc(_config(_gateway(), [route]), "/anything")
    assert [(b.service, b.weight) for b in loc.backends] == [("infra-backend-v1", 70), ("infra-backend-v2", 30),
                                                              ("infra-backend-v3", 0)]
    assert loc.status is None


def test_all_weights_zero_is_500():
    route = _route("zero", [{"backendRefs": [{"name": "infra-backend-v1", "port": 8080, "weight": 0}]}])
    assert _backend(_config(_gateway(), [route]), "/") == 500


def test_request_header_modifier():
    rules = [{"matches": [{"path": {"type": "PathPrefix", "value": "/multiple"}}],
              "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
                  "set": [{"name": "X-Header-Set-1", "value": "header-set-1"}],
                  "add": [{"name": "X-Header-Add-1", "value": "header-add-1"}],
                  "remove": ["X-Header-Remove-1", "X-Header-Remove-2"]}}],
              "backendRefs": [{"name": "infra-backend-v1", "port": 8080}]}]
    loc = _loc(_config(_gateway(), [_route("request-header-modifier", rules)]), "/multiple")
    m = loc.request_headers
    assert m.set == (("X-Header-Set-1", "header-set-1"),)
    assert m.add == (("X-Header-Add-1", "header-add-1"),)
    assert m.remove == ("X-Header-Remove-1", "X-Header-Remove-2")
    assert loc.backends[0].service == "infra-backend-v1"


def test_redirect_host_and_status():
    rules = [{"matches": [{"path": {"type": "PathPrefix", "value": "/hostname-redirect"}}],
              "filters": [{"type": "RequestRedirect", "requestRedirect": {"hostname": "example.org"}}]},
             {"matches": [{"path": {"type": "PathPrefix", "value": "/host-and-status"}}],
              "filters": [{"type": "RequestRedirect",
                           "requestRedirect": {"statusCode": 301, "hostname": "example.org"}}]},
             {"matches": [{"path": {"type": "PathPrefix", "value": "/scheme"}}],
              "filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}]}]
    cfg = _config(_gateway(), [_route("redirect-host-and-status", rules)])
    a = _loc(cfg, "/hostname-redirect")
    assert (a.redirect.hostname, a.redirect.status, a.redirect.port, a.status) == ("example.org", 302, None, None)
    assert _loc(cfg, "/host-and-status").redirect.status == 301
    assert (_loc(cfg, "/scheme").redirect.scheme, _loc(cfg, "/scheme").redirect.port) == ("https", 443)
    _, parents = _statuses(_gateway(), [_route("redirect-host-and-status", rules)])
    assert _cond(parents[(NS, "redirect-host-and-status")][0]["conditions"], "ResolvedRefs")["status"] == "True"


def test_no_backend_refs_is_500():
    route = _route("no-backends", [_rule(None, "/")])
    assert _backend(_config(_gateway(), [route]), "/") == 500
    _, parents = _statuses(_gateway(), [route])
    assert _cond(parents[(NS, "no-backends")][0]["conditions"], "Accepted")["status"] == "True"


def test_missing_backend_is_500_and_backend_not_found():
    route = _route("missing", [_rule("no-such-service", "/")])
    assert _backend(_config(_gateway(), [route]), "/") == 500
    _, parents = _statuses(_gateway(), [route])
    rr = _cond(parents[(NS, "missing")][0]["conditions"], "ResolvedRefs")
    assert (rr["status"], rr["reason"]) == ("False", "BackendNotFound")


def test_partly_missing_backend_keeps_its_share():
    route = _route("half", [{"backendRefs": [{"name": "infra-backend-v1", "port": 8080},
                                             {"name": "gone", "port": 8080}]}])
    loc = _loc(_config(_gateway(), [route]), "/")
    assert loc.status is None and [b.missing is not None for b in loc.backends] == [False, True]


def test_invalid_kind():
    route = _route("kind", [{"backendRefs": [{"group": "example.com", "kind": "Thing", "name": "x", "port": 1}]}])
    _, parents = _statuses(_gateway(), [route])
    assert _cond(parents[(NS, "kind")][0]["conditions"], "ResolvedRefs")["reason"] == "InvalidKind"


CROSS_GRANT = {"apiVersion": f"{GROUP}/v1beta1", "kind": "ReferenceGrant",
               "metadata": {"name": "reference-grant", "namespace": "other"},
               "spec": {"from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": NS}],
                        "to": [{"group": "", "kind": "Service", "name": "web-backend"}]}}


@pytest.mark.parametrize("grants,want,reason", [
    ([], 500, "RefNotPermitted"), ([CROSS_GRANT], "web-backend", "ResolvedRefs"),
    ([{**CROSS_GRANT, "spec": {**CROSS_GRANT["spec"], "to": [{"group": "", "kind": "Service", "name": "else"}]}}],
     500, "RefNotPermitted"),
    ([{**CROSS_GRANT, "metadata": {"name": "g", "namespace": NS}}], 500, "RefNotPermitted"),
])
def test_cross_namespace_backend(grants, want, reason):
    route = _route("reference-grant", [{"backendRefs": [{"name": "web-backend", "namespace": "other", "port": 8080}]}])
    services, slices = _infra()
    s2, sl2 = _infra("other", ("web-backend",))
    cfg = gateway.proxy_config(_gateway(), [route], grants, services + s2, slices + sl2, [], NAMESPACES)
    assert _backend(cfg, "/") == want
    _, parents = gateway.statuses(_gateway(), [route], grants, services + s2, slices + sl2, [], NAMESPACES, [])
    assert _cond(parents[(NS, "reference-grant")][0]["conditions"], "ResolvedRefs")["reason"] == reason


@pytest.mark.parametrize("frm,route_ns,reason", [
    ("Same", "other", "NotAllowedByListeners"), ("All", "other", "Accepted"), ("Same", NS, "Accepted"),
    ("None", NS, "NotAllowedByListeners"),
])
def test_allowed_routes(frm, route_ns, reason):
    route = _route("r", [_rule("infra-backend-v1")], ns=route_ns, namespace=NS)
    g, parents = _statuses(_gateway(frm=frm), [route])
    assert _cond(parents[(route_ns, "r")][0]["conditions"], "Accepted")["reason"] == reason
    assert g["listeners"][0]["attachedRoutes"] == (reason == "Accepted")


def test_allowed_routes_selector():
    lis = [{"name": "http", "port": 80, "protocol": "HTTP",
            "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {"matchLabels": {"team": "a"}}}}}]
    ok = _route("r", [_rule("infra-backend-v1")], ns="other", namespace=NS)
    no = _route("s", [_rule("infra-backend-v1")])
    _, parents = _statuses(_gateway(lis), [ok, no])
    assert _cond(parents[("other", "r")][0]["conditions"], "Accepted")["reason"] == "Accepted"
    assert _cond(parents[(NS, "s")][0]["conditions"], "Accepted")["reason"] == "NotAllowedByListeners"


def test_section_name_and_no_matching_parent():
    lis = [{"name": "a", "port": 80, "protocol": "HTTP", "hostname": "a.com"},
           {"name": "b", "port": 8080, "protocol": "HTTP", "hostname": "b.com"}]
    only_b = _route("only-b", [_rule("infra-backend-v1")], sectionName="b")
    nowhere = _route("nowhere", [_rule("infra-backend-v1")], sectionName="c")
    cfg = _config(_gateway(lis), [only_b, nowhere])
    assert [(s.hostname, s.listeners) for s in cfg.servers] == [("b.com", (8080,))]
    assert _backend(cfg, "/", host="b.com", port=8080) == "infra-backend-v1"
    assert _backend(cfg, "/", host="a.com") == 404
    g, parents = _statuses(_gateway(lis), [only_b, nowhere])
    assert _cond(parents[(NS, "nowhere")][0]["conditions"], "Accepted")["reason"] == "NoMatchingParent"
    assert parents[(NS, "only-b")][0]["parentRef"]["sectionName"] == "b"
    assert [x["attachedRoutes"] for x in g["listeners"]] == [0, 1]


def test_other_gateways_routes_are_ignored():
    route = _route("elsewhere", [_rule("infra-backend-v1")], parent="another")
    assert _config(_gateway(), [route]).servers == ()
    assert _statuses(_gateway(), [route])[1] == {}


def test_listener_problems():
    lis = [{"name": "tcp", "port": 9000, "protocol": "TCP"},
           {"name": "https", "port": 443, "protocol": "HTTPS", "tls": {"certificateRefs": [{"name": "nope"}]}},
           {"name": "ok", "port": 80, "protocol": "HTTP"}]
    g, _ = _statuses(_gateway(lis), [])
    by = {x["name"]: {c["type"]: c["reason"] for c in x["conditions"]} for x in g["listeners"]}
    assert by["tcp"]["Accepted"] == "UnsupportedProtocol"
    assert by["https"]["ResolvedRefs"] == "InvalidCertificateRef" and by["https"]["Programmed"] == "Invalid"
    assert by["ok"]["Programmed"] == "Programmed"
    assert _cond(g["conditions"], "Accepted")["status"] == "True"


def test_https_listener_serves_its_certificate():
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": "cert", "namespace": NS},
              "data": {"tls.crt": "Q0VSVA==", "tls.key": "S0VZ"}}
    lis = [{"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "s.example.com",
            "tls": {"certificateRefs": [{"name": "cert"}]}}]
    s, sl = _infra()
    cfg = gateway.proxy_config(_gateway(lis), [_route("r", [_rule("infra-backend-v1")])], [], s, sl, [secret],
                               NAMESPACES)
    (server,) = cfg.servers
    assert (server.hostname, server.listeners, server.tls.secret, server.tls.cert_pem, server.tls.key_pem) == \
        ("s.example.com", (443,), f"{NS}/cert", "CERT", "KEY")
    on_8443 = [{**lis[0], "port": 8443}, {"name": "h", "port": 8080, "protocol": "HTTP"}]
    cfg = gateway.proxy_config(_gateway(on_8443), [], [], s, sl, [secret], NAMESPACES)
    assert (cfg.http_port, cfg.https_port) == (8080, 8443)


def test_merge_conditions_keeps_transition_time():
    old = [{"type": "Accepted", "status": "True", "lastTransitionTime": "T0"}]
    new = [{"type": "Accepted", "status": "True"}, {"type": "Programmed", "status": "False"}]
    assert [c["lastTransitionTime"] for c in gw.merge_conditions(old, new, "T1")] == ["T0", "T1"]
    assert gw.merge_conditions(old, [{"type": "Accepted", "status": "False"}], "T1")[0]["lastTransitionTime"] == "T1"


def test_a_path_whose_conditions_fail_falls_to_the_next_rule():
    rules = [{"matches": [{"path": {"type": "PathPrefix", "value": "/a"}, "headers": [{"name": "x", "value": "1"}]}],
              "backendRefs": [{"name": "infra-backend-v2", "port": 8080}]},
             {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
              "backendRefs": [{"name": "infra-backend-v1", "port": 8080}]}]
    cfg = _config(_gateway(), [_route("fall", rules)])
    assert _backend(cfg, "/a/b", headers={"x": "1"}) == "infra-backend-v2"
    assert _backend(cfg, "/a/b") == "infra-backend-v1"
    assert [(loc.path, loc.source.endswith("conditions)")) for loc in cfg.servers[0].locations] == [
        ("/a", False), ("/a", True), ("/", False)]


def test_proxy_pod_gets_its_gateways_config():
    pod = {"metadata": {"name": "same-namespace-netsim-abc", "namespace": NS,
                        "labels": {"gateway.networking.k8s.io/gateway-name": "same-namespace"}},
           "spec": {"containers": [{"name": "proxy", "image": "netsim/gateway-proxy"}]}}
    assert gateway.is_proxy_pod(pod)
    assert not gateway.is_proxy_pod({**pod, "spec": {"containers": [{"name": "x", "image": "nginx"}]}})
    services, slices = _infra()
    objects = {"Gateway": [_gateway()], "HTTPRoute": [_route("r", [_rule("infra-backend-v1")])],
               "Service": services, "EndpointSlice": slices, "Namespace": NAMESPACES}
    cfg = gateway.pod_config(pod, lambda k: objects.get(k, []))
    assert cfg.name == f"{NS}/same-namespace" and _backend(cfg, "/") == "infra-backend-v1"
    assert gateway.pod_config(pod, lambda k: [] if k == "Gateway" else objects.get(k, [])).servers == ()


def test_a_hosts_rules_come_first_then_the_wider_hosts():
    lis = [{"name": "http", "port": 80, "protocol": "HTTP"}]
    specific = _route("specific", [_rule("infra-backend-v1", "/x")], ["a.example.com"])
    wildcard = _route("wildcard", [_rule("infra-backend-v3", "/w")], ["*.example.com"])
    anyhost = _route("any", [_rule("infra-backend-v2", "/")])
    cfg = _config(_gateway(lis), [specific, wildcard, anyhost])
    assert _backend(cfg, "/x", host="a.example.com") == "infra-backend-v1"
    assert _backend(cfg, "/w", host="a.example.com") == "infra-backend-v3"  # its own rules leave /w open
    assert _backend(cfg, "/y", host="a.example.com") == "infra-backend-v2"
    assert _backend(cfg, "/x", host="b.example.com") == "infra-backend-v2"
    assert _backend(cfg, "/x", host="other.org") == "infra-backend-v2"
    # A host whose own rule covers a path keeps it, however long the wider host's path.
    everything = _route("everything", [_rule("infra-backend-v3", "/")], ["a.example.com"])
    cfg = _config(_gateway(lis), [specific, everything, _route("any", [_rule("infra-backend-v2", "/x/y")])])
    assert _backend(cfg, "/x/y", host="a.example.com") == "infra-backend-v1"
    assert _backend(cfg, "/z", host="a.example.com") == "infra-backend-v3"
