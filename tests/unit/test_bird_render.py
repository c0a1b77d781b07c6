"""The BIRD configs netsim renders for calico mode (netsim.node.calico.birdcfg via bird.render) have
the shape of calico/node's confd output: the no-encap mesh case line for line against upstream's
compiled example, and per feature (AS, route reflectors, BGPPeers, pool modes, blocks) what the
compiled examples show.  BIRD 1.6 itself (`bird -p`, parse only) accepts every rendered config.
Also: Calico's selector language, the `show protocols` reader on a fake control socket, and the
table `netsim bgp status` prints."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading

import pytest

from netsim.cli.bgp_cmd import COLUMNS, boxed_table
from netsim.node.calico import bird
from netsim.node.calico.selector import SelectorError, matches
from tests.conftest import REPO

MASTER, NODE1, NODE2 = "10.192.0.2/16", "10.192.0.3/16", "10.192.0.4/16"
# confd's standard test affinities (confd/tests/helpers_test.go): "" is implicitly confirmed.
AFFINITIES = [("10.0.0.0/30", ""), ("10.1.0.0/24", ""), ("10.2.0.1/32", ""), ("192.168.221.192/26", ""),
              ("192.168.221.64/26", "confirmed"), ("192.168.221.0/26", "pending")]


def node(name: str, address: str | None, labels: dict | None = None, **annotations) -> dict:
    ann = {bird.ANNOTATION_IPV4: address} if address else {}
    ann.update({{"asn": bird.ANNOTATION_AS, "rr": bird.ANNOTATION_RR}[k]: v for k, v in annotations.items()})
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}, "annotations": ann}}


def pool(cidr="192.168.0.0/16", ipip="Never", vxlan="Never", **spec) -> dict:
    return {"kind": "IPPool", "metadata": {"name": f"pool-{cidr}"},
            "spec": {"cidr": cidr, "ipipMode": ipip, "vxlanMode": vxlan, **spec}}


def bgp_config(name="default", **spec) -> dict:
    return {"kind": "BGPConfiguration", "metadata": {"name": name}, "spec": spec}


def peer(name: str, **spec) -> dict:
    return {"kind": "BGPPeer", "metadata": {"name": name}, "spec": spec}


def affinities(host="kube-master") -> list[dict]:
    return [{"kind": "BlockAffinity", "metadata": {"name": f"{host}-{cidr}"},
             "spec": {"node": host, "cidr": cidr, "state": state, "deleted": "false"}} for cidr, state in AFFINITIES]


def cluster(*extra: dict, master_labels=None, **master_ann) -> list[dict]:
    return [node("kube-master", MASTER, master_labels, **master_ann), node("kube-node-1", NODE1),
            node("kube-node-2", NODE2), *affinities(), *extra]


def render(objects: list[dict], name="kube-master") -> str:
    return bird.render(name, bird.Facts.from_objects(objects))


def shape(text: str) -> list[str]:
    """Lines as confd's compiled examples compare: no blank lines, no netsim notes."""
    return [line.rstrip() for line in text.splitlines()
            if line.strip() and not line.startswith(("# Rendered by netsim", "# with bird_aggr", "# What calico",
                                                     "# ipipMode Never", "# confd/tests"))
            and not line.endswith(", inlined:")]


def protocol(text: str, name: str) -> list[str]:
    """The lines of `protocol bgp NAME`."""
    m = re.search(rf"^protocol bgp {name} from bgp_template {{\n(.*?)^}}", text, re.M | re.S)
    assert m, f"no protocol {name} in:\n{text}"
    return m.group(1).splitlines()


def peers(text: str) -> list[str]:
    return re.findall(r"^protocol bgp (\S+) from", text, re.M)


def test_no_encap_mesh_is_confds_config_line_for_line():
    text = render(cluster(pool(), bgp_config(logSeverityScreen="Info")))
    expected = (REPO / "tests" / "data" / "calico" / "bird-mesh-noencap.cfg").read_text()
    assert shape(text) == shape(expected)


