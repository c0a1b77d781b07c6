"""Workloads through real clusters, on both store backends: the `netsim` command as a user runs
it, the agent wiring real namespaces, and real connections answered by the responders."""

import difflib
import json
import os
import re
import signal
import subprocess
import time

import pytest

from netsim import kernel
from netsim.fabric import daemon
from netsim.model import names, state
from netsim.node import flanneld
from tests.conftest import SCENARIO, K8s, host_snapshot, run_netsim, running, unique_name


def deployment(replicas: int, name: str = "web") -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - {{name: http, containerPort: 80}}
"""


SERVICE = """apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {port: 8080, targetPort: http}
"""


def test_apply_get_delete_round_trip(k8s):
    out = k8s.apply(deployment(2) + "---\n" + SERVICE).stdout
    assert "deployment/default/web created" in out and "service/default/web created" in out
    svc = k8s.get("svc", "web")
    assert svc["spec"]["clusterIP"].startswith("10.") and svc["spec"]["ports"][0]["targetPort"] == "http"
    assert "unchanged" in k8s.apply(SERVICE).stdout
    table = k8s("get", "deploy").stdout
    assert table.split("\n")[1].split()[:2] == ["web", "2/2"]
    k8s("delete", "deployment", "web")
    assert k8s.pods() == []
    missing = k8s("get", "deploy", "web", check=False)
    assert missing.returncode == 1 and 'Error from server (NotFound): deployments.apps "web" not found' \
        in missing.stderr  # word for word kubectl's
    k8s("delete", "svc", "web")
    # Only the API server's own default/kubernetes slice is left.
    left = json.loads(k8s("get", "endpointslices", "-o", "json").stdout)["items"]
    assert [s["metadata"]["labels"]["kubernetes.io/service-name"] for s in left] == ["kubernetes"]


def test_a_deployment_runs_spread_over_workers_answers_and_scales(k8s):
    k8s.apply(deployment(3))
    pods = running(k8s.pods())
    assert len(pods) == 3
    assert {p["spec"]["nodeName"] for p in pods} == {"worker1", "worker2"}
    assert len({p["status"]["podIP"] for p in pods}) == 3
    for p in pods:
        code, answer = k8s.probe(f"node/{p['spec']['nodeName']}", f"pod/default/{p['metadata']['name']}")
        assert code == 0 and answer["responder"] == p["metadata"]["name"], answer
        assert answer["result"] == "allow" and answer["reason"] == "connected" and answer["latencyMs"] > 0
    # Across nodes, over the overlay (flannel's leases in this backend's store), from pod to pod.
    a = next(p for p in pods if p["spec"]["nodeName"] == "worker1")
    b = next(p for p in pods if p["spec"]["nodeName"] == "worker2")
    code, answer = k8s.probe(f"pod/default/{a['metadata']['name']}", f"pod/default/{b['metadata']['name']}")
    assert code == 0 and answer["responder"] == b["metadata"]["name"], answer
    assert answer["clientIP"] == a["status"]["podIP"]

    k8s.apply(deployment(5))
    assert len(running(k8s.pods())) == 5
    k8s.apply(deployment(2))
    left = k8s.pods()
    assert len(left) == 2 and len(running(left)) == 2
    pod_netns = [n for n in kernel.list_netns(names.cluster_prefix(k8s.name)) if ".default." in n]
    assert sorted(pod_netns) == sorted(f"nsim.{k8s.name}.default.{p['metadata']['name']}" for p in left)


def test_a_deleted_pod_is_replaced_by_its_deployment(k8s):
    k8s.apply(deployment(2))
    victim = k8s.pods()[0]["metadata"]["name"]
    assert f"pod/default/{victim} deleted" in k8s("delete", "pod", victim).stdout
    pods = running(k8s.pods())
    assert len(pods) == 2 and victim not in {p["metadata"]["name"] for p in pods}
    assert not kernel.netns_exists(f"nsim.{k8s.name}.default.{victim}")


def test_endpoint_slices_follow_pod_readiness(k8s):
    k8s.apply(deployment(2) + "---\n" + SERVICE)

    def endpoints():
        slices = json.loads(k8s("get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o",
                                "json").stdout)["items"]
        return {e["targetRef"]["name"]: (e["addresses"][0], e["conditions"]["ready"], s["ports"][0]["port"])
                for s in slices for e in s["endpoints"]}

    pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in k8s.pods()}
    assert endpoints() == {n: (ip, True, 80) for n, ip in pods.items()}
    sick = sorted(pods)[0]
    k8s("annotate", "pod", sick, "netsim.io/ready=false")
    assert endpoints()[sick] == (pods[sick], False, 80)
    assert k8s.get("pod", sick)["status"]["conditions"][-1] == {"type": "Ready", "status": "False"}
    k8s("annotate", "pod", sick, "netsim.io/ready-")
    assert endpoints()[sick] == (pods[sick], True, 80)


def test_probe_reports_refusals_udp_and_the_client_address(k8s):
    k8s.apply(deployment(1))
    [pod] = k8s.pods()
    target = f"pod/default/{pod['metadata']['name']}"
    node = pod["spec"]["nodeName"]
    code, udp = k8s.probe(f"node/{node}", target, "--proto", "udp")
    assert code == 0 and udp["responder"] == pod["metadata"]["name"]
    code, refused = k8s.probe(f"node/{node}", target, "--port", "81")
    assert code == 1 and refused["result"] == "deny" and refused["reason"] == "refused"
    code, udp_refused = k8s.probe(f"node/{node}", target, "--port", "81", "--proto", "udp")
    assert code == 1 and udp_refused["reason"] == "refused"
    code, answer = k8s.probe(f"node/{node}", target)
    node_ip = k8s.get("node", node)["status"]["addresses"][0]["address"]
    # The node reaches its pods from its bridge address, the first of its pod range.
    assert answer["clientIP"] != node_ip and answer["clientIP"].endswith(".1")
    http = k8s("exec", f"node/{node}", "--", "curl", "-s", "--max-time", "5", f"http://{pod['status']['podIP']}/")
    assert json.loads(http.stdout)["pod"] == pod["metadata"]["name"]


def kernel_state(cluster: str) -> dict[str, str]:
    """Links (with ifindex, MAC and master: a re-created link shows), IPv4 addresses, routes,
    permanent neighbours, flannel.1's fdb and the iptables rules of every namespace of the
    cluster, as the tools print them.  Operstate is left out: a bridge
    reads UNKNOWN or UP depending on when its ports last changed, not on what netsim did."""
    out = {}
    for ns in kernel.list_netns(names.cluster_prefix(cluster)):
        parts = []
        for cmd in (["ip", "-n", ns, "-o", "link"], ["ip", "-n", ns, "-4", "-o", "addr"],
                    ["ip", "-n", ns, "-4", "route"], ["ip", "-n", ns, "-4", "neigh", "show", "nud", "permanent"],
                    ["bridge", "-n", ns, "fdb", "show", "dev", "flannel.1"],
                    ["ip", "netns", "exec", ns, "iptables-save"]):
            text = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
            text = re.sub(r"\[\d+:\d+\]", "", "\n".join(line for line in text.splitlines() if not line.startswith("#")))
            parts.append(re.sub(r" state \S+", "", text))
        out[ns] = "\n".join(parts)
    return out


def leases(k8s) -> dict[str, str]:
    """PublicIP -> subnet of every flannel lease in the cluster's store."""
    from netsim.api.store import open_store
    from netsim.fabric import load_cluster

    store = open_store(load_cluster(k8s.name).store_url)
    try:
        return {lease.public_ip: str(lease.subnet) for lease in flanneld.leases(store)[0]}
    finally:
        store.close()


