"""The controllers layer: kube-controller-manager's controllers and the scheduler, as plain
functions of an informer's cache (netsim.controllers.manager).
May import: netsim.kernel, netsim.model, netsim.api."""

from netsim.controllers.manager import CONTROL_PLANE_TAINT, controller_of, pod_phase, pod_ready, sync, terminating

__all__ = ["CONTROL_PLANE_TAINT", "controller_of", "pod_phase", "pod_ready", "sync", "terminating"]
