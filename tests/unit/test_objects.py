"""Manifests, API semantics and controllers on a real store, without a kernel: these are the
pure parts (validation, allocation, the controllers' decisions).  tests/e2e/test_workloads.py
runs the same objects through real clusters."""

import pytest

from netsim import controllers
from netsim.api import registry
from netsim.api.informer import Cache
from netsim.api.store import open_store
from netsim.model import k8s
from tests.conftest import REPO

SEED_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: busybox
  labels:
    app: busybox
spec:
  containers:
  - name: busybox
    image: busybox
    ports:
    - containerPort: 80
    command: ["/bin/sh", "-ec", "sleep 1000"]
"""


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "store.db"))
    registry.bootstrap(s, registry.ClusterConfig())
    yield s
    s.close()


def test_the_seed_pod_and_the_example_manifests_validate_unmodified():
    [pod] = k8s.parse_manifests(SEED_POD, "seed.yaml")
    assert pod["spec"]["containers"][0]["command"] == ["/bin/sh", "-ec", "sleep 1000"]
    kinds = [o["kind"] for o in k8s.parse_manifests((REPO / "scenarios/manifests/web.yaml").read_text(), "web")]
    assert kinds == ["Deployment", "Service", "Service", "Pod"]


@pytest.mark.parametrize(("text", "wanted"), [
    ("apiVersion: v1\nkind: Gizmo\nmetadata: {name: a}\n", "document 1: kind 'Gizmo' is not known"),
    ("apiVersion: v1\nkind: Deployment\nmetadata: {name: a}\n", "apiVersion 'v1' for Deployment; fix: use 'apps/v1'"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: A_b}\nspec: {containers: [{name: c}]}\n",
     "document 1 (Pod A_b): metadata.name: String should match pattern"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, ports: [{containerPort: 0}]}]}\n",
     "spec.containers.0.ports.0.containerPort: Input should be greater than or equal to 1; fix: use a port"),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: x}}\n"
     "  template: {metadata: {labels: {app: y}}, spec: {containers: [{name: c}]}}\n",
     "`selector` does not match template `labels`"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}, {port: 81}]}\n",
     "every port needs a name"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {type: Nodeport, ports: [{port: 80}]}\n",
     "spec.type: Input should be 'ClusterIP', 'NodePort', 'LoadBalancer' or 'ExternalName'; fix: use ClusterIP"),
])
def test_bad_documents_are_named_with_their_field_and_fix(text, wanted):
    with pytest.raises(k8s.ManifestError) as info:
        k8s.parse_manifests(SEED_POD + "---\n" + text, "bad.yaml")
    message = str(info.value).replace("document 2", "document 1")
    assert message.startswith("bad.yaml: ") and wanted in message, message
    assert "busybox" not in message  # the good document is not blamed


def test_a_failed_apply_writes_nothing(store):
    objs = k8s.parse_manifests(SEED_POD + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: nope}\n"
                               "spec: {containers: [{name: c}]}\n", "f.yaml")
    before = store.revision()
    with pytest.raises(registry.ApiError, match='namespaces "nope" not found'):
        registry.apply(store, objs)
    assert store.revision() == before


def test_apply_creates_then_configures_then_leaves_unchanged(store):
    [pod] = k8s.parse_manifests(SEED_POD, "seed.yaml")
    assert registry.apply(store, [pod]) == [("pod/default/busybox", "created")]
    assert registry.apply(store, [pod]) == [("pod/default/busybox", "unchanged")]
    pod["metadata"]["labels"]["tier"] = "debug"
    assert registry.apply(store, [pod]) == [("pod/default/busybox", "configured")]
    pod["spec"]["containers"][0]["image"] = "busybox:1.36"
    with pytest.raises(registry.ApiError, match="spec.containers: pod updates may not change"):
        registry.apply(store, [pod])


def service(name, **spec):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"port": 80}], "selector": {"app": name}, **spec}}


def test_service_addresses_and_node_ports_are_allocated_once(store):
    registry.apply(store, [service("a", type="NodePort"), service("b", clusterIP="10.96.0.50")])
    a = store.get(k8s.key("Service", "default", "a"))
    assert a["spec"]["clusterIP"].startswith("10.") and 30000 <= a["spec"]["ports"][0]["nodePort"] <= 32767
    assert a["spec"]["ports"][0]["targetPort"] == 80
    with pytest.raises(registry.ApiError, match="10.96.0.50 is already allocated"):
        registry.apply(store, [service("c", clusterIP="10.96.0.50")])
    taken = a["spec"]["ports"][0]["nodePort"]
    with pytest.raises(registry.ApiError, match=f"nodePort {taken}: provided port is already allocated"):
        registry.apply(store, [service("d", type="NodePort", ports=[{"port": 80, "nodePort": taken}])])
    registry.apply(store, [service("a", type="NodePort")])  # re-apply keeps both
    assert store.get(k8s.key("Service", "default", "a"))["spec"] == a["spec"]
    registry.delete(store, "Service", "default", "b")
    registry.apply(store, [service("c", clusterIP="10.96.0.50")])  # released with b


def run_controllers(store, rounds=10):
    """Controller passes until nothing changes, as the loop does on every event."""
    cache = Cache(store)
    for _ in range(rounds):
        cache.relist()
        before = store.revision()
        controllers.sync(cache)
        if store.revision() == before:
            return cache
    raise AssertionError("controllers did not settle")


def add_node(store, name, taint=False, labels=None):
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {"taints": [{"key": controllers.CONTROL_PLANE_TAINT, "effect": "NoSchedule"}]} if taint else {},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    store.create(k8s.key("Node", None, name), registry.new_object(node))


def deployment(name, replicas, **pod_spec):
    container = {"name": "c", "ports": [{"containerPort": 80, "name": "http"}]}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [container], **pod_spec}}}}


def test_a_deployment_spreads_over_workers_and_avoids_the_tainted_control_plane(store):
    add_node(store, "cp", taint=True)
    add_node(store, "w1")
    add_node(store, "w2", labels={"disk": "ssd"})
    registry.apply(store, [deployment("web", 4), deployment("db", 2, nodeSelector={"disk": "ssd"})])
    cache = run_controllers(store)
    nodes = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in cache.of_kind("Pod")}
    web = sorted(n for p, n in nodes.items() if p.startswith("web-"))
    assert web == ["w1", "w1", "w2", "w2"]
    assert sorted(n for p, n in nodes.items() if p.startswith("db-")) == ["w2", "w2"]


def test_statefulset_pods_are_named_by_ordinal_and_created_in_order(store):
    add_node(store, "w1")
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
           "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c"}]}}}}
    registry.apply(store, [sts])
    cache = run_controllers(store)
    assert [p["metadata"]["name"] for p in cache.of_kind("Pod")] == ["db-0"]  # db-1 waits for db-0 to be ready
    pod = cache.get("Pod", "default", "db-0")
    assert pod["spec"]["hostname"] == "db-0" and pod["spec"]["subdomain"] == "db"
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    store.update(k8s.key_of(pod), pod)
    cache = run_controllers(store)
    assert sorted(p["metadata"]["name"] for p in cache.of_kind("Pod")) == ["db-0", "db-1"]


def test_endpoint_slices_resolve_named_ports_per_pod_and_follow_readiness(store):
    add_node(store, "w1")
    registry.apply(store, [deployment("web", 2),
                            service("web", ports=[{"port": 8080, "targetPort": "http"}])])
    cache = run_controllers(store)
    pods = cache.of_kind("Pod")
    for i, pod in enumerate(pods):
        pod["status"] = {"phase": "Running", "podIP": f"10.244.0.{i + 2}",
                         "conditions": [{"type": "Ready", "status": "True" if i == 0 else "False"}]}
        store.update(k8s.key_of(pod), pod)
    cache = run_controllers(store)
    [eps] = cache.of_kind("EndpointSlice")
    assert eps["ports"] == [{"name": "", "port": 80, "protocol": "TCP"}]
    assert {e["addresses"][0]: e["conditions"]["ready"] for e in eps["endpoints"]} == {
        "10.244.0.2": True, "10.244.0.3": False}
    registry.delete(store, "Service", "default", "web")
    assert run_controllers(store).of_kind("EndpointSlice") == []


def test_deleting_a_deployment_cascades_to_its_replicaset_and_pods(store):
    add_node(store, "w1")
    registry.apply(store, [deployment("web", 2)])
    run_controllers(store)
    registry.delete(store, "Deployment", "default", "web")
    cache = run_controllers(store)
    assert cache.of_kind("ReplicaSet") == []
    # Bound pods are marked terminating; their node's agent removes them.
    assert all(controllers.terminating(p) for p in cache.of_kind("Pod"))


def test_load_balancer_services_get_ingress_ips_from_the_pool(store):
    registry.bootstrap(store, registry.ClusterConfig(load_balancer_pool="198.51.100.0/29"))

    def lb(name, **spec):
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}], **spec}}

    registry.apply(store, [lb("a"), lb("b"), lb("c", loadBalancerIP="198.51.100.5")])
    cache = run_controllers(store)

    def ingress(name):
        svc = cache.get("Service", "default", name)
        return [i["ip"] for i in svc.get("status", {}).get("loadBalancer", {}).get("ingress", [])]

    assert (ingress("a"), ingress("b"), ingress("c")) == (["198.51.100.1"], ["198.51.100.2"], ["198.51.100.5"])
    # A Service that stops being a LoadBalancer gives its address back; the next one takes it.
    svc = cache.get("Service", "default", "a")
    store.update(k8s.key_of(svc), {**svc, "spec": {**svc["spec"], "type": "ClusterIP"}},
                 int(svc["metadata"]["resourceVersion"]))
    cache = run_controllers(store)
    assert ingress("a") == []
    registry.apply(store, [lb("d")])
    cache = run_controllers(store)
    assert ingress("d") == ["198.51.100.1"]


def test_a_refused_apply_keeps_the_addresses_of_the_services_it_would_update(tmp_path):
    """Found by the manifest fuzzer: a refused apply that also updated an existing Service gave
    that Service's ClusterIP and NodePort back, so another Service could be given them."""
    store = open_store(str(tmp_path / "store.db"))
    try:
        registry.bootstrap(store, registry.ClusterConfig())
        svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}}
        registry.apply(store, [svc])
        stored = store.get(k8s.key("Service", "default", "web"))["spec"]
        allocations = sorted(o["metadata"]["name"] for o in store.list(registry.ALLOC)[0])
        assert allocations == sorted([stored["clusterIP"], str(stored["ports"][0]["nodePort"])])
        bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "nowhere"},
               "spec": {"containers": [{"name": "c", "image": "x"}]}}
        with pytest.raises(registry.ApiError, match="nowhere"):
            registry.apply(store, [svc, bad])
        assert sorted(o["metadata"]["name"] for o in store.list(registry.ALLOC)[0]) == allocations
    finally:
        store.close()


def test_a_service_that_drops_its_node_port_gives_it_back(tmp_path):
    store = open_store(str(tmp_path / "store.db"))
    try:
        registry.bootstrap(store, registry.ClusterConfig())
        svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30555}]}}
        registry.apply(store, [svc])
        assert "30555" in {o["metadata"]["name"] for o in store.list(registry.ALLOC + "nodeports/")[0]}
        registry.apply(store, [{**svc, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}])
        assert store.list(registry.ALLOC + "nodeports/")[0] == []
        other = {**svc, "metadata": {"name": "other"}}
        assert registry.apply(store, [other]) == [("service/default/other", "created")]
    finally:
        store.close()
