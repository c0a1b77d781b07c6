"""The REST verbs on the store, synchronous and free of HTTP: what a request names (Target),
get, list (selectors, limit/continue), create, update, patch, delete, deletecollection, and the
status and scale subresources.  Writes go through netsim.api.registry, the same semantics as
netsim's own verbs (defaults, allocation, graceful deletion); documents are checked by
netsim.model.k8s.validate.  netsim's own verbs (netsim.cli.kubectl) call these same functions;
CRDs register their custom resources in netsim.api.crds as registry writes them.
May import: the standard library, PyYAML, netsim.model, netsim.api and netsim.apiserver."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

import yaml

from netsim.api import patch as patch_mod
from netsim.api import registry
from netsim.api.store import NotFound, Store
from netsim.apiserver import k8s_pb, selectors
from netsim.apiserver.status import StatusError, bad_request, invalid, not_found
from netsim.model import conversion, k8s

SCALABLE = {"Deployment", "ReplicaSet", "StatefulSet"}
STATUS_KINDS = {"Pod", "Service", "Node", "Namespace", "Deployment", "ReplicaSet", "DaemonSet", "StatefulSet",
                "Job", "CronJob", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress",
                "PersistentVolumeClaim", "PersistentVolume", "CustomResourceDefinition", "ResourceQuota",
                "CertificateSigningRequest", "APIService", "FlowSchema", "PriorityLevelConfiguration",
                "ReplicationController"}


@dataclass(frozen=True)
class Target:
    kind: k8s.Kind
    namespace: str | None  # None: cluster-scoped, or every namespace
    name: str | None
    subresource: str | None = None


def resolve(group: str, version: str, parts: list[str]) -> Target:
    """What the path after /api/v1 or /apis/GROUP/VERSION names."""
    api_version = f"{group}/{version}" if group else version
    by_plural = {k.plural: k for k in k8s.ALL.values() if k.api_version == api_version}
    ns = None
    if len(parts) >= 3 and parts[0] == "namespaces" and parts[2] in by_plural:
        ns, parts = parts[1], parts[2:]
    if not parts or parts[0] not in by_plural:
        what = parts[0] if parts else ""
        raise StatusError(404, f"the server could not find the requested resource ({what})", "NotFound",
                          {"kind": what} if what else None)
    k = by_plural[parts[0]]
    if ns is not None and not k.namespaced:
        raise StatusError(404, "the server could not find the requested resource", "NotFound")
    if len(parts) > 3:
        raise StatusError(404, "the server could not find the requested resource", "NotFound")
    name = parts[1] if len(parts) > 1 else None
    sub = parts[2] if len(parts) > 2 else None
    if sub is not None and not _has_subresource(k, sub):
        raise StatusError(404, "the server could not find the requested resource", "NotFound")
    return Target(k, ns, name, sub)


def _has_subresource(k: k8s.Kind, sub: str) -> bool:
    if sub == "status":
        return k.kind in STATUS_KINDS or not k8s.builtin({"apiVersion": k.api_version, "kind": k.kind})
    if sub == "scale":
        return k.kind in SCALABLE and k.acted
    if k.kind == "ServiceAccount" and k.group == "":
        return sub == "token"
    if k.kind == "Pod" and k.acted:
        return sub in ("exec", "attach", "portforward", "log", "eviction", "binding", "ephemeralcontainers")
    return k.kind == "Namespace" and sub == "finalize"


# -- bodies ---------------------------------------------------------------------------------

def decode(body: bytes, content_type: str) -> object:
    """A request body (JSON, YAML as kubectl may send, or Kubernetes protobuf as client-go's typed
    clients send): BadRequest when it is none of them, UnsupportedMediaType (415) for protobuf
    netsim cannot read, asking for JSON."""
    if content_type.split(";")[0].strip().lower() == k8s_pb.CONTENT_TYPE:
        try:
            return k8s_pb.decode(body)
        except k8s_pb.Unsupported as exc:
            raise StatusError(415, f"the body of the request was in an unknown format - {exc}; send it as "
                                   f"JSON (Content-Type: application/json)", "UnsupportedMediaType",
                              {"kind": exc.kind} if exc.kind else None) from None
    text = body.decode("utf-8", errors="replace")
    try:
        if "yaml" in content_type:
            return yaml.safe_load(text)
        return json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        what = "YAML" if "yaml" in content_type else "JSON"
        raise bad_request(f"the body of the request was in an unknown format or not valid {what}: {exc}") from None


def _checked(t: Target, doc: object, name_required: bool = True) -> dict:
    """The document as the target's kind, validated and with the namespace of the URL."""
    if not isinstance(doc, dict):
        raise bad_request(f"the body of the request must be a {t.kind.kind} object, got {type(doc).__name__}")
    doc = dict(doc)
    doc.setdefault("apiVersion", t.kind.api_version)
    doc.setdefault("kind", t.kind.kind)
    if (doc["apiVersion"], doc["kind"]) != (t.kind.api_version, t.kind.kind):
        raise bad_request(f"the API version in the data ({doc['apiVersion']}) and kind ({doc['kind']}) do not "
                          f"match the resource ({t.kind.api_version} {t.kind.kind}) the request is for")
    meta = doc.get("metadata")
    if meta is None:
        meta = doc["metadata"] = {}
    if not isinstance(meta, dict):
        raise invalid(t.kind, "", [("metadata", "must be an object")])
    if t.kind.namespaced:
        if meta.get("namespace") and t.namespace and meta["namespace"] != t.namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                              "request")
        meta["namespace"] = t.namespace or meta.get("namespace") or "default"
    if t.name and meta.get("name") and meta["name"] != t.name:
        raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({t.name})")
    if t.name and not meta.get("name"):
        meta["name"] = t.name
    name = meta.get("name") or ""
    if name_required and not name and not meta.get("generateName"):
        raise invalid(t.kind, "", [("metadata.name", "Required value: name or generateName is required")])
    try:
        return k8s.validate(doc, "request")
    except k8s.InvalidObject as exc:
        raise invalid(t.kind, name, exc.causes) from None
    except ValueError as exc:
        raise invalid(t.kind, name, [("", str(exc).removeprefix("request: "))]) from None


