"""Calico's node agent (calico/node) for the nodes one netsim agent runs, in the Kubernetes
datastore mode: everything it reads and writes is a Kubernetes object in netsim's store (the
crd.projectcalico.org kinds of netsim.model.calico, and the k8s Node's projectcalico.org/*
annotations).

* felix: calico/node's startup (the Node's BGP address, tunnel addresses allocated from the
  node's IPAM block) and Felix's dataplane part: tunl0 / vxlan.calico, the routes it owns
  (proto 80: tunnel routes, no-encap routes where no BIRD runs, own-block blackholes), VXLAN
  neighbours and fdb, sysctls and the natOutgoing chains.
* ipamstore: the calico-ipam block allocator's BlockStore over netsim.api.store.Store (the CNI
  plugin reaches the same objects over the API server).
* bird: BIRD 1.6, one per node namespace, configured as calico/node's confd templates do.

Layer: netsim.node; may import kernel, model, api, controllers, cni and proxy.
"""
