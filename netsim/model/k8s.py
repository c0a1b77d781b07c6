"""Kubernetes objects as netsim keeps them: kinds, store keys, validation and selectors.

Objects stay plain Kubernetes JSON (dicts) everywhere inside netsim.  Pydantic models check
the fields netsim acts on when a manifest comes in, and let every other field through, so
ordinary manifests apply unmodified.  A bad document gets a :class:`ManifestError` naming the
file, the document, the field and the fix.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from netsim.model import calico, gatewayapi

REGISTRY = "/registry/"


@dataclass(frozen=True)
class Kind:
    kind: str
    api_version: str
    plural: str
    namespaced: bool
    aliases: tuple[str, ...] = ()  # kubectl's short names
    # Where its objects live under /registry/: the plural for the built-in kinds (as kube-apiserver
    # keeps them), "<group>/<plural>" for custom resources and for a kind name two groups share.
    storage: str = ""
    categories: tuple[str, ...] = ()
    acted: bool = False  # netsim's controllers and agents act on it; the others are only stored
    # A custom resource's additionalPrinterColumns for this version (its CRD's, read-only; empty:
    # NAME and AGE); None for a built-in kind, which the API server's own printers show.
    printer_columns: tuple[dict, ...] | None = field(default=None, compare=False)
    # A built-in kind served at more than one version is declared once, at its storage version,
    # naming the others here; SERVED holds a Kind for each of them, with stored_as set.  Objects
    # are stored at the storage version and converted (netsim.model.conversion) on the way in
    # and out, as kube-apiserver serves autoscaling/v1 and v2 HorizontalPodAutoscalers.
    also_served: tuple[str, ...] = ()
    stored_as: str = ""  # the api_version its objects are stored at ("": its own)

    @property
    def storage_version(self) -> str:
        return self.stored_as or self.api_version

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def resource(self) -> str:
        return self.storage or self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()


def _acted(*args, **kw) -> Kind:
    return Kind(*args, acted=True, categories=("all",) if args[0] in _ALL_CATEGORY else (), **kw)


_ALL_CATEGORY = {"Pod", "Service", "Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job"}

GATEWAY_API = "gateway.networking.k8s.io"


def _column(name: str, path: str, type_: str = "string", priority: int = 0) -> dict:
    return {"name": name, "type": type_, "jsonPath": path, **({"priority": priority} if priority else {})}


_AGE_COLUMN = _column("Age", ".metadata.creationTimestamp", "date")
_GATEWAY_CLASS_COLUMNS = (_column("Controller", ".spec.controllerName"),
                          _column("Accepted", '.status.conditions[?(@.type=="Accepted")].status'), _AGE_COLUMN,
                          _column("Description", ".spec.description", priority=1))
_GATEWAY_COLUMNS = (_column("Class", ".spec.gatewayClassName"), _column("Address", ".status.addresses[*].value"),
                    _column("Programmed", '.status.conditions[?(@.type=="Programmed")].status'), _AGE_COLUMN)
_HTTPROUTE_COLUMNS = (_column("Hostnames", ".spec.hostnames"), _AGE_COLUMN)

# The kinds netsim acts on, then the built-in kinds it only stores (so that real-world manifests
# with a ServiceAccount, a Role or an Ingress apply whole, and kubectl finds them).
BUILTIN: tuple[Kind, ...] = (
    _acted("Namespace", "v1", "namespaces", False, ("ns",)),
    _acted("Node", "v1", "nodes", False, ("no",)),
    _acted("Pod", "v1", "pods", True, ("po",)),
    _acted("Service", "v1", "services", True, ("svc",)),
    _acted("ConfigMap", "v1", "configmaps", True, ("cm",)),
    _acted("Deployment", "apps/v1", "deployments", True, ("deploy",)),
    _acted("ReplicaSet", "apps/v1", "replicasets", True, ("rs",)),
    _acted("DaemonSet", "apps/v1", "daemonsets", True, ("ds",)),
    _acted("StatefulSet", "apps/v1", "statefulsets", True, ("sts",)),
    _acted("Job", "batch/v1", "jobs", True, ()),
    _acted("EndpointSlice", "discovery.k8s.io/v1", "endpointslices", True, ()),
    _acted("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies", True, ("netpol",)),
    _acted("Ingress", "networking.k8s.io/v1", "ingresses", True, ("ing",)),
    _acted("IngressClass", "networking.k8s.io/v1", "ingressclasses", False),
    Kind("ServiceAccount", "v1", "serviceaccounts", True, ("sa",)),
    Kind("Secret", "v1", "secrets", True),
    Kind("Endpoints", "v1", "endpoints", True, ("ep",)),
    Kind("Event", "v1", "events", True, ("ev",)),
    Kind("LimitRange", "v1", "limitranges", True, ("limits",)),
    Kind("ResourceQuota", "v1", "resourcequotas", True, ("quota",)),
    Kind("PersistentVolumeClaim", "v1", "persistentvolumeclaims", True, ("pvc",)),
    Kind("PersistentVolume", "v1", "persistentvolumes", False, ("pv",)),
    Kind("PodTemplate", "v1", "podtemplates", True),
    Kind("ReplicationController", "v1", "replicationcontrollers", True, ("rc",)),
    Kind("ControllerRevision", "apps/v1", "controllerrevisions", True),
    Kind("CronJob", "batch/v1", "cronjobs", True, ("cj",)),
    Kind("HorizontalPodAutoscaler", "autoscaling/v2", "horizontalpodautoscalers", True, ("hpa",),
         also_served=("autoscaling/v1",)),
    Kind("PodDisruptionBudget", "policy/v1", "poddisruptionbudgets", True, ("pdb",)),
    Kind("Role", "rbac.authorization.k8s.io/v1", "roles", True),
    Kind("RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings", True),
    Kind("ClusterRole", "rbac.authorization.k8s.io/v1", "clusterroles", False),
    Kind("ClusterRoleBinding", "rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    Kind("Lease", "coordination.k8s.io/v1", "leases", True),
    Kind("Event", "events.k8s.io/v1", "events", True, ("ev",), storage="events.k8s.io/events"),
    Kind("PriorityClass", "scheduling.k8s.io/v1", "priorityclasses", False, ("pc",)),
    Kind("StorageClass", "storage.k8s.io/v1", "storageclasses", False, ("sc",)),
    Kind("CSIDriver", "storage.k8s.io/v1", "csidrivers", False),
    Kind("VolumeAttachment", "storage.k8s.io/v1", "volumeattachments", False),
    Kind("RuntimeClass", "node.k8s.io/v1", "runtimeclasses", False),
    Kind("CustomResourceDefinition", "apiextensions.k8s.io/v1", "customresourcedefinitions", False,
         ("crd", "crds")),
    Kind("MutatingWebhookConfiguration", "admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", False),
    Kind("ValidatingWebhookConfiguration", "admissionregistration.k8s.io/v1",
         "validatingwebhookconfigurations", False),
    Kind("ValidatingAdmissionPolicy", "admissionregistration.k8s.io/v1", "validatingadmissionpolicies", False),
    Kind("ValidatingAdmissionPolicyBinding", "admissionregistration.k8s.io/v1",
         "validatingadmissionpolicybindings", False),
    Kind("APIService", "apiregistration.k8s.io/v1", "apiservices", False),
    Kind("FlowSchema", "flowcontrol.apiserver.k8s.io/v1", "flowschemas", False),
    Kind("PriorityLevelConfiguration", "flowcontrol.apiserver.k8s.io/v1", "prioritylevelconfigurations", False),
    Kind("CertificateSigningRequest", "certificates.k8s.io/v1", "certificatesigningrequests", False, ("csr",)),
    # The Gateway API's core (GATEWAY-HTTP), served as built-ins with the columns and versions of
    # gateway-api's standard CRDs (config/crd/standard), stored where those CRDs would store them.
    _acted("GatewayClass", f"{GATEWAY_API}/v1", "gatewayclasses", False, ("gc",),
           storage=f"{GATEWAY_API}/gatewayclasses", also_served=(f"{GATEWAY_API}/v1beta1",),
           printer_columns=_GATEWAY_CLASS_COLUMNS),
    _acted("Gateway", f"{GATEWAY_API}/v1", "gateways", True, ("gtw",), storage=f"{GATEWAY_API}/gateways",
           also_served=(f"{GATEWAY_API}/v1beta1",), printer_columns=_GATEWAY_COLUMNS),
    _acted("HTTPRoute", f"{GATEWAY_API}/v1", "httproutes", True, (), storage=f"{GATEWAY_API}/httproutes",
           also_served=(f"{GATEWAY_API}/v1beta1",), printer_columns=_HTTPROUTE_COLUMNS),
    _acted("ReferenceGrant", f"{GATEWAY_API}/v1beta1", "referencegrants", True, ("refgrant",),
           storage=f"{GATEWAY_API}/referencegrants", also_served=(f"{GATEWAY_API}/v1",),
           printer_columns=(_AGE_COLUMN,)),
    # Calico's datastore (Kubernetes datastore mode): upstream's CRDs, served as built-ins.
    *(_acted(kind, calico.API_VERSION, plural, False, aliases, storage=f"{calico.GROUP}/{plural}",
             printer_columns=(_AGE_COLUMN,)) for kind, plural, aliases in calico.KINDS),
)

# The other versions the built-in kinds are served at (their also_served), each stored as its kind's.
SERVED: tuple[Kind, ...] = tuple(replace(k, api_version=v, also_served=(), stored_as=k.api_version,
                                         storage=k.resource)
                                 for k in BUILTIN for v in k.also_served)

# Every kind this process knows: the built-in ones at every version served, and custom resources
# once their CustomResourceDefinition is registered (register/unregister; the API server does it).
ALL: dict[tuple[str, str], Kind] = {(k.api_version, k.kind): k for k in BUILTIN + SERVED}
# By kind name alone (the first of a name: core/v1 Event), as netsim's own verbs and keys use it.
KINDS: dict[str, Kind] = {}
for _k in BUILTIN:
    KINDS.setdefault(_k.kind, _k)
BY_PLURAL = {k.resource: k for k in BUILTIN}


def lookup(api_version: str, kind: str) -> Kind | None:
    """The kind of a document, by its apiVersion and kind (a custom resource once registered)."""
    return ALL.get((api_version, kind))


def kind_of(obj: dict) -> Kind:
    k = ALL.get((obj.get("apiVersion"), obj.get("kind")))
    return k if k is not None else KINDS[obj["kind"]]


def register(k: Kind) -> None:
    """A custom resource's kind (from its CRD), stored under "<group>/<plural>".  A CRD for a
    kind netsim serves as a built-in (gateway-api's standard-install.yaml) is stored and
    changes nothing: the built-in stays."""
    if (k.api_version, k.kind) in _BUILTIN_GVK:
        return
    ALL[(k.api_version, k.kind)] = k
    BY_PLURAL[k.resource] = k


def unregister(api_version: str, kind: str) -> None:
    if (api_version, kind) in _BUILTIN_GVK:
        return
    k = ALL.pop((api_version, kind), None)
    if k is not None and BY_PLURAL.get(k.resource) is k:
        del BY_PLURAL[k.resource]


def crd_kinds(crd: dict) -> list[Kind]:
    """The kinds a CustomResourceDefinition serves, one per served version, all stored under
    /registry/<group>/<plural>/, each with that version's additionalPrinterColumns (none for a
    CRD without group, plural and kind)."""
    spec = crd.get("spec") if isinstance(crd.get("spec"), dict) else {}
    names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
    group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
    if not (group and plural and kind):
        return []
    aliases = tuple(names.get("shortNames") or ()) + ((names["singular"],) if names.get("singular") else ())
    return [Kind(kind, f"{group}/{v['name']}", plural, spec.get("scope", "Namespaced") == "Namespaced",
                 aliases, storage=f"{group}/{plural}", categories=tuple(names.get("categories") or ()),
                 printer_columns=tuple(v.get("additionalPrinterColumns") or ()))
            for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("served", True) and v.get("name")]


def is_crd(obj: dict) -> bool:
    return obj.get("kind") == "CustomResourceDefinition" and builtin(obj)


_BUILTIN_GVK = frozenset((k.api_version, k.kind) for k in BUILTIN + SERVED)


def builtin(obj: dict) -> bool:
    """An object of a built-in kind (not a custom resource, which only the API server knows)."""
    return (obj.get("apiVersion"), obj.get("kind")) in _BUILTIN_GVK


def acted_on(obj: dict) -> bool:
    """An object of a kind netsim's controllers and agents act on (its informers keep only these)."""
    k = KINDS.get(obj.get("kind"))
    return k is not None and k.acted and k.api_version == obj.get("apiVersion")


