"""netsim.apiserver.kubeconfig on real files: `up`'s entries go in and `down` takes out exactly
those (kind's behaviour), files it cannot read are refused untouched, merges at once keep
each other's entries.  The same against a real cluster is tests/e2e/test_api_incluster.py."""

from __future__ import annotations

import stat
import threading

import pytest
import yaml

from netsim.apiserver import kubeconfig
from netsim.model import state

THEIRS = {
    "apiVersion": "v1", "kind": "Config", "preferences": {},
    "clusters": [{"name": "prod", "cluster": {"server": "https://prod.example:6443"}}],
    "users": [{"name": "prod", "user": {"token": "t"}}],
    "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod"}}],
    "current-context": "prod",
}


def entries(cluster: str) -> dict:
    name = kubeconfig.entry_name(cluster)
    return {"clusters": [{"name": name, "cluster": {"server": "https://127.0.0.1:1"}}],
            "users": [{"name": name, "user": {"token": "x"}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            "current-context": name}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NETSIM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kube" / "config"))
    return tmp_path / "kube" / "config"


def _up(cluster: str) -> None:
    state.cluster_dir(cluster).mkdir(parents=True, exist_ok=True)
    kubeconfig.merge(cluster, entries(cluster))


def test_other_entries_stay_and_the_current_context_is_unset(home):
    home.parent.mkdir()
    home.write_text(yaml.safe_dump(THEIRS))
    _up("a")
    doc = yaml.safe_load(home.read_text())
    assert doc["current-context"] == "netsim-a" and len(doc["clusters"]) == 2
    assert stat.S_IMODE(home.stat().st_mode) == 0o600
    assert kubeconfig.remove("a") == [home]
    assert yaml.safe_load(home.read_text()) == {**THEIRS, "current-context": ""}
    assert kubeconfig.remove("a") == []  # a second `down` finds nothing to take out


def test_a_file_netsim_made_goes_and_one_it_found_stays_as_kind_leaves_it(home):
    _up("a")
    assert home.exists()
    kubeconfig.remove("a")
    assert not home.exists()
    # A file that was there, holding only netsim's entries (from a run whose `down` never came).
    home.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", **entries("b")}))
    _up("b")
    kubeconfig.remove("b")
    assert yaml.safe_load(home.read_text()) == {"apiVersion": "v1", "kind": "Config", "preferences": {},
                                                "clusters": [], "users": [], "contexts": [],
                                                "current-context": ""}


@pytest.mark.parametrize("text, message", [
    ("clusters: [{name: a\n", "not valid YAML at line 2"),
    ("- a\n- b\n", "a list, not a kubeconfig"),
    ("clusters: {a: 1}\n", "clusters must be a list"),
])
def test_a_file_that_is_no_kubeconfig_is_refused_untouched(home, text, message):
    home.parent.mkdir()
    home.write_text(text)
    with pytest.raises(kubeconfig.KubeconfigError, match=message) as exc:
        kubeconfig.check()
    assert str(home) in str(exc.value) and "KUBECONFIG" in str(exc.value)
    with pytest.raises(kubeconfig.KubeconfigError):
        _up("a")
    with pytest.raises(kubeconfig.KubeconfigError):
        kubeconfig.remove("a")
    assert home.read_text() == text
    assert sorted(p.name for p in home.parent.iterdir()) == ["config"]


def test_a_directory_is_refused(home):
    home.mkdir(parents=True)
    with pytest.raises(kubeconfig.KubeconfigError, match="is a directory"):
        kubeconfig.check()


def test_clusters_going_up_at_once_keep_each_others_entries(home):
    home.parent.mkdir()
    home.write_text(yaml.safe_dump(THEIRS))
    clusters = [f"c{i}" for i in range(12)]
    threads = [threading.Thread(target=_up, args=(c,)) for c in clusters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    doc = yaml.safe_load(home.read_text())
    assert {e["name"] for e in doc["contexts"]} == {"prod", *(f"netsim-{c}" for c in clusters)}
    threads = [threading.Thread(target=kubeconfig.remove, args=(c,)) for c in clusters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert yaml.safe_load(home.read_text()) == {**THEIRS, "current-context": ""}
    assert sorted(p.name for p in home.parent.iterdir()) == ["config"]  # no lock or temporary file left
