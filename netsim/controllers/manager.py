"""The controller manager and the scheduler: one level-triggered pass over the whole cluster.

Each controller is a plain function of the cache: it compares what the objects ask for with
what exists and writes the difference (as kube-controller-manager's controllers do, each in
a few lines because netsim runs no containers).  :func:`sync` runs them in dependency order,
so one pass carries a Deployment all the way to bound pods.  They record the events the real
ones record (ScalingReplicaSet, SuccessfulCreate/Delete, Scheduled) through ``cache.recorder``,
and Deployment and ReplicaSet status is what the real controllers write (netsim.controllers.status),
which `kubectl rollout status` and `kubectl wait --for=condition=Available` read.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import uuid

from netsim.api.events import NORMAL, WARNING
from netsim.api.informer import Cache
from netsim.api.registry import now, read_config
from netsim.controllers import gateway
from netsim.controllers import status as workload_status
from netsim.controllers.ingress_status import ingress_status
from netsim.model import k8s

log = logging.getLogger("netsim.controllers")

CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"
RETRY_S = 0.5
SCHEDULER = "default-scheduler"
DEPLOYMENT_CONTROLLER = "deployment-controller"
REPLICASET_CONTROLLER = "replicaset-controller"


def _owner_ref(owner: dict) -> dict:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def controller_of(obj: dict) -> dict | None:
    return next((r for r in obj["metadata"].get("ownerReferences", []) if r.get("controller")), None)


def owned_by(objs: list[dict], owner: dict) -> list[dict]:
    uid = owner["metadata"]["uid"]
    return [o for o in objs if (controller_of(o) or {}).get("uid") == uid]


def terminating(obj: dict) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def pod_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))


def pod_phase(pod: dict) -> str:
    return pod.get("status", {}).get("phase", "Pending")


def active(pod: dict) -> bool:
    return not terminating(pod) and pod_phase(pod) not in ("Succeeded", "Failed")


def _pod_from_template(owner: dict, template: dict, name: str, extra_labels: dict | None = None) -> dict:
    meta = copy.deepcopy(template.get("metadata") or {})
    labels = {**meta.get("labels", {}), **(extra_labels or {})}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": owner["metadata"]["namespace"], "labels": labels,
                         "annotations": meta.get("annotations", {}), "ownerReferences": [_owner_ref(owner)]},
            "spec": copy.deepcopy(template["spec"])}


def _suffix() -> str:
    return uuid.uuid4().hex[:5]


def _replace_status(cache: Cache, obj: dict, status: dict) -> None:
    """Write the whole status (fields the API omits when empty stay omitted)."""
    if status != obj.get("status"):
        cache.update({**obj, "status": status})


def _set_status(cache: Cache, obj: dict, status: dict) -> None:
    merged = {**obj.get("status", {}), **status}
    if merged != obj.get("status"):
        cache.update({**obj, "status": merged})


def _scale(cache: Cache, owner: dict, pods: list[dict], want: int, make_name) -> None:
    live = [p for p in pods if active(p)]
    for _ in range(want - len(live)):
        pod = cache.create(_pod_from_template(owner, owner["spec"]["template"], make_name()))
        if pod:
            cache.recorder.event(owner, NORMAL, "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}",
                                 component=REPLICASET_CONTROLLER)
    if len(live) > want:
        # As the ReplicaSet controller does: drop unscheduled, then not-ready, then the newest.
        live.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)
        live.sort(key=lambda p: (bool(p["spec"].get("nodeName")), pod_ready(p)))
        for p in live[:len(live) - want]:
            _delete_pod(cache, p)
            cache.recorder.event(owner, NORMAL, "SuccessfulDelete", f"Deleted pod: {p['metadata']['name']}",
                                 component=REPLICASET_CONTROLLER)


def _delete_pod(cache: Cache, pod: dict) -> None:
    if pod["spec"].get("nodeName") and not terminating(pod):
        cache.update({**pod, "metadata": {**pod["metadata"], "deletionTimestamp": now()}})
    elif not pod["spec"].get("nodeName"):
        cache.delete(pod)


# -- namespaces and garbage collection ------------------------------------------------------

def namespaces(cache: Cache) -> None:
    for ns in cache.of_kind("Namespace"):
        if not terminating(ns):
            continue
        name = ns["metadata"]["name"]
        left = [o for k in k8s.KINDS.values() if k.namespaced for o in cache.of_kind(k.kind, name)]
        for o in left:
            if o["kind"] == "Pod":
                _delete_pod(cache, o)
            else:
                cache.delete(o)
        if not left:
            # Events are not in the cache (netsim.api.informer); they go with their namespace.
            cache.store.delete_prefix(k8s.prefix("Event", name))
            cache.delete(ns)


def garbage_collect(cache: Cache) -> None:
    """Objects whose controlling owner is gone follow it (cascading deletion); pods bound to
    a node that no longer exists are removed (the pod GC)."""
    uids = {o["metadata"]["uid"] for o in cache.objects.values() if "uid" in o.get("metadata", {})}
    nodes = {n["metadata"]["name"] for n in cache.of_kind("Node")}
    for o in list(cache.objects.values()):
        ref = controller_of(o)
        if ref and ref["uid"] not in uids:
            if o["kind"] == "Pod":
                _delete_pod(cache, o)
            else:
                cache.delete(o)
        elif o["kind"] == "Pod" and o["spec"].get("nodeName") and o["spec"]["nodeName"] not in nodes:
            cache.delete(o)


# -- workloads --------------------------------------------------------------------------------

def deployments(cache: Cache) -> None:
    """One ReplicaSet per pod template (named by its hash); the current one is scaled to the
    Deployment's replicas and the others to zero."""
    for d in cache.of_kind("Deployment"):
        if terminating(d):
            continue
        ns = d["metadata"]["namespace"]
        h = k8s.template_hash(d["spec"]["template"])
        name = f"{d['metadata']['name']}-{h}"
        mine = owned_by(cache.of_kind("ReplicaSet", ns), d)
        replicas = d["spec"].get("replicas", 1)
        created = False
        if not any(rs["metadata"]["name"] == name for rs in mine):
            template = copy.deepcopy(d["spec"]["template"])
            template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
            selector = copy.deepcopy(d["spec"]["selector"])
            selector.setdefault("matchLabels", {})["pod-template-hash"] = h
            created = bool(cache.create({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                         "metadata": {"name": name, "namespace": ns,
                                                      "labels": template["metadata"]["labels"],
                                                      "ownerReferences": [_owner_ref(d)]},
                                         "spec": {"replicas": replicas, "selector": selector, "template": template}}))
            if created:
                cache.recorder.event(d, NORMAL, "ScalingReplicaSet",
                                     f"Scaled up replica set {name} from 0 to {replicas}",
                                     component=DEPLOYMENT_CONTROLLER)
        for rs in mine:
            want = replicas if rs["metadata"]["name"] == name else 0
            have = rs["spec"].get("replicas", 1)
            if have != want and cache.update({**rs, "spec": {**rs["spec"], "replicas": want}}):
                cache.recorder.event(d, NORMAL, "ScalingReplicaSet",
                                     f"Scaled {'up' if want > have else 'down'} replica set "
                                     f"{rs['metadata']['name']} from {have} to {want}",
                                     component=DEPLOYMENT_CONTROLLER)
        pods = {rs["metadata"]["name"]: owned_by(cache.of_kind("Pod", ns), rs) for rs in mine}
        _replace_status(cache, d, workload_status.deployment(d, name, pods, created, d.get("status") or {},
                                                             now()))


