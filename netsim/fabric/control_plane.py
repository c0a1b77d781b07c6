"""Bringing up a cluster's control plane after its fabric: the store, the agent, the manifests."""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from netsim import fabric
from netsim.api import informer, registry
from netsim.api.store import NotFound, Store, open_store
from netsim.controllers import gateway
from netsim.fabric import daemon, lifecycle
from netsim.model import calico, k8s, names
from netsim.model.scenario import Scenario
from netsim.node import dns, flanneld
from netsim.node.ingress import addon as ingress_addon

if TYPE_CHECKING:  # the API server's modules load only when a cluster starts one
    from netsim.apiserver.pki import Paths


def start(cluster: fabric.Cluster, scenario: Scenario | None, objects: list[dict], timeout: float,
          progress: Callable[[str], None] = lambda _m: None) -> None:
    store = open_store(cluster.store_url)
    try:
        # Without a scenario (netsim node add/delete) the cluster keeps the config it has.
        config = registry.read_config(store) if scenario is None else cluster_config(scenario)
        registry.bootstrap(store, config)
        if scenario is not None or not _has_flannel_config(store):
            flanneld.write_config(store, flannel_config(config, scenario))
        if scenario is not None and config.cni == "calico":
            registry.apply(store, calico.initial_objects(config.pod_subnet,
                                                         scenario.networking.calico.model_dump()))
        wanted = {m.name for m in cluster.nodes()}
        registered = {n["metadata"]["name"] for n in store.list(k8s.prefix("Node"))[0]}
        for gone in registered - wanted:
            lifecycle.remove_node(store, gone)
        if daemon.agent_pids(cluster.name) and registered != wanted:
            daemon.stop_agents(cluster.name)  # it knows the old set of nodes
        components = names.components(wanted, controllers=True)
        if not daemon.agent_pids(cluster.name):
            # Forget every report: those of components that no longer exist (an agent for
            # another set of nodes), which `apply` would wait on, and those of the agent being
            # replaced (e.g. after kill -9), so the wait below is for the new agent's first
            # sync (its CNI GC included), not for what its predecessor had done.
            for c in store.list(informer.COMPONENTS)[0]:
                with contextlib.suppress(NotFound):
                    store.delete(informer.COMPONENTS + c["metadata"]["name"])
            daemon.start_agent(cluster.name, cluster.store_url)
        launched = launch_apiserver(cluster, store, config)
        _wait_nodes(store, wanted, timeout, config.cni)
        finish_apiserver(cluster, launched, timeout)
        progress(f"control plane: store {_describe(cluster.store_url)}, agent and controllers running, "
                 f"{len(wanted)} nodes registered")
        addons = list(scenario.addons) if scenario is not None else []
        _apply_and_settle(store, config, objects, components, timeout, "the cluster", progress, addons)
        pods = store.list(k8s.prefix("Pod"))[0]
        if pods:
            running = sum(p.get("status", {}).get("phase") == "Running" for p in pods)
            progress(f"{running}/{len(pods)} pods running")
        if config.cni == "calico":
            _wait_bgp(cluster.name, store, min(timeout, BGP_WAIT_S), progress)
    finally:
        store.close()


BGP_WAIT_S = 30.0


def _wait_bgp(cluster_name: str, store: Store, timeout: float, progress: Callable[[str], None]) -> None:
    """calico/node's readiness (`calico-node -bird-ready`): every BGP session of this machine's
    BIRDs Established, so pod routes between nodes exist when `up` returns (BIRD connects a few
    seconds after it starts; `netsim check` right after `up` would otherwise race it).  A session
    that does not come up is reported, not fatal: the cluster is up, as a node whose calico-node
    is not ready is."""
    from netsim.node.calico import bird, felix

    pools = [felix.Pool.from_object(o) for o in store.list(k8s.prefix("IPPool"))[0]]
    if not felix.bird_runs(pools):
        return
    local = bird.local_nodes(cluster_name)
    many = len(store.list(k8s.prefix("Node"))[0]) > 1
    deadline = time.monotonic() + timeout
    while True:
        rows: list[dict] = []
        answered = 0
        for node in local:
            with contextlib.suppress(bird.BirdError):
                node_rows = bird.protocols(bird.bird_dir(cluster_name) / f"{node}.ctl")
                if node_rows or not many:
                    answered += 1
                rows += node_rows
        up = sum(r["info"] == "Established" for r in rows)
        if answered == len(local) and up == len(rows):
            if rows:
                progress(f"BGP: {up} sessions Established ({len(local)} BIRDs)")
            return
        if time.monotonic() > deadline:
            progress(f"BGP: only {up}/{len(rows)} sessions Established after {timeout:g}s; "
                     "see `netsim bgp status` and bird/<node>.log in the state directory")
            return
        time.sleep(0.2)


