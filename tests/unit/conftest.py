"""Tests that need no root and no kernel: models, validation, API semantics and allocation,
controllers, renderers, on fakes or a SQLite store in a temporary directory.  They run as any
user: `pytest tests/unit`.  `apiserver`: netsim's API server on loopback for real clients; `kubectl`: the real kubectl
against it."""

import asyncio
import json
import os
import shutil
import subprocess
import threading

import pytest
from aiohttp import web
from hypothesis import settings

from netsim.api.store.sqlite import SQLiteStore
from netsim.apiserver.app import make_app
from netsim.apiserver.pki import Paths

if os.geteuid() != 0:
    # An ordinary user may not own the tree: keep hypothesis's example database out of it.
    settings.register_profile("unprivileged", database=None)
    settings.load_profile("unprivileged")


@pytest.fixture
def apiserver(tmp_path):
    """netsim's API server on 127.0.0.1 (an ephemeral port, plain HTTP, a SQLite store in the
    test's directory, its pki (the token signing key) in tmp_path/"pki"): its URL;
    tmp_path/"kubeconfig" points kubectl at it.  Torn down after."""
    store = SQLiteStore(tmp_path / "store.db")
    (tmp_path / "pki").mkdir(mode=0o700)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_app(store, "t", insecure=True, pki_paths=Paths(tmp_path / "pki")))
    started: list[int] = []

    async def start():
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        started.append(site._server.sockets[0].getsockname()[1])

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        url = f"http://127.0.0.1:{started[0]}"
        (tmp_path / "kubeconfig").write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "t",
            "clusters": [{"name": "t", "cluster": {"server": url}}],
            "users": [{"name": "t", "user": {}}],
            "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}]}))
        yield url
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        store.close()


@pytest.fixture
def kubectl(apiserver, tmp_path):
    """kubectl against conftest's apiserver with the default namespace: (returncode, stdout, stderr)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(tmp_path / "kubeconfig"), "HOME": str(tmp_path)}

    def run(*args: str, stdin: object = None) -> tuple[int, str, str]:
        r = subprocess.run(["kubectl", *args], input=None if stdin is None else json.dumps(stdin), env=env,
                           capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr
    code, _, err = run("create", "-f", "-", stdin={"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": "default"}})
    assert code == 0, err
    return run
