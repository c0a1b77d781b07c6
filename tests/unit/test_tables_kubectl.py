"""Tables through the API server to the real kubectl: netsim's own server (plain HTTP on
loopback, a SQLite store in the test's directory) and `kubectl get` reading its Tables, so a
column kubectl would not show, a CRD's additionalPrinterColumns not reaching the table, or a
kind printed with the wrong printer shows up as kubectl's own output.  Skipped without kubectl."""

import json
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")

CRD = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
       "metadata": {"name": "widgets.example.com"},
       "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                # kubectl reads the preferred version, v2 (the highest), which has the columns
                "versions": [{"name": "v1", "served": True, "storage": True,
                              "schema": {"openAPIV3Schema": {"type": "object",
                                                             "x-kubernetes-preserve-unknown-fields": True}}},
                             {"name": "v2", "served": True, "storage": False,
                              "schema": {"openAPIV3Schema": {"type": "object",
                                                             "x-kubernetes-preserve-unknown-fields": True}},
                              "additionalPrinterColumns": [
                                  {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                                  {"name": "Color", "type": "string", "jsonPath": ".spec.colors[0]", "priority": 1},
                                  {"name": "Missing", "type": "string", "jsonPath": ".status.nothing"}]}]}}


@pytest.fixture
def kubectl(apiserver, tmp_path):
    """kubectl against a netsim API server on 127.0.0.1 (conftest's apiserver)."""
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(tmp_path / "kubeconfig"), "HOME": str(tmp_path)}

    def run(*args: str, stdin: object = None) -> list[list[str]]:
        r = subprocess.run(["kubectl", *args], input=None if stdin is None else json.dumps(stdin), env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return [line.split() for line in r.stdout.splitlines()]
    return run


def test_kubectl_shows_the_crd_columns_and_upstreams_for_built_in_kinds(kubectl):
    for obj in ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}, CRD,
                {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"},
                 "spec": {"size": 3, "colors": ["red", "blue"]}},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"}},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "read"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
                 "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]},
                {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"},
                 "value": 1000},
                {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
                 "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {
                     "metadata": {"labels": {"app": "agent"}},
                     "spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                              "containers": [{"name": "a", "image": "busybox"}]}}}},
                {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "agent.1"},
                 "involvedObject": {"kind": "DaemonSet", "name": "agent", "namespace": "default"},
                 "reason": "SuccessfulCreate", "message": "Created pod: agent-x", "type": "Normal",
                 "source": {"component": "daemonset-controller"}, "count": 2}):
        kubectl("create", "-f", "-", stdin=obj)
    widgets = kubectl("get", "widgets")
    # a field the object lacks is a null cell, which kubectl leaves blank
    assert widgets == [["NAME", "SIZE", "MISSING"], ["w1", "3"]]
    assert kubectl("get", "widgets", "-o", "wide") == [["NAME", "SIZE", "COLOR", "MISSING"], ["w1", "3", "red"]]
    # the CRD's columns changed: the table follows at once
    kubectl("patch", "crd", "widgets.example.com", "--type", "json", "-p", json.dumps(
        [{"op": "replace", "path": "/spec/versions/1/additionalPrinterColumns/0/name", "value": "Count"}]))
    assert kubectl("get", "widgets")[0] == ["NAME", "COUNT", "MISSING"]
    # a served version without columns: NAME and AGE
    assert kubectl("get", "widgets.v1.example.com")[0] == ["NAME", "AGE"]
    assert kubectl("get", "roles")[0] == ["NAME", "CREATED", "AT"]
    assert kubectl("get", "rolebindings", "-o", "wide")[0] == ["NAME", "ROLE", "AGE", "USERS", "GROUPS",
                                                                "SERVICEACCOUNTS"]
    assert kubectl("get", "rolebindings", "-o", "wide")[1][:2] == ["read", "Role/reader"]
    assert kubectl("get", "rolebindings", "-o", "wide")[1][-1] == "default/default"
    ds = kubectl("get", "ds", "-o", "wide")
    assert ds[0] == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE", "SELECTOR", "AGE",
                     "CONTAINERS", "IMAGES", "SELECTOR"]
    assert ds[1][:7] + ds[1][8:] == ["agent", "0", "0", "0", "0", "0", "kubernetes.io/os=linux", "a", "busybox",
                                     "app=agent"]
    events = kubectl("get", "events")
    assert events[0] == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert events[1][1:] == ["Normal", "SuccessfulCreate", "daemonset/agent", "Created", "pod:", "agent-x"]
    pc = kubectl("get", "priorityclass", "high")
    assert pc[0] == ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]
    assert [pc[1][i] for i in (0, 1, 2, 4)] == ["high", "1000", "false", "PreemptLowerPriority"]
