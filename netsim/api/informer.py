"""A local cache of the store kept current by one watch, and the loop that runs a level-triggered
sync over it, as client-go's informers and workqueues do for Kubernetes controllers.

A sync sees the whole desired state each time (never a single event), so a restarted
component converges to the same result however many events it missed.  Writes a sync makes
go through :meth:`Cache.write` and land in the cache at once, so the next sync never acts
twice on a change whose watch event has not arrived yet.

Events (core/v1 Event objects, netsim.api.events) are not desired state: the cache keeps none
and a batch of nothing but Events wakes no sync (the loop only reports the revision it has
seen), so recording an event costs the reconcilers nothing.  A sync records events through
``cache.recorder``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable

from netsim.api import events as event_log
from netsim.api.registry import new_object, release_service
from netsim.api.store import Compacted, Conflict, NotFound, Store, StoreError
from netsim.model import k8s

log = logging.getLogger("netsim.api.informer")

COMPONENTS = "/netsim/components/"
HEARTBEAT_S = 2.0
ALIVE_S = 10.0
EVENTS = (k8s.prefix("Event"), k8s.prefix(k8s.ALL[("events.k8s.io/v1", "Event")]))


class Cache:
    def __init__(self, store: Store, prefix: str = k8s.REGISTRY, recorder=event_log.NULL):
        self.store = store
        self.prefix = prefix
        self.recorder = recorder
        self.objects: dict[str, dict] = {}
        self._seen: dict[str, int] = {}  # key -> revision of the last write applied, deletes too
        self.revision = 0

    def relist(self) -> None:
        items, rev = self.store.list(self.prefix)
        # Built-in kinds only (custom resources mean nothing to netsim's components, and their
        # kinds are known to the API server alone), and no Events (see above).
        self.objects = {k: o for o in items if "metadata" in o and k8s.builtin(o)
                        and not (k := k8s.key_of(o)).startswith(EVENTS)}
        self._seen = {k: int(o["metadata"]["resourceVersion"]) for k, o in self.objects.items()}
        self.revision = rev

    def apply_event(self, ev) -> bool:
        """Take one watch event; False when it changes nothing the syncs see (an Event)."""
        self.revision = max(self.revision, ev.revision)
        if ev.key.startswith(EVENTS):
            return False
        if ev.revision <= self._seen.get(ev.key, 0):
            return True  # this component's own write, already in the cache
        self._seen[ev.key] = ev.revision
        if not k8s.builtin(ev.object):
            return False
        if ev.type == "DELETED":
            self.objects.pop(ev.key, None)
        else:
            self.objects[ev.key] = ev.object
        return True

    def _record(self, k: str, obj: dict | None, rev: int) -> None:
        if rev > self._seen.get(k, 0):
            self._seen[k] = rev
            if obj is None:
                self.objects.pop(k, None)
            else:
                self.objects[k] = obj

    # -- reads --------------------------------------------------------------------------
    def of_kind(self, kind: str, namespace: str | None = None) -> list[dict]:
        p = k8s.prefix(kind, namespace)
        return [o for k, o in self.objects.items() if k.startswith(p)]

    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        return self.objects.get(k8s.key(kind, namespace, name))

    # -- writes, seen at once -----------------------------------------------------------
    def create(self, obj: dict) -> dict | None:
        obj = new_object(obj)
        k = k8s.key_of(obj)
        try:
            stored = self.store.create(k, obj)
        except StoreError as exc:
            log.info("create %s: %s", k, exc)
            return None
        self._record(k, stored, int(stored["metadata"]["resourceVersion"]))
        return stored

    def update(self, obj: dict) -> dict | None:
        """Write ``obj`` over the version it was read at; a conflict means the cache is behind
        and the next sync will redo the work from fresher state."""
        k = k8s.key_of(obj)
        try:
            stored = self.store.update(k, obj, int(obj["metadata"]["resourceVersion"]))
        except (Conflict, NotFound) as exc:
            log.info("update %s: %s", k, exc)
            return None
        self._record(k, stored, int(stored["metadata"]["resourceVersion"]))
        return stored

    def delete(self, obj: dict) -> bool:
        k = k8s.key_of(obj)
        try:
            gone = self.store.delete(k, int(obj["metadata"]["resourceVersion"]))
        except (Conflict, NotFound) as exc:
            log.info("delete %s: %s", k, exc)
            return False
        self._record(k, None, int(gone["metadata"]["resourceVersion"]))
        if obj["kind"] == "Service":
            release_service(self.store, obj)
        return True


class Loop:
    """Run ``sync(cache)`` whenever the watched state changes (batched), at least every
    ``resync_s``, and publish the revision the component has reconciled through, which
    `netsim apply` waits on."""

    def __init__(self, store: Store, name: str, sync: Callable[[Cache], float | None], stop: threading.Event,
                 resync_s: float = 30.0, settle_s: float = 0.01, recorder=event_log.NULL):
        self.store = store
        self.name = name
        self.sync = sync
        self.stop = stop
        self.resync_s = resync_s
        self.settle_s = settle_s
        self.cache = Cache(store, recorder=recorder)
        self.observed = 0
        self._report_lock = threading.Lock()
        self.events: queue.Queue = queue.Queue()

    def _watch(self) -> None:
        """Feed the queue from one watch, resumed after every timeout; a compacted revision
        asks the loop to relist."""
        after = self.cache.revision
        while not self.stop.is_set():
            try:
                for ev in self.store.watch(k8s.REGISTRY, after=after, timeout=1.0):
                    self.events.put(ev)
                    after = ev.revision
                    if self.stop.is_set():
                        return
            except Compacted:
                self.events.put("relist")
                return
            except StoreError as exc:
                log.warning("%s: watch failed (%s); retrying", self.name, exc)
                self.stop.wait(0.5)

    def _heartbeat(self) -> None:
        """Liveness apart from progress: a sync that takes longer than ALIVE_S (a slow machine,
        an emulated one) must not make `up` or `apply` take the component for dead."""
        while not self.stop.wait(HEARTBEAT_S):
            self.report(progress=False)

    def run(self) -> None:
        self.cache.relist()
        watcher = threading.Thread(target=self._watch, name=f"{self.name}-watch", daemon=True)
        watcher.start()
        threading.Thread(target=self._heartbeat, name=f"{self.name}-heartbeat", daemon=True).start()
        next_sync = 0.0
        while not self.stop.is_set():
            timeout = max(0.0, min(next_sync - time.monotonic(), HEARTBEAT_S))
            dirty = seen = False
            try:
                item = self.events.get(timeout=timeout)
                seen = True
                time.sleep(self.settle_s)  # let a burst of events arrive and sync them once
                dirty = self._take(item)
                while True:
                    dirty = self._take(self.events.get_nowait()) or dirty
            except queue.Empty:
                pass
            if self.stop.is_set():
                break
            if not watcher.is_alive():
                self.cache.relist()
                watcher = threading.Thread(target=self._watch, name=f"{self.name}-watch", daemon=True)
                watcher.start()
                dirty = True
            if dirty or time.monotonic() >= next_sync:
                try:
                    retry = self.sync(self.cache)
                    self.report()
                except Exception:
                    # No report: `apply` must not take a failed sync for progress.
                    log.exception("%s: sync failed; retrying in 1s", self.name)
                    retry = 1.0
                    self.report(progress=False)
                wait = self.resync_s if retry is None else retry
                next_sync = time.monotonic() + wait
            elif seen:
                self.report()  # only Events arrived: nothing to reconcile, but seen through them

    def _take(self, item) -> bool:
        if item == "relist":
            self.cache.relist()
            return True
        return self.cache.apply_event(item)

    def report(self, progress: bool = True) -> None:
        """Heartbeat, and with ``progress`` the revision this component has reconciled through."""
        with self._report_lock:  # the heartbeat thread must not write back an older revision
            if progress:
                self.observed = self.cache.revision
            with contextlib.suppress(StoreError):
                self.store.put(COMPONENTS + self.name, {"metadata": {"name": self.name},
                                                        "observedRevision": self.observed,
                                                        "heartbeat": time.time()})


def wait_settled(store: Store, timeout: float, names: list[str] | None = None,
                 at_least: int = 0) -> tuple[bool, list[str]]:
    """Wait until every component (those in ``names``, else every one registered) has
    reconciled through the newest write under /registry/, including the writes other
    components made in response, and through ``at_least`` (a delete's revision: etcd cannot
    tell the newest revision of a key that is gone).  A component whose heartbeat stopped is
    reported at once.  Returns (settled, what is behind)."""
    deadline = time.monotonic() + timeout
    behind: list[str] = []
    while True:
        target = max(store.latest_revision(k8s.REGISTRY), at_least)
        comps = {c["metadata"]["name"]: c for c in store.list(COMPONENTS)[0]}
        wanted = names if names is not None else sorted(comps)
        dead = [f"{n} (not running)" for n in wanted
                if n in comps and time.time() - comps[n].get("heartbeat", 0) > ALIVE_S]
        if dead:
            return False, dead
        behind = [n for n in wanted if n not in comps or comps[n]["observedRevision"] < target]
        if not behind:
            return True, []
        if time.monotonic() > deadline:
            return False, behind
        time.sleep(0.02)
