"""PATCH and server-side apply as the Kubernetes API server does them, on plain dicts.

Knows: JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic merge patch with the
built-in kinds' list merge keys (k8s.io/api patchMergeKey/patchStrategy tags) and its
directives, and server-side apply's managedFields (FieldsV1) with conflicts.  The merge keys
are netsim.model.mergekeys' (one table, which the OpenAPI documents read too), looked up by the
kind of the object patched.  Pure: no I/O; imports the standard library and netsim.model.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from netsim.model import mergekeys

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


class PatchError(Exception):
    """A patch that cannot be decoded or applied; reason is the Status reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ApplyConflict(Exception):
    """Server-side apply met fields another manager owns with another value."""

    def __init__(self, conflicts: list[tuple[str, str]], api_version: str = "") -> None:
        self.conflicts = conflicts
        n = len(conflicts)
        lines = [f'conflict with "{m}"' + (f" using {api_version}" if api_version else "") + f": {p}"
                 for m, p in conflicts]
        if n == 1:
            msg = f"Apply failed with 1 conflict: {lines[0]}"
        else:
            msg = f"Apply failed with {n} conflicts: " + "\n".join(lines)
        super().__init__(msg)
        self.message = msg


def list_strategy(types: frozenset[str], path: tuple[str, ...]) -> tuple[str, str | None]:
    """(strategy, merge key) of the list at path (field names only, list indexes dropped) in an
    object of one of types (netsim.model.mergekeys.roots): "merge" or "replace" (atomic)."""
    key, strategy = mergekeys.at(types, path)
    return ("merge", key) if strategy and "merge" in strategy.split(",") else ("replace", None)


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise PatchError("BadRequest", f"error decoding patch: {e}") from None


def apply_patch(live: dict, body: bytes, content_type: str) -> dict:
    """Apply a PATCH body of content_type to live; returns a new object, live untouched."""
    ct = content_type.split(";")[0].strip()
    patch = _decode(body)
    obj = copy.deepcopy(live)
    if ct == JSON_PATCH:
        return json_patch(obj, patch)
    if not isinstance(patch, dict):
        raise PatchError("BadRequest", "patch body must be a JSON object")
    if ct == MERGE_PATCH:
        return merge_patch(obj, patch)
    if ct == STRATEGIC_PATCH:
        out = strategic_merge(obj, patch, (), mergekeys.roots(obj))
        return out
    raise PatchError("UnsupportedMediaType", f"the content type {content_type!r} is not a patch type")


# ---- RFC 7386 --------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# ---- RFC 6902 (small enough to write here; jsonpatch would add a dependency for ~60 lines) --

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError("BadRequest", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list, tok: str, *, for_add: bool) -> int:
    if tok == "-" and for_add:
        return len(container)
    if not tok.isdigit() or (len(tok) > 1 and tok[0] == "0"):
        raise PatchError("UnprocessableEntity", f"invalid array index {tok!r}")
    i = int(tok)
    if i > len(container) or (i == len(container) and not for_add):
        raise PatchError("UnprocessableEntity", f"array index {i} out of bounds")
    return i


def _parent(doc: Any, toks: list[str], path: str) -> Any:
    cur = doc
    for t in toks[:-1]:
        if isinstance(cur, dict) and t in cur:
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_index(cur, t, for_add=False)]
        else:
            raise PatchError("UnprocessableEntity", f"doc is missing path: {path!r}")
    return cur


def _get(doc: Any, path: str) -> Any:
    toks = _pointer(path)
    if not toks:
        return doc
    par = _parent(doc, toks, path)
    t = toks[-1]
    if isinstance(par, dict) and t in par:
        return par[t]
    if isinstance(par, list):
        return par[_index(par, t, for_add=False)]
    raise PatchError("UnprocessableEntity", f"doc is missing path: {path!r}")


def _remove(doc: Any, path: str) -> Any:
    toks = _pointer(path)
    if not toks:
        raise PatchError("UnprocessableEntity", "cannot remove the whole document")
    par = _parent(doc, toks, path)
    t = toks[-1]
    if isinstance(par, dict) and t in par:
        return par.pop(t)
    if isinstance(par, list):
        return par.pop(_index(par, t, for_add=False))
    raise PatchError("UnprocessableEntity", f"unable to remove nonexistent key: {t}: missing value")


