"""Issue 21's acceptance with real packets: `networking.cni: calico` on a 4-node cluster over two
underlay segments (control-plane and worker1 on 192.168.56.0/24, worker2, worker3 and the external
host client on 192.168.57.0/24), once per mode: VXLAN Always, VXLAN CrossSubnet and Never (BGP).
One cluster per mode serves every test of that mode (a module-scoped, parametrized fixture); the
last test of each mode is `netsim down` and what it must leave behind (nothing).

What a Calico user would look at: the kernel state the CNI plugin, Felix and BIRD make (pod /32
and 169.254.1.1, the cali<sha1> veth, vxlan.calico, proto 80 against proto bird routes and
blackholes), `netsim bgp status` and `ss` for the BGP mesh, `netsim probe` for pod-to-pod keeping
pod addresses, tcpdump on the underlay for what the wire carries, DF pings at the MTU, a second
IPAM block read with the real kubectl, natOutgoing seen from the external host, NetworkPolicy with
packets, and a BIRD killed with -9 coming back.  Never across segments fails: BIRD's next hop
resolves through the underlay's router, which has no pod routes (the reason CrossSubnet exists).

IPIP (Always, CrossSubnet) cannot run on a kernel without the ipip module (this machine's): here
`netsim up` must stop with exit 2 naming networking.calico.ipipMode and make nothing.  IPIP's
kernel state (tunl0, proto 80 routes via tunl0 onlink) and its packets (IP protocol 4 on the wire)
are tested in a qemu guest whose kernel has it: tests/kernel/test_felix.py (test_ipip_in_a_guest)."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netsim import kernel
from netsim.fabric import daemon, requirements
from netsim.kernel.ping import ping
from netsim.model import calico, names
from netsim.node import podnet
from netsim.node.calico import bird
from netsim.observe import probe
from tests.conftest import run_netsim, unique_name
from tests.kernel.test_overlay import received_from
from tests.tcpdump import tcpdump as capture

# mode -> (ipipMode, vxlanMode)
MODES = {"vxlan-always": ("Never", "Always"), "vxlan-crosssubnet": ("Never", "CrossSubnet"),
         "never": ("Never", "Never")}
NODE_IP = {"control-plane": "192.168.56.2", "worker1": "192.168.56.3", "worker2": "192.168.57.2",
           "worker3": "192.168.57.3"}
SEGMENT = {n: ip.rsplit(".", 1)[0] for n, ip in NODE_IP.items()}
GATEWAY = {n: f"{SEGMENT[n]}.1" for n in NODE_IP}
CLIENT_IP = "192.168.57.254"
POD_OF = {"control-plane": "p-cp", "worker1": "p-w1", "worker2": "p-w2", "worker3": "p-w3"}
PORT = 8080
BLOCK_SIZE = 30  # four addresses: a few pods fill a block
GROUPS = {"bgp", "policy", "proxy", "node", "ingress", "cni"}


def pod(name: str, node: str) -> str:
    return (f"  - {{apiVersion: v1, kind: Pod, metadata: {{name: {name}, labels: {{app: net, pod: {name}}}}}, spec: "
            f"{{nodeName: {node}, containers: [{{name: c, image: agnhost, ports: [{{containerPort: {PORT}}}]}}]}}}}\n")


def scenario(mode: str) -> str:
    ipip, vxlan = MODES.get(mode, (mode, "Never"))
    return f"""apiVersion: netsim/v1alpha1
kind: Scenario
name: ignored
nodes:
  - {{name: control-plane, role: control-plane}}
  - {{name: worker1}}
  - {{name: worker2, subnet: 192.168.57.0/24}}
  - {{name: worker3, subnet: 192.168.57.0/24}}
externalHosts:
  - {{name: client, subnet: 192.168.57.0/24}}
