"""The store's contract (:class:`Store`), its errors and its events: what every backend and
every caller shares."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class StoreError(Exception):
    pass


class NotFound(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


class Conflict(StoreError):
    """The object changed since the revision the writer read (optimistic concurrency)."""


class Compacted(StoreError):
    """The revision a watch asked to resume from is no longer kept; list again and watch from
    the list's revision.  etcd compacts its history; SQLite keeps all of it and never raises this."""


@dataclass(frozen=True)
class Event:
    type: str  # ADDED, MODIFIED or DELETED
    key: str
    object: dict
    revision: int


@runtime_checkable
class Store(Protocol):
    """Objects are dicts whose ``metadata.resourceVersion`` is the revision of their last write."""

    def close(self) -> None: ...

    def revision(self) -> int:
        """The newest revision of the whole store."""
        ...

    def get(self, key: str) -> dict:
        """The object at key; NotFound when there is none."""
        ...

    def list(self, prefix: str) -> tuple[list[dict], int]:
        """Every object under prefix, by key, and the revision they were read at."""
        ...

    def latest_revision(self, prefix: str) -> int:
        """The revision of the newest write (deletions included) under prefix."""
        ...

    def create(self, key: str, obj: dict) -> dict:
        """AlreadyExists when key holds an object."""
        ...

    def update(self, key: str, obj: dict, expected_revision: int | None = None) -> dict:
        """NotFound when key holds nothing; Conflict when its revision is not expected_revision."""
        ...

    def put(self, key: str, obj: dict) -> dict:
        """Create or overwrite, whatever the revision."""
        ...

    def delete(self, key: str, expected_revision: int | None = None) -> dict:
        """The object as it was; NotFound, or Conflict as update."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """How many objects were deleted."""
        ...

    def events(self, prefix: str, after: int, limit: int = 1000) -> list[Event]:
        """Up to limit events under prefix with a revision above after, oldest first."""
        ...

    def watch(self, prefix: str, after: int, timeout: float | None = None) -> Iterator[Event]:
        """Events under prefix from revision after on, as they happen; ends after timeout
        seconds without one (never when None).  Compacted when after is too old."""
        ...
