"""The API server with the machine's kubectl and the official Python client against one real
cluster (shared by the module; the tests run in file order, each leaving the cluster as the
next expects it).  Every wait is bounded by a timeout; nothing asserts on time."""

import json
import os
import queue
import re
import shutil
import subprocess
import threading

import pytest
import yaml

from tests.conftest import REPO, run_netsim, unique_name

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")

MANIFEST = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: apiweb}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: apiweb-admin, labels: {app: apiweb}}
---
apiVersion: v1
kind: Service
metadata: {name: apiweb, labels: {app: apiweb}}
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
      serviceAccountName: apiweb
      containers:
        - name: apiweb
          image: nginx
          ports: [{containerPort: 8080}]
          env: [{name: GREETING, value: hello}]
"""

CONFIGMAP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: apicfg}
data: {colour: %s}
"""

POD = """
apiVersion: v1
kind: Pod
metadata: {name: %s, labels: {watched: "yes"}}
spec:
  terminationGracePeriodSeconds: 0
  containers: [{name: c, image: busybox}]
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


def kubectl(env, *args, check=True, input=None, timeout=60):
    r = subprocess.run([KUBECTL, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=timeout,
                       input=input)
    if check:
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return r


def get_json(env, *what):
    return json.loads(kubectl(env, "get", *what, "-o", "json").stdout)


class Lines:
    """A long-running kubectl's stdout, read line by line with a bounded wait."""

    def __init__(self, env, *args):
        self.proc = subprocess.Popen([KUBECTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **env})
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, pred, timeout=60.0) -> list[str]:
        """Lines up to and including the first that ``pred`` accepts; fails when the output ends
        or ``timeout`` passes first."""
        seen = []
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"no matching line within {timeout}s; saw {seen}")
            if line is None:
                pytest.fail(f"output ended ({self.proc.stderr.read()}); saw {seen}")
            seen.append(line)
            if pred(line):
                return seen

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


def test_version_and_api_resources(cluster):
    name, env, d = cluster
    assert "Server Version: v1.32" in kubectl(env, "version").stdout
    rows = {line.split()[0]: line for line in kubectl(env, "api-resources").stdout.splitlines()[1:]}
    assert {"pods", "deployments", "serviceaccounts", "services", "events"} <= set(rows)
    assert "po " in rows["pods"] and "apps/v1" in rows["deployments"] and "Deployment" in rows["deployments"]
    assert "sa " in rows["serviceaccounts"]


def test_apply_a_multi_document_manifest_and_roll_out(cluster):
    name, env, d = cluster
    (d / "m.yaml").write_text(MANIFEST)
    out = kubectl(env, "apply", "-f", str(d / "m.yaml")).stdout
    for what in ("serviceaccount/apiweb created", "serviceaccount/apiweb-admin created", "service/apiweb created",
                 "deployment.apps/apiweb created"):
        assert what in out
    assert kubectl(env, "apply", "-f", str(d / "m.yaml")).stdout.count("unchanged") == 4
    out = kubectl(env, "rollout", "status", "deploy/apiweb", "--timeout=90s", timeout=100).stdout
    assert 'deployment "apiweb" successfully rolled out' in out
    out = kubectl(env, "wait", "--for=condition=Available", "deploy/apiweb", "--timeout=60s", timeout=70).stdout
    assert "deployment.apps/apiweb condition met" in out


