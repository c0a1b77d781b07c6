"""API semantics (netsim.api.registry) on the in-memory store: apply as create-or-update,
ClusterIP and NodePort allocation (never one address or port twice; given back on delete and
update), admission (the namespace must exist, a pod's spec is immutable), graceful deletion.
tests/unit/test_objects.py runs the same API over a real SQLite store."""

from __future__ import annotations

import pytest

from netsim.api import registry
from netsim.api.store import Conflict, NotFound, Store
from netsim.model import k8s
from tests.unit.fakes import MemoryStore


@pytest.fixture
def store():
    s = MemoryStore()
    registry.bootstrap(s, registry.ClusterConfig(service_subnet="10.96.0.0/28"))
    return s


def service(name, ns="default", **spec):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": [{"port": 80}], "selector": {"app": name}, **spec}}


def pod(name, ns="default", image="busybox", **spec):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": image}], **spec}}


def spec_of(store, kind, name, ns="default"):
    return store.get(k8s.key(kind, ns, name))["spec"]


def allocated(store, what):
    return sorted(o["metadata"]["name"] for o in store.list(f"{registry.ALLOC}{what}/")[0])


def test_the_fake_keeps_the_store_contract():
    s = MemoryStore()
    assert isinstance(s, Store)
    first = s.create("/a", {"metadata": {"name": "a"}})
    assert first["metadata"]["resourceVersion"] == "1"
    with pytest.raises(Conflict):
        s.update("/a", {"metadata": {"name": "a"}}, expected_revision=7)
    s.update("/a", {"metadata": {"name": "a"}, "x": 1}, expected_revision=1)
    with pytest.raises(NotFound):
        s.delete("/b")
    s.delete("/a")
    assert [(e.type, e.key, e.revision) for e in s.watch("/", after=0)] == [
        ("ADDED", "/a", 1), ("MODIFIED", "/a", 2), ("DELETED", "/a", 3)]
    assert s.list("/") == ([], 3) and s.latest_revision("/a") == 3 and s.latest_revision("/b") == 0


def test_bootstrap_makes_the_system_namespaces_labelled_by_name(store):
    names = [o["metadata"]["name"] for o in store.list(k8s.prefix("Namespace"))[0]]
    assert names == sorted(registry.SYSTEM_NAMESPACES)
    ns = store.get(k8s.key("Namespace", None, "kube-system"))
    assert ns["metadata"]["labels"] == {registry.NAMESPACE_NAME_LABEL: "kube-system"}
    assert ns["status"] == {"phase": "Active"}
    assert registry.read_config(store).service_subnet == "10.96.0.0/28"


