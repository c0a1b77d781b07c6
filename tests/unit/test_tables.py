"""Tables as kube-apiserver's printers make them: columns (names, priorities) as upstream
declares them, cells from netsim's objects, kubectl's human durations."""

from datetime import UTC, datetime

import pytest

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


# -- the other kinds: upstream's printers_test.go expectations (pkg/printers/internalversion) ------
# The API server always fills the wide cells; `narrow` keeps the priority-0 ones, which is what
# upstream's tests without GenerateOptions{Wide: true} (and kubectl without -o wide) show.

DAY = 86400


def ago(seconds: float) -> str:
    """A timestamp `seconds` before NOW, as the API server writes it."""
    return datetime.fromtimestamp(NOW - seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rows(kind, *objs):
    return [r["cells"] for r in tables.table(kind, list(objs), NOW)["rows"]]


def narrow(kind, *objs):
    t = tables.table(kind, list(objs), NOW)
    keep = [i for i, c in enumerate(t["columnDefinitions"]) if c["priority"] == 0]
    return [[r["cells"][i] for i in keep] for r in t["rows"]]


def meta(name, age=None, **more):
    return {"name": name, **({"creationTimestamp": ago(age)} if age is not None else {}), **more}


COLUMNS = {  # upstream's column definitions: name, and priority 1 for -o wide
    "DaemonSet": ["Name", "Desired", "Current", "Ready", "Up-to-date", "Available", "Node Selector", "Age",
                  "Containers*", "Images*", "Selector*"],
    "StatefulSet": ["Name", "Ready", "Age", "Containers*", "Images*"],
    "Job": ["Name", "Status", "Completions", "Duration", "Age", "Containers*", "Images*", "Selector*"],
    "CronJob": ["Name", "Schedule", "Timezone", "Suspend", "Active", "Last Schedule", "Age", "Containers*",
                "Images*", "Selector*"],
    "Endpoints": ["Name", "Endpoints", "Age"],
    "EndpointSlice": ["Name", "AddressType", "Ports", "Endpoints", "Age"],
    "Ingress": ["Name", "Class", "Hosts", "Address", "Ports", "Age"],
    "IngressClass": ["Name", "Controller", "Parameters", "Age"],
    "Event": ["Last Seen", "Type", "Reason", "Object", "Subobject*", "Source*", "Message", "First Seen*",
              "Count*", "Name*"],
    "RoleBinding": ["Name", "Role", "Age", "Users*", "Groups*", "ServiceAccounts*"],
    "ClusterRoleBinding": ["Name", "Role", "Age", "Users*", "Groups*", "ServiceAccounts*"],
    "PersistentVolumeClaim": ["Name", "Status", "Volume", "Capacity", "Access Modes", "StorageClass",
                              "VolumeAttributesClass", "Age", "VolumeMode*"],
    "PersistentVolume": ["Name", "Capacity", "Access Modes", "Reclaim Policy", "Status", "Claim", "StorageClass",
                         "VolumeAttributesClass", "Reason", "Age", "VolumeMode*"],
    "HorizontalPodAutoscaler": ["Name", "Reference", "Targets", "MinPods", "MaxPods", "Replicas", "Age"],
    "PodDisruptionBudget": ["Name", "Min Available", "Max Unavailable", "Allowed Disruptions", "Age"],
    "StorageClass": ["Name", "Provisioner", "ReclaimPolicy", "VolumeBindingMode", "AllowVolumeExpansion", "Age"],
    "PriorityClass": ["Name", "Value", "Global-Default", "Age", "PreemptionPolicy"],
    "ResourceQuota": ["Name", "Request", "Limit", "Age"],
    "ReplicationController": ["Name", "Desired", "Current", "Ready", "Age", "Containers*", "Images*",
                              "Selector*"],
    # upstream has no printer for these: the default table
    "Role": ["Name", "Created At"], "ClusterRole": ["Name", "Created At"], "LimitRange": ["Name", "Created At"],
    "CustomResourceDefinition": ["Name", "Created At"],
}


@pytest.mark.parametrize("kind", sorted(COLUMNS))
def test_columns_and_wide_priorities_are_upstreams(kind):
    got = tables.table(kind, [], NOW)["columnDefinitions"]
    assert [c["name"] + ("*" if c["priority"] else "") for c in got] == COLUMNS[kind]
    name = next(c for c in got if c["name"] == "Name")
    assert name["format"] == "name"
    # every row has a cell per column, whatever the object leaves out
    assert len(rows(kind, {"metadata": meta("x")})[0]) == len(got)


def test_event_rows():
    base = {"involvedObject": {"kind": "Deployment", "name": "Deployment Name", "fieldPath": "spec.containers{foo}"},
            "reason": "Event Reason", "message": "Message Data", "type": "Warning"}
    basic = {**base, "metadata": meta("event1"), "source": {"component": "kubelet"}, "count": 6, "type": "Normal",
             "involvedObject": {"kind": "Pod", "name": "Pod Name", "fieldPath": "spec.containers{foo}"},
             "firstTimestamp": ago(3 * DAY), "lastTimestamp": ago(2 * DAY)}
    assert narrow("Event", basic) == [["2d", "Normal", "Event Reason", "pod/Pod Name", "Message Data"]]
    src = {"component": "kubelet", "host": "Node1"}
    wide = {**base, "metadata": meta("event2"), "source": src, "count": 6, "firstTimestamp": ago(3 * DAY),
            "lastTimestamp": ago(2 * DAY)}
    want = ["2d", "Warning", "Event Reason", "deployment/Deployment Name", "spec.containers{foo}", "kubelet, Node1",
            "Message Data", "3d", 6, "event2"]
    assert rows("Event", wide) == [want]
    no_first = {**base, "metadata": meta("event3"), "source": src, "eventTime": ago(3 * DAY),
                "lastTimestamp": ago(3 * DAY), "count": 1}
    assert rows("Event", no_first)[0][7:9] == ["3d", 1]
    series = {**base, "metadata": meta("event6"), "source": src, "eventTime": ago(3 * DAY),
              "series": {"count": 2, "lastObservedTime": ago(2 * DAY)}}
    assert rows("Event", series)[0][0::7] == ["2d", "3d"] and rows("Event", series)[0][8] == 2
    singleton = {**base, "metadata": meta("event7"), "source": src, "eventTime": ago(3 * DAY)}
    assert [rows("Event", singleton)[0][i] for i in (0, 7, 8)] == ["3d", "3d", 1]
    reporting = {**base, "metadata": meta("event2"), "reportingController": "kubelet", "reportingInstance": "test",
                 "count": 6, "firstTimestamp": ago(3 * DAY), "lastTimestamp": ago(2 * DAY)}
    assert rows("Event", reporting)[0][5] == "kubelet, test"


def test_events_k8s_io_events_print_as_core_ones():
    ev = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": meta("web.1"),
          "eventTime": "2023-11-14T22:13:10.000000Z", "reportingController": "netsim/scheduler",
          "reportingInstance": "n1", "action": "Binding", "reason": "Scheduled", "type": "Normal",
          "regarding": {"kind": "Pod", "name": "web", "namespace": "default"}, "note": " assigned default/web ",
          "deprecatedCount": 3, "deprecatedFirstTimestamp": ago(120), "deprecatedLastTimestamp": ago(60)}
    assert rows("Event", ev) == [["60s", "Normal", "Scheduled", "pod/web", "", "netsim/scheduler, n1",
                                   "assigned default/web", "2m", 3, "web.1"]]
    singleton = {k: v for k, v in ev.items() if not k.startswith("deprecated")}
    assert [rows("Event", singleton)[0][i] for i in (0, 7, 8)] == ["10s", "10s", 1]


