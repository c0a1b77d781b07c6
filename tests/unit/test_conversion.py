"""netsim.model.conversion on its own (pure functions; the HTTP side is test_autoscaling_token):
an autoscaling/v2 HPA through v1 and back is the same object, its v1 form as upstream's."""

import pytest

from netsim.model import conversion, k8s

REF = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
CPU = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
PODS = {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}}
CPU_VALUE = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "AverageValue", "averageValue": "1"}}}


def _v2(spec: dict, status: dict | None = None, annotations: dict | None = None) -> dict:
    meta = {"name": "web", "namespace": "default", "uid": "u1", **({"annotations": annotations} if annotations else {})}
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta,
            "spec": {"scaleTargetRef": REF, "minReplicas": 1, "maxReplicas": 5, **spec},
            **({"status": status} if status is not None else {})}


@pytest.mark.parametrize("obj", [
    _v2({"metrics": [CPU]}),
    _v2({"metrics": [CPU, PODS]}, {"currentReplicas": 2, "desiredReplicas": 3}),
    _v2({"metrics": [CPU_VALUE]}, annotations={"team": "a"}),
    _v2({"metrics": [CPU, PODS], "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0}}},
        {"currentReplicas": 1, "desiredReplicas": 1, "lastScaleTime": "2026-01-01T00:00:00Z",
         "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {
             "averageUtilization": 12, "averageValue": "120m"}}}],
         "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"}]}),
], ids=["cpu", "cpu+pods", "cpu-value", "everything"])
def test_v2_through_v1_and_back_is_the_same(obj):
    v1 = conversion.to_version(obj, "autoscaling/v1")
    assert v1["apiVersion"] == "autoscaling/v1" and "metrics" not in v1["spec"]
    assert conversion.to_version(v1, "autoscaling/v2") == obj


def test_v1_form_as_upstream():
    obj = _v2({"metrics": [PODS, CPU]}, {"currentReplicas": 2, "desiredReplicas": 2, "currentMetrics": [
        {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40}}}]})
    v1 = conversion.to_version(obj, "autoscaling/v1")
    assert v1["spec"] == {"scaleTargetRef": REF, "minReplicas": 1, "maxReplicas": 5,
                          "targetCPUUtilizationPercentage": 70}
    assert v1["status"] == {"currentReplicas": 2, "desiredReplicas": 2, "currentCPUUtilizationPercentage": 40}
    assert set(v1["metadata"]["annotations"]) == {conversion.METRICS_ANNOTATION,
                                                  conversion.CURRENT_METRICS_ANNOTATION}
    assert obj["metadata"].get("annotations") is None  # the stored object is not touched


def test_one_declaration_serves_both_versions():
    v1, v2 = k8s.lookup("autoscaling/v1", "HorizontalPodAutoscaler"), k8s.lookup("autoscaling/v2",
                                                                                   "HorizontalPodAutoscaler")
    assert v2 in k8s.BUILTIN and v2.also_served == ("autoscaling/v1",)
    assert v1.storage_version == "autoscaling/v2" and k8s.prefix(v1) == k8s.prefix(v2)
    assert conversion.to_storage({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
                                  "metadata": {"name": "x"}, "spec": {"maxReplicas": 2}})["apiVersion"] == \
        "autoscaling/v2"
