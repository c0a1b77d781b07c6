"""Ingress through the ingress-nginx add-on on one shared cluster: real curl from an external host
to the controller's LoadBalancer address, real nginx in the controller pod, echo responders
behind it.  The ingress conformance suite's host rules (exact, wildcard, TLS by SNI), path rules
(exact, prefix, mixed, trailing slash), default backend, ingress class, load balancing, the
headers and source address (externalTrafficPolicy Local, then Cluster), 503 without endpoints,
rewrite-target, canary by header and weight; nginx reloaded only when its text changes; no
nginx left after the pod goes or after `down`."""

import datetime
import ipaddress
import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from netsim import kernel
from netsim.fabric import daemon
from netsim.model import ingress_nginx, names, state
from netsim.node.ingress import controller
from tests.conftest import SCENARIO, K8s, run_netsim, running, unique_name

pytestmark = pytest.mark.skipif(controller.nginx_binary() is None, reason="no nginx (scripts/install-deps.sh)")

CLIENT_IP = "192.168.56.254"  # the scenario's external host

APP = """---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: other}
spec: {controller: example.com/other}
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: nobody}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: default-backend}
spec:
  ingressClassName: nginx
  defaultBackend: {service: {name: b, port: {number: 80}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: hosts}
spec:
  ingressClassName: nginx
  rules:
  - host: a.example.com
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]
  - host: "*.wild.example.com"
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: b, port: {name: http}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: paths}
spec:
  ingressClassName: nginx
  rules:
  - host: paths.example.com
    http:
      paths:
      - {path: /exact, pathType: Exact, backend: {service: {name: a, port: {number: 80}}}}
      - {path: /pre, pathType: Prefix, backend: {service: {name: b, port: {number: 80}}}}
      - {path: /pre/longer, pathType: Exact, backend: {service: {name: a, port: {number: 80}}}}
      - {path: /aaa/bbb/, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}
      - {path: /none, pathType: Prefix, backend: {service: {name: nobody, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: secure}
spec:
  ingressClassName: nginx
  tls: [{hosts: [secure.example.com], secretName: secure-tls}]
  rules:
  - host: secure.example.com
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: other}
spec:
  ingressClassName: other
  rules:
  - host: other.example.com
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: rewrite
  annotations:
    nginx.ingress.kubernetes.io/use-regex: "true"
    nginx.ingress.kubernetes.io/rewrite-target: /$2
spec:
  ingressClassName: nginx
  rules:
  - host: rw.example.com
    http:
      paths:
      - {path: /something(/|$)(.*), pathType: ImplementationSpecific,
         backend: {service: {name: a, port: {number: 80}}}}
---
# ingress-nginx adds a canary to the main backend's upstream, whichever host uses it: the main
# Service here is a's pods under a name of its own
apiVersion: v1
kind: Service
metadata: {name: main}
spec:
  selector: {app: a}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: main}
spec:
  ingressClassName: nginx
  rules:
  - host: canary.example.com
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: main, port: {number: 80}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: canary
  annotations:
    nginx.ingress.kubernetes.io/canary: "true"
    nginx.ingress.kubernetes.io/canary-by-header: X-Canary
    nginx.ingress.kubernetes.io/canary-weight: "50"
spec:
  ingressClassName: nginx
  rules:
  - host: canary.example.com
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: canary, port: {number: 80}}}}]
"""


