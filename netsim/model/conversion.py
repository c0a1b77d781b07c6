"""Conversion of an object between the versions its kind is served at (Kind.also_served): the
storage version to a served one and back, as kube-apiserver's conversion functions do, so that
one stored object reads and writes the same at every version.  A kind without a converter keeps
its fields and changes its apiVersion (a custom resource's versions: no conversion webhook).

autoscaling/v1 <-> v2 HorizontalPodAutoscaler, after k8s.io/kubernetes pkg/apis/autoscaling/v1
conversion.go: v1's targetCPUUtilizationPercentage is v2's Resource cpu Utilization metric, its
currentCPUUtilizationPercentage the matching current metric; what v1 has no field for (the other
metrics, behavior, the current metrics, conditions) rides in the autoscaling.alpha.kubernetes.io
annotations of the v1 object and comes back from them, so a v1 read-modify-write loses nothing.
Pure functions on plain dicts; imports only the standard library and netsim.model."""

from __future__ import annotations

import json
from collections.abc import Callable

from netsim.model import k8s

METRICS_ANNOTATION = "autoscaling.alpha.kubernetes.io/metrics"
CURRENT_METRICS_ANNOTATION = "autoscaling.alpha.kubernetes.io/current-metrics"
CONDITIONS_ANNOTATION = "autoscaling.alpha.kubernetes.io/conditions"
BEHAVIOR_ANNOTATION = "autoscaling.alpha.kubernetes.io/behavior"
ROUND_TRIP = (METRICS_ANNOTATION, CURRENT_METRICS_ANNOTATION, CONDITIONS_ANNOTATION, BEHAVIOR_ANNOTATION)
DEFAULT_CPU_UTILIZATION = 80  # what a v1 HPA without a target scales on (autoscaling's default)


class ConversionError(ValueError):
    """An object that cannot be converted (a round-trip annotation that is not valid JSON)."""


def default_cpu_metric() -> dict:
    """The metric an HPA that names none scales on (v1's implicit target, v2's default)."""
    return {"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION}}}


def to_version(obj: dict, api_version: str) -> dict:
    """The object at ``api_version`` (a new dict; ``obj`` itself when it is already at it)."""
    have = obj.get("apiVersion")
    if have == api_version:
        return obj
    fn = CONVERTERS.get((obj.get("kind", ""), have or "", api_version))
    if fn is None:
        return {**obj, "apiVersion": api_version}
    # The converters build spec and status anew and change only the annotations: a copy of the
    # metadata will do (a deep copy of each object was most of a 500-HPA list's conversion).
    meta = obj.get("metadata")
    return fn({**obj, "metadata": {**meta, "annotations": dict(meta["annotations"])}
               if isinstance(meta, dict) and isinstance(meta.get("annotations"), dict)
               else dict(meta) if isinstance(meta, dict) else {}})


def to_storage(obj: dict) -> dict:
    """The object at the version its kind is stored at (unchanged for a kind served at one)."""
    k = k8s.lookup(obj.get("apiVersion", ""), obj.get("kind", ""))
    return obj if k is None or not k.stored_as else to_version(obj, k.stored_as)


# -- autoscaling/v1 <-> autoscaling/v2 HorizontalPodAutoscaler ----------------------------------

def _is_cpu(metric: object, field: str) -> bool:
    """A Resource metric on cpu (its spec, field "target", or status, field "current")."""
    if not isinstance(metric, dict) or metric.get("type") != "Resource":
        return False
    res = metric.get("resource")
    return isinstance(res, dict) and res.get("name") == "cpu" and isinstance(res.get(field), dict)


def _cpu_utilization(metric: object) -> int | None:
    """v2's spec metric as v1's targetCPUUtilizationPercentage, if it is one."""
    if _is_cpu(metric, "target"):
        target = metric["resource"]["target"]
        if target.get("type") == "Utilization" and target.get("averageUtilization") is not None:
            return target["averageUtilization"]
    return None


def _annotations(obj: dict) -> dict:
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta.get("annotations"), dict):
        meta["annotations"] = {}
    return meta["annotations"]


def _drop_empty_annotations(obj: dict) -> None:
    if obj.get("metadata", {}).get("annotations") == {}:
        del obj["metadata"]["annotations"]


