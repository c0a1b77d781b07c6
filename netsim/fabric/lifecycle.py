"""A cluster's life beyond its kernel fabric: taking a node out of the store, a joined machine
leaving the shared store, and `down`, which stops the agents, leaves or clears the store and
then removes the namespaces and the state.

netsim.fabric.cluster builds the underlay and its members and knows nothing of the store;
whatever ends a cluster goes through :func:`teardown` here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable

from netsim import kernel
from netsim.api import informer
from netsim.api.store import NotFound, Store, StoreError, open_store
from netsim.cni import calico_ipam
from netsim.fabric import daemon, join
from netsim.model import k8s, names, state
from netsim.model.state import ClusterState, Joined
from netsim.node import flanneld
from netsim.node.calico import bird, ipamstore

log = logging.getLogger("netsim.fabric")


def remove_node(store: Store, node: str, addresses: Iterable[str] = ()) -> None:
    """Take ``node`` out of the store, as a node that is gone for good: its Node, its subnet
    lease (the other nodes' flannel then removes its routes, fdb and neighbour entries) and its
    pods (the pod GC's orphaned pods: their controllers make new ones on the nodes that remain).
    ``addresses`` are its InternalIPs when its Node object may already be gone."""
    key = k8s.key("Node", None, node)
    ips = set(addresses)
    with contextlib.suppress(NotFound):
        ips.update(a["address"] for a in store.get(key).get("status", {}).get("addresses", [])
                   if a.get("type") == "InternalIP")
        store.delete(key)
    for ip in sorted(ips):
        flanneld.release(store, ip)
    # Its Calico IPAM blocks with no allocation left, as kube-controllers' IPAM GC frees them.
    calico_ipam.release_node(ipamstore.StoreBlockStore(store), node)
    _drop_apiserver_endpoint(store, ips)
    for pod in store.list(k8s.prefix("Pod"))[0]:
        if pod["spec"].get("nodeName") == node:
            with contextlib.suppress(NotFound):
                store.delete(k8s.key_of(pod))


def _drop_apiserver_endpoint(store: Store, ips: set[str]) -> None:
    """A node's API server is gone with it: its address out of the default/kubernetes
    EndpointSlice (as kube-apiserver takes itself out when it stops), so pods are refused at
    once rather than sent to an address nobody answers."""
    key = k8s.key("EndpointSlice", "default", "kubernetes")
    with contextlib.suppress(NotFound):
        eps = store.get(key)
        kept = [e for e in eps.get("endpoints") or [] if not set(e.get("addresses", [])) & ips]
        if kept != (eps.get("endpoints") or []):
            store.update(key, {**eps, "endpoints": kept})


def leave(store_url: str, node: str, node_ip: str, controllers: bool) -> bool:
    """Take a joined machine's node out of the shared store (see :func:`remove_node`), and its
    component reports, so nobody waits on an agent that is gone.  The last node out removes
    the cluster's keys.  True if it did."""
    try:
        store = open_store(store_url)
    except StoreError as exc:
        log.warning("could not reach store %s to take node %s out: %s", store_url, node, exc)
        return False
    try:
        remove_node(store, node, [node_ip])
        for name in names.components([node], controllers):
            with contextlib.suppress(NotFound):
                store.delete(informer.COMPONENTS + name)
        if not store.list(k8s.prefix("Node"))[0]:
            store.delete_prefix("/")
            return True
        return False
    except StoreError as exc:
        log.warning("store %s: taking node %s out failed: %s", store_url, node, exc)
        return False
    finally:
        store.close()


def teardown(cluster: str) -> list[str]:
    """Remove everything of ``cluster``: processes in its namespaces, the namespaces (and with
    them every link, address, route and rule inside), and its state.  Works from the kernel's
    view, not only the state file, so it also cleans up after a killed `up`."""
    from netsim.apiserver import kubeconfig, process

    kernel.signal_all(process.pids(cluster))  # it winds down while the agents stop
    daemon.stop_agents(cluster)  # first, so no agent re-creates a pod while namespaces go
    # BIRDs daemonise, so they outlive an agent that was SIGKILLed; found by their files' directory
    # even when their namespace is already gone, and their sockets and pid files go with them.
    bird.kill_leftovers(cluster)
    process.stop(cluster)  # what the signal has not ended yet
    try:
        kubeconfig.remove(cluster)
    except (OSError, ValueError) as exc:
        log.warning("the kubeconfig entries netsim-%s stay: %s", cluster, exc)
    st = state.read_state(cluster)
    if st is not None and st.join:
        _leave(cluster, st, st.join)
    removed = kernel.remove_netns(kernel.list_netns(names.cluster_prefix(cluster)))
    for leftover in kernel.list_netns_etc(names.cluster_prefix(cluster)):  # a pod's resolv.conf after a crash
        kernel.remove_netns_etc(leftover)
    if st is not None and not st.join and st.store and st.store.startswith("etcd://"):
        _clear_remote_store(st.store)
    state.remove_state(cluster)
    state.remove_state_root_if_empty()
    return removed


def _leave(cluster: str, st: ClusterState, joined: Joined) -> None:
    """A joined machine leaves: its node out of the shared store (the other machines' agents
    drop its routes and fdb entries), and its NIC back where it was, before the namespace goes
    (with a real NIC the kernel would hand it back bare; a veth would be destroyed)."""
    ip = next((m.ip for m in st.members if m.name == joined.node), None)
    if ip is not None and st.store:
        leave(st.store, joined.node, ip, joined.controllers)
    try:
        join.detach(names.netns_name(cluster, joined.node), joined.uplink)
    except (OSError, kernel.KernelError, join.JoinError) as exc:
        log.warning("could not give %s back: %s", joined.uplink.name, exc)


def _clear_remote_store(url: str) -> None:
    """An etcd store outlives the cluster: remove the cluster's keys from it (the SQLite one
    goes with the state directory)."""
    try:
        store = open_store(url)
        try:
            store.delete_prefix("/")
        finally:
            store.close()
    except StoreError as exc:
        log.warning("could not clear store %s: %s", url, exc)
