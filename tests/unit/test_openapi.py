"""The OpenAPI documents, checked structurally: every $ref resolves, built-in kinds carry
x-kubernetes-group-version-kind, pod.spec.containers has kubectl's merge key, PATCH operations
offer strategic merge for built-in kinds only (kubectl's client-side apply reads exactly that)."""

import json

from netsim.apiserver import openapi
from netsim.apiserver.apitypes import Resource

RESOURCES = [Resource("", "v1", "Pod", "pods", True), Resource("apps", "v1", "Deployment", "deployments", True)]
CRD = {"metadata": {"name": "widgets.example.com", "uid": "u", "resourceVersion": "1"},
       "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}, "scope": "Namespaced",
                "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                    "type": "object", "properties": {"spec": {"type": "object"}}}}}]}}


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_v3_documents_resolve_and_carry_kubectls_patch_metadata():
    index = openapi.openapi_v3_index(RESOURCES, [CRD])
    assert set(index["paths"]) == {"api/v1", "apis/apps/v1", "apis/example.com/v1"}
    for gv, entry in index["paths"].items():
        assert entry["serverRelativeURL"].startswith(f"/openapi/v3/{gv}?hash=")
        doc = openapi.openapi_v3(gv, RESOURCES, [CRD])
        names = doc["components"]["schemas"]
        for ref in _refs(doc):
            assert ref.removeprefix("#/components/schemas/") in names, ref
    core = openapi.openapi_v3("api/v1", RESOURCES, [CRD])
    pod = core["components"]["schemas"]["io.k8s.api.core.v1.Pod"]
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod", "version": "v1"}]
    containers = core["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name" and containers["description"]
    patch = core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    assert any(p["name"] == "fieldValidation" for p in patch["parameters"])
    cr = openapi.openapi_v3("apis/example.com/v1", RESOURCES, [CRD])
    cr_patch = cr["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" not in cr_patch["requestBody"]["content"]
    assert openapi.openapi_v3("apis/nothing/v1", RESOURCES, [CRD]) is None


def test_v2_document_resolves():
    doc = openapi.openapi_v2(RESOURCES, [CRD])
    assert doc["swagger"] == "2.0"
    for ref in _refs(doc):
        assert ref.removeprefix("#/definitions/") in doc["definitions"], ref
    assert json.dumps(doc)  # serialisable as served
