"""netsim: a Kubernetes dataplane emulator built from real kernel objects."""

# Resolved on first use: CNI plugins import netsim.cni.* on every pod's critical path and
# must not pay for the fabric (and pyroute2) they never touch.
_EXPORTS = {"Cluster": "netsim.fabric", "Member": "netsim.fabric", "Scenario": "netsim.model.scenario",
            "ScenarioError": "netsim.model.scenario", "load_scenario": "netsim.model.scenario"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
