"""/openapi/v2 as gnostic's protobuf Document, through netsim's API server on loopback: the served
bytes decode back (generically, by the descriptors' field names, not by the encoder's tables) to
the JSON document's definitions and paths; content negotiation as kube-openapi's; and the real
kubectl validating a `kind: List` with it (skipped without kubectl): a good List is created, an
item with an unknown field or a wrong type is refused before anything is created."""

import json
import urllib.error
import urllib.request

import pytest

from netsim.apiserver import openapi_pb

PB = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
CRD = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
       "metadata": {"name": "gadgets.example.com"},
       "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                    "type": "object", "required": ["spec"], "properties": {"spec": {
                        "type": "object", "required": ["size", "note"],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
                            "mode": {"type": "string", "enum": ["fast", "slow"], "pattern": "^[a-z]+$"},
                            "note": {"type": "string", "nullable": True},
                            "port": {"x-kubernetes-int-or-string": True,
                                     "anyOf": [{"type": "integer"}, {"type": "string"}]},
                            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4,
                                     "x-kubernetes-list-type": "set"},
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}}}}}}}}]}}


def _get(url: str, accept: str | None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def _post(url: str, obj: dict) -> None:
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 201, r.read()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def _json(m):
    """A gnostic message back to Swagger 2.0 JSON, by its descriptor: Named* lists are maps,
    vendor_extension entries x- keys, Any its YAML (here JSON), a oneof its member."""
    name = m.DESCRIPTOR.name
    if name == "Any":
        return json.loads(m.yaml)
    if name == "TypeItem":
        return m.value[0] if len(m.value) == 1 else list(m.value)
    if name == "ItemsItem":
        items = [_json(s) for s in m.schema]
        return items[0] if len(items) == 1 else items
    if name == "StringArray":
        return list(m.value)
    if m.DESCRIPTOR.oneofs:
        member = m.WhichOneof("oneof")
        value = getattr(m, member)
        return _json(value) if hasattr(value, "DESCRIPTOR") else value
    fields = [f.name for f in m.DESCRIPTOR.fields]
    if fields == ["additional_properties"]:
        return {n.name: _value(n.value) for n in m.additional_properties}
    out = {}
    for f, v in m.ListFields():
        if f.name in ("vendor_extension", "path", "response_code"):
            out.update((n.name, _json(n.value)) for n in v)
        elif _repeated(v) and f.message_type is not None:
            out[_camel(f.name)] = [_json(x) for x in v]
        else:
            out["$ref" if f.name == "_ref" else _camel(f.name)] = (list(v) if _repeated(v) else
                                                                   _json(v) if f.message_type else v)
    return out


def _repeated(v) -> bool:
    # a repeated field's container (FieldDescriptor.label is gone from newer protobuf)
    return hasattr(v, "__len__") and not isinstance(v, str) and not hasattr(v, "DESCRIPTOR")


def _value(v):
    return _json(v) if hasattr(v, "DESCRIPTOR") else v


def test_the_served_protobuf_is_the_json_document(apiserver):
    _post(f"{apiserver}/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    code, kind, body = _get(f"{apiserver}/openapi/v2", "application/json")
    assert (code, kind) == (200, "application/json"), body
    doc = json.loads(body)
    code, kind, body = _get(f"{apiserver}/openapi/v2", PB)
    assert (code, kind) == (200, openapi_pb.CONTENT_TYPE), body
    decoded = _json(openapi_pb.Document.FromString(body))
    assert decoded["swagger"] == "2.0" and decoded["info"] == doc["info"]
    assert decoded["definitions"].keys() == doc["definitions"].keys()
    for name, schema in doc["definitions"].items():
        assert decoded["definitions"][name] == schema, name
    assert decoded["paths"].keys() == doc["paths"].keys()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            # an empty list ("parameters": []) is no repeated field on the wire, as with gnostic
            want = {k: v for k, v in op.items() if v != []} if isinstance(op, dict) else op
            assert decoded["paths"][path][method] == want, (path, method)
    # the CRD's schema as apiextensions publishes it in v2: no anyOf, a nullable field untyped and
    # not required, a field preserving unknown fields without properties
    gadget = decoded["definitions"]["com.example.v1.Gadget"]
    assert gadget["x-kubernetes-group-version-kind"] == [{"group": "example.com", "kind": "Gadget", "version": "v1"}]
    spec = gadget["properties"]["spec"]
    assert spec["required"] == ["size"] and spec["properties"]["note"] == {}
    assert spec["properties"]["port"] == {"x-kubernetes-int-or-string": True}
    assert spec["properties"]["size"] == {"type": "integer", "minimum": 1, "maximum": 10, "default": 3}
    assert spec["properties"]["mode"]["enum"] == ["fast", "slow"]


def test_a_schema_value_of_the_wrong_type_is_left_out_not_fatal():
    odd = {"type": ["object", 3], "maximum": "5", "required": "spec", "enum": "a", "items": True,
           "properties": {"a": {"type": "string", "minLength": 2}, "b": "junk"}, "allOf": [1, {"title": "t"}],
           "additionalProperties": 7, "xml": "x", "x-kubernetes-preserve-unknown-fields": True}
    decoded = _json(openapi_pb.Document.FromString(openapi_pb.encode({"swagger": "2.0", "definitions": {"X": odd}})))
    assert decoded["definitions"]["X"] == {
        "type": "object", "properties": {"a": {"type": "string", "minLength": 2}}, "allOf": [{"title": "t"}],
        "x-kubernetes-preserve-unknown-fields": True}


def test_openapi_v2_negotiates_like_kube_openapi(apiserver):
    url = f"{apiserver}/openapi/v2"
    assert _get(url, None)[1] == "application/json"
    assert _get(url, "*/*")[1] == "application/json"
    assert _get(url, f"application/json;q=0.5, {PB}")[1] == openapi_pb.CONTENT_TYPE
    assert _get(url, f"{PB};q=0.2, application/json")[1] == "application/json"
    assert _get(url, openapi_pb.CONTENT_TYPE)[1] == openapi_pb.CONTENT_TYPE
    code, _, body = _get(url, "text/html")
    assert code == 406 and json.loads(body)["reason"] == "NotAcceptable"


GOOD = {"apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}},
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"},
     "automountServiceAccountToken": False}]}


