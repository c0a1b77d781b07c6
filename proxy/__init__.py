"""kube-proxy: Service rules from the store, rendered per node (iptables, nftables, IPVS).
May import: netsim.kernel, netsim.model, netsim.model.k8s; never netsim.node or anything above it."""