def kind_named(word: str) -> Kind | None:
    """The kind a user typed: `pods`, `pod`, `po`, `Pod`, `deployments.apps` ..."""
    w, _, group = word.partition(".")
    w = w.lower()
    for k in ALL.values():
        if w in (k.kind.lower(), k.plural, *k.aliases) and (not group or group == k.group):
            return k
    return None


def key(kind: str | Kind, namespace: str | None, name: str) -> str:
    k = kind if isinstance(kind, Kind) else KINDS[kind]
    return f"{REGISTRY}{k.resource}/{namespace}/{name}" if k.namespaced else f"{REGISTRY}{k.resource}/{name}"


def prefix(kind: str | Kind, namespace: str | None = None) -> str:
    k = kind if isinstance(kind, Kind) else KINDS[kind]
    if k.namespaced and namespace:
        return f"{REGISTRY}{k.resource}/{namespace}/"
    return f"{REGISTRY}{k.resource}/"


def kind_of_key(store_key: str) -> str | None:
    rest = store_key.removeprefix(REGISTRY)
    head, _, tail = rest.partition("/")
    k = BY_PLURAL.get(head)
    if k is None and "." in head:  # a custom resource's or a group's own: <group>/<plural>/...
        k = BY_PLURAL.get(f"{head}/{tail.partition('/')[0]}")
    return k.kind if k else None


