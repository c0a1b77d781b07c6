"""Calico's BGP objects change the sessions of a running cluster (networking.cni: calico, no
encapsulation, 4 nodes): first the node-to-node full mesh; then, as a user scales BGP out, the mesh
switched off in BGPConfiguration "default", the control-plane node made a route reflector (its
RouteReflectorClusterID annotation and a label) and a BGPPeer peering every node with it, so each
worker keeps one session and still learns every block through the reflector with the original next
hop (pods on two workers talk); then back to the mesh, which a route reflector stays out of until
its cluster ID is removed.  Objects go in through `netsim apply`,
`annotate` and `label` (the same verbs kubectl has), sessions are read with `netsim bgp status`."""

from __future__ import annotations

import json
import time

import pytest

from netsim import kernel
from netsim.model import names
from netsim.node import podnet
from netsim.observe import probe
from tests.conftest import K8s, run_netsim, unique_name

NODES = ("control-plane", "worker1", "worker2", "worker3")
SCENARIO = """apiVersion: netsim/v1alpha1
kind: Scenario
name: ignored
networking:
  cni: calico
  calico: {ipipMode: Never, vxlanMode: Never}
nodes:
  - {name: control-plane, role: control-plane}
  - {name: worker1}
  - {name: worker2}
  - {name: worker3}
"""
PODS = "---\n".join(f"""apiVersion: v1
kind: Pod
metadata: {{name: {p}}}
spec:
  nodeName: {node}
  containers: [{{name: web, image: agnhost, ports: [{{containerPort: 80}}]}}]
""" for p, node in (("a", "worker1"), ("b", "worker2")))
NO_MESH = """apiVersion: crd.projectcalico.org/v1
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMeshEnabled: false, logSeverityScreen: Info}
"""
PEER_WITH_RR = """apiVersion: crd.projectcalico.org/v1
kind: BGPPeer
metadata: {name: peer-with-route-reflectors}
spec:
  nodeSelector: all()
  peerSelector: route-reflector == 'true'
"""
MESH = NO_MESH.replace("nodeToNodeMeshEnabled: false", "nodeToNodeMeshEnabled: true")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bgp")
    state = tmp / "state"
    mp = pytest.MonkeyPatch()
    mp.setenv("NETSIM_STATE_DIR", str(state))
    name = unique_name("bgp")
    scenario = tmp / "scenario.yaml"
    scenario.write_text(SCENARIO)
    try:
        up = run_netsim("up", str(scenario), "--name", name)
        assert up.returncode == 0, up.stderr
        yield K8s(name, tmp)
    finally:
        down = run_netsim("down", name)
        mp.undo()
        assert down.returncode == 0, down.stderr
        assert kernel.list_netns(names.cluster_prefix(name)) == []


def established(c: K8s) -> dict[str, set[tuple[str, str]]]:
    """Per node, its Established peers as (address, peer type)."""
    result = run_netsim("bgp", "status", "-c", c.name, "-o", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    return {e["node"]: {(p["peerAddress"], p["peerType"]) for p in e["peers"] if p["info"] == "Established"}
            for e in report}


def wait_for(c: K8s, want: dict[str, set[tuple[str, str]]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    seen = {}
    while time.monotonic() < deadline:
        seen = established(c)
        if seen == want:
            return
        time.sleep(0.5)
    raise AssertionError(f"BGP sessions: want {want}, have {seen}")


def test_mesh_then_route_reflector_then_mesh(cluster):
    c = cluster
    ips = {n["metadata"]["name"]: n["status"]["addresses"][0]["address"]
           for n in json.loads(c("get", "nodes", "-o", "json").stdout)["items"]}
    mesh = {n: {(ips[p], "node-to-node mesh") for p in NODES if p != n} for n in NODES}
    wait_for(c, mesh)
    c.apply(PODS)
    deadline = time.monotonic() + 30
    pods: dict[str, str] = {}
    while time.monotonic() < deadline and len(pods) < 2:
        pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in c.pods()
                if p["metadata"]["name"] in ("a", "b") and p.get("status", {}).get("podIP")
                and p["status"].get("phase") == "Running"}
        time.sleep(0.3)
    assert set(pods) == {"a", "b"}, c.log_tail()

    def a_reaches_b() -> bool:
        netns = podnet.pod_netns(c.name, "default", "a")
        return probe.connect(netns, pods["b"], 80, "tcp", timeout=2.0)["result"] == "allow"

    assert a_reaches_b()

    rr = "control-plane"
    c("annotate", "node", rr, "projectcalico.org/RouteReflectorClusterID=244.0.0.1")
    c("label", "node", rr, "route-reflector=true")
    c.apply(PEER_WITH_RR)
    c.apply(NO_MESH)
    reflected = {n: {(ips[rr], "node specific")} for n in NODES if n != rr}
    reflected[rr] = {(ips[n], "node specific") for n in NODES if n != rr}
    wait_for(c, reflected)
    # worker1 learns worker2's block through the reflector, with worker2 as the next hop.
    w1 = names.netns_name(c.name, "worker1")
    deadline = time.monotonic() + 20
    routes: list[dict] = []
    while time.monotonic() < deadline:
        routes = [r for r in json.loads(kernel_routes(w1)) if r.get("protocol") == "bird" and "gateway" in r]
        if any(r["gateway"] == ips["worker2"] for r in routes):
            break
        time.sleep(0.5)
    assert any(r["gateway"] == ips["worker2"] for r in routes), routes
    assert a_reaches_b()

    # The mesh back on: a route reflector ignores it (confd renders "This node is configured as a
    # route reflector ... ignore node-to-node mesh setting") and the others skip it, until it is
    # no reflector any more.
    c("delete", "bgppeer", "peer-with-route-reflectors")
    c.apply(MESH)
    workers_mesh = {n: {(ips[p], "node-to-node mesh") for p in NODES if p not in (n, rr)} for n in NODES if n != rr}
    wait_for(c, {rr: set(), **workers_mesh})
    c("annotate", "node", rr, "projectcalico.org/RouteReflectorClusterID-")
    c("label", "node", rr, "route-reflector-")
    wait_for(c, mesh)
    assert a_reaches_b()


def kernel_routes(netns: str) -> str:
    import subprocess

    return subprocess.run(["ip", "-n", netns, "-j", "route"], capture_output=True, text=True, check=True,
                          timeout=10).stdout
