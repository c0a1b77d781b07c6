"""The API server's OpenAPI documents: /openapi/v2 (Swagger 2.0, JSON), the /openapi/v3 index and
one OpenAPI 3.0 document per group-version, as kube-apiserver serves them, good enough for
`kubectl explain` (descriptions, types, required fields, x-kubernetes-group-version-kind) and for
client-side `kubectl apply` (it builds its strategic merge patch from a v3 document's PATCH
operation, which must accept application/strategic-merge-patch+json, and from the schemas'
x-kubernetes-patch-merge-key / -strategy).

Built-in kinds' schemas come from netsim.apiserver.schemas (the kubernetes client's models);
custom resources' from their CRD's openAPIV3Schema, served with JSON and merge patch only (as real
servers do, so kubectl falls back to a merge patch for them).  Pure; documents are cached by
their inputs; /openapi/v2 also as gnostic's protobuf (netsim.apiserver.openapi_pb), which kubectl
validates a `kind: List` with.  May use: the standard library and
netsim.apiserver.{apitypes,schemas,openapi_pb}."""

from __future__ import annotations

import copy
import hashlib
import json
from functools import lru_cache

from netsim.apiserver import openapi_pb, schemas
from netsim.apiserver.apitypes import Resource, as_resource

TITLE = "Kubernetes"
VERSION = "v1.32.0"
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                "application/strategic-merge-patch+json", "application/apply-patch+yaml")


# -- the custom resources ------------------------------------------------------------------------