def key_of(obj: dict) -> str:
    meta = obj["metadata"]
    return key(kind_of(obj), meta.get("namespace"), meta["name"])


def ref(obj: dict) -> str:
    """How kubectl names an object in messages: pod/web-1 or deployment.apps/web."""
    meta = obj["metadata"]
    ns = meta.get("namespace")
    return f"{obj['kind'].lower()}/{ns + '/' if ns else ''}{meta['name']}"


def template_hash(template: dict) -> str:
    """Stable hash of a pod template, as the Deployment controller's pod-template-hash."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


# -- label selectors ---------------------------------------------------------------------------

def selector_matches(selector: dict | None, labels: dict | None) -> bool:
    """A LabelSelector (matchLabels + matchExpressions).  An empty selector matches everything;
    None matches nothing (as for a Service without a selector)."""
    if selector is None:
        return False
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        k, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(k) not in values:
            return False
        if op == "NotIn" and k in labels and labels[k] in values:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def service_selects(service: dict, pod: dict) -> bool:
    selector = (service.get("spec") or {}).get("selector")
    if not selector:
        return False
    return selector_matches({"matchLabels": selector}, pod["metadata"].get("labels"))


# -- validation --------------------------------------------------------------------------------

DNS_LABEL_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_RE, max_length=63)]
DnsSubdomain = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_RE, max_length=253)]
PortName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=15)]
PortNumber = Annotated[int, Field(ge=1, le=65535)]
Protocol = Literal["TCP", "UDP", "SCTP"]

FIX_HINTS = {
    "name": "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
    "namespace": "use a DNS label: lowercase letters, digits and '-'",
    "containerPort": "use a port number from 1 to 65535",
    "port": "use a port number from 1 to 65535",
    "nodePort": "use a port number from 30000 to 32767",
    "protocol": "use TCP, UDP or SCTP",
    "targetPort": "use a port number or the name of a container port",
    "replicas": "use a whole number, 0 or more",
    "type": "use ClusterIP, NodePort, LoadBalancer or ExternalName",
    "operator": "use In, NotIn, Exists or DoesNotExist",
    "restartPolicy": "use Always, OnFailure or Never",
    "externalTrafficPolicy": "use Cluster or Local",
    "internalTrafficPolicy": "use Cluster or Local",
    "sessionAffinity": "use None or ClientIP",
    "clusterIP": "use an IPv4 address inside the service network, or None for a headless Service",
}


class _Open(BaseModel):
    """Fields netsim reads are checked; the rest of the Kubernetes schema passes through."""
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class TemplateMeta(_Open):
    name: DnsSubdomain | None = None
    generateName: str | None = None
    namespace: DnsLabel | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ObjectMeta(TemplateMeta):

    @model_validator(mode="after")
    def _named(self) -> ObjectMeta:
        if not self.name and not self.generateName:
            raise ValueError("name or generateName is required")
        return self


class LabelSelectorRequirement(_Open):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(_Open):
    matchLabels: dict[str, str] = Field(default_factory=dict)
    matchExpressions: list[LabelSelectorRequirement] = Field(default_factory=list)


class ContainerPort(_Open):
    containerPort: PortNumber
    name: PortName | None = None
    protocol: Protocol = "TCP"
    hostPort: PortNumber | None = None


class Container(_Open):
    name: DnsLabel
    image: str | None = None
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    ports: list[ContainerPort] = Field(default_factory=list)


class Toleration(_Open):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class PodSpec(_Open):
    containers: list[Container] = Field(min_length=1)
    initContainers: list[Container] = Field(default_factory=list)
    nodeName: str | None = None
    nodeSelector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    restartPolicy: Literal["Always", "OnFailure", "Never"] = "Always"
    hostNetwork: bool = False
    hostname: DnsLabel | None = None
    subdomain: DnsLabel | None = None

    @model_validator(mode="after")
    def _unique_port_names(self) -> PodSpec:
        seen: set[str] = set()
        for c in self.containers:
            for p in c.ports:
                if p.name and p.name in seen:
                    raise ValueError(f"container port name {p.name!r} is used twice in the pod; "
                                     "port names must be unique")
                if p.name:
                    seen.add(p.name)
        return self


class PodTemplate(_Open):
    metadata: TemplateMeta | None = None
    spec: PodSpec


class _Workload(_Open):
    selector: LabelSelector
    template: PodTemplate

    @model_validator(mode="after")
    def _selector_matches_template(self) -> _Workload:
        labels = self.template.metadata.labels if self.template.metadata else {}
        if not selector_matches(self.selector.model_dump(), labels):
            raise ValueError("`selector` does not match template `labels`; give the template's "
                             "metadata.labels the labels the selector asks for")
        return self


class DeploymentSpec(_Workload):
    replicas: int = Field(1, ge=0)


class DaemonSetSpec(_Workload):
    pass


class StatefulSetSpec(_Workload):
    replicas: int = Field(1, ge=0)
    serviceName: str | None = None
    podManagementPolicy: Literal["OrderedReady", "Parallel"] = "OrderedReady"


class JobSpec(_Open):
    template: PodTemplate
    completions: int = Field(1, ge=0)
    parallelism: int = Field(1, ge=0)
    selector: LabelSelector | None = None

    @model_validator(mode="after")
    def _restart_policy(self) -> JobSpec:
        if self.template.spec.restartPolicy == "Always":
            raise ValueError("spec.template.spec.restartPolicy: a Job's pods need restartPolicy "
                             "Never or OnFailure")
        return self


class ServicePort(_Open):
    name: PortName | None = None
    port: PortNumber
    targetPort: PortNumber | PortName | None = None
    nodePort: Annotated[int, Field(ge=30000, le=32767)] | None = None
    protocol: Protocol = "TCP"


class ServiceSpec(_Open):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    selector: dict[str, str] | None = None
    ports: list[ServicePort] = Field(default_factory=list)
    clusterIP: str | None = None
    externalIPs: list[ipaddress.IPv4Address] = Field(default_factory=list)
    externalName: str | None = None
    sessionAffinity: Literal["None", "ClientIP"] = "None"
    externalTrafficPolicy: Literal["Cluster", "Local"] | None = None
    internalTrafficPolicy: Literal["Cluster", "Local"] | None = None
    loadBalancerSourceRanges: list[ipaddress.IPv4Network] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ports(self) -> ServiceSpec:
        if len(self.ports) > 1:
            names = [p.name for p in self.ports]
            if any(n is None for n in names):
                raise ValueError("ports: every port needs a name when a Service has more than one")
            if len(set(names)) != len(names):
                raise ValueError("ports: port names must be unique")
        if self.type != "ExternalName" and not self.ports and self.clusterIP != "None":
            raise ValueError("ports: a Service needs at least one port (or clusterIP: None)")
        if self.clusterIP not in (None, "", "None"):
            try:
                ipaddress.IPv4Address(self.clusterIP)
            except ValueError:
                raise ValueError(f"clusterIP {self.clusterIP!r} is not an IPv4 address or None") from None
        return self


class NetworkPolicySpec(_Open):
    # Optional in the API server (a struct, not a pointer): unset or null is the empty selector,
    # every pod of the namespace.  validate() stores it as {} (see _stored_defaults).
    podSelector: LabelSelector = Field(default_factory=LabelSelector)
    policyTypes: list[Literal["Ingress", "Egress"]] = Field(default_factory=list)


class _Object(_Open):
    apiVersion: str
    kind: str
    metadata: ObjectMeta


class Pod(_Object):
    spec: PodSpec


class Deployment(_Object):
    spec: DeploymentSpec


class ReplicaSet(_Object):
    spec: DeploymentSpec


class DaemonSet(_Object):
    spec: DaemonSetSpec


class StatefulSet(_Object):
    spec: StatefulSetSpec


class Job(_Object):
    spec: JobSpec


class Service(_Object):
    spec: ServiceSpec


class NetworkPolicy(_Object):
    spec: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)


class ConfigMap(_Object):
    data: dict[str, str] = Field(default_factory=dict)


MODELS: dict[str, type[_Object]] = {
    "Pod": Pod, "Deployment": Deployment, "ReplicaSet": ReplicaSet, "DaemonSet": DaemonSet,
    "StatefulSet": StatefulSet, "Job": Job, "Service": Service, "NetworkPolicy": NetworkPolicy,
    "ConfigMap": ConfigMap,
}


class ManifestError(ValueError):
    """Everything wrong with a manifest file, each problem with its document and field."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + ("\n  ".join([""] + problems) if len(problems) > 1 else problems[0]))


