"""A cluster over a routed underlay (networking.underlaySubnets), driven through the CLI: two
L2 segments behind the underlay's router, nodes on both and an external host on the second.
Addresses and default routes per segment, real packets across the router, pods across segments
over flannel's VXLAN (directRouting within a segment), `netsim check`, probe and trace (the
router's hop), and `down` leaving nothing.  One cluster serves the module."""

import json
import subprocess

import pytest
from scapy.layers.vxlan import VXLAN

from netsim import kernel
from netsim.fabric import daemon
from netsim.model import names
from tests.conftest import run_netsim, running, unique_name
from tests.kernel.test_overlay import capture, decode

SCENARIO = """apiVersion: netsim/v1alpha1
kind: Scenario
name: ignored
nodes:
  - {name: control-plane, role: control-plane}
  - {name: worker1}
  - {name: worker2, subnet: 192.168.57.0/24}
externalHosts:
  - {name: client, subnet: 192.168.57.0/24}
networking:
  underlaySubnets: [192.168.56.0/24, 192.168.57.0/24]
  directRouting: true
manifests:
  - apiVersion: apps/v1
    kind: DaemonSet
    metadata: {name: net}
    spec:
      selector: {matchLabels: {app: net}}
      template:
        metadata: {labels: {app: net}}
        spec: {containers: [{name: c, image: busybox, ports: [{containerPort: 8080}]}]}
expect:
  - {from: host/client, to: node/worker1, protocol: ICMP}
  - {from: node/worker2, to: node/control-plane, port: 6443}
  - {from: pods/default/app=net, to: pods/default/app=net, port: 8080}
"""


