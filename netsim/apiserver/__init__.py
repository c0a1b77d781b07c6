"""The API server layer: the Kubernetes REST API over netsim's store (the core's modules) and
the streaming subresources of pods (streams.py).
May import: netsim.kernel, model, api, controllers, cni, proxy and node (exec and logs helpers)."""
