"""Ingress status.loadBalancer as ingress-nginx's status sync writes it (internal/ingress/status/
status.go), for each ingress-nginx controller netsim plays.

A controller is a set of pods whose container image is ``*/ingress-nginx/controller`` (any tag
or digest), grouped by namespace and command-line flags.  It serves an Ingress (ingress-nginx's
class check) when:
- the Ingress names an IngressClass whose spec.controller is its --controller-class
  (default ``k8s.io/ingress-nginx``);
- or it carries the legacy kubernetes.io/ingress.class annotation equal to its --ingress-class
  (default ``nginx``);
- or it has neither and the controller runs with --watch-ingress-without-class.
An Ingress no controller serves gets no status from here (another controller's is left alone).

The addresses (runningAddresses): the --publish-service Service's (a LoadBalancer's ingress
IPs and hostnames plus its externalIPs; a ClusterIP or NodePort Service's clusterIP or
externalIPs; an ExternalName's name); without the flag, the nodes of the Running and Ready
controller pods (a node's ExternalIP, else its InternalIP: GetNodeIPOrName).  A controller
started with no flags at all is netsim's add-on, which publishes
``<namespace>/ingress-nginx-controller`` as upstream's deploy.yaml does.  When no controller pod
is ready any more, or none is left, the addresses are taken back from the Ingresses of its
classes (the last pod's shutdown does that upstream).  Writes only what changed; reads the
informer's cache (netsim.api.informer) alone.
"""

from __future__ import annotations

import logging
import re

from netsim.api import validation
from netsim.api.informer import Cache

log = logging.getLogger("netsim.controllers.ingress")

CONTROLLER_IMAGE = "ingress-nginx/controller"
DEFAULT_CONTROLLER_CLASS = "k8s.io/ingress-nginx"
DEFAULT_INGRESS_CLASS = "nginx"
ADDON_PUBLISH_SERVICE = "ingress-nginx-controller"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"


def is_controller_image(image: str) -> bool:
    """registry.k8s.io/ingress-nginx/controller:v1.12.0@sha256:... and the like."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return name == CONTROLLER_IMAGE or name.endswith("/" + CONTROLLER_IMAGE)


def _expand(text: str, env: dict[str, str]) -> str:
    """$(VAR) from the container's env, as the kubelet expands args; unknown ones stay."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def _env(pod: dict, container: dict) -> dict[str, str]:
    out = {}
    fields = {"metadata.namespace": pod["metadata"].get("namespace", ""), "metadata.name": pod["metadata"]["name"],
              "spec.nodeName": pod.get("spec", {}).get("nodeName", "")}
    for e in container.get("env") or []:
        if "value" in e:
            out[e["name"]] = str(e["value"])
        elif ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") in fields:
            out[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return out


def flags(pod: dict) -> dict[str, str] | None:
    """The controller's flags (--name=value, --name value, --bool) when ``pod`` runs one."""
    for c in pod.get("spec", {}).get("containers") or []:
        if not is_controller_image(str(c.get("image") or "")):
            continue
        env = _env(pod, c)
        words = [_expand(str(w), env) for w in (c.get("command") or [])[1:] + (c.get("args") or [])]
        out: dict[str, str] = {}
        i = 0
        while i < len(words):
            w = words[i]
            if w.startswith("--"):
                name, eq, value = w[2:].partition("=")
                if not eq and i + 1 < len(words) and not words[i + 1].startswith("-"):
                    value, i = words[i + 1], i + 1
                elif not eq:
                    value = "true"
                out[name] = value
            i += 1
        if not out:  # no flags at all: netsim's add-on, which publishes its Service
            out["publish-service"] = f"{pod['metadata'].get('namespace', '')}/{ADDON_PUBLISH_SERVICE}"
        return out
    return None


def _ready(pod: dict) -> bool:
    st = pod.get("status") or {}
    return not pod["metadata"].get("deletionTimestamp") and st.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "t", "yes")


def serves(cfg: dict[str, str], ing: dict, classes: dict[str, dict]) -> bool:
    """Whether a controller with flags ``cfg`` serves ``ing`` (ingress-nginx's IngressClass check)."""
    annotations = ing["metadata"].get("annotations") or {}
    if CLASS_ANNOTATION in annotations:
        return annotations[CLASS_ANNOTATION] == cfg.get("ingress-class", DEFAULT_INGRESS_CLASS)
    name = (ing.get("spec") or {}).get("ingressClassName")
    if name is None:
        return _truthy(cfg.get("watch-ingress-without-class"))
    if _truthy(cfg.get("ingress-class-by-name")) and name == cfg.get("ingress-class", DEFAULT_INGRESS_CLASS):
        return True
    cls = classes.get(name)
    return cls is not None and (cls.get("spec") or {}).get("controller") == \
        cfg.get("controller-class", DEFAULT_CONTROLLER_CLASS)


