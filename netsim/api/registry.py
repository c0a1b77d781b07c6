"""What the Kubernetes API server does between kubectl and etcd, for netsim's store.

Defaults (namespace, uid, timestamps, generation), admission checks (the namespace exists,
a Service's ClusterIP and NodePorts are free), allocation, apply as create-or-update, and
deletion with the API's semantics (graceful for pods, cascading through owners and
namespaces by the controllers).  Allocations are store keys created atomically, so two
`apply`s in parallel can never hand out the same ClusterIP or NodePort.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import ipaddress
import time
import uuid
from dataclasses import dataclass

from netsim.api import admission, crds, defaults
from netsim.api.patch import record_update
from netsim.api.store import AlreadyExists, Conflict, NotFound, Store
from netsim.model import calico, conversion, k8s

CONFIG_KEY = "/netsim/config"
ALLOC = "/netsim/alloc/"
NODEPORT_RANGE = range(30000, 32768)
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True)
class ClusterConfig:
    pod_subnet: str = "10.244.0.0/16"
    service_subnet: str = "10.96.0.0/12"
    node_cidr_mask: int = 24
    cluster_domain: str = "cluster.local"
    load_balancer_pool: str | None = None
    proxy_mode: str = "iptables"
    ipvs_scheduler: str = "rr"
    cni: str = "canal"  # canal | flannel | calico (netsim.model.scenario.Networking.cni)

    def to_json(self) -> dict:
        return {"podSubnet": self.pod_subnet, "serviceSubnet": self.service_subnet,
                "nodeCIDRMaskSize": self.node_cidr_mask, "clusterDomain": self.cluster_domain,
                "loadBalancerPool": self.load_balancer_pool, "proxyMode": self.proxy_mode,
                "ipvsScheduler": self.ipvs_scheduler, "cni": self.cni}

    @classmethod
    def from_json(cls, d: dict) -> ClusterConfig:
        return cls(d["podSubnet"], d["serviceSubnet"], d.get("nodeCIDRMaskSize", 24),
                   d.get("clusterDomain", "cluster.local"), d.get("loadBalancerPool"), d.get("proxyMode", "iptables"),
                   d.get("ipvsScheduler", "rr"), d.get("cni", "canal"))


class ApiError(Exception):
    """An error as kubectl would print it; ``reason`` and ``code`` are those of the API server's
    Status for it (most are an object the API refuses: 422 Invalid)."""

    reason = "Invalid"
    code = 422

    def __init__(self, message: str, reason: str | None = None, code: int | None = None,
                 causes: list[tuple[str, str]] | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        if code is not None:
            self.code = code
        self.causes = causes or []
        self.index: int | None = None  # of the object in what registry.apply was given


class NotFoundError(ApiError):
    reason, code = "NotFound", 404


class AlreadyExistsError(ApiError):
    reason, code = "AlreadyExists", 409


class ConflictError(ApiError):
    reason, code = "Conflict", 409


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_config(store: Store) -> ClusterConfig:
    try:
        return ClusterConfig.from_json(store.get(CONFIG_KEY))
    except NotFound:
        return ClusterConfig()


def warnings(store: Store, written: list[dict]) -> list[str]:
    """The admission warnings (netsim.api.admission.warnings) of objects just created or
    updated, each once and in order, as kubectl prints them; the cluster's config is read only
    when one of them is of a kind that may warn."""
    if not any((o.get("apiVersion"), o.get("kind")) in admission.WARNED for o in written):
        return []
    cni = read_config(store).cni
    return list(dict.fromkeys(w for o in written for w in admission.warnings(cni, o)))


def bootstrap(store: Store, config: ClusterConfig) -> None:
    """Cluster configuration and the namespaces every cluster starts with."""
    store.put(CONFIG_KEY, {"metadata": {"name": "config"}, **config.to_json()})
    for ns in SYSTEM_NAMESPACES:
        with contextlib.suppress(AlreadyExists):
            store.create(k8s.key("Namespace", None, ns), new_object(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))


# Kinds whose kube-apiserver strategy keeps metadata.generation (a controller reports the spec
# it has seen as observedGeneration); custom resources always have it, ConfigMaps, Services,
# Pods (in 1.32) and the like never do.
GENERATION_KINDS = frozenset({
    "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "ReplicationController", "Job", "CronJob",
    "GatewayClass", "Gateway", "HTTPRoute", "ReferenceGrant",  # custom resources upstream: all keep one
    "PodDisruptionBudget", "Ingress", "NetworkPolicy", "EndpointSlice", "CustomResourceDefinition",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding", "FlowSchema", "PriorityLevelConfiguration",
    *(kind for kind, _plural, _aliases in calico.KINDS)})


def has_generation(obj: dict) -> bool:
    return obj.get("kind") in GENERATION_KINDS or not k8s.builtin(obj)


def _bump_generation(meta: dict, old_meta: dict, obj: dict, changed: bool) -> None:
    if has_generation(obj):
        meta["generation"] = old_meta.get("generation", 1) + (1 if changed else 0)
    else:
        meta.pop("generation", None)


def new_object(obj: dict) -> dict:
    obj = copy.deepcopy(obj)
    meta = obj.setdefault("metadata", {})
    if not meta.get("name") and meta.get("generateName"):
        meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
    meta.setdefault("uid", str(uuid.uuid4()))
    meta.setdefault("creationTimestamp", now())
    _bump_generation(meta, {}, obj, False)
    meta.pop("resourceVersion", None)
    return defaulted(namespace_label(obj))


def defaulted(obj: dict) -> dict:
    """What the API server writes into a document on every create and update, whoever sent it:
    a Secret's stringData merged into data (base64) (upstream core/v1 conversion); a built-in
    kind's API defaults (netsim.api.defaults); a CRD Established at once; an autoscaling/v2
    HPA's minReplicas 1 and, without metrics, the 80% cpu target (SetDefaults_HorizontalPodAutoscaler)."""
    if obj.get("kind") == "Secret" and k8s.builtin(obj):
        string_data = obj.pop("stringData", None) or {}
        if string_data:
            obj["data"] = {**(obj.get("data") or {}),
                           **{k: base64.b64encode(str(v).encode()).decode() for k, v in string_data.items()}}
    if k8s.builtin(obj):
        defaults.apply_defaults(obj)
    if k8s.is_crd(obj):
        crds.established(obj)
    if (obj.get("apiVersion"), obj.get("kind")) == ("autoscaling/v2", "HorizontalPodAutoscaler") and \
            isinstance(obj.get("spec"), dict):
        obj["spec"].setdefault("minReplicas", 1)
        if not obj["spec"].get("metrics"):
            obj["spec"]["metrics"] = [conversion.default_cpu_metric()]
    return obj


NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def namespace_label(obj: dict) -> dict:
    """The label the API server keeps on every Namespace (its name), which NetworkPolicies
    select namespaces by: an apply or a `label` cannot drop or change it."""
    if obj.get("kind") == "Namespace":
        meta = obj.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), NAMESPACE_NAME_LABEL: meta["name"]}
    return obj


# -- allocation --------------------------------------------------------------------------------

NEW, HELD = "new", "held"


def _reserve(store: Store, what: str, value: str, owner: str) -> str | None:
    """NEW if this call reserved ``value`` for ``owner``, HELD if the owner had it already
    (an update of the object), None if someone else has it.  Only NEW reservations are
    released when an apply fails: a HELD one belongs to the object as stored."""
    try:
        store.create(f"{ALLOC}{what}/{value}", {"metadata": {"name": value}, "owner": owner})
        return NEW
    except AlreadyExists:
        try:
            return HELD if store.get(f"{ALLOC}{what}/{value}")["owner"] == owner else None
        except NotFound:
            return _reserve(store, what, value, owner)


def release(store: Store, what: str, value: str, owner: str) -> None:
    try:
        held = store.get(f"{ALLOC}{what}/{value}")
    except NotFound:
        return
    if held["owner"] == owner:
        with contextlib.suppress(NotFound, Conflict):
            store.delete(f"{ALLOC}{what}/{value}", int(held["metadata"]["resourceVersion"]))


def _allocate_cluster_ip(store: Store, config: ClusterConfig, owner: str, held: list) -> str:
    net = ipaddress.IPv4Network(config.service_subnet)
    # .1 is the kubernetes Service's and .10 cluster DNS's; dynamic addresses start after them,
    # at a point hashed from the Service's name so a re-created Service tends to get its old IP.
    first = int(net.network_address) + 11
    size = net.num_addresses - 12
    start = int(k8s.template_hash({"owner": owner}), 16) % size
    for i in range(size):
        ip = str(ipaddress.IPv4Address(first + (start + i) % size))
        if (got := _reserve(store, "clusterips", ip, owner)) is not None:
            if got == NEW:
                held.append(("clusterips", ip, owner))
            return ip
    raise ApiError(f"service network {net} is full: no ClusterIP left for {owner}")