def test_pdb_rolebinding_replicationcontroller_statefulset_rows():
    assert rows("PodDisruptionBudget", {"metadata": meta("pdb1", 0), "spec": {"minAvailable": 22},
                                        "status": {"disruptionsAllowed": 5}}) == [["pdb1", "22", "N/A", 5, "0s"]]
    assert rows("PodDisruptionBudget", {"metadata": meta("pdb2", 0), "spec": {"maxUnavailable": "10%"},
                                        "status": {"disruptionsAllowed": 5}}) == [["pdb2", "N/A", "10%", 5, "0s"]]
    binding = {"metadata": meta("binding2", 0), "roleRef": {"kind": "Role", "name": "role-name"},
               "subjects": [{"kind": "User", "name": "user-name"}, {"kind": "Group", "name": "group-name"},
                            {"kind": "ServiceAccount", "name": "service-account-name",
                             "namespace": "service-account-namespace"}]}
    want = ["binding2", "Role/role-name", "0s", "user-name", "group-name",
            "service-account-namespace/service-account-name"]
    assert rows("RoleBinding", binding) == rows("ClusterRoleBinding", binding) == [want]
    assert narrow("RoleBinding", binding) == [want[:3]]
    rc = {"metadata": meta("rc1", 0), "spec": {"replicas": 5, "selector": {"a": "b"}, "template": {
        "metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "test", "image": "test_image"}]}}},
          "status": {"replicas": 3, "readyReplicas": 1}}
    assert rows("ReplicationController", rc) == [["rc1", 5, 3, 1, "0s", "test", "test_image", "a=b"]]
    assert rows("ReplicationController", {"metadata": meta("", None), "spec": {"replicas": 0}}) == [
        ["", 0, 0, 0, "<unknown>", "", "", "<none>"]]
    sts = {"metadata": meta("test1", 0), "spec": {"replicas": 5, "template": {"spec": {"containers": [
        {"name": "fake-container1", "image": "fake-image1"}, {"name": "fake-container2", "image": "fake-image2"}]}}},
           "status": {"replicas": 5, "readyReplicas": 2}}
    assert narrow("StatefulSet", sts) == [["test1", "2/5", "0s"]]
    assert rows("StatefulSet", sts) == [["test1", "2/5", "0s", "fake-container1,fake-container2",
                                         "fake-image1,fake-image2"]]


def test_persistent_volume_and_claim_rows():
    claim = {"name": "test", "namespace": "default"}
    pv = {"metadata": meta("test1"), "spec": {"claimRef": claim, "accessModes": ["ReadOnlyMany"],
                                               "capacity": {"storage": "4Gi"}, "volumeMode": "Filesystem",
                                               "persistentVolumeReclaimPolicy": "Retain"}, "status": {"phase": "Bound"}}
    assert rows("PersistentVolume", pv) == [["test1", "4Gi", "ROX", "Retain", "Bound", "default/test", "", "<unset>",
                                             "", "<unknown>", "Filesystem"]]
    pv4 = {"metadata": meta("test4"), "spec": {"claimRef": claim, "storageClassName": "my-scn",
                                                "volumeAttributesClassName": "my-vacn",
                                                "accessModes": ["ReadWriteOnce", "ReadWriteMany", "ReadWriteOnce"],
                                                "capacity": {"storage": "10Gi"}}, "status": {"phase": "Pending"}}
    # reclaim policy and volume mode as the API server defaults them on a real cluster
    assert rows("PersistentVolume", pv4) == [["test4", "10Gi", "RWO,RWX", "Retain", "Pending", "default/test",
                                              "my-scn", "my-vacn", "", "<unknown>", "Filesystem"]]
    bound = {"metadata": meta("test1"), "spec": {"volumeName": "my-volume", "volumeMode": "Filesystem"},
             "status": {"phase": "Bound", "accessModes": ["ReadOnlyMany"], "capacity": {"storage": "4Gi"}}}
    assert rows("PersistentVolumeClaim", bound) == [["test1", "Bound", "my-volume", "4Gi", "ROX", "", "<unset>",
                                                     "<unknown>", "Filesystem"]]
    lost = {"metadata": meta("test2"), "spec": {"volumeMode": "Filesystem"},
            "status": {"phase": "Lost", "accessModes": ["ReadOnlyMany"], "capacity": {"storage": "4Gi"}}}
    assert rows("PersistentVolumeClaim", lost) == [["test2", "Lost", "", "", "", "", "<unset>", "<unknown>",
                                                    "Filesystem"]]
    classed = {"metadata": meta("test5", annotations={"volume.beta.kubernetes.io/storage-class": "beta"}),
               "spec": {"volumeName": "my-volume", "storageClassName": "my-scn",
                        "volumeAttributesClassName": "my-vacn"},
               "status": {"phase": "Pending", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "10Gi"}}}
    assert narrow("PersistentVolumeClaim", classed) == [["test5", "Pending", "my-volume", "10Gi", "RWO", "beta",
                                                         "my-vacn", "<unknown>"]]
    fresh = {"metadata": meta("new", 0, deletionTimestamp=ago(0)), "spec": {}}
    assert rows("PersistentVolumeClaim", fresh)[0][:2] == ["new", "Terminating"]
    assert rows("PersistentVolumeClaim", {"metadata": meta("new", 0), "spec": {}})[0][1] == "Pending"


def test_cronjob_and_job_rows():
    template = {"spec": {"containers": [{"name": "fake-job-container1", "image": "fake-job-image1"},
                                        {"name": "fake-job-container2", "image": "fake-job-image2"}]}}
    cj = {"metadata": meta("cronjob1", 0), "spec": {"schedule": "0/5 * * * ?", "suspend": False, "jobTemplate": {
        "spec": {"completions": 2, "template": template, "selector": {"matchLabels": {"a": "b"}}}}},
          "status": {"lastScheduleTime": ago(0)}}
    assert rows("CronJob", cj) == [["cronjob1", "0/5 * * * ?", "<none>", "False", 0, "0s", "0s",
                                    "fake-job-container1,fake-job-container2", "fake-job-image1,fake-job-image2",
                                    "a=b"]]
    cj2 = {"metadata": meta("cronjob2", 300), "spec": {"schedule": "0/5 * * * ?", "timeZone": "LOCAL"},
           "status": {"lastScheduleTime": ago(30), "active": [{"name": "j"}]}}
    assert narrow("CronJob", cj2) == [["cronjob2", "0/5 * * * ?", "LOCAL", "False", 1, "30s", "5m"]]
    assert narrow("CronJob", {**cj2, "status": {}})[0][5] == "<none>"
    job = {"metadata": meta("job1", 0), "spec": {"completions": 2, "template": template,
                                                  "selector": {"matchLabels": {"job-label": "job-label-value"}}},
           "status": {"succeeded": 1}}
    assert rows("Job", job) == [["job1", "Running", "1/2", "", "0s", "fake-job-container1,fake-job-container2",
                                 "fake-job-image1,fake-job-image2", "job-label=job-label-value"]]
    ten_years = 10 * 365 * DAY + 3 * DAY
    assert narrow("Job", {"metadata": meta("job2", ten_years), "spec": {}}) == [["job2", "Running", "0/1", "", "10y"]]
    done = {"metadata": meta("job3", ten_years), "spec": {},
            "status": {"startTime": ago(31 * 60), "completionTime": ago(60),
                       "conditions": [{"type": "Complete", "status": "True"}]}}
    assert narrow("Job", done) == [["job3", "Complete", "0/1", "30m", "10y"]]
    running = {"metadata": meta("job4", ten_years), "spec": {"parallelism": 3}, "status": {"startTime": ago(20 * 60)}}
    assert narrow("Job", running) == [["job4", "Running", "0/1 of 3", "20m", "10y"]]
    for cond, status in (("Failed", "Failed"), ("Suspended", "Suspended"), ("FailureTarget", "FailureTarget")):
        j = {"metadata": meta("j", 0), "spec": {}, "status": {"conditions": [{"type": cond, "status": "True"}]}}
        assert narrow("Job", j)[0][1] == status
    gone = {"metadata": meta("j", 0, deletionTimestamp=ago(0)), "spec": {}}
    assert narrow("Job", gone)[0][1] == "Terminating"


def test_daemonset_rows():
    ds = {"metadata": meta("ds", 60), "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"spec": {
        "nodeSelector": {"kubernetes.io/os": "linux", "a": "b"}, "containers": [{"name": "c", "image": "i"}]}}},
          "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                     "updatedNumberScheduled": 3, "numberAvailable": 2}}
    assert rows("DaemonSet", ds) == [["ds", 3, 3, 2, 3, 2, "a=b,kubernetes.io/os=linux", "60s", "c", "i", "app=x"]]
    assert rows("DaemonSet", {"metadata": meta("ds", 0), "spec": {}})[0][1:7] == [0, 0, 0, 0, 0, "<none>"]