class InvalidObject(ValueError):
    """A document that is not a valid object of its kind; ``causes`` are (field path, message)
    pairs, as the API server's Status details list them."""

    def __init__(self, message: str, causes: list[tuple[str, str]]):
        super().__init__(message)
        self.causes = causes


def _field(err: dict) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"]
                    if not str(p).startswith(("function-after", "union"))).replace(".[", "[")


def _problem(err: dict) -> str:
    path = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-after", "union")))
    msg = err["msg"].removeprefix("Value error, ")
    field = next((str(p) for p in reversed(err["loc"]) if isinstance(p, str) and p in FIX_HINTS), None)
    out = f"{path}: {msg}" if path else msg
    if field and err["type"] != "value_error":
        out += f"; fix: {FIX_HINTS[field]}"
    return out


# Maps of strings in the kinds netsim models, by their path (None: any key at that depth).
# Go decodes a null value in a map[string]string as "", not as a missing entry.
_STRING_MAPS = (("metadata", "labels"), ("metadata", "annotations"), ("data",), ("stringData",),
                ("binaryData",))
_STRING_MAP_NAMES = frozenset({"matchLabels", "nodeSelector"})


def string_map(kind: Any, path: tuple) -> bool:
    if path[-2:] in _STRING_MAPS[:2] or path in _STRING_MAPS[2:]:
        return True
    if kind == "Service" and path == ("spec", "selector"):
        return True
    return bool(path) and path[-1] in _STRING_MAP_NAMES


