"""autoscaling/v1 beside v2 and serviceaccounts/token, through netsim's API server on loopback:
`kubectl autoscale` (which writes an autoscaling/v1 HorizontalPodAutoscaler) then the one stored
object read at either version with the converted fields, its table, a list and a watch at v1,
discovery preferring v2; `kubectl create token` printing a JWT whose claims and ES256 signature
check out against the pki's sa.key.  The kubectl tests skip without kubectl."""

import base64
import json
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from netsim.model import conversion

HPA = "/apis/autoscaling/{}/namespaces/default/horizontalpodautoscalers"


def _call(url: str, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def kubectl(apiserver, tmp_path):
    """kubectl against conftest's apiserver, with the default namespace and its default
    service account: (returncode, stdout, stderr)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(tmp_path / "kubeconfig"), "HOME": str(tmp_path)}

    def run(*args: str, stdin: object = None) -> tuple[int, str, str]:
        r = subprocess.run(["kubectl", *args], input=None if stdin is None else json.dumps(stdin), env=env,
                           capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr
    for obj in ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
                {"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": "default", "namespace": "default"}}):
        code, _, err = run("create", "-f", "-", stdin=obj)
        assert code == 0, err
    return run


def test_kubectl_autoscale_writes_v1_and_reads_at_both_versions(kubectl, apiserver):
    assert kubectl("create", "deployment", "web", "--image=nginx")[0] == 0
    code, out, err = kubectl("autoscale", "deployment", "web", "--min=2", "--max=5", "--cpu-percent=80")
    assert code == 0, err
    assert out.strip() == "horizontalpodautoscaler.autoscaling/web autoscaled"

    code, out, err = kubectl("get", "hpa")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]
    assert row.split()[:7] == ["web", "Deployment/web", "cpu:", "<unknown>/80%", "2", "5", "0"]

    # The full resource name: kubectl 1.32's shortcut expander (client-go restmapper) drops the
    # version of a short name, so hpa.v1.autoscaling asks for the preferred v2 of any server.
    code, out, err = kubectl("get", "horizontalpodautoscalers.v1.autoscaling")
    assert code == 0, err
    assert out.splitlines()[1].split()[:7] == ["web", "Deployment/web", "cpu:", "<unknown>/80%", "2", "5", "0"]

    code, out, err = kubectl("get", "horizontalpodautoscalers.v1.autoscaling", "web", "-o", "json")
    assert code == 0, err
    v1 = json.loads(out)
    assert v1["apiVersion"] == "autoscaling/v1"
    assert v1["spec"] == {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                          "minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80}
    assert "annotations" not in v1["metadata"]

    code, out, err = kubectl("get", "hpa", "web", "-o", "json")  # the preferred version
    assert code == 0, err
    v2 = json.loads(out)
    assert v2["apiVersion"] == "autoscaling/v2"
    assert v2["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
    assert "targetCPUUtilizationPercentage" not in v2["spec"]
    assert v1["metadata"]["uid"] == v2["metadata"]["uid"]  # one stored object

    code, out, err = kubectl("get", "horizontalpodautoscalers.v1.autoscaling", "-o", "json")
    assert code == 0, err
    listed = json.loads(out)
    assert [(i["apiVersion"], i["spec"]["targetCPUUtilizationPercentage"]) for i in listed["items"]] == \
        [("autoscaling/v1", 80)]


def test_v2_fields_survive_a_v1_update_and_status_converts(apiserver):
    assert _call(apiserver + "/api/v1/namespaces", "POST", {"metadata": {"name": "default"}})[0] == 201
    memory = {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue",
                                                                            "averageValue": "500Mi"}}}
    cpu = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                      "averageUtilization": 60}}}
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 30}}
    code, made = _call(apiserver + HPA.format("v2"), "POST", {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "api"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
                 "maxReplicas": 4, "metrics": [memory, cpu], "behavior": behavior}})
    assert code == 201, made
    code, v1 = _call(apiserver + HPA.format("v1") + "/api")
    assert code == 200, v1
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 60
    assert json.loads(v1["metadata"]["annotations"][conversion.METRICS_ANNOTATION]) == [memory]

    v1["spec"]["maxReplicas"] = 9  # a v1 client's read-modify-write
    code, put = _call(apiserver + HPA.format("v1") + "/api", "PUT", v1)
    assert code == 200, put
    assert put["apiVersion"] == "autoscaling/v1" and put["spec"]["maxReplicas"] == 9
    code, v2 = _call(apiserver + HPA.format("v2") + "/api")
    assert v2["spec"]["maxReplicas"] == 9
    assert v2["spec"]["metrics"] == [cpu, memory] and v2["spec"]["behavior"] == behavior
    assert "annotations" not in v2["metadata"]

    status = {"currentReplicas": 3, "desiredReplicas": 4, "currentMetrics": [
        {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 71,
                                                                    "averageValue": "350m"}}}]}
    code, got = _call(apiserver + HPA.format("v2") + "/api/status", "PUT", {**v2, "status": status})
    assert code == 200, got
    code, v1 = _call(apiserver + HPA.format("v1") + "/api")
    assert v1["status"] == {"currentReplicas": 3, "desiredReplicas": 4, "currentCPUUtilizationPercentage": 71}

    code, listed = _call(apiserver + HPA.format("v1"))
    assert [i["apiVersion"] for i in listed["items"]] == ["autoscaling/v1"]
    code, listed = _call(apiserver + HPA.format("v2"))  # as stored: the list spliced from the store's text
    assert [(i["apiVersion"], i["spec"]["maxReplicas"]) for i in listed["items"]] == [("autoscaling/v2", 9)]
    with urllib.request.urlopen(apiserver + HPA.format("v1") + "?watch=1&timeoutSeconds=1", timeout=30) as r:
        first = json.loads(r.readline())
    assert first["type"] == "ADDED" and first["object"]["apiVersion"] == "autoscaling/v1"
    assert first["object"]["status"]["currentCPUUtilizationPercentage"] == 71


def test_v1_without_a_target_gets_the_default_cpu_metric(apiserver):
    assert _call(apiserver + "/api/v1/namespaces", "POST", {"metadata": {"name": "default"}})[0] == 201
    code, made = _call(apiserver + HPA.format("v1"), "POST", {
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "bare"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "bare"},
                 "maxReplicas": 3}})
    assert code == 201, made
    assert made["apiVersion"] == "autoscaling/v1"
    code, v2 = _call(apiserver + HPA.format("v2") + "/bare")
    assert v2["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 80}
    assert v2["spec"]["minReplicas"] == 1
    code, v2 = _call(apiserver + HPA.format("v2"), "POST", {  # v2's defaults, as SetDefaults_HorizontalPodAutoscaler
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "bare2"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "bare"},
                 "maxReplicas": 3}})
    assert code == 201, v2
    assert (v2["spec"]["minReplicas"], v2["spec"]["metrics"]) == (1, [conversion.default_cpu_metric()])
    code, bad = _call(apiserver + HPA.format("v1"), "POST", {
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "broken", "annotations": {conversion.METRICS_ANNOTATION: "{not json"}},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 3}})
    assert code == 422 and conversion.METRICS_ANNOTATION in bad["message"], bad


def test_discovery_serves_both_versions_preferring_v2(apiserver):
    code, group = _call(apiserver + "/apis/autoscaling")
    assert [v["version"] for v in group["versions"]] == ["v2", "v1"]
    assert group["preferredVersion"]["version"] == "v2"
    for version in ("v1", "v2"):
        code, resources = _call(apiserver + f"/apis/autoscaling/{version}")
        assert code == 200
        assert {r["name"] for r in resources["resources"]} >= {"horizontalpodautoscalers",
                                                              "horizontalpodautoscalers/status"}
    code, core = _call(apiserver + "/api/v1")
    token = [r for r in core["resources"] if r["name"] == "serviceaccounts/token"]
    assert token == [{"name": "serviceaccounts/token", "singularName": "", "namespaced": True,
                      "kind": "TokenRequest", "verbs": ["create"], "group": "authentication.k8s.io",
                      "version": "v1"}]


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_kubectl_create_token_prints_a_signed_jwt(kubectl, tmp_path):
    code, out, err = kubectl("create", "token", "default", "--duration=10m")
    assert code == 0, err
    header, payload, signature = out.strip().split(".")
    head, claims = json.loads(_b64decode(header)), json.loads(_b64decode(payload))
    assert head["alg"] == "ES256" and head["kid"]
    assert claims["sub"] == "system:serviceaccount:default:default"
    assert claims["iss"] == "https://kubernetes.default.svc.cluster.local"
    assert claims["aud"] == ["https://kubernetes.default.svc.cluster.local"]
    assert claims["exp"] - claims["iat"] == 600
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == "default"
    key = serialization.load_pem_private_key((tmp_path / "pki" / "sa.key").read_bytes(), None)
    raw = _b64decode(signature)
    key.public_key().verify(encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")),
                            f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))  # raises if not signed by it

    code, out, err = kubectl("create", "token", "default", "--duration=1m")
    assert code != 0 and "may not specify a duration less than 10 minutes" in err
    code, out, err = kubectl("create", "token", "nobody")
    assert code != 0 and 'serviceaccounts "nobody" not found' in err


def test_token_request_defaults_to_an_hour(apiserver):
    assert _call(apiserver + "/api/v1/namespaces", "POST", {"metadata": {"name": "default"}})[0] == 201
    assert _call(apiserver + "/api/v1/namespaces/default/serviceaccounts", "POST",
                 {"metadata": {"name": "robot"}})[0] == 201
    code, tr = _call(apiserver + "/api/v1/namespaces/default/serviceaccounts/robot/token", "POST",
                     {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                      "spec": {"audiences": ["vault"]}})
    assert code == 201, tr
    assert tr["kind"] == "TokenRequest" and tr["spec"]["expirationSeconds"] == 3600
    claims = json.loads(_b64decode(tr["status"]["token"].split(".")[1]))
    assert claims["aud"] == ["vault"] and claims["exp"] - claims["iat"] == 3600
    assert claims["sub"] == "system:serviceaccount:default:robot"
    assert tr["status"]["expirationTimestamp"] > tr["metadata"]["creationTimestamp"]
    for method in ("GET", "PUT", "PATCH", "DELETE"):  # create is its only verb
        assert _call(apiserver + "/api/v1/namespaces/default/serviceaccounts/robot/token", method,
                     {} if method in ("PUT", "PATCH") else None)[0] == 405
    assert _call(apiserver + "/api/v1/namespaces/default/serviceaccounts/robot")[0] == 200


def test_kubectl_apply_and_patch_of_a_v1_manifest(kubectl):
    hpa = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}}
    assert kubectl("apply", "-f", "-", stdin=hpa)[0] == 0
    hpa["spec"]["maxReplicas"] = 7
    code, out, err = kubectl("apply", "-f", "-", stdin=hpa)
    assert code == 0 and "configured" in out, err
    code, out, err = kubectl("patch", "horizontalpodautoscalers.v1.autoscaling", "web", "-p",
                             '{"spec":{"minReplicas":2,"targetCPUUtilizationPercentage":65}}')
    assert code == 0, err
    code, out, err = kubectl("get", "hpa", "web", "-o", "json")
    spec = json.loads(out)["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 7)
    assert spec["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 65}}}]


def test_a_bound_token_names_an_object_that_exists(apiserver):
    assert _call(apiserver + "/api/v1/namespaces", "POST", {"metadata": {"name": "default"}})[0] == 201
    assert _call(apiserver + "/api/v1/namespaces/default/serviceaccounts", "POST",
                 {"metadata": {"name": "robot"}})[0] == 201
    code, secret = _call(apiserver + "/api/v1/namespaces/default/secrets", "POST", {"metadata": {"name": "s"}})
    assert code == 201, secret
    url = apiserver + "/api/v1/namespaces/default/serviceaccounts/robot/token"

    def request(ref: dict) -> tuple[int, dict]:
        return _call(url, "POST", {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                   "spec": {"boundObjectRef": ref}})
    code, tr = request({"kind": "Secret", "apiVersion": "v1", "name": "s"})
    assert code == 201, tr
    claims = json.loads(_b64decode(tr["status"]["token"].split(".")[1]))
    assert claims["kubernetes.io"]["secret"] == {"name": "s", "uid": secret["metadata"]["uid"]}
    code, err = request({"kind": "Pod", "apiVersion": "v1", "name": "gone"})
    assert code == 404 and err["message"] == 'pods "gone" not found', err
    code, err = request({"kind": "Secret", "apiVersion": "v1", "name": "s", "uid": "other"})
    assert code == 409, err
    code, err = request({"kind": "ConfigMap", "apiVersion": "v1", "name": "s"})
    assert code == 400 and "cannot bind token" in err["message"], err