networking:
  cni: calico
  calico: {{ipipMode: {ipip}, vxlanMode: {vxlan}, natOutgoing: true, blockSize: {BLOCK_SIZE}}}
  underlaySubnets: [192.168.56.0/24, 192.168.57.0/24]
  podSubnet: 10.244.0.0/16
manifests:
""" + "".join(pod(p, n) for n, p in POD_OF.items())


def until(fn: Callable, timeout: float, interval: float = 0.2):
    """fn()'s first truthy value within ``timeout`` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got or time.monotonic() >= deadline:
            return got
        time.sleep(interval)


def alive(pid: int) -> bool:
    """A process that runs (a zombie waiting for PID 1 to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Calico:
    def __init__(self, name: str, mode: str, env: dict, root: Path):
        self.name, self.mode, self.env, self.root = name, mode, env, root
        self.vxlan = MODES[mode][1]
        self.mtu = 1450 if self.vxlan != "Never" else 1500
        self.down_done = False
        self._pods: dict[str, dict] = {}

    # -- the commands a user runs --------------------------------------------------------------
    def __call__(self, *args, check=True) -> subprocess.CompletedProcess:
        head = 2 if args[0] in GROUPS else 1  # the cluster option belongs to the (sub)command
        r = run_netsim(*args[:head], "-c", self.name, *args[head:], env=self.env)
        if check:
            assert r.returncode == 0, f"netsim {' '.join(args)}: {r.stdout}{r.stderr}{self.log_tail()}"
        return r

    def kubectl(self, *args) -> dict:
        r = subprocess.run(["kubectl", "--context", f"netsim-{self.name}", *args, "-o", "json"], capture_output=True,
                           text=True, timeout=30, env={**os.environ, **self.env})
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = (self.state / "agent.log").read_text()
            return "\n--- agent.log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])
        return ""

    @property
    def state(self) -> Path:
        return Path(self.env["NETSIM_STATE_DIR"]) / self.name

    @property
    def bird_dir(self) -> Path:
        return self.state / "bird"

    # -- namespaces ----------------------------------------------------------------------------
    def netns(self, member: str) -> str:
        return names.netns_name(self.name, member)

    def pod_netns(self, pod_name: str) -> str:
        return podnet.pod_netns(self.name, "default", pod_name)

    def run(self, netns: str, *argv: str, check=True) -> str:
        r = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=20)
        assert r.returncode == 0 or not check, f"{netns}: {' '.join(argv)}: {r.stdout}{r.stderr}"
        return r.stdout + r.stderr

    def lines(self, netns: str, *argv: str) -> list[str]:
        return [line.strip() for line in self.run(netns, *argv).splitlines() if line.strip()]

    # -- objects -------------------------------------------------------------------------------
    def pods(self, refresh=False) -> dict[str, dict]:
        if refresh or not self._pods:
            items = json.loads(self("get", "pods", "-o", "json").stdout)["items"]
            self._pods = {p["metadata"]["name"]: p for p in items}
        return self._pods

    def pod_ip(self, pod_name: str) -> str:
        return self.pods()[pod_name]["status"]["podIP"]

    def blocks(self) -> dict[str, str]:
        """IPAM block CIDR -> the node it is affine to."""
        items = json.loads(self("get", "ipamblocks", "-o", "json").stdout)["items"]
        return {b["spec"]["cidr"]: b["spec"]["affinity"].removeprefix("host:") for b in items}

    def annotations(self) -> dict[str, dict]:
        items = json.loads(self("get", "nodes", "-o", "json").stdout)["items"]
        return {n["metadata"]["name"]: n["metadata"].get("annotations", {}) for n in items}

    def bgp(self) -> dict[str, dict]:
        return {row["node"]: row for row in json.loads(self("bgp", "status", "-o", "json").stdout)}


@pytest.fixture(scope="module", params=list(MODES))
def cluster(request, tmp_path_factory):
    mode = request.param
    root = tmp_path_factory.mktemp(mode)
    (root / "scenario.yaml").write_text(scenario(mode))
    env = {"NETSIM_STATE_DIR": str(root / "state"), "KUBECONFIG": str(root / "kubeconfig")}
    c = Calico(unique_name("cal"), mode, env, root)
    up = run_netsim("up", str(root / "scenario.yaml"), "--name", c.name, env=env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr + c.log_tail()
        assert "CNI calico: Calico routing + NetworkPolicy" in up.stderr + up.stdout
        assert {p: c.pods()[p]["spec"]["nodeName"] for p in POD_OF.values()} == {p: n for n, p in POD_OF.items()}
        yield c
    finally:
        if not c.down_done:
            run_netsim("down", c.name, env=env)


# -- IPIP: not on this kernel ------------------------------------------------------------------
@pytest.mark.parametrize("ipip", ["Always", "CrossSubnet"])
def test_ipip_on_a_kernel_without_ipip_stops_up_with_the_field_and_makes_nothing(ipip, tmp_path):
    name = unique_name("cip")
    if requirements.link_kind_supported(name, "ipip"):
        pytest.skip("this kernel has ipip: IPIP's kernel state and packets are tests/kernel/test_felix.py's")
    (tmp_path / "scenario.yaml").write_text(scenario(ipip))
    env = {"NETSIM_STATE_DIR": str(tmp_path / "state"), "KUBECONFIG": str(tmp_path / "kubeconfig")}
    up = run_netsim("up", str(tmp_path / "scenario.yaml"), "--name", name, env=env)
    try:
        assert up.returncode == 2, up.stdout + up.stderr
        assert (f"networking.calico.ipipMode: {ipip} needs the kernel's IPIP tunnel (module ipip)" in up.stderr
                and "fix: set ipipMode: Never and vxlanMode: Always" in up.stderr), up.stderr
        assert kernel.list_netns(names.cluster_prefix(name)) == []
        assert not (tmp_path / "state" / name).exists() and daemon.agent_pids(name) == []
    finally:
        if up.returncode != 2:
            run_netsim("down", name, env=env)


# -- kernel state -------------------------------------------------------------------------------
def test_pods_are_wired_as_calicos_cni_plugin_wires_them(cluster):
    for node, pod_name in POD_OF.items():
        ip, pod_ns, node_ns = cluster.pod_ip(pod_name), cluster.pod_netns(pod_name), cluster.netns(node)
        # The pod: a /32, and every packet to 169.254.1.1, which nobody holds (the node answers by proxy ARP).
        eth0 = cluster.run(pod_ns, "ip", "addr", "show", "eth0")
        assert f"mtu {cluster.mtu} " in eth0 and f"inet {ip}/32 scope global eth0" in eth0, eth0
        assert cluster.lines(pod_ns, "ip", "-4", "route") == ["default via 169.254.1.1 dev eth0",
                                                             "169.254.1.1 dev eth0 scope link"]
        pod_mac = re.search(r"link/ether (\S+)", eth0).group(1)
        # The node: cali + sha1("<namespace>.<pod>")[:11], ee:ee:ee:ee:ee:ee, no address, proxy ARP.
        veth = "cali" + hashlib.sha1(f"default.{pod_name}".encode()).hexdigest()[:11]
        link = cluster.run(node_ns, "ip", "link", "show", veth)
        assert "link/ether ee:ee:ee:ee:ee:ee " in link and f"mtu {cluster.mtu} " in link and ",UP," in link, link
        assert cluster.lines(node_ns, "ip", "-4", "addr", "show", "dev", veth) == []
        assert cluster.run(node_ns, "cat", f"/proc/sys/net/ipv4/conf/{veth}/proxy_arp").strip() == "1"
        route = cluster.lines(node_ns, "ip", "route", "show", ip)
        assert len(route) == 1 and route[0].startswith(f"{ip} dev {veth} scope link"), route
        assert cluster.lines(node_ns, "ip", "neigh", "show", ip) == [f"{ip} dev {veth} lladdr {pod_mac} PERMANENT"]


def expected_routes(cluster: Calico, node: str, blocks: dict[str, str], notes: dict[str, dict]) -> set[str]:
    """The cluster routes (and blackholes) ``node`` must hold, as the start of their `ip route` line."""
    want = set()
    for block, owner in blocks.items():
        if owner == node:
            want.add(f"blackhole {block} proto {'bird' if cluster.vxlan == 'Never' else '80'}")
        elif cluster.vxlan == "Never":
            # BIRD's next hop is the peer; across segments "gateway recursive" resolves it through
            # the node's default route: the underlay's router.
            hop = NODE_IP[owner] if SEGMENT[owner] == SEGMENT[node] else GATEWAY[node]
            want.add(f"{block} via {hop} dev eth0 proto bird")
        elif cluster.vxlan == "CrossSubnet" and SEGMENT[owner] == SEGMENT[node]:
            want.add(f"{block} via {NODE_IP[owner]} dev eth0 proto 80 onlink")
        else:
            vtep = notes[owner]["projectcalico.org/IPv4VXLANTunnelAddr"]
            want.add(f"{block} via {vtep} dev vxlan.calico proto 80 onlink")
    return want


def cluster_routes(cluster: Calico, node: str) -> set[str]:
    return {re.sub(r" metric \d+$", "", line) for line in cluster.lines(cluster.netns(node), "ip", "route")
            if " proto 80" in line or " proto bird" in line}


def test_tunnels_routes_and_blackholes_are_felixs_or_birds_by_mode(cluster):
    blocks, notes = cluster.blocks(), cluster.annotations()
    assert set(blocks.values()) == set(NODE_IP), blocks  # every node has a block: it runs a pod
    for node in NODE_IP:
        want = expected_routes(cluster, node, blocks, notes)
        got = until(lambda n=node, w=want: (r := cluster_routes(cluster, n)) == w and r, 10) or \
            cluster_routes(cluster, node)
        assert got == want, f"{node}: {sorted(got)} != {sorted(want)}"
        links = cluster.run(cluster.netns(node), "ip", "-d", "link", "show")
        assert "tunl0" not in links  # no IPIP anywhere
        if cluster.vxlan == "Never":
            assert "vxlan.calico" not in links and "projectcalico.org/IPv4VXLANTunnelAddr" not in notes[node]
            continue
        # vxlan.calico as Felix makes it: VNI 4096, port 4789, MAC 0x66 + sha1(node name), MTU 1500 - 50.
        mac = notes[node]["projectcalico.org/VXLANTunnelMACAddr"]
        assert mac == "66:" + ":".join(re.findall("..", hashlib.sha1(node.encode()).hexdigest()[:10]))
        vtep = cluster.run(cluster.netns(node), "ip", "-d", "addr", "show", "vxlan.calico")
        assert "mtu 1450 " in vtep and f"link/ether {mac} " in vtep, vtep
        assert re.search(rf"vxlan id 4096 local {NODE_IP[node]} dev eth0 .*dstport 4789 nolearning", vtep), vtep
        assert f"inet {notes[node]['projectcalico.org/IPv4VXLANTunnelAddr']}/32 " in vtep, vtep
        peers = [n for n in NODE_IP if n != node]
        neigh = set(cluster.lines(cluster.netns(node), "ip", "neigh", "show", "dev", "vxlan.calico"))
        assert neigh == {f"{notes[p]['projectcalico.org/IPv4VXLANTunnelAddr']} lladdr "
                         f"{notes[p]['projectcalico.org/VXLANTunnelMACAddr']} PERMANENT" for p in peers}, neigh
        fdb = set(cluster.lines(cluster.netns(node), "bridge", "fdb", "show", "dev", "vxlan.calico"))
        assert fdb == {f"{notes[p]['projectcalico.org/VXLANTunnelMACAddr']} dst {NODE_IP[p]} self permanent"
                       for p in peers}, fdb


# -- BGP ------------------------------------------------------------------------------------------
def mesh_established(cluster: Calico) -> dict[str, dict] | None:
    status = cluster.bgp()
    for node, row in status.items():
        peers = {p["peerAddress"]: (p["peerType"], p["info"]) for p in row["peers"]}
        if not row["birdRunning"] or peers != {NODE_IP[n]: ("node-to-node mesh", "Established")
                                                for n in NODE_IP if n != node}:
            return None
    return status


def test_bgp_full_mesh_established_with_tcp_179_or_no_bird_at_all(cluster):
    if cluster.vxlan != "Never":
        # A VXLAN pool runs no BGP (calico_backend vxlan): no BIRD, no socket, nothing on 179.
        status = cluster.bgp()
        assert set(status) == set(NODE_IP) and not any(row["birdRunning"] for row in status.values()), status
        assert not cluster.bird_dir.exists() and bird.bird_pids(cluster.bird_dir) == []
        for node in NODE_IP:
            assert ":179 " not in cluster.run(cluster.netns(node), "ss", "-tan")
        return
    status = until(lambda: mesh_established(cluster), 15, 0.5)
    assert status, cluster("bgp", "status").stdout
    table = cluster("bgp", "status", "worker1").stdout
    assert "| 192.168.57.3 | node-to-node mesh | up    |" in table and "Established |" in table, table
    for node, ip in NODE_IP.items():
        sessions = {tuple(line.split()[3:5]) for line in cluster.lines(cluster.netns(node), "ss", "-tn")
                    if line.startswith("ESTAB") and ":179" in line}
        peers = {}
        for local, remote in sessions:
            assert local.split(":")[0] == ip, sessions
            peers[remote.split(":")[0]] = (local, remote)
        assert set(peers) == {NODE_IP[n] for n in NODE_IP if n != node}, sessions
        for peer, (local, remote) in peers.items():
            # `passive on` toward the higher address: the higher one connects to the lower's port 179.
            listener = local if ip < peer else remote
            assert listener.endswith(":179"), (node, peer, local, remote)


# -- packets ------------------------------------------------------------------------------------
def probe_json(cluster: Calico, src: str, dst: str, timeout: float = 2.0) -> tuple[int, dict]:
    r = cluster("probe", f"pod/default/{src}", f"pod/default/{dst}", "-o", "json", "--timeout", str(timeout),
                check=False)
    return r.returncode, json.loads(r.stdout)


def test_pod_to_pod_across_nodes_and_segments_keeps_pod_addresses(cluster):
    same_segment = [("p-w3", "p-w2"), ("p-cp", "p-w1")]
    across = [("p-w1", "p-w2"), ("p-w3", "p-cp")]
    for src, dst in same_segment + (across if cluster.vxlan != "Never" else []):
        rc, got = probe_json(cluster, src, dst)
        assert rc == 0 and got["responder"] == dst, (src, dst, got)
        assert got["clientIP"] == cluster.pod_ip(src), (src, dst, got)  # not masqueraded
    if cluster.vxlan == "Never":
        # No encapsulation, and the router between the segments knows no pod route: lost.
        rc, got = probe_json(cluster, *across[0], timeout=1.0)
        assert rc == 1 and (got["result"], got["reason"], got.get("verdict")) == ("deny", "timeout", "DROPPED"), got
        # netsim's trace names the hop: the underlay's router, which has no route to the pod.
        assert got["droppedBy"] == f"route: the underlay's router has no route to {cluster.pod_ip(across[0][1])}", got
        got = probe.connect(cluster.pod_netns(across[1][0]), cluster.pod_ip(across[1][1]), PORT, timeout=1.0)
        assert (got["result"], got["reason"]) == ("deny", "timeout"), got


@contextlib.contextmanager
def tcpdump(netns: str, *expr: str):
    """tests.tcpdump on every interface of ``netns``; yields a list that holds its packets (each
    the text of one capture: outer header, and inner lines for VXLAN) afterwards."""
    packets: list[str] = []
    with capture(netns, "any", *expr) as lines:
        yield packets
    for line in lines:
        if re.match(r"\d\d:\d\d:\d\d\.\d+ ", line):
            packets.append(line)
        elif packets:
            packets[-1] += "\n" + line


def carried(packets: list[str], src_ip: str, dst_ip: str) -> set[str]:
    """How the underlay carried src's echo requests to dst: "bare" or "vxlan <outer src> > <outer dst>"."""
    how = set()
    for p in packets:
        if f"{src_ip} > {dst_ip}: ICMP echo request" not in p:
            continue
        outer = re.search(r"(\S+)\.\d+ > (\S+)\.4789: VXLAN, flags \[I\] \(0x08\), vni (\d+)", p)
        how.add(f"vxlan {outer.group(1)} > {outer.group(2)} vni {outer.group(3)}" if outer else "bare")
    return how