def test_apply_creates_configures_and_leaves_unchanged_with_generation(store):
    assert registry.apply(store, [pod("a")]) == [("pod/default/a", "created")]
    created = store.get(k8s.key("Pod", "default", "a"))
    assert "generation" not in created["metadata"] and created["metadata"]["uid"]  # as in kube 1.32
    assert registry.apply(store, [pod("a")]) == [("pod/default/a", "unchanged")]
    assert store.get(k8s.key("Pod", "default", "a"))["metadata"]["resourceVersion"] == \
        created["metadata"]["resourceVersion"]
    labelled = pod("a")
    labelled["metadata"]["labels"]["tier"] = "web"
    assert registry.apply(store, [labelled]) == [("pod/default/a", "configured")]
    updated = store.get(k8s.key("Pod", "default", "a"))
    assert updated["metadata"]["uid"] == created["metadata"]["uid"] and "generation" not in updated["metadata"]
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "default"},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                       "template": {"metadata": {"labels": {"app": "d"}},
                                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    registry.apply(store, [deploy])
    assert store.get(k8s.key("Deployment", "default", "d"))["metadata"]["generation"] == 1
    deploy["metadata"]["labels"] = {"tier": "web"}
    registry.apply(store, [deploy])
    assert store.get(k8s.key("Deployment", "default", "d"))["metadata"]["generation"] == 1  # labels are not spec
    deploy["spec"]["replicas"] = 2
    registry.apply(store, [deploy])
    assert store.get(k8s.key("Deployment", "default", "d"))["metadata"]["generation"] == 2


def test_a_namespace_must_exist_or_come_earlier_in_the_same_apply(store):
    before = store.revision()
    with pytest.raises(registry.ApiError, match='namespaces "shop" not found'):
        registry.apply(store, [pod("a", ns="shop")])
    assert store.revision() == before
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
    assert registry.apply(store, [ns, pod("a", ns="shop")]) == [("namespace/shop", "created"),
                                                                 ("pod/shop/a", "created")]


def test_the_same_object_twice_in_one_apply_is_refused(store):
    with pytest.raises(registry.ApiError, match="more than once"):
        registry.apply(store, [pod("a"), pod("a", image="nginx")])
    assert store.list(k8s.prefix("Pod"))[0] == []


def test_a_pods_spec_is_immutable_but_its_node_name_is_kept(store):
    registry.apply(store, [pod("a")])
    bound = store.get(k8s.key("Pod", "default", "a"))
    bound["spec"]["nodeName"] = "w1"
    store.update(k8s.key_of(bound), bound)
    # Re-applying the manifest (which has no nodeName) changes nothing the user wrote.
    assert registry.apply(store, [pod("a")]) == [("pod/default/a", "unchanged")]
    with pytest.raises(registry.ApiError, match=r"spec\.containers: pod updates may not change"):
        registry.apply(store, [pod("a", image="nginx")])
    assert registry.apply(store, [pod("a", activeDeadlineSeconds=30)]) == [("pod/default/a", "configured")]


def test_cluster_ips_are_never_handed_out_twice_and_a_full_network_says_so(store):
    # 10.96.0.0/28: .1 and .10 are reserved, .0 and .15 are not hosts: .11 .. .14 are dynamic.
    registry.apply(store, [service(f"s{i}") for i in range(4)])
    ips = [spec_of(store, "Service", f"s{i}")["clusterIP"] for i in range(4)]
    assert sorted(ips) == ["10.96.0.11", "10.96.0.12", "10.96.0.13", "10.96.0.14"]
    assert allocated(store, "clusterips") == sorted(ips)
    with pytest.raises(registry.ApiError, match="service network 10.96.0.0/28 is full"):
        registry.apply(store, [service("s4")])
    assert allocated(store, "clusterips") == sorted(ips)  # the failed apply took nothing
    registry.delete(store, "Service", "default", "s2")
    registry.apply(store, [service("s4")])
    assert spec_of(store, "Service", "s4")["clusterIP"] == ips[2]


def test_a_requested_cluster_ip_must_be_free_and_in_the_network(store):
    registry.apply(store, [service("a", clusterIP="10.96.0.5")])
    assert spec_of(store, "Service", "a")["clusterIPs"] == ["10.96.0.5"]
    with pytest.raises(registry.ApiError, match="10.96.0.5 is already allocated"):
        registry.apply(store, [service("b", clusterIP="10.96.0.5")])
    with pytest.raises(registry.ApiError, match="10.97.0.5 is not in the service network 10.96.0.0/28"):
        registry.apply(store, [service("b", clusterIP="10.97.0.5")])
    with pytest.raises(registry.ApiError, match="spec.clusterIP: field is immutable"):
        registry.apply(store, [service("a", clusterIP="10.96.0.6")])
    headless = service("h", clusterIP="None")
    registry.apply(store, [headless])
    assert spec_of(store, "Service", "h")["clusterIP"] == "None"
    assert allocated(store, "clusterips") == ["10.96.0.5"]


def test_node_ports_are_unique_across_services_and_ports(store):
    two = service("a", type="NodePort", ports=[{"name": "http", "port": 80}, {"name": "https", "port": 443}])
    registry.apply(store, [two, service("b", type="LoadBalancer")])
    ports = [p["nodePort"] for p in spec_of(store, "Service", "a")["ports"]]
    ports += [p["nodePort"] for p in spec_of(store, "Service", "b")["ports"]]
    assert len(set(ports)) == 3 and all(30000 <= p <= 32767 for p in ports)
    assert allocated(store, "nodeports") == sorted(str(p) for p in ports)
    assert spec_of(store, "Service", "b")["externalTrafficPolicy"] == "Cluster"
    clash = service("c", type="NodePort", ports=[{"name": "x", "port": 1, "nodePort": 31000},
                                                 {"name": "y", "port": 2, "nodePort": 31000}])
    with pytest.raises(registry.ApiError, match="nodePort 31000: provided port is already allocated"):
        registry.apply(store, [clash])
    assert "31000" not in allocated(store, "nodeports")


def test_an_update_gives_back_what_the_service_no_longer_has(store):
    registry.apply(store, [service("a", type="NodePort", ports=[{"port": 80, "nodePort": 30500}])])
    ip = spec_of(store, "Service", "a")["clusterIP"]
    registry.apply(store, [service("a", type="NodePort", ports=[{"port": 80, "nodePort": 30500}])])
    assert allocated(store, "nodeports") == ["30500"]  # re-applied: kept, not reserved twice
    registry.apply(store, [service("a", clusterIP=ip)])  # ClusterIP now: the NodePort goes back
    assert allocated(store, "nodeports") == [] and "nodePort" not in spec_of(store, "Service", "a")["ports"][0]
    external = service("a", type="ExternalName", externalName="db.example.org")
    registry.apply(store, [external])
    assert allocated(store, "clusterips") == []
    assert "clusterIP" not in spec_of(store, "Service", "a")


def test_a_refused_apply_releases_only_what_it_reserved(store):
    registry.apply(store, [service("keep", type="NodePort")])
    held = (allocated(store, "clusterips"), allocated(store, "nodeports"))
    with pytest.raises(registry.ApiError, match='namespaces "nowhere" not found'):
        registry.apply(store, [service("keep", type="NodePort"), service("new", type="NodePort"),
                               pod("p", ns="nowhere")])
    assert (allocated(store, "clusterips"), allocated(store, "nodeports")) == held
    assert store.list(k8s.prefix("Service", "default"))[0][0]["metadata"]["name"] == "keep"


def test_release_only_frees_the_owners_reservation(store):
    registry.apply(store, [service("a", clusterIP="10.96.0.5")])
    registry.release(store, "clusterips", "10.96.0.5", "default/someone-else")
    assert allocated(store, "clusterips") == ["10.96.0.5"]
    registry.release(store, "clusterips", "10.96.0.5", "default/a")
    assert allocated(store, "clusterips") == []
    registry.release(store, "clusterips", "10.96.0.5", "default/a")  # twice: nothing to do


def test_a_scheduled_pod_and_a_namespace_are_deleted_gracefully(store):
    registry.apply(store, [pod("loose"), pod("bound", nodeName="w1")])
    ref, _ = registry.delete(store, "Pod", "default", "loose")
    assert ref == "pod/default/loose"
    with pytest.raises(NotFound):
        store.get(k8s.key("Pod", "default", "loose"))
    registry.delete(store, "Pod", "default", "bound")
    marked = store.get(k8s.key("Pod", "default", "bound"))
    assert marked["metadata"]["deletionTimestamp"]
    with pytest.raises(registry.ApiError, match="is being deleted"):
        registry.apply(store, [pod("bound", nodeName="w1")])
    registry.delete(store, "Pod", "default", "bound", force=True)
    assert store.list(k8s.prefix("Pod"))[0] == []
    registry.delete(store, "Namespace", None, "kube-public")
    ns = store.get(k8s.key("Namespace", None, "kube-public"))
    assert ns["status"]["phase"] == "Terminating" and ns["metadata"]["deletionTimestamp"]
    with pytest.raises(registry.ApiError, match='namespaces "kube-public" not found'):
        registry.apply(store, [pod("late", ns="kube-public")])
    with pytest.raises(registry.ApiError, match='pods "ghost" not found'):
        registry.delete(store, "Pod", "default", "ghost")


def test_a_removed_node_takes_its_api_server_out_of_the_kubernetes_endpoints(store):
    """`down` on the control-plane machine of a multi-machine cluster: its address leaves the
    default/kubernetes EndpointSlice, as kube-apiserver takes itself out when it stops."""
    from netsim.fabric import lifecycle

    registry.apply(store, [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cp"},
         "status": {"addresses": [{"type": "InternalIP", "address": "192.168.60.11"}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
         "metadata": {"name": "kubernetes", "namespace": "default",
                      "labels": {"kubernetes.io/service-name": "kubernetes"}},
         "endpoints": [{"addresses": ["192.168.60.11"]}, {"addresses": ["192.168.60.12"]}],
         "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}])
    lifecycle.remove_node(store, "cp")
    eps = store.get(k8s.key("EndpointSlice", "default", "kubernetes"))
    assert eps["endpoints"] == [{"addresses": ["192.168.60.12"]}]
    lifecycle.remove_node(store, "worker", ["10.0.0.9"])  # no endpoint of its own: nothing changes
    assert store.get(k8s.key("EndpointSlice", "default", "kubernetes"))["endpoints"] == eps["endpoints"]
