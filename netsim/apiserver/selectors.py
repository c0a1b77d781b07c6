"""Label and field selectors as they come in a list or watch query (``labelSelector``,
``fieldSelector``), parsed once and matched against objects.
May import: the standard library and netsim.apiserver.status."""

from __future__ import annotations

import re
from collections.abc import Callable

from netsim.apiserver.status import bad_request

_TERM = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(==|=|!=|\s+in\s+|\s+notin\s+)\s*(.*?))?\s*$")


def _split(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


Matcher = Callable[[dict], bool]


def labels(text: str | None) -> Matcher:
    """A labelSelector: k=v, k==v, k!=v, k in (a,b), k notin (a,b), k, !k (comma = and)."""
    if not text:
        return lambda _obj: True
    reqs = []
    for term in _split(text):
        m = _TERM.match(term)
        if not m:
            raise bad_request(f"unable to parse requirement: {term.strip()!r}: found unexpected input")
        neg, key, op, value = m.groups()
        op = (op or "").strip()
        if op in ("in", "notin"):
            if not (value.startswith("(") and value.endswith(")")):
                raise bad_request(f"unable to parse requirement: {term.strip()!r}: expected a set (a,b)")
            values = {v.strip() for v in value[1:-1].split(",") if v.strip()}
        else:
            values = {value} if value is not None else set()
        if neg and op:
            raise bad_request(f"unable to parse requirement: {term.strip()!r}")
        reqs.append(("!" if neg else op, key, values))

    def match(obj: dict) -> bool:
        have = (obj.get("metadata") or {}).get("labels") or {}
        for op, key, values in reqs:
            if op == "" and key not in have:
                return False
            if op == "!" and key in have:
                return False
            if op in ("=", "==", "in") and have.get(key) not in values:
                return False
            if op in ("!=", "notin") and key in have and have[key] in values:
                return False
        return True

    return match


FIELDS = ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase", "spec.schedulerName",
          "status.podIP", "spec.restartPolicy", "type", "involvedObject.name", "involvedObject.namespace",
          "involvedObject.kind", "involvedObject.uid", "reason", "spec.serviceAccountName",
          "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath", "source",
          "reportingComponent")
ALIASES = {"source": "source.component"}  # an Event's "source" field label names its component


def _field(obj: dict, path: str) -> str:
    cur: object = obj
    for part in ALIASES.get(path, path).split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def fields(text: str | None) -> Matcher:
    """A fieldSelector: field=value, field==value, field!=value (comma = and), on the fields
    the API server indexes (metadata.name, metadata.namespace, spec.nodeName, status.phase ...)."""
    if not text:
        return lambda _obj: True
    reqs = []
    for term in _split(text):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not m:
            raise bad_request(f'invalid field selector: "{term.strip()}"')
        path, op, value = m.groups()
        if path not in FIELDS:
            raise bad_request(f'field label not supported: {path}')
        reqs.append((path, op != "!=", value))
    return lambda obj: all((_field(obj, p) == v) == eq for p, eq, v in reqs)
