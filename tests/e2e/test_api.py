"""The API server with the machine's kubectl against one real cluster (shared by the module)."""

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import REPO, run_netsim, unique_name

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")

MANIFEST = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: apiweb}
---
apiVersion: v1
kind: Service
metadata: {name: apiweb}
spec:
  type: LoadBalancer
  selector: {app: apiweb}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: apiweb, labels: {app: apiweb}}
spec:
  replicas: 1
  selector: {matchLabels: {app: apiweb}}
  template:
    metadata: {labels: {app: apiweb}}
    spec:
      containers: [{name: apiweb, image: nginx, ports: [{containerPort: 8080}]}]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    env = {"NETSIM_STATE_DIR": str(d / "state"), "KUBECONFIG": str(d / "kubeconfig")}
    name = unique_name("api")
    up = run_netsim("up", str(REPO / "scenarios/basic.yaml"), "--name", name, env=env)
    try:
        assert up.returncode == 0, up.stderr
        yield name, env, d
    finally:
        down = run_netsim("down", name, env=env)
        assert down.returncode == 0, down.stderr


def kubectl(env, *args, check=True, input=None):
    r = subprocess.run([KUBECTL, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=60,
                       input=input)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_kubectl_drives_the_cluster(cluster):
    name, env, d = cluster
    assert "Server Version: v1.32" in kubectl(env, "version").stdout
    assert "deployments" in kubectl(env, "api-resources").stdout
    (d / "m.yaml").write_text(MANIFEST)
    out = kubectl(env, "apply", "-f", str(d / "m.yaml")).stdout
    assert "serviceaccount/apiweb created" in out and "deployment.apps/apiweb created" in out
    assert "unchanged" in kubectl(env, "apply", "-f", str(d / "m.yaml")).stdout
    svc = json.loads(kubectl(env, "get", "svc", "apiweb", "-o", "json").stdout)
    assert svc["spec"]["type"] == "LoadBalancer" and svc["spec"]["clusterIP"]
    kubectl(env, "scale", "deploy", "apiweb", "--replicas=2")
    assert kubectl(env, "get", "deploy", "apiweb", "-o", "jsonpath={.spec.replicas}").stdout == "2"
    kubectl(env, "label", "deploy", "-l", "app=apiweb", "tier=front")
    assert "tier=front" in kubectl(env, "get", "deploy", "--show-labels").stdout
    missing = kubectl(env, "get", "pod", "nope", check=False)
    assert missing.returncode == 1 and 'pods "nope" not found' in missing.stderr
    kubectl(env, "delete", "-f", str(d / "m.yaml"))


def test_unauthenticated_request_gets_a_401_status(cluster):
    name, env, d = cluster
    info = json.loads((d / "state" / name / "apiserver.json").read_text())
    r = subprocess.run(["curl", "-sk", f"https://127.0.0.1:{info['port']}/api/v1/pods"], capture_output=True,
                       text=True, timeout=30)
    body = json.loads(r.stdout)
    assert body["kind"] == "Status" and body["code"] == 401 and body["reason"] == "Unauthorized"
