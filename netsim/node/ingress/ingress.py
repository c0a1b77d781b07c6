"""Ingress, IngressClass, Service, EndpointSlice and Secret objects (the store's dicts, as kubectl
shows them) → the ProxyConfig one ingress-nginx controller serves.  Pure functions, no I/O; imports
routes.py only.

It follows ingress-nginx (internal/ingress/controller/controller.go, location.go, store.go and the
annotation parsers) where the API leaves room, and says where netsim differs:

- which Ingresses: ``spec.ingressClassName`` naming an IngressClass whose ``spec.controller`` is the
  controller's ``--controller-class``; else the legacy ``kubernetes.io/ingress.class`` annotation equal
  to ``--ingress-class``; else (no class at all) only with ``--watch-ingress-without-class``.  The API
  server's defaulting gives a new Ingress the default IngressClass, not the controller.
- oldest Ingress first (creationTimestamp; on a tie ``namespace/name`` descending, as store.go sorts):
  the oldest one's host server, root location, TLS certificate and same-path location win.
- ImplementationSpecific is Prefix (ingress-nginx's SetDefaultNGINXPathType); an empty path is ``/``.
- every server has a root ``/`` Prefix location: the rule's own ``/`` Prefix path, else the
  defaultBackend of the Ingress that created the server, else the controller's 404.
- Prefix ``/aaa/bbb/`` also matches ``/aaa/bbb`` (the API's table; ingress-nginx renders only
  ``= /aaa/bbb/``): a Prefix location keeps its path as written and match.py's rendering rule turns
  it into ``location /aaa/bbb/`` + ``location = /aaa/bbb``.
- a server any of whose locations uses ``rewrite-target`` or ``use-regex`` has every location as
  Regex (``~* "^path"``, Exact ones included, as enforceRegexModifier does): Prefix paths there are
  expanded the way updateServerLocations does (``/foo/`` then ``/foo``), longest first.
- canary Ingresses serve nothing alone: their backend becomes a Canary of every location whose
  backend is the primary upstream of the same host+path (only the first canary counts, as
  balancer.lua uses alternative_backends[1]).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field, replace

from netsim.model import endpoints
from netsim.model.ingress_nginx import ControllerArgs, served
from netsim.node.ingress.routes import TLS, Backend, Canary, Endpoint, Location, ProxyConfig, Redirect, Server

DEFAULT_ARGS = ControllerArgs()
PREFIX = "nginx.ingress.kubernetes.io/"
CATCH_ALL = "_"
DEFAULT_UPSTREAM = "upstream-default-backend"
AFFINITY_COOKIE = "INGRESSCOOKIE"

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


# ---------------------------------------------------------------------------------------------
# Ingresses in the order ingress-nginx takes them (which ones it serves: netsim.model.ingress_nginx)


def ordered(ingresses: list[dict]) -> list[dict]:
    """Oldest first; on equal creationTimestamp ``namespace/name`` descending (store.go sortIngressSlice)."""
    by_name = sorted(ingresses, key=key, reverse=True)
    return sorted(by_name, key=lambda i: i["metadata"].get("creationTimestamp") or "")


def key(obj: dict) -> str:
    """``namespace/name``, as ingress-nginx names an Ingress."""
    return f"{obj['metadata'].get('namespace', 'default')}/{obj['metadata']['name']}"


# ---------------------------------------------------------------------------------------------
# Annotations


def _bool(anns: dict, name: str, default: bool) -> bool:
    v = anns.get(PREFIX + name)
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return default  # missing or invalid: the parser's default, as upstream


def _int(anns: dict, name: str, default: int) -> int:
    try:
        return int(anns.get(PREFIX + name, default))
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class Annotations:
    rewrite_target: str = ""
    use_regex: bool = False
    ssl_redirect: bool = True
    force_ssl_redirect: bool = False
    backend_protocol: str = "HTTP"
    canary: bool = False
    canary_header: str = ""
    canary_header_value: str = ""
    canary_header_pattern: str = ""
    canary_cookie: str = ""
    canary_weight: int = 0
    canary_weight_total: int = 100
    affinity_cookie: str | None = None
    default_backend: str = ""
    service_upstream: bool = False
    app_root: str = ""


def annotations(ing: dict) -> Annotations:
    a = ing["metadata"].get("annotations") or {}

    def s(name: str) -> str:
        return str(a.get(PREFIX + name, "")).strip()

    proto = s("backend-protocol").upper() or "HTTP"
    canary = _bool(a, "canary", False)
    affinity = None
    if s("affinity") == "cookie":
        affinity = s("session-cookie-name") or AFFINITY_COOKIE
    app_root = s("app-root")
    if app_root and (not app_root.startswith("/") or "://" in app_root):
        app_root = ""  # url.ParseRequestURI + IsAbs: only an absolute path
    return Annotations(
        rewrite_target=s("rewrite-target"), use_regex=_bool(a, "use-regex", False),
        ssl_redirect=_bool(a, "ssl-redirect", True), force_ssl_redirect=_bool(a, "force-ssl-redirect", False),
        backend_protocol=proto if proto in ("HTTP", "HTTPS") else "HTTP",
        canary=canary, canary_header=s("canary-by-header"), canary_header_value=s("canary-by-header-value"),
        canary_header_pattern=s("canary-by-header-pattern"), canary_cookie=s("canary-by-cookie"),
        canary_weight=_int(a, "canary-weight", 0), canary_weight_total=_int(a, "canary-weight-total", 100),
        affinity_cookie=affinity, default_backend=s("default-backend"),
        service_upstream=_bool(a, "service-upstream", False), app_root=app_root)


# ---------------------------------------------------------------------------------------------
# Backends: a Service port → ready EndpointSlice addresses


class _Cluster:
    """The objects the translation looks up, indexed once."""

    def __init__(self, services: list[dict], slices: list[dict], secrets: list[dict]) -> None:
        self.services = {(s["metadata"].get("namespace", "default"), s["metadata"]["name"]): s for s in services}
        self.slices: dict[tuple[str, str], list[dict]] = {}
        for sl in slices:
            svc = (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
            if svc:
                self.slices.setdefault((sl["metadata"].get("namespace", "default"), svc), []).append(sl)
        self.secrets = {(s["metadata"].get("namespace", "default"), s["metadata"]["name"]): s for s in secrets}


def _port_ref(ref: dict) -> str:
    port = ref.get("port") or {}
    if port.get("number"):
        return str(port["number"])
    return str(port.get("name", ""))


def upstream_name(namespace: str, ref: dict) -> str:
    """ingress-nginx's upstream name: ``<namespace>-<service>-<port number or name>``."""
    port = _port_ref(ref)
    return f"{namespace}-{ref.get('name', '')}-{port}" if port else f"{namespace}-INVALID"


