"""The list merge keys and patch strategies of the built-in kinds: the patchMergeKey and
patchStrategy struct tags of k8s.io/api, written once.  The API server's OpenAPI documents read
them by type (x-kubernetes-patch-merge-key / -strategy); strategic merge patch and server-side
apply read them by the path of a field in an object, found by walking the few types that lead
from a kind to a tagged field.

Types are named as the `kubernetes` client's generated models (V1PodSpec), fields by their JSON
names.  tests/unit/test_mergekeys.py checks every type, field and edge here against those models.
Pure data and two small functions.  May use: the standard library only."""

from __future__ import annotations

from collections.abc import Iterable

# (type, field) -> (merge key, strategy).  Strategy "merge" with key None: a set of primitives;
# a field absent here is atomic (replaced whole), as tolerations, taints, envFrom, args are.
FIELDS: dict[tuple[str, str], tuple[str | None, str]] = {
    ("V1ObjectMeta", "ownerReferences"): ("uid", "merge"),
    ("V1ObjectMeta", "finalizers"): (None, "merge"),
    ("V1PodSpec", "containers"): ("name", "merge"),
    ("V1PodSpec", "initContainers"): ("name", "merge"),
    ("V1PodSpec", "ephemeralContainers"): ("name", "merge"),
    ("V1PodSpec", "volumes"): ("name", "merge,retainKeys"),
    ("V1PodSpec", "imagePullSecrets"): ("name", "merge"),
    ("V1PodSpec", "hostAliases"): ("ip", "merge"),
    ("V1PodSpec", "topologySpreadConstraints"): ("topologyKey", "merge"),
    ("V1PodSpec", "resourceClaims"): ("name", "merge,retainKeys"),
    ("V1PodSpec", "schedulingGates"): ("name", "merge"),
    ("V1Container", "ports"): ("containerPort", "merge"),
    ("V1Container", "env"): ("name", "merge"),
    ("V1Container", "volumeMounts"): ("mountPath", "merge"),
    ("V1Container", "volumeDevices"): ("devicePath", "merge"),
    ("V1EphemeralContainer", "ports"): ("containerPort", "merge"),
    ("V1EphemeralContainer", "env"): ("name", "merge"),
    ("V1EphemeralContainer", "volumeMounts"): ("mountPath", "merge"),
    ("V1EphemeralContainer", "volumeDevices"): ("devicePath", "merge"),
    ("V1PodStatus", "conditions"): ("type", "merge"),
    ("V1PodStatus", "podIPs"): ("ip", "merge"),
    ("V1PodStatus", "hostIPs"): ("ip", "merge"),
    ("V1PodStatus", "resourceClaimStatuses"): ("name", "merge,retainKeys"),
    ("V1ServiceSpec", "ports"): ("port", "merge"),
    ("V1ServiceStatus", "conditions"): ("type", "merge"),
    ("V1NodeSpec", "podCIDRs"): (None, "merge"),
    ("V1NodeStatus", "conditions"): ("type", "merge"),
    ("V1NodeStatus", "addresses"): ("type", "merge"),
    ("V1NamespaceStatus", "conditions"): ("type", "merge"),
    ("V1ServiceAccount", "secrets"): ("name", "merge"),
    ("V1PersistentVolumeClaimStatus", "conditions"): ("type", "merge"),
    ("V1ReplicationControllerStatus", "conditions"): ("type", "merge"),
    ("V1DeploymentSpec", "strategy"): (None, "retainKeys"),
    ("V1DeploymentStatus", "conditions"): ("type", "merge"),
    ("V1ReplicaSetStatus", "conditions"): ("type", "merge"),
    ("V1DaemonSetStatus", "conditions"): ("type", "merge"),
    ("V1StatefulSetStatus", "conditions"): ("type", "merge"),
    ("V1JobStatus", "conditions"): ("type", "merge"),
    ("V1PodDisruptionBudgetStatus", "conditions"): ("type", "merge"),
    ("V2HorizontalPodAutoscalerStatus", "conditions"): ("type", "merge"),
    ("V1MutatingWebhookConfiguration", "webhooks"): ("name", "merge"),
    ("V1ValidatingWebhookConfiguration", "webhooks"): ("name", "merge"),
    ("V1APIServiceStatus", "conditions"): ("type", "merge"),
}

# The kinds whose objects hold a tagged field, by (apiVersion, kind).
ROOTS: dict[tuple[str, str], str] = {
    ("v1", "Pod"): "V1Pod", ("v1", "PodTemplate"): "V1PodTemplate", ("v1", "Service"): "V1Service",
    ("v1", "Node"): "V1Node", ("v1", "Namespace"): "V1Namespace", ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("v1", "ReplicationController"): "V1ReplicationController",
    ("apps/v1", "Deployment"): "V1Deployment", ("apps/v1", "ReplicaSet"): "V1ReplicaSet",
    ("apps/v1", "DaemonSet"): "V1DaemonSet", ("apps/v1", "StatefulSet"): "V1StatefulSet",
    ("batch/v1", "Job"): "V1Job", ("batch/v1", "CronJob"): "V1CronJob",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler",
    ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"): "V1MutatingWebhookConfiguration",
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"): "V1ValidatingWebhookConfiguration",
    ("apiregistration.k8s.io/v1", "APIService"): "V1APIService",
}