def _allocate_node_port(store: Store, owner: str, taken: set[int], held: list) -> int:
    start = int(k8s.template_hash({"owner": owner, "n": len(taken)}), 16) % len(NODEPORT_RANGE)
    for i in range(len(NODEPORT_RANGE)):
        port = NODEPORT_RANGE[(start + i) % len(NODEPORT_RANGE)]
        if port not in taken and (got := _reserve(store, "nodeports", str(port), owner)) is not None:
            if got == NEW:
                held.append(("nodeports", str(port), owner))
            return port
    raise ApiError(f"no NodePort left in {NODEPORT_RANGE.start}-{NODEPORT_RANGE.stop - 1} for {owner}")


def _admit_service(store: Store, svc: dict, old: dict | None, config: ClusterConfig, held: list) -> None:
    """ClusterIP and NodePorts: kept from the old object, checked when asked for, allocated
    otherwise.  ``held`` collects what this call reserved, to release on failure."""
    spec = svc.setdefault("spec", {})
    owner = f"{svc['metadata']['namespace']}/{svc['metadata']['name']}"
    defaults.service(spec)
    stype = spec["type"]
    old_spec = (old or {}).get("spec", {})
    want_ip = spec.get("clusterIP") or old_spec.get("clusterIP")
    if old and spec.get("clusterIP") and old_spec.get("clusterIP") != spec["clusterIP"]:
        raise ApiError(f"Service {owner}: spec.clusterIP: field is immutable "
                       f"(is {old_spec.get('clusterIP')}); delete and re-create the Service to change it")
    if stype == "ExternalName":
        for f in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            spec.pop(f, None)
    elif want_ip == "None":
        spec["clusterIP"] = "None"
    elif want_ip:
        net = ipaddress.IPv4Network(config.service_subnet)
        if ipaddress.IPv4Address(want_ip) not in net:
            raise ApiError(f"Service {owner}: spec.clusterIP: {want_ip} is not in the service network "
                           f"{net}; fix: pick an address in {net} or leave clusterIP out")
        got = _reserve(store, "clusterips", want_ip, owner)
        if got is None:
            raise ApiError(f"Service {owner}: spec.clusterIP: {want_ip} is already allocated; "
                           "fix: leave clusterIP out to get a free one")
        if got == NEW:
            held.append(("clusterips", want_ip, owner))
        spec["clusterIP"] = want_ip
    else:
        spec["clusterIP"] = _allocate_cluster_ip(store, config, owner, held)
    if spec.get("clusterIP"):
        spec["clusterIPs"] = [spec["clusterIP"]]
        # netsim's service network is IPv4 only: upstream's allocator writes the single family
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
    old_ports = {(p.get("name"), p.get("port"), p.get("protocol")): p.get("nodePort")
                 for p in old_spec.get("ports", [])}
    taken: set[int] = set()
    for p in spec.get("ports", []):
        if stype not in ("NodePort", "LoadBalancer"):
            p.pop("nodePort", None)
            continue
        want = p.get("nodePort") or old_ports.get((p.get("name"), p["port"], p["protocol"]))
        if want:
            got = None if want in taken else _reserve(store, "nodeports", str(want), owner)
            if got is None:
                raise ApiError(f"Service {owner}: spec.ports nodePort {want}: provided port is already "
                               "allocated; fix: leave nodePort out to get a free one")
            if got == NEW:
                held.append(("nodeports", str(want), owner))
            p["nodePort"] = want
        else:
            p["nodePort"] = _allocate_node_port(store, owner, taken, held)
        taken.add(p["nodePort"])


def release_service(store: Store, svc: dict) -> None:
    owner = f"{svc['metadata']['namespace']}/{svc['metadata']['name']}"
    spec = svc.get("spec", {})
    if spec.get("clusterIP") not in (None, "", "None"):
        release(store, "clusterips", spec["clusterIP"], owner)
    for p in spec.get("ports", []):
        if p.get("nodePort"):
            release(store, "nodeports", str(p["nodePort"]), owner)


