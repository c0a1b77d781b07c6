"""Ingress's API side on a real cluster: the DefaultIngressClass admission, validation refusing
through kubectl and `netsim apply` alike, the controller manager publishing the ingress-nginx
controller's LoadBalancer address in status.loadBalancer (and none for another class), `kubectl
get ing -o wide` and `netsim describe ing` with the web Service's endpoints.  The controller
pod here is only a pod with ingress-nginx's image (netsim's agent plays no controller in this
test): what is checked is the API and the controller manager.  Every wait is bounded."""

import json
import os
import shutil
import subprocess
import time

import pytest

from tests.conftest import REPO, run_netsim, unique_name

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")

CONTROLLER = """
apiVersion: v1
kind: Namespace
metadata: {name: ingress-nginx}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: nginx
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: other}
spec: {controller: acme.io/other}
---
apiVersion: v1
kind: Service
metadata: {name: ingress-nginx-controller, namespace: ingress-nginx}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app.kubernetes.io/component: controller}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ingress-nginx-controller, namespace: ingress-nginx}
spec:
  selector: {matchLabels: {app.kubernetes.io/component: controller}}
  template:
    metadata: {labels: {app.kubernetes.io/component: controller}}
    spec:
      containers:
      - name: controller
        image: registry.k8s.io/ingress-nginx/controller:v1.12.0
        args: [/nginx-ingress-controller, --publish-service=$(POD_NAMESPACE)/ingress-nginx-controller,
               --controller-class=k8s.io/ingress-nginx, --ingress-class=nginx]
        env:
        - name: POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        ports: [{name: http, containerPort: 80}]
"""

INGRESSES = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  rules:
  - host: frontend.aa.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: elsewhere}
spec:
  ingressClassName: other
  defaultBackend: {service: {name: web, port: {number: 80}}}
"""

INVALID = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bad}
spec:
  rules:
  - host: 10.0.0.1
    http:
      paths:
      - {path: /, backend: {service: {name: web, port: {number: 80}}}}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("ingapi")
    env = {"NETSIM_STATE_DIR": str(d / "state"), "KUBECONFIG": str(d / "kubeconfig")}
    name = unique_name("ing")
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
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return r


def get_json(env, *what):
    return json.loads(kubectl(env, "get", *what, "-o", "json").stdout)


def until(fn, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_status_address_default_class_and_refusals(cluster):
    name, env, d = cluster
    kubectl(env, "apply", "-f", "-", input=CONTROLLER)
    kubectl(env, "apply", "-f", "-", input=INGRESSES)
    web = get_json(env, "ing", "web")
    assert web["spec"]["ingressClassName"] == "nginx"  # DefaultIngressClass

    def lb_ip():
        svc = get_json(env, "-n", "ingress-nginx", "svc", "ingress-nginx-controller")
        return ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress")
    lb = until(lb_ip)
    assert lb, "the controller's LoadBalancer Service got no address"
    ip = lb[0]["ip"]
    status = until(lambda: (get_json(env, "ing", "web").get("status") or {}).get("loadBalancer", {}).get("ingress"))
    assert status == [{"ip": ip}]
    assert not (get_json(env, "ing", "elsewhere").get("status") or {}).get("loadBalancer", {}).get("ingress")

    rows = {r.split()[0]: r.split() for r in kubectl(env, "get", "ing", "-o", "wide").stdout.splitlines()[1:]}
    assert rows["web"][1:5] == ["nginx", "frontend.aa.com", ip, "80"]
    assert rows["elsewhere"][1:4] == ["other", "*", "80"]

    out = run_netsim("describe", "ing", "web", "--cluster", name, env=env)
    assert out.returncode == 0, out.stderr
    lines = [line.split() for line in out.stdout.splitlines()]
    assert ["Address:", ip] in lines and ["Ingress", "Class:", "nginx"] in lines
    backends = next(line for line in lines if line[:2] == ["/", "web:80"])
    eps = get_json(env, "endpointslices", "-l", "kubernetes.io/service-name=web")["items"]
    ready = sorted(f"{e['addresses'][0]}:80" for s in eps for e in s["endpoints"] if e["conditions"]["ready"])
    assert len(ready) == 3 and sorted(backends[2].strip("()").split(",")) == ready

    r = kubectl(env, "apply", "-f", "-", input=INVALID, check=False)
    assert r.returncode == 1 and 'The Ingress "bad" is invalid' in r.stderr
    assert 'spec.rules[0].host: Invalid value: "10.0.0.1": must be a DNS name, not an IP address' in r.stderr
    assert "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified" in r.stderr
    (d / "bad.yaml").write_text(INVALID)
    out = run_netsim("apply", "-f", str(d / "bad.yaml"), "--cluster", name, env=env)
    assert out.returncode == 1 and "pathType: Required value: pathType must be specified" in out.stderr, out.stderr
    assert kubectl(env, "get", "ing", "bad", check=False).returncode == 1  # nothing was written

    # the controller gone: the address is taken back
    kubectl(env, "delete", "-n", "ingress-nginx", "deploy", "ingress-nginx-controller")
    assert until(lambda: not (get_json(env, "ing", "web").get("status") or {}).get("loadBalancer", {}).get("ingress"))
