"""The fabric layer: a cluster's machines: the underlay LAN, nodes and external hosts on it
(cluster), joining machines over etcd (join), bringing a whole cluster up (control_plane,
daemon) and down (lifecycle).
May import: every layer below it (kernel, model, api, controllers, cni, proxy, node)."""

from netsim.fabric.cluster import Cluster, Member, load_cluster, plan_addresses, store_url_for
from netsim.fabric.lifecycle import teardown

__all__ = ["Cluster", "Member", "load_cluster", "plan_addresses", "store_url_for", "teardown"]
