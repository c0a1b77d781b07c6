"""`netsim check` (expected / observed / comparison tables, exit 1 on a mismatch) and ICMP probes,
on a real cluster."""

from __future__ import annotations

import json

from tests.conftest import SCENARIO, K8s, run_netsim, running, unique_name

APP = """apiVersion: v1
kind: Pod
metadata: {name: a, labels: {app: a}}
spec:
  nodeName: worker1
  containers: [{name: c, image: agnhost, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: b, labels: {app: b}}
spec:
  nodeName: worker2
  containers: [{name: c, image: agnhost, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: svc-b}
spec:
  type: NodePort
  selector: {app: b}
  ports: [{port: 80, nodePort: 30099}]
"""

EXPECT = """expect:
  - {from: pod/default/a, to: svc/default/svc-b, port: 80}
  - {from: host/client, to: svc/default/svc-b, port: 30099}
  - {from: host/client, to: node/worker1, protocol: ICMP}
  - {from: pod/default/a, to: pod/default/b, port: 81, expect: deny}
"""


def test_check_expectations_everything_and_mismatches(tmp_path, state_dir):
    name = unique_name("ck")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO + EXPECT)
    up = run_netsim("up", str(scenario), "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        k8s = K8s(name, tmp_path)
        k8s.apply(APP)
        assert len(running(k8s.pods())) == 2
        # The scenario's own expectations (the file `up` used): all as expected.
        ok = run_netsim("check", "-c", name)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "4/4 as expected" in ok.stdout and "== ICMP: 1/1 as expected" in ok.stdout
        # With no expectations: every pod to every pod and Service, as JSON.
        bare = tmp_path / "bare.yaml"
        bare.write_text(SCENARIO)
        everything = run_netsim("check", str(bare), "-o", "json", "-c", name)
        rows = json.loads(everything.stdout)
        pairs = {(r["from"], r["to"]) for r in rows}
        assert ("pod/default/a", "pod/default/b") in pairs and ("pod/default/b", "svc/default/svc-b") in pairs
        assert all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
        assert everything.returncode == 0
        # A policy that breaks an expectation: exit 1, the tables and the mismatch named.
        k8s.apply("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\n"
                  "spec:\n  podSelector: {matchLabels: {app: b}}\n  policyTypes: [Ingress]\n")
        bad = run_netsim("check", "-c", name, "--timeout", "0.5")
        assert bad.returncode == 1, bad.stdout
        assert "MISMATCH pod/default/a -> svc/default/svc-b 80/TCP: expected allow, got deny (timeout)" in bad.stdout
        assert "comparison:" in bad.stdout and "2/4 as expected" in bad.stdout
        # ICMP probes: a reply from a node; nothing from an address nobody holds.
        code, answer = k8s.probe("host/client", "node/worker1", "--proto", "icmp")
        assert code == 0 and answer["reason"] == "echo reply", answer
        code, answer = k8s.probe("pod/default/a", "ip:10.244.250.250", "--proto", "icmp", "--timeout", "0.5")
        assert code == 1 and answer["result"] == "deny", answer
    finally:
        assert run_netsim("down", name).returncode == 0


HTTP_APP = APP + """---
apiVersion: v1
kind: Service
metadata: {name: svc-lb}
spec:
  type: LoadBalancer
  selector: {app: b}
  ports: [{port: 8080, targetPort: 80}]
"""

HTTP_EXPECT = """networking:
  loadBalancerPool: 198.51.100.0/28
expect:
  - {from: pod/default/a, to: svc/default/svc-b, host: backend.aa.com, path: '/api?x=1', answeredBy: app=b}
  - {from: host/client, to: lb/default/svc-lb, host: frontend.aa.com, answeredBy: b}
  - {from: host/client, to: svc/default/svc-b, port: 30099, path: /status/503, status: 503}
  - {from: pod/default/a, to: svc/default/svc-b, host: backend.aa.com, answeredBy: app=a}
"""


def test_http_expectations_through_a_service_and_a_load_balancer(tmp_path, state_dir):
    """host/path expectations send a real HTTP request (Host header and all) and are judged by
    the echo's answer: the pod that answered and the status."""
    name = unique_name("ckh")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO + HTTP_EXPECT)
    up = run_netsim("up", str(scenario), "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        k8s = K8s(name, tmp_path)
        k8s.apply(HTTP_APP)
        assert len(running(k8s.pods())) == 2
        out = run_netsim("check", "-c", name, "-o", "json")
        rows = json.loads(out.stdout)
        assert [r["ok"] for r in rows] == [True, True, True, False], rows
        assert rows[0]["host"] == "backend.aa.com" and rows[0]["detail"] == "HTTP 200 from pod default/b"
        assert rows[2]["detail"] == "HTTP 503 from pod default/b"
        assert out.returncode == 1
        text = run_netsim("check", "-c", name)
        assert text.returncode == 1 and "== HTTP: 2/3 as expected" in text.stdout, text.stdout
        assert "== HTTP/30099: 1/1 as expected" in text.stdout and "3/4 as expected" in text.stdout
        assert ("MISMATCH pod/default/a -> svc/default/svc-b backend.aa.com/ HTTP: expected allow, got "
                "HTTP 200 from pod default/b: that pod does not match answeredBy app=a") in text.stdout, text.stdout
        # What the pod received, as the probe's answer shows it: the Host, path and headers sent.
        code, answer = k8s.probe("host/client", "lb/default/svc-lb")
        assert code == 0 and answer["responder"] == "b", answer
        code, answer = k8s.probe("host/client", "lb/default/svc-lb", "--proto", "http", "--host", "x.aa.com",
                                 "--path", "/p?q=1")
        assert code == 0 and answer["status"] == 200 and answer["target"].endswith(":8080"), answer
        echo = answer["answer"]
        assert (echo["method"], echo["host"], echo["path"]) == ("GET", "x.aa.com", "/p?q=1"), echo
        assert echo["headers"]["User-Agent"] == ["netsim-check"] and answer["clientIP"] == echo["client"].split(":")[0]
    finally:
        assert run_netsim("down", name).returncode == 0
