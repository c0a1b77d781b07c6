"""What `netsim describe ingress` shows, as kubectl's IngressDescriber (describeIngressV1) does:
address, class, default backend, TLS, then the rules, one host with its paths and backends,
each backend with the ready endpoints of its Service port ("web:80 (10.244.1.5:8080,...)").

Endpoints come from the Service's EndpointSlices, as kubectl's formatEndpointSlices lists them:
the ready addresses of the Service port the backend names, the first three then "+ N more...",
"<none>" when the Service has no slice (and nothing when its slices hold no ready address).
Reads the store; prints nothing.
"""

from __future__ import annotations

from netsim.api.store import NotFound, Store
from netsim.model import k8s

MAX_ENDPOINTS = 3


def _service_port_name(svc: dict, port: dict) -> str | None:
    """The name of the Service port the backend refers to ("" for an unnamed one), None if none."""
    found = None
    for sp in (svc.get("spec") or {}).get("ports") or []:
        if port.get("number") and port["number"] == sp.get("port"):
            found = sp.get("name") or ""
        elif port.get("name") and port["name"] == sp.get("name"):
            found = sp["name"]
    return found


def _endpoints(store: Store, namespace: str, svc: dict, port_name: str | None) -> str:
    slices = [s for s in store.list(k8s.prefix("EndpointSlice", namespace))[0]
              if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == svc["metadata"]["name"]]
    if not slices:
        return "<none>"
    listed: list[str] = []
    count, more = 0, False
    for s in slices:
        for p in s.get("ports") or []:
            if (p.get("name") or "") != (port_name or ""):
                continue
            for e in s.get("endpoints") or []:
                # as kubectl: "more" once the list is full and another endpoint follows, ready or
                # not; the count is of ready ones (ready unset counts as ready)
                more = more or len(listed) == MAX_ENDPOINTS
                if not (e.get("conditions") or {}).get("ready", True) or not e.get("addresses"):
                    continue
                addr = e["addresses"][0]
                if not more:
                    listed.append(f"[{addr}]:{p.get('port')}" if ":" in addr else f"{addr}:{p.get('port')}")
                count += 1
    return ",".join(listed) + (f" + {count - MAX_ENDPOINTS} more..." if more else "")


def backend(store: Store, namespace: str, b: dict) -> str:
    """describeBackendV1: "svc:port (endpoints)", or a resource backend's reference."""
    service = b.get("service")
    if isinstance(service, dict):
        port = service.get("port") or {}
        shown = f"{service.get('name')}:{port.get('name') or port.get('number', 0)}"
        try:
            svc = store.get(k8s.key("Service", namespace, service.get("name") or ""))
        except NotFound:
            # kubectl (1.32) reads the Service before its EndpointSlices: that is the error it shows
            return f'{shown} (<error: services "{service.get("name")}" not found>)'
        return f"{shown} ({_endpoints(store, namespace, svc, _service_port_name(svc, port))})"
    resource = b.get("resource")
    if isinstance(resource, dict):
        return (f"APIGroup: {resource.get('apiGroup') or '<none>'}, Kind: {resource.get('kind')}, "
                f"Name: {resource.get('name')}")
    return ""


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(len(r) for r in rows))]
    return [(indent + "  ".join(c.ljust(widths[i]) for i, c in enumerate(r))).rstrip() for r in rows]


def describe(store: Store, ing: dict) -> tuple[list[tuple[str, str]], list[str]]:
    """(field, value) lines after Name/Namespace/Labels, and the TLS, Rules and Annotations
    blocks as text lines."""
    ns = ing["metadata"].get("namespace", "default")
    spec = ing.get("spec") or {}
    lb = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    address = ",".join(sorted({a.get("ip") or a.get("hostname") for a in lb} - {None, ""}))
    default = backend(store, ns, spec["defaultBackend"]) if spec.get("defaultBackend") else "<default>"
    fields = [("Address", address), ("Ingress Class", spec.get("ingressClassName") or "<none>"),
              ("Default backend", default)]
    out: list[str] = []
    if spec.get("tls"):
        out.append("TLS:")
        for t in spec["tls"]:
            hosts = ",".join(t.get("hosts") or [])
            out.append(f"  {t['secretName']} terminates {hosts}" if t.get("secretName") else f"  SNI routes {hosts}")
    rows = [["Host", "Path", "Backends"], ["----", "----", "--------"]]
    served = False
    for rule in spec.get("rules") or []:
        if not rule.get("http"):
            continue
        served = True
        rows.append([rule.get("host") or "*", "", ""])
        for p in rule["http"].get("paths") or []:
            rows.append(["", p.get("path") or "", backend(store, ns, p.get("backend") or {})])
    if not served:
        rows.append(["*", "*", default])
    out += ["Rules:", *_table(rows)]
    annotations = ing["metadata"].get("annotations") or {}
    out.append("Annotations:  " + ("\n              ".join(f"{k}: {v}" for k, v in sorted(annotations.items()))
                                   or "<none>"))
    return fields, out
