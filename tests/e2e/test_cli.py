"""The `netsim` command as a user runs it, in a subprocess."""

import json
import os
import signal
import subprocess
import sys
import time

from typer.testing import CliRunner

from netsim import kernel
from netsim.cli.app import app
from netsim.model import names, state
from tests.conftest import REPO, run_netsim, unique_name


def scenario_file(tmp_path, nodes=3, hosts=1, extra=""):
    lines = ["apiVersion: netsim/v1alpha1", "kind: Scenario", "name: ignored", "nodes:",
             "  - name: control-plane", "    role: control-plane"]
    lines += [f"  - name: worker{i}" for i in range(1, nodes)]
    if hosts:
        lines += ["externalHosts:"] + [f"  - name: client{i}" for i in range(hosts)]
    path = tmp_path / "scenario.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_up_get_exec_down_round_trip(state_dir):
    name = unique_name()
    try:
        up = run_netsim("up", str(REPO / "scenarios" / "basic.yaml"), "--name", name)
        assert up.returncode == 0, up.stderr
        # 4 pods of web.yaml, 2 of the cluster DNS
        assert "worker2" in up.stdout and "4 objects" in up.stderr and "6/6 pods running" in up.stderr, up.stderr

        got = run_netsim("get", "nodes", "-o", "json", "-c", name)
        items = json.loads(got.stdout)["items"]
        assert [i["metadata"]["name"] for i in items] == ["control-plane", "worker1", "worker2"]
        assert "node-role.kubernetes.io/control-plane" in items[0]["metadata"]["labels"]
        assert items[1]["status"]["addresses"][0] == {"type": "InternalIP", "address": "192.168.56.3"}

        wide = run_netsim("get", "nodes", "-o", "wide", "-c", name)
        assert f"nsim.{name}.worker2" in wide.stdout and "192.168.56.3" in wide.stdout

        route = run_netsim("exec", "node/worker1", "-c", name, "--", "ip", "route")
        assert "default via 192.168.56.1 dev eth0" in route.stdout
        ping = run_netsim("exec", "host/client", "-c", name, "--", "ping", "-c", "1", "-W", "2", "192.168.56.2")
        assert ping.returncode == 0, ping.stdout + ping.stderr

        again = run_netsim("up", str(REPO / "scenarios" / "basic.yaml"), "--name", name)
        assert again.returncode == 0, again.stderr

        status = run_netsim("status")
        assert name in status.stdout and "up" in status.stdout
    finally:
        down = run_netsim("down", name)
    assert down.returncode == 0 and "Deleted cluster" in down.stderr
    assert kernel.list_netns(names.cluster_prefix(name)) == []
    assert not (state_dir / name).exists()


def test_the_only_cluster_is_the_default_and_several_need_a_choice(tmp_path, state_dir):
    a, b = unique_name(), unique_name()
    path = scenario_file(tmp_path, nodes=1, hosts=0)
    try:
        assert run_netsim("up", str(path), "--name", a).returncode == 0
        assert "control-plane" in run_netsim("get", "nodes").stdout
        assert run_netsim("up", str(path), "--name", b).returncode == 0
        ambiguous = run_netsim("get", "nodes")
        assert ambiguous.returncode == 1 and "pick one with --cluster" in ambiguous.stderr
        assert run_netsim("get", "nodes", env={"NETSIM_CLUSTER": b}).returncode == 0
    finally:
        run_netsim("down", "--all")
    assert kernel.list_netns(names.cluster_prefix(a)) == kernel.list_netns(names.cluster_prefix(b)) == []


def test_bad_scenario_fails_clearly_and_creates_nothing(tmp_path, state_dir):
    path = scenario_file(tmp_path, extra="networking:\n  podSubnet: 10.244.0.0/33\n")
    before = kernel.list_netns(names.NETNS_ROOT + ".")
    result = run_netsim("up", str(path), "--name", unique_name())
    assert result.returncode == 2
    assert str(path) in result.stderr and "networking.podSubnet" in result.stderr
    assert "nothing was created" in result.stderr and "Traceback" not in result.stderr
    assert kernel.list_netns(names.NETNS_ROOT + ".") == before
    assert not state_dir.exists()


def test_killing_up_midway_then_down_cleans_up(tmp_path, state_dir):
    name = unique_name()
    path = scenario_file(tmp_path, nodes=120, hosts=0)
    env = {**os.environ, "NETSIM_STATE_DIR": str(state_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "netsim", "up", str(path), "--name", name],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    caught_midway = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        made = kernel.list_netns(names.cluster_prefix(name))
        st = state.read_state(name)
        if len(made) >= 5 and st and st.phase == "creating":
            proc.send_signal(signal.SIGKILL)
            caught_midway = True
            break
        time.sleep(0.002)
    proc.wait(timeout=10)
    try:
        assert caught_midway, "up finished before it could be killed"
        assert state.read_state(name).phase == "creating"
        assert kernel.list_netns(names.cluster_prefix(name)), "the killed up should have left namespaces"
    finally:
        down = run_netsim("down", name)
    assert down.returncode == 0, down.stderr
    assert kernel.list_netns(names.cluster_prefix(name)) == []
    assert not (state_dir / name).exists()


def test_sigterm_during_up_rolls_back(tmp_path, state_dir):
    name = unique_name()
    path = scenario_file(tmp_path, nodes=120, hosts=0)
    env = {**os.environ, "NETSIM_STATE_DIR": str(state_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "netsim", "up", str(path), "--name", name],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(kernel.list_netns(names.cluster_prefix(name))) < 5:
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    try:
        assert proc.returncode == 130, stderr
        assert "was removed" in stderr
        assert kernel.list_netns(names.cluster_prefix(name)) == []
        assert not (state_dir / name).exists()
    finally:
        run_netsim("down", name)


def test_commands_that_need_root_say_so(monkeypatch):
    # The euid check is pure logic; running the real binary as another user would need the
    # interpreter to be readable by that user, which a root-owned venv is not.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(app, ["down", "x"])
    assert result.exit_code == 1
    assert "needs root" in result.output and "sudo netsim down" in result.output


def test_exec_rejects_unknown_targets(tmp_path, state_dir):
    name = unique_name()
    try:
        assert run_netsim("up", str(scenario_file(tmp_path, nodes=1, hosts=0)), "--name", name).returncode == 0
        missing = run_netsim("exec", "node/nope", "-c", name, "--", "true")
        assert missing.returncode == 1 and "node/control-plane" in missing.stderr
        pod = run_netsim("exec", "pod/default/x", "-c", name, "--", "true")
        assert pod.returncode == 1 and "pod default/x has no network namespace" in pod.stderr
        other = run_netsim("exec", "svc/web", "-c", name, "--", "true")
        assert other.returncode == 2 and "pod/NAMESPACE/NAME" in other.stderr
    finally:
        run_netsim("down", name)
