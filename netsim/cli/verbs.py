"""netsim's own kubectl-shaped verbs as plain functions over a cluster's store.  They do what
kubectl does on the client side (find the kind a user typed, read manifests and say which file
and document is wrong, check --overwrite before a label patch) and call the API server's own
functions for the rest (netsim.apiserver.resources, netsim.api.registry), so `netsim get` and
`kubectl get`, `netsim label` and `kubectl label` mean the same thing.
May import: netsim.model, netsim.api, netsim.apiserver; no typer (netsim.cli.kubectl prints)."""

from __future__ import annotations

import json
from pathlib import Path

from netsim.api import crds, registry
from netsim.api.store import Store
from netsim.apiserver import resources
from netsim.apiserver.status import StatusError
from netsim.model import k8s

MANAGER = "netsim"  # the field manager of netsim's own writes, as "kubectl" is kubectl's


class VerbError(Exception):
    """What to print (as is) and the exit code: 2 for what the user typed, 1 for the server."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.message = message
        self.code = code


def from_server(exc: StatusError) -> VerbError:
    """A Status as kubectl prints it: Error from server (NotFound): pods "x" not found."""
    causes = (exc.details or {}).get("causes") or []
    more = "".join(f"\n  {c.get('field') or ''}: {c.get('message')}" for c in causes if len(causes) > 1)
    return VerbError(f"Error from server ({exc.reason}): {exc.message}{more}", 1)


def kind(word: str, store: Store | None = None) -> k8s.Kind:
    """The kind a user typed (pods, po, deployments.apps, a custom resource's plural or short
    name); custom resources are looked up in the store's CRDs when ``store`` is given."""
    k = k8s.kind_named(word)
    if k is None and store is not None:
        crds.load_crds(store)
        k = k8s.kind_named(word)
    if k is None:
        raise VerbError(f"error: the server doesn't have a resource type {word!r}", 2)
    return k


def target(k: k8s.Kind, namespace: str | None, name: str | None = None, every_namespace: bool = False,
           subresource: str | None = None) -> resources.Target:
    ns = None if not k.namespaced or every_namespace else (namespace or "default")
    return resources.Target(k, ns, name, subresource)


# -- manifests ---------------------------------------------------------------------------------

def read(paths: list[Path], store: Store | None = None) -> list[k8s.Document]:
    """Every document of the files (directories, - for stdin), validated; the store's CRDs are
    loaded first so that a custom resource of a CRD applied earlier is known."""
    if store is not None:
        crds.load_crds(store)
    try:
        return [d for p in paths for d in k8s.read_documents(p)]
    except k8s.ManifestError as exc:
        raise VerbError(f"error: {exc}", 2) from None


def apply(store: Store, docs: list[k8s.Document], namespace: str | None) -> list[tuple[str, str]]:
    """Create or update the documents' objects as one (registry.apply: nothing is written when
    one of them is refused); an error names the file and document of the object refused."""
    try:
        return registry.apply(store, [d.obj for d in docs], namespace or "default", manager=MANAGER)
    except registry.ApiError as exc:
        at = f"{docs[exc.index].source}: {docs[exc.index].where}: " if exc.index is not None else ""
        raise VerbError(f"error: {at}{exc}", 1) from None


def apply_warnings(store: Store, docs: list[k8s.Document], results: list[tuple[str, str]]) -> list[str]:
    """The warnings the API server sends kubectl for the objects :func:`apply` created or
    updated (an unchanged object is not written, so it warns nothing, as kubectl's apply)."""
    written = [d.obj for d, (_ref, action) in zip(docs, results, strict=True) if action != "unchanged"]
    return registry.warnings(store, written)


# -- reads -------------------------------------------------------------------------------------

def get(store: Store, t: resources.Target, label_selector: str | None = None,
        field_selector: str | None = None) -> list[dict]:
    """One object (t.name) or the selected objects of a namespace (or every one)."""
    try:
        if t.name:
            return [resources.get(store, t)]
        query = {"labelSelector": label_selector or "", "fieldSelector": field_selector or ""}
        return resources.list_(store, t, query)["items"]
    except StatusError as exc:
        raise from_server(exc) from None


# -- writes ------------------------------------------------------------------------------------

def delete(store: Store, t: resources.Target, force: bool = False) -> tuple[str, int]:
    """DELETE as the API server does it (graceful for a scheduled pod unless forced, as
    --grace-period=0 --force): the object's reference and the revision of the write."""
    try:
        obj, _ = resources.delete(store, t, {"gracePeriodSeconds": 0} if force else {}, {})
    except StatusError as exc:
        raise from_server(exc) from None
    return k8s.ref(obj), int(obj["metadata"].get("resourceVersion") or 0)


def parse_pairs(pairs: list[str]) -> dict[str, str | None]:
    """key=value to set, key- to remove, as kubectl label and annotate take them."""
    changes: dict[str, str | None] = {}
    for pair in pairs:
        if pair.endswith("-") and "=" not in pair:
            changes[pair[:-1]] = None
        elif "=" in pair:
            key, value = pair.split("=", 1)
            changes[key] = value
        else:
            raise VerbError(f"error: {pair!r}: use key=value to set or key- to remove", 2)
    return changes


def set_metadata(store: Store, t: resources.Target, field: str, changes: dict[str, str | None],
                 overwrite: bool = False) -> dict:
    """Labels or annotations, as kubectl label/annotate do it: --overwrite checked against the
    object read, then a merge patch at that resourceVersion, read and tried again when another
    writer came between."""
    for _ in range(10):
        obj = get(store, t)[0]
        current = obj["metadata"].get(field) or {}
        for key, value in changes.items():
            if value is not None and key in current and current[key] != value and not overwrite:
                raise VerbError(f"error: '{key}' already has a value ({current[key]}), and --overwrite is false",
                                1)
        body = json.dumps({"metadata": {field: changes,
                                        "resourceVersion": obj["metadata"]["resourceVersion"]}}).encode()
        try:
            return resources.patch(store, t, body, "application/merge-patch+json", {}, registry.now(), MANAGER)
        except StatusError as exc:
            if exc.reason != "Conflict":
                raise from_server(exc) from None
    raise VerbError(f"error: {t.kind.singular}/{t.name} kept changing; try again", 1)
