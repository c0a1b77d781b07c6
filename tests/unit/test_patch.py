"""netsim.api.patch: JSON, merge and strategic merge patch, server-side apply's managedFields.

Cases follow upstream's documented behaviour; a cross-check runs the machine's kubectl
(`kubectl patch --local`, client-side, no server) on the same inputs where it is installed.
"""

import json
import shutil
import subprocess

import pytest

from netsim.api.patch import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    ApplyConflict,
    PatchError,
    apply_patch,
    list_strategy,
    record_update,
    server_side_apply,
)
from netsim.model import mergekeys

NOW = "2026-01-01T00:00:00Z"


def deployment(replicas=2, containers=None):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                     "finalizers": ["b", "a"]},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": containers or [
                    {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}],
                     "env": [{"name": "A", "value": "1"}]},
                    {"name": "side", "image": "busybox"},
                ]},
            },
        },
    }


def sp(live, patch):
    return apply_patch(live, json.dumps(patch).encode(), STRATEGIC_PATCH)


def containers(obj):
    return obj["spec"]["template"]["spec"]["containers"]


def test_strategic_merges_containers_by_name():
    live = deployment()
    out = sp(live, {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}})
    assert [c["name"] for c in containers(out)] == ["web", "side"]
    assert containers(out)[0]["image"] == "nginx:2"
    assert containers(out)[0]["ports"] == [{"containerPort": 80}]
    assert containers(live)[0]["image"] == "nginx:1"  # live untouched


def test_strategic_adds_new_container_and_env_by_name():
    out = sp(deployment(), {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "env": [{"name": "B", "value": "2"}]}, {"name": "new", "image": "x"}]}}}})
    assert [c["name"] for c in containers(out)] == ["web", "new", "side"]
    # upstream's order: items new to the server where the patch put them, before the rest
    assert containers(out)[0]["env"] == [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]


def test_strategic_patch_delete_one_container():
    out = sp(deployment(), {"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}})
    assert [c["name"] for c in containers(out)] == ["web"]


def test_strategic_patch_replace_list_and_map():
    out = sp(deployment(), {"spec": {"template": {"spec": {"containers": [
        {"name": "only", "image": "x"}, {"$patch": "replace"}]}}}})
    assert containers(out) == [{"name": "only", "image": "x"}]
    out = sp(deployment(), {"metadata": {"labels": {"$patch": "replace", "b": "2"}}})
    assert out["metadata"]["labels"] == {"b": "2"}


def test_strategic_null_deletes_and_atomic_lists_replace():
    live = deployment()
    live["spec"]["template"]["spec"]["tolerations"] = [{"key": "a", "operator": "Exists"}]
    out = sp(live, {"metadata": {"labels": None},
                    "spec": {"template": {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}}})
    assert "labels" not in out["metadata"]
    assert out["spec"]["template"]["spec"]["tolerations"] == [{"key": "b", "operator": "Exists"}]


def test_service_ports_merge_by_port_container_ports_by_container_port():
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}
    out = sp(svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}})
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 9090}, {"port": 443}]
    out = sp(deployment(), {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "ports": [{"containerPort": 443}]}]}}}})
    assert containers(out)[0]["ports"] == [{"containerPort": 443}, {"containerPort": 80}]


def test_finalizers_merge_and_delete_from_primitive_list():
    obj = {"metadata": {"name": "x", "finalizers": ["a", "b"]}}
    assert sp(obj, {"metadata": {"finalizers": ["c"]}})["metadata"]["finalizers"] == ["c", "a", "b"]
    out = sp(obj, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})
    assert out["metadata"]["finalizers"] == ["b"]


def test_set_element_order_and_retain_keys():
    out = sp(deployment(), {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "side"}, {"name": "web"}]}}}})
    assert [c["name"] for c in containers(out)] == ["side", "web"]
    live = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    out = sp(live, {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}})
    assert out["spec"]["strategy"] == {"type": "Recreate"}


def test_strategic_missing_merge_key_is_an_error():
    with pytest.raises(PatchError):
        sp(deployment(), {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}})


def test_merge_patch_null_deletes_and_lists_replace():
    out = apply_patch(deployment(), json.dumps({"metadata": {"labels": {"app": None, "t": "1"}},
                                                "spec": {"template": {"spec": {"containers": [
                                                    {"name": "a"}]}}}}).encode(), MERGE_PATCH)
    assert out["metadata"]["labels"] == {"t": "1"}
    assert containers(out) == [{"name": "a"}]


