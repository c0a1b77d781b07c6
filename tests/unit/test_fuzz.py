"""Property-based fuzzing (hypothesis) of what users hand netsim: scenario files and manifests
(on a SQLite store in a temporary directory; no kernel).  CNI stdin and environment are fuzzed
in tests/kernel/test_fuzz_cni.py; the strategies are tests/fuzzing.py.

"No traceback" alone would be a property that cannot fail (the CNI spec layer turns any
exception into error JSON), so the properties are sharper: a bad scenario is a ScenarioError
naming the file; a bad manifest file is a ManifestError, or an ApiError that leaves the store
exactly as it was (nothing half-applied); a CNI call answers valid JSON, and an error carries
one of the spec's codes, and never the catch-all for an exception no plugin code anticipated
(an input that reached code which did not expect it).  Inputs are valid documents with one part
replaced, deleted or added, so they get past the first check and into the code behind it.
NETSIM_FUZZ_EXAMPLES sets the number of examples per property (default 150; CI runs the
default, derandomized so a run is repeatable; NETSIM_FUZZ_RANDOM=1 explores afresh).
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from netsim.api import registry
from netsim.api.store import open_store
from netsim.model import k8s
from netsim.model.scenario import ScenarioError, manifest_objects, parse_scenario
from tests.conftest import REPO
from tests.fuzzing import FUZZ, mutated

# -- scenario files ------------------------------------------------------------------------------
SCENARIO_DIR = REPO / "scenarios"
SCENARIOS = [yaml.safe_load((SCENARIO_DIR / f).read_text()) for f in
             ("basic.yaml", "multi-tenant.yaml", "services.yaml", "pod-to-pod-host-gw.yaml")]


@FUZZ
@given(st.sampled_from(range(len(SCENARIOS))).flatmap(lambda i: mutated(SCENARIOS[i])))
def test_a_bad_scenario_is_a_scenario_error_naming_the_file(doc):
    try:
        scenario = parse_scenario(doc, "fuzz.yaml", SCENARIO_DIR)
        manifest_objects(scenario, SCENARIO_DIR)
    except ScenarioError as exc:
        assert "fuzz.yaml" in str(exc)


@FUZZ
@given(st.text(max_size=300))
def test_scenario_text_of_any_shape(text):
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return
    try:
        parse_scenario(doc, "fuzz.yaml", SCENARIO_DIR)
    except ScenarioError as exc:
        assert "fuzz.yaml" in str(exc)


# -- manifests -----------------------------------------------------------------------------------
MANIFESTS = [d for f in ("web.yaml", "multi-tenant.yaml", "workloads.yaml")
             if (SCENARIO_DIR / "manifests" / f).exists()
             for d in yaml.safe_load_all((SCENARIO_DIR / "manifests" / f).read_text()) if d]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = open_store(str(tmp_path_factory.mktemp("fuzz") / "store.db"))
    registry.bootstrap(s, registry.ClusterConfig())
    yield s
    s.close()


def _everything(store) -> list[dict]:
    """Every object with its resourceVersion (a refused apply may take an address and give it
    back, which moves the store's revision on, but must leave every object as it was)."""
    return sorted(store.list("/")[0], key=json.dumps)


@FUZZ
@given(st.lists(st.sampled_from(range(len(MANIFESTS))), min_size=1, max_size=3).flatmap(
    lambda picks: st.tuples(*[mutated(MANIFESTS[i]) if n == 0 else st.just(MANIFESTS[i])
                              for n, i in enumerate(picks)])))
def test_a_bad_manifest_is_refused_whole(store, docs):
    text = yaml.safe_dump_all(list(docs))
    try:
        objects = k8s.parse_manifests(text, "fuzz.yaml")
    except k8s.ManifestError as exc:
        assert str(exc).startswith("fuzz.yaml")
        return
    before = _everything(store)
    try:
        registry.apply(store, objects, "default")
    except registry.ApiError:
        assert _everything(store) == before, "a refused apply changed the store"


@FUZZ
@given(st.text(max_size=300))
def test_manifest_text_of_any_shape(text):
    try:
        k8s.parse_manifests(text, "fuzz.yaml")
    except k8s.ManifestError as exc:
        assert str(exc).startswith("fuzz.yaml")


def _field_paths(doc, prefix=(), kind=None):
    """Paths to every field of a document (a key of a mapping that is not a map of strings:
    there a null value is "", not an absent entry)."""
    kind = kind or (doc.get("kind") if isinstance(doc, dict) else None)
    if isinstance(doc, dict):
        for key, value in doc.items():
            path = (*prefix, key)
            yield path
            if not k8s.string_map(kind, path):
                yield from _field_paths(value, path, kind)
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _field_paths(value, (*prefix, i), kind)


def _outcome(doc) -> tuple[str, object]:
    try:
        return "stored", k8s.validate(doc, "document 1")
    except ValueError as exc:
        return "refused", str(exc)


@FUZZ
@given(st.sampled_from(range(len(MANIFESTS))).flatmap(
    lambda i: st.tuples(st.just(i), st.sampled_from(list(_field_paths(MANIFESTS[i]))))))
def test_a_null_field_is_the_field_left_out(pick):
    """Replacing any field by null gives the object that leaving it out gives, or the same
    error naming the same required field (the API server decodes null as unset)."""
    i, path = pick
    nulled, omitted = copy.deepcopy(MANIFESTS[i]), copy.deepcopy(MANIFESTS[i])
    for doc, change in ((nulled, "null"), (omitted, "delete")):
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if change == "null":
            parent[path[-1]] = None
        else:
            del parent[path[-1]]
    assert _outcome(nulled) == _outcome(omitted), path
