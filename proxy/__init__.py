"""kube-proxy: Service rules from the store, rendered per node (iptables, nftables, IPVS)."""