def _crd_versions(crd: dict) -> list[tuple[Resource, dict, str]]:
    """(resource, openAPIV3Schema, definition name) of each served version of a CRD."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    out = []
    for v in spec.get("versions") or []:
        if not v.get("served", True):
            continue
        r = Resource(group, v["name"], names.get("kind", ""), names.get("plural", ""),
                     spec.get("scope", "Namespaced") == "Namespaced", short_names=tuple(names.get("shortNames") or ()))
        schema = ((v.get("schema") or {}).get("openAPIV3Schema")) or {"type": "object",
                                                                      "x-kubernetes-preserve-unknown-fields": True}
        # As apiextensions names them: the group reversed, the version, the kind.
        name = ".".join([*reversed(group.split(".")), v["name"], r.kind])
        out.append((r, schema, name))
    return out


def _schemaless(resources, crds: list[dict]) -> list[dict]:
    """A CRD-shaped stand-in (a schema that keeps every field) for each built-in kind that the
    kubernetes client has no model of (the Gateway API's) and no stored CRD describes, so kubectl
    finds its kind and applies it with a merge patch, as for a custom resource."""
    covered = {(r.group, r.version, r.kind) for crd in crds for r, _, _ in _crd_versions(crd)}
    by_kind: dict[tuple, list[str]] = {}
    for r in (as_resource(x) for x in resources):
        if (r.group, r.version, r.kind) not in covered and schemas.model_for(r.group, r.version, r.kind) is None:
            by_kind.setdefault((r.group, r.kind, r.plural, r.namespaced, r.short_names), []).append(r.version)
    keep = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return [{"spec": {"group": g, "scope": "Namespaced" if namespaced else "Cluster",
                      "names": {"kind": kind, "plural": plural, "shortNames": list(short)},
                      "versions": [{"name": v, "served": True, "schema": {"openAPIV3Schema": keep}}
                                   for v in sorted(versions)]}}
            for (g, kind, plural, namespaced, short), versions in sorted(by_kind.items())]


def _crd_schema(r: Resource, schema: dict, ref_prefix: str, v3: bool) -> dict:
    gvk = [{"group": r.group, "kind": r.kind, "version": r.version}]
    if not v3 and schema.get("x-kubernetes-preserve-unknown-fields"):
        # As apiextensions publishes it in v2: a bare object, no properties (not even TypeMeta),
        # since kubectl's validation would call every other field unknown.
        return {"type": "object", "x-kubernetes-group-version-kind": gvk}
    s = copy.deepcopy(schema) if v3 else _v2_clean(schema)
    props = s.setdefault("properties", {})
    props["apiVersion"] = {"type": "string", "description": schemas.field_doc("V1Pod", "apiVersion")}
    props["kind"] = {"type": "string", "description": schemas.field_doc("V1Pod", "kind")}
    meta = {"$ref": ref_prefix + f"{schemas.META}.ObjectMeta"}
    props["metadata"] = {"allOf": [meta], "description": schemas.field_doc("V1Pod", "metadata")} if v3 else meta
    s.setdefault("type", "object")
    s["x-kubernetes-group-version-kind"] = gvk
    return s


_V2_DROPPED = ("nullable", "anyOf", "oneOf", "allOf", "not", "patternProperties")


def _v2_clean(s: dict) -> dict:
    """A CRD's v3 (JSON Schema) node as Swagger 2.0 can say it and kubectl's v2 validation reads it,
    by apiextensions' ToStructuralOpenAPIV2 rules: no junctors; a nullable node untyped, a node
    preserving unknown fields without properties or items (kubectl would call them unknown), an
    array left without items untyped (kubectl needs one item schema); a nullable property not
    required.  A copy."""
    out = {k: v for k, v in s.items() if k not in _V2_DROPPED}
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _v2_clean(v) for k, v in out["properties"].items() if isinstance(v, dict)}
    if isinstance(out.get("items"), dict):
        out["items"] = _v2_clean(out["items"])
    elif isinstance(out.get("items"), list):
        out["items"] = [_v2_clean(v) for v in out["items"] if isinstance(v, dict)]
    else:
        out.pop("items", None)
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _v2_clean(out["additionalProperties"])
    if s.get("nullable"):
        for k in ("type", "items", "properties"):
            out.pop(k, None)
    if s.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("items", None)
        out.pop("properties", None)
    if out.get("type") == "array" and "items" not in out:
        out.pop("type")
    required = out.get("required")
    if required:
        nullable = {k for k, v in (s.get("properties") or {}).items() if isinstance(v, dict) and v.get("nullable")}
        extra = s.get("additionalProperties")
        if isinstance(extra, dict) and extra.get("nullable"):
            nullable = set(required)
        out["required"] = [k for k in required if k not in nullable]
        if not out["required"]:
            del out["required"]
    return out


def _crds_key(crds: list[dict]) -> tuple:
    return tuple(sorted((c.get("metadata", {}).get("name", ""), c.get("metadata", {}).get("uid", ""),
                         str(c.get("metadata", {}).get("resourceVersion", "")),
                         json.dumps(c.get("spec", {}), sort_keys=True)) for c in crds))


# -- paths ---------------------------------------------------------------------------------------

def _paths_of(r: Resource, ref_prefix: str, schema_name: str, builtin: bool, v3: bool) -> dict:
    gvk = {"group": r.group, "kind": r.kind, "version": r.version}
    base = f"/{r.group_version_path}" + ("/namespaces/{namespace}" if r.namespaced else "")
    collection, item = f"{base}/{r.plural}", f"{base}/{r.plural}/{{name}}"
    ref = {"$ref": ref_prefix + schema_name}
    tag = (r.group.split(".")[0] if r.group else "core") + "_" + r.version
    camel = "".join(p.capitalize() for p in tag.split("_"))

    def param(name: str, where: str = "query", kind: str = "string") -> dict:
        if v3:
            return {"name": name, "in": where, "schema": {"type": kind}, **({"required": True} if where == "path"
                                                                                else {})}
        return {"name": name, "in": where, "type": kind, **({"required": True} if where == "path" else {})}

    def body(types: tuple[str, ...], schema: dict) -> dict:
        return {"requestBody": {"content": {t: {"schema": schema} for t in types}, "required": True}} if v3 \
            else {"consumes": list(types), "parameters": [{"name": "body", "in": "body", "required": True,
                                                            "schema": schema}]}

    def op(action: str, verb: str, params: list[dict], request: dict | None = None) -> dict:
        scope = "Namespaced" if r.namespaced else ""
        o = {"operationId": f"{verb}{camel}{scope}{r.kind}", "tags": [tag], "x-kubernetes-action": action,
             "x-kubernetes-group-version-kind": gvk, "parameters": list(params)}
        if request:
            o["parameters"] += request.pop("parameters", [])
            o.update(request)
        o["responses"] = ({"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}} if v3
                          else {"200": {"description": "OK", "schema": ref}})
        return o

    write = [param("dryRun"), param("fieldManager"), param("fieldValidation")]
    patch_types = _PATCH_TYPES if builtin else tuple(t for t in _PATCH_TYPES if "strategic" not in t)
    patch_schema = {"$ref": ref_prefix + f"{schemas.META}.Patch"}
    ns = [param("namespace", "path")] if r.namespaced else []
    verbs = set(r.verbs)
    coll, one = {}, {}
    if "list" in verbs:
        coll["get"] = op("list", "list", [param("labelSelector"), param("fieldSelector"),
                                          param("limit", kind="integer"), param("continue"), param("resourceVersion"),
                                          param("watch", kind="boolean")])
    if "create" in verbs:
        coll["post"] = op("post", "create", write, body(("application/json", "application/yaml"), ref))
    if "deletecollection" in verbs and r.namespaced:
        coll["delete"] = op("deletecollection", "deleteCollection", [param("labelSelector")])
    if "get" in verbs:
        one["get"] = op("get", "read", [])
    if "update" in verbs:
        one["put"] = op("put", "replace", write, body(("application/json", "application/yaml"), ref))
    if "patch" in verbs:
        one["patch"] = op("patch", "patch", [*write, param("force", kind="boolean")], body(patch_types, patch_schema))
    if "delete" in verbs:
        one["delete"] = op("delete", "delete", [param("gracePeriodSeconds", kind="integer"),
                                                param("propagationPolicy")])
    out = {}
    for path, ops, extra in ((collection, coll, ns), (item, one, [*ns, param("name", "path")])):
        if ops:
            out[path] = {**ops, "parameters": extra} if extra else ops
    return out


# -- assembling a document -----------------------------------------------------------------------

def _assemble(resources: list[Resource], crds: list[dict], v3: bool) -> tuple[dict, dict]:
    """(schemas by name, paths) of the given built-in resources and CRDs."""
    ref_prefix = "#/components/schemas/" if v3 else "#/definitions/"
    namer = schemas.Namer(ref_prefix)
    namer.claim(list(schemas.META_ROOTS), "", "v1")
    found: list[str] = list(schemas.closure(schemas.META_ROOTS))
    gvk_of: dict[str, list[dict]] = {}
    paths: dict = {}
    # The core group first: a nested type shared by groups (PodTemplateSpec) is named core's.
    for r in sorted(resources, key=lambda r: (r.group != "", r.group, r.version, r.kind)):
        model = schemas.model_for(r.group, r.version, r.kind)
        if model is None:
            continue
        roots = [model] + [m for m in (schemas.model_for(r.group, r.version, r.kind + "List"),) if m]
        found += [m for m in namer.claim(roots, r.group, r.version) if m not in found]
        for m in roots:
            gvk_of.setdefault(m, []).append({"group": r.group, "kind": r.kind + ("List" if m != model else ""),
                                             "version": r.version})
        paths.update(_paths_of(r, ref_prefix, namer.names[model], True, v3))
    out = {name: schemas.model_schema(m, namer, v3) for m in found for name in (namer.names[m],)}
    for m, gvks in gvk_of.items():
        out[namer.names[m]]["x-kubernetes-group-version-kind"] = gvks
    out[schemas.INT_OR_STRING] = dict(schemas.INT_OR_STRING_SCHEMA)
    out[f"{schemas.META}.Patch"] = dict(schemas.PATCH_SCHEMA)
    for crd in crds:
        for r, schema, name in _crd_versions(crd):
            out[name] = _crd_schema(r, schema, ref_prefix, v3)
            paths.update(_paths_of(r, ref_prefix, name, False, v3))
    return out, paths


def _builtin(resources) -> list[Resource]:
    rs = [as_resource(r) for r in resources]
    return [r for r in rs if schemas.model_for(r.group, r.version, r.kind) is not None]


def _key(resources: list[Resource]) -> tuple:
    return tuple(sorted((r.group, r.version, r.kind, r.plural, r.namespaced, r.verbs) for r in resources))


def openapi_v2(resources, crds: list[dict]) -> dict:
    """The Swagger 2.0 document of every served built-in resource and CRD (/openapi/v2, JSON)."""
    crds = list(crds) + _schemaless(resources, crds)
    return copy.deepcopy(_v2_cached(_key(_builtin(resources)), _crds_key(crds), _frozen(crds)))


@lru_cache(maxsize=8)
def _v2_cached(rkey: tuple, _ckey: tuple, crds: _Frozen) -> dict:
    defs, paths = _assemble([Resource(*k[:4], k[4], k[5]) for k in rkey], crds.value, v3=False)
    return {"swagger": "2.0", "info": {"title": TITLE, "version": VERSION}, "paths": paths, "definitions": defs}


def openapi_v2_protobuf(resources, crds: list[dict]) -> bytes:
    """openapi_v2's document as gnostic's openapi.v2.Document, serialized (cached as that is)."""
    crds = list(crds) + _schemaless(resources, crds)
    return _v2_pb_cached(_key(_builtin(resources)), _crds_key(crds), _frozen(crds))


@lru_cache(maxsize=8)
def _v2_pb_cached(rkey: tuple, ckey: tuple, crds: _Frozen) -> bytes:
    return openapi_pb.encode(_v2_cached(rkey, ckey, crds))


class _Frozen:
    """Carries an unhashable value through lru_cache, compared by the key beside it."""

    def __init__(self, value):
        self.value = value

    def __hash__(self):
        return 0

    def __eq__(self, other):
        return isinstance(other, _Frozen)


def _frozen(crds):
    return _Frozen(list(crds))


def _group_versions(resources: list[Resource], crds: list[dict]) -> dict[str, tuple[list[Resource], list[dict]]]:
    out: dict[str, tuple[list[Resource], list[dict]]] = {}
    for r in resources:
        out.setdefault(r.group_version_path, ([], []))[0].append(r)
    for crd in crds:
        for r, _, _ in _crd_versions(crd):
            entry = out.setdefault(r.group_version_path, ([], []))
            if not any(c is crd for c in entry[1]):
                entry[1].append(crd)
    return out


def _gv_path(group_version: str) -> str:
    gv = group_version.strip("/").split("?")[0]
    if gv.startswith(("api/", "apis/")):
        return gv
    return f"api/{gv}" if "/" not in gv else f"apis/{gv}"


def openapi_v3(group_version: str, resources, crds: list[dict]) -> dict | None:
    """The OpenAPI 3.0 document of one group-version ("api/v1", "apis/apps/v1" or "apps/v1"),
    or None when nothing is served there."""
    crds = list(crds) + _schemaless(resources, crds)
    gvs = _group_versions(_builtin(resources), crds)
    entry = gvs.get(_gv_path(group_version))
    if entry is None:
        return None
    return copy.deepcopy(_v3_cached(_key(entry[0]), _crds_key(entry[1]), _frozen(entry[1]))[0])


@lru_cache(maxsize=64)
def _v3_cached(rkey: tuple, _ckey: tuple, crds: _Frozen) -> tuple[dict, str]:
    comps, paths = _assemble([Resource(*k[:4], k[4], k[5]) for k in rkey], crds.value, v3=True)
    doc = {"openapi": "3.0.0", "info": {"title": TITLE, "version": VERSION}, "paths": paths,
           "components": {"schemas": comps}}
    digest = hashlib.sha512(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest().upper()
    return doc, digest


def openapi_v3_index(resources, crds: list[dict]) -> dict:
    """/openapi/v3: each group-version's document URL, with a hash of its content (kubectl
    caches documents by that URL)."""
    crds = list(crds) + _schemaless(resources, crds)
    paths = {}
    for gv, (rs, cs) in sorted(_group_versions(_builtin(resources), crds).items()):
        _, digest = _v3_cached(_key(rs), _crds_key(cs), _frozen(cs))
        paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
    return {"paths": paths}