def as_decoded(doc: dict) -> dict:
    """The document as the API server decodes it into its typed objects, before validation:
    Go's encoding/json leaves a field whose value is null unset (a nil pointer, slice or map,
    dropped again by omitempty when stored), so an explicit null means the field is absent and
    the defaults for an absent field apply.  A null value inside a map of strings (labels,
    matchLabels, data ...) decodes to "".  Nulls inside lists are kept for validation to judge."""
    kind = doc.get("kind")

    def walk(value: Any, path: tuple) -> Any:
        if isinstance(value, dict):
            if path and string_map(kind, path):
                return {k: "" if v is None else v for k, v in value.items()}
            return {k: walk(v, (*path, k)) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        return value

    return walk(doc, ())


def _stored_defaults(doc: dict) -> dict:
    """Fields the API server always writes back although the manifest left them unset."""
    if doc["kind"] == "NetworkPolicy":
        # k8s.io/api networking/v1 NetworkPolicy: Spec and Spec.PodSelector are structs (no
        # pointer, and omitempty never drops a struct), so a policy stored without them reads
        # back as spec: {podSelector: {}}.  policyTypes stays unset here and is defaulted where
        # it is read (netsim.node.policy.policy_types, upstream's SetDefaults_NetworkPolicy).
        doc.setdefault("spec", {}).setdefault("podSelector", {})
    return doc


def validate(doc: Any, where: str) -> dict:
    """Check one document; returns it as the API server would store it (nulls decoded as unset,
    the defaults of _stored_defaults written), with namespace defaults left to the API."""
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: expected a Kubernetes object (a mapping), got {type(doc).__name__}")
    doc = as_decoded(doc)
    kind = doc.get("kind")
    if not kind or not doc.get("apiVersion"):
        missing = "kind" if not kind else "apiVersion"
        raise ValueError(f"{where}: {missing} is missing; every document needs apiVersion and kind")
    for field_name in ("kind", "apiVersion"):
        if not isinstance(doc[field_name], str):
            raise ValueError(f"{where}: {field_name} must be a string, got {type(doc[field_name]).__name__}")
    k = lookup(doc["apiVersion"], kind)
    if k is None:
        versions = sorted(v for v, n in ALL if n == kind)
        if versions:
            raise ValueError(f"{where}: apiVersion {doc['apiVersion']!r} for {kind}; fix: use "
                             + " or ".join(repr(v) for v in versions))
        raise ValueError(f"{where}: kind {kind!r} is not known (apiVersion {doc['apiVersion']}): neither a "
                         "built-in kind nor one of a CustomResourceDefinition in the cluster; fix: apply its "
                         "CustomResourceDefinition first")
    meta = doc.get("metadata")
    where = f"{where} ({kind} {meta.get('name', '?') if isinstance(meta, dict) else '?'})"
    # Kinds without a model (stored-only, custom resources) get their metadata checked.
    model = MODELS.get(kind, _Object) if k.acted else _Object
    try:
        model.model_validate(doc)
    except ValidationError as exc:
        errors = exc.errors()
        raise InvalidObject("; ".join(f"{where}: {_problem(e)}" for e in errors),
                            [(_field(e), _problem(e).partition(": ")[2] or _problem(e)) for e in errors]) from None
    if k.group == gatewayapi.GROUP and (causes := gatewayapi.problems(doc)):
        raise InvalidObject("; ".join(f"{where}: {f}: {m}" for f, m in causes), causes)
    if not k.namespaced and doc["metadata"].get("namespace"):
        raise InvalidObject(f"{where}: metadata.namespace: {kind} is not namespaced; remove the field",
                            [("metadata.namespace", f"{kind} is not namespaced")])
    return _stored_defaults(json.loads(json.dumps(doc)))


class Document(NamedTuple):
    """One object of a manifest and where it came from, for messages: ("web.yaml", "document 2")."""
    source: str
    where: str
    obj: dict


def parse_documents(text: str, source: str) -> list[Document]:
    """Every object in a (multi-document) YAML or JSON text, all validated: one bad document
    fails the whole file, so nothing of it is half-applied.  A CustomResourceDefinition makes
    its custom resources known to the documents after it (register), as the API server will
    once it is applied; when the file fails, the kinds it registered are forgotten again."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(source, [f"not valid YAML: {exc}"]) from None
    objects, problems, added = [], [], []
    for i, doc in enumerate(docs, 1):
        where = f"document {i}"
        items = doc.get("items") or [] if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        for j, item in enumerate(items):
            at = where if len(items) == 1 else f"{where} item {j}"
            try:
                obj = validate(item, at)
            except ValueError as exc:
                problems.append(str(exc))
                continue
            objects.append(Document(source, f"{at} ({obj['kind']} {obj['metadata'].get('name', '?')})", obj))
            if is_crd(obj):
                for k in crd_kinds(obj):
                    if (k.api_version, k.kind) not in ALL:
                        added.append(k)
                        register(k)
    if problems:
        for k in added:
            unregister(k.api_version, k.kind)
        raise ManifestError(source, problems)
    return objects


def parse_manifests(text: str, source: str) -> list[dict]:
    return [d.obj for d in parse_documents(text, source)]


def read_documents(path: str | Path) -> list[Document]:
    """The documents of a file, of every .yaml/.yml/.json in a directory (sorted), or of '-'."""
    if str(path) == "-":
        return parse_documents(sys.stdin.read(), "<stdin>")
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml", ".json"))
    elif p.exists():
        files = [p]
    else:
        raise ManifestError(str(path), ["no such file or directory"])
    return [d for f in files for d in parse_documents(f.read_text(), str(f))]


def read_manifests(path: str | Path) -> list[tuple[str, list[dict]]]:
    """(source, objects) for a file, every .yaml/.yml/.json in a directory (sorted), or '-'."""
    by_source: dict[str, list[dict]] = {}
    for d in read_documents(path):
        by_source.setdefault(d.source, []).append(d.obj)
    return list(by_source.items())