class Segmented:
    def __init__(self, name, env):
        self.name, self.env = name, env

    def __call__(self, *args, check=True):
        r = run_netsim(args[0], "-c", self.name, *args[1:], env=self.env)
        if check:
            assert r.returncode == 0, f"netsim {' '.join(args)}: {r.stdout}{r.stderr}"
        return r

    def sh(self, member: str, *argv: str, check=True) -> str:
        return self("exec", member, "--", *argv, check=check).stdout

    def netns(self, member: str) -> str:
        return names.netns_name(self.name, member)

    def pods(self) -> dict[str, dict]:
        items = json.loads(self("get", "pods", "-l", "app=net", "-o", "json").stdout)["items"]
        return {p["spec"]["nodeName"]: p for p in running(items)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("segments")
    (d / "scenario.yaml").write_text(SCENARIO)
    env = {"NETSIM_STATE_DIR": str(d / "state"), "KUBECONFIG": str(d / "kubeconfig")}
    name = unique_name("seg")
    up = run_netsim("up", str(d / "scenario.yaml"), "--name", name, env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert "warning" not in up.stderr, up.stderr  # VXLAN crosses segments: nothing to warn about
        yield Segmented(name, env)
    finally:
        down = run_netsim("down", name, env=env)
        assert down.returncode == 0, down.stderr
        assert kernel.list_netns(names.cluster_prefix(name)) == []
        assert daemon.agent_pids(name) == []
        assert not (d / "state" / name).exists()


def test_every_member_is_on_its_segment_with_its_own_gateway(cluster):
    expected = {"control-plane": ("192.168.56.2/24", "192.168.56.1"), "worker1": ("192.168.56.3/24", "192.168.56.1"),
                "worker2": ("192.168.57.2/24", "192.168.57.1"), "client": ("192.168.57.254/24", "192.168.57.1")}
    for member, (cidr, gateway) in expected.items():
        ref = f"host/{member}" if member == "client" else f"node/{member}"
        assert f"inet {cidr} " in cluster.sh(ref, "ip", "-4", "addr", "show", "eth0"), member
        assert cluster.sh(ref, "ip", "route", "show", "default").startswith(f"default via {gateway} dev eth0"), member
    node = json.loads(cluster("get", "node", "worker2", "-o", "json").stdout)
    assert {"type": "InternalIP", "address": "192.168.57.2"} in node["status"]["addresses"]
    # The underlay's router: a bridge per segment holding its gateway, forwarding between them.
    lan = subprocess.run(["ip", "-n", cluster.netns(names.UNDERLAY_MEMBER), "-4", "-br", "addr"], capture_output=True,
                         text=True, check=True).stdout
    assert {tuple(line.split()[::2]) for line in lan.splitlines()} >= {
        ("br-underlay", "192.168.56.1/24"), ("br-underlay1", "192.168.57.1/24")}, lan
    assert "192.168.56.0/24,192.168.57.0/24" in run_netsim("status", env=cluster.env).stdout
    assert "routed to 192.168.57.0/24 · bridge br-underlay1 · gateway 192.168.57.1" in cluster("graph").stdout


def test_packets_cross_segments_through_the_router(cluster):
    out = cluster.sh("node/worker1", "ping", "-c1", "-W2", "192.168.57.254")
    assert "1 received" in out and "ttl=63" in out, out  # one router on the way
    out = cluster.sh("host/client", "ping", "-c1", "-W2", "192.168.56.2")
    assert "1 received" in out and "ttl=63" in out, out
    assert "ttl=64" in cluster.sh("host/client", "ping", "-c1", "-W2", "192.168.57.2")  # same segment: bridged
    # Nodes, an external host and pods across segments, as the scenario expects.
    check = cluster("check", check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_pods_reach_pods_on_the_other_segment_over_vxlan(cluster):
    pods = cluster.pods()
    assert set(pods) == {"worker1", "worker2"}
    a, b = pods["worker1"], pods["worker2"]
    code = cluster("probe", f"pod/default/{a['metadata']['name']}", f"pod/default/{b['metadata']['name']}", "-o",
                   "json", check=False)
    got = json.loads(code.stdout)
    assert code.returncode == 0 and got["responder"] == b["metadata"]["name"], got
    assert got["clientIP"] == a["status"]["podIP"], got  # the pod's own address, not masqueraded
    # On the second segment's wire: VXLAN from worker1's address on the first segment.
    with capture(cluster.netns(names.UNDERLAY_MEMBER), "worker2") as frames:
        cluster("exec", f"pod/default/{a['metadata']['name']}", "--", "ping", "-c1", "-W2", b["status"]["podIP"])
    vxlan = [f for f in decode(frames) if f.haslayer(VXLAN)]
    assert vxlan and {(f["IP"].src, f["IP"].dst) for f in vxlan} >= {("192.168.56.3", "192.168.57.2")}
    # directRouting: VXLAN only across the router, a direct route within a segment.
    routes = cluster.sh("node/worker1", "ip", "route")
    cp_cidr = json.loads(cluster("get", "node", "control-plane", "-o", "json").stdout)["spec"]["podCIDR"]
    w2_cidr = json.loads(cluster("get", "node", "worker2", "-o", "json").stdout)["spec"]["podCIDR"]
    assert f"{cp_cidr} via 192.168.56.2 dev eth0" in routes, routes
    assert f"{w2_cidr} via {w2_cidr.split('/')[0]} dev flannel.1 onlink" in routes, routes


def test_trace_shows_the_underlays_router_between_segments(cluster):
    pods = cluster.pods()
    r = cluster("trace", f"pod/default/{pods['worker1']['metadata']['name']}",
                f"pod/default/{pods['worker2']['metadata']['name']}", "--port", "8080", "-o", "json")
    t = json.loads(r.stdout)
    assert t["verdict"]["result"] == "DELIVERED", t["verdict"]
    underlay = [h for h in t["hops"] if h["where"] == "underlay"]
    seen = [(h.get("interface"), h.get("direction")) for h in underlay if h["kind"] == "capture"]
    assert seen == [("worker1", "in"), ("br-underlay", "in"), ("br-underlay1", "out"), ("worker2", "out")], seen
    [route] = [h for h in underlay if h["kind"] == "route"]
    assert route["summary"] == "route 192.168.57.2 dev br-underlay1 src 192.168.57.1", route