# (type, field) -> the type of its value (of its items, for a list): the ways from the roots down
# to the tagged fields, and no further.  Every object's metadata is a V1ObjectMeta (see at()).
CONTAINS: dict[tuple[str, str], str] = {
    ("V1Pod", "spec"): "V1PodSpec", ("V1Pod", "status"): "V1PodStatus",
    ("V1PodTemplate", "template"): "V1PodTemplateSpec",
    ("V1PodTemplateSpec", "metadata"): "V1ObjectMeta", ("V1PodTemplateSpec", "spec"): "V1PodSpec",
    ("V1PodSpec", "containers"): "V1Container", ("V1PodSpec", "initContainers"): "V1Container",
    ("V1PodSpec", "ephemeralContainers"): "V1EphemeralContainer",
    ("V1Service", "spec"): "V1ServiceSpec", ("V1Service", "status"): "V1ServiceStatus",
    ("V1Node", "spec"): "V1NodeSpec", ("V1Node", "status"): "V1NodeStatus",
    ("V1Namespace", "status"): "V1NamespaceStatus",
    ("V1PersistentVolumeClaim", "metadata"): "V1ObjectMeta",  # also a StatefulSet's claim template
    ("V1PersistentVolumeClaim", "status"): "V1PersistentVolumeClaimStatus",
    ("V1ReplicationController", "spec"): "V1ReplicationControllerSpec",
    ("V1ReplicationController", "status"): "V1ReplicationControllerStatus",
    ("V1ReplicationControllerSpec", "template"): "V1PodTemplateSpec",
    ("V1Deployment", "spec"): "V1DeploymentSpec", ("V1Deployment", "status"): "V1DeploymentStatus",
    ("V1DeploymentSpec", "template"): "V1PodTemplateSpec",
    ("V1ReplicaSet", "spec"): "V1ReplicaSetSpec", ("V1ReplicaSet", "status"): "V1ReplicaSetStatus",
    ("V1ReplicaSetSpec", "template"): "V1PodTemplateSpec",
    ("V1DaemonSet", "spec"): "V1DaemonSetSpec", ("V1DaemonSet", "status"): "V1DaemonSetStatus",
    ("V1DaemonSetSpec", "template"): "V1PodTemplateSpec",
    ("V1StatefulSet", "spec"): "V1StatefulSetSpec", ("V1StatefulSet", "status"): "V1StatefulSetStatus",
    ("V1StatefulSetSpec", "template"): "V1PodTemplateSpec",
    ("V1StatefulSetSpec", "volumeClaimTemplates"): "V1PersistentVolumeClaim",
    ("V1Job", "spec"): "V1JobSpec", ("V1Job", "status"): "V1JobStatus",
    ("V1JobSpec", "template"): "V1PodTemplateSpec",
    ("V1CronJob", "spec"): "V1CronJobSpec", ("V1CronJobSpec", "jobTemplate"): "V1JobTemplateSpec",
    ("V1JobTemplateSpec", "metadata"): "V1ObjectMeta", ("V1JobTemplateSpec", "spec"): "V1JobSpec",
    ("V1PodDisruptionBudget", "status"): "V1PodDisruptionBudgetStatus",
    ("V2HorizontalPodAutoscaler", "status"): "V2HorizontalPodAutoscalerStatus",
    ("V1APIService", "status"): "V1APIServiceStatus",
}

ANY_KIND = frozenset(ROOTS.values())


def roots(obj: object) -> frozenset[str]:
    """The types an object's top level may be: its kind's; every root for a document that does
    not say its kind (a bare patch fragment); none for other kinds (custom resources, kinds
    without tagged lists), whose lists other than metadata's are atomic."""
    if not isinstance(obj, dict) or not obj.get("kind"):
        return ANY_KIND
    root = ROOTS.get((obj.get("apiVersion", ""), obj["kind"]))
    return frozenset((root,)) if root else frozenset()


def at(types: Iterable[str], path: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(merge key, strategy) of the field at path (field names, list indexes left out) below an
    object of one of types; (None, None) for an untagged field."""
    if not path:
        return None, None
    here = set(types)
    for depth, field in enumerate(path[:-1]):
        here = {CONTAINS[(t, field)] for t in here if (t, field) in CONTAINS}
        if depth == 0 and field == "metadata":
            here.add("V1ObjectMeta")
        if not here:
            return None, None
    found = {FIELDS[(t, path[-1])] for t in here if (t, path[-1]) in FIELDS}
    # Types a path reaches together agree on the field (status.conditions: merge by type).
    return min(found, key=repr) if found else (None, None)