def test_passive_toward_the_higher_address_as_strings_compare():
    objs = [node("a", "192.168.56.3/24"), node("b", "192.168.56.4/24"), node("c", "192.168.56.10/24"), pool()]
    text = render(objs, "b")
    assert peers(text) == ["Mesh_192_168_56_10", "Mesh_192_168_56_3"]
    assert "  passive on;" not in protocol(text, "Mesh_192_168_56_3")
    # "192.168.56.10" < "192.168.56.4" as strings: confd compares them so, and so the peer at .10
    # is the one that waits; the pair still has exactly one active side.
    assert "  passive on;" not in protocol(text, "Mesh_192_168_56_10")
    assert "  passive on;" in protocol(render(objs, "c"), "Mesh_192_168_56_4")


def test_pool_modes_decide_what_bird_programs_into_the_kernel():
    kernel_line = re.compile(r"^  if \(net ~ 10\.244\.0\.0/16\) then \{ (.*)$", re.M)
    modes = {
        ("Never", "Never", None): "accept; }",
        ("Always", "Never", None): "reject; } # Cluster routes are handled by Felix.",
        ("CrossSubnet", "Never", None): "reject; } # Cluster routes are handled by Felix.",
        ("Never", "Always", None): "reject; } # VXLAN routes are handled by Felix.",
        ("Never", "CrossSubnet", None): "reject; } # VXLAN routes are handled by Felix.",
        # Upstream's BIRD would program these with krt_tunnel, which only Calico's BIRD fork has.
        ("Always", "Never", "Enabled"): "reject; } # Cluster routes are handled by Felix.",
        ("CrossSubnet", "Never", "EnabledIPIPOnly"): "reject; } # Cluster routes are handled by Felix.",
        ("Never", "Never", "EnabledIPIPOnly"): "reject; } # Cluster routes are handled by Felix.",
        ("Never", "Never", "Disabled"): "reject; } # Cluster routes are handled by Felix.",
    }
    for (ipip, vxlan, program), want in modes.items():
        config = bgp_config(programClusterRoutes=program) if program else bgp_config()
        text = render(cluster(pool("10.244.0.0/16", ipip, vxlan), config))
        filt = text.split("filter calico_kernel_programming {", 1)[1]
        assert kernel_line.findall(filt) == [want], (ipip, vxlan, program)
        # Exported to peers whatever the mode; tunnel devices' routes never to iBGP peers.
        assert "  if (net ~ 10.244.0.0/16) then { accept; }" in text.split("filter calico_kernel_programming")[0]
        assert '(ifname ~ "tunl0")' in text
        assert ("krt_tunnel" in text) is (program in ("Enabled", "EnabledIPIPOnly") and ipip != "Never")


def test_own_confirmed_blocks_are_blackholes_and_aggregates():
    text = render(cluster(pool()))
    assert re.findall(r"^   route (\S+) blackhole;", text, re.M) == [
        "10.0.0.0/30", "10.1.0.0/24", "192.168.221.192/26", "192.168.221.64/26"]  # confd's key order; no /32
    assert "192.168.221.0/26" not in text  # pending: not this node's yet
    assert "      # Block 192.168.221.64/26 is confirmed" in text
    bare = render([node("kube-master", MASTER), pool()])
    assert "   # No IP blocks or static routes for this host." in bare
    assert "protocol static" not in bare
    other = render(cluster(pool()), "kube-node-1")
    assert "blackhole" not in other.replace("bpf", "")


def test_as_numbers_from_the_node_annotation_then_bgpconfiguration_then_64512():
    assert "  local as 64512;" in render([node("kube-master", MASTER), pool()])
    assert "  local as 65001;" in render([node("kube-master", MASTER), pool(), bgp_config(asNumber=65001)])
    objs = [node("kube-master", MASTER, asn="65002"), node("kube-node-1", NODE1), node("kube-node-2", NODE2,
                                                                                        asn="65003"),
            pool(), bgp_config(asNumber=65001)]
    text = render(objs)
    assert "  local as 65002;" in text
    # A mesh peer without an AS of its own is given this node's, as confd's processMeshPeers does.
    assert "  neighbor 10.192.0.3 as 65002;" in protocol(text, "Mesh_10_192_0_3")
    mesh = protocol(text, "Mesh_10_192_0_4")
    assert "  neighbor 10.192.0.4 as 65003;" in mesh
    assert "    calico_export_to_bgp_peers(false);" in mesh  # another AS: eBGP


