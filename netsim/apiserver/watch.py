"""Watches for API clients: one store watch per server (a thread) fanned out to every HTTP
watch on the event loop, each replaying what it missed from its resourceVersion first, as the
API server's watch cache does.  A resourceVersion the store no longer keeps is 410 Gone.
May import: the standard library and netsim.api.store, netsim.model, netsim.apiserver."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from netsim.api.store import Compacted, Event, Store, StoreError
from netsim.apiserver import resources
from netsim.apiserver.status import StatusError, bad_request, gone
from netsim.model import k8s

log = logging.getLogger("netsim.apiserver.watch")

BOOKMARK_S = 5.0
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(eq=False)
class _Sub:
    prefix: str
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)


class Broadcaster:
    """The store's events under /registry/, in order, to every subscriber whose prefix they
    fall under.  ``revision`` is the newest event dispatched: a subscriber sees every event
    above the revision it subscribed at."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop,
                 on_event: Callable[[Event], None] = lambda _e: None):
        self.store = store
        self.loop = loop
        self.on_event = on_event
        self.revision = store.revision()
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
        self.revision = max(self.revision, ev.revision)
        with contextlib.suppress(Exception):
            self.on_event(ev)
        for s in self.subs:
            if ev.key.startswith(s.prefix):
                s.queue.put_nowait(ev)

    def _expire_all(self, revision: int) -> None:
        self.revision = revision
        for s in self.subs:
            s.queue.put_nowait("expired")

    def subscribe(self, prefix: str) -> tuple[_Sub, int]:
        s = _Sub(prefix)
        self.subs.add(s)
        return s, self.revision

    def unsubscribe(self, s: _Sub) -> None:
        self.subs.discard(s)


def _event(kind: str, obj: dict) -> dict:
    return {"type": kind, "object": obj}


class WatchRequest:
    """One HTTP watch: ``start`` (before the response begins, so that a bad or too old
    resourceVersion is an HTTP error) and then ``events``."""

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

    async def start(self) -> None:
        rv = self.query.get("resourceVersion")
        self.sub, at = self.b.subscribe(self.prefix)
        try:
            if rv in (None, "", "0"):
                # No resourceVersion: the current state as ADDED events, then what follows.
                items, listed_at = await self.run(self.b.store.list, self.prefix)
                self.first = [_event("ADDED", resources._as_version(o, self.t.kind)) for o in items if self.match(o)]
                self.last = listed_at
            else:
                try:
                    self.last = int(rv)
                except ValueError:
                    raise bad_request(f"resourceVersion: {rv!r} is not a valid resource version") from None
                await self._replay(at)
        except BaseException:
            self.close()
            raise

    async def _replay(self, until: int) -> None:
        """The events between the client's resourceVersion and the subscription."""
        while self.last < until:
            try:
                batch = await self.run(self.b.store.events, self.prefix, self.last, 1000)
            except Compacted:
                raise gone(f"too old resource version: {self.last} ({self.b.revision})") from None
            for ev in batch:
                self._take(ev)
            if not batch:
                break

    def _take(self, ev: Event) -> None:
        if ev.revision <= self.last:
            return
        self.last = ev.revision
        if self.match(ev.object):
            self.first.append(_event(ev.type, resources._as_version(ev.object, self.t.kind)))

    async def events(self) -> AsyncIterator[dict]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            for e in self.first:
                yield e
            self.first = []
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    return
                try:
                    ev = await asyncio.wait_for(self.sub.queue.get(), min(left, BOOKMARK_S))
                except TimeoutError:
                    if self.bookmarks:
                        yield _event("BOOKMARK", {"kind": self.t.kind.kind, "apiVersion": self.t.kind.api_version,
                                                  "metadata": {"resourceVersion": str(max(self.last,
                                                                                          self.b.revision))}})
                    continue
                if ev == "expired":
                    err = gone(f"too old resource version: {self.last} ({self.b.revision})")
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
