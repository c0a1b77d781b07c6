"""Tests that need no root and no kernel: models, validation, API semantics and allocation,
controllers, renderers, on fakes or a SQLite store in a temporary directory.  They run as any
user: `pytest tests/unit`."""

import os

from hypothesis import settings

if os.geteuid() != 0:
    # An ordinary user may not own the tree: keep hypothesis's example database out of it.
    settings.register_profile("unprivileged", database=None)
    settings.load_profile("unprivileged")