def test_storageclass_and_priorityclass_rows():
    assert rows("StorageClass", {"metadata": meta("sc1", 0), "provisioner": "kubernetes.io/glusterfs"}) == [
        ["sc1", "kubernetes.io/glusterfs", "Delete", "Immediate", False, "0s"]]
    sc6 = {"metadata": meta("sc6", 300, annotations={"storageclass.kubernetes.io/is-default-class": "true"}),
           "provisioner": "kubernetes.io/nfs", "reclaimPolicy": "Retain", "allowVolumeExpansion": True,
           "volumeBindingMode": "WaitForFirstConsumer"}
    assert rows("StorageClass", sc6) == [["sc6 (default)", "kubernetes.io/nfs", "Retain", "WaitForFirstConsumer",
                                          True, "5m"]]
    pc = {"metadata": meta("pc2", 300), "value": 1000000000, "globalDefault": True,
          "preemptionPolicy": "PreemptLowerPriority"}
    assert rows("PriorityClass", pc) == [["pc2", 1000000000, True, "5m", "PreemptLowerPriority"]]
    assert rows("PriorityClass", {"metadata": meta("pc1", 0), "value": 1, "preemptionPolicy": "Never"}) == [
        ["pc1", 1, False, "0s", "Never"]]


def test_endpoints_and_endpointslice_rows():
    assert rows("Endpoints", {"metadata": meta("endpoint1", 0)}) == [["endpoint1", "<none>", "0s"]]
    two = [{"ip": "1.2.3.4"}, {"ip": "5.6.7.8"}]
    assert rows("Endpoints", {"metadata": meta("endpoint3", 300), "subsets": [{"addresses": two}]}) == [
        ["endpoint3", "1.2.3.4,5.6.7.8", "5m"]]
    port = [{"port": 8001, "protocol": "TCP"}]
    assert rows("Endpoints", {"metadata": meta("endpoint2", 0), "subsets": [{"addresses": two, "ports": port}]}) == [
        ["endpoint2", "1.2.3.4:8001,5.6.7.8:8001", "0s"]]
    four = [*two, {"ip": "9.8.7.6"}, {"ip": "6.6.6.6"}]
    assert rows("Endpoints", {"metadata": meta("endpoint2", 0), "subsets": [{"addresses": four, "ports": port}]}) == [
        ["endpoint2", "1.2.3.4:8001,5.6.7.8:8001,9.8.7.6:8001 + 1 more...", "0s"]]
    assert rows("Endpoints", {"metadata": meta("v6", 0), "subsets": [{"addresses": [{"ip": "fd00::1"}],
                                                                      "ports": port}]})[0][1] == "[fd00::1]:8001"
    ports = [{"name": n, "port": p, "protocol": "TCP"} for n, p in (("http", 80), ("https", 443), ("extra1", 3000),
                                                                    ("extra2", 3001))]
    eps = [{"addresses": ["10.1.2.3", "2001:db8::1234:5678"]}, {"addresses": ["10.2.3.4", "2001:db8::2345:6789"]}]
    assert rows("EndpointSlice", {"metadata": meta("abcslice.123", 0), "addressType": "IPv4", "ports": ports[:1],
                                  "endpoints": eps[:1]}) == [
        ["abcslice.123", "IPv4", "80", "10.1.2.3,2001:db8::1234:5678", "0s"]]
    assert rows("EndpointSlice", {"metadata": meta("multiportslice.123", 300), "addressType": "IPv4",
                                  "ports": ports, "endpoints": eps}) == [
        ["multiportslice.123", "IPv4", "80,443,3000 + 1 more...", "10.1.2.3,2001:db8::1234:5678,10.2.3.4 + 1 more...",
         "5m"]]
    assert rows("EndpointSlice", {"metadata": meta("empty", 0), "addressType": "IPv4",
                                  "ports": [{"name": "dns"}, {}]}) == [["empty", "IPv4", "dns,*", "<unset>", "0s"]]


