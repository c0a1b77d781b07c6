"""Deployment and ReplicaSet status as kube-controller-manager writes them: counts (fields the
API omits when zero left out), observedGeneration, and a Deployment's Available and Progressing
conditions, which `kubectl rollout status` and `kubectl wait --for=condition=Available` read.
Pure functions of the objects; knows nothing but their shapes."""

from __future__ import annotations


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))


def _active(pod: dict) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and \
        pod.get("status", {}).get("phase", "Pending") not in ("Succeeded", "Failed")


def _nonzero(status: dict, keep: tuple[str, ...] = ()) -> dict:
    return {k: v for k, v in status.items() if v or k in keep}


def replicaset(rs: dict, pods: list[dict]) -> dict:
    live = [p for p in pods if _active(p)]
    ready = sum(_ready(p) for p in live)
    return _nonzero({"replicas": len(live), "fullyLabeledReplicas": len(live), "readyReplicas": ready,
                     "availableReplicas": ready, "observedGeneration": rs["metadata"].get("generation", 1)},
                    keep=("replicas",))


def max_unavailable(d: dict) -> int:
    """RollingUpdate's maxUnavailable resolved against spec.replicas (25% by default, rounded
    down); 0 for Recreate."""
    strategy = d["spec"].get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    replicas = d["spec"].get("replicas", 1)
    if isinstance(value, str) and value.endswith("%"):
        return int(replicas * int(value[:-1]) // 100)
    return min(int(value), replicas)


def _condition(old: list[dict], type_: str, status: str, reason: str, message: str, now: str) -> dict:
    """A condition that keeps its times while it says the same thing."""
    prev = next((c for c in old if c.get("type") == type_), None)
    if prev and (prev.get("status"), prev.get("reason"), prev.get("message")) == (status, reason, message):
        return prev
    transition = prev["lastTransitionTime"] if prev and prev.get("status") == status and \
        prev.get("lastTransitionTime") else now
    return {"type": type_, "status": status, "lastUpdateTime": now, "lastTransitionTime": transition,
            "reason": reason, "message": message}


def deployment(d: dict, new_rs: str, pods_by_rs: dict[str, list[dict]], created: bool, old: dict, now: str) -> dict:
    """The Deployment's status: ``pods_by_rs`` its ReplicaSets' pods, ``new_rs`` the one of its
    current template, ``created`` whether this pass created it, ``old`` the status it has."""
    want = d["spec"].get("replicas", 1)
    live = [p for ps in pods_by_rs.values() for p in ps if _active(p)]
    updated = sum(1 for p in pods_by_rs.get(new_rs, []) if _active(p))
    ready = sum(_ready(p) for p in live)
    generation = d["metadata"].get("generation", 1)
    status = _nonzero({"observedGeneration": generation, "replicas": len(live), "updatedReplicas": updated,
                       "readyReplicas": ready, "availableReplicas": ready,
                       "unavailableReplicas": max(want - ready, 0)})
    conditions = old.get("conditions") or []
    if ready >= want - max_unavailable(d):
        available = _condition(conditions, "Available", "True", "MinimumReplicasAvailable",
                               "Deployment has minimum availability.", now)
    else:
        available = _condition(conditions, "Available", "False", "MinimumReplicasUnavailable",
                               "Deployment does not have minimum availability.", now)
    if updated == want and len(live) == want and ready == want:
        progressing = _condition(conditions, "Progressing", "True", "NewReplicaSetAvailable",
                                 f'ReplicaSet "{new_rs}" has successfully progressed.', now)
    elif created:
        progressing = _condition(conditions, "Progressing", "True", "NewReplicaSetCreated",
                                 f'Created new replica set "{new_rs}"', now)
    else:
        progressing = _condition(conditions, "Progressing", "True", "ReplicaSetUpdated",
                                 f'ReplicaSet "{new_rs}" is progressing.', now)
    status["conditions"] = [available, progressing]
    return status


__all__ = ["deployment", "max_unavailable", "replicaset"]
