"""`networking.cni: flannel` on a real cluster: the overlay without NetworkPolicy.  A deny-all
policy is accepted and stored, `netsim apply` and the real kubectl warn that it is not
enforced, `netsim policy explain` says so, and real packets still pass pod to pod, same node
and across nodes.  The same deny-all on canal (the default) blocks: tests/e2e/test_netpol.py
(test_default_deny_ingress_and_allow_all_union, and a new pod in a default-deny namespace is
never reachable), which this test does not repeat."""

from __future__ import annotations

import json
import shutil
import subprocess

from netsim import kernel
from netsim.model import cnimode, names, state
from netsim.node import podnet
from netsim.observe import probe
from tests.conftest import K8s, run_netsim, unique_name

SCENARIO = """apiVersion: netsim/v1alpha1
kind: Scenario
name: ignored
networking: {cni: flannel}
nodes:
  - {name: control-plane, role: control-plane}
  - {name: worker1}
"""
DENY_ALL = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
"""
NODE_OF = {"a": "worker1", "b": "worker1", "c": "control-plane"}  # a-b same node, a-c across


def pods() -> str:
    return "---\n".join(f"""apiVersion: v1
kind: Pod
metadata: {{name: {p}, labels: {{pod: {p}}}}}
spec:
  nodeName: {node}
  containers: [{{name: web, image: agnhost, ports: [{{containerPort: 80}}]}}]
""" for p, node in NODE_OF.items())


def reachable(name: str, ips: dict[str, str]) -> dict[tuple[str, str], bool]:
    return {(f, t): probe.connect(podnet.pod_netns(name, "default", f), ips[t], 80, "tcp", timeout=2.0)["result"]
            == "allow" for f in ips for t in ips if f != t}


def test_flannel_stores_a_deny_all_warns_and_packets_still_pass(state_dir, tmp_path):
    name = unique_name("fl")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    up = run_netsim("up", str(scenario), "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        assert "CNI flannel: flannel overlay, NetworkPolicy not enforced" in up.stderr
        c = K8s(name, tmp_path)
        listed = run_netsim("status").stdout.splitlines()
        assert listed[0].split()[:3] == ["NAME", "PHASE", "CNI"]
        assert [line.split()[2] for line in listed if line.startswith(name + " ")] == ["flannel"]

        # The policy first: every pod starts under it (its gate opens without any table).
        applied = c.apply(DENY_ALL)
        assert "networkpolicy/default/deny-all created" in applied.stdout
        assert f"Warning: {cnimode.policy_warning('flannel')}" in applied.stderr, applied.stderr
        c.apply(pods())
        ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in c.pods()}
        assert sorted(ips) == ["a", "b", "c"] and all(ips.values()), ips
        assert c.get("networkpolicy", "deny-all")["spec"]["policyTypes"] == ["Ingress", "Egress"]

        # What the nodes hold: a conflist without the policy plugin and no policy table.
        for node in ("control-plane", "worker1"):
            conf = json.loads((state.cluster_dir(name) / "nodes" / node / "cni" / "net.d" / podnet.CONFLIST)
                              .read_text())
            assert [p["type"] for p in conf["plugins"]] == ["flannel", "portmap"]
            tables = subprocess.run(["ip", "netns", "exec", names.netns_name(name, node), "nft", "list", "tables"],
                                    capture_output=True, text=True, check=True).stdout
            assert "netsim-policy" not in tables, tables

        # Real packets, both ways, same node and across nodes.
        seen = reachable(name, ips)
        assert all(seen.values()), seen

        explained = run_netsim("policy", "explain", "pod/default/a", "pod/default/c", "--port", "80", "-c", name)
        assert explained.returncode == 0, explained.stdout + explained.stderr
        assert "isolated by default/deny-all" in explained.stdout
        assert "enforced: no: this cluster's CNI (flannel) does not enforce NetworkPolicy" in explained.stdout
        assert "verdict: allowed, NetworkPolicy not enforced (the policies would deny it" in explained.stdout

        # The real kubectl, through netsim's API server: the same warning on its stderr.
        kubectl = shutil.which("kubectl")
        if kubectl is not None:
            config = tmp_path / "kubeconfig"
            config.write_text(run_netsim("kubeconfig", "-c", name, check=True).stdout)
            (tmp_path / "deny.yaml").write_text(DENY_ALL.replace("[Ingress, Egress]", "[Ingress]"))
            k = subprocess.run([kubectl, "--kubeconfig", str(config), "--cache-dir", str(tmp_path / "cache"),
                                "apply", "-f", str(tmp_path / "deny.yaml")], capture_output=True, text=True,
                               timeout=60)
            assert k.returncode == 0 and "configured" in k.stdout, k.stderr
            assert f"Warning: {cnimode.policy_warning('flannel')}" in k.stderr, k.stderr
            seen = reachable(name, ips)
            assert all(seen.values()), seen
    finally:
        assert run_netsim("down", name).returncode == 0
        assert kernel.list_netns(names.cluster_prefix(name)) == []
