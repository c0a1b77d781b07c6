"""`netsim trace` through an L7 proxy (an ingress-nginx controller or a Gateway's proxy pod).

A proxy ends the client's connection and opens its own to the backend, so one packet cannot be
followed through it.  When the traced packet is delivered to a proxy pod, the trace goes on in
three steps: what the proxy decides for the request (netsim.node.ingress.match over the same
ProxyConfig its nginx is rendered from: server, location, rewrite, upstream), one real HTTP
request from the same source (the echo of the pod that answered says which endpoint nginx
picked), and a second traced packet from the proxy pod to that endpoint: the new connection.

Knows: trace (the first and second legs), httpprobe (the real request), node.ingress (which
pods are proxies and what they serve)."""

from __future__ import annotations

from dataclasses import dataclass

from netsim import fabric
from netsim.api.store import Store
from netsim.model import k8s
from netsim.node.ingress import controller, kinds, match
from netsim.observe import httpprobe, probe, trace


@dataclass
class ProxyLeg:
    proxy: str                      # pod/NS/NAME of the proxy pod
    kind: str                       # ingress-nginx, gateway
    decision: match.Decision
    answer: dict                    # httpprobe.request's result for the real request
    backend_pod: str | None = None  # pod/NS/NAME whose echo answered
    second: trace.Result | None = None

    @property
    def delivered(self) -> bool:
        if self.second is not None:
            return self.second.verdict["result"] == "DELIVERED"
        return self.answer.get("status") is not None and self.answer["status"] < 400

    def as_dict(self) -> dict:
        return {"proxy": self.proxy, "kind": self.kind, "decision": self.decision.to_dict(),
                "request": {k: v for k, v in self.answer.items() if k != "answer"},
                "backendPod": self.backend_pod,
                "next": self.second.as_dict() if self.second is not None else None}


def _proxy_pod(store: Store, ip: str) -> tuple[dict, controller.ProxyKind] | None:
    for pod in store.list(k8s.prefix("Pod"))[0]:
        if (pod.get("status") or {}).get("podIP") == ip and (kind := kinds.proxy_kind(pod)) is not None:
            return pod, kind
    return None


def follow(cluster: fabric.Cluster, store: Store, first: trace.Result, host: str | None, path: str,
           headers: dict[str, str] | None = None, timeout: float = 1.5) -> ProxyLeg | None:
    """The proxy's part and the new connection, when ``first`` was delivered to a proxy pod over
    TCP; None otherwise (the trace ends where it ended)."""
    v = first.verdict
    if v["result"] != "DELIVERED" or first.protocol != "TCP" or not v.get("to"):
        return None
    found = _proxy_pod(store, v["to"])
    if found is None:
        return None
    pod, kind = found
    meta = pod["metadata"]
    proxy = f"pod/{meta['namespace']}/{meta['name']}"
    cache: dict[str, list[dict]] = {}

    def objects(of_kind: str) -> list[dict]:
        if of_kind not in cache:
            cache[of_kind] = store.list(k8s.prefix(of_kind))[0]
        return cache[of_kind]

    config = kind.config(pod, objects)
    port = v.get("port") or first.port
    scheme = "https" if port == config.https_port else "http"
    host = host if host is not None else (headers or {}).get("Host", first.flow.dst)
    decision = match.explain(config, host, path, headers, scheme, port=port)
    source = probe.resolve(cluster, store, first.src)
    answer = httpprobe.request(source.netns, first.flow.dst, first.flow.dport, host, path, scheme, timeout=2.0)
    leg = ProxyLeg(proxy, kind.name, decision, answer)
    if answer.get("responder") and answer.get("namespace"):
        leg.backend_pod = f"pod/{answer['namespace']}/{answer['responder']}"
        echoed_port = (answer.get("answer") or {}).get("port")
        if leg.backend_pod != proxy:
            leg.second = trace.run(cluster, store, proxy, leg.backend_pod, echoed_port, "tcp", timeout)
    return leg


def render_text(leg: ProxyLeg) -> list[str]:
    d, a = leg.decision, leg.answer
    out = ["", f"L7 proxy: {leg.proxy} ({leg.kind}, nginx) ends the connection and decides:",
           f"  request:   {d.scheme}://{d.host or '(no Host)'}{d.path} on port {d.port}",
           f"  server:    {d.server or '(none)'}: {d.server_why}"]
    if d.block:
        out.append(f"  location:  {d.block}: {d.location_why}")
        if d.location is not None and d.location.source:
            out.append(f"             from {d.location.source}")
    if d.upstream_path is not None and d.upstream_path != d.path:
        out.append(f"  rewritten: {d.upstream_path}")
    if d.backend is not None:
        out.append(f"  upstream:  {d.backend.upstream}"
                   + (f" (canary {d.canary})" if d.canary else ""))
    if d.endpoints:
        out.append(f"  endpoints: {', '.join(f'{e.ip}:{e.port}' for e in d.endpoints)} (nginx picks one per request)")
    out.append(f"  expected:  {d.status}: {d.status_why}")
    if a.get("status") is None:
        out.append(f"  a real request got no answer: {a.get('reason')}")
    else:
        by = f" from {leg.backend_pod}" if leg.backend_pod else " from the proxy itself"
        out.append(f"  a real request: HTTP {a['status']}{by}"
                   + (f", which saw the client {a['clientIP']}" if a.get("clientIP") else ""))
    if leg.second is not None:
        out += ["", f"new connection from the proxy: {leg.proxy} -> {leg.backend_pod}"]
        out += ["  " + line for line in trace.render_text(leg.second)]
    return out


__all__ = ["ProxyLeg", "follow", "render_text"]
