"""`pods/NS/SELECTOR` expectation refs of scenario files, expanded by netsim.observe.check over
a fake store (pure, no kernel), and how a bad ref is refused.  tests/e2e/test_scenarios.py
runs every scenario file through `netsim up`, `netsim check` and `netsim down`."""

from __future__ import annotations

import pytest

from netsim.model.scenario import ScenarioError, load_scenario
from netsim.observe import check, probe
from tests.conftest import REPO


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