HPA_BASE = {"scaleTargetRef": {"kind": "ReplicationController", "name": "some-rc"}, "minReplicas": 2,
            "maxReplicas": 10}


def hpa(metrics=None, current=None, **spec):
    return {"metadata": meta("some-hpa"), "spec": {**HPA_BASE, **({"metrics": metrics} if metrics else {}), **spec},
            "status": {"currentReplicas": 4, "desiredReplicas": 5,
                       **({"currentMetrics": current} if current else {})}}


def test_hpa_targets():
    def targets(h):
        return rows("HorizontalPodAutoscaler", h)[0][2]
    assert rows("HorizontalPodAutoscaler", hpa()) == [["some-hpa", "ReplicationController/some-rc", "<none>", "2", 10,
                                                       4, "<unknown>"]]
    ext = {"type": "External", "external": {"metric": {"name": "m"}, "target": {"type": "AverageValue",
                                                                               "averageValue": "100m"}}}
    assert targets(hpa([ext])) == "<unknown>/100m (avg)"
    assert targets(hpa([ext], [{"type": "External", "external": {"current": {"averageValue": "50m"}}}])) == \
        "50m/100m (avg)"
    val = {"type": "External", "external": {"metric": {"name": "m"}, "target": {"type": "Value", "value": "100m"}}}
    assert targets(hpa([val])) == "<unknown>/100m"
    assert targets(hpa([val], [{"type": "External", "external": {"current": {"value": "50m"}}}])) == "50m/100m"
    pods = {"type": "Pods", "pods": {"metric": {"name": "m"}, "target": {"type": "AverageValue",
                                                                       "averageValue": "100m"}}}
    assert targets(hpa([pods], [{"type": "Pods", "pods": {"current": {"averageValue": "50m"}}}])) == "50m/100m"
    obj = {"type": "Object", "object": {"describedObject": {"kind": "Service", "name": "s"}, "metric": {"name": "m"},
                                        "target": {"type": "Value", "value": "100m"}}}
    assert targets(hpa([obj])) == "<unknown>/100m"
    cpu_val = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "AverageValue",
                                                                         "averageValue": "100m"}}}
    assert targets(hpa([cpu_val])) == "cpu: <unknown>/100m"
    cpu = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                     "averageUtilization": 80}}}
    assert targets(hpa([cpu])) == "cpu: <unknown>/80%"
    assert targets(hpa([cpu], [{"type": "Resource", "resource": {"name": "cpu", "current": {
        "averageUtilization": 50, "averageValue": "10m"}}}])) == "cpu: 50%/80%"
    assert targets(hpa([cpu, cpu_val, pods])) == "cpu: <unknown>/80%, cpu: <unknown>/100m + 1 more..."
    # minReplicas as the API server defaults it
    no_min = hpa()
    del no_min["spec"]["minReplicas"]
    assert rows("HorizontalPodAutoscaler", no_min)[0][3] == "1"


