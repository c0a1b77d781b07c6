"""Watches for API clients: one store watch per server (a thread) fanned out to every HTTP
watch on the event loop, each replaying what it missed from its resourceVersion first out of a
window of recent events, as kube-apiserver's watch cache does.  A resourceVersion older than
the window (from before the server started, or dropped from it since) is too old: the watch
answers 200 and one ERROR event carrying a 410 Expired Status, as the cacher's error watcher
does, and clients relist.  Bookmarks (allowWatchBookmarks) come every BOOKMARK_S without events
and once shortly before the watch's timeout, as the cacher sends them; sendInitialEvents ends
the initial ADDED events with a bookmark annotated k8s.io/initial-events-end.
May import: the standard library and netsim.api.store, netsim.model, netsim.apiserver."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from netsim.api.store import Compacted, Event, Store, StoreError
from netsim.apiserver import resources
from netsim.apiserver.status import StatusError, bad_request, gone
from netsim.model import k8s

log = logging.getLogger("netsim.apiserver.watch")

BOOKMARK_S = 5.0
BOOKMARK_BEFORE_END_S = 2.0  # the cacher's bookmark "right before the watcher timeout"
DEFAULT_TIMEOUT_S = 1800.0
WINDOW_EVENTS = 10000  # recent events kept for replay (kube's watch cache: up to ~100k per resource)
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


@dataclass(eq=False)
class _Sub:
    prefix: str
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)


class Broadcaster:
    """The store's events under /registry/, in order, to every subscriber whose prefix they
    fall under.  ``revision`` is the newest event dispatched: a subscriber sees every event
    above the revision it subscribed at.  ``recent`` holds every event above ``floor``."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop,
                 on_event: Callable[[Event], None] = lambda _e: None):
        self.store = store
        self.loop = loop
        self.on_event = on_event
        self.revision = store.revision()
        self.floor = self.revision
        self.recent: deque[Event] = deque()
        self.subs: set[_Sub] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="apiserver-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)

    def _run(self) -> None:
        after = self.revision
        while not self._stop.is_set():
            try:
                for ev in self.store.watch(k8s.REGISTRY, after=after, timeout=1.0):
                    after = ev.revision
                    self.loop.call_soon_threadsafe(self._dispatch, ev)
                    if self._stop.is_set():
                        return
            except Compacted:
                # Missed events cannot be replayed: every watcher must relist, as after a 410.
                after = self.store.revision()
                self.loop.call_soon_threadsafe(self._expire_all, after)
            except StoreError as exc:
                log.warning("store watch failed (%s); retrying", exc)
                self._stop.wait(0.5)
            except RuntimeError:  # the loop is closed: the server is stopping
                return

    def _dispatch(self, ev: Event) -> None:
        if ev.revision < self.revision:  # etcd gives one revision to every key a delete_prefix removes
            return
        self.revision = ev.revision
        self.recent.append(ev)
        if len(self.recent) > WINDOW_EVENTS:
            self.floor = self.recent.popleft().revision
        with contextlib.suppress(Exception):
            self.on_event(ev)
        for s in self.subs:
            if ev.key.startswith(s.prefix):
                s.queue.put_nowait(ev)

    def _expire_all(self, revision: int) -> None:
        self.revision = self.floor = revision
        self.recent.clear()
        for s in self.subs:
            s.queue.put_nowait("expired")

    def subscribe(self, prefix: str) -> tuple[_Sub, int]:
        s = _Sub(prefix)
        self.subs.add(s)
        return s, self.revision

    def unsubscribe(self, s: _Sub) -> None:
        self.subs.discard(s)

    def since(self, prefix: str, after: int) -> list[Event] | None:
        """The events under prefix above revision ``after`` (None: some are no longer kept)."""
        if after < self.floor:
            return None
        return [ev for ev in self.recent if ev.revision > after and ev.key.startswith(prefix)]


def _event(kind: str, obj: dict) -> dict:
    return {"type": kind, "object": obj}


