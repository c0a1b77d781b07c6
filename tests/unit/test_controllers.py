"""The controllers and the scheduler (netsim.controllers) as functions of an informer's cache
(netsim.api.informer.Cache) over the in-memory store: what each decides from the objects, with
no agent, no kernel.  tests/unit/test_objects.py drives whole workloads over SQLite."""

from __future__ import annotations

import pytest

from netsim import controllers
from netsim.api import registry
from netsim.api.informer import Cache
from netsim.controllers import manager
from netsim.model import k8s
from tests.unit.fakes import MemoryStore


@pytest.fixture
def store():
    s = MemoryStore()
    registry.bootstrap(s, registry.ClusterConfig(load_balancer_pool="198.51.100.0/30"))
    return s


def cache_of(store) -> Cache:
    cache = Cache(store)
    cache.relist()
    return cache


def settle(store, rounds=10) -> Cache:
    for _ in range(rounds):
        before = store.revision()
        cache = cache_of(store)
        assert controllers.sync(cache) is None
        if store.revision() == before:
            return cache
    raise AssertionError("controllers did not settle")


def add_node(store, name, taint=None, ready=True, labels=None):
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"taints": [taint]} if taint else {},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    store.create(k8s.key("Node", None, name), registry.new_object(node))


def template(app, **spec):
    return {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "c"}], **spec}}


def pods(cache, prefix=""):
    return sorted((p for p in cache.of_kind("Pod") if p["metadata"]["name"].startswith(prefix)),
                  key=lambda p: p["metadata"]["name"])


def set_pod_status(store, pod, **status):
    store.update(k8s.key_of(pod), {**pod, "status": status})


def test_the_cache_sees_its_own_writes_at_once_and_skips_their_events(store):
    cache = cache_of(store)
    made = cache.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                         "spec": {"containers": [{"name": "c"}]}})
    assert cache.get("Pod", "default", "p") == made
    for ev in store.watch(k8s.REGISTRY, after=0):
        cache.apply_event(ev)
    assert cache.get("Pod", "default", "p") == made and cache.revision == store.revision()
    stale = {**made, "metadata": {**made["metadata"], "resourceVersion": "1"}}
    assert cache.update(stale) is None  # a conflict: the next sync redoes it from fresher state
    assert cache.delete(made) and cache.get("Pod", "default", "p") is None


def test_tolerations_and_node_selectors_decide_where_a_pod_fits():
    taint = {"key": controllers.CONTROL_PLANE_TAINT, "effect": "NoSchedule"}
    node = {"metadata": {"name": "cp", "labels": {"disk": "ssd"}}, "spec": {"taints": [taint]}}
    assert not manager.fits({}, node)
    assert manager.fits({"tolerations": [{"key": controllers.CONTROL_PLANE_TAINT, "operator": "Exists"}]}, node)
    assert manager.fits({"tolerations": [{"operator": "Exists"}]}, node)
    assert not manager.fits({"tolerations": [{"operator": "Exists", "effect": "NoExecute"}]}, node)
    assert not manager.fits({"tolerations": [{"key": controllers.CONTROL_PLANE_TAINT, "value": "x"}]}, node)
    untainted = {"metadata": {"name": "w", "labels": {"disk": "ssd"}}, "spec": {}}
    assert manager.fits({"nodeSelector": {"disk": "ssd"}}, untainted)
    assert not manager.fits({"nodeSelector": {"disk": "hdd"}}, untainted)
    prefer = {"metadata": {"name": "w"}, "spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}
    assert manager.fits({}, prefer)


def test_the_scheduler_binds_to_ready_fitting_nodes_and_reports_the_rest(store):
    add_node(store, "w1")
    add_node(store, "w2")
    add_node(store, "sick", ready=False)
    registry.apply(store, [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}"},
                            "spec": {"containers": [{"name": "c"}]}} for i in range(4)]
                   + [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nowhere"},
                       "spec": {"containers": [{"name": "c"}], "nodeSelector": {"zone": "mars"}}}])
    cache = cache_of(store)
    manager.schedule(cache)
    cache = cache_of(store)
    bound = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in pods(cache)}
    assert sorted(n for name, n in bound.items() if name != "nowhere") == ["w1", "w1", "w2", "w2"]
    left = cache.get("Pod", "default", "nowhere")
    assert "nodeName" not in left["spec"]
    assert left["status"]["conditions"][0]["reason"] == "Unschedulable"
    assert left["status"]["conditions"][0]["message"].startswith("0/2 nodes are available")


def test_a_replicaset_scales_down_unscheduled_then_unready_pods_first(store):
    add_node(store, "w1")
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
          "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template("web")}}
    registry.apply(store, [rs])
    cache = cache_of(store)
    manager.replicasets(cache)
    made = pods(cache_of(store))
    assert len(made) == 3 and all(controllers.controller_of(p)["kind"] == "ReplicaSet" for p in made)
    ready, unready, unscheduled = made
    set_pod_status(store, {**ready, "spec": {**ready["spec"], "nodeName": "w1"}},
                   phase="Running", conditions=[{"type": "Ready", "status": "True"}])
    set_pod_status(store, {**unready, "spec": {**unready["spec"], "nodeName": "w1"}}, phase="Running")
    stored = store.get(k8s.key("ReplicaSet", "default", "web"))
    store.update(k8s.key_of(stored), {**stored, "spec": {**stored["spec"], "replicas": 1}})
    manager.replicasets(cache_of(store))
    manager.replicasets(cache_of(store))
    left = {p["metadata"]["name"]: controllers.terminating(p) for p in pods(cache_of(store))}
    # The unscheduled one is deleted at once; the bound, unready one is marked terminating.
    assert left == {ready["metadata"]["name"]: False, unready["metadata"]["name"]: True}


