"""netsim.model.mergekeys, the one table of list merge keys: every type, field and edge in it
checked against the `kubernetes` client's generated models (the k8s.io/api types), every tagged
field reachable from a kind, and the OpenAPI documents and strategic merge reading the same facts."""

import json
import re

from netsim.api.patch import STRATEGIC_PATCH, apply_patch, list_strategy
from netsim.apiserver import schemas
from netsim.model import mergekeys


def field_type(model: str, json_field: str) -> str:
    cls = schemas.models()[model]
    attr = next(a for a, j in cls.attribute_map.items() if j == json_field)
    return cls.openapi_types[attr]


def test_every_tagged_field_is_a_field_of_its_type():
    for (model, field), (key, strategy) in mergekeys.FIELDS.items():
        t = field_type(model, field)
        if strategy == "retainKeys":
            assert not t.startswith("List["), (model, field)
            continue
        assert t.startswith("List["), (model, field, t)
        item = t[5:-1]
        if key is None:
            assert item in ("str", "int"), (model, field, item)
        else:
            assert key in schemas.models()[item].attribute_map.values(), (model, field, key)


def test_every_edge_is_the_type_of_its_field():
    for (model, field), child in mergekeys.CONTAINS.items():
        assert re.sub(r"^List\[(.*)\]$", r"\1", field_type(model, field)) == child, (model, field)


def test_roots_are_their_kinds_models():
    for (api_version, kind), model in mergekeys.ROOTS.items():
        group, _, version = api_version.rpartition("/")
        assert schemas.model_for(group, version, kind) == model
        assert field_type(model, "metadata") == "V1ObjectMeta"


def test_every_tagged_field_is_reached_from_a_kind():
    reached, todo = set(), list(mergekeys.ANY_KIND | {"V1ObjectMeta"})
    while todo:
        t = todo.pop()
        if t not in reached:
            reached.add(t)
            todo += [c for (p, _), c in mergekeys.CONTAINS.items() if p == t]
    assert {m for m, _ in mergekeys.FIELDS} <= reached


def test_paths_reaching_several_types_agree():
    """A document without a kind is looked up under every kind: no path may mean two things."""
    def walk(types, path):
        for t in types:
            for (p, f), (key, strategy) in mergekeys.FIELDS.items():
                if p == t:
                    others = {mergekeys.FIELDS[(o, f)] for o in types if (o, f) in mergekeys.FIELDS}
                    assert others == {(key, strategy)}, path + (f,)
            for (p, f), _ in mergekeys.CONTAINS.items():
                if p == t and len(path) < 8:
                    walk({c for (q, g), c in mergekeys.CONTAINS.items() if q in types and g == f}, path + (f,))
    walk(mergekeys.ANY_KIND, ())


def test_openapi_and_strategic_merge_read_the_same_facts():
    for (model, field), (key, strategy) in mergekeys.FIELDS.items():
        s = schemas.model_schema(model, schemas.Namer("#/definitions/"), v3=False)["properties"][field]
        assert s.get("x-kubernetes-patch-merge-key") == key and s["x-kubernetes-patch-strategy"] == strategy
    dep = mergekeys.roots({"apiVersion": "apps/v1", "kind": "Deployment"})
    assert list_strategy(dep, ("spec", "template", "spec", "containers", "ports")) == ("merge", "containerPort")
    assert list_strategy(dep, ("status", "conditions")) == ("merge", "type")
    node = mergekeys.roots({"apiVersion": "v1", "kind": "Node"})
    assert list_strategy(node, ("spec", "podCIDRs")) == ("merge", None)
    assert list_strategy(node, ("spec", "taints")) == ("replace", None)
    es = mergekeys.roots({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice"})
    assert list_strategy(es, ("endpoints", "addresses")) == ("replace", None)


def test_webhooks_and_apiservice_conditions_merge_and_crd_conditions_are_atomic():
    hooks = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
             "metadata": {"name": "v"}, "webhooks": [{"name": "a.example.com", "sideEffects": "None"},
                                                     {"name": "b.example.com", "sideEffects": "None"}]}
    out = apply_patch(hooks, json.dumps({"webhooks": [{"name": "b.example.com", "timeoutSeconds": 5}]}).encode(),
                      STRATEGIC_PATCH)
    assert [(w["name"], w.get("timeoutSeconds")) for w in out["webhooks"]] == [("a.example.com", None),
                                                                               ("b.example.com", 5)]
    api = mergekeys.roots({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService"})
    assert list_strategy(api, ("status", "conditions")) == ("merge", "type")
    # apiextensions' CRD conditions carry a list-map type but no patch strategy upstream
    crd = mergekeys.roots({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition"})
    assert list_strategy(crd, ("status", "conditions")) == ("replace", None)
