"""The API layer: what the Kubernetes API server does between its clients and etcd, on netsim's
store: defaulting, admission, allocation, apply and delete (registry), watch caches (informer).
May import: netsim.kernel, netsim.model, the standard library and pure-Python packages."""
