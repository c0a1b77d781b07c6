"""The Gateway API controller for GatewayClasses whose controllerName is netsim's
(``netsim.io/gateway-controller``; the ``gateway`` add-on brings GatewayClass ``netsim``).

It accepts such a GatewayClass; gives each of its Gateways a proxy Deployment
``<gateway>-netsim`` (1 replica, image ``netsim/gateway-proxy``, label
``gateway.networking.k8s.io/gateway-name``; the agent runs nginx in its pod with the Gateway's
ProxyConfig, netsim.node.ingress.gateway) and a LoadBalancer Service of the same name with the
listeners' ports, both owned by the Gateway (the garbage collector removes them with it); and
writes the status the spec asks for (netsim.controllers.gatewayapi): the Gateway's addresses
(the Service's LoadBalancer IPs), conditions and listeners, and this controller's entries of its
HTTPRoutes' status.parents.  Every write is made only when something changed.
May import: netsim.model, netsim.api and netsim.controllers.gatewayapi."""

from __future__ import annotations

import hashlib
import json
import logging

from netsim.api import registry
from netsim.api.informer import Cache
from netsim.api.registry import now
from netsim.controllers import gatewayapi as gw

PROXY_IMAGE = "netsim/gateway-proxy"
NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
SPEC_HASH = "netsim.io/gateway-spec-hash"
SUFFIX = "-netsim"

log = logging.getLogger("netsim.controllers.gateway")


def addon_objects(addons: list[str] | tuple[str, ...] = ("gateway",)) -> list[dict]:
    """The ``gateway`` add-on: GatewayClass ``netsim``, served by this controller."""
    if "gateway" not in addons:
        return []
    return [{"apiVersion": f"{gw.GROUP}/v1", "kind": "GatewayClass", "metadata": {"name": gw.CLASS_NAME},
             "spec": {"controllerName": gw.CONTROLLER_NAME,
                      "description": "netsim's Gateway: a proxy Deployment (nginx) and a LoadBalancer Service "
                                     "per Gateway"}}]


def proxy_name(gateway: dict) -> str:
    return gateway["metadata"]["name"] + SUFFIX


def _owner(obj: dict) -> dict:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def _terminating(obj: dict) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def _ports(gateway: dict) -> list[int]:
    return sorted({int(lis["port"]) for lis in (gateway.get("spec") or {}).get("listeners") or []
                   if isinstance(lis.get("port"), int)})


def desired(gateway: dict) -> tuple[dict, dict]:
    """The proxy Deployment and the LoadBalancer Service a Gateway gets."""
    name, ns = proxy_name(gateway), gateway["metadata"]["namespace"]
    labels = {NAME_LABEL: gateway["metadata"]["name"]}
    meta = {"name": name, "namespace": ns, "labels": labels, "ownerReferences": [_owner(gateway)]}
    ports = _ports(gateway)
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
                  "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                           "template": {"metadata": {"labels": labels},
                                        "spec": {"containers": [{"name": "proxy", "image": PROXY_IMAGE,
                                                                 "ports": [{"name": f"l-{p}", "containerPort": p}
                                                                           for p in ports]}]}}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": meta,
               "spec": {"type": "LoadBalancer", "selector": labels,
                        "ports": [{"name": f"l-{p}", "port": p, "targetPort": p, "protocol": "TCP"} for p in ports]}}
    return deployment, service


def _hash(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj["spec"], sort_keys=True).encode()).hexdigest()[:16]


def _ensure(cache: Cache, want: dict) -> dict | None:
    """The object as the cache has it, applied first (through the API's semantics: defaults,
    a Service's ClusterIP, NodePorts and their release) when it is missing or what it was made
    from changed.  The spec the API server defaulted is not compared with ours: the hash of ours
    is kept in an annotation."""
    h = _hash(want)
    meta = want["metadata"]
    have = cache.get(want["kind"], meta["namespace"], meta["name"])
    if have is not None and (have["metadata"].get("annotations") or {}).get(SPEC_HASH) == h:
        return have
    try:
        registry.apply(cache.store, [{**want, "metadata": {**meta, "annotations": {SPEC_HASH: h}}}])
    except registry.ApiError as exc:
        log.warning("gateway proxy %s/%s: %s", meta["namespace"], meta["name"], exc)
    return have  # the write arrives through the watch; the next sync sees it