# -- apply -------------------------------------------------------------------------------------

def updated(old: dict, obj: dict, applying: bool = False) -> dict:
    """The object an update writes over ``old`` (PUT, and `apply` of an existing object): the
    writer's fields, the server's identity (uid, creation, deletion) and, for the kinds netsim
    acts on, the status kept; generation (on the kinds that keep one) counts changes outside
    metadata and status.  Applying also keeps what the document does not say and others wrote:
    owners and managed fields."""
    new = defaulted(copy.deepcopy(obj))
    meta, old_meta = new["metadata"], old["metadata"]
    for f in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
        if f in old_meta:
            meta[f] = old_meta[f]
    if applying:
        meta.pop("resourceVersion", None)
        for f in ("ownerReferences", "managedFields", "finalizers"):
            if f in old_meta and f not in meta:
                meta[f] = old_meta[f]
    if "status" in old and (k8s.kind_of(old).acted or applying):
        new["status"] = old["status"]
    _bump_generation(meta, old_meta, new, {k: v for k, v in old.items() if k not in ("metadata", "status")} !=
                     {k: v for k, v in new.items() if k not in ("metadata", "status")})
    return namespace_label(new)


POD_MUTABLE = {"activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"}


def _check_pod_update(old: dict, new: dict) -> None:
    # both sides defaulted: a pod stored before a default existed, or a document that leaves
    # the defaults out, is not a change
    old_spec = defaulted(copy.deepcopy(old)).get("spec", {})
    new_spec = dict(defaulted(copy.deepcopy(new)).get("spec", {}))
    if old_spec.get("nodeName") and not new_spec.get("nodeName"):
        new_spec["nodeName"] = old_spec["nodeName"]
    changed = sorted(k for k in set(old_spec) | set(new_spec)
                     if k not in POD_MUTABLE and old_spec.get(k) != new_spec.get(k))
    if changed:
        raise ApiError(f"Pod {new['metadata']['namespace']}/{new['metadata']['name']}: spec.{changed[0]}: "
                       "pod updates may not change fields other than labels, annotations, tolerations "
                       "and activeDeadlineSeconds; fix: delete the pod and apply it again")
    new["spec"] = new_spec


def _planned(store: Store, obj: dict, default_namespace: str, namespaces: set[str],
             plan: list[tuple[dict, dict | None]], config: ClusterConfig,
             held: list[tuple[str, str, str]]) -> tuple[dict, dict | None]:
    """One object of an apply, checked against the store and what comes before it, as it will
    be written, with the object it replaces (None: a create)."""
    obj = copy.deepcopy(_stored_version(obj))
    kind = k8s.kind_of(obj)
    meta = obj["metadata"]
    if kind.namespaced:
        meta["namespace"] = meta.get("namespace") or default_namespace
        if meta["namespace"] not in namespaces:
            raise NotFoundError(f'{k8s.ref(obj)}: namespaces "{meta["namespace"]}" not found; '
                                "fix: create it first (apply a Namespace, or put `kind: Namespace` "
                                "earlier in the same file)")
    elif obj["kind"] == "Namespace":
        namespaces.add(meta["name"])
    if not meta.get("name"):
        obj = new_object(obj)
    if any(k8s.key_of(p) == k8s.key_of(obj) for p, _ in plan):
        raise ApiError(f"{k8s.ref(obj)} is in what was applied more than once; keep one of them")
    try:
        old = store.get(k8s.key_of(obj))
    except NotFound:
        old = None
    if old and old["metadata"].get("deletionTimestamp"):
        raise ApiError(f"{k8s.ref(obj)} is being deleted; wait for it to go, then apply again")
    if old is not None and k8s.builtin(obj):
        admission.keep_applied_class(obj, old)
    if k8s.builtin(obj):
        refuse_invalid(obj, admission.admit(store, obj, old, pending=[p for p, _ in plan]))
    if obj["kind"] == "Pod" and old:
        _check_pod_update(old, obj)
    if obj["kind"] == "Service" and k8s.builtin(obj):
        _admit_service(store, obj, old, config, held)  # before updated(): generation sees its defaults
    if old is not None:
        obj = updated(old, obj, applying=True)
    return obj, old