def hpa_v2_to_v1(obj: dict) -> dict:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ann = _annotations(obj)
    for a in ROUND_TRIP:  # v2 carries none of them: what is there is stale
        ann.pop(a, None)
    v1spec = {k: spec[k] for k in ("scaleTargetRef", "minReplicas", "maxReplicas") if k in spec}
    others = []
    cpu_taken = False
    for m in spec.get("metrics") or []:
        cpu = _cpu_utilization(m)
        if cpu is not None and not cpu_taken:
            v1spec["targetCPUUtilizationPercentage"] = cpu
            cpu_taken = True
        else:
            others.append(m)
    if others:
        ann[METRICS_ANNOTATION] = json.dumps(others, separators=(",", ":"))
    if spec.get("behavior"):
        ann[BEHAVIOR_ANNOTATION] = json.dumps(spec["behavior"], separators=(",", ":"))
    v1status = {k: status[k] for k in ("observedGeneration", "lastScaleTime") if k in status}
    v1status["currentReplicas"] = status.get("currentReplicas", 0)
    v1status["desiredReplicas"] = status.get("desiredReplicas", 0)
    current = status.get("currentMetrics") or []
    for m in current:
        if _is_cpu(m, "current") and m["resource"]["current"].get("averageUtilization") is not None:
            v1status["currentCPUUtilizationPercentage"] = m["resource"]["current"]["averageUtilization"]
            break
    if current:
        # The whole list, cpu included: its raw value has no v1 field.
        ann[CURRENT_METRICS_ANNOTATION] = json.dumps(current, separators=(",", ":"))
    if status.get("conditions"):
        ann[CONDITIONS_ANNOTATION] = json.dumps(status["conditions"], separators=(",", ":"))
    _drop_empty_annotations(obj)
    out = {k: v for k, v in obj.items() if k not in ("spec", "status")}
    return {**out, "apiVersion": "autoscaling/v1", "spec": v1spec, "status": v1status}


def _from_annotation(ann: dict, name: str, want: type) -> object:
    text = ann.pop(name, None)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"metadata.annotations[{name}]: not valid JSON ({exc}); fix: remove the "
                              "annotation or set it to the JSON the server wrote") from None
    if not isinstance(value, want):
        raise ConversionError(f"metadata.annotations[{name}]: must be a JSON {want.__name__}")
    return value


def hpa_v1_to_v2(obj: dict) -> dict:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ann = _annotations(obj)
    v2spec = {k: spec[k] for k in ("scaleTargetRef", "minReplicas", "maxReplicas") if k in spec}
    metrics = []
    if spec.get("targetCPUUtilizationPercentage") is not None:
        metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": spec["targetCPUUtilizationPercentage"]}}})
    metrics += _from_annotation(ann, METRICS_ANNOTATION, list) or []
    if not metrics:  # v1's implicit target, explicit in v2
        metrics = [default_cpu_metric()]
    v2spec["metrics"] = metrics
    behavior = _from_annotation(ann, BEHAVIOR_ANNOTATION, dict)
    if behavior:
        v2spec["behavior"] = behavior
    v2status = {k: status[k] for k in ("observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas")
                if k in status}
    current = _from_annotation(ann, CURRENT_METRICS_ANNOTATION, list)
    if current is None and status.get("currentCPUUtilizationPercentage") is not None:
        current = [{"type": "Resource", "resource": {"name": "cpu", "current": {
            "averageUtilization": status["currentCPUUtilizationPercentage"]}}}]
    if current:
        v2status["currentMetrics"] = current
    conditions = _from_annotation(ann, CONDITIONS_ANNOTATION, list)
    if conditions:
        v2status["conditions"] = conditions
    _drop_empty_annotations(obj)
    out = {k: v for k, v in obj.items() if k not in ("spec", "status")}
    # v1 always writes both counts; zeros alone are no status at all (v2 -> v1 -> v2 stays the same).
    has_status = any(v != 0 for v in v2status.values())
    return {**out, "apiVersion": "autoscaling/v2", "spec": v2spec, **({"status": v2status} if has_status else {})}


# (kind, from apiVersion, to apiVersion) -> the function converting a copy of the object.
CONVERTERS: dict[tuple[str, str, str], Callable[[dict], dict]] = {
    ("HorizontalPodAutoscaler", "autoscaling/v2", "autoscaling/v1"): hpa_v2_to_v1,
    ("HorizontalPodAutoscaler", "autoscaling/v1", "autoscaling/v2"): hpa_v1_to_v2,
}
