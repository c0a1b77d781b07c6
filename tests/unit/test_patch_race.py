"""A PATCH racing another writer (the API server's patcher, netsim.apiserver.resources.patch) on
a real SQLite store: a patch that does not name a resourceVersion is applied again to the fresh
object, as kube-apiserver's patcher retries on a conflict; one that names a stale
resourceVersion gets the 409 Conflict."""

from __future__ import annotations

import json

import pytest

from netsim.api import registry
from netsim.api.store import open_store
from netsim.apiserver import resources
from netsim.apiserver.status import StatusError
from netsim.model import k8s

MERGE = "application/merge-patch+json"


class RacingStore:
    """The store, with another writer (a controller writing status) getting in between the
    patcher's read and its write ``races`` times."""

    def __init__(self, store, races: int):
        self.store, self.races = store, races

    def __getattr__(self, name):
        return getattr(self.store, name)

    def get(self, key: str) -> dict:
        obj = self.store.get(key)
        if self.races > 0 and "/configmaps/" in key:
            self.races -= 1
            other = json.loads(json.dumps(obj))
            other.setdefault("metadata", {}).setdefault("annotations", {})["other-writer"] = str(self.races)
            self.store.update(key, other)
        return obj


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite://{tmp_path}/store.db")
    registry.bootstrap(s, registry.read_config(s))
    t = resources.resolve("", "v1", ["namespaces", "default", "configmaps"])
    resources.create(s, t, {"metadata": {"name": "cm"}, "data": {"a": "1"}}, {}, "test")
    yield s
    s.close()


def test_a_patch_without_resource_version_is_applied_to_the_fresh_object(store):
    racing = RacingStore(store, races=3)
    t = resources.resolve("", "v1", ["namespaces", "default", "configmaps", "cm"])
    out = resources.patch(racing, t, b'{"data": {"b": "2"}}', MERGE, {}, "2026-12-05T00:00:00Z")
    assert out["data"] == {"a": "1", "b": "2"}
    assert racing.races == 0
    stored = store.get(k8s.key("ConfigMap", "default", "cm"))
    assert stored["data"] == {"a": "1", "b": "2"} and stored["metadata"]["annotations"]["other-writer"] == "0"


def test_a_patch_naming_a_stale_resource_version_is_a_conflict(store):
    rv = store.get(k8s.key("ConfigMap", "default", "cm"))["metadata"]["resourceVersion"]
    racing = RacingStore(store, races=1)
    t = resources.resolve("", "v1", ["namespaces", "default", "configmaps", "cm"])
    body = json.dumps({"metadata": {"resourceVersion": rv}, "data": {"b": "2"}}).encode()
    with pytest.raises(StatusError) as exc:
        resources.patch(racing, t, body, MERGE, {}, "2026-12-05T00:00:00Z")
    assert exc.value.code == 409 and exc.value.reason == "Conflict"
    assert "b" not in store.get(k8s.key("ConfigMap", "default", "cm"))["data"]


def test_a_patch_losing_every_race_gives_up_with_the_conflict(store):
    racing = RacingStore(store, races=1000)
    t = resources.resolve("", "v1", ["namespaces", "default", "configmaps", "cm"])
    with pytest.raises(StatusError) as exc:
        resources.patch(racing, t, b'{"data": {"b": "2"}}', MERGE, {}, "2026-12-05T00:00:00Z")
    assert exc.value.code == 409
