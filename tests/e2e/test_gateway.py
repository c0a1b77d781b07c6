"""The Gateway API on a real cluster (`addons: [gateway]`): a Gateway gets its proxy pod (real
nginx) and a LoadBalancer address in status.addresses, and curl from an external host through
that address gets the gateway-api conformance cases' answers: SimpleSameNamespace, Matching,
PathMatchOrder, HostnameIntersection, RequestHeaderModifier, RedirectHostAndStatus, Weight,
NoBackendRefs and a missing backend.  One cluster for the module; the echo responders say which
pod answered and the headers it received."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time

import pytest

from netsim import kernel
from netsim.model import names
from tests.conftest import SCENARIO, K8s, run_netsim, running, unique_name

G = "gateway.networking.k8s.io/v1"


def _backend(name: str) -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: echo, image: echo, ports: [{{containerPort: 3000}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 8080, targetPort: 3000}}]
---
"""


def _route(name: str, hostnames: list[str], rules: list[dict]) -> str:
    return json.dumps({"apiVersion": G, "kind": "HTTPRoute",
                       "metadata": {"name": name, "namespace": "gateway-conformance-infra"},
                       "spec": {"parentRefs": [{"name": "same-namespace"}], "hostnames": hostnames,
                                "rules": rules}}) + "\n---\n"


def _to(service: str, **extra) -> dict:
    return {"backendRefs": [{"name": service, "port": 8080}], **extra}


def _prefix(path: str, kind: str = "PathPrefix") -> list[dict]:
    return [{"path": {"type": kind, "value": path}}]


MANIFESTS = ("apiVersion: v1\nkind: Namespace\nmetadata: {name: gateway-conformance-infra}\n---\n"
             + "".join(_backend(n) for n in ("infra-backend-v1", "infra-backend-v2", "infra-backend-v3"))
             + json.dumps({"apiVersion": G, "kind": "Gateway",
                           "metadata": {"name": "same-namespace", "namespace": "gateway-conformance-infra"},
                           "spec": {"gatewayClassName": "netsim", "listeners": [
                               {"name": "http", "port": 80, "protocol": "HTTP"},
                               {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "secure.example",
                                "tls": {"certificateRefs": [{"name": "secure-cert"}]}}]}}) + "\n---\n"
             + json.dumps({"apiVersion": G, "kind": "HTTPRoute",
                           "metadata": {"name": "secure", "namespace": "gateway-conformance-infra"},
                           "spec": {"parentRefs": [{"name": "same-namespace", "sectionName": "https"}],
                                    "rules": [_to("infra-backend-v3")]}}) + "\n---\n"
             + _route("simple", ["simple.example"], [_to("infra-backend-v1")])
             + _route("matching", ["matching.example"], [
                 _to("infra-backend-v1", matches=[*_prefix("/"), {"headers": [{"name": "version", "value": "one"}]}]),
                 _to("infra-backend-v2",
                     matches=[*_prefix("/v2"), {"headers": [{"name": "version", "value": "two"}]}])])
             + _route("path-matching-order", ["order.example"], [
                 _to("infra-backend-v1", matches=_prefix("/match", "Exact")),
                 _to("infra-backend-v2", matches=_prefix("/match/exact", "Exact")),
                 _to("infra-backend-v3", matches=_prefix("/match/exact/one", "Exact")),
                 _to("infra-backend-v3", matches=_prefix("/match/")),
                 _to("infra-backend-v1", matches=_prefix("/match/prefix/")),
                 _to("infra-backend-v2", matches=_prefix("/match/prefix/one"))])
             + _route("wildcard", ["*.wildcard.io"], [_to("infra-backend-v2")])
             + _route("anyhost", [], [_to("infra-backend-v3", matches=_prefix("/anyhost"))])
             + _route("fall", ["fall.example"], [
                 _to("infra-backend-v2", matches=[{**_prefix("/a")[0], "headers": [{"name": "x", "value": "1"}]}]),
                 _to("infra-backend-v1")])
             + _route("filters", ["filters.example"], [
                 _to("infra-backend-v1", matches=_prefix("/set"), filters=[
                     {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                         "set": [{"name": "X-Header-Set", "value": "set-overwrites-values"}],
                         "add": [{"name": "X-Header-Add", "value": "add-appends-values"}],
                         "remove": ["X-Header-Remove"]}}]),
                 {"matches": _prefix("/hostname-redirect"),
                  "filters": [{"type": "RequestRedirect", "requestRedirect": {"hostname": "example.org"}}]},
                 {"matches": _prefix("/host-and-status"), "filters": [
                     {"type": "RequestRedirect", "requestRedirect": {"hostname": "example.org", "statusCode": 301}}]},
                 {"matches": _prefix("/no-backends")},
                 {"matches": _prefix("/missing"), "backendRefs": [{"name": "no-such-service", "port": 8080}]},
                 {"matches": _prefix("/half"), "backendRefs": [
                     {"name": "infra-backend-v1", "port": 8080}, {"name": "no-such-service", "port": 8080}]},
                 {"matches": _prefix("/weighted"), "backendRefs": [
                     {"name": "infra-backend-v1", "port": 8080, "weight": 1},
                     {"name": "infra-backend-v2", "port": 8080, "weight": 1},
                     {"name": "infra-backend-v3", "port": 8080, "weight": 0}]}]))