def test_the_underlay_carries_vxlan_vni_4096_or_bare_pod_packets(cluster):
    pairs = [("p-w3", "p-w2"), ("p-cp", "p-w1"), ("p-w1", "p-w2")]
    with tcpdump(cluster.netns(names.UNDERLAY_MEMBER), "icmp", "or", "udp", "port", "4789") as packets:
        answered = {(s, d): ping(cluster.pod_netns(s), cluster.pod_ip(d), timeout=1.0) is not None for s, d in pairs}
    assert answered == {("p-w3", "p-w2"): True, ("p-cp", "p-w1"): True,
                        ("p-w1", "p-w2"): cluster.vxlan != "Never"}, answered
    node_of = {p: n for n, p in POD_OF.items()}
    for s, d in pairs:
        seen = carried(packets, cluster.pod_ip(s), cluster.pod_ip(d))
        a, b = node_of[s], node_of[d]
        if cluster.vxlan == "Always" or (cluster.vxlan == "CrossSubnet" and SEGMENT[a] != SEGMENT[b]):
            assert seen == {f"vxlan {NODE_IP[a]} > {NODE_IP[b]} vni 4096"}, (s, d, seen, packets)
        else:  # CrossSubnet on one segment, and Never: the pod's own packet on the wire
            assert seen == {"bare"}, (s, d, seen, packets)
    if cluster.vxlan == "Never":
        # Across segments the bare packet reaches the router and goes no further.
        lost = f"{cluster.pod_ip('p-w1')} > {cluster.pod_ip('p-w2')}: ICMP echo request"
        where = {p.split()[1] for p in packets if lost in p}  # the interface it was seen on
        assert where == {"worker1", "br-underlay"}, packets


