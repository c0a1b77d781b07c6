"""Protobuf request bodies from the real kubectl: its typed-client commands (create namespace,
deployment, secret, ..., expose) send application/vnd.kubernetes.protobuf, and each is
run against netsim's own server (plain HTTP on loopback, a SQLite store in the test's directory,
conftest's apiserver), then read back with `kubectl get -o json`, so a field lost or mistyped
in the decoding shows as the stored object.  Skipped without kubectl."""

import base64
import json
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


@pytest.fixture
def kubectl(apiserver, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(tmp_path / "kubeconfig"), "HOME": str(tmp_path)}

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True, timeout=60)
        if ok:
            assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
        return r
    return run


def _get(kubectl, *what: str) -> dict:
    return json.loads(kubectl("get", *what, "-o", "json").stdout)


def test_kubectl_create_commands_store_what_kubectl_sent(kubectl):
    kubectl("create", "namespace", "default")
    kubectl("create", "namespace", "foo")
    assert _get(kubectl, "namespace", "foo")["metadata"]["name"] == "foo"

    kubectl("create", "deployment", "web", "--image=nginx", "--replicas=2", "--port=80")
    d = _get(kubectl, "deployment", "web")
    assert d["spec"]["replicas"] == 2
    assert d["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert (c["name"], c["image"], c["ports"][0]["containerPort"]) == ("nginx", "nginx", 80)
    assert d["spec"]["template"]["metadata"]["labels"] == {"app": "web"}

    kubectl("create", "deployment", "zero", "--image=nginx", "--replicas=0")
    assert _get(kubectl, "deployment", "zero")["spec"]["replicas"] == 0  # a pointer's zero is kept

    kubectl("create", "configmap", "c", "--from-literal=a=b", "--from-literal=x=y z")
    assert _get(kubectl, "configmap", "c")["data"] == {"a": "b", "x": "y z"}

    kubectl("create", "secret", "generic", "s", "--from-literal=a=b", "--from-literal=bin=\u00e9\u00ff")
    s = _get(kubectl, "secret", "s")
    assert s["data"] == {"a": base64.b64encode(b"b").decode(),
                         "bin": base64.b64encode("\u00e9\u00ff".encode()).decode()}

    kubectl("create", "serviceaccount", "robot")
    assert _get(kubectl, "serviceaccount", "robot")["metadata"]["name"] == "robot"

    kubectl("create", "service", "clusterip", "web", "--tcp=80:8080")
    svc = _get(kubectl, "service", "web")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}]
    assert svc["spec"]["selector"] == {"app": "web"}

    kubectl("create", "service", "nodeport", "np", "--tcp=80:8080")
    port = _get(kubectl, "service", "np")["spec"]["ports"][0]
    assert 30000 <= port["nodePort"] <= 32767  # nodePort 0 on the wire (omitempty) is left to the server
    kubectl("create", "service", "externalname", "en", "--external-name=example.com")
    assert _get(kubectl, "service", "en")["spec"]["externalName"] == "example.com"

    kubectl("expose", "deployment", "web", "--port=81", "--target-port=http", "--name=web2")
    svc = _get(kubectl, "service", "web2")
    assert svc["spec"]["ports"][0]["port"] == 81
    assert svc["spec"]["ports"][0]["targetPort"] == "http"  # IntOrString as a string
    assert svc["spec"]["selector"] == {"app": "web"}

    kubectl("create", "job", "j", "--image=busybox", "--", "echo", "hi")
    job = _get(kubectl, "job", "j")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["echo", "hi"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"

    kubectl("create", "cronjob", "cj", "--image=busybox", "--schedule=*/5 * * * *")
    cj = _get(kubectl, "cronjob", "cj")
    assert cj["spec"]["schedule"] == "*/5 * * * *"
    assert cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"

    kubectl("create", "job", "from-cj", "--from=cronjob/cj")
    job = _get(kubectl, "job", "from-cj")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"

    kubectl("create", "role", "r", "--verb=get", "--verb=list", "--resource=pods")
    assert _get(kubectl, "role", "r")["rules"] == [{"apiGroups": [""], "resources": ["pods"],
                                                     "verbs": ["get", "list"]}]
    kubectl("create", "rolebinding", "rb", "--role=r", "--user=u", "--serviceaccount=default:robot")
    rb = _get(kubectl, "rolebinding", "rb")
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}
    assert {s["kind"] for s in rb["subjects"]} == {"User", "ServiceAccount"}
    kubectl("create", "clusterrole", "cr", "--verb=get", "--non-resource-url=/healthz")
    assert _get(kubectl, "clusterrole", "cr")["rules"] == [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]
    kubectl("create", "clusterrolebinding", "crb", "--clusterrole=cr", "--group=g")
    assert _get(kubectl, "clusterrolebinding", "crb")["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "g"}]

    kubectl("create", "quota", "q", "--hard=pods=10,requests.memory=1Gi")
    assert _get(kubectl, "resourcequota", "q")["spec"]["hard"] == {"pods": "10", "requests.memory": "1Gi"}

    kubectl("create", "priorityclass", "pc", "--value=1000", "--description=high")
    pc = _get(kubectl, "priorityclass", "pc")
    assert (pc["value"], pc["description"], pc.get("globalDefault", False)) == (1000, "high", False)
    kubectl("create", "priorityclass", "zero", "--value=0", "--preemption-policy=Never")
    pc = _get(kubectl, "priorityclass", "zero")
    assert (pc["value"], pc["preemptionPolicy"]) == (0, "Never")  # `json:"value"`: Go writes its zero

    kubectl("create", "secret", "docker-registry", "reg", "--docker-server=r", "--docker-username=u",
            "--docker-password=p")
    reg = _get(kubectl, "secret", "reg")
    assert reg["type"] == "kubernetes.io/dockerconfigjson"
    assert json.loads(base64.b64decode(reg["data"][".dockerconfigjson"]))["auths"]["r"]["username"] == "u"

    kubectl("create", "poddisruptionbudget", "pdb", "--selector=app=web", "--min-available=50%")
    pdb = _get(kubectl, "poddisruptionbudget", "pdb")
    assert pdb["spec"]["minAvailable"] == "50%"
    assert pdb["spec"]["selector"] == {"matchLabels": {"app": "web"}}

    kubectl("create", "ingress", "ing", "--rule=foo.com/bar=web:8080", "--class=nginx")
    ing = _get(kubectl, "ingress", "ing")
    assert ing["spec"]["ingressClassName"] == "nginx"
    rule = ing["spec"]["rules"][0]
    assert rule["host"] == "foo.com"
    assert rule["http"]["paths"] == [{"path": "/bar", "pathType": "Exact",
                                      "backend": {"service": {"name": "web", "port": {"number": 8080}}}}]


def test_kubectl_drain_sends_delete_options_as_protobuf(kubectl, tmp_path):
    # Node and pod go in as JSON (create -f); drain's typed client deletes the pod with a
    # protobuf DeleteOptions whose gracePeriodSeconds 0 (a pointer's zero) makes it go at once.
    (tmp_path / "n.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "default"},
         "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]}}]}))
    kubectl("create", "-f", str(tmp_path / "n.json"))
    kubectl("drain", "n1", "--force", "--grace-period=0", "--timeout=20s")
    assert _get(kubectl, "node", "n1")["spec"]["unschedulable"] is True
    assert "NotFound" in kubectl("get", "pod", "p1", ok=False).stderr
