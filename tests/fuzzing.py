"""What the fuzz tests share (tests/unit/test_fuzz.py, tests/kernel/test_fuzz_cni.py): the
hypothesis settings and the strategies that mutate a valid document in one place.
NETSIM_FUZZ_EXAMPLES sets the number of examples per property (default 150; CI runs the
default, derandomized so a run is repeatable; NETSIM_FUZZ_RANDOM=1 explores afresh)."""

from __future__ import annotations

import copy
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("NETSIM_FUZZ_EXAMPLES", "150"))


FUZZ = settings(max_examples=EXAMPLES, derandomize=not os.environ.get("NETSIM_FUZZ_RANDOM"), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=24) | st.sampled_from(["", "0", "-1", "10.244.0.0/16", "../x", "a/b", "default", "TCP",
                                             "65536", "http", "10.0.0.1", "::1", "1.2.3.4/33", "ÿ"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)


def _paths(doc, prefix=()):
    """Every path into a nested document (dict keys and list indexes)."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated(draw, base, keep: tuple[str, ...] = ()):
    """``base`` with one place replaced by any JSON value, deleted, or given an unknown key;
    keys named in ``keep`` are never touched (they point the fuzzed code into a sandbox)."""
    doc = copy.deepcopy(base)
    paths = [p for p in _paths(doc) if not any(k in keep for k in p if isinstance(k, str))]
    path = draw(st.sampled_from(paths))
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    value = draw(json_values)
    if not path:
        return value if action == "replace" else doc
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif isinstance(parent[last], dict):
        parent[last][draw(st.text(min_size=1, max_size=12))] = value
    else:
        parent[last] = [parent[last], value]
    return doc


