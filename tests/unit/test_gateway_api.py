"""The Gateway API kinds served as built-ins (netsim.model.gatewayapi, netsim.model.k8s): the
standard CRDs' defaults and validation, their printer columns, v1beta1 beside v1, and the
upstream CRDs applied over them changing nothing."""

from __future__ import annotations

import json

import pytest

from netsim.api import crds, registry
from netsim.api.registry import store_has
from netsim.apiserver import tables
from netsim.model import k8s
from tests.unit.fakes import MemoryStore

G = "gateway.networking.k8s.io"


@pytest.fixture
def store():
    s = MemoryStore()
    registry.bootstrap(s, registry.ClusterConfig(service_subnet="10.96.0.0/28"))
    return s


def _gw(listeners, version="v1", name="gw"):
    return {"apiVersion": f"{G}/{version}", "kind": "Gateway", "metadata": {"name": name},
            "spec": {"gatewayClassName": "netsim", "listeners": listeners}}


HTTP = {"name": "http", "port": 80, "protocol": "HTTP"}
ROUTE = {"apiVersion": f"{G}/v1", "kind": "HTTPRoute", "metadata": {"name": "r"},
         "spec": {"parentRefs": [{"name": "gw"}],
                  "rules": [{"matches": [{"headers": [{"name": "version", "value": "one"}]}],
                             "filters": [{"type": "RequestHeaderModifier",
                                          "requestHeaderModifier": {"set": [{"name": "X-A", "value": "1"}]}}],
                             "backendRefs": [{"name": "web", "port": 8080}]},
                            {"filters": [{"type": "RequestRedirect", "requestRedirect": {"hostname": "x.org"}}]}]}}


