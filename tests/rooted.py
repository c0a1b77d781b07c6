"""What tests/kernel/ and tests/e2e/ need and tests/unit/ does not: root, and a check at the end
of the run that no namespace, /etc/netns directory, agent, API server, CNI plugin server or
kubeconfig entry was left behind.  The run has a kubeconfig of its own: `up` in a test never
writes to the machine's ~/.kube/config.
Their conftest.py files import these (pytest registers a hook or fixture a conftest imports)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from netsim import kernel
from netsim.apiserver import process
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
    apiservers_before = set(process.pids(None))
    home = Path(tempfile.mkdtemp(prefix="netsim-tests-kube."))
    saved = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(home / "config")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = saved
        config = home / "config"
        left = sorted(e.get("name") for s in ("clusters", "users", "contexts")
                      for e in (yaml.safe_load(config.read_text()) or {}).get(s) or []) if config.exists() else []
        shutil.rmtree(home, ignore_errors=True)
    assert not left, f"tests left kubeconfig entries behind (a down that did not take them out): {left}"
    stray = set(process.pids(None)) - apiservers_before
    assert not stray, f"tests left netsim API servers running: {sorted(stray)}"
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