def test_mesh_off_and_global_and_node_peers():
    objs = cluster(pool(), bgp_config(nodeToNodeMeshEnabled=False),
                   peer("tor", peerIP="10.192.0.254", asNumber=64513),
                   peer("rack", node="kube-master", peerIP="172.19.4.87:1790", asNumber=64514,
                        maxRestartTime="2m", keepaliveTime="10s", nextHopMode="Self"),
                   peer("other-node-only", node="kube-node-1", peerIP="172.19.4.88", asNumber=64514))
    text = render(objs)
    assert peers(text) == ["Global_10_192_0_254", "Node_172_19_4_87_port_1790"]
    tor = protocol(text, "Global_10_192_0_254")
    assert tor[:3] == ["  neighbor 10.192.0.254 as 64513;",
                       "  source address 10.192.0.2;  # The local address we use for the TCP connection",
                       "  ttl security off;"]
    assert "  passive on;" not in tor  # not a Calico node
    rack = protocol(text, "Node_172_19_4_87_port_1790")
    assert rack[0] == "  neighbor 172.19.4.87 port 1790 as 64514;"
    assert rack[-3:] == ["  graceful restart time 120;", "  keepalive time 10;", "  next hop self;"]
    assert peers(render([node("kube-master", MASTER), pool(), bgp_config(nodeToNodeMeshEnabled=False)])) == []


def test_route_reflector_by_cluster_id_and_selectors():
    objs = cluster(pool(), bgp_config(nodeToNodeMeshEnabled=True),
                   peer("rr-clients", nodeSelector="has(routeReflector)", peerSelector="!has(routeReflector)"),
                   master_labels={"routeReflector": "true"}, rr="10.0.0.1")
    rr = render(objs)
    assert peers(rr) == ["Node_10_192_0_3", "Node_10_192_0_4"]  # a reflector is out of the mesh
    assert protocol(rr, "Node_10_192_0_3")[-2:] == ["  rr client;", "  rr cluster id 10.0.0.1;"]
    client = render(objs, "kube-node-1")
    # The reverse peering confd adds, and the mesh among the clients without the reflector.
    assert peers(client) == ["Mesh_10_192_0_4", "Node_10_192_0_2"]
    assert "  rr client;" not in client


def test_global_peer_that_is_a_calico_node_waits_for_the_lower_address():
    objs = cluster(pool(), bgp_config(nodeToNodeMeshEnabled=False), peer("to-master", peerIP="10.192.0.2"))
    master = render(objs)
    assert peers(master) == ["Node_10_192_0_3", "Node_10_192_0_4"]  # reverse peerings
    node1 = render(objs, "kube-node-1")
    assert peers(node1) == ["Global_10_192_0_2"]
    assert "  passive on;" not in protocol(node1, "Global_10_192_0_2")


def test_node_not_ready_and_bad_address_say_what_to_fix():
    with pytest.raises(bird.NodeNotReady, match="IPv4Address"):
        render([node("kube-master", None), pool()])
    with pytest.raises(bird.NodeNotReady, match="no Node object"):
        render([pool()])
    with pytest.raises(ValueError, match="fix: write it as 192.168.56.3/24"):
        render([node("kube-master", "192.168.56.300/24"), pool()])
    # A peer with a bad address is left out, not the whole config.
    assert peers(render([node("kube-master", MASTER), node("bad", "nope"), pool()])) == []


def test_facts_from_a_cache_a_store_or_dicts():
    objs = cluster(pool())

    class FakeCache:
        def of_kind(self, kind):
            return [o for o in objs if o["kind"] == kind]

    from_cache = bird.Facts.read(FakeCache())
    assert from_cache == bird.Facts.read(objs) == bird.Facts.read(bird.Facts.from_objects(objs))
    assert len(from_cache.nodes) == 3 and len(from_cache.block_affinities) == len(AFFINITIES)


