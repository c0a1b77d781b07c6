"""The multi-machine mode on one host: three "machines" (tests/machines.py: a network namespace
each, with its own mount and PID namespaces) on a store network and a cluster LAN, one real
etcd on the first, and `netsim join` of vagrant/multi/cluster.yaml on each, exactly as the
Vagrant layout provisions it."""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import threading
from pathlib import Path

import pytest
import yaml

from netsim import kernel
from netsim.api.store.etcd_server import find_etcd, temporary_etcd
from tests.conftest import REPO
from tests.machines import Machines

SCENARIO = str(REPO / "vagrant" / "multi" / "cluster.yaml")
NODES = {"vm1": "netsim-1", "vm2": "netsim-2", "vm3": "netsim-3"}
LAN = {"vm1": "192.168.60.11", "vm2": "192.168.60.12", "vm3": "192.168.60.13"}
STORE_NET = {"vm1": "192.168.59.11", "vm2": "192.168.59.12", "vm3": "192.168.59.13"}
ETH_P_ALL = 0x0003


@pytest.fixture(scope="module")
def machines(tmp_path_factory):
    if find_etcd() is None:
        pytest.skip("etcd is not installed: scripts/install-deps.sh installs etcd-server")
    tag = f"nsvm{os.getpid() % 10000}"
    with Machines(tag, {"store": "192.168.59.0/24", "lan": "192.168.60.0/24"},
                  tmp_path_factory.mktemp("machines")) as ms:
        for vm in NODES:
            ms.add(vm, {"eth0": ("store", STORE_NET[vm]), "eth1": ("lan", LAN[vm])})
        # The cluster's store: etcd on the first machine, on its store-network address, as
        # Debian's etcd-server runs on netsim-1 in vagrant/multi.
        with temporary_etcd(address=STORE_NET["vm1"], netns=ms.machines["vm1"].netns) as url:
            yield ms, url.replace("http://", "etcd://")


def _nic(m, netns: str | None, ifname: str) -> dict | None:
    """A link inside machine ``m`` (its root namespace, or one of its netsim namespaces)."""
    argv = ["ip", "-j", "addr", "show", "dev", ifname]
    if netns:
        argv = ["ip", "-n", netns, "-j", "addr", "show", "dev", ifname]
    r = m.run(argv)
    return json.loads(r.stdout)[0] if r.returncode == 0 and r.stdout.strip() else None


def _join_step() -> str:
    """The function of vagrant/multi/provision.sh that joins a VM's node."""
    text = (REPO / "vagrant" / "multi" / "provision.sh").read_text()
    start = text.index("join_cluster() {")
    return text[start:text.index("\n}\n", start) + 3]


def _inet(nic: dict) -> list[tuple]:
    return [(a["local"], a["prefixlen"], a.get("broadcast")) for a in nic["addr_info"] if a["family"] == "inet"]


def _etcd_get(ms, url: str, prefix: str) -> dict[str, dict]:
    """Keys and values under ``prefix``, read through etcd's JSON gateway from machine vm1."""
    import base64

    host = url.removeprefix("etcd://").split("/")[0]
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                       "range_end": base64.b64encode(end.encode()).decode()})
    fetch = ("import sys, urllib.request as u; "
             "sys.stdout.write(u.urlopen(u.Request(sys.argv[1], sys.argv[2].encode()), timeout=5).read().decode())")
    r = ms.machines["vm1"].run([sys.executable, "-c", fetch, f"http://{host}/v3/kv/range", body], check=True)
    kvs = json.loads(r.stdout).get("kvs", [])
    return {base64.b64decode(kv["key"]).decode(): json.loads(base64.b64decode(kv["value"])) for kv in kvs}