def replicasets(cache: Cache) -> None:
    for rs in cache.of_kind("ReplicaSet"):
        if terminating(rs):
            continue
        pods = owned_by(cache.of_kind("Pod", rs["metadata"]["namespace"]), rs)
        _scale(cache, rs, pods, rs["spec"].get("replicas", 1), lambda rs=rs: f"{rs['metadata']['name']}-{_suffix()}")
        _replace_status(cache, rs, workload_status.replicaset(rs, pods))


def _tolerates(pod_spec: dict, taints: list[dict]) -> bool:
    for taint in taints:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        ok = False
        for t in pod_spec.get("tolerations", []):
            if t.get("effect") and t["effect"] != taint["effect"]:
                continue
            if t.get("operator", "Equal") == "Exists":
                ok = not t.get("key") or t["key"] == taint["key"]
            else:
                ok = t.get("key") == taint["key"] and (t.get("value") or "") == (taint.get("value") or "")
            if ok:
                break
        if not ok:
            return False
    return True


def fits(pod_spec: dict, node: dict) -> bool:
    labels = node["metadata"].get("labels", {})
    if any(labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    return _tolerates(pod_spec, node.get("spec", {}).get("taints", []))


def daemonsets(cache: Cache) -> None:
    nodes = [n for n in cache.of_kind("Node") if not terminating(n)]
    for ds in cache.of_kind("DaemonSet"):
        if terminating(ds):
            continue
        pods = [p for p in owned_by(cache.of_kind("Pod", ds["metadata"]["namespace"]), ds) if active(p)]
        by_node: dict[str, list[dict]] = {}
        for p in pods:
            by_node.setdefault(p["spec"].get("nodeName", ""), []).append(p)
        eligible = [n for n in nodes if fits(ds["spec"]["template"]["spec"], n)]
        for node in eligible:
            name = node["metadata"]["name"]
            if not by_node.get(name):
                pod = _pod_from_template(ds, ds["spec"]["template"], f"{ds['metadata']['name']}-{_suffix()}")
                pod["spec"]["nodeName"] = name
                cache.create(pod)
            for extra in by_node.get(name, [])[1:]:
                _delete_pod(cache, extra)
        wanted = {n["metadata"]["name"] for n in eligible}
        for node_name, ps in by_node.items():
            if node_name not in wanted:
                for p in ps:
                    _delete_pod(cache, p)
        _set_status(cache, ds, {"desiredNumberScheduled": len(eligible),
                                "currentNumberScheduled": sum(1 for n in wanted if by_node.get(n)),
                                "numberReady": sum(pod_ready(p) for p in pods)})


def statefulsets(cache: Cache) -> None:
    """Pods name-0 .. name-(N-1), stable names; OrderedReady creates each only when the ones
    before it are running and ready, and removes from the highest ordinal, one at a time."""
    for sts in cache.of_kind("StatefulSet"):
        if terminating(sts):
            continue
        ns, base = sts["metadata"]["namespace"], sts["metadata"]["name"]
        spec = sts["spec"]
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        want = spec.get("replicas", 1)
        pods = {p["metadata"]["name"]: p for p in owned_by(cache.of_kind("Pod", ns), sts)}
        for i in range(want):
            name = f"{base}-{i}"
            p = pods.get(name)
            if p is None:
                pod = _pod_from_template(sts, spec["template"], name,
                                         {"statefulset.kubernetes.io/pod-name": name,
                                          "apps.kubernetes.io/pod-index": str(i)})
                pod["spec"]["hostname"] = name
                if spec.get("serviceName"):
                    pod["spec"]["subdomain"] = spec["serviceName"]
                cache.create(pod)
                if ordered:
                    break
            elif ordered and not (active(p) and pod_ready(p)):
                break
        extra = sorted((p for n, p in pods.items() if _ordinal(n, base) >= want),
                       key=lambda p: _ordinal(p["metadata"]["name"], base), reverse=True)
        for p in extra[:1] if ordered else extra:
            _delete_pod(cache, p)
        live = [p for p in pods.values() if active(p)]
        _set_status(cache, sts, {"replicas": len(live), "readyReplicas": sum(pod_ready(p) for p in live),
                                 "observedGeneration": sts["metadata"].get("generation", 1)})


def _ordinal(name: str, base: str) -> int:
    tail = name[len(base) + 1:]
    return int(tail) if tail.isdigit() else -1


def jobs(cache: Cache) -> None:
    """Run pods until `completions` have succeeded, `parallelism` at a time."""
    for job in cache.of_kind("Job"):
        if terminating(job) or any(c.get("type") == "Complete" for c in job.get("status", {}).get("conditions", [])):
            continue
        spec = job["spec"]
        pods = owned_by(cache.of_kind("Pod", job["metadata"]["namespace"]), job)
        succeeded = sum(pod_phase(p) == "Succeeded" for p in pods)
        running = [p for p in pods if active(p)]
        completions, parallelism = spec.get("completions", 1), spec.get("parallelism", 1)
        room = min(parallelism - len(running), completions - succeeded - len(running))
        labels = {"job-name": job["metadata"]["name"], "controller-uid": job["metadata"]["uid"],
                  "batch.kubernetes.io/job-name": job["metadata"]["name"]}
        for _ in range(max(0, room)):
            cache.create(_pod_from_template(job, spec["template"], f"{job['metadata']['name']}-{_suffix()}",
                                            labels))
        status = {"active": len(running), "succeeded": succeeded}
        if succeeded >= completions:
            status["conditions"] = [{"type": "Complete", "status": "True", "lastTransitionTime": now()}]
            status["completionTime"] = now()
        _set_status(cache, job, status)


# -- scheduler ------------------------------------------------------------------------------

def schedule(cache: Cache) -> None:
    """Bind pending pods: nodeSelector and taints filter; the node with the fewest pods of the
    same owner, then the fewest pods, wins (a simple spread)."""
    nodes = [n for n in cache.of_kind("Node") if not terminating(n)
             and any(c.get("type") == "Ready" and c.get("status") == "True"
                     for c in n.get("status", {}).get("conditions", []))]
    pods = [p for p in cache.of_kind("Pod") if active(p)]
    load = {n["metadata"]["name"]: 0 for n in nodes}
    owner_load: dict[tuple[str, str], int] = {}
    for p in pods:
        node = p["spec"].get("nodeName")
        if node in load:
            load[node] += 1
            owner = (controller_of(p) or {}).get("uid", "")
            owner_load[(owner, node)] = owner_load.get((owner, node), 0) + 1
    for p in pods:
        if p["spec"].get("nodeName"):
            continue
        candidates = [n["metadata"]["name"] for n in nodes if fits(p["spec"], n)]
        if not candidates:
            message = (f"0/{len(nodes)} nodes are available: no node matches the pod's "
                       "nodeSelector and tolerations")
            if (p.get("status") or {}).get("conditions", [{}])[0].get("message") != message:
                cache.recorder.event(p, WARNING, "FailedScheduling", message, component=SCHEDULER)
            _set_status(cache, p, {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]})
            continue
        owner = (controller_of(p) or {}).get("uid", "")
        best = min(candidates, key=lambda n: (owner_load.get((owner, n), 0), load[n], n))
        bound = cache.update({**p, "spec": {**p["spec"], "nodeName": best}})
        if bound:
            load[best] += 1
            owner_load[(owner, best)] = owner_load.get((owner, best), 0) + 1
            meta = p["metadata"]
            cache.recorder.event(bound, NORMAL, "Scheduled",
                                 f"Successfully assigned {meta['namespace']}/{meta['name']} to {best}",
                                 component=SCHEDULER)


