"""What netsim knows of an ingress-nginx controller from its pod: that it is one (its image), the
flags that decide what it serves (its container's args, as the kubelet expands them), and which
Ingresses those flags select.

One place for these decisions: the agent (which runs nginx for the pod), the status controller
(which publishes the controller's address on the Ingresses it serves) and ``netsim ingress
explain`` all read a controller through this module.  Plain functions over the store's dicts."""

from __future__ import annotations

import re
from dataclasses import dataclass

from netsim.model import names

CONTROLLER_IMAGE = "ingress-nginx/controller"
CONTROLLER_CLASS = "k8s.io/ingress-nginx"  # --controller-class's default
INGRESS_CLASS = "nginx"                    # --ingress-class's default
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}  # Go's strconv.ParseBool, as pflag reads a bool


def controller_container(pod: dict) -> dict | None:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if names.image_path(str(c.get("image") or "")).endswith(CONTROLLER_IMAGE):
            return c
    return None


def is_controller_pod(pod: dict) -> bool:
    """A container of image */ingress-nginx/controller (any registry, tag or digest), as
    dns.is_dns_pod knows CoreDNS by its image."""
    return controller_container(pod) is not None


@dataclass(frozen=True)
class ControllerArgs:
    """The flags that decide what a controller serves and publishes (ingress-nginx's cmd/nginx/flags.go)."""
    ingress_class: str = INGRESS_CLASS
    controller_class: str = CONTROLLER_CLASS
    watch_without_class: bool = False
    ingress_class_by_name: bool = False
    publish_service: str | None = None
    publish_status_address: str | None = None


def _expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of container args ($$ escapes; unknown names stay)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def _env(pod: dict, container: dict) -> dict[str, str]:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    fields = {"metadata.namespace": meta.get("namespace", ""), "metadata.name": meta.get("name", ""),
              "spec.nodeName": spec.get("nodeName", "")}
    env: dict[str, str] = {}
    for e in container.get("env") or []:
        ref = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        env[e["name"]] = fields.get(ref, "") if ref else _expand(str(e.get("value", "")), env)
    return env


def parse_flags(argv: list[str]) -> dict[str, str]:
    """``--name=value``, ``--name value`` and a bare ``--bool`` (true), by name without dashes."""
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-"):
            name, eq, value = a.lstrip("-").partition("=")
            if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("-") \
                    and name not in ("watch-ingress-without-class", "ingress-class-by-name"):
                value, i = argv[i + 1], i + 1
            flags[name] = value if (eq or value) else "true"
        i += 1
    return flags


def controller_args(pod: dict) -> ControllerArgs:
    """The controller's flags from its pod (or a pod template given as a pod), defaults for
    what it does not set."""
    c = controller_container(pod) or {}
    env = _env(pod, c)
    flags = parse_flags([_expand(str(a), env) for a in (c.get("command") or []) + (c.get("args") or [])])
    d = ControllerArgs()
    return ControllerArgs(
        ingress_class=flags.get("ingress-class", d.ingress_class),
        controller_class=flags.get("controller-class", d.controller_class),
        watch_without_class=flags.get("watch-ingress-without-class", "false") in _TRUE,
        ingress_class_by_name=flags.get("ingress-class-by-name", "false") in _TRUE,
        publish_service=flags.get("publish-service") or None,
        publish_status_address=flags.get("publish-status-address") or None)


def served(ing: dict, classes: list[dict], args: ControllerArgs) -> tuple[bool, str]:
    """Whether a controller with ``args`` serves ``ing``, and why: ingress-nginx's store.go
    GetIngressClass (spec.ingressClassName first, then the legacy annotation, then
    --watch-ingress-without-class) over the classes its informer keeps (ingressclass.go: those
    whose spec.controller is --controller-class, or named --ingress-class with
    --ingress-class-by-name)."""
    name = (ing.get("spec") or {}).get("ingressClassName")
    if name:
        cls = next((c for c in classes if c["metadata"]["name"] == name), None)
        if cls is None:
            return False, f"ingressClassName {name!r}: no such IngressClass"
        ctl = (cls.get("spec") or {}).get("controller", "")
        if args.ingress_class_by_name and name == args.ingress_class:
            return True, f"IngressClass {name!r} by name (--ingress-class-by-name)"
        if ctl != args.controller_class:
            return False, f"IngressClass {name!r} belongs to controller {ctl!r}, not {args.controller_class!r}"
        return True, f"IngressClass {name!r} (controller {ctl})"
    legacy = ((ing.get("metadata") or {}).get("annotations") or {}).get(CLASS_ANNOTATION)
    if legacy is not None:
        if legacy != args.ingress_class:
            return False, f"annotation {CLASS_ANNOTATION}={legacy!r}, this controller's class is {args.ingress_class!r}"
        return True, f"annotation {CLASS_ANNOTATION}={legacy!r}"
    if args.watch_without_class:
        return True, "no class, and the controller watches Ingresses without class"
    return False, ("no ingressClassName and no class annotation (the controller runs without "
                   "--watch-ingress-without-class)")