def test_a_daemonset_runs_one_pod_per_fitting_node(store):
    taint = {"key": controllers.CONTROL_PLANE_TAINT, "effect": "NoSchedule"}
    add_node(store, "cp", taint=taint)
    add_node(store, "w1")
    add_node(store, "w2")
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
          "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": template("agent")}}
    registry.apply(store, [ds])
    cache = settle(store)
    assert sorted(p["spec"]["nodeName"] for p in pods(cache, "agent-")) == ["w1", "w2"]
    status = cache.get("DaemonSet", "default", "agent")["status"]
    assert (status["desiredNumberScheduled"], status["currentNumberScheduled"]) == (2, 2)
    tolerant = {**ds, "spec": {**ds["spec"], "template": template("agent", tolerations=[{"operator": "Exists"}])}}
    registry.apply(store, [tolerant])
    cache = settle(store)
    assert sorted(p["spec"]["nodeName"] for p in pods(cache, "agent-")) == ["cp", "w1", "w2"]


def test_a_job_runs_parallelism_pods_until_completions_succeed(store):
    add_node(store, "w1")
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "batch"},
           "spec": {"completions": 3, "parallelism": 2, "template": template("batch", restartPolicy="Never")}}
    registry.apply(store, [job])
    cache = settle(store)
    first = pods(cache, "batch-")
    assert len(first) == 2 and all(p["metadata"]["labels"]["job-name"] == "batch" for p in first)
    for p in first:
        set_pod_status(store, p, phase="Succeeded")
    cache = settle(store)
    assert len(pods(cache, "batch-")) == 3  # one more: 2 done, 1 to go
    [last] = [p for p in pods(cache, "batch-") if p["metadata"]["name"] not in {q["metadata"]["name"] for q in first}]
    set_pod_status(store, last, phase="Succeeded")
    cache = settle(store)
    status = cache.get("Job", "default", "batch")["status"]
    assert status["succeeded"] == 3 and status["conditions"][0]["type"] == "Complete"
    assert len(pods(cache, "batch-")) == 3


def test_a_terminating_namespace_is_emptied_then_removed(store):
    registry.apply(store, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
                           {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"},
                            "spec": {"containers": [{"name": "c"}]}},
                           {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "shop"},
                            "spec": {"ports": [{"port": 80}]}}])
    ip = store.get(k8s.key("Service", "shop", "s"))["spec"]["clusterIP"]
    registry.delete(store, "Namespace", None, "shop")
    cache = settle(store)
    assert cache.get("Namespace", None, "shop") is None
    assert cache.of_kind("Pod", "shop") == [] and cache.of_kind("Service", "shop") == []
    assert ip not in {o["metadata"]["name"] for o in store.list(registry.ALLOC)[0]}  # its ClusterIP is free


def test_pods_of_a_node_that_is_gone_are_collected(store):
    add_node(store, "w1")
    registry.apply(store, [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                            "spec": {"containers": [{"name": "c"}], "nodeName": "w1"}}])
    manager.garbage_collect(cache_of(store))
    assert cache_of(store).get("Pod", "default", "p") is not None
    store.delete(k8s.key("Node", None, "w1"))
    manager.garbage_collect(cache_of(store))
    assert cache_of(store).get("Pod", "default", "p") is None


def test_load_balancer_ips_run_out_and_the_rest_stay_pending(store):
    def lb(name):
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}

    registry.apply(store, [lb("a"), lb("b"), lb("c")])
    cache = settle(store)

    def ingress(name):
        return [i["ip"] for i in (cache.get("Service", "default", name).get("status") or {})
                .get("loadBalancer", {}).get("ingress", [])]

    # 198.51.100.0/30 has two hosts.
    assert sorted(ingress("a") + ingress("b") + ingress("c")) == ["198.51.100.1", "198.51.100.2"]
    assert sum(not ingress(n) for n in "abc") == 1


def test_deployment_status_conditions_and_events_are_the_controllers(store):
    from netsim.api import events
    from netsim.controllers import status as workload_status

    cache = cache_of(store)
    cache.recorder = events.Recorder(lambda: store, "kube-controller-manager", background=False)
    d = {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "web", "namespace": "default", "generation": 2, "uid": "d1"},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}}}
    pod = {"metadata": {"name": "p"}, "status": {"phase": "Running",
                                                 "conditions": [{"type": "Ready", "status": "True"}]}}
    done = workload_status.deployment(d, "web-1", {"web-1": [pod, pod]}, False, {}, "T1")
    assert done["observedGeneration"] == 2 and done["updatedReplicas"] == 2 and done["availableReplicas"] == 2
    assert "unavailableReplicas" not in done
    assert [(c["type"], c["status"], c["reason"]) for c in done["conditions"]] == [
        ("Available", "True", "MinimumReplicasAvailable"), ("Progressing", "True", "NewReplicaSetAvailable")]
    again = workload_status.deployment(d, "web-1", {"web-1": [pod, pod]}, False, done, "T2")
    assert again == done  # nothing changed: no new times, so no write
    cache.recorder.event(d, events.NORMAL, "ScalingReplicaSet", "Scaled up replica set web-1 from 0 to 2")
    cache.recorder.event(d, events.NORMAL, "ScalingReplicaSet", "Scaled up replica set web-1 from 0 to 2")
    evs = [o for k, o in store.objects.items() if k.startswith("/registry/events/default/")]
    assert len(evs) == 1 and evs[0]["count"] == 2 and evs[0]["involvedObject"]["uid"] == "d1"
    assert evs[0]["source"]["component"] == "kube-controller-manager" and evs[0]["reason"] == "ScalingReplicaSet"
    assert cache.objects.get(k8s.key_of(evs[0])) is None  # the cache keeps no Events