def test_mtu_at_the_limit_largest_df_ping_passes_one_byte_more_fails(cluster):
    payload = cluster.mtu - 28  # IP and ICMP headers
    pairs = [("p-w3", "p-w2")] + ([("p-w1", "p-w2")] if cluster.vxlan != "Never" else [])
    for src, dst in pairs:
        argv = ["ping", "-c1", "-W2", "-M", "do", "-s"]
        ok = cluster.run(cluster.pod_netns(src), *argv, str(payload), cluster.pod_ip(dst), check=False)
        assert f"{payload + 8} bytes from {cluster.pod_ip(dst)}" in ok and " 0% packet loss" in ok, ok
        over = cluster.run(cluster.pod_netns(src), *argv, str(payload + 1), cluster.pod_ip(dst), check=False)
        assert f"message too long, mtu={cluster.mtu}" in over and "0 received" in over, over


def test_a_full_block_gives_the_node_a_second_block(cluster):
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: scripts/install-deps.sh installs it")
    node = "worker3"  # worker2 shares its segment, so the new block is reachable in every mode
    ipam = cluster.kubectl("get", "ipamblocks.crd.projectcalico.org")["items"]
    [first] = [b for b in ipam if b["spec"]["affinity"] == f"host:{node}"]
    free = len(first["spec"]["unallocated"])
    assert 0 < free < 2 ** (32 - BLOCK_SIZE), first["spec"]
    extra = [f"blk-{i}" for i in range(free + 1)]
    (cluster.root / "extra.yaml").write_text("---\n".join(pod(p, node).replace("  - ", "", 1) for p in extra))
    cluster("apply", "-f", str(cluster.root / "extra.yaml"))
    pods = until(lambda: (ps := cluster.pods(refresh=True)) and all(ps.get(p, {}).get("status", {}).get("podIP")
                                                                   for p in extra) and ps, 20, 0.5)
    assert pods, cluster("get", "pods", "-o", "wide").stdout

    objects = cluster.kubectl("get", "ipamblocks.crd.projectcalico.org")["items"]
    ipam = {b["spec"]["cidr"]: b["spec"] for b in objects if b["spec"]["affinity"] == f"host:{node}"}
    assert len(ipam) == 2 and first["spec"]["cidr"] in ipam, sorted(ipam)
    full = ipam[first["spec"]["cidr"]]
    assert full["unallocated"] == [] and None not in full["allocations"], full
    [second] = [cidr for cidr in ipam if cidr != first["spec"]["cidr"]]
    assert len(ipam[second]["unallocated"]) == 2 ** (32 - BLOCK_SIZE) - 1, ipam[second]
    affinities = {a["metadata"]["name"]: a["spec"] for a in cluster.kubectl("get", "blockaffinities")["items"]}
    assert calico.block_name(second) in {b["metadata"]["name"] for b in objects}  # upstream's names
    spec = affinities.get(calico.affinity_name(node, second), {})
    assert {k: spec.get(k) for k in ("cidr", "node", "state")} == {"cidr": second, "node": node,
                                                                   "state": "confirmed"}, affinities
    # The pod in it: the owner blackholes the block, its neighbour routes to it, packets keep addresses.
    [newcomer] = [p for p in extra if pods[p]["status"]["podIP"] in _hosts(second)]
    proto = "bird" if cluster.vxlan == "Never" else "80"
    assert f"blackhole {second} proto {proto}" in cluster_routes(cluster, node)
    want = expected_routes(cluster, "worker2", {second: node}, cluster.annotations())
    assert until(lambda: want <= cluster_routes(cluster, "worker2"), 10), (want, cluster_routes(cluster, "worker2"))
    rc, got = probe_json(cluster, newcomer, "p-w2")
    assert rc == 0 and got["clientIP"] == pods[newcomer]["status"]["podIP"], got


