"""flannel: subnet leases in the store (flannel's layout, both backends), and the overlay on
real clusters: pod<->pod across nodes on VXLAN and host-gw, captures on the underlay, MTU,
masquerade, nodes joining and leaving, agent restarts."""

import contextlib
import ipaddress
import json
import socket
import subprocess
import threading
import time

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.vxlan import VXLAN
from scapy.utils import rdpcap

from netsim import kernel
from netsim.model import names, state
from netsim.node import flanneld
from tests.conftest import SCENARIO, K8s, run_netsim, running, unique_name
from tests.e2e.test_workloads import leases
from tests.kernel.test_store import store, store_url  # noqa: F401  (fixtures: both store backends)

CONFIG = flanneld.NetworkConfig(ipaddress.IPv4Network("10.244.0.0/16"), 24)


def test_leases_live_in_flannels_layout_and_are_kept_per_public_ip(store):  # noqa: F811
    flanneld.write_config(store, CONFIG)
    assert {k: v for k, v in store.get(flanneld.CONFIG_KEY).items() if k != "metadata"} == {
        "Network": "10.244.0.0/16", "SubnetLen": 24,
        "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472, "DirectRouting": False}}
    a = flanneld.acquire(store, CONFIG, "192.168.56.2", "02:00:00:00:00:02")
    b = flanneld.acquire(store, CONFIG, "192.168.56.3", "02:00:00:00:00:03")
    assert (str(a), str(b)) == ("10.244.0.0/24", "10.244.1.0/24")
    lease = store.get("/coreos.com/network/subnets/10.244.1.0-24")
    assert lease["PublicIP"] == "192.168.56.3" and lease["BackendType"] == "vxlan"
    assert lease["BackendData"] == {"VNI": 1, "VtepMAC": "02:00:00:00:00:03"}
    # A restarted node finds its lease again; a changed VTEP MAC is written into it.
    assert flanneld.acquire(store, CONFIG, "192.168.56.3", "02:00:00:00:00:33") == b
    assert store.get(flanneld.lease_key(b))["BackendData"]["VtepMAC"] == "02:00:00:00:00:33"
    assert flanneld.release(store, "192.168.56.2") == ["10.244.0.0/24"]
    assert [str(lease.subnet) for lease in flanneld.leases(store)[0]] == ["10.244.1.0/24"]
    # The freed subnet is the next one handed out.
    assert str(flanneld.acquire(store, CONFIG, "192.168.56.9", None)) == "10.244.0.0/24"


def test_concurrent_nodes_never_share_a_subnet(store_url):  # noqa: F811
    from netsim.api.store import open_store

    setup = open_store(store_url)
    flanneld.write_config(setup, CONFIG)
    got: dict[str, str] = {}

    def join(i: int) -> None:
        s = open_store(store_url)
        try:
            got[f"192.168.56.{10 + i}"] = str(flanneld.acquire(s, CONFIG, f"192.168.56.{10 + i}", None))
        finally:
            s.close()

    threads = [threading.Thread(target=join, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(got) == 12 and len(set(got.values())) == 12
    assert len(flanneld.leases(setup)[0]) == 12
    setup.close()


# -- on real clusters ---------------------------------------------------------------------
DAEMONSET = """apiVersion: apps/v1
kind: DaemonSet
metadata: {name: net}
spec:
  selector: {matchLabels: {app: net}}
  template:
    metadata: {labels: {app: net}}
    spec:
      containers:
      - name: c
        image: busybox
        ports:
        - {containerPort: 8080}
        - {containerPort: 8081, protocol: UDP}
"""


@pytest.fixture(params=["vxlan", "host-gw"])
def overlay(request, tmp_path, state_dir):
    name = unique_name("fl")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO + f"networking:\n  backend: {request.param}\n")
    up = run_netsim("up", str(scenario), "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        k8s = K8s(name, tmp_path)
        k8s.backend = request.param
        k8s.apply(DAEMONSET)
        yield k8s
    finally:
        assert run_netsim("down", name).returncode == 0
        assert kernel.list_netns(names.cluster_prefix(name)) == []


def by_node(k8s) -> dict[str, dict]:
    return {p["spec"]["nodeName"]: p for p in running(k8s.pods("app=net"))}


def node_ip(k8s, node: str) -> str:
    return k8s.get("node", node)["status"]["addresses"][0]["address"]


def in_node(k8s, node: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", names.netns_name(k8s.name, node), *argv],
                          capture_output=True, text=True, timeout=30, check=True).stdout


def capture(k8s, bpf: str, count: int, action, wait: float = 5.0) -> list:
    """Packets on the underlay while ``action`` runs (tcpdump armed first, bounded)."""
    pcap = k8s.tmp_path / f"cap{time.monotonic_ns()}.pcap"
    underlay = names.netns_name(k8s.name, names.UNDERLAY_MEMBER)
    # worker1's port on the underlay bridge: frames the bridge forwards between ports never
    # pass the bridge device itself.
    port = next(m.uplink for m in state.read_state(k8s.name).members if m.name == "worker1")
    proc = subprocess.Popen(["ip", "netns", "exec", underlay, "tcpdump", "-i", port, "-nn",
                             "-U", "-c", str(count), "-w", str(pcap), bpf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 5
        while "listening" not in (proc.stderr.readline() if proc.stderr else "") and time.monotonic() < deadline:
            pass
        action()
        with contextlib.suppress(subprocess.TimeoutExpired):  # fewer packets than asked (none expected)
            proc.wait(timeout=wait)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return list(rdpcap(str(pcap))) if pcap.exists() else []


def test_pods_reach_pods_on_other_nodes(overlay):
    k8s = overlay
    pods = by_node(k8s)
    assert set(pods) == {"worker1", "worker2"}
    a, b = pods["worker1"], pods["worker2"]
    a_ip, b_ip = a["status"]["podIP"], b["status"]["podIP"]
    # Each node's lease is its spec.podCIDR and what its subnet.env hands the CNI plugin.
    held = leases(k8s)
    mtu = 1450 if k8s.backend == "vxlan" else 1500
    for node in ("control-plane", "worker1", "worker2"):
        cidr = k8s.get("node", node)["spec"]["podCIDR"]
        assert held[node_ip(k8s, node)] == cidr
        env = (state.cluster_dir(k8s.name) / "nodes" / node / "run" / "flannel" / "subnet.env").read_text()
        assert f"FLANNEL_MTU={mtu}" in env and "FLANNEL_NETWORK=10.244.0.0/16" in env
    assert f"mtu {mtu}" in k8s("exec", f"pod/default/{a['metadata']['name']}", "--", "ip", "link", "show",
                                "eth0").stdout
    # ICMP, TCP and UDP across nodes, with the pods' own addresses (no masquerade in between).
    ping = k8s("exec", f"pod/default/{a['metadata']['name']}", "--", "ping", "-c1", "-W2", b_ip, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    code, tcp = k8s.probe(f"pod/default/{a['metadata']['name']}", f"pod/default/{b['metadata']['name']}")
    assert code == 0 and tcp["responder"] == b["metadata"]["name"] and tcp["clientIP"] == a_ip, tcp
    code, udp = k8s.probe(f"pod/default/{b['metadata']['name']}", f"pod/default/{a['metadata']['name']}",
                          "--port", "8081", "--proto", "udp")
    assert code == 0 and udp["responder"] == a["metadata"]["name"] and udp["clientIP"] == b_ip, udp
    # On the wire: VXLAN (UDP 8472, VNI 1) around the pod addresses, or plain pod addresses.
    send = lambda: k8s("exec", f"pod/default/{a['metadata']['name']}", "--", "ping", "-c2", "-i", "0.2",  # noqa: E731
                       "-W2", b_ip, check=False)
    if k8s.backend == "vxlan":
        packets = capture(k8s, "udp port 8472", 2, send)
        assert packets, "no VXLAN packet on the underlay"
        for p in packets:
            assert p.haslayer(VXLAN) and p[VXLAN].vni == 1, p.summary()
            assert p[IP].src in (node_ip(k8s, "worker1"), node_ip(k8s, "worker2"))
            inner = p[VXLAN][IP]
            assert {inner.src, inner.dst} == {a_ip, b_ip} and inner.haslayer(ICMP)
    else:
        packets = capture(k8s, "icmp", 2, send)
        assert packets and all({p[IP].src, p[IP].dst} == {a_ip, b_ip} for p in packets)
        assert not capture(k8s, "udp port 8472", 1, send, wait=1.0)
    # The largest DF ping that fits the pod MTU crosses; one byte more fails at once.
    fits = mtu - 28
    big = k8s("exec", f"pod/default/{a['metadata']['name']}", "--", "ping", "-c1", "-W2", "-M", "do", "-s",
              str(fits), b_ip, check=False)
    assert big.returncode == 0, big.stdout + big.stderr
    t0 = time.monotonic()
    over = k8s("exec", f"pod/default/{a['metadata']['name']}", "--", "ping", "-c1", "-W2", "-M", "do", "-s",
               str(fits + 1), b_ip, check=False)
    assert over.returncode != 0 and "message too long" in (over.stdout + over.stderr)
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize("overlay", ["vxlan"], indirect=True)
def test_pod_traffic_leaving_the_cluster_is_masqueraded_to_the_node(overlay):
    k8s = overlay
    client = next(m for m in state.read_state(k8s.name).members if m.name == "client")
    listener = kernel.socket_in(client.netns, socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 9000))
    listener.listen(4)
    listener.settimeout(5)
    seen = []

    def accept():
        try:
            conn, peer = listener.accept()
            seen.append(peer[0])
            conn.close()
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    pod = by_node(k8s)["worker1"]
    k8s("exec", f"pod/default/{pod['metadata']['name']}", "--", "curl", "-s", "-o", "/dev/null", "--max-time", "3",
        f"http://{client.ip}:9000/", check=False)
    t.join(timeout=6)
    listener.close()
    assert seen == [node_ip(k8s, "worker1")], seen


@pytest.mark.parametrize("overlay", ["vxlan"], indirect=True)
def test_nodes_join_and_leave_and_every_peer_follows(overlay):
    k8s = overlay
    added = run_netsim("node", "add", "worker3", "-c", k8s.name)
    assert added.returncode == 0, added.stderr
    w3 = k8s.get("node", "worker3")
    subnet, w3_ip = w3["spec"]["podCIDR"], node_ip(k8s, "worker3")
    gateway = subnet.rsplit(".", 1)[0] + ".0"
    deadline = time.monotonic() + 1.0
    while f"{subnet} via {gateway} dev flannel.1 onlink" not in in_node(k8s, "worker1", "ip", "route"):
        assert time.monotonic() < deadline, in_node(k8s, "worker1", "ip", "route")
        time.sleep(0.05)
    assert f"dst {w3_ip} self permanent" in in_node(k8s, "worker1", "bridge", "fdb", "show", "dev", "flannel.1")
    assert gateway in in_node(k8s, "worker1", "ip", "neigh", "show", "dev", "flannel.1")
    # The DaemonSet puts a pod on the new node; a pod elsewhere reaches it over the overlay.
    deadline = time.monotonic() + 10
    while "worker3" not in by_node(k8s):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    new = by_node(k8s)["worker3"]
    code, answer = k8s.probe(f"pod/default/{by_node(k8s)['worker1']['metadata']['name']}",
                             f"pod/default/{new['metadata']['name']}")
    assert code == 0 and answer["responder"] == new["metadata"]["name"], answer
    removed = run_netsim("node", "delete", "worker3", "-c", k8s.name)
    assert removed.returncode == 0, removed.stderr
    deadline = time.monotonic() + 1.0
    while subnet in in_node(k8s, "worker1", "ip", "route"):
        assert time.monotonic() < deadline, "worker1 kept the route to the node that left"
        time.sleep(0.05)
    assert w3_ip not in in_node(k8s, "worker1", "bridge", "fdb", "show", "dev", "flannel.1")
    assert gateway not in in_node(k8s, "worker1", "ip", "neigh", "show", "dev", "flannel.1")
    assert w3_ip not in leases(k8s)
    nodes = json.loads(k8s("get", "nodes", "-o", "json").stdout)["items"]
    assert "worker3" not in {n["metadata"]["name"] for n in nodes}
