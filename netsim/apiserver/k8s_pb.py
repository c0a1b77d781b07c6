"""Request bodies in the Kubernetes protobuf encoding (application/vnd.kubernetes.protobuf), which
client-go's typed clients send (kubectl create namespace/deployment/secret/..., expose, drain's
DeleteOptions; controllers' Leases, Events, EndpointSlices), decoded into the JSON documents the
rest of the server works on.

The wire form is the magic "k8s\\0" and a runtime.Unknown envelope (typeMeta, raw, contentEncoding,
contentType) whose raw is the object as k8s.io/api's generated.proto describes it.  The messages
needed are written down in netsim.apiserver.k8s_proto (field numbers as upstream's, field names
as the JSON names of the Go types) and turned into descriptors at import time with
descriptor_pb2, as netsim.apiserver.openapi_pb does; no generated module, no protoc.

Go's JSON is mimicked where the wire cannot say it: the Go side writes every non-pointer scalar, so
a zero scalar is left out unless its field is marked `*` (a Go pointer, or a JSON tag without
omitempty), which keeps `replicas: 0` or `immutable: false`; a message present on the wire is
written even when empty (`resources: {}`); empty lists and maps are left out; a field marked
`inline` is a Go embedded struct, whose fields JSON writes into the parent (Volume's VolumeSource,
Probe's ProbeHandler, IngressRule's IngressRuleValue, the LocalObjectReference of key selectors).
Time is seconds (RFC 3339, "Z"; the empty message is Go's zero time, null), IntOrString an int or a
string, Quantity its string, bytes base64, FieldsV1 and RawExtension their raw JSON.  A kind not in
k8s_proto, an envelope with a content encoding, or a field the schema lacks is Unsupported (the HTTP
layer answers 415 asking for JSON) rather than dropped.  Pure.  May use: the standard library,
protobuf and netsim.apiserver.k8s_proto."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from netsim.apiserver.k8s_proto import GROUPS, PROTO

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"


_PACKAGE = "netsim.k8s."
_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _F.TYPE_STRING, "bool": _F.TYPE_BOOL, "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64,
            "bytes": _F.TYPE_BYTES, "double": _F.TYPE_DOUBLE}
_MESSAGE = re.compile(r"message (\w+) \{(.*?)\}\s*(?=message |\Z)", re.S)
_FIELD = re.compile(r"(repeated |inline )?(map<string, [\w.]+>|\*?[\w.]+) (\w+) = (\d+);")


class Unsupported(ValueError):
    """A body this module cannot turn into JSON; `kind` names what it was (or "")."""

    def __init__(self, kind: str, why: str):
        super().__init__(why)
        self.kind = kind


def _type_name(alias: str, kind: str) -> str:
    return "." + _PACKAGE + (kind if "." in kind else f"{alias}.{kind}")


def _files() -> tuple[list[descriptor_pb2.FileDescriptorProto], dict[str, str]]:
    """One FileDescriptorProto per alias, in an order where each comes after those it uses, and
    what is special about fields (by full name): "keep" (the zero value stays), "list", "map"."""
    files, deps, shape = {}, {}, {}
    for alias, text in PROTO.items():
        f = descriptor_pb2.FileDescriptorProto(name=f"netsim/k8s/{alias}.proto", package=_PACKAGE + alias,
                                               syntax="proto2")
        uses = set()
        for name, body in _MESSAGE.findall(text):
            m = f.message_type.add(name=name)
            for repeated, kind, field, number in _FIELD.findall(body):
                d = m.field.add(name=field, json_name=field, number=int(number),
                                label=_F.LABEL_REPEATED if repeated == "repeated " else _F.LABEL_OPTIONAL)
                full = f"{_PACKAGE}{alias}.{name}.{field}"
                if repeated:
                    shape[full] = "list" if repeated == "repeated " else "inline"
                if kind.startswith("*"):
                    kind = kind[1:]
                    shape[full] = "keep"
                if kind.startswith("map<"):
                    value = kind[len("map<string, "):-1]
                    entry = m.nested_type.add(name=field[0].upper() + field[1:] + "Entry")
                    entry.options.map_entry = True
                    entry.field.add(name="key", json_name="key", number=1, label=_F.LABEL_OPTIONAL,
                                    type=_F.TYPE_STRING)
                    v = entry.field.add(name="value", json_name="value", number=2, label=_F.LABEL_OPTIONAL)
                    _set_type(v, alias, value, uses)
                    d.label = _F.LABEL_REPEATED
                    shape[full] = "map"
                    d.type = _F.TYPE_MESSAGE
                    d.type_name = f".{_PACKAGE}{alias}.{name}.{entry.name}"
                else:
                    _set_type(d, alias, kind, uses)
        uses.discard(alias)
        files[alias], deps[alias] = f, uses
        f.dependency.extend(f"netsim/k8s/{u}.proto" for u in sorted(uses))
    ordered: list[str] = []
    while len(ordered) < len(files):
        ready = [a for a in files if a not in ordered and deps[a] <= set(ordered)]
        if not ready:
            raise RuntimeError(f"k8s_pb: groups that use each other: {sorted(set(files) - set(ordered))}")
        ordered.extend(ready)
    return [files[a] for a in ordered], shape


def _set_type(d, alias: str, kind: str, uses: set[str]) -> None:
    if kind in _SCALARS:
        d.type = _SCALARS[kind]
        return
    d.type = _F.TYPE_MESSAGE
    d.type_name = _type_name(alias, kind)
    uses.add(kind.split(".")[0] if "." in kind else alias)


def _classes() -> tuple[dict[str, type], dict[str, str]]:
    pool = descriptor_pool.DescriptorPool()
    files, shape = _files()
    classes = {}
    for proto in files:
        fd = pool.Add(proto)
        alias = proto.package.removeprefix(_PACKAGE)
        for name, desc in fd.message_types_by_name.items():
            classes[f"{alias}.{name}"] = message_factory.GetMessageClass(desc)
    return classes, shape


MESSAGES, _SHAPE = _classes()
Unknown = MESSAGES["runtime.Unknown"]


def message_for(api_version: str, kind: str) -> type | None:
    """The message class of a kind sent under an API version, None when not written down here.
    DeleteOptions is meta/v1's in every group, as the API server registers it."""
    if kind == "DeleteOptions":
        return MESSAGES["meta.DeleteOptions"]
    alias = GROUPS.get(api_version)
    cls = MESSAGES.get(f"{alias}.{kind}") if alias else None
    if cls is None or "metadata" not in cls.DESCRIPTOR.fields_by_name:
        return None
    return cls