def _timed(old: dict | None, new: dict, stamp: str) -> dict:
    """new status with conditions' lastTransitionTime kept where their status did not change."""
    old = old or {}
    out = {**new, "conditions": gw.merge_conditions(old.get("conditions"), new["conditions"], stamp)}
    if "listeners" in new:
        before = {x.get("name"): x for x in old.get("listeners") or []}
        out["listeners"] = [{**x, "conditions": gw.merge_conditions((before.get(x["name"]) or {}).get("conditions"),
                                                                     x["conditions"], stamp)}
                            for x in new["listeners"]]
    return out


def _set_status(cache: Cache, obj: dict, status: dict) -> None:
    if status != obj.get("status"):
        cache.update({**obj, "status": status})


def _classes(cache: Cache, stamp: str) -> set[str]:
    """Accept this controller's GatewayClasses; their names."""
    ours = set()
    for gc in cache.of_kind("GatewayClass"):
        if (gc.get("spec") or {}).get("controllerName") != gw.CONTROLLER_NAME:
            continue
        ours.add(gc["metadata"]["name"])
        gen = gc["metadata"].get("generation")
        cond = {"type": "Accepted", "status": "True", "reason": "Accepted",
                "message": "netsim's gateway controller serves this class",
                **({"observedGeneration": gen} if gen is not None else {})}
        status = gc.get("status") or {}
        _set_status(cache, gc, {**status, "conditions": gw.merge_conditions(status.get("conditions"), [cond], stamp)})
    return ours


def _route_parents(old: list[dict], ours: list[dict], stamp: str) -> list[dict]:
    """A route's status.parents: other controllers' entries as they are, then ours with the
    lastTransitionTime of the entry for the same parentRef."""
    keep = [p for p in old if p.get("controllerName") != gw.CONTROLLER_NAME]
    before = {json.dumps(p.get("parentRef"), sort_keys=True): p for p in old
              if p.get("controllerName") == gw.CONTROLLER_NAME}
    mine = [{**p, "conditions": gw.merge_conditions(
        (before.get(json.dumps(p["parentRef"], sort_keys=True)) or {}).get("conditions"), p["conditions"], stamp)}
        for p in ours]
    return keep + mine


def gateways(cache: Cache) -> None:
    stamp = now()
    classes = _classes(cache, stamp)
    routes = [r for r in cache.of_kind("HTTPRoute") if not _terminating(r)]
    grants = cache.of_kind("ReferenceGrant")
    services, slices = cache.of_kind("Service"), cache.of_kind("EndpointSlice")
    secrets, namespaces = cache.of_kind("Secret"), cache.of_kind("Namespace")
    parents: dict[tuple[str, str], list[dict]] = {}
    waiting = "the LoadBalancer Service has no address yet" if registry.read_config(cache.store).load_balancer_pool \
        else "no address: the scenario has no networking.loadBalancerPool for LoadBalancer Services"
    for g in cache.of_kind("Gateway"):
        if (g.get("spec") or {}).get("gatewayClassName") not in classes or _terminating(g):
            continue
        deployment, service = desired(g)
        _ensure(cache, deployment)
        svc = _ensure(cache, service) or {}
        ingress = (((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress")) or []
        addresses = [i["ip"] for i in ingress if i.get("ip")]
        mine = gw.routes_of(g, routes)
        c = gw.compute(g, mine, grants, services, slices, secrets, namespaces)
        _set_status(cache, g, _timed(g.get("status"), gw.gateway_status(c, g, addresses, waiting), stamp))
        for r in mine:
            key = (r["metadata"]["namespace"], r["metadata"]["name"])
            parents.setdefault(key, []).extend(gw.parent_statuses(c, g, r))
    for r in routes:
        key = (r["metadata"]["namespace"], r["metadata"]["name"])
        old = (r.get("status") or {}).get("parents") or []
        if key not in parents and not any(p.get("controllerName") == gw.CONTROLLER_NAME for p in old):
            continue
        new = _route_parents(old, parents.get(key, []), stamp)
        if new != old:
            cache.update({**r, "status": {**(r.get("status") or {}), "parents": new}})
