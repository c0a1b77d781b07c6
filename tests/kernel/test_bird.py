"""Real BGP between real BIRDs (Debian's bird 1.6.8) in three namespaces on a LAN the test makes:
netsim.node.calico.bird renders each node's config from Calico objects, starts one BIRD per
namespace, and the sessions reach Established over TCP 179; each node learns the others' /26
blocks as `via <peer> dev eth0 proto bird`.  Killing a BIRD takes its peers out of Established
while its kernel keeps the routes; check() starts it again and the sessions come back."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from netsim import kernel
from netsim.model import names
from netsim.node.calico import bird

CLUSTER = "tbird"
LAN = "192.168.77"
POOL = "10.77.0.0/16"
NODES = {"n1": 11, "n2": 12, "n3": 13}
LAN_NS = names.netns_name(CLUSTER, "_lan")

pytestmark = pytest.mark.skipif(not os.path.exists(bird.BIRD), reason="Debian's bird is not installed "
                                "(scripts/install-deps.sh installs it)")


def netns(node: str) -> str:
    return names.netns_name(CLUSTER, node)


def ip(node_ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", node_ns, *args], capture_output=True, text=True, check=True,
                          timeout=10).stdout


def block(node: str) -> str:
    return f"10.77.{NODES[node]}.0/26"


def objects(extra_blocks: dict[str, list[str]] | None = None) -> list[dict]:
    objs: list[dict] = [
        {"kind": "IPPool", "metadata": {"name": "default-ipv4-ippool"},
         "spec": {"cidr": POOL, "blockSize": 26, "ipipMode": "Never", "vxlanMode": "Never"}},
        {"kind": "BGPConfiguration", "metadata": {"name": "default"},
         "spec": {"asNumber": 64512, "nodeToNodeMeshEnabled": True}},
    ]
    for node, host in NODES.items():
        objs.append({"kind": "Node", "metadata": {"name": node, "labels": {},
                                                  "annotations": {bird.ANNOTATION_IPV4: f"{LAN}.{host}/24"}}})
        for cidr in [block(node), *(extra_blocks or {}).get(node, [])]:
            objs.append({"kind": "BlockAffinity", "metadata": {"name": f"{node}-{cidr}"},
                         "spec": {"node": node, "cidr": cidr, "state": "confirmed", "deleted": "false"}})
    return objs


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.25)


def sessions(b: bird.Birds, node: str) -> dict[str, str]:
    try:
        return {r["peerAddress"]: r["info"] for r in bird.protocols(b.ctl(node))}
    except bird.BirdError:
        return {}


def established(b: bird.Birds, node: str) -> bool:
    s = sessions(b, node)
    return len(s) == len(NODES) - 1 and all(v == "Established" for v in s.values())


def learned(node: str) -> set[str]:
    """`ip route` lines BIRD programmed: '<block> via <peer> dev eth0'."""
    out = ip(netns(node), "route", "show", "proto", "bird")
    return {" ".join(line.split()[:5]) for line in out.splitlines() if " via " in line}


def wanted(node: str, extra: dict[str, list[str]] | None = None) -> set[str]:
    return {f"{cidr} via {LAN}.{NODES[o]} dev eth0" for o in NODES if o != node
            for cidr in [block(o), *(extra or {}).get(o, [])]}


@pytest.fixture
def lan():
    """A bridge in a namespace of its own and one namespace per node on it, each with the
    blackhole for its own block a no-encap Calico node has (`proto bird`: BIRD's static protocol
    exports it, and takes the one it finds for its own; under another owner BIRD's export would
    collide with it on every kernel scan)."""
    made = [LAN_NS, *(netns(n) for n in NODES)]
    try:
        for name in made:
            subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
            ip(name, "link", "set", "lo", "up")
        ip(LAN_NS, "link", "add", "br0", "type", "bridge")
        ip(LAN_NS, "link", "set", "br0", "up")
        for node, host in NODES.items():
            ns = netns(node)
            ip(LAN_NS, "link", "add", f"p-{node}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip(LAN_NS, "link", "set", f"p-{node}", "master", "br0", "up")
            ip(ns, "addr", "add", f"{LAN}.{host}/24", "dev", "eth0")
            ip(ns, "link", "set", "eth0", "up")
            ip(ns, "route", "add", "blackhole", block(node), "proto", "bird")
        yield
    finally:
        kernel.remove_netns([n for n in made if kernel.netns_exists(n)])


@pytest.fixture
def birds(lan, tmp_path):
    b = bird.Birds(CLUSTER, threading.Event(), nodes={n: netns(n) for n in NODES}, directory=tmp_path / "bird")
    try:
        yield b
    finally:
        b.stop_all()
        bird.kill_leftovers(CLUSTER, tmp_path / "bird")


def test_full_mesh_learns_blocks_survives_a_killed_bird_and_stops_clean(birds, tmp_path):
    assert birds.sync(objects()) == bird.CHECK_S
    assert not birds.errors, birds.errors
    for node in NODES:
        wait_for(f"{node}'s sessions Established", lambda node=node: established(birds, node))
    for node in NODES:
        ss = subprocess.run(["ip", "netns", "exec", netns(node), "ss", "-Htn", "state", "established",
                             "( sport = :179 or dport = :179 )"], capture_output=True, text=True, check=True,
                            timeout=10).stdout
        assert len(ss.splitlines()) == len(NODES) - 1, ss
        wait_for(f"{node} learns the other blocks", lambda node=node: learned(node) == wanted(node))
    # What the help of `netsim bgp status` tells users to run: birdc inside the node's namespace.
    shown = subprocess.run(["ip", "netns", "exec", netns("n2"), "birdc", "-s", str(birds.ctl("n2")),
                            "show", "protocols"], capture_output=True, text=True, check=True, timeout=10).stdout
    assert re.search(r"^Mesh_192_168_77_11\s+BGP\s+master\s+up\s+\S+\s+Established", shown, re.M), shown
    rows = bird.protocols(birds.ctl("n2"))
    assert {(r["name"], r["peerType"], r["state"]) for r in rows} == {
        ("Mesh_192_168_77_11", "node-to-node mesh", "up"), ("Mesh_192_168_77_13", "node-to-node mesh", "up")}

    # The same objects again change nothing; a new block is a `configure`, not a restart.
    pids = {n: birds.birds[n].pid() for n in NODES}
    extra = {"n1": ["10.77.111.0/26"]}
    birds.sync(objects(extra))
    assert {n: birds.birds[n].pid() for n in NODES} == pids
    for node in ("n2", "n3"):
        wait_for(f"{node} learns n1's second block", lambda node=node: learned(node) == wanted(node, extra))

    # kill -9: the peers leave Established, the routes stay (in n1's kernel, and in the peers' as
    # graceful restart keeps them stale), check() starts it again and the sessions come back.
    victim = birds.birds["n1"]
    os.kill(victim.pid(), signal.SIGKILL)
    for node in ("n2", "n3"):
        wait_for(f"{node} sees n1 gone", lambda node=node: sessions(birds, node).get(f"{LAN}.11") != "Established",
                 timeout=20)
    assert learned("n1") == wanted("n1")
    assert learned("n2") == wanted("n2", extra)
    assert birds.check() == ["n1"]
    assert victim.restarts == 1
    for node in NODES:
        wait_for(f"{node}'s sessions Established again", lambda node=node: established(birds, node))
    assert learned("n1") == wanted("n1")
    assert birds.check() == []

    for node in NODES:
        assert f"blackhole {block(node)} proto bird" in ip(netns(node), "route", "show", "type", "blackhole")
        assert "File exists" not in (tmp_path / "bird" / f"{node}.log").read_text()

    birds.stop_all()
    assert bird.bird_pids(tmp_path / "bird") == []
    left = sorted(p.name for p in (tmp_path / "bird").glob("*") if p.suffix in (".ctl", ".pid", ".cfg"))
    assert left == []


def test_a_new_agent_adopts_running_birds_and_down_kills_orphans(birds, tmp_path):
    """BIRD daemonises: a restarted agent's Birds takes the running daemons over (no session
    flap), and after an agent that was SIGKILLed, kill_leftovers (`netsim down`) finds them by
    their files' directory and removes sockets and pid files."""
    birds.sync(objects())
    for node in NODES:
        wait_for(f"{node}'s sessions Established", lambda node=node: established(birds, node))
    pids = {n: birds.birds[n].pid() for n in NODES}
    again = bird.Birds(CLUSTER, threading.Event(), nodes={n: netns(n) for n in NODES}, directory=tmp_path / "bird")
    again.sync(objects())
    assert {n: again.birds[n].pid() for n in NODES} == pids
    assert again.check() == []
    assert all(established(again, n) for n in NODES)
    killed = bird.kill_leftovers(CLUSTER, tmp_path / "bird")
    assert sorted(killed) == sorted(pids.values())
    assert bird.bird_pids(tmp_path / "bird") == []
    assert not (tmp_path / "bird").exists()
    assert all(not kernel.process_alive(p) for p in pids.values())
