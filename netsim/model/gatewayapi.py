"""The Gateway API kinds' defaults and validation, as gateway-api's standard CRDs declare them
(config/crd/standard @4564255: the OpenAPI defaults and the x-kubernetes-validations rules that
matter for GatewayClass, Gateway, HTTPRoute and ReferenceGrant), for netsim serving them as
built-in kinds.  Pure functions on the JSON document.  May use: the standard library."""

from __future__ import annotations

import re

GROUP = "gateway.networking.k8s.io"
KINDS = ("GatewayClass", "Gateway", "HTTPRoute", "ReferenceGrant")
HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
SECTION_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
PROTOCOL = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]"
                      r"([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]+$")
PENDING = {"lastTransitionTime": "1970-01-01T00:00:00Z", "message": "Waiting for controller", "reason": "Pending",
           "status": "Unknown"}


def _dicts(v) -> list[dict]:
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def _default_path() -> dict:
    return {"path": {"type": "PathPrefix", "value": "/"}}


def defaults(obj: dict) -> dict:
    """The CRDs' defaults, in place (only where the writer left the field out)."""
    kind, spec = obj.get("kind"), obj.get("spec")
    if not isinstance(spec, dict):
        return obj
    if kind == "GatewayClass":
        obj.setdefault("status", {"conditions": [{**PENDING, "type": "Accepted"}]})
    elif kind == "Gateway":
        for lis in _dicts(spec.get("listeners")):
            ar = lis.setdefault("allowedRoutes", {"namespaces": {"from": "Same"}})
            if isinstance(ar, dict):
                ns = ar.setdefault("namespaces", {"from": "Same"})
                if isinstance(ns, dict):
                    ns.setdefault("from", "Same")
                for k in _dicts(ar.get("kinds")):
                    k.setdefault("group", GROUP)
            tls = lis.get("tls")
            if isinstance(tls, dict):
                tls.setdefault("mode", "Terminate")
                for ref in _dicts(tls.get("certificateRefs")):
                    ref.setdefault("group", "")
                    ref.setdefault("kind", "Secret")
        obj.setdefault("status", {"conditions": [{**PENDING, "type": "Accepted"}, {**PENDING, "type": "Programmed"}]})
    elif kind == "HTTPRoute":
        for ref in _dicts(spec.get("parentRefs")):
            ref.setdefault("group", GROUP)
            ref.setdefault("kind", "Gateway")
        if "rules" not in spec:
            spec["rules"] = [{"matches": [_default_path()]}]
        for rule in _dicts(spec.get("rules")):
            if "matches" not in rule:
                rule["matches"] = [_default_path()]
            for m in _dicts(rule.get("matches")):
                path = m.setdefault("path", _default_path()["path"])
                if isinstance(path, dict):
                    path.setdefault("type", "PathPrefix")
                    path.setdefault("value", "/")
                for h in _dicts(m.get("headers")) + _dicts(m.get("queryParams")):
                    h.setdefault("type", "Exact")
            for b in _dicts(rule.get("backendRefs")):
                b.setdefault("group", "")
                b.setdefault("kind", "Service")
                b.setdefault("weight", 1)
            for f in _dicts(rule.get("filters")):
                if isinstance(f.get("requestRedirect"), dict):
                    f["requestRedirect"].setdefault("statusCode", 302)
    return obj


def _unique(items: list, what: str, at: str, out: list[tuple[str, str]], key=lambda x: x) -> None:
    seen = set()
    for i, x in enumerate(items):
        k = key(x)
        if k in seen:
            out.append((f"{at}[{i}]", f"{what} {k!r} is used twice; {what}s must be unique"))
        seen.add(k)


def _headers(items, at: str, out: list[tuple[str, str]], field: str = "name") -> None:
    for i, h in enumerate(items):
        name = h.get(field) if isinstance(h, dict) else h
        if not isinstance(name, str) or not HEADER_NAME.match(name):
            out.append((f"{at}[{i}]" + (f".{field}" if isinstance(h, dict) else ""),
                        f"invalid header name {name!r}: use letters, digits and !#$%&'*+-.^_`|~"))


def _gateway(spec: dict, out: list[tuple[str, str]]) -> None:
    if not spec.get("gatewayClassName"):
        out.append(("spec.gatewayClassName", "Required value: name the GatewayClass (netsim's is \"netsim\")"))
    listeners = spec.get("listeners")
    if not isinstance(listeners, list) or not listeners:
        out.append(("spec.listeners", "Required value: a Gateway needs at least one listener"))
        return
    _unique([lis.get("name") for lis in _dicts(listeners)], "listener name", "spec.listeners", out)
    _unique([(lis.get("port"), lis.get("protocol"), lis.get("hostname") or "") for lis in _dicts(listeners)],
            "combination of port, protocol and hostname", "spec.listeners", out)
    for i, lis in enumerate(_dicts(listeners)):
        at = f"spec.listeners[{i}]"
        if not isinstance(lis.get("name"), str) or not SECTION_NAME.match(lis["name"]):
            out.append((f"{at}.name", "Required value: a lowercase name (letters, digits, '-' and '.')"))
        port = lis.get("port")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            out.append((f"{at}.port", "use a port number from 1 to 65535"))
        proto = lis.get("protocol")
        if not isinstance(proto, str) or not PROTOCOL.match(proto):
            out.append((f"{at}.protocol", "Required value: HTTP or HTTPS (netsim's gateway serves those two)"))
        host = lis.get("hostname")
        if host is not None and (not isinstance(host, str) or not HOSTNAME.match(host)):
            out.append((f"{at}.hostname", f"invalid hostname {host!r}: a DNS name, or *. and a DNS name"))
        tls = lis.get("tls")
        if proto in ("HTTP", "TCP", "UDP") and tls is not None:
            out.append((f"{at}.tls", "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']"))
        if proto == "HTTPS":
            refs = (tls or {}).get("certificateRefs") if isinstance(tls, dict) else None
            if not refs:
                out.append((f"{at}.tls.certificateRefs", "certificateRefs must be specified for protocol HTTPS "
                            "(name a kubernetes.io/tls Secret)"))
        nss = ((lis.get("allowedRoutes") or {}).get("namespaces") or {})
        if nss.get("from") not in (None, "All", "Same", "Selector", "None"):
            out.append((f"{at}.allowedRoutes.namespaces.from", "use All, Same, Selector or None"))
        if nss.get("from") == "Selector" and not isinstance(nss.get("selector"), dict):
            out.append((f"{at}.allowedRoutes.namespaces.selector", "Required value when from is Selector"))


