"""Admission as kube-apiserver runs it between decoding a write and storing it: the mutating
plugins netsim has (DefaultIngressClass), then validation (netsim.api.validation), and the
warnings a stored write carries back to its client (:func:`warnings`).

:func:`admit` is called by the registry on every create and update, whoever the writer
(kubectl through the API server, `netsim apply`, the add-ons), so an invalid object is refused
the same way everywhere.  Reads the store (the IngressClasses); writes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from netsim.api import defaults, validation
from netsim.api.store import Store
from netsim.model import cnimode, k8s

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"


def default_ingress_class(store: Store, pending: Sequence[dict] = ()) -> dict | None:
    """The IngressClass a new Ingress without a class gets (plugin/pkg/admission/network/
    defaultingressclass getDefaultClass): of the classes annotated is-default-class "true"
    (exactly that string), the newest by creationTimestamp, the first by name on a tie (upstream
    since v1.28 picks the newest; before, two defaults refused the Ingress).  ``pending``: the
    objects an apply writes before this one (a class not yet stored is the newest)."""
    pending_names = {p["metadata"].get("name") for p in pending if p.get("kind") == "IngressClass"}
    stored = [c for c in store.list(k8s.prefix("IngressClass"))[0] if c["metadata"]["name"] not in pending_names]
    classes = [c for c in stored + [p for p in pending if p.get("kind") == "IngressClass"]
               if (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"]
    if not classes:
        return None
    classes.sort(key=lambda c: c["metadata"]["name"])
    # one not stored yet has no creationTimestamp: it is created after all the others
    classes.sort(key=lambda c: c["metadata"].get("creationTimestamp") or "9999", reverse=True)
    return classes[0]


def default_class(store: Store, obj: dict, pending: Sequence[dict] = ()) -> None:
    """DefaultIngressClass's Admit, on a create of an Ingress (not a subresource), in place:
    - spec.ingressClassName set (even to ""): left alone;
    - the legacy kubernetes.io/ingress.class annotation set: left alone;
    - otherwise the default class's name, when there is one."""
    if (obj.get("apiVersion"), obj.get("kind")) != ("networking.k8s.io/v1", "Ingress"):
        return
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {} if spec is None else spec
        if not isinstance(spec, dict):
            return  # validation refuses it
    if spec.get("ingressClassName") is not None:
        return
    if validation.INGRESS_CLASS_ANNOTATION in (obj["metadata"].get("annotations") or {}):
        return
    found = default_ingress_class(store, pending)
    if found is not None:
        spec["ingressClassName"] = found["metadata"]["name"]


def keep_applied_class(obj: dict, old: dict) -> None:
    """An apply of an existing Ingress whose document names no class keeps the class the stored
    one got by default, as kubectl apply's three-way merge does (the field is not in the last
    applied configuration, so the patch does not remove it)."""
    if (obj.get("apiVersion"), obj.get("kind")) != ("networking.k8s.io/v1", "Ingress"):
        return
    spec, old_spec = obj.get("spec"), old.get("spec") or {}
    if isinstance(spec, dict) and spec.get("ingressClassName") is None and \
            validation.INGRESS_CLASS_ANNOTATION not in (obj["metadata"].get("annotations") or {}) and \
            isinstance(old_spec, dict) and old_spec.get("ingressClassName") is not None:
        spec["ingressClassName"] = old_spec["ingressClassName"]


def admit(store: Store, obj: dict, old: dict | None, status_only: bool = False,
          pending: Sequence[dict] = ()) -> list[tuple[str, str]]:
    """Mutate ``obj`` as the admission plugins would (on a create only), then validate it:
    the (field path, message) causes of a refusal, empty when it may be stored.  ``obj`` is
    judged with the API defaults it will be stored with, as upstream defaults on decoding,
    before admission (netsim.api.validation reads a Secret's stringData as data)."""
    if status_only:
        if (obj.get("apiVersion"), obj.get("kind")) == ("networking.k8s.io/v1", "Ingress"):
            return validation.ingress_status(obj, old)
        return []
    if old is None:
        default_class(store, obj, pending)
    if (obj.get("apiVersion"), obj.get("kind")) not in validation.VALIDATORS:
        return []
    return validation.errors(defaults.apply_defaults(copy.deepcopy(obj)), old)


# The (apiVersion, kind)s a write of may warn: a caller that writes none of them skips the warnings.
WARNED = frozenset({("networking.k8s.io/v1", "NetworkPolicy")})


def warnings(cni: str, obj: dict) -> list[str]:
    """What a create or update of ``obj`` warns its client, as an admission plugin's
    warning.AddWarning does (kube-apiserver sends them as ``Warning: 299 - "..."`` headers, which
    kubectl prints on stderr): a NetworkPolicy in a cluster whose CNI does not enforce it."""
    if (obj.get("apiVersion"), obj.get("kind")) == ("networking.k8s.io/v1", "NetworkPolicy"):
        text = cnimode.policy_warning(cni)
        if text:
            return [text]
    return []
