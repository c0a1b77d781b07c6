"""The Ingress status controller (netsim.controllers.ingress_status) over the in-memory store and
SQLite: which Ingresses an ingress-nginx controller serves, and the addresses it publishes."""

from __future__ import annotations

import pytest

from netsim import controllers
from netsim.api import registry
from netsim.api.informer import Cache
from netsim.api.store.sqlite import SQLiteStore
from netsim.controllers import ingress_status
from netsim.model import k8s
from tests.unit.fakes import MemoryStore

IMAGE = "registry.k8s.io/ingress-nginx/controller:v1.12.0@sha256:" + "ab" * 32
ADDON_ARGS = ["--publish-service=$(POD_NAMESPACE)/ingress-nginx-controller"]  # as netsim's add-on runs it


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.db")
    registry.bootstrap(s, registry.ClusterConfig(load_balancer_pool="198.51.100.0/30"))
    registry.apply(s, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ingress-nginx"}}])
    yield s
    if request.param == "sqlite":
        s.close()


def settle(store, rounds=10) -> Cache:
    for _ in range(rounds):
        before = store.revision()
        cache = Cache(store)
        cache.relist()
        assert controllers.sync(cache) is None
        if store.revision() == before:
            return cache
    raise AssertionError("controllers did not settle")


def node(store, name, internal, external=None):
    addresses = [{"type": "InternalIP", "address": internal}] + \
        ([{"type": "ExternalIP", "address": external}] if external else [])
    store.create(k8s.key("Node", None, name), registry.new_object({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"addresses": addresses, "conditions": [{"type": "Ready", "status": "True"}]}}))


def controller_pod(store, name, node_name, args=None, ready=True, image=IMAGE):
    container = {"name": "controller", "image": image,
                 "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]}
    if args is not None:
        container["args"] = ["/nginx-ingress-controller", *args]
    pod = registry.new_object({"apiVersion": "v1", "kind": "Pod",
                               "metadata": {"name": name, "namespace": "ingress-nginx",
                                            "labels": {"app": "ingress-nginx"}},
                               "spec": {"nodeName": node_name, "containers": [container]}})
    pod["status"] = {"phase": "Running",
                     "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    store.create(k8s.key_of(pod), pod)
    return pod


def ingress_class(name, controller="k8s.io/ingress-nginx", default=False):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": name, **({"annotations": {
                "ingressclass.kubernetes.io/is-default-class": "true"}} if default else {})},
            "spec": {"controller": controller}}


def ingress(name, class_name=None, annotation=None):
    spec = {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}
    if class_name is not None:
        spec["ingressClassName"] = class_name
    meta = {"name": name, **({"annotations": {"kubernetes.io/ingress.class": annotation}} if annotation else {})}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def lb_service(name="ingress-nginx-controller"):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ingress-nginx"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "ingress-nginx"},
                     "ports": [{"name": "http", "port": 80}]}}


def status_of(cache, name, ns="default"):
    return (cache.get("Ingress", ns, name) or {}).get("status")


def test_status_comes_from_the_publish_service_for_served_classes_only(store):
    node(store, "w1", "192.168.50.2")
    registry.apply(store, [lb_service(), ingress_class("nginx", default=True), ingress_class("other", "acme.io/lb")])
    controller_pod(store, "c1", "w1", args=["--publish-service=$(POD_NAMESPACE)/ingress-nginx-controller"])
    registry.apply(store, [ingress("by-default"), ingress("named", "nginx"), ingress("other", "other"),
                           ingress("legacy", annotation="nginx"), ingress("legacy-other", annotation="traefik")])
    cache = settle(store)
    lb = cache.get("Service", "ingress-nginx", "ingress-nginx-controller")["status"]["loadBalancer"]
    lb_ip = lb["ingress"][0]["ip"]
    want = {"loadBalancer": {"ingress": [{"ip": lb_ip}]}}
    # "by-default" got the default class at admission, so the controller serves it
    assert cache.get("Ingress", "default", "by-default")["spec"]["ingressClassName"] == "nginx"
    assert [status_of(cache, n) for n in ("by-default", "named", "legacy")] == [want] * 3
    assert status_of(cache, "other") is None and status_of(cache, "legacy-other") is None