@pytest.mark.parametrize("verb", ["apply", "create"])
def test_kubectl_validates_and_creates_a_list(kubectl, verb):
    code, out, err = kubectl(verb, "-f", "-", stdin=GOOD)
    assert code == 0, err
    code, out, err = kubectl("get", "configmap/settings", "serviceaccount/robot", "-o", "name")
    assert code == 0, err
    assert out.split() == ["configmap/settings", "serviceaccount/robot"]


def test_kubectl_refuses_a_list_with_an_unknown_field_or_a_wrong_type(kubectl):
    unknown = json.loads(json.dumps(GOOD))
    unknown["items"][0]["datta"] = {"a": "1"}
    code, _, err = kubectl("apply", "-f", "-", stdin=unknown)
    assert code != 0
    assert 'unknown field "datta" in io.k8s.api.core.v1.ConfigMap' in err, err
    assert "--validate=false" in err  # kubectl's own hint: this is its client-side validation
    wrong = json.loads(json.dumps(GOOD))
    wrong["items"][1]["automountServiceAccountToken"] = "yes"
    code, _, err = kubectl("create", "-f", "-", stdin=wrong)
    assert code != 0
    assert ('invalid type for io.k8s.api.core.v1.ServiceAccount.automountServiceAccountToken: '
            'got "string", expected "boolean"') in err, err
    # refused as a whole: no item of either List was created
    code, out, err = kubectl("get", "configmaps,serviceaccounts", "-o", "name")
    assert code == 0 and out.split() == [], (out, err)


def test_kubectl_validates_a_custom_resource_in_a_list(kubectl):
    assert kubectl("create", "-f", "-", stdin=CRD)[0] == 0
    item = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"},
            "spec": {"size": 2, "note": None, "port": "http", "extra": {"anything": [1]}, "tags": ["a"]}}
    code, _, err = kubectl("apply", "-f", "-", stdin={"apiVersion": "v1", "kind": "List", "items": [item]})
    assert code == 0, err
    item["spec"]["colour"] = "red"
    code, _, err = kubectl("apply", "-f", "-", stdin={"apiVersion": "v1", "kind": "List", "items": [item]})
    assert code != 0 and 'unknown field "colour"' in err, err


def test_kubectl_explain_reads_the_built_in_schemas(kubectl):
    code, out, err = kubectl("explain", "pod.spec.containers.ports")
    assert code == 0, err
    assert "KIND:       Pod" in out and "containerPort\t<integer> -required-" in out, out
    code, out, err = kubectl("explain", "deployment.spec.strategy", "--api-version=apps/v1")
    assert code == 0, err
    assert "rollingUpdate\t<RollingUpdateDeployment>" in out, out
    code, _, err = kubectl("explain", "pod.spec.nosuchfield")
    assert code != 0 and 'field "nosuchfield" does not exist' in err, err
