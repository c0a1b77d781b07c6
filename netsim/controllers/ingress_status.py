"""Ingress status.loadBalancer as ingress-nginx's status sync writes it (internal/ingress/status/
status.go), for each ingress-nginx controller netsim plays.

A controller is the set of its pods (netsim.model.ingress_nginx says which pods, their flags and
which Ingresses those flags select), grouped by namespace and flags.  An Ingress no controller
serves gets no status from here (another controller's is left alone).

The addresses (runningAddresses): the --publish-service Service's (a LoadBalancer's ingress
IPs and hostnames plus its externalIPs; a ClusterIP or NodePort Service's clusterIP or
externalIPs; an ExternalName's name); without the flag, the nodes of the Running and Ready
controller pods (a node's ExternalIP, else its InternalIP: GetNodeIPOrName).  When no controller pod
is ready any more, or none is left, the addresses are taken back from the Ingresses of its
classes (the last pod's shutdown does that upstream).  Writes only what changed; reads the
informer's cache (netsim.api.informer) alone.
"""

from __future__ import annotations

import logging

from netsim.api import validation
from netsim.api.informer import Cache
from netsim.model.ingress_nginx import ControllerArgs, controller_args, is_controller_pod, served

log = logging.getLogger("netsim.controllers.ingress")
DEFAULT_ARGS = ControllerArgs()


def _ready(pod: dict) -> bool:
    st = pod.get("status") or {}
    return not pod["metadata"].get("deletionTimestamp") and st.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])


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


def _addresses(cache: Cache, pods: list[dict], args: ControllerArgs) -> list[dict] | None:
    if args.publish_status_address:
        listed = [a.strip() for a in args.publish_status_address.split(",") if a.strip()]
        return [{"ip": a} if validation.is_ip(a) else {"hostname": a} for a in listed]
    if args.publish_service:
        return _from_service(cache, args.publish_service, pods[0]["metadata"].get("namespace", ""))
    out: list[dict] = []
    for p in pods:
        addr = _node_address(cache, p["spec"].get("nodeName") or "")
        if addr and all(addr not in (a.get("ip"), a.get("hostname")) for a in out):
            out.append({"ip": addr} if validation.is_ip(addr) else {"hostname": addr})
    return out


def controllers(cache: Cache) -> list[tuple[ControllerArgs, list[dict]]]:
    """Every ingress-nginx controller: its flags and its pods (all of a Deployment's pods run
    the same flags)."""
    groups: dict[tuple, tuple[ControllerArgs, list[dict]]] = {}
    for pod in cache.of_kind("Pod"):
        if not is_controller_pod(pod):
            continue
        args = controller_args(pod)
        key = (pod["metadata"].get("namespace"), repr(args))
        groups.setdefault(key, (args, []))[1].append(pod)
    return [groups[k] for k in sorted(groups)]


def ingress_status(cache: Cache) -> None:
    classes = cache.of_kind("IngressClass")
    running = []
    for cfg, pods in controllers(cache):
        ready = sorted((p for p in pods if _ready(p)), key=lambda p: p["metadata"]["name"])
        # no ready pod: the controller is down, and its last pod took its addresses back
        running.append((cfg, _addresses(cache, ready, cfg) if ready else []))
    for ing in cache.of_kind("Ingress"):
        mine = [addrs for args, addrs in running if served(ing, classes, args)[0]]
        if not mine and served(ing, classes, DEFAULT_ARGS)[0]:
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
