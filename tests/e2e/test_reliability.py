"""Reliability (issue 11): an agent killed in the middle of a sync, policy while the agent is
down, concurrent applies and parallel pod creation, on real clusters."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from netsim import kernel
from netsim.api.store import open_store
from netsim.fabric import daemon
from netsim.model import names, state
from netsim.node import podnet
from netsim.observe import probe
from tests.conftest import REPO, SCENARIO, K8s, run_netsim, unique_name


@pytest.fixture
def cluster(tmp_path, state_dir):
    name = unique_name("rl")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    up = run_netsim("up", str(scenario), "--name", name)
    assert up.returncode == 0, up.stderr
    c = K8s(name, tmp_path)
    c.scenario = scenario
    try:
        yield c
    finally:
        assert run_netsim("down", name).returncode == 0
        assert kernel.list_netns(names.cluster_prefix(name)) == []


def _kill_agent(c) -> int:
    pids = daemon.agent_pids(c.name)
    assert len(pids) == 1, f"agents {pids}{c.log_tail(60)}"
    os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while kernel.process_alive(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return pids[0]


def _restart(c) -> None:
    """`netsim up` on a running cluster converges it, starting an agent if none runs."""
    r = run_netsim("up", str(c.scenario), "--name", c.name)
    assert r.returncode == 0, r.stderr + c.log_tail()


def _all_pods(c) -> list[dict]:
    return json.loads(c("get", "pods", "-A", "-o", "json").stdout)["items"]


def _nodes(c) -> list[str]:
    return [n["metadata"]["name"] for n in json.loads(c("get", "nodes", "-o", "json").stdout)["items"]]


def _kernel_state(c) -> dict[str, str]:
    """What the agent renders into each node: kube-proxy's and flannel's rules, the policy
    tables, routes, the overlay's fdb and neighbours, host-local's allocations and the pod
    namespaces; counters and generated veth names left out."""
    out = {}
    for node in _nodes(c):
        netns = names.netns_name(c.name, node)

        def run(*argv, netns=netns):
            return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True,
                                  check=True).stdout

        legacy = "\n".join(re.sub(r"\[\d+:\d+\]", "", line) for line in run("iptables-legacy-save").splitlines()
                           if not line.startswith("#"))
        nft = re.sub(r"packets \d+ bytes \d+", "", run("nft", "list", "ruleset"))
        routes = "\n".join(line for line in run("ip", "route", "show").splitlines() if "veth" not in line)
        out[f"{node}/iptables-legacy"] = legacy
        out[f"{node}/nft"] = nft
        out[f"{node}/routes"] = routes
        out[f"{node}/fdb"] = "\n".join(sorted(run("bridge", "fdb", "show", "dev", "flannel.1").splitlines()))
        out[f"{node}/neigh"] = "\n".join(sorted(run("ip", "neigh", "show", "dev", "flannel.1").splitlines()))
        ipam = state.cluster_dir(c.name) / "nodes" / node / "cni" / "networks" / "cbr0"
        out[f"{node}/ipam"] = "\n".join(sorted(
            f"{p.name}={p.read_text().split()[0]}" for p in ipam.glob("*") if re.fullmatch(r"[\d.]+", p.name)))
    out["netns"] = "\n".join(kernel.list_netns(names.cluster_prefix(c.name)))
    return out


def _no_duplicates(kernel_state: dict[str, str]) -> None:
    for key, text in kernel_state.items():
        if key.endswith(("/iptables-legacy", "/routes", "/fdb", "/neigh", "/ipam")):
            lines = [line for line in text.splitlines() if line and not line.startswith(("*", ":", "COMMIT"))]
            dup = [line for line, n in Counter(lines).items() if n > 1]
            assert not dup, f"{key}: duplicated {dup[:5]}"


def test_an_agent_killed_during_a_sync_converges_to_the_state_a_clean_one_renders(cluster):
    c = cluster
    manifest = c.tmp_path / "app.yaml"
    manifest.write_text("""apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 30
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec: {containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: app}
spec: {selector: {app: app}, ports: [{port: 80, targetPort: 8080}], type: NodePort}
""")
    c("apply", "-f", str(manifest), "--wait=false")
    # Mid-sync: some of the 30 sandboxes made, rules half rendered.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        made = [n for n in kernel.list_netns(names.cluster_prefix(c.name)) if ".default.app-" in n]
        if len(made) >= 5:
            break
        time.sleep(0.005)
    _kill_agent(c)
    # The store the crash left opens cleanly.
    db = state.cluster_dir(c.name) / "store.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = open_store(str(db))
    store.close()

    _restart(c)
    pods = [p for p in c.pods("app=app")]
    assert len(pods) == 30 and all(p["status"].get("phase") == "Running" for p in pods)
    ips = [p["status"]["podIP"] for p in _all_pods(c)]
    assert len(ips) == len(set(ips)), "two pods share an IP"
    after_crash = _kernel_state(c)
    _no_duplicates(after_crash)
    for node in _nodes(c):
        allocated = {line.split("=")[0] for line in after_crash[f"{node}/ipam"].splitlines()}
        assert allocated == {p["status"]["podIP"] for p in _all_pods(c) if p["spec"]["nodeName"] == node}, node
    assert sum(".default.app-" in n for n in after_crash["netns"].splitlines()) == 30

    # A clean restart (SIGTERM, then up) renders exactly the same kernel state.
    daemon.stop_agents(c.name)
    _restart(c)
    assert _kernel_state(c) == after_crash
    # And traffic flows: the Service answers from a node.
    r = c("probe", "node/worker1", "svc/default/app", "-o", "json", check=False)
    assert json.loads(r.stdout)["result"] == "allow", r.stdout + r.stderr


def _hammer(sources: dict[str, tuple[str, str, int]], stop: threading.Event) -> tuple[dict, dict, list]:
    """Connect from each source (netns, ip, port) over and over, one thread each, until
    ``stop``; counts the tries that reached the pod: connected, or refused by its namespace
    (the pods' listeners live in the agent, so they are gone while it is)."""
    reached = {s: 0 for s in sources}
    tries = {s: 0 for s in sources}

    def run(src: str) -> None:
        netns, ip, port = sources[src]
        while not stop.is_set():
            tries[src] += 1
            if probe.connect(netns, ip, port, timeout=0.2)["reason"] in ("connected", "refused"):
                reached[src] += 1
            time.sleep(0.005)  # a fresh source port each time, without running out of them

    threads = [threading.Thread(target=run, args=(s,), daemon=True) for s in sources]
    for t in threads:
        t.start()
    return reached, tries, threads


def test_denied_traffic_stays_denied_while_the_agent_is_down_or_restarting(cluster):
    c = cluster
    c.apply("""apiVersion: v1
kind: Namespace
metadata: {name: locked}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: locked}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: v1
kind: Pod
metadata: {name: vault, namespace: locked, labels: {app: vault}}
spec: {nodeName: worker1, containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: open, namespace: default, labels: {app: open}}
spec: {nodeName: worker1, containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: vault, namespace: locked}
spec: {type: NodePort, selector: {app: vault}, ports: [{port: 80, nodePort: 30901}]}
---
apiVersion: v1
kind: Service
metadata: {name: open, namespace: default}
spec: {type: NodePort, selector: {app: open}, ports: [{port: 80, nodePort: 30902}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec: {nodeName: worker2, containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}
""")
    ip = {p["metadata"]["name"]: p["status"]["podIP"] for p in c.pods() + json.loads(
        c("get", "pods", "-n", "locked", "-o", "json").stdout)["items"]}
    worker1 = json.loads(c("get", "node", "worker1", "-o", "json").stdout)["status"]["addresses"][0]["address"]
    client, worker2 = podnet.pod_netns(c.name, "default", "client"), names.netns_name(c.name, "worker2")
    host = names.netns_name(c.name, "client")

    def sources(pod: str, node_port: int) -> dict[str, tuple[str, str, int]]:
        return {"pod default/client": (client, ip[pod], 80), "node worker2": (worker2, ip[pod], 80),
                "host client (NodePort on worker1)": (host, worker1, node_port)}

    stop = threading.Event()
    denied, denied_tries, t1 = _hammer(sources("vault", 30901), stop)
    allowed, allowed_tries, t2 = _hammer(sources("open", 30902), stop)
    try:
        time.sleep(0.5)
        _kill_agent(c)
        time.sleep(1.5)  # the node runs with no agent
        _restart(c)      # and while one starts and re-renders everything
        time.sleep(0.5)
    finally:
        stop.set()
        for t in t1 + t2:
            t.join(5)
    assert min(denied_tries.values()) >= 10, denied_tries
    assert not any(denied.values()), f"policy let traffic through: {denied}"
    # The control: the same probes reached the pod next door all along, agent or no agent.
    assert all(allowed[s] >= allowed_tries[s] * 0.5 for s in allowed), (allowed, allowed_tries)


APPLY = """apiVersion: v1
kind: Service
metadata: {{name: s{i}}}
spec: {{type: NodePort, selector: {{app: d{i}}}, ports: [{{port: 80}}]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: d{i}}}
spec:
  replicas: 10
  selector: {{matchLabels: {{app: d{i}}}}}
  template:
    metadata: {{labels: {{app: d{i}}}}}
    spec: {{containers: [{{name: c, image: x, ports: [{{containerPort: 80}}]}}]}}
"""


def test_concurrent_applies_and_fifty_parallel_pods_lose_nothing_and_share_no_address(cluster):
    c = cluster
    files = []
    for i in range(5):
        path = c.tmp_path / f"apply{i}.yaml"
        path.write_text(APPLY.format(i=i))
        files.append(path)
    env = {**os.environ}
    procs = [subprocess.Popen([sys.executable, "-m", "netsim", "apply", "-c", c.name, "-f", str(f)], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for f in files]
    # Meanwhile, from eight more shells: one label each on the same Namespace (read-modify-write).
    labels = [subprocess.Popen([sys.executable, "-m", "netsim", "label", "-c", c.name, "namespace", "default",
                                f"k{i}=v{i}"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for i in range(8)]
    for p in procs + labels:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, out + err
    ns = json.loads(c("get", "namespace", "default", "-o", "json").stdout)
    assert all(ns["metadata"]["labels"].get(f"k{i}") == f"v{i}" for i in range(8)), ns["metadata"]["labels"]
    svcs = [s for s in json.loads(c("get", "svc", "-o", "json").stdout)["items"]
            if s["metadata"]["name"].startswith("s")]
    assert len(svcs) == 5
    assert len({s["spec"]["clusterIP"] for s in svcs}) == 5
    assert len({s["spec"]["ports"][0]["nodePort"] for s in svcs}) == 5
    pods = [p for p in c.pods() if p["metadata"]["name"].startswith("d")]
    assert len(pods) == 50 and all(p["status"].get("phase") == "Running" for p in pods)
    ips = [p["status"]["podIP"] for p in _all_pods(c)]
    assert len(ips) == len(set(ips)), Counter(ips).most_common(3)
    _no_duplicates(_kernel_state(c))