def _sorted(addrs: list[dict]) -> list[dict]:
    # lessLoadBalancerIngress: by hostname, then IP
    return sorted(addrs, key=lambda a: (a.get("hostname", ""), a.get("ip", "")))


def _from_service(cache: Cache, ref: str, namespace: str) -> list[dict] | None:
    """statusAddressFromService; None when the Service is not there (the status is left as is)."""
    ns, _, name = ref.rpartition("/")
    svc = cache.get("Service", ns or namespace, name)
    if svc is None:
        return None
    spec = svc.get("spec") or {}
    kind = spec.get("type") or "ClusterIP"
    external = [{"ip": ip} for ip in spec.get("externalIPs") or []]
    if kind == "ExternalName":
        return [{"hostname": spec.get("externalName", "")}]
    if kind == "ClusterIP" or (kind == "NodePort" and not external):
        return [{"ip": spec["clusterIP"]}] if spec.get("clusterIP") else []
    if kind == "NodePort":
        return external
    addrs = []
    for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        addrs.append({k: i[k] for k in ("hostname", "ip") if i.get(k)})
    seen = {a.get("ip") for a in addrs}
    return addrs + [e for e in external if e["ip"] not in seen]


def _node_address(cache: Cache, node_name: str) -> str | None:
    node = cache.get("Node", None, node_name) or {}
    addresses = (node.get("status") or {}).get("addresses") or []
    internal = next((a["address"] for a in addresses if a.get("type") == "InternalIP" and a.get("address")), None)
    return next((a["address"] for a in addresses if a.get("type") == "ExternalIP" and a.get("address")), internal)


def _addresses(cache: Cache, pods: list[dict], cfg: dict[str, str]) -> list[dict] | None:
    if cfg.get("publish-status-address"):
        listed = [a.strip() for a in cfg["publish-status-address"].split(",") if a.strip()]
        return [{"ip": a} if validation.is_ip(a) else {"hostname": a} for a in listed]
    if cfg.get("publish-service"):
        return _from_service(cache, cfg["publish-service"], pods[0]["metadata"].get("namespace", ""))
    out: list[dict] = []
    for p in pods:
        addr = _node_address(cache, p["spec"].get("nodeName") or "")
        if addr and all(addr not in (a.get("ip"), a.get("hostname")) for a in out):
            out.append({"ip": addr} if validation.is_ip(addr) else {"hostname": addr})
    return out


def controllers(cache: Cache) -> list[tuple[dict[str, str], list[dict]]]:
    """Every ingress-nginx controller: its flags and its pods, ready first (all of a
    Deployment's pods run the same flags)."""
    groups: dict[tuple, tuple[dict[str, str], list[dict]]] = {}
    for pod in cache.of_kind("Pod"):
        cfg = flags(pod)
        if cfg is None:
            continue
        key = (pod["metadata"].get("namespace"), tuple(sorted(cfg.items())))
        groups.setdefault(key, (cfg, []))[1].append(pod)
    return [groups[k] for k in sorted(groups)]


def ingress_status(cache: Cache) -> None:
    classes = {c["metadata"]["name"]: c for c in cache.of_kind("IngressClass")}
    running = []
    for cfg, pods in controllers(cache):
        ready = sorted((p for p in pods if _ready(p)), key=lambda p: p["metadata"]["name"])
        # no ready pod: the controller is down, and its last pod took its addresses back
        running.append((cfg, _addresses(cache, ready, cfg) if ready else []))
    for ing in cache.of_kind("Ingress"):
        mine = [addrs for cfg, addrs in running if serves(cfg, ing, classes)]
        if not mine and serves({}, ing, classes):
            mine = [[]]  # an ingress-nginx class with no controller pod left: no address
        if not mine:
            continue  # not ours: another controller's status is not touched
        if any(a is None for a in mine):
            continue  # the publish Service is not there: status.go keeps what it wrote
        merged: list[dict] = []
        for addrs in mine:
            merged += [a for a in addrs if a not in merged]
        want = {"ingress": _sorted(merged)} if merged else {}
        status = ing.get("status") or {}
        if (status.get("loadBalancer") or {}) != want:
            cache.update({**ing, "status": {**status, "loadBalancer": want}})
