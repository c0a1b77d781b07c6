"""netsim: a Kubernetes dataplane emulator built from real kernel objects."""

from netsim.fabric import Cluster, Member
from netsim.scenario import Scenario, ScenarioError, load_scenario

__all__ = ["Cluster", "Member", "Scenario", "ScenarioError", "load_scenario"]
