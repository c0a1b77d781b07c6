"""Builders for the store's Ingress, IngressClass, Service, EndpointSlice and Secret dicts (as
kubectl shows them), shared by the ingress translation, matcher and CLI unit tests."""

from __future__ import annotations

import base64

from netsim.node.ingress import ingress
from netsim.node.ingress.match import Decision, explain

NGINX_CLASS = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
               "metadata": {"name": "nginx", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
               "spec": {"controller": "k8s.io/ingress-nginx"}}
OTHER_CLASS = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "other"},
               "spec": {"controller": "example.com/other"}}


def path(p: str, svc: str, port: int | str = 8080, kind: str | None = "Prefix") -> dict:
    ref = {"number": port} if isinstance(port, int) else {"name": port}
    out = {"path": p, "backend": {"service": {"name": svc, "port": ref}}}
    if kind:
        out["pathType"] = kind
    return out


def rule(host: str | None, *paths: dict) -> dict:
    out: dict = {"http": {"paths": list(paths)}}
    if host:
        out["host"] = host
    return out


def ing(name: str, *rules: dict, ns: str = "default", ts: str = "2026-01-01T00:00:00Z", cls: str | None = "nginx",
        annotations: dict | None = None, default: str | None = None, default_port: int = 8080,
        tls: list[dict] | None = None) -> dict:
    spec: dict = {}
    if cls:
        spec["ingressClassName"] = cls
    if rules:
        spec["rules"] = list(rules)
    if default:
        spec["defaultBackend"] = {"service": {"name": default, "port": {"number": default_port}}}
    if tls:
        spec["tls"] = tls
    meta: dict = {"name": name, "namespace": ns, "creationTimestamp": ts}
    if annotations:
        meta["annotations"] = {(k if "/" in k else ingress.PREFIX + k): v for k, v in annotations.items()}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def service(name: str, port: int = 8080, target: int | str = 8080, port_name: str = "http", ns: str = "default",
            cluster_ip: str = "10.96.0.10") -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": cluster_ip, "selector": {"app": name},
                     "ports": [{"name": port_name, "port": port, "targetPort": target, "protocol": "TCP"}]}}


def endpoint_slice(svc: str, ips: list[str], port: int = 8080, port_name: str = "http", ns: str = "default",
                   not_ready: tuple[str, ...] = ()) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{svc}-abcde", "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ip not in not_ready},
                           "targetRef": {"kind": "Pod", "namespace": ns, "name": f"{svc}-{i}"}}
                          for i, ip in enumerate(ips + list(not_ready))],
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}


def tls_secret(name: str, ns: str = "default", cert: str = "CERT", key: str = "KEY") -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": ns},
            "data": {"tls.crt": base64.b64encode(cert.encode()).decode(),
                     "tls.key": base64.b64encode(key.encode()).decode()}}


class World:
    """Services each with ready endpoints 10.244.<n>.<i>, and the Ingress objects under test."""

    def __init__(self, *names: str, replicas: int = 1) -> None:
        self.services: list[dict] = []
        self.slices: list[dict] = []
        self.secrets: list[dict] = []
        self.classes = [NGINX_CLASS, OTHER_CLASS]
        for n in names:
            self.backend(n, replicas)

    def backend(self, name: str, replicas: int = 1, ns: str = "default") -> list[str]:
        n = len(self.services) + 1
        ips = [f"10.244.{n}.{i + 2}" for i in range(replicas)]
        self.services.append(service(name, ns=ns, cluster_ip=f"10.96.0.{n + 10}"))
        self.slices.append(endpoint_slice(name, ips, ns=ns))
        return ips

    def config(self, *ingresses: dict, **kw):
        return ingress.proxy_config("ingress-nginx/ingress-nginx-controller", list(ingresses), self.classes,
                                    self.services, self.slices, self.secrets, **kw)


def served_by(cfg, url: str, headers: dict | None = None) -> Decision:
    """explain() for a URL such as ``http://foo.bar.com/path``."""
    scheme, _, rest = url.partition("://")
    host, slash, p = rest.partition("/")
    return explain(cfg, host, slash + p if slash else "/", headers, scheme)