def launch_apiserver(cluster: fabric.Cluster, store: Store,
                     config: registry.ClusterConfig) -> tuple[subprocess.Popen, Paths]:
    """The API server on the control-plane node (its certificates first) and the
    default/kubernetes Service and EndpointSlice in front of it; finish_apiserver waits for it.
    On a joined machine, the machine's node is the control-plane node (the Service's endpoint
    is its address, and only that machine can listen there)."""
    from netsim.apiserver import pki, process

    cp = next((m for m in cluster.nodes() if m.role == "control-plane"), cluster.nodes()[0])
    service_ip = str(ipaddress.IPv4Network(config.service_subnet).network_address + 1)
    where = pki.paths(cluster.name)
    try:
        p = pki.ensure(where, pki.server_sans([cp.ip], service_ip, config.cluster_domain))
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"the API server's certificates: cannot make them in {where.dir} ({exc})") from None
    if config.cni == "calico":
        _publish_calico_kubeconfig(store, cluster.name, f"https://{cp.ip}:{process.SECURE_PORT}", p)
    proc = process.launch(cluster.name, cluster.store_url, cp.netns, cp.ip)
    registry.apply(store, [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default",
                                                             "labels": {"component": "apiserver",
                                                                        "provider": "kubernetes"}},
         "spec": {"clusterIP": service_ip, "ports": [{"name": "https", "port": 443, "targetPort": process.SECURE_PORT,
                                                      "protocol": "TCP"}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
         "metadata": {"name": "kubernetes", "namespace": "default",
                      "labels": {"kubernetes.io/service-name": "kubernetes"}},
         "endpoints": [{"addresses": [cp.ip], "conditions": {"ready": True, "serving": True, "terminating": False}}],
         "ports": [{"name": "https", "port": process.SECURE_PORT, "protocol": "TCP"}]}])
    return proc, p


def _publish_calico_kubeconfig(store: Store, cluster: str, server: str, p: Paths) -> None:
    """The plugins' kubeconfig as a Secret, which every machine's agent writes out for its nodes'
    calico plugins (calico/node's install-cni writes /etc/cni/net.d/calico-kubeconfig from its
    service account).  netsim's API server authenticates client certificates and authorizes
    every authenticated client, so the plugins carry the admin's; the server is the
    control-plane node's address, which every node namespace reaches over the underlay."""
    import base64
    import json

    from netsim.apiserver import kubeconfig

    text = json.dumps(kubeconfig.standalone(cluster, server, p))
    registry.apply(store, [{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                            "metadata": {"name": calico.KUBECONFIG_SECRET, "namespace": "kube-system"},
                            "data": {"kubeconfig": base64.b64encode(text.encode()).decode()}}])


def finish_apiserver(cluster: fabric.Cluster, launched: tuple[subprocess.Popen, Paths], timeout: float) -> None:
    """Wait until the launched API server listens, then add the user's kubeconfig entries."""
    from netsim.apiserver import kubeconfig, process

    proc, p = launched
    info = process.wait_listening(cluster.name, proc, timeout)
    kubeconfig.merge(cluster.name, kubeconfig.standalone(cluster.name, f"https://127.0.0.1:{info['port']}", p))


def cluster_config(scenario: Scenario) -> registry.ClusterConfig:
    net = scenario.networking
    return registry.ClusterConfig(
        str(net.podSubnet), str(net.serviceSubnet),
        load_balancer_pool=str(net.loadBalancerPool) if net.loadBalancerPool else None,
        proxy_mode=net.kubeProxyMode, ipvs_scheduler=net.ipvsScheduler, cni=net.cni)


def flannel_config(config: registry.ClusterConfig, scenario: Scenario | None) -> flanneld.NetworkConfig:
    net = scenario.networking if scenario else None
    return flanneld.NetworkConfig(ipaddress.IPv4Network(config.pod_subnet), config.node_cidr_mask,
                                  net.backend if net else "vxlan", direct_routing=net.directRouting if net else False)


