"""The scenario library: every file in scenarios/ goes through `netsim up FILE`, `netsim check`
(all as expected) and `netsim down`, as a user runs it; new files are picked up by the glob.
`pods/NS/SELECTOR` expectation refs, expanded by netsim.observe.check, are tested pure in
tests/unit/test_check_expectations.py.

A scenario whose kube-proxy mode needs IPVS runs inside the qemu guest (netsim.kernel.guest) when
this kernel has no ip_vs, as tests/kernel/test_proxy_ipvs.py does.  A scenario whose other
requirements this machine does not meet (netsim.fabric.requirements: Calico's IPIP tunnel, BIRD)
is skipped with `up`'s own reason; the IPIP ones then run in one guest boot whose kernel has ipip
(test_ipip_scenarios_in_a_guest)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netsim.fabric import requirements
from netsim.kernel import guest
from netsim.model import names
from netsim.model.scenario import load_scenario
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
    unmet = requirements.unmet(scn, name)
    if unmet and _ipip_only(scn, unmet):
        pytest.skip(f"{path.name}: {unmet[0]}; test_ipip_scenarios_in_a_guest runs it in a guest whose kernel has ipip")
    if unmet:
        pytest.skip(f"{path.name} needs what this machine lacks: {'; '.join(unmet)}")
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


def _ipip_only(scn, unmet: list[str]) -> bool:
    return len(unmet) == 1 and unmet[0].startswith("networking.calico.ipipMode")


IPIP_SCENARIOS = [p for p in SCENARIOS if (n := load_scenario(p).networking).cni == "calico"
                  and n.calico.ipipMode != "Never"]


def test_ipip_scenarios_in_a_guest():
    """The IPIP scenarios (4 nodes over two segments: tunl0, IP protocol 4 across segments and, for
    CrossSubnet, bare packets within one) where this kernel has no ipip: all of them in one guest
    boot, each through up, check and down as above."""
    if not IPIP_SCENARIOS:
        pytest.skip("no IPIP scenario in scenarios/")
    if requirements.link_kind_supported(unique_name("ipip"), "ipip"):
        pytest.skip("this kernel has ipip: test_scenario_up_check_down ran the IPIP scenarios here")
    why = guest.unavailable()
    if why:
        pytest.skip(f"this kernel has no ipip, and no guest to run the IPIP scenarios in: {why}")
    ids = [f"tests/e2e/test_scenarios.py::test_scenario_up_check_down[{p.stem}]" for p in IPIP_SCENARIOS]
    rc, output = guest.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *ids],
                           cwd=str(REPO), timeout=900)
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    if rc != 0 and "CheckMismatch" in output:
        raise CheckMismatch("in the guest:\n" + "\n".join(line for line in output.splitlines()
                                                           if "MISMATCH" in line or "as expected" in line))
    assert rc == 0 and f"{len(ids)} passed" in summary and "skipped" not in summary, output[-4000:]