def _hosts(cidr: str) -> set[str]:
    return {str(a) for a in ipaddress.ip_network(cidr)}


def test_nat_outgoing_the_external_host_sees_the_nodes_address(cluster):
    pool = cluster.kubectl("get", "ippools.crd.projectcalico.org", "default-ipv4-ippool")["spec"]
    assert pool["natOutgoing"] is True and pool["vxlanMode"] == cluster.vxlan, pool
    client = cluster.netns("client")
    for port, (src, node) in enumerate((("p-w1", "worker1"), ("p-w2", "worker2")), start=7101):
        # worker1 is behind the router, worker2 on the client's segment: both masquerade.
        assert received_from(client, cluster.pod_netns(src), CLIENT_IP, port) == NODE_IP[node], src


def reachable(cluster: Calico, src: str, dst: str, want: bool, within: float = 8.0) -> bool:
    """Whether ``src`` connects to ``dst``:8080, waiting up to ``within`` seconds for it to become
    ``want`` (the agents program a policy change a moment after the API server stores it)."""
    deadline = time.monotonic() + within
    while True:
        got = probe.connect(cluster.pod_netns(src), cluster.pod_ip(dst), PORT, "tcp", timeout=0.5)["result"] == "allow"
        if got == want or time.monotonic() >= deadline:
            return got
        time.sleep(0.1)