def test_get_wide_json_yaml(cluster):
    name, env, d = cluster
    svc = get_json(env, "svc", "apiweb")
    assert svc["spec"]["type"] == "LoadBalancer" and svc["spec"]["clusterIP"]
    assert "generation" not in svc["metadata"]  # Services have none; Deployments do
    pods = get_json(env, "pods", "-l", "app=apiweb")["items"]
    assert len(pods) == 1 and pods[0]["spec"]["nodeName"] and pods[0]["status"]["podIP"]
    pod = pods[0]
    wide = kubectl(env, "get", "pods", "-l", "app=apiweb", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"], wide[0]
    row = wide[1].split()
    assert row[0] == pod["metadata"]["name"] and row[1] == "1/1" and row[2] == "Running"
    assert pod["status"]["podIP"] in row and pod["spec"]["nodeName"] in row
    deploy = kubectl(env, "get", "deploy", "apiweb", "-o", "wide").stdout.splitlines()
    assert deploy[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES",
                                 "SELECTOR"], deploy[0]
    assert deploy[1].split()[:2] == ["apiweb", "1/1"] and deploy[1].split()[-1] == "app=apiweb"
    svc_wide = kubectl(env, "get", "svc", "apiweb", "-o", "wide").stdout.splitlines()
    assert "EXTERNAL-IP" in svc_wide[0] and "80:" in svc_wide[1] and svc["spec"]["clusterIP"] in svc_wide[1]
    doc = yaml.safe_load(kubectl(env, "get", "deploy", "apiweb", "-o", "yaml").stdout)
    assert doc["kind"] == "Deployment" and doc["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx"
    assert doc["metadata"]["generation"] == doc["status"]["observedGeneration"] >= 1
    conds = {c["type"]: c["status"] for c in doc["status"]["conditions"]}
    assert conds == {"Available": "True", "Progressing": "True"}
    listed = yaml.safe_load(kubectl(env, "get", "sa", "-o", "yaml").stdout)
    assert listed["kind"] == "List" and {"apiweb", "apiweb-admin"} <= {i["metadata"]["name"] for i in listed["items"]}


def test_scale_and_patch(cluster):
    name, env, d = cluster
    kubectl(env, "scale", "deploy", "apiweb", "--replicas=2")
    assert kubectl(env, "get", "deploy", "apiweb", "-o", "jsonpath={.spec.replicas}").stdout == "2"
    kubectl(env, "patch", "deploy", "apiweb", "--type=merge", "-p", '{"metadata":{"annotations":{"team":"net"}}}')
    # Strategic merge: the env list merges by name, the containers list by name.
    kubectl(env, "patch", "deploy", "apiweb", "-p",
            '{"spec":{"template":{"spec":{"containers":[{"name":"apiweb","env":[{"name":"MODE","value":"x"}]}]}}}}')
    kubectl(env, "patch", "deploy", "apiweb", "--type=json", "-p",
            '[{"op":"replace","path":"/spec/replicas","value":3},'
            '{"op":"add","path":"/metadata/labels/patched","value":"json"}]')
    doc = get_json(env, "deploy", "apiweb")
    assert doc["metadata"]["annotations"]["team"] == "net" and doc["metadata"]["labels"]["patched"] == "json"
    assert doc["spec"]["replicas"] == 3
    (c,) = doc["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "nginx"
    # kube-apiserver's strategic merge puts the patch's new items before the live ones
    assert c["env"] == [{"name": "MODE", "value": "x"}, {"name": "GREETING", "value": "hello"}]
    # The template changed: a new ReplicaSet rolls out.
    out = kubectl(env, "rollout", "status", "deploy/apiweb", "--timeout=120s", timeout=130).stdout
    assert "successfully rolled out" in out
    rs = get_json(env, "rs", "-l", "app=apiweb")["items"]
    assert sorted(r["spec"]["replicas"] for r in rs) == [0, 3]
    bad = kubectl(env, "patch", "deploy", "apiweb", "--type=json", "-p", '[{"op":"remove","path":"/nope"}]',
                  check=False)
    assert bad.returncode != 0 and "Error from server" in bad.stderr


def test_label_and_annotate_by_selector(cluster):
    name, env, d = cluster
    out = kubectl(env, "label", "sa", "-l", "app=apiweb", "tier=front").stdout
    assert "serviceaccount/apiweb-admin labeled" in out
    kubectl(env, "label", "deploy,svc", "-l", "app=apiweb", "tier=front")
    assert "tier=front" in kubectl(env, "get", "deploy", "--show-labels").stdout
    out = kubectl(env, "annotate", "sa,svc", "-l", "app=apiweb", "checked=yes").stdout
    assert "serviceaccount/apiweb-admin annotated" in out and "service/apiweb annotated" in out
    assert get_json(env, "svc", "apiweb")["metadata"]["annotations"]["checked"] == "yes"
    assert [i["metadata"]["name"] for i in get_json(env, "svc", "-l", "tier=front")["items"]] == ["apiweb"]


def test_server_side_apply_conflicts_and_force(cluster):
    name, env, d = cluster
    (d / "cm.yaml").write_text(CONFIGMAP % "blue")
    (d / "cm2.yaml").write_text(CONFIGMAP % "red")
    assert "serverside-applied" in kubectl(env, "apply", "--server-side", "-f", str(d / "cm.yaml")).stdout
    clash = kubectl(env, "apply", "--server-side", "--field-manager=other", "-f", str(d / "cm2.yaml"), check=False)
    assert clash.returncode != 0 and "conflict" in clash.stderr.lower() and ".data.colour" in clash.stderr
    assert get_json(env, "cm", "apicfg")["data"]["colour"] == "blue"
    kubectl(env, "apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", str(d / "cm2.yaml"))
    cm = json.loads(kubectl(env, "get", "cm", "apicfg", "-o", "json", "--show-managed-fields").stdout)
    assert cm["data"]["colour"] == "red"
    owners = {m["manager"] for m in cm["metadata"]["managedFields"] if "f:colour" in
              json.dumps(m.get("fieldsV1", {}))}
    assert owners == {"other"}
    kubectl(env, "delete", "cm", "apicfg")


def test_get_watch_sees_a_deletion(cluster):
    name, env, d = cluster
    (d / "pod.yaml").write_text(POD % "watched")
    kubectl(env, "apply", "-f", str(d / "pod.yaml"))
    pods = Lines(env, "get", "pods", "-l", "watched=yes", "-w", "--output-watch-events")
    deploys = Lines(env, "get", "deploy", "-w")
    try:
        head = pods.until(lambda line: line.split()[:2] == ["ADDED", "watched"])
        assert head[0].split()[:3] == ["EVENT", "NAME", "READY"], head
        deploys.until(lambda line: line.split()[:1] == ["apiweb"])
        kubectl(env, "delete", "pod", "watched", "--wait=false")
        seen = pods.until(lambda line: line.split()[:2] == ["DELETED", "watched"])
        assert seen[-1].split()[0] == "DELETED"
        # A Table watch of deployments sees the scale as a changed row.
        kubectl(env, "scale", "deploy", "apiweb", "--replicas=2")
        deploys.until(lambda line: line.split()[:1] == ["apiweb"] and line.split()[1].endswith("/2"))
    finally:
        pods.stop()
        deploys.stop()


def test_watch_semantics_bookmarks_and_expired(cluster):
    name, env, d = cluster
    pods = "/api/v1/namespaces/default/pods"
    rv = json.loads(kubectl(env, "get", "--raw", pods).stdout)["metadata"]["resourceVersion"]
    # A quiet watch with bookmarks allowed gets one shortly before its timeout.
    raw = kubectl(env, "get", "--raw", f"{pods}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true"
                  "&timeoutSeconds=3&labelSelector=nothing%3Dhere", timeout=30).stdout
    events = [json.loads(line) for line in raw.splitlines()]
    assert [e["type"] for e in events] == ["BOOKMARK"]
    assert events[0]["object"]["kind"] == "Pod" and int(events[0]["object"]["metadata"]["resourceVersion"]) >= int(rv)
    # A resourceVersion from before the server's window: 200 and one ERROR event, 410 Expired.
    raw = kubectl(env, "get", "--raw", f"{pods}?watch=1&resourceVersion=1", timeout=30).stdout
    (ev,) = [json.loads(line) for line in raw.splitlines()]
    assert ev["type"] == "ERROR" and ev["object"]["kind"] == "Status"
    assert (ev["object"]["code"], ev["object"]["reason"]) == (410, "Expired")


def test_describe_shows_events(cluster):
    name, env, d = cluster
    pod = [p for p in get_json(env, "pods", "-l", "app=apiweb")["items"]
           if not p["metadata"].get("deletionTimestamp")][0]
    out = kubectl(env, "describe", "pod", pod["metadata"]["name"]).stdout
    assert "Events:" in out and "Scheduled" in out and "Started" in out, out
    assert "default-scheduler" in out and "Successfully assigned" in out
    out = kubectl(env, "describe", "deploy", "apiweb").stdout
    assert "ScalingReplicaSet" in out and "deployment-controller" in out, out
    assert "NewReplicaSet:" in out and re.search(r"Available\s+True\s+MinimumReplicasAvailable", out), out


def test_python_client_lists_and_watches(cluster):
    kubernetes = pytest.importorskip("kubernetes")
    name, env, d = cluster
    api_client = kubernetes.config.new_client_from_config(config_file=env["KUBECONFIG"])
    v1 = kubernetes.client.CoreV1Api(api_client)
    listed = v1.list_namespaced_pod("default", label_selector="app=apiweb")
    assert listed.items and all(p.metadata.labels["app"] == "apiweb" for p in listed.items)
    rv = listed.metadata.resource_version
    events: queue.Queue = queue.Queue()
    w = kubernetes.watch.Watch()

    def watch():
        try:
            for ev in w.stream(v1.list_namespaced_pod, "default", label_selector="watched=py",
                               resource_version=rv, timeout_seconds=60, allow_watch_bookmarks=True):
                events.put((ev["type"], ev["object"].metadata.name))
        except Exception as exc:  # the test reads it from the queue
            events.put(("EXCEPTION", repr(exc)))
        events.put(None)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    body = yaml.safe_load(POD % "pywatched")
    body["metadata"]["labels"] = {"watched": "py"}
    v1.create_namespaced_pod("default", body)
    v1.delete_namespaced_pod("pywatched", "default", grace_period_seconds=0)
    seen = []
    while ("DELETED", "pywatched") not in seen:
        try:
            item = events.get(timeout=60)
        except queue.Empty:
            pytest.fail(f"no DELETED event within 60s; saw {seen}")
        assert item is not None and item[0] != "EXCEPTION", (item, seen)
        seen.append(item)
    w.stop()
    assert seen[0] == ("ADDED", "pywatched")
    with pytest.raises(kubernetes.client.ApiException) as err:
        v1.read_namespaced_pod("nope", "default")
    body = json.loads(err.value.body)
    assert err.value.status == 404
    assert body["kind"] == "Status" and body["reason"] == "NotFound" and body["details"] == {"name": "nope",
                                                                                           "kind": "pods"}
    api_client.close()


def test_delete_the_manifest_and_a_404_status(cluster):
    name, env, d = cluster
    out = kubectl(env, "delete", "-f", str(d / "m.yaml"), "--ignore-not-found").stdout
    assert "service \"apiweb\" deleted" in out and "serviceaccount \"apiweb-admin\" deleted" in out
    missing = kubectl(env, "get", "pod", "nope", check=False)
    assert missing.returncode == 1 and 'Error from server (NotFound): pods "nope" not found' in missing.stderr
    raw = kubectl(env, "get", "--raw", "/api/v1/namespaces/default/serviceaccounts/apiweb", check=False)
    assert raw.returncode == 1 and 'serviceaccounts "apiweb" not found' in raw.stderr


def test_unauthenticated_request_gets_a_401_status(cluster):
    name, env, d = cluster
    info = json.loads((d / "state" / name / "apiserver.json").read_text())
    r = subprocess.run(["curl", "-sk", f"https://127.0.0.1:{info['port']}/api/v1/pods"], capture_output=True,
                       text=True, timeout=30)
    body = json.loads(r.stdout)
    assert body["kind"] == "Status" and body["code"] == 401 and body["reason"] == "Unauthorized"
