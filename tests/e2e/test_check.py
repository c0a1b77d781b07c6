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
