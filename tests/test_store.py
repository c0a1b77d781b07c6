"""The control-plane store, through real SQLite files and real processes."""

import multiprocessing
import os
import stat
import threading

import pytest

from netsim.store import AlreadyExists, Conflict, NotFound, SQLiteStore


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "store.db")
    yield s
    s.close()


def pod(name, ns="default", **labels):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels}}


def test_create_get_list_update_delete_round_trip(store):
    created = store.create("/registry/pods/default/a", pod("a", app="web"))
    assert created["metadata"]["resourceVersion"] == "1"
    store.create("/registry/pods/default/b", pod("b"))
    store.create("/registry/pods/kube-system/c", pod("c", "kube-system"))
    assert store.get("/registry/pods/default/a")["metadata"]["labels"] == {"app": "web"}
    items, rev = store.list("/registry/pods/default/")
    assert [i["metadata"]["name"] for i in items] == ["a", "b"] and rev == 3
    updated = store.update("/registry/pods/default/a", pod("a", app="api"))
    assert updated["metadata"]["resourceVersion"] == "4"
    store.delete("/registry/pods/default/a")
    with pytest.raises(NotFound):
        store.get("/registry/pods/default/a")
    with pytest.raises(AlreadyExists):
        store.create("/registry/pods/default/b", pod("b"))
    assert store.revision() == 5


def test_prefixes_are_literal_not_patterns(store):
    store.create("/registry/pods/a_b/x", pod("x", "a_b"))
    store.create("/registry/pods/axb/y", pod("y", "axb"))
    assert [i["metadata"]["name"] for i in store.list("/registry/pods/a_b/")[0]] == ["x"]


def test_optimistic_concurrency_reports_a_conflict(store):
    rev = int(store.create("/k", pod("a"))["metadata"]["resourceVersion"])
    store.update("/k", pod("a", v="1"), expected_revision=rev)
    with pytest.raises(Conflict, match="has been modified"):
        store.update("/k", pod("a", v="2"), expected_revision=rev)
    assert store.get("/k")["metadata"]["labels"] == {"v": "1"}


def test_watch_resumes_from_a_revision_with_nothing_lost_or_reordered(tmp_path, store):
    for i in range(5):
        store.put(f"/registry/pods/default/p{i}", pod(f"p{i}"))
    seen = []
    for event in store.watch("/registry/pods/", after=0, timeout=0.2):
        seen.append(event)
        if len(seen) == 3:
            break
    # A new process opens the same file and resumes after the last revision it saw.
    resumed = SQLiteStore(tmp_path / "store.db")
    store.delete("/registry/pods/default/p0")
    store.put("/registry/pods/default/p1", pod("p1", changed="yes"))
    rest = list(resumed.watch("/registry/pods/", after=seen[-1].revision, timeout=0.2))
    resumed.close()
    revisions = [e.revision for e in seen + rest]
    assert revisions == list(range(1, 8))
    assert [(e.type, e.key.rsplit("/", 1)[1]) for e in rest] == [
        ("ADDED", "p3"), ("ADDED", "p4"), ("DELETED", "p0"), ("MODIFIED", "p1")]


def test_watch_delivers_writes_made_while_it_waits(store):
    got = []
    start = store.revision()

    def watcher():
        for event in store.watch("/registry/", after=start, timeout=2):
            got.append(event)
            if len(got) == 50:
                return

    t = threading.Thread(target=watcher)
    t.start()
    writer = SQLiteStore(store.path)
    for i in range(50):
        writer.put(f"/registry/pods/default/w{i}", pod(f"w{i}"))
    writer.close()
    t.join(timeout=10)
    assert [e.key.rsplit("/", 1)[1] for e in got] == [f"w{i}" for i in range(50)]


def _increment(path, n):
    s = SQLiteStore(path)
    for _ in range(n):
        while True:
            obj = s.get("/counter")
            rev = int(obj["metadata"]["resourceVersion"])
            obj["value"] += 1
            try:
                s.update("/counter", obj, expected_revision=rev)
                break
            except Conflict:
                continue
    s.close()


def test_concurrent_writers_in_separate_processes_lose_no_update(store):
    store.create("/counter", {"metadata": {"name": "counter"}, "value": 0})
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_increment, args=(store.path, 40)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert store.get("/counter")["value"] == 160


def test_the_store_file_is_readable_by_root_only(store):
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
