"""Services through kube-proxy on a real cluster: ClusterIP, NodePort and LoadBalancer from
pods on the same and other nodes, from nodes and from an external host; source addresses;
no endpoints; endpoints changing; a flushed ruleset coming back."""

import contextlib
import subprocess
import time

import pytest

from netsim import kernel
from netsim.model import names
from tests.conftest import SCENARIO, K8s, run_netsim, running, unique_name

APP = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {kubernetes.io/hostname: worker1}
      containers:
      - name: web
        image: nginx
        ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 5353, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: client-w1}
spec:
  nodeName: worker1
  containers: [{name: c, image: busybox, ports: [{containerPort: 9}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client-w2}
spec:
  nodeName: worker2
  containers: [{name: c, image: busybox, ports: [{containerPort: 9}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: dns, port: 53, targetPort: dns, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: web-np}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-lb}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-local}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30081}]
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
"""


@pytest.fixture
def cluster(tmp_path, state_dir):
    name = unique_name("sv")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO + "networking:\n  loadBalancerPool: 198.51.100.0/28\n")
    up = run_netsim("up", str(scenario), "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        k8s = K8s(name, tmp_path)
        k8s.apply(APP)
        assert len(running(k8s.pods())) == 4
        yield k8s
    finally:
        assert run_netsim("down", name).returncode == 0
        assert kernel.list_netns(names.cluster_prefix(name)) == []


def node_ip(k8s, node):
    return k8s.get("node", node)["status"]["addresses"][0]["address"]


def web_pods(k8s):
    return {p["metadata"]["name"] for p in running(k8s.pods("app=web"))}


def test_cluster_ip_from_pods_and_nodes(cluster):
    k8s = cluster
    backends = web_pods(k8s)
    for src in ("pod/default/client-w1", "pod/default/client-w2", "node/worker2", "node/control-plane"):
        seen = set()
        for _ in range(12):
            code, answer = k8s.probe(src, "svc/default/web")
            assert code == 0, (src, answer)
            seen.add(answer["responder"])
        assert seen == backends, (src, seen)  # both endpoints are used
    # A pod's own address reaches the backend unchanged (pod -> ClusterIP is not masqueraded).
    client = k8s.get("pod", "client-w2")
    code, answer = k8s.probe("pod/default/client-w2", "svc/default/web")
    assert answer["clientIP"] == client["status"]["podIP"]
    # UDP through the named target port.
    code, answer = k8s.probe("pod/default/client-w2", "svc/default/web", "--port", "53", "--proto", "udp")
    assert code == 0 and answer["responder"] in backends, answer


def test_a_service_without_endpoints_refuses_at_once(cluster):
    t0 = time.monotonic()
    code, answer = cluster.probe("pod/default/client-w1", "svc/default/nobody")
    assert code == 1 and answer["reason"] == "refused", answer
    assert time.monotonic() - t0 < 5 and answer["latencyMs"] < 500


def test_node_port_and_load_balancer_from_outside(cluster):
    k8s = cluster
    backends = web_pods(k8s)
    for node in ("control-plane", "worker1", "worker2"):
        code, answer = k8s.probe("host/client", f"ip:{node_ip(k8s, node)}", "--port", "30080")
        assert code == 0 and answer["responder"] in backends, (node, answer)
        # Traffic from off the cluster is masqueraded to the node that took it.
        assert answer["clientIP"] != "192.168.56.254", answer
    lb = k8s.get("service", "web-lb")["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert lb.startswith("198.51.100.")
    code, answer = k8s.probe("host/client", f"ip:{lb}", "--port", "80")
    assert code == 0 and answer["responder"] in backends, answer


def test_external_traffic_policy_local_keeps_the_client_address(cluster):
    k8s = cluster
    client_ip = next(m for m in run_state(k8s).members if m.name == "client").ip
    code, answer = k8s.probe("host/client", f"ip:{node_ip(k8s, 'worker1')}", "--port", "30081")
    assert code == 0 and answer["clientIP"] == client_ip, answer
    # worker2 has no local endpoint: external traffic to it is dropped there.
    code, answer = k8s.probe("host/client", f"ip:{node_ip(k8s, 'worker2')}", "--port", "30081", "--timeout", "1")
    assert code == 1, answer


def test_hairpin_and_endpoint_changes(cluster):
    k8s = cluster
    pod = sorted(web_pods(k8s))[0]
    # A backend reaching its own Service may land on itself (hairpin) and still get an answer.
    for _ in range(8):
        code, answer = k8s.probe(f"pod/default/{pod}", "svc/default/web")
        assert code == 0, answer
    # Readiness off: the endpoint leaves the Service within a second.
    k8s("annotate", "pod", pod, "netsim.io/ready=false")
    deadline = time.monotonic() + 1.5
    while True:
        seen = {k8s.probe("pod/default/client-w2", "svc/default/web")[1].get("responder") for _ in range(6)}
        if pod not in seen:
            break
        assert time.monotonic() < deadline, seen
    # A firewall reload flushes and deletes every chain (as firewalld does): kube-proxy's canary
    # chains go with them, and the next sync restores the whole ruleset.
    node = names.netns_name(k8s.name, "worker2")
    for table in ("nat", "filter", "mangle"):
        for flag in ("-F", "-X"):
            subprocess.run(["ip", "netns", "exec", node, "iptables-legacy", "-t", table, flag], check=True)
    deadline = time.monotonic() + 15
    while k8s.probe("pod/default/client-w2", "svc/default/web")[0] != 0:
        assert time.monotonic() < deadline, "rules were not restored after a flush"
        time.sleep(0.2)


def run_state(k8s):
    from netsim.model import state

    return state.read_state(k8s.name)


def test_proxy_rules_name_the_service_behind_each_hashed_chain(cluster):
    k8s = cluster
    table = run_netsim("proxy", "rules", "worker2", "-c", k8s.name)
    assert table.returncode == 0, table.stderr
    web = k8s.get("service", "web")
    pods = {p["status"]["podIP"] for p in running(k8s.pods("app=web"))}
    rows = [line.split() for line in table.stdout.splitlines()[1:]]
    services = {r[1]: r for r in rows if r[1].startswith("KUBE-SVC-")}
    assert any(r[4] == "default/web:http/tcp" for r in services.values()), table.stdout
    endpoints = {r[-1].rsplit(":", 1)[0] for r in rows if r[3] == "endpoint" and r[4] == "default/web:http/tcp"}
    assert endpoints == pods
    raw = run_netsim("proxy", "rules", "worker2", "-c", k8s.name, "-o", "raw")
    line = next(x for x in raw.stdout.splitlines() if f"-d {web['spec']['clusterIP']}/32" in x and "--dport 80" in x)
    assert line.endswith("= default/web:http/tcp"), line
    bad = run_netsim("proxy", "rules", "nosuch", "-c", k8s.name)
    assert bad.returncode == 1 and "no node 'nosuch'" in bad.stderr


MORE = """apiVersion: v1
kind: Service
metadata: {name: web-ext}
spec:
  selector: {app: web}
  externalIPs: [203.0.113.10]
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-sticky}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-closed}
spec:
  type: LoadBalancer
  loadBalancerSourceRanges: [10.10.10.0/24]
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-internal-local}
spec:
  internalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def test_external_ips_affinity_source_ranges_and_internal_local(cluster):
    k8s = cluster
    k8s.apply(MORE)
    backends = web_pods(k8s)
    # externalIPs: the LAN routes the address to a node, whose rules deliver it.
    code, answer = k8s.probe("host/client", "ip:203.0.113.10", "--port", "80")
    assert code == 0 and answer["responder"] in backends, answer
    # sessionAffinity: ClientIP: one client keeps landing on one backend.
    seen = {k8s.probe("pod/default/client-w2", "svc/default/web-sticky")[1]["responder"] for _ in range(10)}
    assert len(seen) == 1, seen
    # loadBalancerSourceRanges: the external host (192.168.56.254) is outside 10.10.10.0/24.
    lb = k8s.get("service", "web-closed")["status"]["loadBalancer"]["ingress"][0]["ip"]
    code, answer = k8s.probe("host/client", f"ip:{lb}", "--port", "80", "--timeout", "1")
    assert code == 1, answer
    # internalTrafficPolicy: Local: from worker2 (no web pod there) nothing answers; from
    # worker1's client, a local backend does.
    code, answer = k8s.probe("pod/default/client-w1", "svc/default/web-internal-local")
    assert code == 0 and answer["responder"] in backends, answer
    code, answer = k8s.probe("pod/default/client-w2", "svc/default/web-internal-local", "--timeout", "1")
    assert code == 1, answer