def deployment(name: str, replicas: int) -> str:
    return f"""---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: echo
        image: registry.k8s.io/ingress-conformance/echoserver
        ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""


def tls_secret(host: str, cert_path: Path) -> str:
    """A kubernetes.io/tls Secret with a self-signed certificate for ``host`` (also written to
    ``cert_path``, for curl's --cacert)."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    crt = cert.public_bytes(serialization.Encoding.PEM)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    cert_path.write_bytes(crt)
    b64 = base64.b64encode
    return f"""---
apiVersion: v1
kind: Secret
metadata: {{name: secure-tls}}
type: kubernetes.io/tls
data: {{tls.crt: {b64(crt).decode()}, tls.key: {b64(pem).decode()}}}
"""


class Ingress:
    """The shared cluster: its driver, the LoadBalancer address, the CA file for secure.example.com."""

    def __init__(self, k8s: K8s, lb: str, ca: Path, kubeconfig: Path):
        self.k8s, self.lb, self.ca, self.kubeconfig = k8s, lb, ca, kubeconfig

    def curl(self, *requests: list[str]) -> list[tuple[int, dict | str]]:
        """Run curl once per request (its extra arguments, the URL last, "LB" standing for the
        controller's address) on the external host, all in one `netsim exec`; (status, echo) each."""
        script = []
        for args in requests:
            args = [a.replace("LB", self.lb) for a in args]
            script.append(f"curl -s -m 5 -w '\\n%{{http_code}}' {' '.join(shlex.quote(a) for a in args)}; echo; "
                          "echo @@")
        path = self.k8s.tmp_path / "requests.sh"  # the host shares this machine's files
        path.write_text("\n".join(script) + "\n")
        out = self.k8s("exec", "host/client", "--", "sh", str(path)).stdout
        results = []
        for chunk in out.split("@@\n")[:len(requests)]:
            body, _, code = chunk.rstrip("\n").rpartition("\n")
            try:
                results.append((int(code), json.loads(body)))
            except ValueError:
                results.append((int(code or 0), body))
        return results

    def get(self, host: str, path: str, *extra: str) -> tuple[int, dict | str]:
        return self.curl([*extra, "-H", f"Host: {host}", f"http://LB{path}"])[0]

    def proxy_dir(self) -> Path:
        [d] = (state.cluster_dir(self.k8s.name) / "proxies").iterdir()
        return d

    def kubectl(self, *args: str) -> str:
        out = subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout


def _nginx_of(cluster: str) -> list[int]:
    """nginx processes started for this cluster: masters whose command line (its title keeps
    it) has a -p under the cluster's state dir, and their workers."""
    where = str(state.cluster_dir(cluster)).encode()
    procs = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip() == "nginx":
                    ppid = int((p / "stat").read_text().rsplit(") ", 1)[1].split()[1])
                    procs[int(p.name)] = (ppid, (p / "cmdline").read_bytes())
            except (OSError, IndexError, ValueError):
                continue
    masters = {pid for pid, (_, cmd) in procs.items() if where in cmd}
    return sorted(masters | {pid for pid, (ppid, _) in procs.items() if ppid in masters})


@pytest.fixture(scope="module")
def ing(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ingress")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NETSIM_STATE_DIR", str(tmp / "state"))
        mp.setenv("KUBECONFIG", str(tmp / "kubeconfig"))
        name = unique_name("ing")
        scenario = tmp / "scenario.yaml"
        scenario.write_text(SCENARIO + "networking:\n  loadBalancerPool: 198.51.100.0/28\naddons: [ingress-nginx]\n")
        started = time.monotonic()
        up = run_netsim("up", str(scenario), "--name", name)
        try:
            assert up.returncode == 0, up.stderr
            k8s = K8s(name, tmp)
            ca = tmp / "secure.crt"
            k8s.apply(deployment("a", 2) + deployment("b", 1) + deployment("canary", 1)
                      + tls_secret("secure.example.com", ca) + APP)
            svc = json.loads(k8s("get", "svc", "ingress-nginx-controller", "-n", "ingress-nginx", "-o", "json").stdout)
            lb = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
            print(f"cluster with ingress-nginx up and applied in {time.monotonic() - started:.1f} s")
            yield Ingress(k8s, lb, ca, tmp / "kubeconfig")
        finally:
            down = run_netsim("down", name)
            assert down.returncode == 0, down.stderr
            assert kernel.list_netns(names.cluster_prefix(name)) == []
            assert daemon.agent_pids(name) == []
            assert _nginx_of(name) == []  # nothing outlives down
            assert not (state.cluster_dir(name) / "proxies").exists()


def pods_of(ing: Ingress, app: str) -> set[str]:
    return {p["metadata"]["name"] for p in running(ing.k8s.pods(f"app={app}"))}


def test_controller_pod_runs_nginx_and_is_ready(ing):
    pods = json.loads(ing.k8s("get", "pods", "-n", "ingress-nginx", "-o", "json").stdout)["items"]
    [pod] = running(pods)
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
    d = ing.proxy_dir()
    assert d.name.startswith(f"ingress-nginx_{pod['metadata']['name']}_")
    assert (d / "nginx.conf").stat().st_mode & 0o777 == 0o600
    assert int((d / "nginx.pid").read_text()) in _nginx_of(ing.k8s.name)


def test_host_rules_exact_wildcard_one_label_and_default_backend(ing):
    a, b = pods_of(ing, "a"), pods_of(ing, "b")
    (ca, ea), (cw, ew), (cdeep, edeep), (cbare, ebare), (cnone, enone) = ing.curl(
        ["-H", "Host: a.example.com", "http://LB/"],
        ["-H", "Host: x.wild.example.com", "http://LB/"],
        ["-H", "Host: x.y.wild.example.com", "http://LB/"],  # a wildcard matches one label only
        ["-H", "Host: wild.example.com", "http://LB/"],
        ["-H", "Host: unknown.example.com", "http://LB/"])
    assert ca == 200 and ea["pod"] in a and ea["host"] == "a.example.com"
    assert cw == 200 and ew["pod"] in b
    # no host matched: the defaultBackend (b), not a
    for code, echo in ((cdeep, edeep), (cbare, ebare), (cnone, enone)):
        assert code == 200 and echo["pod"] in b, echo


def test_path_rules_exact_prefix_mixed_trailing_slash(ing):
    a, b = pods_of(ing, "a"), pods_of(ing, "b")
    paths = ["/exact", "/exact/", "/pre", "/pre/", "/pre/x", "/prefix", "/pre/longer", "/pre/longer/x",
             "/aaa/bbb", "/aaa/bbb/", "/aaa/bbb/c", "/aaa/bbbc", "/other"]
    answers = ing.curl(*[["-H", "Host: paths.example.com", f"http://LB{p}"] for p in paths])
    results = dict(zip(paths, answers, strict=True))

    def served(path):
        code, echo = results[path]
        return "a" if code == 200 and echo["pod"] in a else "b" if code == 200 and echo["pod"] in b else code

    assert served("/exact") == "a" and served("/exact/") == 404
    assert served("/pre") == served("/pre/") == served("/pre/x") == "b"
    assert served("/prefix") == 404  # element-wise: /prefix is not under /pre
    assert served("/pre/longer") == "a" and served("/pre/longer/x") == "b"  # longest, Exact only exact
    assert served("/aaa/bbb") == served("/aaa/bbb/") == served("/aaa/bbb/c") == "a"  # the trailing-slash row
    assert served("/aaa/bbbc") == 404 and served("/other") == 404  # the host's Ingress has no defaultBackend
    assert results["/aaa/bbb/c"][1]["path"] == "/aaa/bbb/c"


def test_503_without_endpoints(ing):
    code, body = ing.get("paths.example.com", "/none")
    assert code == 503, body


def test_tls_by_sni_with_the_secret_and_308_from_http(ing):
    (code, echo), (redirect, _), (fallback, _) = ing.curl(
        ["--cacert", str(ing.ca), "--resolve", "secure.example.com:443:LB", "https://secure.example.com/x"],
        ["-H", "Host: secure.example.com", "-o", "/dev/null", "http://LB/x"],
        # another name by SNI gets the fake certificate, which this CA does not sign
        ["--cacert", str(ing.ca), "--resolve", "a.example.com:443:LB", "https://a.example.com/"])
    assert code == 200 and echo["pod"] in pods_of(ing, "a")
    assert echo["headers"]["X-Forwarded-Proto"] == ["https"] and echo["headers"]["X-Forwarded-Port"] == ["443"]
    assert redirect == 308
    assert fallback == 0  # curl: the certificate does not verify


def test_ingress_of_another_class_gets_no_traffic(ing):
    code, echo = ing.get("other.example.com", "/")
    assert code == 200 and echo["pod"] in pods_of(ing, "b")  # the default backend, not a


def test_load_balancing_over_all_endpoints(ing):
    a = pods_of(ing, "a")
    assert len(a) == 2
    seen = {echo["pod"] for code, echo in ing.curl(*[["-H", "Host: a.example.com", "http://LB/"]] * 6)}
    assert seen == a


def test_headers_and_client_address_with_local_traffic_policy(ing):
    code, echo = ing.get("a.example.com", "/h?q=1", "-H", "X-Forwarded-For: 1.2.3.4", "-H", "X-Request-ID: abc")
    assert code == 200 and echo["path"] == "/h?q=1"
    h = echo["headers"]
    assert h["X-Real-Ip"] == [CLIENT_IP] and h["X-Forwarded-For"] == [CLIENT_IP]  # incoming XFF not trusted
    assert h["X-Forwarded-Host"] == ["a.example.com"] and h["X-Forwarded-Proto"] == ["http"]
    assert h["X-Forwarded-Port"] == ["80"] and h["X-Request-Id"] == ["abc"]
    controller_pod = json.loads(ing.k8s("get", "pods", "-n", "ingress-nginx", "-o", "json").stdout)["items"][0]
    assert echo["client"].split(":")[0] == controller_pod["status"]["podIP"]  # a new connection from nginx
    # the controller's access log, through kubectl logs
    logs = ing.kubectl("logs", "-n", "ingress-nginx", controller_pod["metadata"]["name"])
    assert any(line.startswith(f'{CLIENT_IP} "GET /h?q=1" 200 [default-a-80] ') for line in logs.splitlines()), logs


def test_rewrite_target_with_capture_groups(ing):
    (c1, e1), (c2, e2) = ing.curl(["-H", "Host: rw.example.com", "http://LB/something/new/path?x=1"],
                                  ["-H", "Host: rw.example.com", "http://LB/something"])
    assert c1 == 200 and e1["path"] == "/new/path?x=1"
    assert c2 == 200 and e2["path"] == "/"


def test_canary_by_header_and_weight(ing):
    canary, a = pods_of(ing, "canary"), pods_of(ing, "a")
    results = ing.curl(*[["-H", "Host: canary.example.com", "-H", "X-Canary: always", "http://LB/"]] * 3,
                       *[["-H", "Host: canary.example.com", "-H", "X-Canary: never", "http://LB/"]] * 3,
                       *[["-H", "Host: canary.example.com", "http://LB/"]] * 24)
    pods = [echo["pod"] for _, echo in results]
    assert set(pods[:3]) <= canary and set(pods[3:6]) <= a
    weighted = set(pods[6:])  # weight 50: both sides within 24 requests (all on one: p = 2^-23)
    assert weighted & canary and weighted & a


def test_reload_only_when_the_configuration_changes(ing):
    d = ing.proxy_dir()
    pid, mtime = int((d / "nginx.pid").read_text()), (d / "nginx.conf").stat().st_mtime_ns
    # a Service nothing routes to: the config is recomputed, its text is the same, no reload
    ing.k8s.apply("apiVersion: v1\nkind: Service\nmetadata: {name: unrelated}\nspec:\n"
                  "  selector: {app: nobody}\n  ports: [{port: 81}]\n")
    assert (d / "nginx.conf").stat().st_mtime_ns == mtime
    started = time.monotonic()
    ing.k8s.apply("""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: late}
spec:
  ingressClassName: nginx
  rules:
  - host: late.example.com
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]
""")
    code, echo = ing.get("late.example.com", "/", "-v")
    print(f"Ingress applied to the new route answering: {(time.monotonic() - started) * 1000:.0f} ms")
    assert code == 200 and echo["pod"] in pods_of(ing, "a")  # `apply` returned after the reload
    assert (d / "nginx.conf").stat().st_mtime_ns != mtime
    assert int((d / "nginx.pid").read_text()) == pid  # SIGHUP, the same master


def test_cluster_traffic_policy_shows_a_node_address(ing):
    ing.kubectl("patch", "svc", "-n", "ingress-nginx", "ingress-nginx-controller", "-p",
                '{"spec":{"externalTrafficPolicy":"Cluster"}}')
    ing.k8s("apply", "-f", os.devnull, check=False)  # nothing; lets the agents settle on the patch
    nodes = json.loads(ing.k8s("get", "nodes", "-o", "json").stdout)["items"]
    # the node that took the packet masquerades it: its own address on the path to the pod
    # (the underlay's, or flannel.1's / cni0's at the start of its podCIDR)
    node_ips = {n["status"]["addresses"][0]["address"] for n in nodes}
    for n in nodes:
        net = ipaddress.ip_network(n["spec"]["podCIDR"])
        node_ips |= {str(net.network_address), str(net.network_address + 1)}
    deadline = time.monotonic() + 10
    while True:
        code, echo = ing.get("a.example.com", "/")
        if code == 200 and echo["headers"]["X-Real-Ip"][0] != CLIENT_IP or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert code == 200 and echo["headers"]["X-Real-Ip"][0] in node_ips, echo


def test_no_nginx_left_after_the_controller_pod_goes(ing):
    old = ing.proxy_dir()
    pid = int((old / "nginx.pid").read_text())
    pod = old.name.split("_")[1]
    ing.k8s("delete", "pod", pod, "-n", "ingress-nginx")
    deadline = time.monotonic() + 10
    while kernel.process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not kernel.process_alive(pid) and not old.exists()
    # the Deployment's new pod serves again
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code, _ = ing.get("a.example.com", "/")
        if code == 200:
            break
        time.sleep(0.3)
    assert code == 200
    assert len(_nginx_of(ing.k8s.name)) == 2  # the new pod's master and worker only


def test_upstream_deploy_yaml_applies_unmodified_and_serves(ing):
    """kubernetes/ingress-nginx's deploy/static/provider/cloud/deploy.yaml over the add-on: every
    object accepted (RBAC, ConfigMap, admission Jobs and webhook stored), the controller
    Deployment rolled to upstream's pod spec, whose args the agent reads, and traffic served."""
    manifest = Path(__file__).resolve().parent.parent / "data" / "ingress-nginx" / "deploy.yaml"
    ing.k8s("apply", "-f", str(manifest))
    assert ing.kubectl("get", "validatingwebhookconfiguration", "ingress-nginx-admission", "-o", "name")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pods = running(json.loads(ing.k8s("get", "pods", "-n", "ingress-nginx", "-o", "json").stdout)["items"])
        controllers = [p for p in pods if ingress_nginx.is_controller_pod(p)]
        if len(controllers) == 1 and "v1.15.1" in controllers[0]["spec"]["containers"][0]["image"]:
            break
        time.sleep(0.3)
    [pod] = controllers
    assert ingress_nginx.controller_args(pod) == ingress_nginx.ControllerArgs(
        ingress_class="nginx", controller_class="k8s.io/ingress-nginx",
        publish_service="ingress-nginx/ingress-nginx-controller")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code, echo = ing.get("a.example.com", "/")
        if code == 200:
            break
        time.sleep(0.3)
    assert code == 200 and echo["pod"] in pods_of(ing, "a")
    assert len(_nginx_of(ing.k8s.name)) == 2  # the replaced pod's nginx is gone


def test_trace_through_the_controller_follows_the_new_connection(ing):
    a = pods_of(ing, "a")
    out = run_netsim("trace", "host/client", "lb/ingress-nginx/ingress-nginx-controller", "--port", "80",
                     "--host", "a.example.com", "--path", "/x", "-o", "json", "-c", ing.k8s.name)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["verdict"]["result"] == "DELIVERED" and doc["verdict"]["where"].startswith("pod ingress-nginx/")
    assert doc["reply"][0]["summary"].endswith("TCP [SA]")  # nginx's SYN-ACK, not the underlay's ICMP redirect
    proxy = doc["proxy"]
    assert proxy["kind"] == "ingress-nginx" and proxy["decision"]["server"] == "a.example.com"
    assert proxy["decision"]["status"] == 200 and proxy["request"]["status"] == 200
    backend = proxy["backendPod"].rsplit("/", 1)[1]
    assert backend in a
    nxt = proxy["next"]
    assert nxt["from"] == "pod/" + proxy["proxy"].split("/", 1)[1]
    assert nxt["verdict"]["result"] == "DELIVERED" and nxt["verdict"]["where"] == f"pod default/{backend}"
    # the new connection starts at the controller pod's own address
    assert nxt["packet"]["src"] == proxy["request"]["clientIP"]

    text = run_netsim("trace", "host/client", "lb/ingress-nginx/ingress-nginx-controller", "--port", "80",
                      "--host", "unknown.example.com", "--path", "/", "-c", ing.k8s.name)
    # no host matched: the default-backend Ingress sends it to b
    assert text.returncode == 0, text.stdout + text.stderr
    assert "catch-all server _" in text.stdout and "new connection from the proxy" in text.stdout

    miss = run_netsim("trace", "host/client", "lb/ingress-nginx/ingress-nginx-controller", "--port", "80",
                      "--host", "paths.example.com", "--path", "/none", "-c", ing.k8s.name)
    assert miss.returncode == 1, miss.stdout + miss.stderr
    assert "HTTP 503 from the proxy itself" in miss.stdout and "new connection" not in miss.stdout
