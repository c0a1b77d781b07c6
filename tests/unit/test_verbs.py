"""netsim's own verbs (netsim.cli.verbs) over the in-memory store, through the API server's
functions: a manifest with a CRD and its custom resource, a ServiceAccount, a Secret and a Role
applies whole; errors name the file, the document and the field with the fix; get selects as
the API does; label and delete mean what kubectl's do.  tests/e2e/test_netpol.py runs the same
manifest through `netsim apply` and kubectl on a real cluster."""

from __future__ import annotations

import base64

import pytest

from netsim.api import crds, registry
from netsim.cli import verbs
from netsim.model import k8s
from tests.unit.fakes import MemoryStore

CRD = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.verbs.example.com}
spec:
  group: verbs.example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"""
GADGET = "apiVersion: verbs.example.com/v1\nkind: Gadget\nmetadata: {name: g1, labels: {tier: web}}\nspec: {size: 3}\n"
REST = """apiVersion: v1
kind: ServiceAccount
metadata: {name: robot}
---
apiVersion: v1
kind: Secret
metadata: {name: token}
stringData: {password: s3cret}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list]}
"""


@pytest.fixture
def store():
    s = MemoryStore()
    registry.bootstrap(s, registry.ClusterConfig())
    yield s
    crds.register_crds([])  # forget the custom resources this test made known


def manifest(tmp_path, text, name="m.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_crd_its_custom_resource_and_stored_only_kinds_apply_from_one_file(store, tmp_path):
    path = manifest(tmp_path, CRD + "---\n" + GADGET + "---\n" + REST)
    results = verbs.apply(store, verbs.read([path], store), None)
    assert [a for _, a in results] == ["created"] * 5
    assert results[1][0] == "gadget/default/g1"
    crd = store.get(k8s.key("CustomResourceDefinition", None, "gadgets.verbs.example.com"))
    assert {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"} in crd["status"]["conditions"]
    secret = store.get(k8s.key("Secret", "default", "token"))
    assert "stringData" not in secret and secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["password"]) == b"s3cret"
    assert secret["metadata"]["managedFields"][0]["manager"] == "netsim"
    # Applied again: nothing changes, the Secret's stringData included.
    assert [a for _, a in verbs.apply(store, verbs.read([path], store), None)] == ["unchanged"] * 5

    # Another process (the next `netsim get`) knows the custom resource from the store's CRDs.
    crds.register_crds([])
    assert k8s.kind_named("gd") is None
    k = verbs.kind("gd", store)
    assert (k.kind, k.api_version, k.resource) == ("Gadget", "verbs.example.com/v1", "verbs.example.com/gadgets")
    [got] = verbs.get(store, verbs.target(k, None), "tier in (web,db)")
    assert got["spec"] == {"size": 3}
    assert verbs.get(store, verbs.target(k, None), "tier notin (web)") == []


def test_a_custom_resource_before_its_crd_names_the_file_document_and_fix(store, tmp_path):
    path = manifest(tmp_path, GADGET + "---\n" + CRD)
    with pytest.raises(verbs.VerbError) as exc:
        verbs.read([path], store)
    assert exc.value.code == 2
    assert f"{path}: document 1: kind 'Gadget' is not known" in exc.value.message
    assert "fix: apply its CustomResourceDefinition first" in exc.value.message
    assert k8s.kind_named("gadgets") is None  # the failed file registered nothing


def test_a_bad_field_names_the_file_document_field_and_fix(store, tmp_path):
    bad = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 80, protocol: tcp}]\n"
    path = manifest(tmp_path, REST + "---\n" + bad)
    with pytest.raises(verbs.VerbError) as exc:
        verbs.read([path], store)
    assert f"{path}: document 4 (Service s): spec.ports.0.protocol" in exc.value.message
    assert "fix: use TCP, UDP or SCTP" in exc.value.message


def test_a_refused_object_names_its_file_and_document_and_nothing_is_written(store, tmp_path):
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\nspec: {containers: [{name: c}]}\n"
    first = manifest(tmp_path, REST, "a.yaml")
    second = manifest(tmp_path, pod, "b.yaml")
    with pytest.raises(verbs.VerbError) as exc:
        verbs.apply(store, verbs.read([first, second], store), None)
    assert exc.value.message.startswith(f"error: {second}: document 1 (Pod p): pod/shop/p: namespaces \"shop\" "
                                        "not found; fix: create it first")
    assert store.list(k8s.prefix("ServiceAccount"))[0] == []


def test_label_refuses_to_overwrite_and_records_netsim_as_the_manager(store, tmp_path):
    verbs.apply(store, verbs.read([manifest(tmp_path, REST)], store), None)
    t = verbs.target(verbs.kind("sa"), None, "robot")
    verbs.set_metadata(store, t, "labels", verbs.parse_pairs(["tier=web"]))
    with pytest.raises(verbs.VerbError, match=r"'tier' already has a value \(web\), and --overwrite is false"):
        verbs.set_metadata(store, t, "labels", verbs.parse_pairs(["tier=db"]))
    got = verbs.set_metadata(store, t, "labels", verbs.parse_pairs(["tier=db", "app-"]), overwrite=True)
    assert got["metadata"]["labels"] == {"tier": "db"}
    ns = verbs.set_metadata(store, verbs.target(verbs.kind("namespaces"), None, "default"), "labels",
                            {registry.NAMESPACE_NAME_LABEL: "other"}, overwrite=True)
    assert ns["metadata"]["labels"][registry.NAMESPACE_NAME_LABEL] == "default"  # kept by the server
    with pytest.raises(verbs.VerbError, match="use key=value to set or key- to remove"):
        verbs.parse_pairs(["tier"])
    with pytest.raises(verbs.VerbError, match=r'Error from server \(NotFound\): serviceaccounts "ghost" not found'):
        verbs.set_metadata(store, verbs.target(t.kind, None, "ghost"), "labels", {"a": "b"})


def test_delete_is_the_apis_a_crd_takes_its_custom_resources_and_a_bound_pod_waits(store, tmp_path):
    verbs.apply(store, verbs.read([manifest(tmp_path, CRD + "---\n" + GADGET)], store), None)
    ref, _ = verbs.delete(store, verbs.target(verbs.kind("crd"), None, "gadgets.verbs.example.com"))
    assert ref == "customresourcedefinition/gadgets.verbs.example.com"
    assert store.list("/registry/verbs.example.com/")[0] == [] and k8s.kind_named("gadgets") is None

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
           "spec": {"containers": [{"name": "c"}], "nodeName": "w1"}}
    registry.apply(store, [pod])
    t = verbs.target(verbs.kind("po"), None, "p")
    verbs.delete(store, t)
    assert verbs.get(store, t)[0]["metadata"]["deletionTimestamp"]  # its node's agent removes it
    verbs.delete(store, t, force=True)
    with pytest.raises(verbs.VerbError, match=r'Error from server \(NotFound\): pods "p" not found'):
        verbs.get(store, t)


def test_a_kind_nobody_knows_is_a_usage_error():
    with pytest.raises(verbs.VerbError) as exc:
        verbs.kind("gizmos", MemoryStore())
    assert exc.value.code == 2 and "doesn't have a resource type 'gizmos'" in exc.value.message


def test_a_service_applied_again_is_unchanged(store, tmp_path):
    svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n"
    path = manifest(tmp_path, svc)
    assert verbs.apply(store, verbs.read([path]), None) == [("service/default/web", "created")]
    assert verbs.apply(store, verbs.read([path]), None) == [("service/default/web", "unchanged")]
    assert "generation" not in store.get(k8s.key("Service", "default", "web"))["metadata"]  # as kube-apiserver 1.32


def test_netsim_get_prints_the_api_servers_table_and_wide_adds_netsims_columns(store):
    from netsim.cli import kubectl

    meta = {"name": "w1", "annotations": {"netsim.io/netns": "nsim.c.w1"}, "creationTimestamp": registry.now()}
    node = {"apiVersion": "v1", "kind": "Node", "metadata": meta,
            "spec": {"podCIDR": "10.244.1.0/24"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.56.3"}]}}
    k = verbs.kind("no")
    header, [row] = kubectl._server_table(k, [node], wide=False)
    assert header == ("NAME", "STATUS", "ROLES", "AGE", "VERSION") and row[:3] == ("w1", "Ready", "<none>")
    header, [row] = kubectl._server_table(k, [node], wide=True)
    assert header[5:7] == ("INTERNAL-IP", "EXTERNAL-IP") and row[5] == "192.168.56.3"
    assert kubectl._netsim_columns("Node", [node], store, None) == (("POD-CIDR", "NETNS"),
                                                                     [("10.244.1.0/24", "nsim.c.w1")])
