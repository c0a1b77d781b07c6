"""Tests that make namespaces, links and rules, but no whole cluster: root, and nothing left."""

from tests.cni_util import cni_sandbox  # noqa: F401  (a fixture for every CNI test)
from tests.rooted import no_leaks, pytest_configure  # noqa: F401  (the root check and the leak check)
