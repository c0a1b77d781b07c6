"""The control-plane store, through real SQLite files, a real etcd and real processes.

Every test runs against both backends.  The etcd tests share one etcd (started once per run)
and keep apart by key prefix; etcd's revisions are global, so assertions are relative to the
revision a test starts at.
"""

import itertools
import json
import multiprocessing
import os
import socket
import stat
import subprocess
import sys
import threading
import urllib.request
import uuid

import pytest

from netsim.api.store import AlreadyExists, Compacted, Conflict, NotFound, open_store
from netsim.api.store.etcd import EtcdStore, StoreUnavailable
from netsim.api.store.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite", "etcd"])
def store_url(request, tmp_path):
    """A URL for open_store, so that a test can open the same data again, as another process would."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'store.db'}"
    endpoint = request.getfixturevalue("etcd_url")
    return f"etcd://{endpoint.removeprefix('http://')}/test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def pod(name, ns="default", **labels):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels}}


def rv(obj) -> int:
    return int(obj["metadata"]["resourceVersion"])


def names(items):
    return [i["metadata"]["name"] for i in items]


def test_create_get_list_update_delete_round_trip(store):
    base = store.revision()
    created = store.create("/registry/pods/default/a", pod("a", app="web"))
    assert rv(created) == base + 1
    store.create("/registry/pods/default/b", pod("b"))
    store.create("/registry/pods/kube-system/c", pod("c", "kube-system"))
    got = store.get("/registry/pods/default/a")
    assert got["metadata"]["labels"] == {"app": "web"} and rv(got) == base + 1
    items, rev = store.list("/registry/pods/default/")
    assert names(items) == ["a", "b"] and rev == base + 3
    assert [rv(i) for i in items] == [base + 1, base + 2]
    updated = store.update("/registry/pods/default/a", pod("a", app="api"))
    assert rv(updated) == base + 4 and rv(store.get("/registry/pods/default/a")) == base + 4
    deleted = store.delete("/registry/pods/default/a")
    assert deleted["metadata"]["labels"] == {"app": "api"} and rv(deleted) == base + 5
    with pytest.raises(NotFound):
        store.get("/registry/pods/default/a")
    with pytest.raises(AlreadyExists):
        store.create("/registry/pods/default/b", pod("b"))
    assert store.revision() == base + 5


def test_prefixes_are_literal_not_patterns(store):
    store.create("/registry/pods/a_b/x", pod("x", "a_b"))
    store.create("/registry/pods/axb/y", pod("y", "axb"))
    assert names(store.list("/registry/pods/a_b/")[0]) == ["x"]


def test_optimistic_concurrency_reports_a_conflict(store):
    rev = rv(store.create("/k", pod("a")))
    store.update("/k", pod("a", v="1"), expected_revision=rev)
    with pytest.raises(Conflict, match="has been modified"):
        store.update("/k", pod("a", v="2"), expected_revision=rev)
    with pytest.raises(Conflict, match="has been modified"):
        store.delete("/k", expected_revision=rev)
    assert store.get("/k")["metadata"]["labels"] == {"v": "1"}


def test_update_and_delete_of_a_missing_object_are_not_found(store):
    for expected in (None, 1):
        with pytest.raises(NotFound):
            store.update("/missing", pod("m"), expected_revision=expected)
        with pytest.raises(NotFound):
            store.delete("/missing", expected_revision=expected)
    assert store.list("/")[0] == []


def test_watch_resumes_from_a_revision_with_nothing_lost_or_reordered(store, store_url):
    base = store.revision()
    for i in range(5):
        store.put(f"/registry/pods/default/p{i}", pod(f"p{i}"))
    seen = []
    for event in store.watch("/registry/pods/", after=base, timeout=10):
        seen.append(event)
        if len(seen) == 3:
            break
    # Another store on the same data, as a new process would open it, resumes after the last
    # revision the first one saw.
    resumed = open_store(store_url)
    try:
        store.delete("/registry/pods/default/p0")
        store.put("/registry/pods/default/p1", pod("p1", changed="yes"))
        rest = list(itertools.islice(resumed.watch("/registry/pods/", after=seen[-1].revision, timeout=10), 4))
        # Silence, not a deadline, ends this one: a slow backend can only make it pass sooner.
        extra = list(resumed.watch("/registry/pods/", after=rest[-1].revision, timeout=0.3))
    finally:
        resumed.close()
    assert [e.revision for e in seen + rest] == list(range(base + 1, base + 8))
    assert [(e.type, e.key.rsplit("/", 1)[1]) for e in rest] == [
        ("ADDED", "p3"), ("ADDED", "p4"), ("DELETED", "p0"), ("MODIFIED", "p1")]
    gone = rest[2]
    assert gone.object["metadata"]["name"] == "p0" and rv(gone.object) == gone.revision
    assert all(rv(e.object) == e.revision for e in seen + rest)
    assert extra == []


def test_watch_delivers_writes_made_while_it_waits(store, store_url):
    got = []
    start = store.revision()

    def watcher():
        for event in store.watch("/registry/", after=start, timeout=10):
            got.append(event)
            if len(got) == 50:
                return

    t = threading.Thread(target=watcher)
    t.start()
    writer = open_store(store_url)
    try:
        for i in range(50):
            writer.put(f"/registry/pods/default/w{i}", pod(f"w{i}"))
    finally:
        writer.close()
        t.join(timeout=30)
    assert [e.key.rsplit("/", 1)[1] for e in got] == [f"w{i}" for i in range(50)]


def test_events_are_what_happened_under_a_prefix_after_a_revision(store):
    base = store.revision()
    store.create("/registry/pods/default/a", pod("a"))
    store.create("/registry/services/default/s", pod("s"))
    store.update("/registry/pods/default/a", pod("a", v="2"))
    store.delete("/registry/pods/default/a")
    events = store.events("/registry/pods/", after=base)
    assert [(e.type, e.revision) for e in events] == [("ADDED", base + 1), ("MODIFIED", base + 3),
                                                      ("DELETED", base + 4)]
    assert store.events("/registry/pods/", after=base, limit=2) == events[:2]
    assert store.events("/registry/pods/", after=base + 1) == events[1:]
    assert store.events("/registry/pods/", after=store.revision()) == []
    # Writes elsewhere only: nothing under this prefix.
    store.put("/registry/services/default/s", pod("s", v="2"))
    assert store.events("/registry/pods/", after=base + 4) == []


def _increment(url, n):
    s = open_store(url)
    try:
        for _ in range(n):
            for _attempt in range(10_000):
                obj = s.get("/counter")
                obj["value"] += 1
                try:
                    s.update("/counter", obj, expected_revision=rv(obj))
                    break
                except Conflict:
                    continue
            else:
                raise RuntimeError("no update got through in 10000 attempts")
    finally:
        s.close()


def test_concurrent_writers_in_separate_processes_lose_no_update(store, store_url):
    store.create("/counter", {"metadata": {"name": "counter"}, "value": 0})
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_increment, args=(store_url, 40)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=120)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert store.get("/counter")["value"] == 160


def test_threads_sharing_one_store_lose_no_update(store):
    """One store object, several threads: no thread's statements land in another's transaction."""
    store.create("/counter", {"metadata": {"name": "counter"}, "value": 0})
    errors = []

    def increment():
        try:
            for _ in range(25):
                for _attempt in range(10_000):
                    obj = store.get("/counter")
                    obj["value"] += 1
                    try:
                        store.update("/counter", obj, expected_revision=rv(obj))
                        break
                    except Conflict:
                        continue
        except Exception as err:  # reported by the assertion below, not lost in the thread
            errors.append(err)

    threads = [threading.Thread(target=increment) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert store.get("/counter")["value"] == 100


def test_latest_revision_is_the_newest_write_under_a_prefix(store):
    assert store.latest_revision("/registry/pods/") == 0
    store.create("/registry/pods/default/a", pod("a"))
    b = rv(store.create("/registry/pods/default/b", pod("b")))
    store.create("/registry/services/default/s", pod("s"))
    assert store.latest_revision("/registry/pods/") == b
    a = rv(store.update("/registry/pods/default/a", pod("a", v="2")))
    assert store.latest_revision("/registry/pods/") == a
    gone = rv(store.delete("/registry/pods/default/a"))
    # SQLite keeps a log of every write; etcd can only range over what is still there.
    expected = gone if isinstance(store, SQLiteStore) else b
    assert store.latest_revision("/registry/pods/") == expected


def test_delete_prefix_deletes_every_object_under_it_each_with_an_event(store):
    for n in ("a", "b", "c"):
        store.create(f"/registry/pods/default/{n}", pod(n))
    store.create("/registry/pods/default-x/z", pod("z", "default-x"))
    mark = store.revision()
    assert store.delete_prefix("/registry/pods/default/") == 3
    assert names(store.list("/registry/pods/")[0]) == ["z"]
    events = list(itertools.islice(store.watch("/registry/pods/", after=mark, timeout=10), 3))
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [
        ("DELETED", "a"), ("DELETED", "b"), ("DELETED", "c")]
    assert [e.revision for e in events] == [mark + 1, mark + 2, mark + 3]
    assert all(rv(e.object) == e.revision for e in events)
    assert store.delete_prefix("/registry/pods/default/") == 0


def _compact(endpoint: str, revision: int) -> None:
    req = urllib.request.Request(f"{endpoint}/v3/kv/compaction", data=json.dumps({"revision": revision}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def test_a_watch_from_a_compacted_revision_raises_compacted(store):
    if isinstance(store, SQLiteStore):
        pytest.skip("SQLite keeps its whole history")
    base = store.revision()
    for i in range(3):
        store.put(f"/k{i}", pod(f"k{i}"))
    _compact(store.endpoint, store.revision())
    with pytest.raises(Compacted):
        next(store.watch("/", after=base, timeout=10))
    with pytest.raises(Compacted):
        store.events("/", after=base)
    # The way back: list, then watch from the list's revision.
    items, rev = store.list("/")
    assert names(items) == ["k0", "k1", "k2"]
    store.put("/k0", pod("k0", v="2"))
    assert [(e.type, e.key) for e in itertools.islice(store.watch("/", after=rev, timeout=10), 1)] == [
        ("MODIFIED", "/k0")]


def test_the_store_file_is_readable_by_root_only(tmp_path):
    s = SQLiteStore(tmp_path / "store.db")
    s.close()
    assert stat.S_IMODE(os.stat(s.path).st_mode) == 0o600


def test_open_store_reads_the_backend_from_the_url(tmp_path):
    for url in (f"sqlite://{tmp_path}/a.db", str(tmp_path / "b.db")):
        s = open_store(url)
        s.close()
        assert isinstance(s, SQLiteStore) and s.path.parent == tmp_path
    s = open_store("etcd://127.0.0.1:2379/netsim/c1")
    assert isinstance(s, EtcdStore) and (s.endpoint, s.prefix) == ("http://127.0.0.1:2379", "/netsim/c1")
    assert open_store("etcd://127.0.0.1:2379").prefix == ""
    with pytest.raises(ValueError, match="unknown store"):
        open_store("mysql://db/netsim")


def test_an_unreachable_etcd_is_named_in_the_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = open_store(f"etcd://127.0.0.1:{port}/x")
    with pytest.raises(StoreUnavailable, match=f"etcd at http://127.0.0.1:{port} cannot be reached"):
        s.get("/a")
    s.close()


def test_a_second_store_in_a_process_keeps_the_first_ones_writes_visible(tmp_path):
    # Closing any descriptor of the file drops the process's POSIX locks on it; another process
    # closing its connection then thinks it is the last user and deletes the WAL, and later
    # writes of the first store vanish into the deleted file.
    path = tmp_path / "store.db"
    first = SQLiteStore(path)
    first.put("/a", pod("a"))
    second = SQLiteStore(path)
    subprocess.run([sys.executable, "-c", f"import sqlite3; sqlite3.connect({str(path)!r}).execute("
                    "'select count(*) from kv').fetchall()"], check=True, timeout=30)
    first.put("/b", pod("b"))
    fresh = SQLiteStore(path)
    assert [i["metadata"]["name"] for i in fresh.list("/")[0]] == ["a", "b"]
    for s in (first, second, fresh):
        s.close()