def _add(doc: Any, path: str, value: Any, replace: bool = False) -> Any:
    toks = _pointer(path)
    if not toks:
        return value
    par = _parent(doc, toks, path)
    t = toks[-1]
    if isinstance(par, dict):
        if replace and t not in par:
            raise PatchError("UnprocessableEntity",
                             f"replace operation does not apply: doc is missing key: {path}: missing value")
        par[t] = value
    elif isinstance(par, list):
        if replace:
            par[_index(par, t, for_add=False)] = value
        else:
            par.insert(_index(par, t, for_add=True), value)
    else:
        raise PatchError("UnprocessableEntity", f"doc is missing path: {path!r}")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchError("BadRequest", "json patch must be a list of operations")
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError("BadRequest", f"invalid json patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError("BadRequest", f"{kind} operation at {path} has no value")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            doc = _add(doc, path, copy.deepcopy(op["value"]), replace=True)
        elif kind == "move":
            val = _remove(doc, op.get("from", ""))
            doc = _add(doc, path, val)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op.get("from", ""))))
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise PatchError("UnprocessableEntity",
                                 f"testing value {path} failed: test operation failed")
        else:
            raise PatchError("BadRequest", f"Unexpected kind: {kind}")
    return doc


# ---- strategic merge patch -------------------------------------------------------------

def strategic_merge(orig: Any, patch: dict, path: tuple[str, ...], types: frozenset[str]) -> Any:
    """Merge patch (a map) into orig (a map) at path of an object of one of types
    (mergekeys.roots), with the directives of strategicpatch."""
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise PatchError("BadRequest", f"Unknown patch type: {directive} in map: {patch}")
    out = dict(orig) if isinstance(orig, dict) else {}
    retain = patch.get("$retainKeys")
    if retain is not None:
        out = {k: v for k, v in out.items() if k in retain}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            f = k.split("/", 1)[1]
            if isinstance(out.get(f), list):
                out[f] = [x for x in out[f] if x not in v]
            continue
        sub = path + (k,)
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            merged = strategic_merge(out.get(k), v, sub, types)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        elif isinstance(v, list):
            out[k] = _merge_list(out.get(k), v, sub, types)
        else:
            out[k] = copy.deepcopy(v)
    for k, v in patch.items():
        if k.startswith("$setElementOrder/"):
            f = k.split("/", 1)[1]
            if isinstance(out.get(f), list):
                out[f] = _order(out[f], v, list_strategy(types, path + (f,))[1])
    return out


