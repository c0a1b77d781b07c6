"""calico-ipam's BlockStore over netsim's own store: calico/node allocates its tunnel addresses
with the same block allocator (netsim.cni.calico_ipam) the CNI plugin runs, on the same
IPAMBlock, BlockAffinity, IPAMHandle and IPPool objects; the plugin reaches them through the
API server (KubeBlockStore), the agent, which holds the store, directly.

Objects are the API's dicts (apiVersion crd.projectcalico.org/v1, kind, metadata, spec); a write
is compare-and-swap on metadata.resourceVersion, as the API server's optimistic concurrency.
Errors are the allocator's own (calico_ipam.Conflict, AlreadyExists, NotFound) when it defines
them, so it retries the same way over either store.
"""

from __future__ import annotations

from netsim.api.registry import new_object
from netsim.api.store import AlreadyExists, Conflict, NotFound, Store
from netsim.model import calico, k8s

KINDS = ("IPAMBlock", "BlockAffinity", "IPAMHandle", "IPPool", "IPAMConfig")


def _errors() -> tuple[type[Exception], type[Exception], type[Exception]]:
    """(Conflict, AlreadyExists, NotFound) as the allocator raises and catches them."""
    try:
        from netsim.cni import calico_ipam
    except ImportError:
        return Conflict, AlreadyExists, NotFound
    return (getattr(calico_ipam, "Conflict", Conflict), getattr(calico_ipam, "AlreadyExists", AlreadyExists),
            getattr(calico_ipam, "NotFound", NotFound))


class StoreBlockStore:
    def __init__(self, store: Store):
        self.store = store
        self.conflict, self.exists, self.not_found = _errors()

    @staticmethod
    def _key(kind: str, name: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"calico-ipam keeps no {kind!r} (only {', '.join(KINDS)})")
        return k8s.key(kind, None, name)

    def get(self, kind: str, name: str) -> dict | None:
        try:
            return self.store.get(self._key(kind, name))
        except NotFound:
            return None

    def list(self, kind: str) -> list[dict]:
        self._key(kind, "x")
        return self.store.list(k8s.prefix(kind))[0]

    def create(self, obj: dict) -> dict:
        obj = {"apiVersion": calico.API_VERSION, **obj}
        try:
            return self.store.create(self._key(obj["kind"], obj["metadata"]["name"]), new_object(obj))
        except AlreadyExists as exc:
            raise self.exists(str(exc)) from exc

    def update(self, obj: dict) -> dict:
        """CAS: the object must still be at the resourceVersion it carries."""
        meta = obj["metadata"]
        try:
            return self.store.update(self._key(obj["kind"], meta["name"]), obj, _revision(meta))
        except Conflict as exc:
            raise self.conflict(str(exc)) from exc
        except NotFound as exc:
            raise self.not_found(str(exc)) from exc

    def delete(self, kind: str, name: str, resource_version: str | int | None = None) -> None:
        try:
            self.store.delete(self._key(kind, name), int(resource_version) if resource_version else None)
        except Conflict as exc:
            raise self.conflict(str(exc)) from exc
        except NotFound as exc:
            raise self.not_found(str(exc)) from exc


def _revision(meta: dict) -> int | None:
    rv = meta.get("resourceVersion")
    return int(rv) if rv else None
