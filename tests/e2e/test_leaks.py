"""No leaks, the host untouched (issue 11): many `up`/`down` cycles of a 3-node scenario, some
with a fault injected half-way (kill -9 of `up`, of the agent, of the CNI plugin servers while
pods are being wired; an apply whose file turns bad half-way), each followed by `down`, which
must leave nothing of netsim: namespaces, /etc/netns entries, mounts, processes, state.  The
host's own namespace (links, addresses, routes, both iptables backends, nftables, ipsets,
sysctls) is the same before the first `up` and after the last `down`.

NETSIM_LEAK_CYCLES sets the number of cycles (default 100, a fifth of them with a fault)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from netsim import kernel
from netsim.fabric import daemon
from netsim.model import names, state
from tests.conftest import REPO, SCENARIO, host_state, run_netsim, unique_name

CYCLES = int(os.environ.get("NETSIM_LEAK_CYCLES", "100"))
FAULTS = ("kill-up", "kill-agent", "kill-cni", "bad-apply")

BAD_APPLY = """apiVersion: apps/v1
kind: Deployment
metadata: {name: fine}
spec:
  replicas: 2
  selector: {matchLabels: {app: fine}}
  template:
    metadata: {labels: {app: fine}}
    spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Service
metadata: {name: broken}
spec: {ports: [{port: 99999}]}
"""

PODS = """apiVersion: apps/v1
kind: Deployment
metadata: {name: many}
spec:
  replicas: 12
  selector: {matchLabels: {app: many}}
  template:
    metadata: {labels: {app: many}}
    spec: {containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}
"""


def traces_of(name: str) -> dict[str, list]:
    prefix = names.cluster_prefix(name)
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if prefix in line]
    return {"namespaces": kernel.list_netns(prefix), "etc-netns": kernel.list_netns_etc(prefix), "mounts": mounts,
            "agents": daemon.agent_pids(name), "state": [str(state.cluster_dir(name))] if
            state.cluster_dir(name).exists() else []}


def _up(name: str, scenario: Path) -> None:
    r = run_netsim("up", str(scenario), "--name", name)
    assert r.returncode == 0, r.stderr


def _fault(kind: str, name: str, scenario: Path, tmp: Path, rng: random.Random) -> str:
    if kind == "kill-up":
        proc = subprocess.Popen([sys.executable, "-m", "netsim", "up", str(scenario), "--name", name], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(0.05, 1.2)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return f"up killed after {delay:.2f}s"
    _up(name, scenario)
    if kind == "kill-agent":
        for pid in daemon.agent_pids(name):
            os.kill(pid, signal.SIGKILL)
        return "agent killed"
    if kind == "kill-cni":
        path = tmp / "many.yaml"
        path.write_text(PODS)
        assert run_netsim("apply", "-c", name, "-f", str(path), "--wait=false").returncode == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            wired = sum(".default.many-" in n for n in kernel.list_netns(names.cluster_prefix(name)))
            if wired >= 2:
                break
            time.sleep(0.005)
        servers = daemon.plugin_server_pids()
        for pid in servers:
            os.kill(pid, signal.SIGKILL)
        return f"{len(servers)} plugin servers killed with {wired} pods wired"
    path = tmp / "bad.yaml"
    path.write_text(BAD_APPLY)
    r = run_netsim("apply", "-c", name, "-f", str(path))
    assert r.returncode != 0 and "nothing was applied" in r.stderr, r.stderr
    r = run_netsim("get", "deployment", "fine", "-c", name)
    assert r.returncode != 0, "half of a refused file was applied"
    return "refused apply"


@pytest.mark.slow
def test_up_down_cycles_with_faults_leave_nothing(tmp_path, state_dir):
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    rng = random.Random(11)
    faults = CYCLES // 5
    schedule = [None] * (CYCLES - faults) + [FAULTS[i % len(FAULTS)] for i in range(faults)]
    rng.shuffle(schedule)
    before = host_state()
    done: Counter = Counter()
    start = time.monotonic()
    for i, kind in enumerate(schedule):
        name = unique_name("lk")
        note = "clean"
        try:
            if kind is None:
                _up(name, scenario)
                assert json.loads(run_netsim("get", "nodes", "-c", name, "-o", "json").stdout)["items"]
            else:
                note = _fault(kind, name, scenario, tmp_path, rng)
        finally:
            down = run_netsim("down", name)
        assert down.returncode == 0, f"cycle {i} ({note}): {down.stderr}"
        left = {k: v for k, v in traces_of(name).items() if v}
        assert not left, f"cycle {i} ({kind}: {note}) left {left}"
        done[kind or "none"] += 1
    after = host_state()
    changed = sorted(k for k in before if before[k] != after[k])
    assert not changed, f"the host's {changed} changed"
    print(f"\n{CYCLES} cycles ({dict(done)}) in {time.monotonic() - start:.0f}s: no leaks, host unchanged")