@contextlib.contextmanager
def cluster_in_mode(tmp_path, prefix: str, networking: str):
    """A cluster with APP applied, its scenario's networking section extended by ``networking``."""
    name = unique_name(prefix)
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO + "networking:\n  loadBalancerPool: 198.51.100.0/28\n" + networking)
    up = run_netsim("up", str(scenario), "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        k8s = K8s(name, tmp_path)
        k8s.apply(APP)
        yield k8s
    finally:
        assert run_netsim("down", name).returncode == 0
        assert kernel.list_netns(names.cluster_prefix(name)) == []


def services_behave(k8s) -> None:
    """What every proxy mode must do with APP: ClusterIP from pods on the backends' node and on
    another, NodePort and LoadBalancer from the external host, refusal without endpoints, and a
    NetworkPolicy judging Service traffic against its backends."""
    backends = web_pods(k8s)
    for client in ("pod/default/client-w1", "pod/default/client-w2"):  # same node as the backends, and not
        seen = {k8s.probe(client, "svc/default/web")[1].get("responder") for _ in range(8)}
        assert seen == backends, (client, seen)
    code, answer = k8s.probe("host/client", f"ip:{node_ip(k8s, 'worker2')}", "--port", "30080")
    assert code == 0 and answer["responder"] in backends, answer
    lb = k8s.get("service", "web-lb")["status"]["loadBalancer"]["ingress"][0]["ip"]
    code, answer = k8s.probe("host/client", f"ip:{lb}", "--port", "80")
    assert code == 0 and answer["responder"] in backends, answer
    code, answer = k8s.probe("pod/default/client-w1", "svc/default/nobody")
    assert code == 1 and answer["reason"] == "refused" and answer["latencyMs"] < 500, answer
    k8s.apply("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\n"
              "spec:\n  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress]\n")
    for client in ("pod/default/client-w1", "pod/default/client-w2"):
        code, answer = k8s.probe(client, "svc/default/web", "--timeout", "1")
        assert code == 1, (client, answer)


def test_nftables_mode_end_to_end(tmp_path, state_dir):
    """The same Services through kube-proxy's nftables mode: one table `ip kube-proxy` per node."""
    with cluster_in_mode(tmp_path, "nf", "  kubeProxyMode: nftables\n") as k8s:
        table = subprocess.run(["ip", "netns", "exec", names.netns_name(k8s.name, "worker2"), "nft", "list",
                                "table", "ip", "kube-proxy"], capture_output=True, text=True, check=True).stdout
        assert "service-ips" in table and "default/web" in table
        shown = run_netsim("proxy", "rules", "worker2", "-c", k8s.name)
        assert shown.returncode == 0 and "table ip kube-proxy" in shown.stdout
        services_behave(k8s)