def test_kill_9_of_the_agent_then_restart_leaves_the_same_kernel_state(k8s, tmp_path):
    k8s.apply(deployment(4))
    before = kernel_state(k8s.name)
    ips_before = {p["metadata"]["name"]: p["status"]["podIP"] for p in k8s.pods()}
    checkpoint = state.cluster_dir(k8s.name) / "nodes" / "worker1" / "pods.json"
    checkpoint_before = checkpoint.read_text()
    leases_before = leases(k8s)
    assert len(leases_before) == 3 and "flannel.1" in before[names.netns_name(k8s.name, "worker1")]
    [pid] = daemon.agent_pids(k8s.name)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while daemon.agent_pids(k8s.name) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert daemon.agent_pids(k8s.name) == []
    again = run_netsim("up", str(tmp_path / "scenario.yaml"), "--name", k8s.name)
    assert again.returncode == 0, again.stderr
    assert len(daemon.agent_pids(k8s.name)) == 1
    after = kernel_state(k8s.name)
    changed = {ns: "\n".join(difflib.unified_diff(before[ns].splitlines(), after.get(ns, "").splitlines(),
                                                 lineterm="", n=0))
               for ns in set(before) | set(after) if before.get(ns) != after.get(ns)}
    assert not changed, changed
    assert {p["metadata"]["name"]: p["status"]["podIP"] for p in k8s.pods()} == ips_before
    assert checkpoint.read_text() == checkpoint_before
    assert leases(k8s) == leases_before  # each node found its own flannel lease again
    # And the restarted agent serves the pods again.
    name = sorted(ips_before)[0]
    pod = k8s.get("pod", name)
    code, answer = k8s.probe(f"node/{pod['spec']['nodeName']}", f"pod/default/{name}")
    assert code == 0 and answer["responder"] == name