def test_only_changes_are_written(store):
    node(store, "w1", "192.168.50.2")
    registry.apply(store, [lb_service(), ingress_class("nginx", default=True), ingress("web")])
    controller_pod(store, "c1", "w1", args=ADDON_ARGS)
    cache = settle(store)
    assert status_of(cache, "web")["loadBalancer"]["ingress"]
    rev = store.revision()
    ingress_status.ingress_status(cache)
    assert store.revision() == rev


def test_without_a_publish_service_the_nodes_of_ready_pods_are_published(store):
    node(store, "w1", "192.168.50.2")
    node(store, "w2", "192.168.50.3", external="203.0.113.9")
    node(store, "w3", "192.168.50.4")
    registry.apply(store, [ingress_class("nginx", default=True), ingress("web")])
    for name, n, ready in (("c1", "w1", True), ("c2", "w2", True), ("c3", "w3", False), ("c4", "w1", True)):
        controller_pod(store, name, n, args=["--election-id=x"], ready=ready)
    cache = settle(store)
    # w2's ExternalIP wins over its InternalIP (GetNodeIPOrName); w3's pod is not ready; w1 once
    assert status_of(cache, "web") == {"loadBalancer": {"ingress": [{"ip": "192.168.50.2"}, {"ip": "203.0.113.9"}]}}


def test_no_controller_pods_no_status_and_the_last_pod_takes_it_back(store):
    node(store, "w1", "192.168.50.2")
    registry.apply(store, [lb_service(), ingress_class("nginx", default=True), ingress("web")])
    cache = settle(store)
    assert status_of(cache, "web") is None  # a class but no controller running it
    pod = controller_pod(store, "c1", "w1", args=ADDON_ARGS)
    assert status_of(settle(store), "web")["loadBalancer"]["ingress"]
    store.delete(k8s.key_of(pod))
    assert status_of(settle(store), "web") == {"loadBalancer": {}}


def test_a_pending_load_balancer_publishes_nothing_and_watch_without_class(store):
    node(store, "w1", "192.168.50.2")
    store.put(registry.CONFIG_KEY, {"metadata": {"name": "config"},
                                    **registry.ClusterConfig(load_balancer_pool=None).to_json()})
    registry.apply(store, [lb_service(), ingress("classless")])
    controller_pod(store, "c1", "w1", args=["--watch-ingress-without-class=true",
                                            "--publish-service=ingress-nginx/ingress-nginx-controller"])
    cache = settle(store)
    assert cache.get("Ingress", "default", "classless")["spec"].get("ingressClassName") is None
    assert status_of(cache, "classless") is None  # the LoadBalancer is pending: no address yet


def test_a_put_keeps_the_status_the_controller_wrote(store):
    node(store, "w1", "192.168.50.2")
    registry.apply(store, [lb_service(), ingress_class("nginx", default=True), ingress("web")])
    controller_pod(store, "c1", "w1", args=ADDON_ARGS)
    cache = settle(store)
    before = status_of(cache, "web")
    obj = ingress("web", "nginx")
    obj["metadata"]["namespace"] = "default"
    stored = registry.replace(store, obj)
    assert stored["status"] == before


# -- netsim describe ingress (netsim.cli.describe_ingress) over what the controllers wrote ---------