def _route(spec: dict, out: list[tuple[str, str]]) -> None:
    for i, h in enumerate(spec.get("hostnames") or []):
        if not isinstance(h, str) or not HOSTNAME.match(h):
            out.append((f"spec.hostnames[{i}]", f"invalid hostname {h!r}: a DNS name, or *. and a DNS name"))
    for i, ref in enumerate(_dicts(spec.get("parentRefs"))):
        if not ref.get("name"):
            out.append((f"spec.parentRefs[{i}].name", "Required value: the Gateway's name"))
    for r, rule in enumerate(_dicts(spec.get("rules"))):
        at = f"spec.rules[{r}]"
        for m, match in enumerate(_dicts(rule.get("matches"))):
            path = match.get("path") or {}
            where = f"{at}.matches[{m}]"
            if path.get("type", "PathPrefix") not in ("Exact", "PathPrefix", "RegularExpression"):
                out.append((f"{where}.path.type", "use Exact, PathPrefix or RegularExpression"))
            value = path.get("value", "/")
            if path.get("type", "PathPrefix") in ("Exact", "PathPrefix") and (
                    not isinstance(value, str) or not value.startswith("/") or "//" in value):
                out.append((f"{where}.path.value", "must be an absolute path (start with '/', no '//')"))
            _headers(_dicts(match.get("headers")), f"{where}.headers", out)
            _unique([str(h.get("name", "")).lower() for h in _dicts(match.get("headers"))], "header name",
                    f"{where}.headers", out)
            for h, hm in enumerate(_dicts(match.get("headers"))):
                if hm.get("type", "Exact") not in ("Exact", "RegularExpression"):
                    out.append((f"{where}.headers[{h}].type", "use Exact or RegularExpression"))
        types = [f.get("type") for f in _dicts(rule.get("filters"))]
        for t in ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite"):
            if types.count(t) > 1:
                out.append((f"{at}.filters", f"{t} filter cannot be repeated"))
        if "RequestRedirect" in types and "URLRewrite" in types:
            out.append((f"{at}.filters", "May specify either httpRouteFilterRequestRedirect or "
                        "httpRouteFilterRequestRewrite, but not both"))
        if "RequestRedirect" in types and rule.get("backendRefs"):
            out.append((f"{at}", "RequestRedirect filter must not be used together with backendRefs"))
        for f, flt in enumerate(_dicts(rule.get("filters"))):
            mod = flt.get("requestHeaderModifier")
            if isinstance(mod, dict):
                fat = f"{at}.filters[{f}].requestHeaderModifier"
                for part in ("set", "add"):
                    _headers(_dicts(mod.get(part)), f"{fat}.{part}", out)
                    _unique([h.get("name") for h in _dicts(mod.get(part))], "header name", f"{fat}.{part}", out)
                _headers(list(mod.get("remove") or []), f"{fat}.remove", out)
            red = flt.get("requestRedirect")
            if isinstance(red, dict) and red.get("statusCode", 302) not in (301, 302, 303, 307, 308):
                out.append((f"{at}.filters[{f}].requestRedirect.statusCode", "use 301, 302, 303, 307 or 308"))
        for b, ref in enumerate(_dicts(rule.get("backendRefs"))):
            if ref.get("group", "") == "" and ref.get("kind", "Service") == "Service" and ref.get("port") is None:
                out.append((f"{at}.backendRefs[{b}].port", "Must have port for Service reference"))
            w = ref.get("weight", 1)
            if not isinstance(w, int) or not 0 <= w <= 1000000:
                out.append((f"{at}.backendRefs[{b}].weight", "use a whole number from 0 to 1000000"))


def problems(obj: dict) -> list[tuple[str, str]]:
    """(field path, message) for what the CRDs' schema and rules refuse; [] when it is fine."""
    kind, spec = obj.get("kind"), obj.get("spec")
    out: list[tuple[str, str]] = []
    if kind not in KINDS:
        return out
    if not isinstance(spec, dict):
        return [("spec", "Required value")]
    if kind == "GatewayClass" and not spec.get("controllerName"):
        out.append(("spec.controllerName", "Required value: the controller that serves this class"))
    elif kind == "Gateway":
        _gateway(spec, out)
    elif kind == "HTTPRoute":
        _route(spec, out)
    elif kind == "ReferenceGrant":
        for part in ("from", "to"):
            if not _dicts(spec.get(part)):
                out.append((f"spec.{part}", "Required value: at least one entry"))
    return out