def _status_of(exc: registry.ApiError, t: Target, name: str) -> StatusError:
    if isinstance(exc, registry.NotFoundError) and name and exc.args[0].endswith(f'"{name}" not found'):
        return not_found(t.kind, name)
    if exc.reason == "Invalid":
        return invalid(t.kind, name, exc.causes or [("", str(exc))])
    details = {"name": name, **({"group": t.kind.group} if t.kind.group else {}), "kind": t.kind.plural}
    return StatusError(exc.code, str(exc), exc.reason, details)


# -- reads ----------------------------------------------------------------------------------

def get(store: Store, t: Target) -> dict:
    try:
        obj = store.get(k8s.key(t.kind, t.namespace, t.name))
    except NotFound:
        raise not_found(t.kind, t.name or "") from None
    return _as_version(obj, t.kind)


def _as_version(obj: dict, k: k8s.Kind) -> dict:
    """A stored object as the version it is read through: converted (a v2 HPA read as v1), or
    a custom resource stored under one version, read through another, with the same fields."""
    return conversion.to_version(obj, k.api_version)


def encode_continue(rv: int, key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"rv": rv, "start": key}).encode()).decode()


def decode_continue(token: str) -> tuple[int, str]:
    try:
        d = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(d["rv"]), str(d["start"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise bad_request("continue key is not valid: malformed token") from None


def matcher(query) -> selectors.Matcher:
    by_label = selectors.labels(query.get("labelSelector"))
    by_field = selectors.fields(query.get("fieldSelector"))
    return lambda o: by_label(o) and by_field(o)


def _paging(query) -> tuple[str, int]:
    """The key a continue token resumes after ("": from the start) and the limit (0: none)."""
    start = decode_continue(query["continue"])[1] if query.get("continue") else ""
    try:
        return start, int(query.get("limit") or 0)
    except ValueError:
        raise bad_request(f"limit: {query.get('limit')!r} is not an integer") from None


def _page(selected: list, limit: int, rev: int, key_of) -> tuple[list, dict]:
    """The first ``limit`` of the selected objects and the List's metadata (a continue token
    after the last of them when more remain)."""
    meta = {"resourceVersion": str(rev)}
    page = selected[:limit] if limit else selected
    if len(page) < len(selected):
        meta["continue"] = encode_continue(rev, key_of(page[-1]))
        meta["remainingItemCount"] = len(selected) - len(page)
    return page, meta


def list_(store: Store, t: Target, query) -> dict:
    """A List of the target's objects (a namespace's or every one), selected, one page of it."""
    match = matcher(query)
    start, limit = _paging(query)
    items, rev = store.list(k8s.prefix(t.kind, t.namespace))
    # Keys only where a page needs them: a thousand of them cost as much as the selection.
    selected = [o for o in items if (not start or _key_of(t, o) > start) and match(o)]
    page, meta = _page(selected, limit, rev, lambda o: _key_of(t, o))
    return {"kind": f"{t.kind.kind}List", "apiVersion": t.kind.api_version, "metadata": meta,
            "items": [_as_version(o, t.kind) for o in page]}


def _key_of(t: Target, obj: dict) -> str:
    return k8s.key(t.kind, obj["metadata"].get("namespace"), obj["metadata"]["name"])


def list_json(store: Store, t: Target, query) -> bytes | None:
    """The List (as list_) as JSON spliced from the text each object is stored as, when the
    objects are served as stored (a built-in kind read at its storage version, the only kind
    under its storage prefix but for its other served versions) and
    the store keeps JSON text (SQLite).  A selector decodes each object to match it, but its
    text goes out as stored.  None otherwise, for list_.  Decoding and encoding 1000 pods is
    ~90% of a LIST's CPU."""
    stored_text = getattr(store, "list_json", None)
    if (stored_text is None or not k8s.builtin({"apiVersion": t.kind.api_version, "kind": t.kind.kind})
            or t.kind.stored_as
            or any(k.resource == t.kind.resource and k is not t.kind and k.stored_as != t.kind.api_version
                   for k in k8s.ALL.values())):
        return None
    match = matcher(query) if query.get("labelSelector") or query.get("fieldSelector") else None
    start, limit = _paging(query)
    rows, rev = stored_text(k8s.prefix(t.kind, t.namespace))
    selected = [(k, text) for k, text in rows if k > start and (match is None or match(json.loads(text)))]
    page, meta = _page(selected, limit, rev, lambda row: row[0])
    head = json.dumps({"kind": f"{t.kind.kind}List", "apiVersion": t.kind.api_version, "metadata": meta},
                      separators=(",", ":"))
    return "".join((head[:-1], ',"items":[', ",".join(text for _, text in page), "]}")).encode()


# -- writes ---------------------------------------------------------------------------------

def dry_run(query) -> bool:
    values = query.getall("dryRun", []) if hasattr(query, "getall") else [query.get("dryRun")]
    if any(v not in (None, "All") for v in values):
        raise bad_request(f"invalid dry run option: {values}")
    return "All" in values


def field_manager(query, user_agent: str) -> str:
    """Who owns the fields a write sets: the fieldManager asked for, else the client's name as
    kube-apiserver derives it from the User-Agent ("kubectl", "OpenAPI-Generator")."""
    return query.get("fieldManager") or user_agent.split("/")[0] or "unknown"


def create(store: Store, t: Target, doc: object, query, manager: str | None = None) -> dict:
    """manager: who the managed fields name (None: they are already set, as by server-side apply)."""
    if t.name is not None:
        raise StatusError(405, f"the server does not allow this method on the requested resource "
                          f"({t.kind.plural}/{t.name})", "MethodNotAllowed")
    obj = _checked(t, doc)
    if manager is not None:
        obj = patch_mod.record_update(None, obj, manager, "Update", registry.now())
    try:
        created = registry.create(store, obj, dry_run=dry_run(query))
    except registry.AlreadyExistsError:
        from netsim.apiserver.status import already_exists
        raise already_exists(t.kind, obj["metadata"]["name"]) from None
    except registry.ApiError as exc:
        raise _status_of(exc, t, obj["metadata"].get("name", "")) from None
    return _as_version(created, t.kind)


def replace(store: Store, t: Target, doc: object, query, manager: str | None = None) -> dict:
    if t.subresource == "scale":
        return _write_scale(store, t, doc, query)
    obj = _checked(t, doc)
    if manager is not None:
        try:
            old = _as_version(store.get(k8s.key(t.kind, t.namespace, t.name)), t.kind)
        except NotFound:
            old = None  # registry.replace answers NotFound
        obj = patch_mod.record_update(old, obj, manager, "Update", registry.now())
    try:
        stored = registry.replace(store, obj, subresource=t.subresource, dry_run=dry_run(query))
    except registry.ApiError as exc:
        raise _status_of(exc, t, t.name or "") from None
    return _as_version(stored, t.kind)


# -- patch ----------------------------------------------------------------------------------

PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml",
               "application/apply-patch+cbor")


# kube-apiserver's patcher (maxRetryWhenPatchConflicts): a patch that does not name a
# resourceVersion is applied again to the fresh object when another writer (a controller
# updating status) got in between its read and its write.
PATCH_CONFLICT_RETRIES = 5


def patch(store: Store, t: Target, body: bytes, content_type: str, query, now: str, manager: str = "") -> dict:
    ctype = content_type.split(";")[0].strip()
    if ctype not in PATCH_TYPES:
        raise StatusError(415, f"the body of the request was in an unknown format - accepted media types "
                          f"include: {', '.join(PATCH_TYPES[:4])}", "UnsupportedMediaType")
    pinned = "resourceVersion" in _patched_meta(body, ctype)
    for attempt in range(PATCH_CONFLICT_RETRIES + 1):
        try:
            return _patch_once(store, t, body, ctype, query, now, manager, pinned)
        except StatusError as exc:
            field_conflict = "causes" in (exc.details or {})  # server-side apply's, not a race
            if pinned or exc.code != 409 or exc.reason != "Conflict" or field_conflict or \
                    attempt == PATCH_CONFLICT_RETRIES:
                raise
    raise AssertionError("unreachable")


def _patch_once(store: Store, t: Target, body: bytes, ctype: str, query, now: str, manager: str,
                pinned: bool) -> dict:
    apply = ctype.startswith("application/apply-patch")
    try:
        live = get(store, t) if t.subresource != "scale" else scale_of(store, t)
    except StatusError as exc:
        if not (apply and exc.code == 404 and t.subresource is None):
            raise
        live = None
    if apply:
        applied = decode(body, "yaml")
        if not isinstance(applied, dict):
            raise bad_request("an apply patch must be an object")
        manager = query.get("fieldManager")
        if not manager:
            raise bad_request("PATCH with apply-patch requires a fieldManager")
        force = query.get("force") in ("true", "1")
        try:
            new = patch_mod.server_side_apply(live, applied, manager, force, now)
        except patch_mod.ApplyConflict as exc:
            raise StatusError(409, exc.message, "Conflict", {"causes": [
                {"reason": "FieldManagerConflict", "message": f'conflict with "{m}"', "field": f}
                for m, f in exc.conflicts]}) from None
        if live is None:
            return create(store, Target(t.kind, t.namespace, None), new, query)  # fields recorded by SSA
    else:
        try:
            new = patch_mod.apply_patch(live, body, ctype)
        except patch_mod.PatchError as exc:
            code = {"BadRequest": 400, "UnsupportedMediaType": 415}.get(exc.reason, 422)
            raise StatusError(code, exc.message, exc.reason) from None
    if isinstance(new, dict):
        new.setdefault("metadata", {})
        # A patch that does not name the resourceVersion applies to the object as it is now.
        if isinstance(new["metadata"], dict) and live is not None and not pinned:
            new["metadata"]["resourceVersion"] = (live.get("metadata") or {}).get("resourceVersion")
    return replace(store, t, new, query, None if apply else manager)


def _patched_meta(body: bytes, ctype: str) -> dict:
    if ctype.startswith("application/json-patch"):
        return {"resourceVersion": 1} if b"/metadata/resourceVersion" in body else {}
    try:
        doc = decode(body, "yaml" if "yaml" in ctype else "json")
    except StatusError:
        return {}
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    return meta if isinstance(meta, dict) else {}


# -- scale ----------------------------------------------------------------------------------

def scale_of(store: Store, t: Target) -> dict:
    obj = get(store, Target(t.kind, t.namespace, t.name))
    sel = (obj.get("spec") or {}).get("selector") or {}
    parts = [f"{k}={v}" for k, v in (sel.get("matchLabels") or {}).items()]
    for e in sel.get("matchExpressions") or []:
        op = e["operator"]
        if op in ("In", "NotIn"):
            parts.append(f"{e['key']} {op.lower()} ({','.join(e.get('values') or [])})")
        else:
            parts.append(e["key"] if op == "Exists" else f"!{e['key']}")
    meta = obj["metadata"]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": ",".join(parts)}}


def _write_scale(store: Store, t: Target, doc: object, query) -> dict:
    if not isinstance(doc, dict):
        raise bad_request("the body of the request must be a Scale object")
    replicas = (doc.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise invalid(t.kind, t.name or "", [("spec.replicas", f"Invalid value: {replicas!r}: must be greater "
                                              "than or equal to 0")])
    obj = get(store, Target(t.kind, t.namespace, t.name))
    want_rv = (doc.get("metadata") or {}).get("resourceVersion")
    if want_rv:
        obj["metadata"]["resourceVersion"] = want_rv
    obj.setdefault("spec", {})["replicas"] = replicas
    replace(store, Target(t.kind, t.namespace, t.name), obj, query)
    return scale_of(store, t)


# -- delete ---------------------------------------------------------------------------------

def delete(store: Store, t: Target, options: dict, query) -> tuple[dict, bool]:
    """The object (terminating, or as it was) and whether it is gone; options are DeleteOptions
    from the body, overridden by the query's gracePeriodSeconds/propagationPolicy."""
    grace = query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
    try:
        grace = None if grace is None else int(grace)
    except ValueError:
        raise bad_request(f"gracePeriodSeconds: {grace!r} is not an integer") from None
    propagation = query.get("propagationPolicy") or options.get("propagationPolicy")
    if propagation not in (None, "Orphan", "Background", "Foreground"):
        raise invalid(t.kind, t.name or "", [("propagationPolicy", f"Unsupported value: {propagation!r}")])
    if options.get("orphanDependents") is True:
        propagation = "Orphan"
    run_dry = dry_run(query) or "All" in (options.get("dryRun") or [])
    try:
        obj, gone = registry.delete_object(store, t.kind, t.namespace, t.name or "", grace, propagation,
                                           options.get("preconditions"), run_dry)
    except registry.ApiError as exc:
        raise _status_of(exc, t, t.name or "") from None
    return _as_version(obj, t.kind), gone


def delete_collection(store: Store, t: Target, options: dict, query) -> dict:
    listed = list_(store, Target(t.kind, t.namespace, None), query)
    for obj in listed["items"]:
        m = obj["metadata"]
        try:
            delete(store, Target(t.kind, m.get("namespace"), m["name"]), options, {})
        except StatusError as exc:
            if exc.code != 404:
                raise
    return listed