def test_ingress_and_ingressclass_rows():
    ing = {"metadata": meta("web", 60), "spec": {"ingressClassName": "nginx", "rules": [{"host": "a.example"}],
                                                  "tls": [{"hosts": ["a.example"]}]},
           "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.9"}, {"hostname": "lb.example"},
                                                   {"ip": "10.0.0.9"}]}}}
    assert rows("Ingress", ing) == [["web", "nginx", "a.example", "10.0.0.9,lb.example", "80, 443", "60s"]]
    assert rows("Ingress", {"metadata": meta("all", 0), "spec": {"rules": [{}]}}) == [
        ["all", "<none>", "*", "", "80", "0s"]]
    many = {"metadata": meta("m", 0), "spec": {"rules": [{"host": h} for h in "abcde"]}}
    assert rows("Ingress", many)[0][2] == "a,b,c + 2 more..."
    # formatHosts: "more" only once a rule follows the third host
    exact = {"metadata": meta("m", 0), "spec": {"rules": [{"host": "a"}, {}, {"host": "b"}, {"host": "c"}]}}
    assert rows("Ingress", exact)[0][2] == "a,b,c"
    ic = {"metadata": meta("nginx", 0), "spec": {"controller": "k8s.io/ingress-nginx", "parameters": {
        "apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}}}
    assert rows("IngressClass", ic) == [["nginx", "k8s.io/ingress-nginx",
                                         "IngressParameters.k8s.example.com/external-lb", "0s"]]
    assert rows("IngressClass", {"metadata": meta("x", 0), "spec": {"controller": "c"}})[0][2] == "<none>"


def test_resourcequota_rows():
    rq = {"metadata": meta("quota", 60), "status": {
        "hard": {"pods": "10", "limits.memory": "2Gi", "requests.cpu": "1", "limits.cpu": "2"},
        "used": {"pods": "3", "requests.cpu": "500m", "limits.cpu": "1"}}}
    assert rows("ResourceQuota", rq) == [["quota", "pods: 3/10, requests.cpu: 500m/1",
                                          "limits.cpu: 1/2, limits.memory: 0/2Gi", "60s"]]


def test_default_kinds_keep_name_and_created_at():
    for kind in tables.DEFAULT_PRINTED:
        assert rows(kind, {"metadata": meta("r", 0)}) == [["r", ago(0)]]


# -- custom resources ----------------------------------------------------------------------------

def test_jsonpath_subset():
    obj = {"spec": {"a.b": 1, "list": [{"x": "first"}, {"x": "second"}], "n": 0},
           "metadata": {"labels": {"app.kubernetes.io/name": "w"}}}
    assert tables.jsonpath_first(obj, ".spec.list[0].x") == "first"
    assert tables.jsonpath_first(obj, ".spec.list[-1].x") == "second"
    assert tables.jsonpath_first(obj, ".spec.list[*].x") == "first"
    assert tables.jsonpath_first(obj, "{.spec.n}") == 0
    assert tables.jsonpath_first(obj, ".metadata.labels.app\\.kubernetes\\.io/name") == "w"
    assert tables.jsonpath_first(obj, ".metadata.labels['app.kubernetes.io/name']") == "w"
    assert tables.jsonpath_first(obj, ".spec.missing.deeper") is None
    assert tables.jsonpath_first(obj, ".spec.list[5].x") is None


CR_COLUMNS = [
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "the phase"},
    {"name": "Ready", "type": "boolean", "jsonPath": ".status.ready", "priority": 1},
    {"name": "Ratio", "type": "number", "jsonPath": ".status.ratio"},
    {"name": "First", "type": "string", "jsonPath": ".status.nodes[*].name"},
    {"name": "Spec", "type": "string", "jsonPath": ".spec.sub"},
    {"name": "Started", "type": "date", "jsonPath": ".status.started"},
]


def test_custom_resource_columns_as_apiextensions_convertor():
    cr = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": meta("w1", 60),
          "spec": {"replicas": 3.0, "sub": {"b": True, "a": [1, 2]}},
          "status": {"phase": "Running", "ready": True, "ratio": 2, "nodes": [{"name": "n1"}, {"name": "n2"}],
                     "started": ago(120)}}
    t = tables.table("Widget", [cr], NOW, {"additionalPrinterColumns": CR_COLUMNS})
    assert [(c["name"], c["type"], c["priority"]) for c in t["columnDefinitions"]] == [
        ("Name", "string", 0), ("Replicas", "integer", 0), ("Phase", "string", 0), ("Ready", "boolean", 1),
        ("Ratio", "number", 0), ("First", "string", 0), ("Spec", "string", 0), ("Started", "date", 0)]
    assert t["columnDefinitions"][2]["description"] == "the phase"
    assert t["columnDefinitions"][1]["description"] == \
        "Custom resource definition column (in JSONPath format): .spec.replicas"
    assert t["rows"][0]["cells"] == ["w1", 3, "Running", True, 2.0, "n1", "map[a:[1 2] b:true]", "2m"]
    # missing fields and values of another type are null cells (kubectl leaves them blank)
    bare = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": meta("w2", 0),
            "spec": {"replicas": "three"}, "status": {"ready": "yes", "started": "not a time"}}
    cells = tables.table("Widget", [bare], NOW, {"additionalPrinterColumns": CR_COLUMNS})["rows"][0]["cells"]
    assert cells == ["w2", None, None, None, None, None, None, "<invalid>"]