DENY_ALL = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""
ALLOW_W3 = f"""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: p-w2-from-p-w3}}
spec:
  podSelector: {{matchLabels: {{pod: p-w2}}}}
  policyTypes: [Ingress]
  ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: p-w3}}}}}}], ports: [{{port: {PORT}}}]}}]
"""


def test_network_policy_deny_all_then_allow_with_real_packets(cluster):
    assert reachable(cluster, "p-w3", "p-w2", True) and reachable(cluster, "p-w2", "p-w3", True)
    (cluster.root / "deny.yaml").write_text(DENY_ALL)
    (cluster.root / "allow.yaml").write_text(ALLOW_W3)
    cluster("apply", "-f", str(cluster.root / "deny.yaml"))
    try:
        assert not reachable(cluster, "p-w3", "p-w2", False) and not reachable(cluster, "p-w2", "p-w3", False)
        cluster("apply", "-f", str(cluster.root / "allow.yaml"))
        assert reachable(cluster, "p-w3", "p-w2", True)
        assert not reachable(cluster, "p-w2", "p-w3", False, within=0)  # p-w3 is still isolated
    finally:
        cluster("delete", "-f", str(cluster.root / "deny.yaml"), check=False)
        cluster("delete", "-f", str(cluster.root / "allow.yaml"), check=False)
    assert reachable(cluster, "p-w2", "p-w3", True)


