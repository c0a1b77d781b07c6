"""The fabric with real namespaces, links and packets."""

import os
import subprocess
import time

import pytest

from netsim import kernel
from netsim.fabric import Cluster, teardown
from netsim.model import names, state
from tests.conftest import host_snapshot, unique_name


def test_nodes_ping_each_other_over_the_underlay(make_cluster):
    c = make_cluster()
    c.up()
    nodes = [m.name for m in c.nodes()]
    for a in nodes:
        for b in nodes:
            if a != b:
                assert c.ping(a, b) is not None, f"{a} cannot reach {b} at {c.members[b].ip}"


def test_external_host_reaches_every_node_ip_and_the_gateway(make_cluster):
    c = make_cluster()
    c.up()
    for node in c.nodes():
        assert c.ping("client", node.ip) is not None, f"client cannot reach node {node.name} {node.ip}"
    assert c.ping("client", c.gateway) is not None


def test_an_address_nobody_holds_gets_no_reply(make_cluster):
    c = make_cluster(nodes=("cp", "w1"), hosts=())
    c.up()
    assert c.ping("cp", "192.168.56.200", timeout=0.3) is None


def test_nodes_forward_and_route_via_the_underlay_gateway(make_cluster):
    c = make_cluster()
    c.up()
    for m in c.members.values():
        ns = kernel.Namespace.open(m.netns)
        try:
            routes = ns.routes()
            assert {"dst": "default", "gateway": c.gateway} in routes
            assert f"{m.ip}/24" in ns.addresses()["eth0"]
            forwarding = ns.sysctl("net.ipv4.ip_forward")
        finally:
            ns.close()
        assert forwarding == ("1" if m.kind == "node" else "0"), m.name


def test_up_twice_changes_nothing_and_drops_removed_members(make_cluster):
    c = make_cluster()
    c.up()
    lan = kernel.Namespace.open(c.underlay_netns)

    def identities() -> dict[str, tuple]:  # what a recreated link would change (not its settling state)
        return {name: (link["index"], link["mac"], link["master"]) for name, link in lan.links().items()}

    before = identities()
    c.up()
    assert identities() == before, "a second up must not recreate links"

    smaller = Cluster(c.name)
    smaller.add_node("cp", role="control-plane")
    smaller.add_node("w1")
    smaller.up()
    after = lan.links()
    lan.close()
    assert "w2" not in after and "client" not in after
    assert kernel.list_netns(names.cluster_prefix(c.name)) == sorted(
        [c.underlay_netns, c.members["cp"].netns, c.members["w1"].netns])
    assert smaller.ping("w1", "cp") is not None


def test_down_removes_namespaces_processes_and_state(make_cluster, state_dir):
    c = make_cluster()
    c.up()
    sleeper = subprocess.Popen(["ip", "netns", "exec", c.members["w1"].netns, "sleep", "300"])
    deadline = time.monotonic() + 5
    while sleeper.pid not in kernel.pids_in_netns([c.members["w1"].netns]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sleeper.pid in kernel.pids_in_netns([c.members["w1"].netns])
    assert state.read_state(c.name).phase == "up"
    removed = c.down()
    assert sleeper.wait(timeout=5) is not None
    assert len(removed) == 5
    assert kernel.list_netns(names.cluster_prefix(c.name)) == []
    assert kernel.pids_in_netns(removed) == {}
    assert not (state_dir / c.name).exists()


def test_host_namespace_is_identical_before_up_and_after_down(make_cluster):
    before = host_snapshot()
    c = make_cluster()
    c.up()
    assert c.ping("client", c.members["w1"].ip) is not None
    c.down()
    after = host_snapshot()
    for key in before:
        assert after[key] == before[key], f"host {key} changed"


def test_two_clusters_with_the_same_subnet_run_side_by_side(make_cluster):
    a = make_cluster(nodes=("cp", "w1"), hosts=("client",))
    b = make_cluster(nodes=("cp", "w1"), hosts=("client",))
    a.up()
    b.up()
    assert a.ping("client", "w1") is not None and b.ping("client", "w1") is not None
    a.down()
    assert b.ping("client", "w1") is not None, "removing one cluster must not disturb the other"
    assert kernel.list_netns(names.cluster_prefix(a.name)) == []


def test_long_node_names_get_distinct_short_uplinks(make_cluster):
    c = make_cluster(nodes=("control-plane-number-one", "worker-node-with-long-name-1",
                            "worker-node-with-long-name-2"), hosts=())
    c.up()
    uplinks = {m.uplink for m in c.nodes()}
    assert len(uplinks) == 3 and all(len(u) <= names.IFNAMSIZ for u in uplinks)
    assert c.ping("worker-node-with-long-name-1", "worker-node-with-long-name-2") is not None


def test_a_failure_midway_through_up_removes_what_it_made(state_dir, monkeypatch):
    c = Cluster(unique_name())
    for n in ("cp", "w1", "w2", "w3"):
        c.add_node(n, role="control-plane" if n == "cp" else "worker")
    real_add_veth = kernel.Batch.add_veth
    calls = []

    def failing_add_veth(self, *args, **kw):
        calls.append(args[0])
        if len(calls) == 3:
            raise OSError("injected fault")
        return real_add_veth(self, *args, **kw)

    monkeypatch.setattr(kernel.Batch, "add_veth", failing_add_veth)
    try:
        with pytest.raises(OSError, match="injected fault"):
            c.up()
        assert kernel.list_netns(names.cluster_prefix(c.name)) == []
        assert not (state_dir / c.name).exists()
    finally:
        teardown(c.name)


def test_a_batch_of_thousands_of_requests_is_acknowledged_in_full():
    """kube-proxy's IPVS mode puts every Service IP on one link in one batch: 3000 requests
    must neither overflow the socket's receive buffer with acks nor lose one."""
    name = names.netns_name(unique_name("kb"), "node")
    ns = kernel.Namespace.create(name)
    try:
        with ns.batch() as b:
            b.add_bridge("br0", 1500)
        index = ns.index("br0")
        wanted = {f"10.96.{k // 256}.{k % 256}/32" for k in range(3000)}
        with ns.batch() as b:
            for cidr in sorted(wanted):
                b.add_address(index, cidr)
        assert {a for a in ns.addresses_of(index) if a.endswith("/32")} == wanted
        with ns.batch() as b:  # and the first failure among them is still reported, by name
            for cidr in sorted(wanted)[:300]:
                b.add_address(index, cidr)
            b.delete_link("br0")
            b.add_address(index, "10.97.0.1/32")
        raise AssertionError("adding an address to a deleted link did not fail")
    except kernel.NetlinkError as exc:
        assert "add address 10.97.0.1/32" in str(exc)
    finally:
        ns.close()
        kernel.remove_netns([name])


def test_entering_a_namespace_that_is_not_there_keeps_no_descriptor():
    """A watcher polling for a pod's namespace before it exists (a trace, a test) once ran out
    of file descriptors: the failed open kept the thread's own namespace fd."""
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(200):
        with pytest.raises(FileNotFoundError), kernel.entered(kernel.netns_path("nsim-not-there")):
            pass
    assert len(os.listdir("/proc/self/fd")) == fds
