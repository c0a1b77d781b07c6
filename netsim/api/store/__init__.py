"""The control-plane store: Kubernetes-shaped JSON objects under keys, one global revision.
May import: the standard library only; the backends (sqlite, etcd) are loaded by open_store.

Every write gets the next revision (the object's resourceVersion) and an entry in an ordered
event log, so a watcher can resume from any revision it has seen and miss nothing.  :class:`Store`
is the contract every backend keeps; the embedded SQLite backend (netsim.api.store.sqlite) and
etcd (netsim.api.store.etcd) implement it, and the unit tests' in-memory fake does too.
"""

from __future__ import annotations

from netsim.api.store.base import AlreadyExists, Compacted, Conflict, Event, NotFound, Store, StoreError

__all__ = ["AlreadyExists", "Compacted", "Conflict", "Event", "NotFound", "Store", "StoreError", "open_store"]


def open_store(url: str, **kw) -> Store:
    """The store a URL names: ``sqlite:///abs/path.db`` or a plain path for SQLite,
    ``etcd://HOST:PORT[/PREFIX]`` for etcd, every key under PREFIX (e.g. ``/netsim/c1``) so that
    several clusters can share one etcd.  ``kw`` goes to the backend's constructor."""
    if url.startswith("etcd://"):
        from netsim.api.store.etcd import EtcdStore

        hostport, slash, prefix = url[len("etcd://"):].partition("/")
        if not hostport:
            raise ValueError(f"{url}: no host:port")
        prefix = (slash + prefix).rstrip("/")
        return EtcdStore(endpoint=f"http://{hostport}", prefix=prefix, **kw)
    from netsim.api.store.sqlite import SQLiteStore

    if url.startswith("sqlite://"):
        return SQLiteStore(url[len("sqlite://"):], **kw)
    if "://" in url:
        raise ValueError(f"{url}: unknown store; use sqlite:///path/to/store.db or etcd://host:port/prefix")
    return SQLiteStore(url, **kw)
