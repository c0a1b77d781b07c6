"""Tables as kube-apiserver's printers make them: columns (names, priorities) as upstream
declares them, cells from netsim's objects, kubectl's human durations."""

from netsim.apiserver import tables

NOW = 1_700_000_000.0
TS = "2023-11-14T22:13:20Z"  # NOW - 0 s


def test_human_duration_matches_apimachinery():
    cases = {0: "0s", 119: "119s", 120: "2m", 150: "2m30s", 600: "10m", 3 * 3600: "3h", 3 * 3600 + 60: "3h1m",
             9 * 3600: "9h", 49 * 3600: "2d1h", 10 * 86400: "10d", 800 * 86400: "2y70d", -5: "<invalid>"}
    for secs, want in cases.items():
        assert tables.human_duration(secs) == want, secs


def test_pod_table_columns_and_netsim_status():
    pod = {"metadata": {"name": "web", "namespace": "default", "creationTimestamp": TS},
           "spec": {"containers": [{"name": "a"}], "nodeName": "n1"},
           "status": {"phase": "Running", "podIP": "10.244.1.2",
                      "conditions": [{"type": "Ready", "status": "True"}]}}
    t = tables.table("Pod", [pod], NOW + 61)
    assert [(c["name"], c["priority"]) for c in t["columnDefinitions"]] == [
        ("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0), ("IP", 1), ("Node", 1),
        ("Nominated Node", 1), ("Readiness Gates", 1)]
    assert t["rows"][0]["cells"] == ["web", "1/1", "Running", "0", "61s", "10.244.1.2", "n1", "<none>", "<none>"]
    assert t["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_service_and_default_tables():
    svc = {"metadata": {"name": "lb", "creationTimestamp": TS},
           "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9", "selector": {"app": "x"},
                    "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}}
    row = tables.table("Service", [svc], NOW)["rows"][0]["cells"]
    assert row == ["lb", "LoadBalancer", "10.96.0.9", "<pending>", "80:30080/TCP", "0s", "app=x"]
    role = tables.table("Role", [{"metadata": {"name": "r", "creationTimestamp": TS}}], NOW, include_object="None")
    assert [c["name"] for c in role["columnDefinitions"]] == ["Name", "Created At"]
    assert role["rows"] == [{"cells": ["r", TS]}]


def test_deployment_and_node_rows():
    dep = {"metadata": {"name": "web", "creationTimestamp": TS},
           "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
           "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    assert tables.table("Deployment", [dep], NOW)["rows"][0]["cells"] == ["web", "2/3", 3, 2, "0s", "c", "nginx",
                                                                          "app=web"]
    role = {"node-role.kubernetes.io/control-plane": ""}
    node = {"metadata": {"name": "n1", "creationTimestamp": TS, "labels": role},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}
    cells = tables.table("Node", [node], NOW)["rows"][0]["cells"]
    assert cells[:3] == ["n1", "Ready", "control-plane"] and cells[5] == "10.0.0.2"