class _Sniffer:
    """Frames on one switch port (a machine's NIC, seen from the LAN), in a thread."""

    def __init__(self, switch_netns: str, port: str):
        self.sock = kernel.socket_in(switch_netns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((port, 0))
        self.frames: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if select.select([self.sock], [], [], 0.1)[0]:
                self.frames.append(self.sock.recv(65535))

    def vxlan(self) -> list[tuple[str, str, int]]:
        """(outer source, outer destination, VNI) of every VXLAN frame seen."""
        self.stop.set()
        self.thread.join(2)
        self.sock.close()
        out = []
        for f in self.frames:
            if len(f) < 50 or f[12:14] != b"\x08\x00" or f[23] != socket.IPPROTO_UDP:
                continue
            ihl = (f[14] & 0x0F) * 4
            dport = struct.unpack_from("!H", f, 14 + ihl + 2)[0]
            if dport == 8472:
                vni = int.from_bytes(f[14 + ihl + 8 + 4: 14 + ihl + 8 + 7], "big")
                out.append((socket.inet_ntoa(f[26:30]), socket.inet_ntoa(f[30:34]), vni))
        return out


def _probe(m, src: str, dst: str, *extra: str) -> dict:
    r = m.run(["netsim", "probe", src, dst, "-o", "json", *extra], timeout=60)
    assert r.stdout, r.stderr
    return json.loads(r.stdout)


def test_three_machines_join_talk_and_leave(machines):
    ms, store = machines
    vms = ms.machines
    before = {vm: _nic(m, None, "eth1") for vm, m in vms.items()}
    assert all(before.values())

    # The control-plane machine joins first (it runs the controllers), then the workers, each
    # with the join step of vagrant/multi/provision.sh itself.
    for vm, node in NODES.items():
        script = f"{_join_step()}\nstore={store} node={node} uplink=eth1 scenario={SCENARIO}\njoin_cluster"
        r = vms[vm].run(["bash", "-euo", "pipefail", "-c", script],
                        env={"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
        assert r.returncode == 0, f"join {vm}:\n{r.stderr}"
        assert f"{node} joined cluster 'multi'" in r.stderr

    # Each machine's NIC is now its node's eth0: the same device (MAC), the machine's address.
    for vm, node in NODES.items():
        assert _nic(vms[vm], None, "eth1") is None
        nic = _nic(vms[vm], f"nsim.multi.{node}", "eth0")
        assert nic is not None and nic["address"] == before[vm]["address"]
        assert [a["local"] for a in nic["addr_info"] if a["family"] == "inet"] == [LAN[vm]]
        # Each machine holds its own node only.
        namespaces = vms[vm].run(["ip", "netns", "list"], check=True).stdout
        assert f"nsim.multi.{node}" in namespaces
        assert not any(f"nsim.multi.{other}" in namespaces for other in NODES.values() if other != node)

    # The control-plane machine runs the API server: on its loopback for its kubeconfig, and on
    # its node's address :6443 behind the kubernetes Service, which the client pod reaches by
    # name (cluster DNS, kube-proxy, and VXLAN when it runs on another machine) with the CA.
    api = json.loads((vms["vm1"].state_dir / "multi" / "apiserver.json").read_text())
    assert api["nodeAddress"] == LAN["vm1"]
    config = yaml.safe_load(vms["vm1"].kubeconfig.read_text())
    assert config["current-context"] == "netsim-multi"
    assert config["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{api['port']}"
    assert not vms["vm2"].kubeconfig.exists() and not (vms["vm2"].state_dir / "multi" / "apiserver.json").exists()

    # Joining again is idempotent (and how a killed agent is restarted): same NIC, same lease.
    r = vms["vm2"].run(["netsim", "join", "--store", store, "--node", "netsim-2", "--uplink", "eth1", SCENARIO])
    assert r.returncode == 0, r.stderr
    assert _nic(vms["vm2"], "nsim.multi.netsim-2", "eth0")["address"] == before["vm2"]["address"]

    # One flannel lease per node, each with its machine's address as PublicIP.
    leases = _etcd_get(ms, store, "/netsim/multi/coreos.com/network/subnets/")
    assert sorted(v["PublicIP"] for v in leases.values()) == sorted(LAN.values())

    # Every machine sees the whole cluster: an echo pod (DaemonSet) on every machine; the
    # client on a worker.
    r = vms["vm2"].run(["netsim", "get", "pods", "-o", "json"], check=True)
    pods = {p["metadata"]["name"]: p for p in json.loads(r.stdout)["items"]}
    echo = {p["spec"]["nodeName"]: p for p in pods.values()
            if p["metadata"]["name"].startswith("echo-") and p["status"].get("phase") == "Running"}
    assert sorted(echo) == sorted(NODES.values())
    client = pods["client"]
    client_vm = next(vm for vm, n in NODES.items() if n == client["spec"]["nodeName"])
    others = [vm for vm in NODES if vm != client_vm]

    # Pod to pod on each other machine: over VXLAN between the two machines' NICs.
    for other_vm in others:
        remote = echo[NODES[other_vm]]
        sniffer = _Sniffer(ms.switch, f"{other_vm}-eth1")
        try:
            result = _probe(vms[client_vm], "pod/default/client", f"pod/default/{remote['metadata']['name']}")
        finally:
            frames = sniffer.vxlan()
        assert result["result"] == "allow", result
        assert result["responder"] == remote["metadata"]["name"]
        assert result["clientIP"] == client["status"]["podIP"]  # pod to pod keeps the pod's address
        assert (LAN[client_vm], LAN[other_vm], 1) in frames

    pki = vms["vm1"].state_dir / "multi" / "pki"
    r = vms[client_vm].run(["netsim", "exec", "pod/default/client", "--", "curl", "-sS", "--max-time", "10",
                            "--cacert", str(pki / "ca.crt"), "--cert", str(pki / "admin.crt"), "--key",
                            str(pki / "admin.key"), "https://kubernetes.default.svc/api/v1/nodes"])
    assert r.returncode == 0, r.stderr
    assert sorted(n["metadata"]["name"] for n in json.loads(r.stdout)["items"]) == sorted(NODES.values())

    # To the Service by its DNS name (through the cluster DNS): endpoints on every machine
    # answer; and to a NodePort on another machine's node address.
    seen = set()
    for _ in range(30):
        result = _probe(vms[client_vm], "pod/default/client", "echo")
        assert result["result"] == "allow", result
        seen.add(pods[result["responder"]]["spec"]["nodeName"])
        if len(seen) == len(NODES):
            break
    assert seen == set(NODES.values())
    result = _probe(vms[client_vm], "pod/default/client", f"node/{NODES[others[0]]}", "--port", "30080")
    assert result["result"] == "allow", result

    # `netsim check` on each machine probes the pairs that start there: every pod to every pod
    # and Service; together the three cover the cluster.
    probed = 0
    for vm in NODES:
        r = vms[vm].run(["netsim", "check", "-o", "json"], timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        probed += len(json.loads(r.stdout))
    running = [p for p in pods.values() if p["status"].get("phase") == "Running"]
    assert probed >= len(running) * (len(running) - 1)
    # What needs every namespace of the cluster on one machine says so.
    r = vms["vm1"].run(["netsim", "trace", "pod/default/client", "svc/default/echo"])
    assert r.returncode == 2 and "needs the whole cluster on one machine" in r.stderr

    # A pod on another machine cannot be a source here: the error says where to run it.
    r = vms["vm1"].run(["netsim", "probe", "pod/default/client", "svc/default/web"])
    assert r.returncode != 0 and f"runs on node {NODES[client_vm]}, another machine" in r.stderr

    # Leaving: each `down` takes its node out of the store and gives the NIC back as it was.
    for i, vm in enumerate(reversed(list(NODES))):
        # The control-plane machine, last, with --all: its API server goes with its node.
        r = vms[vm].run(["netsim", "down", "--all" if vm == "vm1" else "multi"])
        assert r.returncode == 0, r.stderr
        after = _nic(vms[vm], None, "eth1")
        assert after is not None and after["address"] == before[vm]["address"]
        assert _inet(after) == _inet(before[vm]) and after["operstate"] == before[vm]["operstate"]
        assert after["mtu"] == before[vm]["mtu"]
        assert vms[vm].run(["ip", "netns", "list"], check=True).stdout.strip() == ""
        assert "netsim" not in vms[vm].run(["ps", "-eo", "args"], check=True).stdout.replace("ps -eo", "")
        assert not (vms[vm].state_dir / "multi").exists()  # its certificates with it
        assert not vms[vm].kubeconfig.exists()  # netsim made it; nothing else was in it
        nodes = _etcd_get(ms, store, "/netsim/multi/registry/nodes/")
        assert len(nodes) == 2 - i
    # The last machine out removed the cluster's keys.
    assert _etcd_get(ms, store, "/netsim/multi/") == {}


def test_join_refuses_what_it_cannot_do(machines):
    ms, store = machines
    vm = ms.machines["vm2"]
    cases = [
        (["--node", "netsim-9", "--uplink", "eth1"], "no node 'netsim-9'"),
        (["--node", "netsim-2", "--uplink", "eth7"], "--uplink 'eth7': no such interface"),
        (["--node", "netsim-3", "--uplink", "eth1"], "node netsim-3 has ip 192.168.60.13 in the scenario, but eth1"),
        (["--node", "netsim-2", "--uplink", "eth0"], "node netsim-2 has ip 192.168.60.12"),
    ]
    for args, message in cases:
        r = vm.run(["netsim", "join", "--store", store, *args, SCENARIO])
        assert r.returncode == 2 and message in r.stderr and "nothing was created" in r.stderr, r.stderr
    r = vm.run(["netsim", "join", "--store", "/tmp/x.db", "--node", "netsim-2", "--uplink", "eth1", SCENARIO])
    assert r.returncode == 2 and "etcd://HOST:PORT" in r.stderr
    assert vm.run(["ip", "netns", "list"], check=True).stdout.strip() == ""
    assert _nic(vm, None, "eth1") is not None


def test_failed_join_gives_the_nic_back(machines):
    """A join whose store cannot be reached fails after the NIC has moved: it comes back."""
    ms, _ = machines
    vm = ms.machines["vm3"]
    before = _nic(vm, None, "eth1")
    r = vm.run(["netsim", "join", "--store", "etcd://192.168.59.99:2379", "--node", "netsim-3", "--uplink", "eth1",
                "--timeout", "3", SCENARIO], timeout=120)
    assert r.returncode == 1 and "eth1 is back" in r.stderr, r.stderr
    after = _nic(vm, None, "eth1")
    assert after["address"] == before["address"] and _inet(after) == _inet(before)
    assert vm.run(["ip", "netns", "list"], check=True).stdout.strip() == ""
    assert not (vm.state_dir / "multi").exists()
