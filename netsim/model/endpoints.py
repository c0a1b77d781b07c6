"""A Service port's ready endpoints as its EndpointSlices list them: what an L7 proxy (an
ingress-nginx controller, a Gateway's proxy) sends requests to instead of the ClusterIP.

ingress-nginx's getEndpointsFromSlices: TCP slice ports; the slice port named as the Service
port (any, when the Service port has no name), else a numeric targetPort; endpoints whose
``ready`` condition is not false; each (address, port) once, in slice order.  Plain functions
over the store's dicts."""

from __future__ import annotations


def ready(service_port: dict, slices: list[dict]) -> list[tuple[str, int]]:
    """(address, port) of the ready endpoints of ``service_port`` in ``slices`` (the Service's own)."""
    target = service_port.get("targetPort", service_port.get("port"))
    out: list[tuple[str, int]] = []
    seen: set[tuple[str, int]] = set()
    for sl in sorted(slices, key=lambda s: s["metadata"]["name"]):
        ports: list[int] = []
        if not sl.get("ports") and isinstance(target, int):
            ports = [target]
        for p in sl.get("ports") or []:
            if p.get("protocol", "TCP") != "TCP":
                continue
            port = 0
            if not service_port.get("name") or service_port.get("name") == p.get("name"):
                port = p.get("port") or 0
            if not port and isinstance(target, int):
                port = target
            if port:
                ports.append(port)
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            for port in ports:
                for ip in ep.get("addresses") or []:
                    if (ip, port) not in seen:
                        seen.add((ip, port))
                        out.append((ip, int(port)))
    return out


def of_service(svc: dict, slices: list[dict]) -> list[dict]:
    """The slices of ``svc`` among ``slices`` (its namespace and kubernetes.io/service-name label)."""
    meta = svc["metadata"]
    ns, name = meta.get("namespace", "default"), meta["name"]
    return [sl for sl in slices if sl["metadata"].get("namespace", "default") == ns
            and (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == name]
