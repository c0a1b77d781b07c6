"""What tests/kernel/ and tests/e2e/ need and tests/unit/ does not: root, and a check at the end
of the run that no namespace, /etc/netns directory, agent or CNI plugin server was left behind.
Their conftest.py files import these (pytest registers a hook or fixture a conftest imports)."""

from __future__ import annotations

import os
import time

import pytest

from netsim import kernel
from netsim.cni import standalone
from netsim.fabric import daemon
from netsim.model import names


def pytest_configure(config):
    if os.geteuid() != 0:
        pytest.exit("netsim's kernel and e2e tests create real namespaces and links: run them as root "
                    "(sudo make test); tests/unit runs as any user (pytest tests/unit)", 1)


@pytest.fixture(autouse=True, scope="session")
def no_leaks():
    before = set(kernel.list_netns(names.NETNS_ROOT + "."))
    etc_before = set(kernel.list_netns_etc(names.NETNS_ROOT + "."))
    agents_before = set(daemon.agent_pids(None))
    servers_before = set(daemon.plugin_server_pids())
    standalone_before = set(standalone.running())
    yield
    leaked = set(kernel.list_netns(names.NETNS_ROOT + ".")) - before
    assert not leaked, f"tests leaked namespaces: {sorted(leaked)}"
    leaked = set(kernel.list_netns_etc(names.NETNS_ROOT + ".")) - etc_before
    assert not leaked, f"tests leaked /etc/netns directories (pods' resolv.conf): {sorted(leaked)}"
    stray = set(daemon.agent_pids(None)) - agents_before
    assert not stray, f"tests left netsim agents running: {sorted(stray)}"
    deadline = time.monotonic() + 5  # pool workers see their agent gone within 0.5 s
    while set(daemon.plugin_server_pids()) - servers_before and time.monotonic() < deadline:
        time.sleep(0.1)
    servers = set(daemon.plugin_server_pids()) - servers_before
    assert not servers, f"tests left CNI plugin servers running: {sorted(servers)}"
    stray = set(standalone.running()) - standalone_before
    assert not stray, f"tests left standalone CNI plugin servers running (standalone.stop_all): {sorted(stray)}"
