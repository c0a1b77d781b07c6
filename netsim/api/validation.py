"""Field validation the API server runs on a write, for the kinds whose rules go beyond what
netsim.model.k8s's models check: Ingress and IngressClass (upstream's
pkg/apis/networking/validation/validation.go) and the Secret types that require data keys
(pkg/apis/core/validation ValidateSecret).

Pure functions over the JSON documents: :func:`errors` gives (field path, message) pairs, the
message worded as upstream's field.Error body ("Required value: ...", "Invalid value: "x": ...",
"Unsupported value: ..."), so the Status causes read as kube-apiserver's.  The checks of names
and hosts (DNS-1123, DNS-1035, port names) are those of k8s.io/apimachinery's
util/validation, with its messages.  Knows the document shapes only; the registry calls it on
every create and update.
"""

from __future__ import annotations

import ipaddress
import json
import re

# -- apimachinery util/validation ------------------------------------------------------------

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = _DNS1123_LABEL + r"(\." + _DNS1123_LABEL + r")*"
_WILDCARD_SUBDOMAIN = r"\*\." + _DNS1123_SUBDOMAIN
_DNS1035_LABEL = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_HTTP_PATH = r"[A-Za-z0-9/\-._~%!$&'()*+,;=:]+"
SUBDOMAIN_MAX, LABEL_MAX = 253, 63


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    shown = "".join(f"'{e}', " if i == len(examples) - 1 else f"'{e}' or " for i, e in enumerate(examples))
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')" if examples else \
        f"{msg} (regex used for validation is '{fmt}')"


def _max_len(n: int) -> str:
    return f"must be no more than {n} characters"


def dns1123_subdomain(value: str) -> list[str]:
    errs = [_max_len(SUBDOMAIN_MAX)] if len(value) > SUBDOMAIN_MAX else []
    if not re.fullmatch(_DNS1123_SUBDOMAIN, value):
        errs.append(_regex_error("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                                 "characters, '-' or '.', and must start and end with an alphanumeric character",
                                 _DNS1123_SUBDOMAIN, "example.com"))
    return errs


def wildcard_dns1123_subdomain(value: str) -> list[str]:
    errs = [_max_len(SUBDOMAIN_MAX)] if len(value) > SUBDOMAIN_MAX else []
    if not re.fullmatch(_WILDCARD_SUBDOMAIN, value):
        errs.append(_regex_error("a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS "
                                 "subdomain, which must consist of lower case alphanumeric characters, '-' or '.' "
                                 "and end with an alphanumeric character", _WILDCARD_SUBDOMAIN, "*.example.com"))
    return errs


def dns1123_label(value: str) -> list[str]:
    errs = [_max_len(LABEL_MAX)] if len(value) > LABEL_MAX else []
    if not re.fullmatch(_DNS1123_LABEL, value):
        errs.append(_regex_error("a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
                                 "or '-', and must start and end with an alphanumeric character",
                                 _DNS1123_LABEL, "my-name", "123-abc"))
    return errs


def dns1035_label(value: str) -> list[str]:
    errs = [_max_len(LABEL_MAX)] if len(value) > LABEL_MAX else []
    if not re.fullmatch(_DNS1035_LABEL, value):
        errs.append(_regex_error("a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                                 "start with an alphabetic character, and end with an alphanumeric character",
                                 _DNS1035_LABEL, "my-name", "abc-123"))
    return errs


