"""The control-plane store on etcd: the same API and semantics as SQLiteStore (netsim/api/store/sqlite.py).

It talks to etcd 3.4's v3 JSON gateway (``POST /v3/kv/range``, ``/v3/kv/txn``, ``/v3/watch``,
keys and values in base64) with the standard library's http.client: no grpc or protobuf
packages to pin against the rest of the environment.

Revisions are etcd's: an object's resourceVersion is its key's mod_revision, the store's
revision is the header revision.  Every key a caller passes is relative and gets ``prefix`` in
front on the wire, so several clusters (or tests) can share one etcd.

Where etcd differs from SQLite:

* revisions are global to the etcd, not to the prefix: another cluster's writes advance them,
  and an empty etcd is at revision 1, not 0;
* ``latest_revision`` cannot see deletes (a deleted key leaves nothing to range over): after
  deleting the newest object under a prefix it is the revision of the newest survivor;
* ``delete_prefix`` deletes key by key, each at its own revision like SQLite's, but not in one
  transaction: a key created under the prefix meanwhile may survive it;
* etcd compacts its history: resuming a watch from a compacted revision raises Compacted;
* ``events`` on a prefix with no puts since ``after`` waits ``replay_wait`` seconds (see there).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from netsim.api.store.base import AlreadyExists, Compacted, Conflict, Event, NotFound, StoreError


class StoreUnavailable(StoreError):
    """etcd did not answer (not running, wrong address, or it dropped the connection)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _range_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (etcd's range_end)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"  # etcd's "every key >= key"
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _stamp(value: bytes, rev: int) -> dict:
    obj = json.loads(value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(rev)
    return obj


def _encode(obj: dict) -> str:
    # The revision lives in etcd's mod_revision; a copy in the value would be stale after the write.
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
    return _b64(json.dumps({**obj, "metadata": meta}, separators=(",", ":")).encode())


class EtcdStore:
    # etcd replays history to a watch from a background loop that runs every 100 ms and says
    # nothing when there was nothing to replay; events() waits this long for that silence.
    replay_wait = 0.5

    def __init__(self, endpoint: str, prefix: str = "", timeout: float = 10):
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"{endpoint}: expected http://HOST:PORT")
        self.endpoint = endpoint
        self.prefix = prefix
        self.timeout = timeout
        self._host, self._port = parts.hostname, parts.port
        self._raw_prefix = prefix.encode()
        # http.client connections are not thread-safe: one keep-alive connection per thread.
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._all_lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        self._closed = True
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    # -- wire -------------------------------------------------------------------------------
    def _key(self, key: str) -> bytes:
        return self._raw_prefix + key.encode()

    def _unkey(self, raw: str) -> str:
        return _unb64(raw)[len(self._raw_prefix):].decode()

    def _range(self, prefix: str) -> dict:
        start = self._key(prefix)
        return {"key": _b64(start or b"\0"), "range_end": _b64(_range_end(start))}

    def _unavailable(self, what: str, err: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"etcd at {self.endpoint} {what}: {err}")

    def _call(self, path: str, body: dict) -> dict:
        data = json.dumps(body).encode()
        for _ in range(2):
            conn = getattr(self._local, "conn", None)
            reused = conn is not None
            if conn is None:
                if self._closed:
                    raise StoreError(f"etcd at {self.endpoint}: the store has been closed")
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
                self._local.conn = conn
                with self._all_lock:
                    self._all.append(conn)
            try:
                conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                payload = resp.read()
            except (ConnectionResetError, BrokenPipeError) as err:
                self._drop(conn)
                # A kept-alive connection that etcd has since closed fails before etcd reads the
                # request: retry once on a new one.  (An etcd dying mid-request looks the same; a
                # create retried then reports AlreadyExists.)  A new connection failing this way
                # is etcd going away.
                if reused:
                    continue
                raise self._unavailable("dropped the connection", err) from err
            except TimeoutError as err:
                self._drop(conn)
                raise self._unavailable(f"did not answer within {self.timeout} s", err) from err
            except (OSError, http.client.HTTPException) as err:
                self._drop(conn)
                raise self._unavailable("cannot be reached", err) from err
            if resp.status != 200:
                raise StoreError(f"etcd at {self.endpoint}{path}: HTTP {resp.status}: {payload[:500]!r}")
            return json.loads(payload)
        raise AssertionError("unreachable")  # the second attempt returns or raises

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._all_lock, contextlib.suppress(ValueError):
            self._all.remove(conn)

    def _txn(self, compare: list[dict], success: list[dict], failure: list[dict]) -> dict:
        return self._call("/v3/kv/txn", {"compare": compare, "success": success, "failure": failure})

    def _conflict(self, key: str, failure: dict, expected_revision: int | None) -> StoreError:
        """What a txn that failed its compare means: the key is gone, or it moved on."""
        kvs = failure["responses"][0]["response_range"].get("kvs", [])
        if not kvs:
            return NotFound(key)
        current = int(kvs[0]["mod_revision"])
        return Conflict(f"{key}: the object has been modified (resourceVersion {current}, "
                        f"you had {expected_revision}); read it again and retry")

    def _guard(self, key: str, expected_revision: int | None) -> dict:
        """The txn compare for "exists, and is at expected_revision if one is given"."""
        k = _b64(self._key(key))
        if expected_revision is None:
            return {"target": "CREATE", "key": k, "result": "GREATER", "create_revision": "0"}
        return {"target": "MOD", "key": k, "result": "EQUAL", "mod_revision": str(expected_revision)}

    # -- reads ------------------------------------------------------------------------------
    def revision(self) -> int:
        resp = self._call("/v3/kv/range", {"key": _b64(self._key("") or b"\0"), "count_only": True})
        return int(resp["header"]["revision"])

    def get(self, key: str) -> dict:
        resp = self._call("/v3/kv/range", {"key": _b64(self._key(key))})
        kvs = resp.get("kvs")
        if not kvs:
            raise NotFound(key)
        return _stamp(_unb64(kvs[0]["value"]), int(kvs[0]["mod_revision"]))

    def list(self, prefix: str) -> tuple[list[dict], int]:
        """Objects under ``prefix``, by key, and the revision they are consistent at."""
        resp = self._call("/v3/kv/range", self._range(prefix))
        items = [_stamp(_unb64(kv["value"]), int(kv["mod_revision"])) for kv in resp.get("kvs", [])]
        return items, int(resp["header"]["revision"])

    def _newest(self, prefix: str) -> tuple[int, int]:
        """(highest mod_revision of a live key under prefix or 0, etcd's current revision)."""
        resp = self._call("/v3/kv/range", {**self._range(prefix), "limit": 1, "keys_only": True,
                                           "sort_order": "DESCEND", "sort_target": "MOD"})
        kvs = resp.get("kvs", [])
        return (int(kvs[0]["mod_revision"]) if kvs else 0), int(resp["header"]["revision"])

    def latest_revision(self, prefix: str) -> int:
        """The revision of the newest object under ``prefix``, 0 if none.  Unlike SQLite's, deletes
        do not count: etcd keeps no trace of a deleted key outside its history."""
        return self._newest(prefix)[0]

    # -- writes -----------------------------------------------------------------------------
    def create(self, key: str, obj: dict) -> dict:
        k = _b64(self._key(key))
        value = _encode(obj)
        resp = self._txn([{"target": "CREATE", "key": k, "result": "EQUAL", "create_revision": "0"}],
                         [{"request_put": {"key": k, "value": value}}], [])
        if not resp.get("succeeded"):
            raise AlreadyExists(key)
        return _stamp(_unb64(value), int(resp["header"]["revision"]))

    def update(self, key: str, obj: dict, expected_revision: int | None = None) -> dict:
        """Replace an object; with ``expected_revision``, only if it is still at that revision."""
        k = _b64(self._key(key))
        value = _encode(obj)
        resp = self._txn([self._guard(key, expected_revision)], [{"request_put": {"key": k, "value": value}}],
                         [{"request_range": {"key": k, "keys_only": True}}])
        if not resp.get("succeeded"):
            raise self._conflict(key, resp, expected_revision)
        return _stamp(_unb64(value), int(resp["header"]["revision"]))

    def put(self, key: str, obj: dict) -> dict:
        """Create or replace, whatever is there."""
        value = _encode(obj)
        resp = self._call("/v3/kv/put", {"key": _b64(self._key(key)), "value": value})
        return _stamp(_unb64(value), int(resp["header"]["revision"]))

    def delete(self, key: str, expected_revision: int | None = None) -> dict:
        k = _b64(self._key(key))
        resp = self._txn([self._guard(key, expected_revision)],
                         [{"request_delete_range": {"key": k, "prev_kv": True}}],
                         [{"request_range": {"key": k, "keys_only": True}}])
        if not resp.get("succeeded"):
            raise self._conflict(key, resp, expected_revision)
        prev = resp["responses"][0]["response_delete_range"]["prev_kvs"][0]
        return _stamp(_unb64(prev["value"]), int(resp["header"]["revision"]))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; the number deleted.  Key by key, so that each
        DELETED event has its own revision and a watcher resuming from one misses none."""
        resp = self._call("/v3/kv/range", {**self._range(prefix), "keys_only": True})
        deleted = 0
        for kv in resp.get("kvs", []):
            gone = self._call("/v3/kv/deleterange", {"key": kv["key"]})
            deleted += int(gone.get("deleted", 0))
        return deleted

    # -- watch ------------------------------------------------------------------------------
    def _event(self, ev: dict) -> Event:
        kv = ev["kv"]
        key, rev = self._unkey(kv["key"]), int(kv["mod_revision"])
        if ev.get("type") == "DELETE":
            prev = ev.get("prev_kv")
            # etcd omits prev_kv when that revision has been compacted away.
            obj = _stamp(_unb64(prev["value"]), rev) if prev else {"metadata": {"resourceVersion": str(rev)}}
            return Event("DELETED", key, obj, rev)
        kind = "ADDED" if kv["create_revision"] == kv["mod_revision"] else "MODIFIED"
        return Event(kind, key, _stamp(_unb64(kv["value"]), rev), rev)

    def _responses(self, prefix: str, after: int, idle: float | None) -> Iterator[list[Event]]:
        """The event batches of one etcd watch from ``after + 1``, until ``idle`` seconds pass
        without a batch (None: never)."""
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        resp = None
        try:
            body = {"create_request": {**self._range(prefix), "start_revision": str(after + 1), "prev_kv": True}}
            try:
                conn.request("POST", "/v3/watch", body=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})
                # Kept before getresponse(), which forgets it if the server says it will close.
                sock = conn.sock
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as err:
                raise self._unavailable("cannot be reached", err) from err
            if resp.status != 200:
                raise StoreError(f"etcd at {self.endpoint}/v3/watch: HTTP {resp.status}: {resp.read(500)!r}")
            # A watch can be silent for hours; keepalive notices an etcd that vanished meanwhile.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            quiet_until = None if idle is None else time.monotonic() + idle
            while True:
                wait = None if quiet_until is None else quiet_until - time.monotonic()
                if wait is not None and wait <= 0:
                    return
                sock.settimeout(wait)
                try:
                    # The gateway streams one JSON document per line, in HTTP chunks.
                    line = resp.readline()
                except TimeoutError:
                    return
                except (OSError, http.client.HTTPException) as err:
                    raise self._unavailable("broke the watch stream", err) from err
                if not line:
                    raise StoreUnavailable(f"etcd at {self.endpoint} closed the watch stream")
                msg = json.loads(line)
                if "error" in msg:
                    raise StoreError(f"etcd at {self.endpoint}/v3/watch: {msg['error']}")
                result = msg["result"]
                if int(result.get("compact_revision", 0)):
                    raise Compacted(f"{prefix!r} from revision {after + 1}: etcd has compacted its history "
                                    f"up to revision {result['compact_revision']}; list again")
                if result.get("canceled"):
                    raise StoreError(f"etcd at {self.endpoint} cancelled the watch: {result.get('cancel_reason')}")
                events = [self._event(ev) for ev in result.get("events", [])]
                if events:
                    yield events
                    # Like SQLite's watch: the silence counts from when the consumer is back.
                    if quiet_until is not None:
                        quiet_until = time.monotonic() + idle
        finally:
            if resp is not None:
                resp.close()
            conn.close()

    def events(self, prefix: str, after: int, limit: int = 1000) -> list[Event]:
        """Events under ``prefix`` with revision > ``after``, oldest first; may stop short (never
        with a gap) at ``limit`` or at the end of what etcd replayed in one pass."""
        newest, current = self._newest(prefix)
        if current <= after:
            return []
        # etcd replays a watch's history in one response (up to 1000 revisions).  A put since
        # ``after`` is certain to be in it, so wait for it; with none, only deletes may be there,
        # and when there are none etcd sends nothing, so stop after a silence.
        idle = self.timeout if newest > after else self.replay_wait
        for batch in self._responses(prefix, after, idle):
            return batch[:limit]
        return []

    def watch(self, prefix: str, after: int, timeout: float | None = None) -> Iterator[Event]:
        """Every event under ``prefix`` after revision ``after``, in order, as it happens.
        Resumable: pass the last revision seen.  Ends after ``timeout`` seconds without one."""
        for batch in self._responses(prefix, after, timeout):
            yield from batch