# -- BIRD killed ----------------------------------------------------------------------------------
def test_a_killed_bird_is_restarted_and_its_peers_keep_the_routes_meanwhile(cluster):
    if cluster.vxlan != "Never":
        pytest.skip("VXLAN pools run no BIRD")
    assert until(lambda: mesh_established(cluster), 15, 0.5)
    victim, peer = "worker2", "worker3"
    pidfile = cluster.bird_dir / f"{victim}.pid"
    old = int(pidfile.read_text())
    held = {line for line in cluster_routes(cluster, peer) if f" via {NODE_IP[victim]} " in line}
    assert held, cluster_routes(cluster, peer)
    os.kill(old, signal.SIGKILL)

    def peer_state() -> str:
        with contextlib.suppress(bird.BirdError, OSError):
            for row in bird.protocols(cluster.bird_dir / f"{peer}.ctl", timeout=1.0):
                if row["peerAddress"] == NODE_IP[victim]:
                    return row["info"]
        return ""
    left = until(lambda: (s := peer_state()) and s != "Established" and s, 5, 0.05)
    assert left and left != "Established", left
    # Graceful restart: the peer keeps the dead speaker's routes, and pods keep talking.
    assert held <= cluster_routes(cluster, peer), cluster_routes(cluster, peer)
    assert ping(cluster.pod_netns("p-w3"), cluster.pod_ip("p-w2"), timeout=1.0) is not None

    new = until(lambda: (t := pidfile.read_text().strip() if pidfile.exists() else "") and int(t) != old
                and alive(int(t)) and int(t), 10)
    assert new and not alive(old), (old, new, cluster.log_tail())
    status = until(lambda: mesh_established(cluster), 30, 0.5)
    assert status, cluster("bgp", "status").stdout
    assert held <= cluster_routes(cluster, peer)
    assert "bird worker2 died; starting it again" in (cluster.state / "agent.log").read_text()


# -- down: the last test of each mode ------------------------------------------------------------
def test_down_leaves_no_namespace_bird_socket_or_state(cluster):
    birds = bird.bird_pids(cluster.bird_dir)
    assert len(birds) == (4 if cluster.vxlan == "Never" else 0), birds
    down = run_netsim("down", cluster.name, env=cluster.env)
    cluster.down_done = True
    assert down.returncode == 0, down.stderr
    assert kernel.list_netns(names.cluster_prefix(cluster.name)) == []
    assert not any(alive(pid) for pid in birds) and bird.bird_pids(cluster.bird_dir) == []
    assert not cluster.state.exists()  # the sockets, pid files and configs were under it
    assert daemon.agent_pids(cluster.name) == []