def _merge_list(orig: Any, patch: list, path: tuple[str, ...], types: frozenset[str]) -> list:
    strategy, key = list_strategy(types, path)
    orig = list(orig) if isinstance(orig, list) else []
    if strategy != "merge":
        # a list of maps may still carry $patch: replace; atomic lists are replaced whole
        return [copy.deepcopy(x) for x in patch
                if not (isinstance(x, dict) and x.get("$patch") == "replace" and len(x) == 1)]
    if key is None:  # set of primitives
        if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
            return [x for x in patch if not isinstance(x, dict)]
        patched = []
        for x in patch:
            if x not in patched:
                patched.append(copy.deepcopy(x))
        server_only = [x for x in orig if x not in patched]
        return _normalize_order(patched, server_only, orig, lambda x: x)
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [copy.deepcopy(x) for x in patch if not (isinstance(x, dict) and "$patch" in x)]
    out = [copy.deepcopy(x) for x in orig]
    touched = []
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError("BadRequest", f"list {'.'.join(path)} expects maps, got {item!r}")
        if key not in item:
            raise PatchError("BadRequest", f"map: {item} does not contain declared merge key: {key}")
        idx = next((i for i, x in enumerate(out) if isinstance(x, dict) and x.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(strategic_merge({}, item, path, types))
            idx = len(out) - 1
        else:
            out[idx] = strategic_merge(out[idx], item, path, types)
        touched.append(idx)
    patched = [out[i] for i in touched]
    server_only = [x for i, x in enumerate(out) if i not in touched]
    return _normalize_order(patched, server_only, orig, lambda x: x.get(key))


def _normalize_order(patched: list, server_only: list, server: list, ident: Any) -> list:
    """Upstream's normalizeElementOrder: the patch's items in patch order and the server-only
    items in server order, merged so that items the server knows keep the server's order and
    items new to it come where the patch put them."""
    index = {json.dumps(ident(x), sort_keys=True): i for i, x in enumerate(server)}

    def pos(x: Any) -> int | None:
        return index.get(json.dumps(ident(x), sort_keys=True))

    out, i, j = [], 0, 0
    while i < len(patched) and j < len(server_only):
        li, ri = pos(patched[i]), pos(server_only[j])
        if li is None or ri is None or li < ri:
            out.append(patched[i])
            i += 1
        else:
            out.append(server_only[j])
            j += 1
    return out + patched[i:] + server_only[j:]


def _order(items: list, order: list, key: str | None) -> list:
    def ident(x: Any) -> Any:
        return json.dumps(x.get(key) if key and isinstance(x, dict) else x, sort_keys=True)

    want = [ident(x) for x in order]
    ranked = [x for w in want for x in items if ident(x) == w]
    rest = [x for x in items if ident(x) not in want]
    return ranked + rest


# ---- managed fields (FieldsV1) ---------------------------------------------------------

# identity and server-set metadata are never owned by a manager
_SKIP_META = {"name", "namespace", "managedFields", "resourceVersion", "uid", "creationTimestamp", "generation",
              "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"}


# map[string]string fields: the API server marks the map itself ("." key) besides its keys
_MAP_FIELDS = {"labels", "annotations", "nodeSelector", "data", "stringData", "binaryData",
               "matchLabels", "selector"}


def field_set(obj: Any, path: tuple[str, ...] = (), types: frozenset[str] | None = None) -> dict:
    """The FieldsV1 set of every leaf in obj (apiVersion/kind/status excluded at the top)."""
    out: dict = {}
    if not isinstance(obj, dict):
        return out
    if types is None:
        types = mergekeys.roots(obj)
    for k, v in obj.items():
        if not path and k in ("apiVersion", "kind", "status"):
            continue
        if path == ("metadata",) and k in _SKIP_META:
            continue
        if k.startswith("$"):
            continue
        sub = _value_set(v, path + (k,), types)
        if not sub and not path and k == "metadata":
            continue  # only identity (name, namespace): nothing of it is owned
        out["f:" + k] = sub
    return out


def _value_set(v: Any, path: tuple[str, ...], types: frozenset[str]) -> dict:
    if isinstance(v, dict):
        sub = field_set(v, path, types)
        return {".": {}, **sub} if sub and path[-1] in _MAP_FIELDS else sub
    if isinstance(v, list):
        strategy, key = list_strategy(types, path)
        if strategy == "merge":
            out: dict = {}
            for x in v:
                if key and isinstance(x, dict) and key in x:
                    ident = {key: x[key]}
                    if key in ("containerPort", "port"):
                        # SSA keys ports by (port, protocol); the API server defaults protocol TCP
                        ident["protocol"] = x.get("protocol", "TCP")
                    out[f"k:{json.dumps(ident, separators=(',', ':'))}"] = {".": {}, **field_set(x, path, types)}
                elif not isinstance(x, dict):
                    out[f"v:{json.dumps(x)}"] = {}
            return out
    return {}


def _leaves(fs: dict, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for k, v in fs.items():
        if k == ".":
            out.add(prefix)
            continue
        if v:
            out |= _leaves(v, prefix + (k,))
        else:
            out.add(prefix + (k,))
    return out


def _tree(leaves: set[tuple[str, ...]]) -> dict:
    root: dict = {}
    for leaf in sorted(leaves):
        cur = root
        for k in leaf:
            cur = cur.setdefault(k, {})
        if leaf and len(leaf) and cur == {} and any(len(other) > len(leaf) and other[:len(leaf)] == leaf
                                                     for other in leaves):
            cur["."] = {}
    return root


def _lookup(obj: Any, leaf: tuple[str, ...]) -> tuple[bool, Any]:
    cur = obj
    for k in leaf:
        if k.startswith("f:") and isinstance(cur, dict):
            if k[2:] not in cur:
                return False, None
            cur = cur[k[2:]]
        elif k.startswith("k:") and isinstance(cur, list):
            want = json.loads(k[2:])
            cur = next((x for x in cur if isinstance(x, dict)
                        and _matches(x, want)), None)
            if cur is None:
                return False, None
        elif k.startswith("v:") and isinstance(cur, list):
            val = json.loads(k[2:])
            if val not in cur:
                return False, None
            cur = val
        else:
            return False, None
    return True, cur


def _matches(item: dict, want: dict) -> bool:
    return all(item.get(a, "TCP" if a == "protocol" else None) == b for a, b in want.items())


def _dotted(leaf: tuple[str, ...]) -> str:
    parts = []
    for k in leaf:
        if k.startswith("f:"):
            parts.append("." + k[2:])
        elif k.startswith("k:"):
            want = json.loads(k[2:])
            parts.append("[" + ",".join(f"{a}={json.dumps(b)}" for a, b in want.items()) + "]")
        else:
            parts.append("[=" + k[2:] + "]")
    return "".join(parts)


def _entries(obj: dict | None) -> list[dict]:
    return copy.deepcopy(((obj or {}).get("metadata") or {}).get("managedFields") or [])


def _entry(manager: str, operation: str, api_version: str, now: str, leaves: set) -> dict:
    return {"manager": manager, "operation": operation, "apiVersion": api_version, "time": now,
            "fieldsType": "FieldsV1", "fieldsV1": _tree(leaves)}


def _set_entries(obj: dict, entries: list[dict]) -> dict:
    obj.setdefault("metadata", {})["managedFields"] = [e for e in entries if e["fieldsV1"]] or None
    if obj["metadata"]["managedFields"] is None:
        del obj["metadata"]["managedFields"]
    return obj


def record_update(old: dict | None, new: dict, manager: str, operation: str, now: str) -> dict:
    """new with managedFields updated as after an Update/Create by manager: the fields it
    changed (or all, for a create) become its own and leave every other manager."""
    out = copy.deepcopy(new)
    entries = _entries(old)
    new_leaves = _leaves(field_set(out))
    changed = new_leaves if old is None else {
        lf for lf in new_leaves if _lookup(old, lf) != _lookup(out, lf)}
    for e in entries:
        mine = _leaves(e["fieldsV1"]) - changed
        e["fieldsV1"] = _tree({lf for lf in mine if _lookup(out, lf)[0]})
    api_version = out.get("apiVersion", "")
    own = next((e for e in entries if e["manager"] == manager and e["operation"] == operation), None)
    if own is None:
        if changed:
            entries.append(_entry(manager, operation, api_version, now, changed))
    else:
        own["fieldsV1"] = _tree(_leaves(own["fieldsV1"]) | changed)
        own["time"] = now
    return _set_entries(out, entries)


def server_side_apply(live: dict | None, applied: dict, manager: str, force: bool, now: str) -> dict:
    """Merge applied (a full intent of manager) into live with SSA's ownership rules."""
    entries = _entries(live)
    api_version = applied.get("apiVersion", (live or {}).get("apiVersion", ""))
    applied_leaves = _leaves(field_set(applied))
    # a "." leaf (a map or list item as a whole) conflicts only through its own fields
    inner = {lf for lf in applied_leaves if any(o[:len(lf)] == lf and o != lf for o in applied_leaves)}
    conflicts = []
    for e in entries:
        if e["manager"] == manager and e["operation"] == "Apply":
            continue
        for lf in sorted(_leaves(e["fieldsV1"]) & applied_leaves - inner):
            if _lookup(live, lf) != _lookup(applied, lf):
                conflicts.append((e["manager"], _dotted(lf)))
    if conflicts and not force:
        raise ApplyConflict(conflicts, api_version)
    prev = next((e for e in entries if e["manager"] == manager and e["operation"] == "Apply"), None)
    prev_leaves = _leaves(prev["fieldsV1"]) if prev else set()
    others = set()
    for e in entries:
        if e is not prev:
            e_leaves = _leaves(e["fieldsV1"]) - (applied_leaves if force else set())
            if force:
                e["fieldsV1"] = _tree(e_leaves)
            others |= e_leaves
    out = copy.deepcopy(live) if live else {}
    out = _apply_merge(out, applied, (), mergekeys.roots(applied))
    gone = prev_leaves - applied_leaves - others
    # remove the outermost only: an item's key field must stay until the item goes
    for lf in gone:
        if not any(lf[:i] in gone for i in range(1, len(lf))):
            _delete_leaf(out, lf)
            # a map or list the removal emptied goes too, as the applier no longer sets anything in it
            up = lf[:-1]
            while up and _lookup(out, up)[1] in ({}, []):
                _delete_leaf(out, up)
                up = up[:-1]
    entries = [e for e in entries if e is not prev]
    entries.append(_entry(manager, "Apply", api_version, now, applied_leaves))
    return _set_entries(out, entries)


def _apply_merge(live: Any, applied: Any, path: tuple[str, ...], types: frozenset[str]) -> Any:
    if isinstance(applied, dict) and isinstance(live, dict):
        out = dict(live)
        for k, v in applied.items():
            out[k] = _apply_merge(live.get(k), v, path + (k,), types)
        return out
    if isinstance(applied, list) and isinstance(live, list):
        strategy, key = list_strategy(types, path)
        if strategy == "merge" and key:
            out = list(live)
            for item in applied:
                idx = next((i for i, x in enumerate(out) if isinstance(x, dict)
                            and isinstance(item, dict) and x.get(key) == item.get(key)), None)
                if idx is None:
                    out.append(copy.deepcopy(item))
                else:
                    out[idx] = _apply_merge(out[idx], item, path, types)
            return out
        if strategy == "merge":
            return list(live) + [x for x in applied if x not in live]
    return copy.deepcopy(applied)


def _delete_leaf(obj: Any, leaf: tuple[str, ...]) -> None:
    found, _ = _lookup(obj, leaf[:-1]) if leaf[:-1] else (True, obj)
    parent = _lookup(obj, leaf[:-1])[1] if leaf[:-1] else obj
    if not found:
        return
    k = leaf[-1]
    if k.startswith("f:") and isinstance(parent, dict):
        parent.pop(k[2:], None)
    elif k.startswith("k:") and isinstance(parent, list):
        want = json.loads(k[2:])
        parent[:] = [x for x in parent if not (isinstance(x, dict)
                                               and _matches(x, want))]
    elif k.startswith("v:") and isinstance(parent, list):
        val = json.loads(k[2:])
        parent[:] = [x for x in parent if x != val]
