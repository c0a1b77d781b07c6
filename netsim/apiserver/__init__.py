"""The apiserver layer: the Kubernetes REST API over a cluster's store, for kubectl and client
libraries: the server (app, resources, discovery, watch, tables, openapi), the streaming
subresources of pods (streams), its process (process), its certificates (pki) and the kubeconfig
entries that point at it (kubeconfig).  May import: the standard library, aiohttp, cryptography,
the kubernetes client's model classes (schemas only), and the layers below it (kernel, model, api,
controllers, cni, proxy, node)."""
