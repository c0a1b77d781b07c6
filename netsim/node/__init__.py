"""The node layer: what runs on a node: the agent (kubelet's part) and its reconcilers: pod
sandboxes, flannel, NetworkPolicy tables, cluster DNS, the built-in responders.
May import: netsim.kernel, model, api, controllers, cni, and proxy (kube-proxy runs in the agent)."""
