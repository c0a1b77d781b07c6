"""The control-plane store's embedded backend (netsim.api.store.Store): SQLite in WAL mode in
the cluster's state directory, no server to start (k3s does the same with kine).  Readers and
writers may be separate processes."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from netsim.api.store.base import AlreadyExists, Conflict, Event, NotFound, StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key ON log (key);
"""


def _prefix_range(prefix: str) -> tuple[str, str]:
    """Keys k with prefix <= k < end: an index range, unlike LIKE, which treats _ and % as
    wildcards."""
    return prefix, prefix + "\U0010ffff"


class SQLiteStore:
    def __init__(self, path: str | Path, poll_interval: float = 0.01):
        self.path = Path(path)
        self.poll_interval = poll_interval
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The store holds whatever users applied; root-only, like etcd's data dir.
        # Create it only if absent: closing any descriptor of the file drops every POSIX lock
        # this process holds on it, including the one by which another SQLiteStore here tells
        # other processes the database is in use (they would then delete its WAL under us).
        if not self.path.exists():
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        # One connection per thread: a connection is one transaction at a time, so a shared one
        # would let another thread's statements land inside this thread's BEGIN IMMEDIATE.
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False
        db = self._db()
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            if self._closed:
                raise StoreError(f"{self.path}: the store has been closed")
            # check_same_thread=False only so that close() can close every thread's connection.
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA synchronous=NORMAL")  # per connection, unlike journal_mode
            self._local.db = db
            with self._all_lock:
                self._all.append(db)
        return db

    def close(self) -> None:
        self._closed = True
        with self._all_lock:
            dbs, self._all = self._all, []
        for db in dbs:
            db.close()
        self._local = threading.local()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front: the check and the write of an
        # optimistic-concurrency update cannot interleave with another writer.
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @staticmethod
    def _stamp(obj: dict, rev: int) -> dict:
        obj = json.loads(json.dumps(obj))
        obj.setdefault("metadata", {})["resourceVersion"] = str(rev)
        return obj

    def _append(self, db: sqlite3.Connection, key: str, event_type: str, obj: dict) -> tuple[int, dict]:
        cur = db.execute("INSERT INTO log (key, type, value) VALUES (?, ?, '')", (key, event_type))
        rev = cur.lastrowid
        stamped = self._stamp(obj, rev)
        value = json.dumps(stamped, separators=(",", ":"))
        db.execute("UPDATE log SET value = ? WHERE rev = ?", (value, rev))
        return rev, stamped

    # -- reads ------------------------------------------------------------------------------
    def revision(self) -> int:
        row = self._db().execute("SELECT seq FROM sqlite_sequence WHERE name = 'log'").fetchone()
        return row[0] if row else 0

    def get(self, key: str) -> dict:
        row = self._db().execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise NotFound(key)
        return json.loads(row[0])

    def list(self, prefix: str) -> tuple[list[dict], int]:
        """Objects under ``prefix`` and the revision they are consistent at."""
        rows, rev = self.list_json(prefix)
        return [json.loads(v) for _, v in rows], rev

    def list_json(self, prefix: str) -> tuple[list[tuple[str, str]], int]:
        """As :meth:`list`, each object as its key and the JSON text it is stored as (with its
        resourceVersion): for a caller that only passes the objects on, as the API server's
        LIST does, decoding and encoding them again is most of the work."""
        lo, hi = _prefix_range(prefix)
        db = self._db()
        db.execute("BEGIN")
        try:
            rows = db.execute("SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key", (lo, hi)).fetchall()
            rev = self.revision()
        finally:
            db.execute("COMMIT")
        return rows, rev

    def latest_revision(self, prefix: str) -> int:
        """The revision of the newest write under ``prefix``, deletes included; 0 if none."""
        lo, hi = _prefix_range(prefix)
        row = self._db().execute("SELECT MAX(rev) FROM log WHERE key >= ? AND key < ?", (lo, hi)).fetchone()
        return row[0] or 0

    # -- writes -----------------------------------------------------------------------------
    @staticmethod
    def _current(db: sqlite3.Connection, key: str, expected_revision: int | None) -> dict:
        """The stored object, checked against the revision the writer read, if it gave one."""
        row = db.execute("SELECT value, mod_rev FROM kv WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise NotFound(key)
        if expected_revision is not None and row[1] != expected_revision:
            raise Conflict(f"{key}: the object has been modified (resourceVersion {row[1]}, "
                           f"you had {expected_revision}); read it again and retry")
        return json.loads(row[0])

    def create(self, key: str, obj: dict) -> dict:
        with self._write() as db:
            if db.execute("SELECT 1 FROM kv WHERE key = ?", (key,)).fetchone():
                raise AlreadyExists(key)
            rev, stamped = self._append(db, key, "ADDED", obj)
            db.execute("INSERT INTO kv (key, value, create_rev, mod_rev) VALUES (?, ?, ?, ?)",
                       (key, json.dumps(stamped, separators=(",", ":")), rev, rev))
        return stamped

    def update(self, key: str, obj: dict, expected_revision: int | None = None) -> dict:
        """Replace an object; with ``expected_revision``, only if it is still at that revision."""
        with self._write() as db:
            self._current(db, key, expected_revision)
            rev, stamped = self._append(db, key, "MODIFIED", obj)
            db.execute("UPDATE kv SET value = ?, mod_rev = ? WHERE key = ?",
                       (json.dumps(stamped, separators=(",", ":")), rev, key))
        return stamped

    def put(self, key: str, obj: dict) -> dict:
        """Create or replace, whatever is there."""
        with self._write() as db:
            exists = db.execute("SELECT 1 FROM kv WHERE key = ?", (key,)).fetchone() is not None
            rev, stamped = self._append(db, key, "MODIFIED" if exists else "ADDED", obj)
            db.execute("INSERT INTO kv (key, value, create_rev, mod_rev) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev",
                       (key, json.dumps(stamped, separators=(",", ":")), rev, rev))
        return stamped

    def delete(self, key: str, expected_revision: int | None = None) -> dict:
        with self._write() as db:
            current = self._current(db, key, expected_revision)
            _, stamped = self._append(db, key, "DELETED", current)
            db.execute("DELETE FROM kv WHERE key = ?", (key,))
        return stamped

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (one transaction, one revision and DELETED event
        per key); the number deleted."""
        lo, hi = _prefix_range(prefix)
        with self._write() as db:
            rows = db.execute("SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key", (lo, hi)).fetchall()
            for key, value in rows:
                self._append(db, key, "DELETED", json.loads(value))
            db.execute("DELETE FROM kv WHERE key >= ? AND key < ?", (lo, hi))
        return len(rows)

    # -- watch ------------------------------------------------------------------------------
    def events(self, prefix: str, after: int, limit: int = 1000) -> list[Event]:
        """Events under ``prefix`` with revision > ``after``, oldest first."""
        lo, hi = _prefix_range(prefix)
        rows = self._db().execute(
            "SELECT rev, key, type, value FROM log WHERE rev > ? AND key >= ? AND key < ? ORDER BY rev LIMIT ?",
            (after, lo, hi, limit))
        return [Event(t, k, json.loads(v), r) for r, k, t, v in rows]

    def watch(self, prefix: str, after: int, timeout: float | None = None) -> Iterator[Event]:
        """Every event under ``prefix`` after revision ``after``, in order, as it happens.
        Resumable: pass the last revision seen.  Ends after ``timeout`` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            batch = self.events(prefix, after)
            for event in batch:
                after = event.revision
                yield event
            if batch:
                if deadline is not None:
                    deadline = time.monotonic() + timeout
                continue
            time.sleep(self.poll_interval)
