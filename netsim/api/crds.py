"""Custom resources in this process: the kinds of the CustomResourceDefinitions in the store
(netsim.model.k8s.crd_kinds) registered and forgotten as CRDs are written and deleted, and the
Established condition a CRD is stored with.  The API server, netsim's own verbs and `up` all
use these, so a custom resource is known the same way whichever of them wrote its CRD.
May import: netsim.model and netsim.api.store."""

from __future__ import annotations

from netsim.api.store import Store
from netsim.model import k8s


def register_crds(crds: list[dict]) -> None:
    """Make the custom resources of ``crds`` known (and forget those of CRDs that are gone)."""
    wanted = {(k.api_version, k.kind): k for crd in crds for k in k8s.crd_kinds(crd)}
    for (api_version, kind), k in list(k8s.ALL.items()):
        if k.storage and "/" in k.storage and (api_version, kind) not in wanted and \
                not k8s.builtin({"apiVersion": api_version, "kind": kind}):
            k8s.unregister(api_version, kind)
    for k in wanted.values():
        k8s.register(k)


def load_crds(store: Store) -> list[dict]:
    """Every CRD in the store, their kinds registered."""
    crds = store.list(k8s.prefix("CustomResourceDefinition"))[0]
    register_crds(crds)
    return crds


def after_write(obj: dict, deleted: bool = False) -> None:
    """A CRD written or deleted registers or forgets its resources at once (a watch on CRDs
    that follows does too, a moment later)."""
    if not k8s.is_crd(obj):
        return
    for k in k8s.crd_kinds(obj):
        if deleted:
            k8s.unregister(k.api_version, k.kind)
        else:
            k8s.register(k)


def established(crd: dict) -> dict:
    """kubectl waits for a CRD's Established condition; here the resource is served at once."""
    conds = crd.setdefault("status", {}).setdefault("conditions", [])
    if not any(c.get("type") == "Established" for c in conds):
        conds.append({"type": "Established", "status": "True", "reason": "InitialNamesAccepted"})
    return crd
