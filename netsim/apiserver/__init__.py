"""The apiserver layer: the Kubernetes REST API over a cluster's store, for kubectl and client
libraries, with the streaming subresources of pods (streams.py).  May import: the standard library,
aiohttp, cryptography, the kubernetes client's model classes (schemas only), and the layers below it
(kernel, model, api, controllers, cni, proxy, node)."""
