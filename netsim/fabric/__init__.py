"""The fabric layer: a cluster's machines: the underlay LAN, nodes and external hosts on it,
joining machines over etcd, and bringing a whole cluster up and down (control_plane, daemon).
May import: every layer below it (kernel, model, api, controllers, cni, proxy, node)."""

from netsim.fabric.cluster import Cluster, Member, load_cluster, plan_addresses, store_url_for, teardown

__all__ = ["Cluster", "Member", "load_cluster", "plan_addresses", "store_url_for", "teardown"]
