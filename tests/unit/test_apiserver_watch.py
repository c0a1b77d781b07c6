"""Watch semantics of the API server's HTTP side, over plain HTTP on loopback with an SQLite
store (no root): resourceVersion start and replay, bookmarks, 410 Expired for a resourceVersion
older than the server's window, sendInitialEvents, and Table watch rows."""

import asyncio
import json

from aiohttp.test_utils import TestClient, TestServer

from netsim.api.store import open_store
from netsim.apiserver import app as app_mod
from netsim.apiserver import watch


def cm(name: str, colour: str = "blue") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"},
            "data": {"colour": colour}}


async def _lines(resp, n: int | None = None, timeout: float = 10.0) -> list[dict]:
    """Watch events until ``n`` (or the end of the stream), within ``timeout``."""
    out = []

    async def read():
        while n is None or len(out) < n:
            line = await resp.content.readline()
            if not line:
                return
            out.append(json.loads(line))

    await asyncio.wait_for(read(), timeout)
    return out


async def caught_up(client, store) -> None:
    """The server's watch window has every write so far (it follows the store a moment behind)."""
    b = client.server.app[app_mod.BROADCASTER]
    for _ in range(200):
        if b.revision >= store.revision():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the watch window did not catch up with the store in 10s")


def run(tmp_path, body):
    async def main():
        store = open_store(str(tmp_path / "store.db"))
        client = TestClient(TestServer(app_mod.make_app(store, "unit", insecure=True)))
        await client.start_server()
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}
        assert (await client.post("/api/v1/namespaces", json=ns)).status == 201
        assert (await client.post("/api/v1/namespaces/default/configmaps", json=cm("before"))).status == 201
        try:
            await body(client, store)
        finally:
            await client.close()

    asyncio.run(main())


def test_watch_from_a_resource_version_replays_what_followed(tmp_path):
    async def body(client, store):
        r = await client.post("/api/v1/namespaces/default/configmaps", json=cm("a"))
        assert r.status == 201
        rv = (await r.json())["metadata"]["resourceVersion"]
        await client.put("/api/v1/namespaces/default/configmaps/a", json={**cm("a", "red")})
        await client.delete("/api/v1/namespaces/default/configmaps/a")
        resp = await client.get(f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}")
        assert resp.status == 200
        events = await _lines(resp, 2)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("MODIFIED", "a"),
                                                                                ("DELETED", "a")]
        resp.close()
        # Without a resourceVersion: the current state as ADDED, then what follows.
        resp = await client.get("/api/v1/namespaces/default/configmaps?watch=true")
        first = await _lines(resp, 1)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in first] == [("ADDED", "before")]
        await client.post("/api/v1/namespaces/default/configmaps", json=cm("b"))
        (ev,) = await _lines(resp, 1)
        assert (ev["type"], ev["object"]["metadata"]["name"]) == ("ADDED", "b")
        resp.close()

    run(tmp_path, body)


def test_a_resource_version_older_than_the_window_is_an_expired_error_event(tmp_path, monkeypatch):
    monkeypatch.setattr(watch, "WINDOW_EVENTS", 1)  # the window: the newest event only

    async def body(client, store):
        assert (await client.post("/api/v1/namespaces/default/configmaps", json=cm("c"))).status == 201
        await caught_up(client, store)
        resp = await client.get("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=1")
        assert resp.status == 200  # kube-apiserver's cacher: 200, then one ERROR event
        (ev,) = await _lines(resp)
        assert ev["type"] == "ERROR"
        st = ev["object"]
        assert (st["kind"], st["code"], st["reason"]) == ("Status", 410, "Expired")
        assert st["message"].startswith("too old resource version: 1 (")
        resp.close()
        bad = await client.get("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=x")
        assert bad.status == 400 and (await bad.json())["reason"] == "BadRequest"

    run(tmp_path, body)


def test_bookmarks_come_before_the_timeout_and_after_initial_events(tmp_path):
    async def body(client, store):
        listed = await (await client.get("/api/v1/namespaces/default/configmaps")).json()
        rv = listed["metadata"]["resourceVersion"]
        resp = await client.get(f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"
                                "&allowWatchBookmarks=true&timeoutSeconds=3")
        events = await _lines(resp)  # the stream ends at the timeout
        assert [e["type"] for e in events] == ["BOOKMARK"]
        bm = events[0]["object"]
        assert bm["kind"] == "ConfigMap" and int(bm["metadata"]["resourceVersion"]) >= int(rv)
        resp = await client.get("/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true"
                                "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")
        events = await _lines(resp, 2)
        assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
        assert events[1]["object"]["metadata"]["annotations"] == {watch.INITIAL_EVENTS_END: "true"}
        resp.close()

    run(tmp_path, body)


def test_a_table_watch_sends_rows(tmp_path):
    async def body(client, store):
        headers = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
        listed = await (await client.get("/api/v1/namespaces/default/configmaps", headers=headers)).json()
        assert listed["kind"] == "Table"
        rv = listed["metadata"]["resourceVersion"]
        resp = await client.get(f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}",
                                headers=headers)
        await client.delete("/api/v1/namespaces/default/configmaps/before")
        (ev,) = await _lines(resp, 1)
        assert ev["type"] == "DELETED" and ev["object"]["kind"] == "Table"
        assert ev["object"]["rows"][0]["cells"][0] == "before" and ev["object"]["columnDefinitions"]
        await client.post("/api/v1/namespaces/default/configmaps", json=cm("after"))
        (ev,) = await _lines(resp, 1)
        # Column definitions come with the first event only, as kube-apiserver sends them.
        assert ev["type"] == "ADDED" and ev["object"]["rows"][0]["cells"][0] == "after"
        assert ev["object"]["columnDefinitions"] is None
        resp.close()

    run(tmp_path, body)