# -- endpoint slices --------------------------------------------------------------------------

def _resolve_port(pod: dict, target) -> int | None:
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for c in pod["spec"].get("containers", []):
        for p in c.get("ports", []):
            if p.get("name") == target:
                return p["containerPort"]
    return None


def endpoint_slices(cache: Cache) -> None:
    """For every Service with a selector: its pods that have an IP, grouped by how their
    target ports resolve (a named port may differ per pod), one slice per group."""
    slices_by_svc: dict[tuple[str, str], list[dict]] = {}
    for s in cache.of_kind("EndpointSlice"):
        svc_name = s["metadata"].get("labels", {}).get("kubernetes.io/service-name")
        if controller_of(s) and svc_name:
            slices_by_svc.setdefault((s["metadata"]["namespace"], svc_name), []).append(s)
    for svc in cache.of_kind("Service"):
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        existing = {s["metadata"]["name"]: s for s in slices_by_svc.pop((ns, name), [])}
        if not svc["spec"].get("selector"):
            continue
        groups: dict[tuple, list[dict]] = {}
        for pod in cache.of_kind("Pod", ns):
            if not k8s.service_selects(svc, pod) or not pod.get("status", {}).get("podIP"):
                continue
            if pod_phase(pod) in ("Succeeded", "Failed"):
                continue
            ports = tuple((p.get("name", ""), _resolve_port(pod, p.get("targetPort", p["port"])),
                           p.get("protocol", "TCP")) for p in svc["spec"].get("ports", []))
            ports = tuple(p for p in ports if p[1] is not None)
            if svc["spec"].get("ports") and not ports:
                continue
            ready = pod_ready(pod) and not terminating(pod)
            endpoint = {
                "addresses": [pod["status"]["podIP"]],
                "conditions": {"ready": ready, "serving": pod_ready(pod), "terminating": terminating(pod)},
                "nodeName": pod["spec"].get("nodeName"),
                "targetRef": {"kind": "Pod", "namespace": ns, "name": pod["metadata"]["name"],
                              "uid": pod["metadata"]["uid"]},
            }
            # A pod named into this Service's subdomain (StatefulSet pods) gets its DNS name.
            if pod["spec"].get("hostname") and pod["spec"].get("subdomain") == name:
                endpoint["hostname"] = pod["spec"]["hostname"]
            groups.setdefault(ports, []).append(endpoint)
        if not groups:
            groups[()] = []
        wanted = {}
        # Named by position, not by ports: the usual single slice keeps its name while its pods'
        # ports resolve and change, so watchers see it modified, never deleted and re-added.
        for i, (ports, endpoints) in enumerate(sorted(groups.items(), key=lambda g: (-len(g[1]), g[0]))):
            slice_name = f"{name}-{k8s.template_hash({'svc': svc['metadata']['uid'], 'slice': i})[:5]}"
            endpoints.sort(key=lambda e: e["targetRef"]["name"])
            wanted[slice_name] = {
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                "metadata": {"name": slice_name, "namespace": ns,
                             "labels": {"kubernetes.io/service-name": name,
                                        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                             "ownerReferences": [_owner_ref(svc)]},
                "endpoints": endpoints,
                "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
            }
        for slice_name, want in wanted.items():
            have = existing.pop(slice_name, None)
            if have is None:
                cache.create(want)
            elif have.get("endpoints") != want["endpoints"] or have.get("ports") != want["ports"]:
                cache.update({**have, "endpoints": want["endpoints"], "ports": want["ports"]})
        for stale in existing.values():
            cache.delete(stale)
    for stale_slices in slices_by_svc.values():
        for s in stale_slices:
            cache.delete(s)


# -- LoadBalancer IPs ----------------------------------------------------------------------

def load_balancers(cache: Cache) -> None:
    """Give every Service of type LoadBalancer an ingress IP from the scenario's
    loadBalancerPool (as kind's cloud provider or MetalLB do), keeping the one it has; take it
    back when the Service stops being a LoadBalancer.  Without a pool, Services stay pending."""
    pool_text = read_config(cache.store).load_balancer_pool
    services = sorted(cache.of_kind("Service"), key=lambda s: s["metadata"].get("creationTimestamp", ""))
    held = {}
    for svc in services:
        for ingress in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            if ingress.get("ip"):
                held[ingress["ip"]] = svc
    pool = ipaddress.IPv4Network(pool_text) if pool_text else None
    free = (str(ip) for ip in (pool.hosts() if pool else ()) if str(ip) not in held)
    for svc in services:
        status = svc.get("status") or {}
        ingress = (status.get("loadBalancer") or {}).get("ingress") or []
        if svc["spec"].get("type") != "LoadBalancer":
            if ingress:
                cache.update({**svc, "status": {**status, "loadBalancer": {}}})
            continue
        if ingress or pool is None:
            continue
        requested = svc["spec"].get("loadBalancerIP")
        ip = requested if requested and requested not in held and ipaddress.ip_address(requested) in pool \
            else next(free, None)
        if ip is None:
            log.warning("loadBalancerPool %s is exhausted; %s/%s stays pending", pool,
                        svc["metadata"]["namespace"], svc["metadata"]["name"])
            continue
        held[ip] = svc
        cache.update({**svc, "status": {**status, "loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}})


CONTROLLERS = [namespaces, garbage_collect, gateway.gateways, deployments, replicasets, daemonsets,
               statefulsets, jobs, schedule, endpoint_slices, load_balancers, ingress_status]


def sync(cache: Cache) -> float | None:
    for controller in CONTROLLERS:
        try:
            controller(cache)
        except Exception:
            log.exception("controller %s failed", controller.__name__)
            return RETRY_S
    # StatefulSets and Jobs wait on pods becoming ready or done, which arrives as events.
    return None
