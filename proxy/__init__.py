"""kube-proxy: Service rules from the store, rendered per node (iptables, nftables, IPVS).
May import: netsim.kernel, netsim.model, netsim.model.k8s; never netsim.node or anything above it.

proxy.proxier states what every mode's Proxier is (a Protocol) and holds what they share;
proxy.iptables renders the iptables mode and proxy.iptables_sync applies it; proxy.nftables and
proxy.ipvs are one module each; proxy.kubeproxy runs the mode a cluster asks for."""