CASES = {
    "mesh no-encap": cluster(pool()),
    "ipip always": cluster(pool(ipip="Always")),
    "ipip cross-subnet, asked of bird": cluster(pool(ipip="CrossSubnet"),
                                                bgp_config(programClusterRoutes="Enabled")),
    "vxlan": cluster(pool(vxlan="Always")),
    "route reflector": cluster(pool(), peer("c", nodeSelector="has(rr)", peerSelector="!has(rr)"),
                               master_labels={"rr": ""}, rr="10.0.0.1"),
    "external peers, ports, ttl, listen": cluster(
        pool(disableBGPExport=True), bgp_config(listenPort=1790, bindMode="NodeIP", logSeverityScreen="Debug",
                                                ignoredInterfaces=["eth9"], nodeMeshMaxRestartTime="90s"),
        peer("x", peerIP="172.19.4.87:1790", asNumber=64514, ttlSecurity=2, localASNumber=64600,
             numAllowedLocalASNumbers=1, keepOriginalNextHop=True, reachableBy="10.192.0.1")),
    "no blocks, no peers": [node("kube-master", MASTER)],
}


@pytest.mark.skipif(not os.path.exists(bird.BIRD), reason="Debian's bird is not installed")
@pytest.mark.parametrize("case", list(CASES))
def test_bird_1_6_accepts_every_rendered_config(case, tmp_path):
    for name in ("kube-master", "kube-node-1"):
        if not any(o["metadata"]["name"] == name for o in CASES[case] if o["kind"] == "Node"):
            continue
        path = tmp_path / f"{name}.cfg"
        path.write_text(render(CASES[case], name))
        assert bird.check_config(path) is None, path.read_text()
    res = subprocess.run([bird.BIRD, "-p", "-c", "/dev/null/x"], capture_output=True, text=True, timeout=30)
    assert res.returncode != 0  # and -p does fail on what it cannot read


# -- selectors --------------------------------------------------------------------------------
def test_calico_selectors():
    labels = {"routeReflector": "true", "rack": "a", "zone": "z1"}
    for sel, want in [("all()", True), ("", True), ("has(routeReflector)", True), ("!has(routeReflector)", False),
                      ("rack == 'a'", True), ('rack == "b"', False), ("rack != 'b'", True), ("missing != 'x'", True),
                      ("rack in {'a', 'b'}", True), ("rack not in {'a'}", False), ("missing not in {'a'}", True),
                      ("has(rack) && zone == 'z1'", True), ("has(nope) || rack == 'a'", True),
                      ("!(has(rack) && rack == 'a')", False)]:
        assert matches(sel, labels) is want, sel
    for bad in ("rack = 'a'", "has(", "rack == a", "&& x"):
        with pytest.raises(SelectorError, match="fix"):
            matches(bad, labels)


# -- the control socket -------------------------------------------------------------------------
SHOW_PROTOCOLS = (
    "2002-name     proto    table    state  since       info\n"
    "1002-static1  Static   master   up     02:41:30    \n"
    " kernel1  Kernel   master   up     02:41:30    \n"
    " Mesh_192_168_56_4 BGP      master   up     02:41:32    Established   \n"
    " Mesh_192_168_56_5 BGP      master   start  02:41:30    Active        Socket: Connection refused\n"
    " Node_10_0_0_9_port_1790 BGP      master   start  02:41:30    Connect       \n"
    "0000 \n"
)


@pytest.fixture
def fake_bird(tmp_path):
    """A control socket speaking BIRD's reply protocol (banner, coded lines), one client at a time."""
    path = tmp_path / "b.ctl"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(4)
    replies = {"show protocols": SHOW_PROTOCOLS, "configure": "0002-Reading configuration\n0003 Reconfigured\n",
               "bad": "9001 syntax error\n"}

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"0001 BIRD 1.6.8 ready.\n")
                line = conn.makefile("rb").readline().decode().strip()
                conn.sendall(replies.get(line, "0000 \n").encode())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield path
    srv.close()