def test_custom_resource_without_columns_shows_age_even_for_a_builtin_kind_name():
    cr = {"apiVersion": "example.com/v1", "kind": "Pod", "metadata": meta("p", 61)}
    t = tables.table("Pod", [cr], NOW, {"additionalPrinterColumns": []})
    assert [(c["name"], c["type"]) for c in t["columnDefinitions"]] == [("Name", "string"), ("Age", "date")]
    assert t["rows"][0]["cells"] == ["p", "61s"]


def test_quantities_print_canonically_as_the_api_server_stores_them():
    cases = {"1Gi": "1Gi", "1.5Gi": "1536Mi", "2048Mi": "2Gi", "0.5Ki": "512", "1024": "1024", "1000": "1k",
             "1500": "1500", "0.5": "500m", "1.5": "1500m", "0.001": "1m", "100m": "100m", "2e3": "2e3", "1E6": "1e6",
             "12e-3": "12e-3", "0": "0", "0Gi": "0", "-1.5": "-1500m", "5M": "5M", "10": "10", 10: "10",
             "0.0000000001": "1n", "not-a-quantity": "not-a-quantity",
             # apimachinery's TestQuantityString alternates and their canonical forms
             "1024Mi": "1Gi", "307200Ki": "300Mi", "1025024Mi": "1001Gi", "1000M": "1G", "0.001T": "1G",
             "1000u": "1m", "1.08": "1080m", "1080000000n": "1080m", "5000m": "5"}
    for given, want in cases.items():
        assert tables.quantity(given) == want, given
    pv = {"metadata": meta("pv"), "spec": {"capacity": {"storage": "1.5Gi"}}}
    assert rows("PersistentVolume", pv)[0][1] == "1536Mi"
    rq = {"metadata": meta("q", 0), "status": {"hard": {"requests.memory": "1024Mi"},
                                                "used": {"requests.memory": "0.5Gi"}}}
    assert rows("ResourceQuota", rq)[0][1] == "requests.memory: 512Mi/1Gi"
    cpu = {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue",
                                                                        "averageValue": "0.5Gi"}}}
    assert rows("HorizontalPodAutoscaler", hpa([cpu]))[0][2] == "memory: <unknown>/512Mi"