def join_node(cluster: fabric.Cluster, scenario: Scenario, objects: list[dict], node: str, controllers: bool,
              timeout: float, progress: Callable[[str], None] = lambda _m: None) -> None:
    """This machine's node joins the cluster in the shared store: the first machine to join
    writes the cluster's configuration, a later one must bring the same; then the agent for
    the node (and the controllers, on the machine that runs them), the API server (on the
    control-plane node's machine, as kubeadm runs it there), the add-ons and manifests
    (applying them again changes nothing), and a wait for this machine's components."""
    store = open_store(cluster.store_url)
    try:
        config, flannel = cluster_config(scenario), flannel_config(cluster_config(scenario), scenario)
        try:
            have = store.get(registry.CONFIG_KEY)
        except NotFound:
            have = None
        if have is not None:
            differ = _config_differences(registry.ClusterConfig.from_json(have), config)
            if _has_flannel_config(store) and flanneld.read_config(store) != flannel:
                differ.append("networking.backend/directRouting")
            if differ:
                raise RuntimeError(f"the cluster in {cluster.store_url} was made from another scenario "
                                   f"({', '.join(differ)} differ); join with the scenario the other machines used")
        registry.bootstrap(store, config)
        flanneld.write_config(store, flannel)
        if config.cni == "calico":
            registry.apply(store, calico.initial_objects(config.pod_subnet, scenario.networking.calico.model_dump()))
        components = names.components([node], controllers)
        if not daemon.agent_pids(cluster.name):
            for name in components:  # the wait below is for the new agent's reports
                with contextlib.suppress(NotFound):
                    store.delete(informer.COMPONENTS + name)
            daemon.start_agent(cluster.name, cluster.store_url, controllers, nodes=[node])
        api = cluster.members[node].role == "control-plane"
        launched = launch_apiserver(cluster, store, config) if api else None
        _wait_nodes(store, {node}, timeout, config.cni)
        if launched is not None:
            finish_apiserver(cluster, launched, timeout)
        nodes = len(store.list(k8s.prefix("Node"))[0])
        progress(f"node {node} joined the cluster in {cluster.store_url} ({nodes} nodes registered"
                 f"{', controllers running here' if controllers else ''}{', API server here' if api else ''})")
        _apply_and_settle(store, config, objects, components, timeout, f"node {node}", progress)
        here = [p for p in store.list(k8s.prefix("Pod"))[0] if p["spec"].get("nodeName") == node]
        running = sum(p.get("status", {}).get("phase") == "Running" for p in here)
        progress(f"{running}/{len(here)} pods running on {node}")
    finally:
        store.close()


def _apply_and_settle(store: Store, config: registry.ClusterConfig, objects: list[dict], components: list[str],
                      timeout: float, what: str, progress: Callable[[str], None], addons: list[str] = ()) -> None:
    """The add-ons every cluster has (the cluster DNS, as kubeadm installs it) and the scenario's
    (``addons``: ingress-nginx, gateway), the scenario's manifests, then a wait until ``components`` have
    acted on all of it."""
    registry.apply(store, dns.addon_objects(config.service_subnet))
    if addons:
        registry.apply(store, ingress_addon.objects(list(addons)) + gateway.addon_objects(list(addons)))
    if objects:
        results = registry.apply(store, objects)
        changed = sum(1 for _, action in results if action != "unchanged")
        progress(f"manifests: {len(results)} objects ({changed} created or changed)")
    ok, behind = informer.wait_settled(store, timeout, components)
    if not ok:
        raise RuntimeError(f"{what} did not settle in {timeout:g}s ({', '.join(behind)} behind); "
                           "see agent.log in the state directory")


def _config_differences(have: registry.ClusterConfig, want: registry.ClusterConfig) -> list[str]:
    fields = {"pod_subnet": "podSubnet", "service_subnet": "serviceSubnet", "proxy_mode": "kubeProxyMode",
              "load_balancer_pool": "loadBalancerPool", "ipvs_scheduler": "ipvsScheduler", "cni": "cni"}
    return [f"networking.{label}" for f, label in fields.items() if getattr(have, f) != getattr(want, f)]


def _has_flannel_config(store: Store) -> bool:
    try:
        flanneld.read_config(store)
        return True
    except NotFound:
        return False


def _describe(url: str) -> str:
    return url if url.startswith("etcd://") else "SQLite"


def _wait_nodes(store: Store, wanted: set[str], timeout: float, cni: str = "canal") -> None:
    """Until every node is registered, Ready, and has its pod range (flannel's lease shows as
    spec.podCIDR; Calico's IPAM gives nodes blocks on demand instead, so registration is enough)."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = {n["metadata"]["name"]: n for n in store.list(k8s.prefix("Node"))[0]}
        missing = sorted(n for n in wanted if n not in nodes
                         or (cni != "calico" and not nodes[n].get("spec", {}).get("podCIDR")))
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nodes {', '.join(missing)} were not registered within {timeout:g}s; "
                               "see agent.log in the state directory")
        time.sleep(0.02)