def port_name(value: str) -> list[str]:
    errs = [_max_len(15)] if len(value) > 15 else []
    if not re.fullmatch(r"[-a-z0-9]+", value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    elif not re.search(r"[a-z]", value):
        errs.append("must contain at least one letter (a-z)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens (-)")
    if value and (value[0] == "-" or value[-1] == "-"):
        errs.append("must not begin or end with a hyphen (-)")
    return errs


def port_number(value: object) -> list[str]:
    return [] if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535 else \
        ["must be between 1 and 65535, inclusive"]


def path_segment_name(value: str) -> list[str]:
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


def is_ip(value: str) -> bool:
    """An address as k8s.io/utils/net's ParseIPSloppy reads one: IPv4 may have leading zeros."""
    parts = value.split(".")
    if len(parts) == 4 and all(p.isdigit() and p.isascii() and int(p) <= 255 for p in parts):
        return True
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


# -- field.Error bodies ----------------------------------------------------------------------

def _quote(value: object) -> str:
    """A bad value as field.Error prints it: strings quoted as Go's %q, numbers bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, separators=(",", ":"))


def required(path: str, detail: str = "") -> tuple[str, str]:
    return path, "Required value" + (f": {detail}" if detail else "")


def invalid(path: str, value: object, detail: str) -> tuple[str, str]:
    return path, f"Invalid value: {_quote(value)}: {detail}"


def not_supported(path: str, value: object, supported: list[str]) -> tuple[str, str]:
    return path, f"Unsupported value: {_quote(value)}: supported values: " + ", ".join(f'"{s}"' for s in supported)


def forbidden(path: str, detail: str) -> tuple[str, str]:
    return path, f"Forbidden: {detail}"


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _shape(path: str, value: object, want: type) -> list[tuple[str, str]]:
    """A field of the wrong JSON type, which upstream's decoder would refuse."""
    if value is None or isinstance(value, want):
        return []
    name = {dict: "an object", list: "a list", str: "a string", int: "an integer"}[want]
    return [invalid(path, value, f"must be {name}")]


# -- Ingress ---------------------------------------------------------------------------------

PATH_TYPES = ["Exact", "ImplementationSpecific", "Prefix"]
INVALID_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
INVALID_PATH_SUFFIXES = ("/..", "/.")
INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"


class IngressOptions:
    """What an update may keep that a create may not (validation.go's IngressValidationOptions):
    an invalid tls secretName, or invalid rule values under a wildcard host, the old object had."""

    def __init__(self, old: dict | None = None):
        spec = _dict((old or {}).get("spec"))
        self.allow_invalid_secret_name = any(
            isinstance(t, dict) and isinstance(t.get("secretName"), str) and t["secretName"]
            and dns1123_subdomain(t["secretName"]) for t in _list(spec.get("tls")))
        self.allow_invalid_wildcard_rule = any(
            isinstance(r, dict) and "*" in str(r.get("host") or "")
            and _rule_value(r, "") for r in _list(spec.get("rules")))


def _backend(backend: object, path: str) -> list[tuple[str, str]]:
    if not isinstance(backend, dict):
        return [invalid(path, "", "resource or service backend is required")]
    service, resource = backend.get("service"), backend.get("resource")
    if service is not None and resource is not None:
        return [invalid(path, "", "cannot set both resource and service backends")]
    if resource is not None:
        return _typed_reference(resource, f"{path}.resource", scoped=False)
    if service is None:
        return [invalid(path, "", "resource or service backend is required")]
    if not isinstance(service, dict):
        return _shape(f"{path}.service", service, dict)
    errs = []
    name = service.get("name") or ""
    if not name:
        errs.append(required(f"{path}.service.name"))
    else:  # ValidateServiceName: a DNS-1035 label (v1.32, RelaxedServiceNameValidation off)
        errs += [invalid(f"{path}.service.name", name, m) for m in dns1035_label(str(name))]
    port = _dict(service.get("port"))
    errs += _shape(f"{path}.service.port", service.get("port"), dict)
    has_name, has_number = bool(port.get("name")), bool(port.get("number"))
    if has_name and has_number:
        errs.append(invalid(path, "", "cannot set both port name & port number"))
    elif has_name:
        errs += [invalid(f"{path}.service.port.name", port["name"], m) for m in port_name(str(port["name"]))]
    elif has_number:
        errs += [invalid(f"{path}.service.port.number", port["number"], m) for m in port_number(port["number"])]
    else:
        errs.append(required(path, "port name or number is required"))
    return errs


def _http_path(p: object, path: str) -> list[tuple[str, str]]:
    if not isinstance(p, dict):
        return _shape(path, p, dict)
    if p.get("pathType") is None:
        return [required(f"{path}.pathType", "pathType must be specified")]
    errs: list[tuple[str, str]] = []
    kind, value = p["pathType"], p.get("path") or ""
    if kind in ("Exact", "Prefix"):
        if not str(value).startswith("/"):
            errs.append(invalid(f"{path}.path", value, "must be an absolute path"))
        errs += [invalid(f"{path}.path", value, f"must not contain '{s}'")
                 for s in INVALID_PATH_SEQUENCES if s in str(value)]
        errs += [invalid(f"{path}.path", value, f"cannot end with '{s}'")
                 for s in INVALID_PATH_SUFFIXES if str(value).endswith(s)]
    elif kind == "ImplementationSpecific":
        if value and not str(value).startswith("/"):
            errs.append(invalid(f"{path}.path", value, "must be an absolute path"))
    else:
        errs.append(not_supported(f"{path}.pathType", kind, PATH_TYPES))
    return errs + _backend(p.get("backend"), f"{path}.backend")


def _rule_value(rule: dict, path: str) -> list[tuple[str, str]]:
    http = rule.get("http")
    if http is None:
        return []
    if not isinstance(http, dict):
        return _shape(f"{path}.http", http, dict)
    paths = _list(http.get("paths"))
    errs = [required(f"{path}.http.paths")] if not paths else []
    return errs + [e for i, p in enumerate(paths) for e in _http_path(p, f"{path}.http.paths[{i}]")]


def _rules(rules: list, path: str, opts: IngressOptions) -> list[tuple[str, str]]:
    errs: list[tuple[str, str]] = []
    for i, rule in enumerate(rules):
        at = f"{path}[{i}]"
        if not isinstance(rule, dict):
            errs += _shape(at, rule, dict)
            continue
        host = str(rule.get("host") or "")
        wildcard = "*" in host
        if host:
            if is_ip(host):
                errs.append(invalid(f"{at}.host", host, "must be a DNS name, not an IP address"))
            check = wildcard_dns1123_subdomain if wildcard else dns1123_subdomain
            errs += [invalid(f"{at}.host", host, m) for m in check(host)]
        if not wildcard or not opts.allow_invalid_wildcard_rule:
            errs += _rule_value(rule, at)
    return errs


def _tls(tls: list, path: str, opts: IngressOptions) -> list[tuple[str, str]]:
    errs: list[tuple[str, str]] = []
    for i, t in enumerate(tls):
        if not isinstance(t, dict):
            errs += _shape(f"{path}[{i}]", t, dict)
            continue
        for j, host in enumerate(_list(t.get("hosts"))):
            check = wildcard_dns1123_subdomain if "*" in str(host) else dns1123_subdomain
            errs += [invalid(f"{path}[{i}].hosts[{j}]", host, m) for m in check(str(host))]
        secret = t.get("secretName") or ""
        if secret and not opts.allow_invalid_secret_name:
            errs += [invalid(f"{path}[{i}].secretName", secret, m) for m in dns1123_subdomain(str(secret))]
    return errs


def ingress(obj: dict, old: dict | None = None) -> list[tuple[str, str]]:
    """ValidateIngressCreate (``old`` None) or ValidateIngressUpdate."""
    spec = obj.get("spec")
    errs = _shape("spec", spec, dict)
    spec = _dict(spec)
    opts = IngressOptions(old)
    rules, default = spec.get("rules"), spec.get("defaultBackend")
    for name, want in (("rules", list), ("tls", list), ("ingressClassName", str)):
        errs += _shape(f"spec.{name}", spec.get(name), want)
    if not _list(rules) and default is None:
        # upstream prints the Go value of the rules it was given: a nil or an empty slice
        shown = "[]networking.IngressRule(nil)" if rules is None else "[]networking.IngressRule{}"
        errs.append(("spec", f"Invalid value: {shown}: either `defaultBackend` or `rules` must be specified"))
    if default is not None:
        errs += _backend(default, "spec.defaultBackend")
    errs += _rules(_list(rules), "spec.rules", opts)
    errs += _tls(_list(spec.get("tls")), "spec.tls", opts)
    class_name = spec.get("ingressClassName")
    if isinstance(class_name, str):
        errs += [invalid("spec.ingressClassName", class_name, m) for m in dns1123_subdomain(class_name)]
    annotations = _dict(_dict(obj.get("metadata")).get("annotations"))
    if old is None and INGRESS_CLASS_ANNOTATION in annotations and isinstance(class_name, str) and \
            annotations[INGRESS_CLASS_ANNOTATION] != class_name:
        errs.append(invalid(f"annotations.{INGRESS_CLASS_ANNOTATION}", annotations[INGRESS_CLASS_ANNOTATION],
                            "must match `ingressClassName` when both are specified"))
    return errs


def ingress_status(obj: dict, old: dict | None) -> list[tuple[str, str]]:
    """ValidateIngressStatusUpdate: the addresses in status.loadBalancer.ingress (an IP the old
    status had is kept as it was)."""
    kept = {i.get("ip") for i in _list(_dict(_dict((old or {}).get("status")).get("loadBalancer")).get("ingress"))
            if isinstance(i, dict)}
    errs: list[tuple[str, str]] = []
    for n, entry in enumerate(_list(_dict(_dict(obj.get("status")).get("loadBalancer")).get("ingress"))):
        at = f"status.loadBalancer.ingress[{n}]"
        entry = _dict(entry)
        ip, host = entry.get("ip") or "", entry.get("hostname") or ""
        if ip and ip not in kept and not _canonical_ip(str(ip)):
            errs.append(invalid(f"{at}.ip", ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))
        if host:
            errs += [invalid(f"{at}.hostname", host, m) for m in dns1123_subdomain(str(host))]
            if is_ip(str(host)):
                errs.append(invalid(f"{at}.hostname", host, "must be a DNS name, not an IP address"))
    return errs


def _canonical_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# -- IngressClass ----------------------------------------------------------------------------

CONTROLLER_MAX = 250
SCOPES = ["Cluster", "Namespace"]


def domain_prefixed_path(path: str, value: str) -> list[tuple[str, str]]:
    """IsDomainPrefixedPath: "acme.io/foo", a DNS subdomain, a slash and an HTTP path."""
    if not value:
        return [required(path)]
    host, slash, rest = value.partition("/")
    if not slash or not host or not rest:
        return [invalid(path, value, 'must be a domain-prefixed path (such as "acme.io/foo")')]
    errs = [invalid(path, host, m) for m in dns1123_subdomain(host)]
    if not re.fullmatch(_HTTP_PATH, rest):
        errs.append(invalid(path, rest, _regex_error("Invalid path", _HTTP_PATH)))
    return errs


def _typed_reference(ref: object, path: str, scoped: bool) -> list[tuple[str, str]]:
    """An Ingress backend's resource (TypedLocalObjectReference) or, ``scoped``, an
    IngressClass's parameters (IngressClassParametersReference, with scope and namespace)."""
    if not isinstance(ref, dict):
        return _shape(path, ref, dict)
    errs: list[tuple[str, str]] = []
    if ref.get("apiGroup") is not None:
        errs += [invalid(f"{path}.apiGroup", ref["apiGroup"], m) for m in dns1123_subdomain(str(ref["apiGroup"]))]
    for name in ("kind", "name"):
        if not ref.get(name):
            errs.append(required(f"{path}.{name}"))
        else:
            errs += [invalid(f"{path}.{name}", ref[name], m) for m in path_segment_name(str(ref[name]))]
    if not scoped:
        return errs
    scope = ref.get("scope")
    if scope is None:
        return errs + [required(f"{path}.scope")]
    if scope not in SCOPES:
        return errs + [not_supported(f"{path}.scope", scope, SCOPES)]
    namespace = ref.get("namespace")
    if scope == "Namespace":
        if namespace is None:
            errs.append(required(f"{path}.namespace", "`parameters.scope` is set to 'Namespace'"))
        else:
            errs += [invalid(f"{path}.namespace", namespace, m) for m in dns1123_label(str(namespace))]
    elif namespace is not None:
        errs.append(forbidden(f"{path}.namespace", "`parameters.scope` is set to 'Cluster'"))
    return errs


def ingress_class(obj: dict, old: dict | None = None) -> list[tuple[str, str]]:
    spec = obj.get("spec")
    errs = _shape("spec", spec, dict)
    spec = _dict(spec)
    controller = spec.get("controller") or ""
    if old is not None and controller != (_dict(old.get("spec")).get("controller") or ""):
        errs.append(invalid("spec.controller", controller, "field is immutable"))
    if not controller:
        errs.append(required("spec.controller"))
    else:
        if len(str(controller)) > CONTROLLER_MAX:
            errs.append(("spec.controller", f"Too long: may not be more than {CONTROLLER_MAX} bytes"))
        errs += domain_prefixed_path("spec.controller", str(controller))
    if spec.get("parameters") is not None:
        errs += _typed_reference(spec["parameters"], "spec.parameters", scoped=True)
    return errs


# -- Secret ----------------------------------------------------------------------------------

# The data keys a Secret of these types must carry (core/v1 SecretType* constants).
SECRET_KEYS = {"kubernetes.io/tls": ("tls.crt", "tls.key"),
               "kubernetes.io/ssh-auth": ("ssh-privatekey",),
               "kubernetes.io/dockercfg": (".dockercfg",),
               "kubernetes.io/dockerconfigjson": (".dockerconfigjson",)}


def secret(obj: dict, old: dict | None = None) -> list[tuple[str, str]]:
    """ValidateSecret's per-type required keys (in data, or in stringData, which the API server
    merges into data before validating), and ValidateSecretUpdate's immutable type."""
    errs: list[tuple[str, str]] = []
    data = {**_dict(obj.get("data")), **_dict(obj.get("stringData"))}
    kind = obj.get("type") or "Opaque"
    for key in SECRET_KEYS.get(str(kind), ()):
        if key not in data:
            errs.append(required(f"data[{key}]"))
    if old is not None and (old.get("type") or "Opaque") != kind:
        errs.append(invalid("type", kind, "field is immutable"))
    return errs


VALIDATORS = {("networking.k8s.io/v1", "Ingress"): ingress,
              ("networking.k8s.io/v1", "IngressClass"): ingress_class,
              ("v1", "Secret"): secret}


def errors(obj: dict, old: dict | None = None) -> list[tuple[str, str]]:
    """What upstream's validation says about a create (``old`` None) or an update of ``obj``."""
    check = VALIDATORS.get((obj.get("apiVersion"), obj.get("kind")))
    return check(obj, old) if check else []
