"""An explicit null in a manifest means the field is not set, as the API server decodes it
(issue: manifests as Kubernetes reads them).  Pure: validation and the API's stored form."""

from __future__ import annotations

import pytest

from netsim.api import registry
from netsim.api.store import open_store
from netsim.model import k8s
from netsim.node import policy

RECIPE = """kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata:
  namespace: default
  name: deny-from-other-namespaces
spec:
  podSelector:
    matchLabels:
  ingress:
  - from:
    - podSelector: {}
"""


def test_the_recipe_with_an_empty_match_labels_is_accepted_and_selects_every_pod():
    [obj] = k8s.parse_manifests(RECIPE, "recipe.yaml")
    assert obj["spec"]["podSelector"] == {}
    assert obj["spec"]["ingress"] == [{"from": [{"podSelector": {}}]}]
    assert policy.policy_types(obj) == ["Ingress"]


@pytest.mark.parametrize("body", ["  ingress:\n", "  ingress: []\n", ""])
def test_null_empty_and_absent_ingress_all_mean_no_ingress_rules(body):
    text = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n"
            f"spec:\n  podSelector: {{}}\n{body}")
    [obj] = k8s.parse_manifests(text, "p.yaml")
    assert obj["spec"].get("ingress") in (None, [])
    assert policy.policy_types(obj) == ["Ingress"]


@pytest.mark.parametrize("egress, types", [("  egress:\n", ["Ingress"]), ("  egress: []\n", ["Ingress"]),
                                           ("  egress: [{}]\n", ["Ingress", "Egress"]), ("", ["Ingress"])])
def test_policy_types_default_as_upstream(egress, types):
    text = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n"
            f"spec:\n  podSelector: {{}}\n{egress}")
    [obj] = k8s.parse_manifests(text, "p.yaml")
    assert policy.policy_types(obj) == types


def test_a_policy_without_spec_is_stored_with_the_empty_selector():
    [obj] = k8s.parse_manifests("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                                "metadata: {name: deny-all, namespace: x}\nspec:\n", "p.yaml")
    assert obj["spec"] == {"podSelector": {}}


def test_empty_labels_annotations_selector_ports_env_while_editing():
    text = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
  annotations:
spec:
  replicas:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      nodeSelector:
      containers:
      - name: web
        image: nginx
        env:
        ports:
"""
    [obj] = k8s.parse_manifests(text, "d.yaml")
    assert "labels" not in obj["metadata"] and "annotations" not in obj["metadata"]
    assert "replicas" not in obj["spec"]
    assert obj["spec"]["template"]["spec"]["containers"] == [{"name": "web", "image": "nginx"}]
    assert "nodeSelector" not in obj["spec"]["template"]["spec"]


def test_a_service_with_a_null_selector_has_no_selector():
    [obj] = k8s.parse_manifests("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                                "spec:\n  selector:\n  ports: [{port: 80}]\n", "s.yaml")
    assert "selector" not in obj["spec"]


def test_a_null_value_in_a_string_map_is_the_empty_string():
    [obj] = k8s.parse_manifests("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, labels: {tier: null}}\n"
                                "data: {key: null}\n", "c.yaml")
    assert obj["metadata"]["labels"] == {"tier": ""}
    assert obj["data"] == {"key": ""}


@pytest.mark.parametrize("text, field", [
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n", "spec.containers"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n", "ports"),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector:\n  template:\n"
     "    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c}]}\n", "spec.selector"),
    ("apiVersion: v1\nkind: Pod\nmetadata:\n  name:\nspec: {containers: [{name: c}]}\n", "name"),
])
def test_a_null_required_field_is_refused_naming_the_field(text, field):
    with pytest.raises(k8s.ManifestError) as err:
        k8s.parse_manifests(text, "bad.yaml")
    assert "bad.yaml" in str(err.value) and field in str(err.value)


def test_stored_objects_of_null_and_absent_are_the_same(tmp_path):
    store = open_store(str(tmp_path / "store.db"))
    registry.bootstrap(store, registry.ClusterConfig())
    base = "apiVersion: v1\nkind: Service\nmetadata: {name: NAME, namespace: default%s}\nspec:\n  ports: [{port: 80}]\n"
    with_null = k8s.parse_manifests((base % ", labels: null").replace("NAME", "a"), "a.yaml")
    absent = k8s.parse_manifests((base % "").replace("NAME", "b"), "b.yaml")
    registry.apply(store, with_null + absent)
    a = store.get(k8s.key("Service", "default", "a"))
    b = store.get(k8s.key("Service", "default", "b"))
    assert "labels" not in a["metadata"]
    assert a["spec"].keys() == b["spec"].keys()
    store.close()