def apply(store: Store, objects: list[dict], default_namespace: str = "default",
          manager: str | None = None) -> list[tuple[str, str]]:
    """Create or update every object, checked first as a whole: an object in a namespace
    that neither exists nor comes earlier in the list, or a Service asking for a taken
    address, fails the lot before anything is written.  The objects are written as create
    and replace write them (new_object, updated); ``manager`` owns the fields they set."""
    config = read_config(store)
    namespaces = {o["metadata"]["name"] for o in store.list(k8s.prefix("Namespace"))[0]
                  if not o["metadata"].get("deletionTimestamp")}
    plan: list[tuple[dict, dict | None]] = []
    held: list[tuple[str, str, str]] = []
    try:
        for index, obj in enumerate(objects):
            try:
                plan.append(_planned(store, obj, default_namespace, namespaces, plan, config, held))
            except ApiError as exc:
                exc.index = index  # which object: the caller knows its file and document
                raise
    except BaseException:
        for what, value, owner in held:
            release(store, what, value, owner)
        raise
    results = []
    for obj, old in plan:
        if old is None:
            new = new_object(obj)
            stored = store.create(k8s.key_of(obj), record_update(None, new, manager, "Update", now())
                                  if manager else new)
            crds.after_write(stored)
            results.append((k8s.ref(obj), "created"))
            continue
        if _same(old, obj):
            results.append((k8s.ref(obj), "unchanged"))
            continue
        if manager:
            obj = record_update(old, obj, manager, "Update", now())
        stored = store.update(k8s.key_of(obj), obj, int(old["metadata"]["resourceVersion"]))
        crds.after_write(stored)
        if obj["kind"] == "Service":
            _release_dropped(store, old, stored)
        results.append((k8s.ref(obj), "configured"))
    return results


def _release_dropped(store: Store, old: dict, new: dict) -> None:
    """An updated Service gives back the NodePorts (and a ClusterIP, when it became headless or
    an ExternalName) that it no longer has."""
    owner = f"{old['metadata']['namespace']}/{old['metadata']['name']}"
    kept = {p.get("nodePort") for p in new.get("spec", {}).get("ports", [])}
    for p in old.get("spec", {}).get("ports", []):
        if p.get("nodePort") and p["nodePort"] not in kept:
            release(store, "nodeports", str(p["nodePort"]), owner)
    ip = old.get("spec", {}).get("clusterIP")
    if ip not in (None, "", "None") and new.get("spec", {}).get("clusterIP") != ip:
        release(store, "clusterips", ip, owner)


def _same(old: dict, merged: dict) -> bool:
    a, b = copy.deepcopy(old), copy.deepcopy(merged)
    a["metadata"].pop("resourceVersion", None)
    b["metadata"].pop("resourceVersion", None)
    return a == b


def _get(store: Store, kind: str | k8s.Kind, namespace: str | None, name: str) -> dict:
    try:
        return store.get(k8s.key(kind, namespace, name))
    except NotFound:
        raise NotFoundError(not_found_message(kind, name)) from None


def not_found_message(kind: str | k8s.Kind, name: str) -> str:
    k = kind if isinstance(kind, k8s.Kind) else k8s.KINDS[kind]
    return f'{k.plural}{"." + k.group if k.group else ""} "{name}" not found'


def delete_object(store: Store, kind: k8s.Kind, namespace: str | None, name: str, grace_seconds: int | None = None,
                  propagation: str | None = None, preconditions: dict | None = None,
                  dry_run: bool = False) -> tuple[dict, bool]:
    """DELETE as the API server does it: the object as it was (or as marked terminating) and
    whether it is gone now.  ``preconditions`` (uid, resourceVersion) must hold (ConflictError);
    propagation Orphan strips the dependents' ownerReferences first; a grace period of 0
    removes a pod at once (kubectl delete --force --grace-period=0)."""
    obj = _get(store, kind, namespace, name)
    pre = preconditions or {}
    for field_name in ("uid", "resourceVersion"):
        if pre.get(field_name) and pre[field_name] != obj["metadata"].get(field_name):
            raise ConflictError(f"Precondition failed: {field_name.capitalize() if field_name == 'uid' else field_name}"
                                f" in precondition: {pre[field_name]}, {field_name} in object meta: "
                                f"{obj['metadata'].get(field_name)}")
    if dry_run:
        return obj, True
    if propagation == "Orphan":
        orphan_dependents(store, obj)
    _, rv = delete(store, kind, namespace, name, force=grace_seconds == 0)
    try:
        after = store.get(k8s.key(kind, namespace, name))
        return after, False
    except NotFound:
        obj["metadata"]["resourceVersion"] = str(rv)
        return obj, True