def _tls_secret(tmp) -> str:
    """A kubernetes.io/tls Secret for secure.example, self-signed (cert.pem stays for curl)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=secure.example", "-addext", "subjectAltName=DNS:secure.example",
                    "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem")], check=True, capture_output=True)
    data = {k: base64.b64encode((tmp / f).read_bytes()).decode() for k, f in (("tls.crt", "cert.pem"),
                                                                               ("tls.key", "key.pem"))}
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "data": data,
                       "metadata": {"name": "secure-cert", "namespace": "gateway-conformance-infra"}})


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gw")
    state = tmp / "state"
    mp = pytest.MonkeyPatch()
    mp.setenv("NETSIM_STATE_DIR", str(state))
    mp.setenv("KUBECONFIG", str(tmp / "kubeconfig"))
    name = unique_name("gw")
    scenario = tmp / "scenario.yaml"
    scenario.write_text(SCENARIO + "addons: [gateway]\nnetworking:\n  loadBalancerPool: 198.51.100.0/28\n")
    up = run_netsim("up", str(scenario), "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        k8s = K8s(name, tmp)
        k8s.apply(MANIFESTS + _tls_secret(tmp))
        deadline = time.monotonic() + 30
        while True:
            gw = json.loads(k8s("get", "gateway", "same-namespace", "-n", "gateway-conformance-infra",
                                "-o", "json").stdout)
            proxies = running(json.loads(k8s("get", "pods", "-n", "gateway-conformance-infra", "-o", "json", "-l",
                                             "gateway.networking.k8s.io/gateway-name=same-namespace").stdout)["items"])
            ready = [p for p in proxies if any(c["type"] == "Ready" and c["status"] == "True"
                                               for c in p["status"].get("conditions", []))]
            if gw.get("status", {}).get("addresses") and ready:
                break
            assert time.monotonic() < deadline, (json.dumps(gw.get("status")), [p.get("status") for p in proxies],
                                                 k8s("get", "pods", "-A", "-o", "wide").stdout, k8s.log_tail())
            time.sleep(0.3)
        yield k8s, gw, tmp
    finally:
        assert run_netsim("down", name).returncode == 0
        assert kernel.list_netns(names.cluster_prefix(name)) == []
        mp.undo()


def curl(k8s: K8s, address: str, host: str, path: str, headers: dict | None = None) -> tuple[int, dict, str]:
    """(status, the echo's JSON or {}, the Location header) of a GET from the external host."""
    cmd = ["ip", "netns", "exec", names.netns_name(k8s.name, "client"), "curl", "-s", "-m", "5", "-D", "-",
           "-H", f"Host: {host}", *[a for k, v in (headers or {}).items() for a in ("-H", f"{k}: {v}")],
           f"http://{address}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.replace("\r\n", "\n").partition("\n\n")
    status = int(head.split()[1])
    location = next((line.split(":", 1)[1].strip() for line in head.splitlines()
                     if line.lower().startswith("location:")), "")
    try:
        echo = json.loads(body)
    except ValueError:
        echo = {}
    return status, echo, location


def _who(echo: dict) -> str:
    return echo.get("pod", "").rsplit("-", 2)[0]


def test_gateway_status(gateway):
    k8s, gw, _ = gateway
    conds = {c["type"]: c["status"] for c in gw["status"]["conditions"]}
    assert conds == {"Accepted": "True", "Programmed": "True"}
    assert gw["status"]["addresses"][0]["value"].startswith("198.51.100.")
    assert gw["status"]["listeners"][0]["attachedRoutes"] == 7
    route = json.loads(k8s("get", "httproute", "filters", "-n", "gateway-conformance-infra", "-o", "json").stdout)
    (parent,) = route["status"]["parents"]
    assert {c["type"]: c["reason"] for c in parent["conditions"]} == {"Accepted": "Accepted",
                                                                    "ResolvedRefs": "BackendNotFound"}
    table = k8s("get", "gateway", "-n", "gateway-conformance-infra").stdout
    assert "same-namespace" in table and "netsim" in table and "True" in table
    gc = k8s("get", "gatewayclass").stdout
    assert "netsim.io/gateway-controller" in gc


@pytest.mark.parametrize("host,path,headers,want", [
    ("simple.example", "/", None, "infra-backend-v1"),
    ("matching.example", "/", None, "infra-backend-v1"),
    ("matching.example", "/", {"version": "two"}, "infra-backend-v2"),
    ("matching.example", "/v2", {"version": "one"}, "infra-backend-v2"),  # the longer path wins
    ("matching.example", "/v2/example", None, "infra-backend-v2"),
    ("matching.example", "/v2example", None, "infra-backend-v1"),
    ("order.example", "/match/exact/one", None, "infra-backend-v3"),
    ("order.example", "/match/exact", None, "infra-backend-v2"),
    ("order.example", "/match", None, "infra-backend-v1"),
    ("order.example", "/match/prefix/one/any", None, "infra-backend-v2"),
    ("order.example", "/match/prefix/any", None, "infra-backend-v1"),
    ("order.example", "/match/any", None, "infra-backend-v3"),
    ("fall.example", "/a/b", {"x": "1"}, "infra-backend-v2"),
    ("fall.example", "/a/b", None, "infra-backend-v1"),  # the header fails: on to the next rule that matches
    ("foo.bar.wildcard.io", "/", None, "infra-backend-v2"),  # a Gateway wildcard: one or more labels
    ("wildcard.io", "/", None, 404),
    ("nobody.example", "/", None, 404),
    ("nobody.example", "/anyhost", None, "infra-backend-v3"),  # a route without hostnames: any host
    ("simple.example", "/anyhost", None, "infra-backend-v1"),  # but a host's own rules come first
    ("filters.example", "/no-backends", None, 500),
    ("filters.example", "/missing", None, 500),
])
def test_routing(gateway, host, path, headers, want):
    k8s, gw, _ = gateway
    status, echo, _ = curl(k8s, gw["status"]["addresses"][0]["value"], host, path, headers)
    if isinstance(want, int):
        assert status == want, (status, echo)
    else:
        assert (status, _who(echo)) == (200, want), echo
        assert echo["path"] == path and echo["host"] == host


def test_request_header_modifier(gateway):
    k8s, gw, _ = gateway
    status, echo, _ = curl(k8s, gw["status"]["addresses"][0]["value"], "filters.example", "/set",
                           {"X-Header-Set": "some-other-value", "X-Header-Add": "before", "X-Header-Remove": "x"})
    headers = {k.lower(): v for k, v in echo["headers"].items()}
    assert status == 200
    assert headers["x-header-set"] == ["set-overwrites-values"]
    assert headers["x-header-add"] in (["before,add-appends-values"], ["before", "add-appends-values"])
    assert "x-header-remove" not in headers


def test_redirect_host_and_status(gateway):
    k8s, gw, _ = gateway
    address = gw["status"]["addresses"][0]["value"]
    assert curl(k8s, address, "filters.example", "/hostname-redirect")[::2] == (
        302, "http://example.org/hostname-redirect")
    assert curl(k8s, address, "filters.example", "/host-and-status")[::2] == (301, "http://example.org/host-and-status")


def test_weight(gateway):
    k8s, gw, _ = gateway
    seen = {_who(curl(k8s, gw["status"]["addresses"][0]["value"], "filters.example", "/weighted")[1])
            for _ in range(16)}
    assert seen == {"infra-backend-v1", "infra-backend-v2"}  # weight 0 takes none


def test_kubectl_apply_and_change_a_route(gateway):
    """kubectl (client-side apply: its patch built from our OpenAPI) creates and then changes a
    route; the proxy serves each version within a bounded wait."""
    k8s, gw, _ = gateway
    address = gw["status"]["addresses"][0]["value"]
    env = {**os.environ}

    def apply(service: str) -> None:
        doc = _route("late", ["late.example"], [_to(service)]).removesuffix("---\n")
        out = subprocess.run(["kubectl", "apply", "-f", "-"], input=doc, capture_output=True, text=True, env=env,
                             timeout=30)
        assert out.returncode == 0, out.stderr

    for service in ("infra-backend-v3", "infra-backend-v1"):
        apply(service)
        deadline = time.monotonic() + 10
        while (got := curl(k8s, address, "late.example", "/")) and _who(got[1]) != service:
            assert time.monotonic() < deadline, got
            time.sleep(0.2)
    table = subprocess.run(["kubectl", "get", "httproute", "-n", "gateway-conformance-infra", "late"],
                           capture_output=True, text=True, env=env, timeout=30)
    assert table.stdout.split()[:3] == ["NAME", "HOSTNAMES", "AGE"] and "late.example" in table.stdout, table


def test_https_listener(gateway):
    """TLS terminated with the listener's certificateRefs Secret; the route attached to that
    listener only (sectionName) is not served on the plain one."""
    k8s, gw, tmp = gateway
    address = gw["status"]["addresses"][0]["value"]
    https = next(x for x in gw["status"]["listeners"] if x["name"] == "https")
    assert {c["type"]: c["status"] for c in https["conditions"]}["ResolvedRefs"] == "True"
    assert https["attachedRoutes"] == 2  # "secure", and "anyhost" (no sectionName, no hostnames)
    out = subprocess.run(["ip", "netns", "exec", names.netns_name(k8s.name, "client"), "curl", "-s", "-m", "5",
                          "--cacert", str(tmp / "cert.pem"), "--resolve", f"secure.example:443:{address}",
                          "https://secure.example/tls"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    echo = json.loads(out.stdout)
    assert _who(echo) == "infra-backend-v3" and echo["path"] == "/tls"
    assert curl(k8s, address, "secure.example", "/tls")[0] == 404


def test_explain(gateway):
    k8s, _, _ = gateway
    gw_ref = ("--gateway", "gateway-conformance-infra/same-namespace", "-c", k8s.name)
    r = run_netsim("ingress", "explain", *gw_ref, "--host", "matching.example", "/", "-H", "version:two", "-o", "json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["status"] == 200 and d["backend"]["service"] == "infra-backend-v2", d
    assert any("HTTPRoute gateway-conformance-infra/filters: ResolvedRefs False (BackendNotFound)" in n
               for n in d["related"]), d["related"]
    missing = run_netsim("ingress", "explain", *gw_ref, "--host", "filters.example", "/no-backends")
    assert missing.returncode == 1 and "500" in missing.stdout, missing.stdout


def test_a_missing_backend_keeps_its_share_as_500(gateway):
    k8s, gw, _ = gateway
    seen = {curl(k8s, gw["status"]["addresses"][0]["value"], "filters.example", "/half")[0] for _ in range(16)}
    assert seen == {200, 500}