def web_pod(store, name, ip, ready=True, app="web"):
    pod = registry.new_object({"apiVersion": "v1", "kind": "Pod",
                               "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
                               "spec": {"nodeName": "w1", "containers": [
                                   {"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]}})
    pod["status"] = {"phase": "Running", "podIP": ip,
                     "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    store.create(k8s.key_of(pod), pod)


def test_describe_lists_rules_with_backends_and_their_ready_endpoints(store):
    from netsim.cli import describe_ingress

    node(store, "w1", "192.168.50.2")
    for i, ip in enumerate(("10.244.1.5", "10.244.2.3", "10.244.2.4", "10.244.3.9", "10.244.3.10")):
        web_pod(store, f"web-{i}", ip, ready=i != 2)
    web_pod(store, "api-0", "10.244.1.7", app="api")
    registry.apply(store, [
        lb_service(), ingress_class("nginx", default=True),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
         "spec": {"selector": {"app": "api"}, "ports": [{"port": 8080}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "two-hosts", "annotations": {"nginx.ingress.kubernetes.io/ssl-redirect": "false"}},
         "spec": {"tls": [{"hosts": ["frontend.aa.com"], "secretName": "aa-tls"}, {"hosts": ["backend.aa.com"]}],
                  "rules": [
                      {"host": "frontend.aa.com", "http": {"paths": [
                          {"path": "/", "pathType": "Prefix",
                           "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                          {"path": "/api", "pathType": "Exact",
                           "backend": {"service": {"name": "api", "port": {"number": 8080}}}}]}},
                      {"http": {"paths": [
                          {"path": "/gone", "pathType": "Prefix",
                           "backend": {"service": {"name": "gone", "port": {"name": "http"}}}}]}}]}}])
    controller_pod(store, "c1", "w1", args=ADDON_ARGS)
    cache = settle(store)
    fields, blocks = describe_ingress.describe(store, cache.get("Ingress", "default", "two-hosts"))
    lb_ip = cache.get("Service", "ingress-nginx", "ingress-nginx-controller")["status"]["loadBalancer"]["ingress"]
    assert fields == [("Address", lb_ip[0]["ip"]), ("Ingress Class", "nginx"), ("Default backend", "<default>")]
    # four ready web endpoints (web-2 is not ready): the first three, then how many more
    assert blocks == [
        "TLS:",
        "  aa-tls terminates frontend.aa.com",
        "  SNI routes backend.aa.com",
        "Rules:",
        "  Host             Path   Backends",
        "  ----             ----   --------",
        "  frontend.aa.com",
        "                   /      web:80 (10.244.1.5:8080,10.244.2.3:8080,10.244.3.9:8080 + 1 more...)",
        "                   /api   api:8080 (10.244.1.7:8080)",
        "  *",
        '                   /gone  gone:http (<error: services "gone" not found>)',
        "Annotations:  nginx.ingress.kubernetes.io/ssl-redirect: false"]


def test_describe_a_default_backend_only_ingress(store):
    from netsim.cli import describe_ingress

    registry.apply(store, [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}, ingress("d")])
    cache = settle(store)
    fields, blocks = describe_ingress.describe(store, cache.get("Ingress", "default", "d"))
    # the Service has a slice with no endpoint: kubectl prints nothing between the parentheses
    assert fields == [("Address", ""), ("Ingress Class", "<none>"), ("Default backend", "web:80 ()")]
    assert blocks[1:] == ["  Host  Path  Backends", "  ----  ----  --------", "  *     *     web:80 ()",
                          "Annotations:  <none>"]
    store.delete(k8s.key("Service", "default", "web"))
    settle(store)  # its slice goes with it: no slice at all is "<none>"
    store.create(k8s.key("Service", "default", "web"), registry.new_object(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"ports": [{"port": 80}]}}))
    fields, _ = describe_ingress.describe(store, cache.get("Ingress", "default", "d"))
    assert fields[2] == ("Default backend", "web:80 (<none>)")


def test_publish_status_address_overrides_the_service(store):
    node(store, "w1", "192.168.50.2")
    registry.apply(store, [lb_service(), ingress_class("nginx", default=True), ingress("web")])
    controller_pod(store, "c1", "w1", args=["--publish-service=ingress-nginx/ingress-nginx-controller",
                                            "--publish-status-address=lb.example.com,203.0.113.5"])
    # sorted as lessLoadBalancerIngress: by hostname ("" first), then IP
    assert status_of(settle(store), "web") == {"loadBalancer": {"ingress": [
        {"ip": "203.0.113.5"}, {"hostname": "lb.example.com"}]}}
