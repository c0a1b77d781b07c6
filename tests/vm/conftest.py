"""Tests that boot virtual machines (`make test-vagrant`): root, and nothing left."""

from tests.rooted import no_leaks, pytest_configure  # noqa: F401  (the root check and the leak check)