# -- one object at a time, as the API server's verbs ------------------------------------------

def _live_namespace(store: Store, obj: dict) -> None:
    k = k8s.kind_of(obj)
    if not k.namespaced:
        return
    ns = obj["metadata"]["namespace"]
    try:
        nsobj = store.get(k8s.key("Namespace", None, ns))
    except NotFound:
        raise NotFoundError(f'namespaces "{ns}" not found') from None
    if nsobj["metadata"].get("deletionTimestamp"):
        raise ApiError(f'{k8s.ref(obj)}: unable to create new content in namespace {ns} because it is being '
                       "terminated", reason="Forbidden", code=403)


def create(store: Store, obj: dict, dry_run: bool = False) -> dict:
    """POST: a new object (AlreadyExistsError if its name is taken), with the defaults and
    allocations `apply` gives it; ``obj`` is validated and has its namespace set."""
    obj = new_object(_stored_version(obj))
    _live_namespace(store, obj)
    k = k8s.key_of(obj)
    held: list[tuple[str, str, str]] = []
    if k8s.builtin(obj):  # admission and validation come before storage says the name is taken
        refuse_invalid(obj, admission.admit(store, obj, None))
    try:
        if store_has(store, k):
            raise AlreadyExistsError(f'{k8s.kind_of(obj).plural} "{obj["metadata"]["name"]}" already exists')
        if obj["kind"] == "Service" and k8s.builtin(obj):
            _admit_service(store, obj, None, read_config(store), held)
        if dry_run:
            for what, value, owner in held:
                release(store, what, value, owner)
            return obj
        stored = store.create(k, obj)
    except AlreadyExists:
        raise AlreadyExistsError(f'{k8s.kind_of(obj).plural} "{obj["metadata"]["name"]}" already exists') from None
    except BaseException:
        for what, value, owner in held:
            release(store, what, value, owner)
        raise
    crds.after_write(stored)
    return stored


def _stored_version(obj: dict) -> dict:
    """The object at its kind's storage version (an autoscaling/v1 HPA is kept as v2)."""
    try:
        return conversion.to_storage(obj)
    except conversion.ConversionError as exc:
        raise ApiError(f"{k8s.ref(obj)}: {exc}", reason="Invalid", code=422) from None


def store_has(store: Store, key: str) -> bool:
    try:
        store.get(key)
        return True
    except NotFound:
        return False


def replace(store: Store, obj: dict, subresource: str | None = None, dry_run: bool = False) -> dict:
    """PUT: the object over the stored one, at the resourceVersion the writer read if it gave
    one (ConflictError otherwise).  The main resource keeps the stored status; ``status``
    changes only the status."""
    obj = _stored_version(obj)
    k8s_kind = k8s.kind_of(obj)
    k = k8s.key_of(obj)
    try:
        old = store.get(k)
    except NotFound:
        raise NotFoundError(f'{k8s_kind.plural} "{obj["metadata"]["name"]}" not found') from None
    want_rv = obj["metadata"].get("resourceVersion")
    if want_rv and want_rv != old["metadata"]["resourceVersion"]:
        raise ConflictError(_conflict_message(k8s_kind, obj))
    if subresource == "status":
        new = copy.deepcopy(old)
        new["status"] = copy.deepcopy(obj.get("status") or {})
    else:
        new = updated(old, obj)
    if k8s.builtin(new):
        refuse_invalid(new, admission.admit(store, new, old, status_only=subresource == "status"))
    held: list[tuple[str, str, str]] = []
    try:
        if new["kind"] == "Service" and k8s.builtin(new) and subresource is None:
            _admit_service(store, new, old, read_config(store), held)
        if new["kind"] == "Pod" and subresource is None:
            _check_pod_update(old, new)
        if dry_run or _same(old, new):
            for what, value, owner in held:
                release(store, what, value, owner)
            return old if _same(old, new) else new
        try:
            stored = store.update(k, new, int(old["metadata"]["resourceVersion"]))
        except Conflict:
            raise ConflictError(_conflict_message(k8s_kind, obj)) from None
        except NotFound:
            raise NotFoundError(f'{k8s_kind.plural} "{obj["metadata"]["name"]}" not found') from None
    except BaseException:
        for what, value, owner in held:
            release(store, what, value, owner)
        raise
    if new["kind"] == "Service":
        _release_dropped(store, old, stored)
    crds.after_write(stored)
    return stored