def test_defaults(store):
    registry.apply(store, [_gw([HTTP]), ROUTE])
    gw = store.get(k8s.key("Gateway", "default", "gw"))
    assert gw["spec"]["listeners"][0]["allowedRoutes"] == {"namespaces": {"from": "Same"}}
    assert gw["metadata"]["generation"] == 1
    assert {c["type"]: c["reason"] for c in gw["status"]["conditions"]} == {"Accepted": "Pending",
                                                                              "Programmed": "Pending"}
    spec = store.get(k8s.key("HTTPRoute", "default", "r"))["spec"]
    assert spec["parentRefs"] == [{"name": "gw", "group": G, "kind": "Gateway"}]
    rule, redirect = spec["rules"]
    assert rule["matches"] == [{"headers": [{"name": "version", "value": "one", "type": "Exact"}],
                                "path": {"type": "PathPrefix", "value": "/"}}]
    assert rule["backendRefs"] == [{"name": "web", "port": 8080, "group": "", "kind": "Service", "weight": 1}]
    assert redirect["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert redirect["filters"][0]["requestRedirect"]["statusCode"] == 302


@pytest.mark.parametrize("doc,field", [
    (_gw([HTTP, {**HTTP, "port": 8080}]), "spec.listeners[1]"),  # listener names unique
    (_gw([{"name": "s", "port": 443, "protocol": "HTTPS"}]), "spec.listeners[0].tls.certificateRefs"),
    (_gw([{**HTTP, "tls": {"certificateRefs": [{"name": "c"}]}}]), "spec.listeners[0].tls"),
    (_gw([{**HTTP, "hostname": "Bad_Host"}]), "spec.listeners[0].hostname"),
    (_gw([]), "spec.listeners"),
    ({**ROUTE, "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"filters": [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "bad name", "value": "x"}]}}]}]}},
     "spec.rules[0].filters[0].requestHeaderModifier.set[0].name"),
    ({**ROUTE, "spec": {"rules": [{"backendRefs": [{"name": "web"}]}]}}, "spec.rules[0].backendRefs[0].port"),
    ({**ROUTE, "spec": {"rules": [{"matches": [{"path": {"type": "Exact", "value": "nope"}}]}]}},
     "spec.rules[0].matches[0].path.value"),
    ({**ROUTE, "spec": {"hostnames": ["*"]}}, "spec.hostnames[0]"),
])
def test_validation(store, doc, field):
    with pytest.raises(ValueError) as e:
        k8s.validate(doc, "test.yaml")
    assert field in [f for f, _ in e.value.causes]
    assert "test.yaml" in str(e.value)


def test_v1beta1_is_the_same_object(store):
    registry.apply(store, [_gw([HTTP], "v1beta1")])
    stored = store.get(k8s.key("Gateway", "default", "gw"))
    assert stored["apiVersion"] == f"{G}/v1"
    assert k8s.lookup(f"{G}/v1", "ReferenceGrant").storage_version == f"{G}/v1beta1"


def _crd(kind, plural, versions=("v1", "v1beta1")):
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{G}"},
            "spec": {"group": G, "scope": "Namespaced", "names": {"kind": kind, "plural": plural},
                     "versions": [{"name": v, "served": True, "storage": v == versions[0],
                                   "schema": {"openAPIV3Schema": {"type": "object"}}} for v in versions]}}


def test_upstream_crds_change_nothing(store):
    registry.apply(store, [_gw([HTTP])])
    before = dict(k8s.ALL)
    crd_objs = [_crd("Gateway", "gateways"), _crd("HTTPRoute", "httproutes"),
                _crd("ReferenceGrant", "referencegrants", ("v1beta1", "v1")), _crd("GatewayClass", "gatewayclasses"),
                _crd("TLSRoute", "tlsroutes", ("v1alpha2",))]
    # standard-install.yaml also brings its safe-upgrades ValidatingAdmissionPolicy and binding.
    vap = [{"apiVersion": "admissionregistration.k8s.io/v1", "kind": k, "metadata": {"name": "safe-upgrades." + G},
            "spec": {}} for k in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")]
    registry.apply(store, k8s.parse_manifests(json.dumps({"kind": "List", "items": crd_objs + vap}), "install.yaml"))
    crds.load_crds(store)
    assert k8s.lookup(f"{G}/v1", "Gateway") is before[(f"{G}/v1", "Gateway")]
    assert k8s.lookup(f"{G}/v1alpha2", "TLSRoute") is not None  # the kinds netsim does not serve: CRDs
    for c in crd_objs:
        registry.delete(store, "CustomResourceDefinition", None, c["metadata"]["name"])
    crds.load_crds(store)
    assert store.get(k8s.key("Gateway", "default", "gw"))["spec"]["gatewayClassName"] == "netsim"
    assert k8s.lookup(f"{G}/v1", "Gateway") is before[(f"{G}/v1", "Gateway")]
    assert k8s.lookup(f"{G}/v1alpha2", "TLSRoute") is None


def test_printer_columns():
    gw = {**_gw([HTTP]), "metadata": {"name": "gw", "creationTimestamp": "2026-01-01T00:00:00Z"},
          "status": {"addresses": [{"type": "IPAddress", "value": "192.168.50.200"}],
                     "conditions": [{"type": "Accepted", "status": "True"}, {"type": "Programmed", "status": "True"}]}}
    k = k8s.kind_named("gtw")
    t = tables.table("Gateway", [gw], 0, {"additionalPrinterColumns": list(k.printer_columns)})
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Class", "Address", "Programmed", "Age"]
    assert t["rows"][0]["cells"][:4] == ["gw", "netsim", "192.168.50.200", "True"]


# -- the controller (netsim.controllers.gateway) over the in-memory store -------------------------

def _settle(store, rounds=12):
    from netsim import controllers
    from netsim.api.informer import Cache
    for _ in range(rounds):
        before = store.revision()
        cache = Cache(store)
        cache.relist()
        assert controllers.sync(cache) is None
        if store.revision() == before:
            return
    raise AssertionError("controllers did not settle")


@pytest.fixture
def lb_store():
    s = MemoryStore()
    registry.bootstrap(s, registry.ClusterConfig(load_balancer_pool="198.51.100.0/30"))
    return s


def test_controller(lb_store):
    from netsim.controllers import gateway as gwc
    store = lb_store
    other_class = {"apiVersion": f"{G}/v1", "kind": "GatewayClass", "metadata": {"name": "other"},
                   "spec": {"controllerName": "example.com/else"}}
    registry.apply(store, gwc.addon_objects(["gateway"]) + [other_class, _gw([HTTP, {**HTTP, "name": "h2",
                                                                                      "port": 8080}]),
                                                             {**_gw([HTTP], name="theirs"),
                                                              "spec": {"gatewayClassName": "other",
                                                                       "listeners": [HTTP]}},
                                                             {**ROUTE, "spec": {**ROUTE["spec"], "rules": [
                                                                 {"backendRefs": [{"name": "web", "port": 8080}]}]}}])
    _settle(store)
    gc = store.get(k8s.key("GatewayClass", None, "netsim"))
    assert [(c["type"], c["status"]) for c in gc["status"]["conditions"]] == [("Accepted", "True")]
    assert store.get(k8s.key("GatewayClass", None, "other"))["status"]["conditions"][0]["reason"] == "Pending"
    dep = store.get(k8s.key("Deployment", "default", "gw-netsim"))
    svc = store.get(k8s.key("Service", "default", "gw-netsim"))
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "Gateway"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "netsim/gateway-proxy"
    assert dep["spec"]["template"]["metadata"]["labels"] == {"gateway.networking.k8s.io/gateway-name": "gw"}
    assert svc["spec"]["type"] == "LoadBalancer" and [p["port"] for p in svc["spec"]["ports"]] == [80, 8080]
    assert not store_has(store, k8s.key("Deployment", "default", "theirs-netsim"))
    gw = store.get(k8s.key("Gateway", "default", "gw"))
    ip = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert gw["status"]["addresses"] == [{"type": "IPAddress", "value": ip}]
    assert {c["type"]: c["status"] for c in gw["status"]["conditions"]} == {"Accepted": "True", "Programmed": "True"}
    assert [x["attachedRoutes"] for x in gw["status"]["listeners"]] == [1, 1]
    (parent,) = store.get(k8s.key("HTTPRoute", "default", "r"))["status"]["parents"]
    assert {c["type"]: c["reason"] for c in parent["conditions"]} == {"Accepted": "Accepted",
                                                                    "ResolvedRefs": "BackendNotFound"}
    # Settled: nothing more is written; the pods are there.
    rev = store.revision()
    _settle(store)
    assert store.revision() == rev
    assert [p["metadata"]["name"].startswith("gw-netsim-") for p in store.list(k8s.prefix("Pod", "default"))[0]] \
        == [True]
    # The Gateway gone, its proxy goes with it.
    registry.delete(store, "Gateway", "default", "gw")
    _settle(store)
    assert not store_has(store, k8s.key("Deployment", "default", "gw-netsim"))
    assert not store_has(store, k8s.key("Service", "default", "gw-netsim"))


def test_without_a_pool_the_gateway_says_why_it_has_no_address(store):
    from netsim.controllers import gateway as gwc
    registry.apply(store, gwc.addon_objects() + [_gw([HTTP])])
    _settle(store)
    gw = store.get(k8s.key("Gateway", "default", "gw"))
    programmed = next(c for c in gw["status"]["conditions"] if c["type"] == "Programmed")
    assert (programmed["status"], programmed["reason"]) == ("False", "AddressNotAssigned")
    assert "loadBalancerPool" in programmed["message"] and "addresses" not in gw["status"]