def test_show_protocols_becomes_calicoctl_rows(fake_bird):
    rows = bird.protocols(fake_bird)
    assert rows == [
        {"name": "Mesh_192_168_56_4", "peerAddress": "192.168.56.4", "peerType": "node-to-node mesh",
         "state": "up", "since": "02:41:32", "info": "Established"},
        {"name": "Mesh_192_168_56_5", "peerAddress": "192.168.56.5", "peerType": "node-to-node mesh",
         "state": "start", "since": "02:41:30", "info": "Active Socket: Connection refused"},
        {"name": "Node_10_0_0_9_port_1790", "peerAddress": "10.0.0.9", "peerType": "node specific",
         "state": "start", "since": "02:41:30", "info": "Connect"}]
    assert bird.command(fake_bird, "configure")[-1] == (3, "Reconfigured")
    with pytest.raises(bird.BirdError, match="syntax error"):
        bird.command(fake_bird, "bad")
    with pytest.raises(bird.BirdError, match="does not answer"):
        bird.protocols(fake_bird.with_name("absent.ctl"))


def test_status_table_is_calicoctls():
    table = boxed_table(COLUMNS, [("192.168.56.4", "node-to-node mesh", "up", "02:41:32", "Established")])
    assert table.splitlines() == [
        "+--------------+-------------------+-------+----------+-------------+",
        "| PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |    INFO     |",
        "+--------------+-------------------+-------+----------+-------------+",
        "| 192.168.56.4 | node-to-node mesh | up    | 02:41:32 | Established |",
        "+--------------+-------------------+-------+----------+-------------+"]


def test_bgp_status_prints_calicoctls_output_per_node(fake_bird, tmp_path, monkeypatch):
    """`netsim bgp status` on a calico cluster (faked around the CLI: state, store, agent) reads
    each node's socket; a node whose BIRD is not running says so, as calicoctl does."""
    import json
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from netsim.api.registry import CONFIG_KEY, ClusterConfig
    from netsim.cli import bgp_cmd, common
    from netsim.cli.app import app
    from netsim.fabric import daemon

    (tmp_path / "bird").mkdir()
    (tmp_path / "bird" / "worker1.ctl").symlink_to(fake_bird)
    members = {n: SimpleNamespace(name=n, kind="node", ip=ip) for n, ip in
               (("worker1", "192.168.56.3"), ("worker2", "192.168.56.4"))}
    cni = {"value": "calico"}

    class Store:
        def get(self, key):
            assert key == CONFIG_KEY
            return {**ClusterConfig(cni=cni["value"]).to_json()}

        def close(self):
            pass

    monkeypatch.setattr(common.os, "geteuid", lambda: 0)
    monkeypatch.setattr(bgp_cmd, "open_cluster_store",
                        lambda c: (SimpleNamespace(name="c1", members=members, joined=None), Store()))
    monkeypatch.setattr(daemon, "agent_pids", lambda c: [4242])
    monkeypatch.setattr(bird, "bird_dir", lambda c: tmp_path / "bird")
    runner = CliRunner()
    one = runner.invoke(app, ["bgp", "status", "worker1"])
    assert one.exit_code == 0, one.output
    assert one.output.splitlines()[:3] == ["Calico process is running.", "", "IPv4 BGP status"]
    assert "| 192.168.56.4 | node-to-node mesh | up    | 02:41:32 | Established" in one.output
    both = runner.invoke(app, ["bgp", "status"])
    assert "# node/worker2 (192.168.56.4)\nCalico process is running.\n\nThe BGP backend process (BIRD) is " \
           "not running." in both.output
    report = json.loads(runner.invoke(app, ["bgp", "status", "-o", "json"]).output)
    assert [(r["node"], r["birdRunning"], len(r["peers"])) for r in report] == [("worker1", True, 3),
                                                                              ("worker2", False, 0)]
    assert runner.invoke(app, ["bgp", "status", "nope"]).exit_code == 1
    cni["value"] = "flannel"
    refused = runner.invoke(app, ["bgp", "status"])
    assert refused.exit_code == 1 and "no BGP there" in refused.output