def refuse_invalid(obj: dict, causes: list[tuple[str, str]]) -> None:
    """422 Invalid with upstream's message (`Ingress.networking.k8s.io "web" is invalid: field:
    message`, several in brackets) and the causes, when admission found any."""
    if not causes:
        return
    k = k8s.kind_of(obj)
    what = ", ".join(f"{f}: {m}" if f else m for f, m in causes)
    raise ApiError(f'{k.kind}{"." + k.group if k.group else ""} "{obj["metadata"].get("name", "")}" is invalid: '
                   + (f"[{what}]" if len(causes) > 1 else what), causes=causes)


def _conflict_message(k: k8s.Kind, obj: dict) -> str:
    group = f".{k.group}" if k.group else ""
    return (f'Operation cannot be fulfilled on {k.plural}{group} "{obj["metadata"]["name"]}": the object has '
            "been modified; please apply your changes to the latest version and try again")


def orphan_dependents(store: Store, owner: dict) -> None:
    """propagationPolicy Orphan: the dependents lose their ownerReference to ``owner``, so the
    garbage collector leaves them when it goes."""
    uid = owner["metadata"].get("uid")
    ns = owner["metadata"].get("namespace")
    for k in k8s.KINDS.values():
        if not k.namespaced or not ns:
            continue
        for o in store.list(k8s.prefix(k, ns))[0]:
            refs = o["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == uid for r in refs):
                o["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                with contextlib.suppress(Conflict, NotFound):
                    store.update(k8s.key_of(o), o, int(o["metadata"]["resourceVersion"]))


# -- delete ------------------------------------------------------------------------------------

def delete(store: Store, kind: str | k8s.Kind, namespace: str | None, name: str,
           force: bool = False) -> tuple[str, int]:
    """Delete as the API does: a scheduled pod is marked terminating and its node's agent
    removes it once its network is gone; a namespace is marked terminating and emptied by
    the namespace controller; anything else goes at once (owners' children follow by GC).
    Returns the object's reference and the revision of the write."""
    k = k8s.key(kind, namespace, name)
    kobj = kind
    if isinstance(kind, k8s.Kind):  # only the acted-on Pod and Namespace are deleted gracefully
        kind = kind.kind if kind.acted else f"{kind.kind}.{kind.group}"
    for _ in range(10):
        obj = _get(store, kobj, namespace, name)
        rv = int(obj["metadata"]["resourceVersion"])
        graceful = (kind == "Pod" and obj.get("spec", {}).get("nodeName") and not force) or kind == "Namespace"
        try:
            if graceful:
                if not obj["metadata"].get("deletionTimestamp"):
                    obj["metadata"]["deletionTimestamp"] = now()
                    if kind == "Namespace":
                        obj.setdefault("status", {})["phase"] = "Terminating"
                    rv = int(store.update(k, obj, rv)["metadata"]["resourceVersion"])
            else:
                rv = int(store.delete(k, rv)["metadata"]["resourceVersion"])
                if kind == "Service":
                    release_service(store, obj)
                if k8s.is_crd(obj):
                    _delete_custom_resources(store, obj)
            return k8s.ref(obj), rv
        except Conflict:
            continue
        except NotFound:
            raise NotFoundError(not_found_message(kobj, name)) from None
    raise ConflictError(f"{kind} {name}: kept changing while being deleted; try again")


def _delete_custom_resources(store: Store, crd: dict) -> None:
    """A CRD that goes takes its custom resources with it (upstream's customresourcecleanup
    finalizer), then its kinds are forgotten."""
    for k in k8s.crd_kinds(crd)[:1]:  # every version is stored under the one <group>/<plural>
        if k8s.builtin({"apiVersion": k.api_version, "kind": k.kind}):
            continue  # a CRD for a kind served as a built-in (the Gateway API's): its objects stay
        for o in store.list(k8s.prefix(k))[0]:
            with contextlib.suppress(NotFound, Conflict):
                store.delete(k8s.key(k, o["metadata"].get("namespace"), o["metadata"]["name"]),
                             int(o["metadata"]["resourceVersion"]))
    crds.after_write(crd, deleted=True)
