"""`netsim ingress explain` as a user runs it: a fresh interpreter, a cluster whose state file
(in a temporary NETSIM_STATE_DIR) points at a SQLite store holding the Ingress objects, the text
and JSON answers and the exit codes (0 proxied or redirected, 1 not, 2 bad input).  No root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netsim.api.store.sqlite import SQLiteStore
from netsim.model import k8s, state
from tests.unit.ingress_objects import NGINX_CLASS, World, ing, path, rule

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """State dir with cluster "ing" whose store has two hosts, a canary and a class the controller ignores."""
    w = World("frontend", "backend", "canary", replicas=2)
    objs = [NGINX_CLASS, *w.services, *w.slices,
            ing("two-hosts", rule("frontend.aa.com", path("/", "frontend")),
                rule("backend.aa.com", path("/api", "backend"))),
            ing("canary", rule("backend.aa.com", path("/api", "canary")), ts="2026-01-02T00:00:00Z",
                annotations={"canary": "true", "canary-by-header": "X-Canary"}),
            ing("theirs", rule("frontend.aa.com", path("/x", "backend")), cls="other"),
            {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
             "spec": {"template": {"spec": {"containers": [{"name": "controller", "args": [
                 "/nginx-ingress-controller", "--controller-class=k8s.io/ingress-nginx", "--ingress-class=nginx"]}]}}}}]
    store = SQLiteStore(tmp_path / "store.db")
    for obj in objs:
        store.create(k8s.key_of(obj), obj)
    store.close()
    monkeypatch.setenv("NETSIM_STATE_DIR", str(tmp_path / "state"))
    state.write_state("ing", state.ClusterState(
        name="ing", phase="up", underlay=state.Underlay(subnet="192.168.77.0/24", gateway="192.168.77.1", mtu=1500),
        store=f"sqlite://{tmp_path / 'store.db'}"))
    return {k: v for k, v in os.environ.items() if k != "NETSIM_CLUSTER"}


def netsim(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netsim", "ingress", "explain", "-c", "ing", *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False)


def test_explain_text(cluster):
    p = netsim(cluster, "--host", "backend.aa.com", "/api/users?id=1")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "(Deployment ingress-nginx/ingress-nginx-controller)" in out
    assert "server:    backend.aa.com: server_name backend.aa.com equals the Host" in out
    assert "location:  location /api/: the longest matching prefix" in out
    assert "from Ingress default/two-hosts rule 1 path 0 (Prefix /api)" in out
    assert "upstream:  /api/users?id=1" in out
    assert "endpoints: 10.244.2.2:8080, 10.244.2.3:8080" in out
    assert "answer:    200" in out


def test_explain_url_header_canary_and_json(cluster):
    p = netsim(cluster, "http://backend.aa.com/api", "-H", "X-Canary: always", "-o", "json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert (d["status"], d["backend"]["service"], d["block"]) == (200, "canary", "location = /api")
    assert d["canary"] == "canary by header X-Canary: always"
    assert d["flags"]["controller_class"] == "k8s.io/ingress-nginx" and d["flags"]["ingress_class"] == "nginx"


def test_explain_no_match_exits_1_and_names_the_ignored_ingress(cluster):
    p = netsim(cluster, "--host", "frontend.aa.com", "/x")
    assert p.returncode == 0  # frontend's "/" takes it: the other class's /x is not served
    assert "Ingress default/theirs is not served by this controller" in p.stdout
    p = netsim(cluster, "--host", "nobody.aa.com", "/")
    assert p.returncode == 1
    assert "no server_name matches nobody.aa.com: the catch-all server _" in p.stdout
    assert "answer:    404" in p.stdout


def test_explain_bad_input_exits_2(cluster):
    p = netsim(cluster, "--host", "h", "/", "-H", "nocolon")
    assert p.returncode == 2 and "NAME:VALUE" in p.stderr
    p = netsim(cluster, "relative/path")
    assert p.returncode == 2 and "a path starts with /" in p.stderr