def _endpoints(cluster: _Cluster, ns: str, svc: dict, sport: dict) -> tuple[Endpoint, ...]:
    """The ready endpoints (netsim.model.endpoints); an ExternalName Service's name as its one."""
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        target = sport.get("targetPort", sport.get("port"))
        return (Endpoint(spec.get("externalName", ""), int(target) if isinstance(target, int) else 0),)
    slices = cluster.slices.get((ns, svc["metadata"]["name"]), [])
    return tuple(Endpoint(ip, port) for ip, port in endpoints.ready(sport, slices))


def _service_port(svc: dict, port: str) -> dict | None:
    """serviceEndpoints: the Service port whose number, targetPort or name is the one referenced."""
    for p in (svc.get("spec") or {}).get("ports") or []:
        if str(p.get("port")) == port or str(p.get("targetPort", "")) == port or p.get("name") == port:
            return p
    return None


def _backend(cluster: _Cluster, ns: str, ref: dict, ann: Annotations) -> Backend:
    name, port = ref.get("name", ""), _port_ref(ref)
    up = upstream_name(ns, ref)
    base = Backend(upstream=up, namespace=ns, service=name, port=port, protocol=ann.backend_protocol)  # type: ignore[arg-type]
    svc = cluster.services.get((ns, name))
    if svc is None:
        return replace(base, missing=f"no Service {ns}/{name}")
    if ann.service_upstream:
        cip = (svc.get("spec") or {}).get("clusterIP")
        sport = _service_port(svc, port) if not port.isdigit() else {"port": int(port)}
        if cip and cip != "None" and sport:
            return replace(base, endpoints=(Endpoint(cip, int(sport["port"])),), cluster_ip=f"{cip}:{sport['port']}")
    sport = _service_port(svc, port)
    if sport is None:
        return replace(base, missing=f"Service {ns}/{name} has no port {port}")
    eps = _endpoints(cluster, ns, svc, sport)
    return replace(base, endpoints=eps, missing=None if eps else f"Service {ns}/{name} has no ready endpoint")