def test_json_patch_ops_and_failing_test():
    ops = [{"op": "replace", "path": "/spec/replicas", "value": 5},
           {"op": "add", "path": "/metadata/labels/x~1y", "value": "z"},
           {"op": "remove", "path": "/spec/template/spec/containers/1"},
           {"op": "copy", "from": "/spec/replicas", "path": "/metadata/annotations"},
           {"op": "move", "from": "/metadata/annotations", "path": "/spec/minReadySeconds"},
           {"op": "test", "path": "/spec/replicas", "value": 5}]
    out = apply_patch(deployment(), json.dumps(ops).encode(), JSON_PATCH)
    assert out["spec"]["replicas"] == 5 and out["spec"]["minReadySeconds"] == 5
    assert out["metadata"]["labels"]["x/y"] == "z"
    assert len(containers(out)) == 1
    with pytest.raises(PatchError) as e:
        apply_patch(deployment(), b'[{"op":"test","path":"/spec/replicas","value":9}]', JSON_PATCH)
    assert e.value.reason == "UnprocessableEntity"
    with pytest.raises(PatchError):
        apply_patch(deployment(), b'[{"op":"remove","path":"/spec/nope"}]', JSON_PATCH)
    with pytest.raises(PatchError) as e:
        apply_patch(deployment(), b"{not json", JSON_PATCH)
    assert e.value.reason == "BadRequest"


def test_endpointslice_addresses_are_atomic_node_addresses_merge():
    es = {"endpoints": [{"addresses": ["10.0.0.1"]}]}
    out = sp(es, {"endpoints": [{"addresses": ["10.0.0.2"]}]})
    assert out == {"endpoints": [{"addresses": ["10.0.0.2"]}]}
    node = {"status": {"addresses": [{"type": "InternalIP", "address": "a"}, {"type": "Hostname", "address": "n"}]}}
    out = sp(node, {"status": {"addresses": [{"type": "InternalIP", "address": "b"}]}})
    assert out["status"]["addresses"] == [{"type": "InternalIP", "address": "b"}, {"type": "Hostname", "address": "n"}]


def test_patch_merge_keys_by_kind_and_path():
    pod, svc = mergekeys.roots({"apiVersion": "v1", "kind": "Pod"}), mergekeys.roots({"apiVersion": "v1",
                                                                                      "kind": "Service"})
    assert list_strategy(pod, ("spec", "containers")) == ("merge", "name")
    assert list_strategy(pod, ("spec", "containers", "volumeMounts")) == ("merge", "mountPath")
    assert list_strategy(pod, ("spec", "volumes")) == ("merge", "name")  # merge,retainKeys
    assert list_strategy(svc, ("spec", "ports")) == ("merge", "port")
    assert list_strategy(pod, ("spec", "tolerations")) == ("replace", None)
    assert list_strategy(pod, ("spec", "containers", "args")) == ("replace", None)
    # a Pod has no spec.ports; a custom resource's lists are atomic but its metadata's are not
    assert list_strategy(pod, ("spec", "ports")) == ("replace", None)
    cr = mergekeys.roots({"apiVersion": "example.com/v1", "kind": "Widget"})
    assert list_strategy(cr, ("status", "conditions")) == ("replace", None)
    assert list_strategy(cr, ("metadata", "finalizers")) == ("merge", None)
    cj = mergekeys.roots({"apiVersion": "batch/v1", "kind": "CronJob"})
    assert list_strategy(cj, ("spec", "jobTemplate", "spec", "template", "spec", "containers", "env")) == \
        ("merge", "name")


# ---- server-side apply ------------------------------------------------------------------

def applied_deploy(replicas=2, image="nginx:1"):
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "web", "image": image}]}}}}


