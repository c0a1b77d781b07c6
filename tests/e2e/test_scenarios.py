"""The scenario library: every file in scenarios/ goes through `netsim up FILE`, `netsim check`
(all as expected) and `netsim down`, as a user runs it; new files are picked up by the glob.
Then `pods/NS/SELECTOR` expectation refs, expanded by netsim.observe.check (pure, no kernel).

A scenario whose kube-proxy mode needs IPVS runs inside the qemu guest (netsim.kernel.guest) when
this kernel has no ip_vs, as tests/kernel/test_proxy_ipvs.py does."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netsim.kernel import guest
from netsim.model import names
from netsim.model.scenario import ScenarioError, load_scenario
from netsim.observe import check, probe
from tests.conftest import REPO, K8s, run_netsim, unique_name

SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))


class CheckMismatch(AssertionError):
    """`netsim check` ran and found the dataplane not as the scenario expects."""


# Scenarios whose expectations a known netsim bug breaks: kept as written, failing until fixed.
def _ipvs_why_not() -> str:
    from proxy.ipvs import load_ipvs

    return load_ipvs()


IPVS_WHY_NOT = _ipvs_why_not()


def _param(path: Path):
    return pytest.param(path, id=path.stem)


def _daemonset_on_every_node_and_job_done(k8s: K8s, scn) -> None:
    pods = json.loads(k8s("get", "pods", "-A", "-o", "json").stdout)["items"]
    exporters = [p for p in pods if p["metadata"]["name"].startswith("node-exporter-")]
    assert sorted(p["spec"]["nodeName"] for p in exporters) == sorted(n.name for n in scn.nodes)
    deadline = time.monotonic() + 20
    while True:
        job = k8s.get("job", "migrate")
        if job.get("status", {}).get("succeeded") == 2:
            break
        assert time.monotonic() < deadline, job.get("status")
        time.sleep(0.2)


def _ipvs_in_use(k8s: K8s, scn) -> None:
    """Where the kernel has ip_vs, the Services are IPVS virtual servers (not the iptables fallback)."""
    netns = names.netns_name(k8s.name, "worker1")
    saved = subprocess.run(["ip", "netns", "exec", netns, "ipvsadm", "-Sn"], capture_output=True, text=True,
                           check=True).stdout
    assert "-A -t 198.51.100.12:80 -s rr" in saved, saved


# What `netsim check` cannot see, checked after it for one scenario.
EXTRA = {
    "workloads": _daemonset_on_every_node_and_job_done,
    "proxy-ipvs": _ipvs_in_use,
}


@pytest.mark.parametrize("path", [_param(p) for p in SCENARIOS])
def test_scenario_up_check_down(path, tmp_path, state_dir):
    scn = load_scenario(path)
    if scn.networking.kubeProxyMode == "ipvs" and IPVS_WHY_NOT:
        _in_a_guest(path, IPVS_WHY_NOT)
        return
    name = unique_name("scn")
    try:
        up = run_netsim("up", str(path), "--name", name)
        assert up.returncode == 0, up.stderr
        checked = run_netsim("check", "-c", name)
        if checked.returncode == 1 and "MISMATCH" in checked.stdout:
            raise CheckMismatch("\n".join(line for line in checked.stdout.splitlines()
                                          if line.startswith(("MISMATCH", "==")) or "as expected" in line))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "as expected" in checked.stdout.splitlines()[-1], checked.stdout
        if path.stem in EXTRA:
            EXTRA[path.stem](K8s(name, tmp_path), scn)
    finally:
        down = run_netsim("down", name)
        assert down.returncode == 0, down.stderr


def _in_a_guest(path: Path, why_not_here: str) -> None:
    """This test, for this one file, inside a guest whose kernel has ip_vs."""
    why = guest.unavailable()
    if why:
        pytest.skip(f"{why_not_here}, and no guest to run {path.name} in: {why}")
    node_id = f"tests/e2e/test_scenarios.py::test_scenario_up_check_down[{path.stem}]"
    rc, output = guest.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", node_id],
                           cwd=str(REPO), timeout=900)
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    if rc != 0 and "CheckMismatch" in output:
        raise CheckMismatch("in the guest:\n" + "\n".join(line for line in output.splitlines()
                                                         if "MISMATCH" in line or "as expected" in line))
    assert rc == 0 and "1 passed" in summary and "skipped" not in summary, output[-4000:]


# == pods/NS/SELECTOR refs ======================================================================

def _pod(ns, name, labels, phase="Running", ip="10.244.1.2"):
    return {"kind": "Pod", "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
            "status": {"phase": phase, "podIP": ip}}


class FakeStore:
    def __init__(self, pods):
        self.pods = pods
        self.lists = 0

    def list(self, prefix):
        assert prefix == "/registry/pods/"
        self.lists += 1
        return self.pods, 1


STORE_PODS = [
    _pod("default", "web-b", {"app": "web", "tier": "front"}),
    _pod("default", "web-a", {"app": "web", "tier": "back"}),
    _pod("default", "web-pending", {"app": "web"}, phase="Pending", ip=None),
    _pod("default", "web-done", {"app": "web"}, phase="Succeeded"),
    _pod("other", "web-x", {"app": "web"}),
    _pod("default", "client", {"app": "client"}),
]


def test_selector_refs_expand_to_every_running_pod_they_match():
    store = FakeStore(STORE_PODS)
    expects = [
        check.Expect("pod/default/client", "pods/default/app=web", 80, "TCP", True),
        check.Expect("pods/app=web,tier!=front", "svc/default/web", 80, "TCP", True),  # namespace: default
        check.Expect("pods/default/app in (web, client)", "pods/default/app=web", 80, "TCP", False),
        check.Expect("node/worker1", "ip:10.0.0.1", 80, "TCP", True),  # untouched
    ]
    out = check.expand(store, expects)
    assert store.lists == 1  # one listing for every selector
    assert [(e.src, e.dst, e.allow) for e in out] == [
        ("pod/default/client", "pod/default/web-a", True),  # by name; only running pods of the namespace
        ("pod/default/client", "pod/default/web-b", True),
        ("pod/default/web-a", "svc/default/web", True),  # tier!=front
        # both sides: every pair but a pod with itself
        ("pod/default/client", "pod/default/web-a", False),
        ("pod/default/client", "pod/default/web-b", False),
        ("pod/default/web-a", "pod/default/web-b", False),
        ("pod/default/web-b", "pod/default/web-a", False),
        ("node/worker1", "ip:10.0.0.1", True),
    ]
    assert all(isinstance(e, check.Expect) and e.port == 80 and e.protocol == "TCP" for e in out)


def test_a_selector_that_matches_nothing_is_a_mismatch_even_for_deny():
    out = check.expand(FakeStore(STORE_PODS), [
        check.Expect("pod/default/client", "pods/default/app=nobody", 80, "TCP", False),
        check.Expect("pods/other/app=web", "pods/kube-system/k8s-app=kube-dns", 53, "UDP", True)])
    assert [type(o) for o in out] == [check.Outcome, check.Outcome]
    assert not any(o.ok for o in out)
    assert out[0].detail == "no running pod in namespace default matches app=nobody"
    assert out[1].detail == "no running pod in namespace kube-system matches k8s-app=kube-dns"
    text = "\n".join(check.report(out))
    assert "== TCP/80: 0/1 as expected" in text and "pods/default/app=nobody" in text  # its own column


def test_check_run_probes_each_expanded_pair_and_a_failed_probe_is_no_deny(monkeypatch):
    seen = []

    def fake_probe(cluster, store, src, dst, port, proto, timeout):
        seen.append((src, dst))
        if dst == "pod/default/web-b":
            raise probe.ProbeError("pod default/web-b has no IP yet")
        return {"result": "deny", "reason": "timeout"}

    monkeypatch.setattr(probe, "probe", fake_probe)
    outcomes = check.run(None, FakeStore(STORE_PODS),
                         [check.Expect("pod/default/client", "pods/default/app=web", 80, "TCP", False)])
    assert sorted(seen) == [("pod/default/client", "pod/default/web-a"), ("pod/default/client", "pod/default/web-b")]
    assert [(o.expect.dst, o.ok) for o in outcomes] == [("pod/default/web-a", True), ("pod/default/web-b", False)]
    assert outcomes[1].detail.startswith("not probed: ")


@pytest.mark.parametrize("edit, field, words", [
    ("{from: svc/default/web, to: pod/default/a}", "expect[0].from", "a Service cannot start a connection"),
    ("{from: web.default, to: pod/default/a}", "expect[0].from", "a DNS name cannot start a connection"),
    ("{from: pod/default/a, to: pod/default/app=web}", "expect[0].to", "fix: use pods/default/app=web"),
    ("{from: pod/default/a, to: 'pods/default/app=web,,x'}", "expect[0].to", "not a label selector"),
    ("{from: pod/default/a, to: 'pods/default/app in (a'}", "expect[0].to", "not a label selector"),
    ("{from: pod/default/a, to: ip:10.0.0.300}", "expect[0].to", "fix: use ip:A.B.C.D"),
    ("{from: pod/default/a, to: deploy/default/web}", "expect[0].to", "unknown kind 'deploy'"),
    ("{from: node/worker9, to: pod/default/a}", "expect[0].from", "no node 'worker9' in this scenario"),
    ("{from: host/nobody, to: pod/default/a}", "expect[0].from", "no external host 'nobody'"),
])
def test_bad_expectation_refs_are_named_with_their_field_and_fix(tmp_path, edit, field, words):
    path = tmp_path / "scn.yaml"
    path.write_text("apiVersion: netsim/v1alpha1\nkind: Scenario\nname: x\nnodes:\n"
                    "  - {name: cp, role: control-plane}\n  - {name: w1}\nexpect:\n  - " + edit + "\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(path) in str(info.value)
    [(where, message)] = info.value.problems
    assert where == field and words in message and "fix: " in message, message


def test_good_expectation_refs_load():
    path = REPO / "scenarios" / "multi-tenant.yaml"
    scn = load_scenario(path)
    assert any(e.to == "pods/shared/app=auth" for e in scn.expect)
    assert any(e.to == "auth.shared" for e in scn.expect)
