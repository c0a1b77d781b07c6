"""A Gateway and its HTTPRoutes as one proxy's ProxyConfig (netsim.node.ingress.routes), and
their status, as the Gateway API spec defines them (gateway-api @4564255, apis/v1).

Attachment, hostname intersection, backend resolution and the status conditions live in
netsim.controllers.gatewayapi (the controller writes the status; the proxy needs the same
answers).  Here: each (listener port, intersected hostname) becomes a Server with
wildcard="many", each (rule, match) a Location, ordered by the spec's precedence (HTTPRouteRule
doc): Exact path, then the longest path, then a method match, the most header matches, the most
query matches, then the oldest route, then namespace/name, then rule and match order.  The
locations are kept in that order; the first that matches answers (match.py, the renderer).

A rule without backendRefs and without a redirect answers 500, as does one whose backends all
fail to resolve or all weigh 0; a backend that does not resolve keeps its weight, with
``missing`` set, so that share of the requests gets 500.  No match is 404.
Pure but for PROXY, which registers Gateway proxy pods with the agent's nginx runner
(netsim.node.ingress.controller).  May use: netsim.controllers.{gateway,gatewayapi} and
netsim.node.ingress.{routes,controller}."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import replace

from netsim.controllers import gateway as gwc
from netsim.controllers import gatewayapi as gw
from netsim.model import names
from netsim.node.ingress.controller import ProxyKind
from netsim.node.ingress.routes import (
    TLS,
    Backend,
    Endpoint,
    HeaderMatch,
    HeaderModifier,
    Location,
    ProxyConfig,
    Redirect,
    Server,
)

DEFAULT_PATH = {"type": "PathPrefix", "value": "/"}
WELL_KNOWN = {"http": 80, "https": 443}


def _pairs(items: list[dict] | None) -> tuple[tuple[str, str], ...]:
    return tuple((h["name"], h.get("value", "")) for h in items or [])


def _filters(rule: dict) -> tuple[HeaderModifier | None, Redirect | None]:
    mod = red = None
    for f in rule.get("filters") or []:
        if f.get("type") == "RequestHeaderModifier" and mod is None:
            m = f.get("requestHeaderModifier") or {}
            mod = HeaderModifier(set=_pairs(m.get("set")), add=_pairs(m.get("add")),
                                 remove=tuple(m.get("remove") or ()))
        elif f.get("type") == "RequestRedirect" and red is None:
            r = f.get("requestRedirect") or {}
            scheme = r.get("scheme")
            # No port: the scheme's well-known port when the scheme changes, else the listener's
            # (None: the port the request came to).
            port = r.get("port") or (WELL_KNOWN.get(scheme) if scheme else None)
            path = r.get("path") or {}
            red = Redirect(scheme=scheme, hostname=r.get("hostname"), port=port,
                           path=path.get("replaceFullPath") if path.get("type") == "ReplaceFullPath" else None,
                           status=int(r.get("statusCode", 302)))
    return mod, red


def _backend(b: gw.ResolvedBackend) -> Backend:
    return Backend(upstream=f"{b.namespace}-{b.service}-{b.port}", namespace=b.namespace, service=b.service,
                   port=str(b.port), endpoints=tuple(Endpoint(ip, port) for ip, port in b.endpoints),
                   weight=b.weight, missing=b.message or None)


def _locations(route: dict, refs: list[list[gw.ResolvedBackend]]) -> list[tuple[tuple, Location]]:
    """(precedence key, Location) for every match of every rule of a route."""
    meta = route.get("metadata") or {}
    ns, name = meta.get("namespace") or "default", meta.get("name", "")
    out = []
    for ri, rule in enumerate((route.get("spec") or {}).get("rules") or []):
        mod, red = _filters(rule)
        backends = tuple(_backend(b) for b in refs[ri])
        live = any(b.weight > 0 and not b.reason for b in refs[ri])
        status = None if red is not None or live else 500
        for mi, m in enumerate(rule.get("matches") or [{}]):
            path = m.get("path") or DEFAULT_PATH
            ptype, value = path.get("type", "PathPrefix"), path.get("value", "/")
            seen: set[str] = set()
            headers = []
            for h in m.get("headers") or []:  # only the first of equivalent names counts
                if h["name"].lower() not in seen:
                    seen.add(h["name"].lower())
                    headers.append(HeaderMatch(h["name"], h.get("value", ""), h.get("type", "Exact")))
            query = [q for q in m.get("queryParams") or []]
            key = (0 if ptype == "Exact" else 1, -len(value), 0 if m.get("method") else 1, -len(headers), -len(query),
                   meta.get("creationTimestamp") or "", f"{ns}/{name}", ri, mi)
            loc = Location(path=value, match="Exact" if ptype == "Exact" else "Prefix",
                           backends=() if red is not None else backends,
                           source=f"HTTPRoute {ns}/{name} rule {ri} match {mi}", headers=tuple(headers),
                           method=m.get("method"), request_headers=mod, redirect=red, status=status,
                           query_params=tuple(HeaderMatch(q["name"], q.get("value", ""), q.get("type", "Exact"))
                                              for q in query))
            out.append((key, loc))
    return out


def _tls(secret: dict | None) -> TLS | None:
    if secret is None:
        return None
    data = secret.get("data") or {}

    def text(k: str) -> str:
        try:
            return base64.b64decode(data.get(k, "")).decode()
        except (ValueError, UnicodeDecodeError):
            return ""
    meta = secret.get("metadata") or {}
    return TLS(f"{meta.get('namespace', 'default')}/{meta.get('name', '')}", text("tls.crt"), text("tls.key"))


def _proxy_config(gateway: dict, routes: list[dict], c: gw.Computed) -> ProxyConfig:
    by_key = {((r.get("metadata") or {}).get("namespace") or "default", r["metadata"]["name"]): r for r in routes}
    # (port, hostname) -> [(key, Location)], with the listener's certificate
    found: dict[tuple[int, str], list[tuple[tuple, Location]]] = {}
    certs: dict[tuple[int, str], TLS | None] = {}
    for key, parents in c.parents.items():
        locs = _locations(by_key[key], c.refs[key])
        done: set[tuple[int, str]] = set()
        for p in parents:
            for lis, hosts in p.listeners:
                for h in hosts:
                    at = (lis.port, "_" if h == "*" else h)
                    if at in done:
                        continue  # a route attached twice to one port and host serves once
                    done.add(at)
                    found.setdefault(at, []).extend(locs)
                    if lis.protocol == "HTTPS":
                        certs.setdefault(at, _tls(lis.certificate))
    own = {at: [loc for _, loc in sorted(locs, key=lambda kl: kl[0])] for at, locs in found.items()}
    servers: dict[tuple, Server] = {}
    for (port, host) in found:
        locations = _with_fallbacks(own[(port, host)] + _from_wider_hosts(port, host, own))
        tls = certs.get((port, host))
        same = (host, locations, tls)
        prev = servers.get(same)
        servers[same] = Server(hostname=host, locations=locations, tls=tls, wildcard="many",
                               listeners=tuple(sorted({*(prev.listeners if prev else ()), port})))
    meta = gateway.get("metadata") or {}
    ordered = sorted(servers.values(), key=_server_order)
    # The proxy's own plain and TLS ports: the first HTTP and HTTPS listeners' (nginx terminates
    # TLS on https_port), else the defaults.
    ports = {p: next((s.port for s in c.listeners if s.protocol == p and s.usable), None) for p in gw.PROTOCOLS}
    return ProxyConfig(name=f"{meta.get('namespace', 'default')}/{meta.get('name', '')}", servers=tuple(ordered),
                       default_backend=None, no_match_status=404, http_port=ports["HTTP"] or 80,
                       https_port=ports["HTTPS"] or 443)


def _wider(host: str, other: str) -> bool:
    """Every request for ``host`` is also one for ``other`` (a wildcard or the catch-all)."""
    if other == "_":
        return host != "_"
    if not other.startswith("*.") or other == host:
        return False
    return gw._wild_match(other, host[2:] if host.startswith("*.") else host)


def _from_wider_hosts(port: int, host: str, own: dict[tuple[int, str], list[Location]]) -> list[Location]:
    """The rules of the wildcard and catch-all hosts a request for ``host`` also matches, for
    the paths ``host``'s own rules leave open.  The spec gives a route's hostname precedence
    (the most characters of an exact name, then of any) before the matches, so a request the
    host's rules do not take goes on to the wider hosts' rules; the proxy picks one server per
    Host, so they are repeated in it, after its own, unless one of its own unconditional rules
    already covers their path."""
    wider = sorted((h for p, h in own if p == port and _wider(host, h)), key=lambda h: (h == "_", -len(h)))
    taken = [loc for loc in own[(port, host)] if not _conditional(loc)]
    conditional = [loc for loc in own[(port, host)] if _conditional(loc)]
    out: list[Location] = []
    for h in wider:
        for loc in own[(port, h)]:
            if any(_covers(t, loc) for t in taken):
                continue
            # The narrower hosts' conditional rules that cover this path are tried before it
            # in its block (the proxy would pick an Exact block of a wider host first).
            out += [replace(c, path=loc.path, match=loc.match, source=f"{c.source} (at {loc.path})")
                    for c in conditional if _covers(c, loc)]
            out.append(replace(loc, source=f"{loc.source} (host {h})"))
        taken += [loc for loc in own[(port, h)] if not _conditional(loc)]
        conditional += [loc for loc in own[(port, h)] if _conditional(loc)]
    return out


def _conditional(loc: Location) -> bool:
    return bool(loc.headers or loc.method or loc.query_params)


def _covers(outer: Location, inner: Location) -> bool:
    """Every path ``inner`` matches, ``outer`` matches too (ignoring headers and method)."""
    if outer.match == "Exact":
        return inner.match == "Exact" and inner.path == outer.path
    base = outer.path.rstrip("/")
    p = inner.path.rstrip("/") if inner.match == "Prefix" else inner.path
    return base == "" or p == base or p.startswith(base + "/")


def _with_fallbacks(locations: list[Location]) -> tuple[Location, ...]:
    """The locations in precedence order, each path's conditional variants (headers, method,
    query) followed by the less specific locations that also match that path.  A proxy (and
    match.py) picks the path's own block first and tries its variants in order; the spec wants a
    request that fails them to go on to the next rule that matches (``/a`` with a header, else
    ``/``), so those rules are repeated in the block, after the variants, with its path."""
    out: list[Location] = []
    groups: dict[tuple[str, str], list[Location]] = {}
    for loc in locations:
        groups.setdefault((loc.match, loc.path.rstrip("/") or "/" if loc.match == "Prefix" else loc.path),
                          []).append(loc)
    for (_match, path), variants in groups.items():
        out += variants
        if any(not (v.headers or v.method or v.query_params) for v in variants):
            continue  # an unconditional variant: nothing after it is ever reached
        for later in locations[locations.index(variants[-1]) + 1:]:
            if later not in variants and _covers(later, variants[0]):
                out.append(replace(later, path=variants[0].path, match=variants[0].match,
                                   source=f"{later.source} (after {path}'s conditions)"))
                if not (later.headers or later.method or later.query_params):
                    break
    return tuple(out)


def _server_order(s: Server) -> tuple:
    """Exact hostnames first, then wildcards by length (the most specific first), the catch-all last."""
    if s.hostname == "_":
        return (2, 0, "", s.listeners)
    if s.hostname.startswith("*."):
        return (1, -len(s.hostname), s.hostname, s.listeners)
    return (0, 0, s.hostname, s.listeners)


def proxy_config(gateway: dict, routes: list[dict], grants: list[dict], services: list[dict], slices: list[dict],
                 secrets: list[dict], namespaces: list[dict]) -> ProxyConfig:
    """What the Gateway's proxy serves: routes are every HTTPRoute (those not naming this
    Gateway are ignored); grants the ReferenceGrants; the rest as the store has them."""
    mine = gw.routes_of(gateway, routes)
    return _proxy_config(gateway, mine, gw.compute(gateway, mine, grants, services, slices, secrets, namespaces))


def statuses(gateway: dict, routes: list[dict], grants: list[dict], services: list[dict], slices: list[dict],
             secrets: list[dict], namespaces: list[dict], addresses: list[str] = ()
             ) -> tuple[dict, dict[tuple[str, str], list[dict]]]:
    """(the Gateway's status, {(namespace, name): this Gateway's entries of the route's
    status.parents}), without lastTransitionTime (gatewayapi.merge_conditions adds them)."""
    mine = gw.routes_of(gateway, routes)
    c = gw.compute(gateway, mine, grants, services, slices, secrets, namespaces)
    return (gw.gateway_status(c, gateway, list(addresses)),
            {k: gw.parent_statuses(c, gateway, r) for r in mine
             for k in [((r.get("metadata") or {}).get("namespace") or "default", r["metadata"]["name"])]})


# -- the agent's side: Gateway proxy pods -----------------------------------------------------

PROXY_KINDS = ("Gateway", "HTTPRoute", "ReferenceGrant", "Service", "EndpointSlice", "Secret", "Namespace")


def is_proxy_pod(pod: dict) -> bool:
    """A Gateway's proxy pod (netsim.controllers.gateway makes them): image netsim/gateway-proxy
    and the gateway-name label naming its Gateway."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(gwc.NAME_LABEL)) and any(
        names.image_path(c.get("image") or "").endswith(gwc.PROXY_IMAGE)
        for c in (pod.get("spec") or {}).get("containers") or [])


def pod_config(pod: dict, objects: Callable[[str], list[dict]]) -> ProxyConfig:
    """The ProxyConfig of a Gateway proxy pod: its Gateway's (found by the pod's label in the
    pod's namespace); nothing but 404s while the Gateway is gone."""
    meta = pod["metadata"]
    name, ns = meta["labels"][gwc.NAME_LABEL], meta.get("namespace") or "default"
    g = next((o for o in objects("Gateway") if o["metadata"]["name"] == name
              and (o["metadata"].get("namespace") or "default") == ns), None)
    if g is None:
        return ProxyConfig(name=f"{ns}/{name}")
    return proxy_config(g, objects("HTTPRoute"), objects("ReferenceGrant"), objects("Service"),
                        objects("EndpointSlice"), objects("Secret"), objects("Namespace"))


PROXY = ProxyKind("gateway", is_proxy_pod, pod_config, kinds=PROXY_KINDS)