# ---------------------------------------------------------------------------------------------
# Servers and locations


@dataclass
class _Loc:
    path: str
    kind: str  # the Ingress pathType after SetDefaultNGINXPathType: Exact or Prefix
    backend: Backend | None  # None: the controller's default backend (404)
    ann: Annotations
    source: str
    ing: dict | None
    is_default: bool = False


@dataclass
class _Server:
    hostname: str
    locs: list[_Loc]
    tls: TLS | None = None
    notes: list[str] = field(default_factory=list)


def _tls(cluster: _Cluster, ing: dict, host: str) -> TLS | None:
    """extractTLSSecretName: the secret listing this host; a TLS section that does not name one, or
    a secret that is missing or incomplete, gets the controller's self-signed fallback."""
    tls_list = (ing.get("spec") or {}).get("tls") or []
    if not tls_list:
        return None
    ns = ing["metadata"].get("namespace", "default")
    name = next((t.get("secretName", "") for t in tls_list
                 if host.lower() in [h.lower() for h in t.get("hosts") or []]), "")
    fallback = TLS(secret="", cert_pem="", key_pem="")
    secret = cluster.secrets.get((ns, name)) if name else None
    if secret is None:
        return fallback
    data = {k: _b64(v) for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    if not data.get("tls.crt") or not data.get("tls.key"):
        return fallback
    return TLS(secret=f"{ns}/{name}", cert_pem=data["tls.crt"], key_pem=data["tls.key"])


def _b64(v: str) -> str:
    try:
        return base64.b64decode(v).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return ""


def _rules(ing: dict) -> list[dict]:
    return (ing.get("spec") or {}).get("rules") or []


def _paths(rule: dict) -> list[dict]:
    return ((rule.get("http") or {}).get("paths")) or []


def proxy_config(name: str, ingresses: list[dict], classes: list[dict], services: list[dict],
                 slices: list[dict], secrets: list[dict], *, args: ControllerArgs = DEFAULT_ARGS) -> ProxyConfig:
    """What the ingress-nginx controller ``name`` running with ``args`` serves, from the store's objects."""
    cluster = _Cluster(services, slices, secrets)
    extra: dict[str, str] = {}
    ings = []
    for ing in ordered(ingresses):
        ok, why = served(ing, classes, args)
        if ok:
            ings.append(ing)
        else:
            extra[f"ignored Ingress {key(ing)}"] = why
    anns = {key(i): annotations(i) for i in ings}
    mains = [i for i in ings if not anns[key(i)].canary]
    canaries = [i for i in ings if anns[key(i)].canary]

    def backend_of(ing: dict, ref: dict) -> Backend:
        return _backend(cluster, ing["metadata"].get("namespace", "default"), ref, anns[key(ing)])

    servers: dict[str, _Server] = {
        CATCH_ALL: _Server(CATCH_ALL, [_Loc("/", "Prefix", None, Annotations(), "the controller's default backend",
                                            None, True)])}
    default_backend: Backend | None = None
    # createServers: a server per host, its root location from the Ingress that first names it.
    for ing in mains:
        a = anns[key(ing)]
        dflt = None
        ref = ((ing.get("spec") or {}).get("defaultBackend") or {}).get("service")
        if ref:
            dflt = backend_of(ing, ref)
            root = servers[CATCH_ALL].locs[0]
            if root.is_default and not _rules(ing):
                # An Ingress with a backend and no rule: the catch-all's backend (without its
                # rewrite/redirect annotations, as upstream).
                servers[CATCH_ALL].locs[0] = _Loc("/", "Prefix", dflt, replace(a, rewrite_target="", use_regex=False,
                                                                             app_root=""),
                                                  f"defaultBackend of Ingress {key(ing)}", ing)
                default_backend = dflt  # no longer the default location: a later "/" rule for "_" conflicts
        for rule in _rules(ing):
            host = rule.get("host") or CATCH_ALL
            if host in servers:
                continue
            src = f"defaultBackend of Ingress {key(ing)}" if dflt else \
                f"no path matched: the controller's default backend (server created by Ingress {key(ing)})"
            servers[host] = _Server(host, [_Loc("/", "Prefix", dflt, a, src, ing, True)])
    # TLS: the oldest Ingress that has a TLS section for the host.
    for ing in mains:
        for rule in _rules(ing):
            host = rule.get("host") or CATCH_ALL
            if host != CATCH_ALL and servers[host].tls is None:
                servers[host].tls = _tls(cluster, ing, host)
    # getBackendServers: the paths.
    affinity: dict[str, str] = {}
    for ing in mains:
        a = anns[key(ing)]
        for ri, rule in enumerate(_rules(ing)):
            host = rule.get("host") or CATCH_ALL
            server = servers.get(host) or servers[CATCH_ALL]
            for pi, p in enumerate(_paths(rule)):
                ref = (p.get("backend") or {}).get("service")
                path = p.get("path") or "/"
                kind = "Exact" if p.get("pathType") == "Exact" else "Prefix"
                where = f"Ingress {key(ing)} rule {ri} path {pi} ({p.get('pathType') or 'Prefix'} {path})"
                if not ref:
                    server.notes.append(f"{where}: not a Service backend, ignored")
                    continue
                if not path.startswith("/"):
                    server.notes.append(f"{where}: a path must start with '/', ignored")
                    continue
                b = backend_of(ing, ref)
                if a.affinity_cookie:
                    affinity.setdefault(b.upstream, a.affinity_cookie)
                same = next((x for x in server.locs if x.kind == kind and _same_path(x.path, path, kind)), None)
                if same is None:
                    server.locs.append(_Loc(path, kind, b, a, where, ing))
                elif same.is_default and same.path == path:
                    server.locs[server.locs.index(same)] = _Loc(path, kind, b, a, where, ing)
                else:
                    server.notes.append(f"{where}: {same.path} ({same.kind}) already served by {same.source}")
    # Canaries: attached to the primary upstream of the same host and path.
    alternatives: dict[str, Canary] = {}
    for ing in canaries:
        a = anns[key(ing)]
        pairs: list[tuple[str, str, str, dict]] = []
        ref = ((ing.get("spec") or {}).get("defaultBackend") or {}).get("service")
        if ref:
            pairs.append((CATCH_ALL, "", "", ref))
        for rule in _rules(ing):
            for p in _paths(rule):
                if (p.get("backend") or {}).get("service"):
                    pairs.append((rule.get("host") or CATCH_ALL, p.get("path") or "/",
                                  "Exact" if p.get("pathType") == "Exact" else "Prefix", p["backend"]["service"]))
        for host, path, kind, ref in pairs:
            alt = backend_of(ing, ref)
            server = servers.get(host)
            if server is None:
                extra[f"canary Ingress {key(ing)}"] = f"host {host}: no main Ingress serves it, canary dropped"
                continue
            merged = False
            for loc in server.locs:
                if loc.backend is None:
                    continue
                if loc.backend.upstream == alt.upstream:
                    break
                if not path or (loc.path == path and loc.kind == kind):
                    alternatives.setdefault(loc.backend.upstream, Canary(
                        backend=alt, header=a.canary_header or None, header_value=a.canary_header_value or None,
                        header_pattern=a.canary_header_pattern or None, cookie=a.canary_cookie or None,
                        weight=a.canary_weight, weight_total=max(a.canary_weight_total, 100)))
                    merged = True
            if not merged:
                extra[f"canary Ingress {key(ing)} {host}{path}"] = "no main location with the same host and path"
    # default-backend annotation: a location whose Service has no endpoint uses it instead.
    for server in servers.values():
        for loc in server.locs:
            if loc.ann.default_backend and loc.backend is not None and not loc.backend.endpoints and loc.ing:
                ns = loc.ing["metadata"].get("namespace", "default")
                svc = cluster.services.get((ns, loc.ann.default_backend))
                ports = ((svc or {}).get("spec") or {}).get("ports") or []
                eps = _endpoints(cluster, ns, svc, ports[0]) if svc and ports else ()
                if eps:
                    loc.backend = Backend(upstream=f"custom-default-backend-{ns}-{loc.ann.default_backend}",
                                          namespace=ns, service=loc.ann.default_backend, port=str(ports[0]["port"]),
                                          endpoints=eps, protocol=loc.backend.protocol)
                    loc.source += f" (its Service has no endpoint: default-backend {loc.ann.default_backend})"
    out = tuple(_server(s, servers, alternatives, affinity) for s in sorted(servers.values(), key=lambda s: s.hostname))
    for s in servers.values():
        for i, note in enumerate(s.notes):
            extra[f"server {s.hostname} note {i}"] = note
    return ProxyConfig(name=name, servers=out, default_backend=default_backend, extra=extra)


def _same_path(a: str, b: str, kind: str) -> bool:
    # Prefix /foo and /foo/ render the same nginx location: the older one keeps it.
    return a == b if kind == "Exact" else (a.rstrip("/") or "/") == (b.rstrip("/") or "/")


def _cert_for(servers: dict[str, _Server], host: str) -> bool:
    """certificate.lua configured_for_current_request: the host's own server, else the one-label
    wildcard's, has a certificate."""
    s = servers.get(host)
    if s is not None and s.tls is not None:
        return True
    wild = re.sub(r"^[^.]+\.", "*.", host, count=1)
    return wild != host and servers.get(wild) is not None and servers[wild].tls is not None


def _needs_rewrite(loc: _Loc) -> bool:
    return bool(loc.ann.rewrite_target) and loc.ann.rewrite_target != loc.path


def _server(s: _Server, servers: dict[str, _Server], alternatives: dict[str, Canary],
            affinity: dict[str, str]) -> Server:
    # getBackendServers' sort: path descending, then (stable) longest first; an Exact before a
    # Prefix of the same path, so that a renderer keeping the first of duplicate blocks gives the
    # "= path" to the Exact, as updateServerLocations does.
    locs = sorted(s.locs, key=lambda x: (x.path, x.kind == "Exact"), reverse=True)
    locs.sort(key=lambda x: len(x.path), reverse=True)
    regex = any(_needs_rewrite(x) or x.ann.use_regex for x in locs)
    cert = s.hostname != CATCH_ALL and _cert_for(servers, s.hostname)
    out: list[Location] = []
    app_root = next((x for x in locs if x.ann.app_root), None)
    if app_root is not None:
        out.append(Location(path="/", match="Exact", redirect=Redirect(path=app_root.ann.app_root, status=302),
                            source=f"app-root of Ingress {key(app_root.ing)}" if app_root.ing else "app-root"))
    exact_paths = {x.path for x in locs if x.kind == "Exact"}
    for x in locs:
        backends = (x.backend,) if x.backend is not None else ()
        canary = alternatives.get(x.backend.upstream) if x.backend is not None else None
        loc = Location(path=x.path, match=x.kind, backends=backends, source=x.source,  # type: ignore[arg-type]
                       rewrite_target=x.ann.rewrite_target if _needs_rewrite(x) else None,
                       canaries=(canary,) if canary else (),
                       affinity_cookie=affinity.get(x.backend.upstream) if x.backend is not None else None,
                       ssl_redirect=x.ann.force_ssl_redirect or (x.ann.ssl_redirect and cert),
                       status=None if x.backend is not None else 404)
        if not regex:
            out.append(loc)
            continue
        # enforceRegexModifier: every location is "~* ^path"; updateServerLocations has expanded
        # the plain Prefix ones into "path/" and the exact "path" (netsim: without its slash).
        if x.kind == "Prefix" and x.path != "/" and not (_needs_rewrite(x) or x.ann.use_regex):
            base = x.path.rstrip("/")
            out.append(replace(loc, path=base + "/", match="Regex"))
            if base not in exact_paths:
                out.append(replace(loc, path=base, match="Regex"))
        else:
            out.append(replace(loc, match="Regex"))
    return Server(hostname=s.hostname, locations=tuple(out), tls=s.tls)