KINDS = """apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: shop}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: a, image: fluentd, ports: [{containerPort: 24224, protocol: UDP}]}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: shop}
spec:
  replicas: 3
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: postgres, ports: [{containerPort: 5432}]}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: shop}
spec:
  completions: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: m, image: busybox, command: ["sh", "-c", "echo done"]}]
"""


@pytest.mark.parametrize("k8s", ["sqlite"], indirect=True)
def test_daemonsets_statefulsets_jobs_and_namespace_deletion(k8s):
    k8s.apply(KINDS)
    listed = json.loads(k8s("get", "pods", "-n", "shop", "-o", "json").stdout)["items"]
    pods = {p["metadata"]["name"]: p for p in listed}
    agents = [p for n, p in pods.items() if n.startswith("agent-")]
    # One per worker: the control plane's taint keeps a DaemonSet without tolerations off it.
    assert sorted(p["spec"]["nodeName"] for p in agents) == ["worker1", "worker2"]
    assert sorted(n for n in pods if n.startswith("db-")) == ["db-0", "db-1", "db-2"]
    assert all(pods[f"db-{i}"]["status"]["phase"] == "Running" for i in range(3))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = json.loads(k8s("get", "job", "migrate", "-n", "shop", "-o", "json").stdout)
        if job.get("status", {}).get("succeeded") == 2:
            break
        time.sleep(0.2)
    assert job["status"]["conditions"][0]["type"] == "Complete"
    done = [p for p in json.loads(k8s("get", "pods", "-n", "shop", "-o", "json").stdout)["items"]
            if p["metadata"]["name"].startswith("migrate-")]
    assert [p["status"]["phase"] for p in done] == ["Succeeded", "Succeeded"]
    assert not any(kernel.netns_exists(f"nsim.{k8s.name}.shop.{p['metadata']['name']}") for p in done)
    code, answer = k8s.probe(f"node/{agents[0]['spec']['nodeName']}", f"pod/shop/{agents[0]['metadata']['name']}",
                             "--proto", "udp")
    assert code == 0 and answer["responder"] == agents[0]["metadata"]["name"]

    k8s("delete", "namespace", "shop")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and k8s("get", "ns", "shop", check=False).returncode == 0:
        time.sleep(0.2)
    assert k8s("get", "ns", "shop", check=False).returncode == 1
    assert [n for n in kernel.list_netns(names.cluster_prefix(k8s.name)) if ".shop." in n] == []


@pytest.mark.parametrize("k8s", ["sqlite"], indirect=True)
def test_a_bad_manifest_applies_nothing_and_describe_shows_endpoints(k8s, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(deployment(1) + "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                   "spec: {ports: [{port: 80, protocol: HTTP}]}\n")
    result = k8s("apply", "-f", str(bad), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{bad}: document 2 (Service s): spec.ports.0.protocol" in result.stderr
    assert "fix: use TCP, UDP or SCTP" in result.stderr and "nothing was applied" in result.stderr
    assert k8s.pods() == [] and "No resources found" in k8s("get", "deploy").stderr

    k8s.apply(deployment(2) + "---\n" + SERVICE)
    described = k8s("describe", "svc", "web").stdout
    ips = sorted(p["status"]["podIP"] for p in k8s.pods())
    assert "TargetPort(s): http" in described
    assert all(f"{ip}:80" in described for ip in ips), described


def test_a_cluster_with_pods_leaves_the_host_as_it_found_it(tmp_path, state_dir):
    before = host_snapshot()
    name = unique_name("h")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    try:
        assert run_netsim("up", str(scenario), "--name", name).returncode == 0
        k8s = K8s(name, tmp_path)
        k8s.apply(deployment(4) + "---\n" + SERVICE)
        assert len(running(k8s.pods())) == 4
    finally:
        assert run_netsim("down", name).returncode == 0
    assert host_snapshot() == before
    assert not (state_dir / name).exists() and daemon.agent_pids(name) == []
