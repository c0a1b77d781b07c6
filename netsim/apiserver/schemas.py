"""OpenAPI schemas of the built-in kinds, derived at run time from the model classes of the
installed `kubernetes` client package (data from a dependency: each model's openapi_types and
attribute_map, its pydantic fields' descriptions and required-ness, its docstring's first
paragraph), plus the strategic-merge patch keys that kubectl's client-side apply reads.

Knows: how the generated model names map to Kubernetes definition names
(V1Pod -> io.k8s.api.core.v1.Pod), which types belong to meta/v1; the list merge keys it reads
from netsim.model.mergekeys.  May use: the standard library, kubernetes.client.models
and netsim.model.  Pure and cached."""

from __future__ import annotations

import re
import typing
from functools import cache

from netsim.model import mergekeys

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
# The meta/v1 types every group-version's document carries (ObjectMeta and what it references).
META_ROOTS = ("V1ObjectMeta", "V1ListMeta", "V1LabelSelector", "V1Status", "V1DeleteOptions", "V1Condition")
# Definition-name packages that are not io.k8s.api.<first label of the group>.
_PACKAGES = {"": "io.k8s.api.core", "apiextensions.k8s.io": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions",
             "apiregistration.k8s.io": "io.k8s.kube-aggregator.pkg.apis.apiregistration"}
_VERSION = re.compile(r"^(?:([A-Z][a-z]+)?)(V\d+(?:(?:alpha|beta)\d+)?)([A-Z]\w*)$")


def package(group: str, version: str) -> str:
    base = _PACKAGES.get(group) or f"io.k8s.api.{group.split('.')[0]}"
    return f"{base}.{version}"


@cache
def models() -> dict[str, type]:
    """The generated model classes by name (importing them all takes ~1 s; once a process)."""
    import kubernetes.client.models as m  # a dependency's data: see pyproject.toml

    out = {}
    for name in dir(m):
        cls = getattr(m, name)
        if isinstance(cls, type) and hasattr(cls, "openapi_types") and hasattr(cls, "model_fields"):
            out[name] = cls
    return out


def model_for(group: str, version: str, kind: str) -> str | None:
    """The model class name of a built-in kind: V1Pod, V2HorizontalPodAutoscaler, CoreV1Event."""
    v = version[0].upper() + version[1:]
    prefix = "".join(p.capitalize() for p in (group.split(".")[0] if group else "core").split("-"))
    for name in (f"{prefix}{v}{kind}", f"{v}{kind}"):
        if name in models():
            return name
    return None


def class_doc(cls: type) -> str:
    doc = (cls.__doc__ or "").split("Attributes:")[0]
    return " ".join(doc.split())


def field_doc(model: str, json_field: str) -> str:
    """A field's description, as the API's SwaggerDoc gives it (empty if the model has none)."""
    cls = models().get(model)
    if cls is None:
        return ""
    attr = next((a for a, j in cls.attribute_map.items() if j == json_field), None)
    field = cls.model_fields.get(attr) if attr else None
    return (field.description or "") if field else ""


def _referenced(type_string: str) -> list[str]:
    return [t for t in re.findall(r"\w+", type_string) if t in models()]


def closure(roots: typing.Iterable[str]) -> list[str]:
    """Every model reachable from roots through their fields, roots first, in a stable order."""
    seen: dict[str, None] = {}
    stack = list(roots)[::-1]
    while stack:
        name = stack.pop()
        if name in seen or name not in models():
            continue
        seen[name] = None
        for t in reversed(list(models()[name].openapi_types.values())):
            stack.extend(reversed(_referenced(t)))
    return list(seen)


@cache
def _meta_models() -> frozenset[str]:
    return frozenset(closure(META_ROOTS))


def definition_name(model: str, group: str, version: str) -> str:
    """io.k8s.api.<pkg>.<version>.<Type> for a model found under the group-version (group,
    version); meta/v1's types keep their own package."""
    if model in _meta_models():
        return f"{META}.{_VERSION.match(model).group(3)}"
    m = _VERSION.match(model)
    if m is None:
        return f"{package(group, version)}.{model}"
    return f"{package(group, m.group(2).lower())}.{m.group(3)}"


class Namer:
    """Names and $refs of models within one document: a nested model takes the group-version of
    the first resource that reaches it (core first, as the callers order them)."""

    def __init__(self, ref_prefix: str):
        self.ref_prefix = ref_prefix
        self.names: dict[str, str] = {}

    def claim(self, roots: list[str], group: str, version: str) -> list[str]:
        found = closure(roots)
        for model in found:
            self.names.setdefault(model, definition_name(model, group, version))
        return found

    def ref(self, model: str) -> str:
        return self.ref_prefix + self.names.setdefault(model, definition_name(model, "", "v1"))


def _is_int_or_string(annotation) -> bool:
    args = {getattr(a, "__origin__", a) for a in typing.get_args(annotation)}
    return int in args and str in args


def type_schema(type_string: str, annotation, namer: Namer, v3: bool) -> dict:
    t = type_string.strip()
    if t.startswith("List["):
        return {"type": "array", "items": type_schema(t[5:-1], None, namer, v3)}
    if t.startswith("Dict["):
        return {"type": "object", "additionalProperties": type_schema(t[5:-1].split(",", 1)[1], None, namer, v3)}
    simple = {"str": {"type": "string"}, "int": {"type": "integer", "format": "int64"},
              "bool": {"type": "boolean"}, "float": {"type": "number", "format": "double"},
              "datetime": {"type": "string", "format": "date-time"}, "bytes": {"type": "string", "format": "byte"}}
    if t in simple:
        return dict(simple[t])
    if t == "object":
        if annotation is not None and _is_int_or_string(annotation):
            return {"$ref": namer.ref_prefix + INT_OR_STRING}
        return {"type": "object"} if not v3 else {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if t in models():
        return {"$ref": namer.ref(t)}
    return {"type": "object"}


def model_schema(model: str, namer: Namer, v3: bool) -> dict:
    """The schema of one model: properties with descriptions, required, patch keys."""
    cls = models()[model]
    props: dict[str, dict] = {}
    required = []
    for attr, json_name in cls.attribute_map.items():
        field = cls.model_fields.get(attr)
        s = type_schema(cls.openapi_types[attr], field.annotation if field else None, namer, v3)
        desc = (field.description if field else None) or ""
        if "$ref" in s and v3:
            # As kube-apiserver's v3 documents write a described reference.
            s = {"allOf": [s], **({"description": desc} if desc else {})}
        elif desc:
            s["description"] = desc
        key, strategy = mergekeys.FIELDS.get((model, json_name), (None, None))
        if key:
            s["x-kubernetes-patch-merge-key"] = key
        if strategy:
            s["x-kubernetes-patch-strategy"] = strategy
        props[json_name] = s
        if field is not None and field.is_required():
            required.append(json_name)
    out = {"description": class_doc(cls), "type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


INT_OR_STRING_SCHEMA = {
    "description": "IntOrString is a type that can hold an int32 or a string.  When used in JSON or YAML "
                   "marshalling and unmarshalling, it produces or consumes the inner type.",
    "type": "string", "format": "int-or-string"}
PATCH_SCHEMA = {"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH "
                               "request body.", "type": "object"}
