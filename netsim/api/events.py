"""Events as Kubernetes components record them (client-go's tools/record): core/v1 Event objects
about an involved object, written by a component ("default-scheduler", "kubelet",
"replicaset-controller", ...), which `kubectl describe` and `kubectl get events` show.

Cheap by construction, as client-go's recorder is: :meth:`Recorder.event` only puts the event on
a bounded queue (a full queue drops it, as client-go's broadcaster does) and one background
thread writes it with its own store connection, so a controller's sync never waits for an event.
An event that repeats (same object, reason and message) updates the one Event object (count,
lastTimestamp) instead of adding another; Events live EVENT_TTL_S (the API server's
--event-ttl, 1 h) and the recorder that ``collects`` deletes older ones once a minute.  The
controllers' and the agent's caches ignore Events (netsim.api.informer), so writing one wakes no
reconciler.

Knows the store and the kind table (netsim.model.k8s); nothing above the api layer.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

from netsim.api.store import AlreadyExists, Conflict, NotFound, Store, StoreError
from netsim.model import k8s

log = logging.getLogger("netsim.api.events")

NORMAL, WARNING = "Normal", "Warning"
QUEUE_MAX = 1000  # client-go's maxQueuedEvents
AGGREGATE_MAX = 4096  # recent events remembered for counting repeats
EVENT_TTL_S = 3600.0
COLLECT_EVERY_S = 60.0


def timestamp(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t if t is not None else time.time()))


def event_object(involved: dict, type_: str, reason: str, message: str, component: str, host: str = "",
                 field_path: str | None = None, when: float | None = None) -> dict:
    """The Event a component records about ``involved``, named as client-go names it (the
    object's name and the time in hex nanoseconds); it lives in the object's namespace, or in
    "default" for a cluster-scoped object."""
    meta = involved["metadata"]
    now = when if when is not None else time.time()
    ref = {"kind": involved["kind"], "name": meta["name"], "apiVersion": involved.get("apiVersion", "v1")}
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    for field, value in (("uid", meta.get("uid")), ("resourceVersion", meta.get("resourceVersion")),
                         ("fieldPath", field_path)):
        if value:
            ref[field] = value
    source = {"component": component, **({"host": host} if host else {})}
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{int(now * 1e9):x}", "namespace": meta.get("namespace") or "default"},
        "involvedObject": ref, "reason": reason, "message": message, "source": source,
        "firstTimestamp": timestamp(now), "lastTimestamp": timestamp(now), "count": 1, "type": type_,
        "eventTime": None, "reportingComponent": component, "reportingInstance": host,
    }


def _aggregate_key(ev: dict) -> tuple:
    ref = ev["involvedObject"]
    return (ref.get("uid") or ref["name"], ref.get("fieldPath", ""), ev["reason"], ev["message"], ev["type"],
            ev["source"]["component"])


class Recorder:
    """Records a component's events into the store ``open_store()`` gives, opened in the writing
    thread (see the module doc).  With ``background`` False every event is written at once, in
    the caller's thread (unit tests).  ``collect``: this one also deletes expired Events."""

    def __init__(self, open_store: Callable[[], Store], component: str, host: str = "",
                 background: bool = True, collect: bool = False):
        self.component, self.host, self.collect = component, host, collect
        self._store_factory = open_store
        self._store: Store | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_MAX)
        self._recent: OrderedDict[tuple, dict] = OrderedDict()  # aggregate key -> the Event as stored
        self._next_collect = time.monotonic() + COLLECT_EVERY_S
        self.dropped = 0
        self.background = background
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name=f"events-{component}", daemon=True)
            self._thread.start()

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    def event(self, involved: dict, type_: str, reason: str, message: str, field_path: str | None = None,
              host: str | None = None, component: str | None = None) -> None:
        """Record one event; ``component`` and ``host`` stand for the recorder's own when one
        process runs several components (the controller manager's controllers, a kubelet per node)."""
        ev = event_object(involved, type_, reason, message, component or self.component,
                          self.host if host is None else host, field_path)
        if not self.background:
            self._write(ev)
            return
        try:
            self._queue.put_nowait(ev)
        except queue.Full:
            self.dropped += 1  # as client-go drops when its queue is full: events are best effort

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (for at most ``timeout``), then stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._stop.set()
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ev = self._queue.get(timeout=1.0)
            except queue.Empty:
                ev = False
            if ev is None:
                return
            try:
                if ev:
                    self._write(ev)
                if self.collect and time.monotonic() >= self._next_collect:
                    self._next_collect = time.monotonic() + COLLECT_EVERY_S
                    self.collect_expired()
            except StoreError as exc:
                log.info("event not recorded: %s", exc)
            except Exception:
                log.exception("event recorder %s", self.component)

    def _write(self, ev: dict) -> None:
        key = _aggregate_key(ev)
        seen = self._recent.get(key)
        if seen is not None:
            self._recent.move_to_end(key)
            for _ in range(2):
                bumped = {**seen, "count": seen.get("count", 1) + 1, "lastTimestamp": ev["lastTimestamp"]}
                try:
                    self._recent[key] = self.store.update(k8s.key_of(seen), bumped,
                                                          int(seen["metadata"]["resourceVersion"]))
                    return
                except Conflict:
                    with contextlib.suppress(NotFound):
                        seen = self.store.get(k8s.key_of(seen))
                        continue
                    break
                except NotFound:
                    break
            self._recent.pop(key, None)
        ev["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=ev["firstTimestamp"])
        try:
            stored = self.store.create(k8s.key_of(ev), ev)
        except AlreadyExists:
            return
        self._recent[key] = stored
        if len(self._recent) > AGGREGATE_MAX:
            self._recent.popitem(last=False)

    def collect_expired(self, now: float | None = None) -> int:
        """Delete Events whose lastTimestamp is older than EVENT_TTL_S; how many went."""
        cutoff = timestamp((now if now is not None else time.time()) - EVENT_TTL_S)
        items, _ = self.store.list(k8s.prefix("Event"))
        gone = 0
        for ev in items:
            if (ev.get("lastTimestamp") or ev["metadata"].get("creationTimestamp") or "") < cutoff:
                with contextlib.suppress(NotFound, Conflict):
                    self.store.delete(k8s.key_of(ev))
                    gone += 1
        return gone


class NullRecorder:
    """Records nothing: for code run without a cluster's store (and the default of a cache)."""

    def event(self, *args, **kwargs) -> None:
        pass

    def close(self, timeout: float = 0) -> None:
        pass


NULL = NullRecorder()


__all__ = ["EVENT_TTL_S", "NORMAL", "NULL", "NullRecorder", "Recorder", "WARNING", "event_object", "timestamp"]
