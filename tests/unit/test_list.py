"""The API server's LIST (netsim.apiserver.resources) on a real SQLite store: the List spliced
from the stored JSON text (list_json) is the List that decoding every object gives (list_),
with selectors and page by page, and paging returns every selected object once."""

from __future__ import annotations

import json

import pytest

from netsim.api import registry
from netsim.api.store import open_store
from netsim.apiserver import resources
from netsim.apiserver.status import StatusError

PODS = 25


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = open_store(f"sqlite://{tmp_path_factory.mktemp('list')}/store.db")
    registry.bootstrap(s, registry.read_config(s))
    registry.create(s, registry.new_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}))
    for ns in ("default", "other"):
        t = resources.resolve("", "v1", ["namespaces", ns, "pods"])
        for i in range(PODS):
            resources.create(s, t, {"metadata": {"name": f"p{i:02}", "labels": {"app": "x" if i % 2 else "y"}},
                                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}, {}, "test")
    yield s
    s.close()


TARGETS = [("", "v1", ["namespaces", "default", "pods"]), ("", "v1", ["pods"]), ("", "v1", ["namespaces"])]
QUERIES = [{}, {"labelSelector": "app=x"}, {"labelSelector": "app!=x"}, {"labelSelector": ""},
           {"fieldSelector": "metadata.name=p03"}, {"fieldSelector": "metadata.namespace=other"}]


@pytest.mark.parametrize("query", QUERIES, ids=str)
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: "/".join(t[2]))
def test_spliced_list_is_the_decoded_list(store, target, query):
    t = resources.resolve(*target)
    spliced = resources.list_json(store, t, query)
    assert spliced is not None
    assert json.loads(spliced) == resources.list_(store, t, query)


@pytest.mark.parametrize("query", QUERIES[:3], ids=str)
def test_pages_are_the_same_and_cover_every_object_once(store, query):
    t = resources.resolve("", "v1", ["pods"])
    names, token = [], None
    while True:
        q = {**query, "limit": "7", **({"continue": token} if token else {})}
        page = json.loads(resources.list_json(store, t, q))
        assert page == resources.list_(store, t, q)
        names += [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in page["items"]]
        token = page["metadata"].get("continue")
        if token is None:
            assert "remainingItemCount" not in page["metadata"]
            break
        assert page["metadata"]["remainingItemCount"] > 0
    everything = [(o["metadata"]["namespace"], o["metadata"]["name"])
                  for o in resources.list_(store, t, query)["items"]]
    assert names == everything and len(set(names)) == len(names) > 7


def test_a_bad_selector_is_a_bad_request_either_way(store):
    t = resources.resolve("", "v1", ["pods"])
    for fn in (resources.list_json, resources.list_):
        with pytest.raises(StatusError) as exc:
            fn(store, t, {"labelSelector": "a in (b"})
        assert exc.value.code == 400


def test_a_store_without_json_text_takes_the_decoding_path():
    from tests.unit.fakes import MemoryStore

    assert resources.list_json(MemoryStore(), resources.resolve("", "v1", ["pods"]), {}) is None
