"""An in-memory netsim.api.store.Store for unit tests: one dict, one revision counter, an event
log; no file, no thread, no server.  ``watch`` replays what is logged and ends (it never waits)."""

from __future__ import annotations

import copy
from collections.abc import Iterator

from netsim.api.store import AlreadyExists, Conflict, Event, NotFound


class MemoryStore:
    def __init__(self):
        self.objects: dict[str, dict] = {}
        self.log: list[Event] = []

    def close(self) -> None:
        pass

    def revision(self) -> int:
        return len(self.log)

    def _write(self, key: str, kind: str, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(len(self.log) + 1)
        self.log.append(Event(kind, key, copy.deepcopy(obj), len(self.log) + 1))
        if kind == "DELETED":
            del self.objects[key]
        else:
            self.objects[key] = obj
        return copy.deepcopy(obj)

    def _check(self, key: str, expected_revision: int | None) -> dict:
        if key not in self.objects:
            raise NotFound(key)
        old = self.objects[key]
        if expected_revision is not None and int(old["metadata"]["resourceVersion"]) != expected_revision:
            raise Conflict(key)
        return old

    def get(self, key: str) -> dict:
        if key not in self.objects:
            raise NotFound(key)
        return copy.deepcopy(self.objects[key])

    def list(self, prefix: str) -> tuple[list[dict], int]:
        return [copy.deepcopy(o) for k, o in sorted(self.objects.items()) if k.startswith(prefix)], self.revision()

    def latest_revision(self, prefix: str) -> int:
        return max((e.revision for e in self.log if e.key.startswith(prefix)), default=0)

    def create(self, key: str, obj: dict) -> dict:
        if key in self.objects:
            raise AlreadyExists(key)
        return self._write(key, "ADDED", obj)

    def update(self, key: str, obj: dict, expected_revision: int | None = None) -> dict:
        self._check(key, expected_revision)
        return self._write(key, "MODIFIED", obj)

    def put(self, key: str, obj: dict) -> dict:
        return self._write(key, "MODIFIED" if key in self.objects else "ADDED", obj)

    def delete(self, key: str, expected_revision: int | None = None) -> dict:
        return self._write(key, "DELETED", self._check(key, expected_revision))

    def delete_prefix(self, prefix: str) -> int:
        keys = [k for k in self.objects if k.startswith(prefix)]
        for k in keys:
            self.delete(k)
        return len(keys)

    def events(self, prefix: str, after: int, limit: int = 1000) -> list[Event]:
        return [e for e in self.log if e.revision > after and e.key.startswith(prefix)][:limit]

    def watch(self, prefix: str, after: int, timeout: float | None = None) -> Iterator[Event]:
        yield from self.events(prefix, after, limit=len(self.log))