# -- protobuf to JSON -------------------------------------------------------------------------

def _utc(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        raise Unsupported("", f"a time of {seconds} seconds since 1970 is out of range") from None


def _time(m) -> str | None:
    if not m.ListFields():
        return None  # Go's zero Time marshals to nothing and back to the zero time: JSON null
    # Seconds only, as metav1.Time's Unmarshal keeps them (its JSON has no fractions).
    return _utc(m.seconds) + "Z"


def _micro_time(m) -> str | None:
    if not m.ListFields():
        return None
    # metav1.MicroTime: RFC 3339 with microseconds, in UTC.
    return f"{_utc(m.seconds)}.{m.nanos // 1000:06d}Z"


def _int_or_string(m) -> int | str:
    return m.strVal if m.type == 1 else m.intVal


def _raw_extension(m) -> object:
    try:
        return json.loads(m.raw) if m.raw else None  # RawExtension's MarshalJSON: its bytes, or null
    except ValueError:
        raise Unsupported("", "a RawExtension (ControllerRevision data) that is not JSON") from None


def _fields_v1(m) -> object:
    try:
        return json.loads(m.Raw) if m.Raw else {}
    except ValueError:
        raise Unsupported("", "a managedFields entry's fieldsV1 is not JSON") from None


_SPECIAL = {_PACKAGE + "meta.Time": _time, _PACKAGE + "meta.MicroTime": _micro_time,
            # certificates/v1 ExtraValue is a Go []string: a list in JSON
            _PACKAGE + "certificates.ExtraValue": lambda m: list(m.items),
            _PACKAGE + "intstr.IntOrString": _int_or_string,
            _PACKAGE + "resource.Quantity": lambda m: m.string, _PACKAGE + "meta.FieldsV1": _fields_v1,
            _PACKAGE + "runtime.RawExtension": _raw_extension}


def _plans() -> dict:
    """Per message descriptor: its special conversion, or what each field (by name) is:
    (shape, "message" / "bytes" / "" for the element or value type)."""
    plans: dict = {}
    for cls in MESSAGES.values():
        desc = cls.DESCRIPTOR
        if desc.full_name in _SPECIAL:
            plans[desc] = _SPECIAL[desc.full_name]
            continue
        fields = {}
        for fd in desc.fields:
            shape = _SHAPE.get(fd.full_name, "")
            elem = fd.message_type.fields_by_name["value"] if shape == "map" else fd
            fields[fd.name] = (shape, "message" if elem.type == _F.TYPE_MESSAGE else
                               "bytes" if elem.type == _F.TYPE_BYTES else "")
        plans[desc] = fields
    return plans


_PLANS = _plans()


def _value(elem: str, v, path: str, check: bool):
    if elem == "message":
        return to_json(v, path, check)
    if elem == "bytes":
        return base64.b64encode(v).decode()
    if isinstance(v, bytes):
        # a proto2 string that is not UTF-8 (protobuf hands it over as bytes): Go keeps the
        # bytes and its JSON writes each bad one as U+FFFD
        return v.decode("utf-8", errors="replace")
    return v


def to_json(m, path: str = "", check: bool = True) -> object:
    """A decoded message as Go's JSON encoding of its type would write it (see the docstring);
    Unsupported, naming the field, where the wire had a field the schema lacks (`check`; the
    paths are spelt out only then)."""
    plan = _PLANS[m.DESCRIPTOR]
    if callable(plan):
        return plan(m)
    if check and len(UnknownFieldSet(m)):
        numbers = sorted({f.field_number for f in UnknownFieldSet(m)})
        raise Unsupported("", f"{path or m.DESCRIPTOR.name} has fields netsim does not know (numbers {numbers})")
    out: dict = {}
    for fd, v in m.ListFields():
        name = fd.name
        shape, elem = plan[name]
        where = (f"{path}.{name}" if path else name) if check else ""
        if shape == "map":
            out[name] = {k: _value(elem, x, f"{where}[{k}]" if check else "", check) for k, x in v.items()}
        elif shape == "list":
            out[name] = [_value(elem, x, f"{where}[{i}]" if check else "", check) for i, x in enumerate(v)]
        elif shape == "inline":
            out.update(to_json(v, path, check))  # Go's embedded struct: its fields are the parent's
        elif elem == "message":
            out[name] = to_json(v, where, check)
        elif v or shape == "keep":  # else omitempty: Go writes the zero on the wire, its JSON leaves it out
            out[name] = _value(elem, v, where, check)
    return out


def decode(body: bytes) -> dict:
    """A protobuf request body as the JSON document (apiVersion and kind from its envelope)."""
    if not body.startswith(MAGIC):
        raise Unsupported("", "the body does not start with the Kubernetes protobuf magic k8s\\0")
    try:
        envelope = Unknown.FromString(body[len(MAGIC):])
    except DecodeError as exc:
        raise Unsupported("", f"the envelope is not a runtime.Unknown message: {exc}") from None
    api_version, kind = envelope.typeMeta.apiVersion, envelope.typeMeta.kind
    if envelope.contentEncoding:
        raise Unsupported(kind, f"content encoding {envelope.contentEncoding!r} is not supported")
    cls = message_for(api_version, kind)
    if cls is None:
        raise Unsupported(kind, f"netsim cannot decode {kind or 'an object'} ({api_version or 'no apiVersion'}) "
                                f"from protobuf")
    try:
        obj = cls.FromString(envelope.raw)
        # Cheap test first: the size shrinks when unknown fields are discarded; only then walk
        # with the per-message check that names them.
        size = obj.ByteSize()
        trimmed = cls.FromString(envelope.raw)
        trimmed.DiscardUnknownFields()
        doc = to_json(obj, check=trimmed.ByteSize() != size)
    except (DecodeError, UnicodeDecodeError) as exc:
        raise Unsupported(kind, f"the {kind} is not valid protobuf: {exc}") from None
    except Unsupported as exc:
        raise Unsupported(kind, f"{kind}: {exc}") from None
    return {"apiVersion": api_version, "kind": kind, **doc}
