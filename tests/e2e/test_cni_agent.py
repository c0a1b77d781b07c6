"""The node agent as a CNI runtime: pods networked through the node's conflist (flannel ->
bridge + host-local, then portmap), the state a runtime leaves, hostPorts, and GC."""

import base64
import json
import os
import signal
import time

import pytest

from netsim.fabric import daemon
from netsim.model import state
from tests.conftest import run_netsim, running
from tests.e2e.test_workloads import deployment

HOSTPORT_POD = """apiVersion: v1
kind: Pod
metadata: {name: edge, labels: {app: edge}}
spec:
  nodeName: worker1
  containers:
  - name: proxy
    image: nginx
    ports:
    - {containerPort: 80, hostPort: 8080}
    - {containerPort: 53, hostPort: 5353, protocol: UDP}
"""


def node_dir(k8s, node: str):
    return state.cluster_dir(k8s.name) / "nodes" / node


def allocations(k8s, node: str) -> dict[str, bytes]:
    directory = node_dir(k8s, node) / "cni" / "networks" / "cbr0"
    if not directory.exists():
        return {}
    return {f.name: f.read_bytes() for f in directory.iterdir() if f.name[0].isdigit()}


@pytest.mark.parametrize("k8s", ["sqlite"], indirect=True)
def test_pods_get_their_network_from_the_nodes_conflist(k8s):
    k8s.apply(deployment(4))
    pods = running(k8s.pods())
    assert len(pods) == 4
    conflist = json.loads((node_dir(k8s, "worker1") / "cni" / "net.d" / "10-flannel.conflist").read_text())
    assert [p["type"] for p in conflist["plugins"]] == ["flannel", "portmap", "netsim-policy"]
    assert conflist["plugins"][0]["delegate"] == {"hairpinMode": True, "isDefaultGateway": True}
    by_node: dict[str, dict[str, str]] = {}
    system: dict[str, dict[str, str]] = {}  # the cluster DNS's pods hold addresses too
    for p in pods + running(json.loads(k8s("get", "pods", "-n", "kube-system", "-o", "json").stdout)["items"]):
        mine = by_node if p in pods else system
        mine.setdefault(p["spec"]["nodeName"], {})[p["status"]["podIP"]] = p["metadata"]["uid"]
    for node, only_web in by_node.items():
        ips = {**only_web, **system.get(node, {})}
        # host-local's own files: one per pod IP, holding "<container ID>\r\n<ifname>".
        assert allocations(k8s, node) == {ip: f"{uid}\r\neth0".encode() for ip, uid in ips.items()}
        cache = node_dir(k8s, node) / "cni" / "cache" / "results"
        entries = [json.loads(f.read_text()) for f in cache.iterdir()]
        assert sorted(e["containerId"] for e in entries) == sorted(ips.values())
        for e in entries:
            assert json.loads(base64.b64decode(e["config"]))["name"] == "cbr0"
            assert e["result"]["ips"][0]["address"].split("/")[0] in ips
        env = (node_dir(k8s, node) / "run" / "flannel" / "subnet.env").read_text()
        cidr = k8s.get("node", node)["spec"]["podCIDR"]
        assert f"FLANNEL_SUBNET={cidr.rsplit('.', 1)[0]}.1/24" in env
    k8s("delete", "deployment", "web")
    deadline = time.monotonic() + 20
    left = {n: {ip: uid for ip, uid in system.get(n, {}).items()} for n in by_node}

    def held(n):
        return {ip: v.decode().split("\r\n")[0] for ip, v in allocations(k8s, n).items()}
    while any(held(n) != left[n] for n in by_node) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(held(n) == left[n] for n in by_node), "DEL must release every pod address"
    for node in by_node:
        cache = node_dir(k8s, node) / "cni" / "cache" / "results"
        assert sorted(json.loads(f.read_text())["containerId"] for f in cache.iterdir()) == sorted(left[node].values())


@pytest.mark.parametrize("k8s", ["sqlite"], indirect=True)
def test_host_ports_reach_the_pod_through_portmap(k8s):
    k8s.apply(HOSTPORT_POD)
    [pod] = running(k8s.pods())
    node_ip = k8s.get("node", "worker1")["status"]["addresses"][0]["address"]
    code, answer = k8s.probe("host/client", f"ip:{node_ip}", "--port", "8080")
    assert code == 0 and answer["responder"] == "edge", answer
    code, answer = k8s.probe("host/client", f"ip:{node_ip}", "--port", "5353", "--proto", "udp")
    assert code == 0 and answer["responder"] == "edge", answer
    nat = k8s("exec", "node/worker1", "--", "iptables-save", "-t", "nat").stdout
    assert "CNI-HOSTPORT-DNAT" in nat and f"--to-destination {pod['status']['podIP']}:80" in nat
    k8s("delete", "pod", "edge")
    deadline = time.monotonic() + 20
    while "CNI-DN-" in k8s("exec", "node/worker1", "--", "iptables-save", "-t", "nat").stdout:
        assert time.monotonic() < deadline, "portmap DEL did not remove the pod's chain"
        time.sleep(0.1)


@pytest.mark.parametrize("k8s", ["sqlite"], indirect=True)
def test_a_restarted_agent_collects_attachments_of_pods_it_lost(k8s, tmp_path):
    """An address held for a container nobody knows (a crash between ADD and the checkpoint)
    is released by the CNI GC the agent runs when it starts."""
    k8s.apply(deployment(2))
    pods = running(k8s.pods())
    node = pods[0]["spec"]["nodeName"]
    [pid] = daemon.agent_pids(k8s.name)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while daemon.agent_pids(k8s.name) and time.monotonic() < deadline:
        time.sleep(0.01)
    cidr = k8s.get("node", node)["spec"]["podCIDR"]
    stray = node_dir(k8s, node) / "cni" / "networks" / "cbr0" / (cidr.rsplit(".", 1)[0] + ".250")
    stray.write_bytes(b"lost-container\r\neth0")
    again = run_netsim("up", str(tmp_path / "scenario.yaml"), "--name", k8s.name)
    assert again.returncode == 0, again.stderr
    deadline = time.monotonic() + 10
    while stray.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not stray.exists(), "GC must release the lost container's address"
    assert {p["status"]["podIP"] for p in running(k8s.pods())} == {p["status"]["podIP"] for p in pods}