class WatchRequest:
    """One HTTP watch: ``start`` (before the response begins, so that a bad resourceVersion is
    an HTTP error) and then ``events``."""

    def __init__(self, b: Broadcaster, t: resources.Target, query, run: Callable):
        self.b = b
        self.t = t
        self.query = query
        self.run = run  # run(fn, *args) in the server's thread pool
        self.match = resources.matcher(query)
        if t.name:
            by_name = self.match
            self.match = lambda o: o["metadata"].get("name") == t.name and by_name(o)
        self.prefix = k8s.prefix(t.kind, t.namespace)
        self.bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        try:
            self.timeout = float(query.get("timeoutSeconds") or DEFAULT_TIMEOUT_S)
        except ValueError:
            raise bad_request(f"timeoutSeconds: {query.get('timeoutSeconds')!r} is not a number") from None
        self.first: list[dict] = []
        self.last = 0
        self.sub: _Sub | None = None
        self.expired: StatusError | None = None

    async def start(self) -> None:
        rv = self.query.get("resourceVersion")
        initial = self.query.get("sendInitialEvents") in ("true", "1")
        if initial and not self.bookmarks:
            raise StatusError(422, "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch "
                              "unless allowWatchBookmarks is true", "Invalid")
        if rv not in (None, "", "0"):
            try:
                self.last = int(rv)
            except ValueError:
                raise bad_request(f"resourceVersion: {rv!r} is not a valid resource version") from None
        self.sub, _at = self.b.subscribe(self.prefix)
        try:
            if rv in (None, "", "0") or initial:
                # The current state as ADDED events, then what follows.
                items, listed_at = await self.run(self.b.store.list, self.prefix)
                self.first = [_event("ADDED", resources._as_version(o, self.t.kind)) for o in items if self.match(o)]
                self.last = listed_at
                if initial:
                    self.first.append(self._bookmark({INITIAL_EVENTS_END: "true"}))
                return
            # Subscribed and replayed in one step on the loop: no event falls between the two.
            missed = self.b.since(self.prefix, self.last)
            if missed is None:
                self.expired = gone(f"too old resource version: {self.last} ({self.b.floor + 1})")
                return
            for ev in missed:
                self._take(ev)
        except BaseException:
            self.close()
            raise

    def _bookmark(self, annotations: dict | None = None) -> dict:
        meta: dict = {"resourceVersion": str(max(self.last, self.b.revision))}
        if annotations:
            meta["annotations"] = annotations
        return _event("BOOKMARK", {"kind": self.t.kind.kind, "apiVersion": self.t.kind.api_version,
                                   "metadata": meta})

    def _take(self, ev: Event) -> None:
        if ev.revision <= self.last:
            return
        self.last = ev.revision
        if self.match(ev.object):
            self.first.append(_event(ev.type, resources._as_version(ev.object, self.t.kind)))

    async def events(self) -> AsyncIterator[dict]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        # Bookmarks by the clock (events that the selector drops do not put them off).
        next_bookmark = loop.time() + BOOKMARK_S
        if deadline - BOOKMARK_BEFORE_END_S > loop.time():
            next_bookmark = min(next_bookmark, deadline - BOOKMARK_BEFORE_END_S)
        try:
            if self.expired is not None:
                yield _event("ERROR", self.expired.status())
                return
            for e in self.first:
                yield e
            self.first = []
            while True:
                now = loop.time()
                if now >= deadline:
                    return
                if self.bookmarks and now >= next_bookmark:
                    yield self._bookmark()
                    next_bookmark = now + BOOKMARK_S
                    if next_bookmark >= deadline - BOOKMARK_BEFORE_END_S > now:
                        next_bookmark = deadline - BOOKMARK_BEFORE_END_S
                    continue
                wait = deadline - now
                if self.bookmarks:
                    wait = min(wait, max(next_bookmark - now, 0.0))
                try:
                    ev = await asyncio.wait_for(self.sub.queue.get(), wait)
                except TimeoutError:
                    continue
                if ev == "expired":
                    err = gone(f"too old resource version: {self.last} ({self.b.floor + 1})")
                    yield _event("ERROR", err.status())
                    return
                self._take(ev)
                for e in self.first:
                    yield e
                self.first = []
        finally:
            self.close()

    def close(self) -> None:
        if self.sub is not None:
            self.b.unsubscribe(self.sub)
            self.sub = None


__all__ = ["Broadcaster", "StatusError", "WatchRequest"]