def test_ssa_create_managed_fields_format():
    out = server_side_apply(None, applied_deploy(), "kubectl", False, NOW)
    (mf,) = out["metadata"]["managedFields"]
    assert mf["manager"] == "kubectl" and mf["operation"] == "Apply" and mf["fieldsType"] == "FieldsV1"
    assert mf["apiVersion"] == "apps/v1" and mf["time"] == NOW
    f = mf["fieldsV1"]
    assert f["f:spec"]["f:replicas"] == {}
    assert f["f:metadata"] == {"f:labels": {".": {}, "f:app": {}}}
    item = f["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert item == {".": {}, "f:image": {}, "f:name": {}}


def test_ssa_ports_keyed_by_port_and_protocol():
    d = applied_deploy()
    d["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 80}]
    out = server_side_apply(None, d, "m", False, NOW)
    c = out["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    key = 'k:{"containerPort":80,"protocol":"TCP"}'
    assert c['k:{"name":"web"}']["f:ports"] == {key: {".": {}, "f:containerPort": {}}}
    del d["spec"]["template"]["spec"]["containers"][0]["ports"]
    out = server_side_apply(out, d, "m", False, NOW)
    assert "ports" not in containers(out)[0]


def test_ssa_conflict_with_update_manager_and_force():
    live = server_side_apply(None, applied_deploy(), "kubectl", False, NOW)
    edited = json.loads(json.dumps(live))
    edited["spec"]["replicas"] = 5
    live = record_update(live, edited, "kubectl-client-side-apply", "Update", NOW)
    owners = {m["manager"]: m["fieldsV1"] for m in live["metadata"]["managedFields"]}
    assert owners["kubectl-client-side-apply"] == {"f:spec": {"f:replicas": {}}}
    assert "f:replicas" not in owners["kubectl"]["f:spec"]
    with pytest.raises(ApplyConflict) as e:
        server_side_apply(live, applied_deploy(replicas=3), "kubectl", False, NOW)
    assert e.value.conflicts == [("kubectl-client-side-apply", ".spec.replicas")]
    assert str(e.value) == ('Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" '
                            'using apps/v1: .spec.replicas')
    out = server_side_apply(live, applied_deploy(replicas=3), "kubectl", True, NOW)
    assert out["spec"]["replicas"] == 3
    assert [m["manager"] for m in out["metadata"]["managedFields"]] == ["kubectl"]


def test_ssa_same_value_is_shared_not_conflict():
    live = server_side_apply(None, applied_deploy(), "a", False, NOW)
    out = server_side_apply(live, applied_deploy(), "b", False, NOW)
    assert {m["manager"] for m in out["metadata"]["managedFields"]} == {"a", "b"}


def test_ssa_removes_field_no_longer_applied():
    live = server_side_apply(None, applied_deploy(), "kubectl", False, NOW)
    again = applied_deploy()
    del again["metadata"]["labels"]
    again["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "b"})
    out = server_side_apply(live, again, "kubectl", False, NOW)
    assert "labels" not in out["metadata"]
    assert [c["name"] for c in containers(out)] == ["web", "side"]
    once_more = applied_deploy()
    del once_more["metadata"]["labels"]
    out = server_side_apply(out, once_more, "kubectl", False, NOW)
    assert [c["name"] for c in containers(out)] == ["web"]


def test_ssa_keeps_field_another_manager_owns():
    live = server_side_apply(None, applied_deploy(), "a", False, NOW)
    live = server_side_apply(live, {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "metadata": {"name": "web", "labels": {"app": "web"}}}, "b", False, NOW)
    again = applied_deploy()
    del again["metadata"]["labels"]
    out = server_side_apply(live, again, "a", False, NOW)
    assert out["metadata"]["labels"] == {"app": "web"}


# ---- cross-check with the real kubectl (client-side strategic/merge/json patch) ----------

KUBECTL_CASES = [
    ("strategic", {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}}),
    ("strategic", {"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}}),
    ("strategic", {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "env": [{"name": "B", "value": "2"}], "ports": [{"containerPort": 443}]}]}}}}),
    ("strategic", {"metadata": {"labels": None}}),
    ("strategic", {"metadata": {"finalizers": ["c", "a"]}}),
    ("strategic", {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
    ("strategic", {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "side"}, {"name": "web"}]}}}}),
    ("strategic", {"spec": {"template": {"spec": {"containers": [
        {"name": "new", "image": "x"}, {"name": "web", "image": "y"}]}}}}),
    ("merge", {"metadata": {"labels": {"app": None, "t": "1"}}, "spec": {"replicas": 7}}),
    ("json", [{"op": "replace", "path": "/spec/replicas", "value": 4},
              {"op": "remove", "path": "/spec/template/spec/containers/1"}]),
]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize(("kind", "patch"), KUBECTL_CASES)
def test_same_as_kubectl_patch_local(tmp_path, kind, patch):
    live = deployment()
    f = tmp_path / "d.json"
    f.write_text(json.dumps(live))
    r = subprocess.run(["kubectl", "patch", "--local", "--type", kind, "-f", str(f), "-p",
                        json.dumps(patch), "-o", "json"], capture_output=True, text=True, timeout=30,
                       env={"PATH": "/usr/bin:/bin", "KUBECONFIG": str(tmp_path / "none"),
                            "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    ct = {"strategic": STRATEGIC_PATCH, "merge": MERGE_PATCH, "json": JSON_PATCH}[kind]
    assert apply_patch(live, json.dumps(patch).encode(), ct) == json.loads(r.stdout)
