"""The cluster's CNI (scenario ``networking.cni``) and what follows from it, decided here only:
which plugins each node's network list chains, and so whether NetworkPolicy is enforced.

- ``canal`` (the default): flannel's overlay and NetworkPolicy, as Canal is flannel's networking
  with Calico's policy; netsim's ``netsim-policy`` plugin and the agent's policy table play
  Calico's part.
- ``flannel``: the overlay alone, as kube-flannel ships it.  Kubernetes still accepts and
  stores NetworkPolicies (they are API objects), but no node enforces them: flannel has no
  policy engine, which is the trap this mode lets users see.
- ``calico``: Calico's routed pods, with policy.

Enforcement is read off the chain (the policy plugin in it or not), so the two never disagree.
Uses nothing above the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass

POLICY_PLUGIN = "netsim-policy"


@dataclass(frozen=True)
class Mode:
    name: str
    plugins: tuple[str, ...]  # the conflist's chain, in order
    summary: str  # what `netsim status` says the CNI is

    @property
    def enforces_policy(self) -> bool:
        return POLICY_PLUGIN in self.plugins


MODES = {m.name: m for m in (
    Mode("canal", ("flannel", "portmap", POLICY_PLUGIN), "flannel overlay + NetworkPolicy"),
    Mode("flannel", ("flannel", "portmap"), "flannel overlay, NetworkPolicy not enforced"),
    Mode("calico", ("calico", "portmap", POLICY_PLUGIN), "Calico routing + NetworkPolicy"),
)}
DEFAULT = "canal"
ENFORCING = tuple(name for name, m in MODES.items() if m.enforces_policy)


def mode(cni: str | None) -> Mode:
    """The mode of a CNI name (None or "": the default)."""
    found = MODES.get(cni or DEFAULT)
    if found is None:
        raise ValueError(f"networking.cni: {cni!r} is not known; use {', '.join(repr(n) for n in MODES)}")
    return found


def enforces_policy(cni: str | None) -> bool:
    return mode(cni).enforces_policy


def _enforcing() -> str:
    return " or ".join(ENFORCING)


def policy_warning(cni: str | None) -> str | None:
    """What a write of a NetworkPolicy warns (kubectl prints it after "Warning: "), or None when
    the cluster's CNI enforces it."""
    m = mode(cni)
    if m.enforces_policy:
        return None
    return (f"NetworkPolicy is stored but not enforced: this cluster's CNI is {m.name}, which does not "
            f"implement NetworkPolicy (networking.cni: {_enforcing()} enforces it)")


def not_enforced(cni: str | None) -> str | None:
    """What `netsim policy explain` says of a verdict in a cluster whose CNI ignores policies,
    or None when it enforces them."""
    m = mode(cni)
    if m.enforces_policy:
        return None
    return (f"this cluster's CNI ({m.name}) does not enforce NetworkPolicy: the connection is not "
            f"blocked whatever the policies say ({_enforcing()} would enforce them)")
