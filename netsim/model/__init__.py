"""The model layer: what a cluster is, before anything is built: scenario files, Kubernetes
objects (kinds, keys, validation, the list merge keys of the built-in types), the names netsim
gives things, and a cluster's state file.
May import: the standard library, pydantic, PyYAML, netsim.kernel."""
