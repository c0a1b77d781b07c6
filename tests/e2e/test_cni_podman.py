"""A real CNI runtime calls netsim's CNI plugins: podman 4.3 with its CNI backend (libcni)
networks containers on a netsim node through the node's own network list.

netsim's agent plays containerd for the node's pods; podman is a second runtime on the same
node.  It runs in the node's network namespace (so the plugins run there, as on a real node,
and find the node's cni0), execs netsim's plugins from the directory `netsim cni install`
wrote, and uses the node's flannel entry unchanged: its containers take addresses from the
node's pod range through the same host-local store as the agent's pods.

Podman keeps its state under the test's tmp dir: storage (vfs, so nothing is mounted), run
and tmp dirs, runc's state (through a runc wrapper passing --root), file locks instead of
/dev/shm, no events, its own containers.conf, storage.conf and (empty) registries.conf, and
its containers' cgroups under a parent of its own.  Two things podman 4.3 cannot move:

* containers/image's blob-info cache, /var/lib/containers/cache for root whatever --root
  says: `podman import` runs in a throwaway mount namespace with a tmpfs on /var/lib;
* libcni's results cache, /var/lib/cni/results: podman's DEL removes its entries; the
  directories are removed afterwards if this test made them.

Podman is entered with `nsenter --net`, not `ip netns exec`: the latter remounts /sys in a
mount namespace of its own, which hides the cgroup mounts runc needs ("no cgroup mount
found in mountinfo"), and podman's per-container netns bind mounts made in one such mount
namespace would be invisible to the next podman command (`podman rm` of a detached
container).
"""

from __future__ import annotations

import contextlib
import copy
import glob
import io
import ipaddress
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from netsim import kernel
from netsim.cni import spec
from netsim.fabric import daemon
from netsim.model import names, state
from netsim.node import podnet
from tests.conftest import K8s, run_netsim, unique_name

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ip", "nc", "httpd", "hostname", "cat")
IMAGE = "localhost/netsim-busybox"
NODE = "node0"
POD = "echo"
POD_PORT = 8080
HOST_PORT = 18080
LIBCNI_CACHE = Path("/var/lib/cni")
# What podman must never create on the host (checked only where it did not exist before).
HOST_PATHS = ("/var/lib/containers", "/run/containers", "/run/libpod", "/run/runc", "/run/crun",
              "/dev/shm/libpod_lock", "/etc/containers/networks")

SCENARIO = f"""apiVersion: netsim/v1alpha1
kind: Scenario
name: ignored
nodes:
  - name: {NODE}
    role: control-plane
"""

POD_MANIFEST = f"""apiVersion: v1
kind: Pod
metadata: {{name: {POD}}}
spec:
  containers:
  - name: app
    image: nginx
    ports: [{{containerPort: {POD_PORT}}}]
"""


# -- what the test needs ---------------------------------------------------------------------
def _static_elf(path: str) -> bool:
    """A 64-bit ELF executable with no program interpreter: it runs in a rootfs holding
    nothing else."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:
                return False
            order = "<" if head[5] == 1 else ">"
            (phoff,) = struct.unpack_from(order + "Q", head, 0x20)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 0x36)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    pt_interp = 3
    return all(struct.unpack_from(order + "I", table, i * phentsize)[0] != pt_interp for i in range(phnum))


def _why_not() -> str | None:
    hint = "scripts/install-deps.sh installs podman, runc, conmon and busybox-static"
    for tool in ("podman", "runc", "nsenter", "unshare", "curl", "iptables-save"):
        if not shutil.which(tool):
            return f"{tool} is not installed ({hint})"
    if not (shutil.which("conmon") or os.path.exists("/usr/libexec/podman/conmon")):
        return f"conmon is not installed ({hint})"
    if not _static_elf(os.path.realpath(BUSYBOX)):
        return f"{BUSYBOX} is missing or not statically linked ({hint})"
    version = subprocess.run(["podman", "--version"], capture_output=True, text=True, timeout=30, check=False)
    found = re.search(r"(\d+)\.(\d+)", version.stdout)
    if not found or found.group(1) != "4":
        return f"needs podman 4 (its CNI backend), found {version.stdout.strip() or version.stderr.strip()!r}"
    return None


@pytest.fixture
def tools():
    reason = _why_not()
    if reason:
        pytest.skip(reason)


# -- the netsim side -------------------------------------------------------------------------
class Node(K8s):
    """A one-node netsim cluster with one pod answering on POD_PORT."""

    def __init__(self, cluster: str, tmp_path: Path):
        super().__init__(cluster, tmp_path)
        self.netns = names.netns_name(cluster, NODE)
        self.pod_netns = podnet.pod_netns(cluster, "default", POD)
        self.dir = state.cluster_dir(cluster) / "nodes" / NODE
        self.conflist = json.loads((self.dir / "cni" / "net.d" / podnet.CONFLIST).read_text())
        node = self.get("node", NODE)
        self.pod_cidr = ipaddress.ip_network(node["spec"]["podCIDR"])
        self.ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
        flannel = self.plugin("flannel")
        self.flannel_dir = Path(flannel["dataDir"])
        self.store = Path(flannel["ipam"]["dataDir"]) / self.conflist["name"]  # host-local's
        self.started: list[dict] = []  # the pods, once POD runs

    def plugin(self, plugin_type: str) -> dict:
        [entry] = [p for p in self.conflist["plugins"] if p["type"] == plugin_type]
        return entry

    @staticmethod
    def curl(netns: str, url: str) -> str:
        """GET url from inside a namespace of the cluster (what `netsim exec` does)."""
        return subprocess.run(["ip", "netns", "exec", netns, "curl", "-s", "--max-time", "5", url],
                              capture_output=True, text=True, check=True, timeout=30).stdout.strip()

    def links(self) -> dict[int, dict]:
        out = subprocess.run(["ip", "-n", self.netns, "-j", "link", "show"], capture_output=True, text=True,
                             check=True, timeout=30).stdout
        return {link["ifindex"]: link for link in json.loads(out)}

    def nat_rules(self) -> str:
        return subprocess.run(["ip", "netns", "exec", self.netns, "iptables-save", "-t", "nat"], capture_output=True,
                              text=True, check=True, timeout=30).stdout

    def addresses_held(self) -> dict[str, str]:
        """host-local's store for the node's network: address -> owner (container ID)."""
        return {p.name: p.read_bytes().decode().split("\r\n")[0] for p in self.store.iterdir()
                if re.fullmatch(r"[0-9.]+", p.name)}


@pytest.fixture
def node(tools, tmp_path, state_dir):
    name = unique_name("pm")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    up = run_netsim("up", str(scenario), "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        n = Node(name, tmp_path)
        n.apply(POD_MANIFEST)
        deadline = time.monotonic() + 30
        while True:
            pods = n.pods()
            if any(p["metadata"]["name"] == POD and p.get("status", {}).get("phase") == "Running"
                   and p["status"].get("podIP") for p in pods):
                break
            assert time.monotonic() < deadline, f"pod {POD} did not start: {pods}"
            time.sleep(0.1)
        n.started = pods
        yield n
    finally:
        down = run_netsim("down", name)
        assert down.returncode == 0, down.stderr
        assert kernel.list_netns(names.cluster_prefix(name)) == []


# -- the podman side -------------------------------------------------------------------------
class Podman:
    """podman with every piece of state in ``state`` (under the test's tmp dir), always run
    in the node's namespace."""

    def __init__(self, state: Path, node: Node, network: str):
        self.state = state
        # podman refuses a runroot longer than 50 characters (conmon's socket paths), so
        # podman is told a short symlink to ``state``.
        self.root = Path(f"/tmp/nsim-podman-{node.name}")
        self.node = node
        self.network = network
        self.cgroup_parent = f"netsim-podman-{node.name}"
        self.ids: list[str] = []  # containers run, full or short IDs
        self.env: dict[str, str] = {}
        self.argv: list[str] = []

    def setup(self, netlist: dict, plugin_dir: Path) -> None:
        root = self.root
        self.state.mkdir()
        if root.is_symlink():  # left by a killed run of a process with this pid
            root.unlink()
        root.symlink_to(self.state)
        for d in ("storage", "run", "tmp", "runc", "net.d", "home", "bin"):
            (root / d).mkdir(parents=True, exist_ok=True)
        # runc keeps container state in /run/runc unless told --root.  podman's
        # --runtime-flag would tell it, but conmon's exit command (`podman container
        # cleanup`) does not carry that flag; it does read CONTAINERS_CONF, so the runtime
        # named runc is this wrapper.
        wrapper = root / "bin" / "runc"
        wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("runc")} --root {root / "runc"} "$@"\n')
        wrapper.chmod(0o755)
        (root / "containers.conf").write_text(f"""[network]
network_backend = "cni"
cni_plugin_dirs = ["{plugin_dir}"]
network_config_dir = "{root / 'net.d'}"
default_network = "{self.network}"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
lock_type = "file"
runtime = "runc"
tmp_dir = "{root / 'tmp'}"
image_copy_tmp_dir = "{root / 'tmp'}"

[engine.runtimes]
runc = ["{wrapper}"]
""")
        (root / "storage.conf").write_text(f"""[storage]
driver = "vfs"
runroot = "{root / 'run'}"
graphroot = "{root / 'storage'}"
""")
        (root / "registries.conf").write_text("")
        self.env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(root / "home"),
                    "TMPDIR": str(root / "tmp"), "CONTAINERS_CONF": str(root / "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
                    "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf")}
        (root / "net.d" / f"{netlist['name']}.conflist").write_text(json.dumps(netlist, indent=1))
        self.argv = ["nsenter", f"--net={kernel.netns_path(self.node.netns)}", shutil.which("podman"),
                     "--root", str(root / "storage"), "--runroot", str(root / "run"), "--tmpdir", str(root / "tmp"),
                     "--storage-driver", "vfs", "--runtime", "runc",
                     "--cgroup-manager", "cgroupfs", "--events-backend", "none", "--network-backend", "cni"]

    def __call__(self, *args: str, check: bool = True, stdin: bytes | None = None, wrap: tuple = (),
                 timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run([*wrap, *self.argv, *args], input=stdin, env=self.env, capture_output=True,
                              timeout=timeout, check=False)
        out = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                          proc.stderr.decode(errors="replace"))
        if check:
            assert out.returncode == 0, f"podman {' '.join(args)}: rc {out.returncode}\n{out.stdout}{out.stderr}"
        return out

    def run(self, *args: str) -> subprocess.CompletedProcess:
        # cgroupfs on this kind of host: a parent of our own (removed at the end), conmon in
        # none, and limits the sandbox allows.
        return self("run", "--cgroups=no-conmon", f"--cgroup-parent=/{self.cgroup_parent}",
                    "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", self.network, *args)

    def import_image(self, tar: bytes) -> None:
        """containers/image writes root's blob-info cache to /var/lib/containers/cache whatever
        --root says; a tmpfs on /var/lib in a throwaway mount namespace takes it instead."""
        self("import", "-", IMAGE, stdin=tar,
             wrap=("unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                   'mount -t tmpfs -o size=16m,mode=0755 netsim-podman /var/lib && exec "$@"', "sh"))

    def cleanup(self) -> list[str]:
        """Remove every container, whatever state it is in, and all of podman's state; returns
        what had to be forced."""
        problems = []
        if self.argv:
            rm = self("rm", "--all", "--force", "--time", "0", check=False)
            if rm.returncode != 0:
                problems.append(f"podman rm --all: {rm.stderr.strip()}")
        # conmon runs `podman container cleanup` when a container exits: let those finish.
        deadline = time.monotonic() + 15
        while (pids := _processes_mentioning(str(self.root), str(self.state))) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            problems.append(f"process {pid} outlived podman rm by 15 s")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        runc_root = self.root / "runc"
        for cid in os.listdir(runc_root) if runc_root.is_dir() else []:
            problems.append(f"runc container {cid} outlived podman rm")
            subprocess.run(["runc", "--root", str(runc_root), "delete", "--force", cid], capture_output=True,
                           timeout=30, check=False)
        for top in glob.glob(f"/sys/fs/cgroup/{self.cgroup_parent}") + glob.glob(
                f"/sys/fs/cgroup/*/{self.cgroup_parent}"):
            for path, _, _ in os.walk(top, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(path)
            if os.path.exists(top):
                problems.append(f"cgroup {top} could not be removed")
        if self.root.is_symlink():
            self.root.unlink()
        shutil.rmtree(self.state, ignore_errors=True)  # vfs: plain files, nothing mounted
        if self.state.exists():
            problems.append(f"{self.state} could not be removed")
        return problems


def _processes_mentioning(*texts: str) -> list[int]:
    needles = [t.encode() for t in texts]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
            cmdline = f.read()
            if any(n in cmdline for n in needles):
                found.append(int(entry))
    return found


def busybox_rootfs() -> bytes:
    """A tarball of a rootfs holding static busybox and its applets as symlinks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d, mode in (("bin", 0o755), ("etc", 0o755), ("www", 0o755), ("tmp", 0o1777)):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(os.path.realpath(BUSYBOX), arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return buf.getvalue()


def podman_netlist(node_conflist: dict) -> dict:
    """The node's network list as podman's libcni takes it (CNI up to 1.0.0): the node's
    flannel entry and portmap, unchanged, under the node's network name.  The name matters:
    host-local keeps its store in <ipam.dataDir>/<network name>, so another name would be a
    second allocator over the same range, handing out the pods' addresses again."""
    keep = [copy.deepcopy(p) for p in node_conflist["plugins"] if p["type"] in ("flannel", "portmap")]
    assert [p["type"] for p in keep] == ["flannel", "portmap"], node_conflist
    return {"cniVersion": "1.0.0", "name": node_conflist["name"], "plugins": keep}


def _host_view() -> dict:
    return {
        "netns": {n for n in os.listdir(kernel.NETNS_DIR) if n.startswith("netns-")}
        if os.path.isdir(kernel.NETNS_DIR) else set(),
        "paths": {p for p in HOST_PATHS if os.path.lexists(p)},
        "etc_cni": sorted(str(p) for p in Path("/etc/cni").rglob("*")) if os.path.isdir("/etc/cni") else [],
        "libcni": {p: os.path.isdir(p) for p in (LIBCNI_CACHE, LIBCNI_CACHE / "results")},
    }


@pytest.fixture
def podman(node, tmp_path):
    before = _host_view()
    plugin_dir = tmp_path / "cni-bin"
    installed = run_netsim("cni", "install", str(plugin_dir))
    assert installed.returncode == 0, installed.stderr
    # podman's only plugin dir holds netsim's plugins and nothing else.
    assert sorted(os.listdir(plugin_dir)) == sorted(spec.MODULES)
    assert all(spec.SHIM_MARKER in (plugin_dir / t).read_bytes() for t in spec.MODULES)
    netlist = podman_netlist(node.conflist)
    pm = Podman(tmp_path / "podman", node, netlist["name"])
    try:
        pm.setup(netlist, plugin_dir)
        pm.import_image(busybox_rootfs())
        yield pm
    finally:
        problems = pm.cleanup()
        after = _host_view()
        problems += [f"podman left {kernel.NETNS_DIR}/{n}" for n in sorted(after["netns"] - before["netns"])]
        problems += [f"podman created {p}" for p in sorted(after["paths"] - before["paths"])]
        if after["etc_cni"] != before["etc_cni"]:
            problems.append(f"/etc/cni changed: {before['etc_cni']} -> {after['etc_cni']}")
        results = LIBCNI_CACHE / "results"
        if results.is_dir():
            ours = [f for f in os.listdir(results) if any(f.startswith(f"{pm.network}-{i}") for i in pm.ids)]
            problems += [f"libcni cache entry {results / f} outlived its container" for f in ours]
        for path in (results, LIBCNI_CACHE):  # podman 4.3 cannot be told another cache dir
            if not before["libcni"][path]:
                with contextlib.suppress(OSError):
                    os.rmdir(path)  # only if empty: someone else may be using it now
        host_nat = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, timeout=30,
                                  check=False).stdout
        problems += [f"host nat table mentions container {i}" for i in pm.ids if i in host_nat]
        assert not problems, problems


# -- the test -------------------------------------------------------------------------------
def test_podman_networks_containers_through_netsims_plugins_on_the_node(node, podman):
    """podman execs netsim's flannel (-> bridge + host-local) and portmap in the node's
    namespace: its containers get addresses from the node's pod range out of the same
    host-local store as the agent's pods, talk to the pods over cni0, publish a hostPort
    through portmap, and give everything back when they go."""
    pod = next(p for p in node.started if p["metadata"]["name"] == POD)
    pod_ips = {p["status"]["podIP"] for p in node.started}
    gateway = str(node.pod_cidr.network_address + 1)
    held_before = node.addresses_held()
    saved_before = sorted(os.listdir(node.flannel_dir))
    # The pod's address, and those of the cluster DNS's pods if one landed on this node.
    dns_pods = json.loads(node("get", "pods", "-n", "kube-system", "-o", "json").stdout)
    assert held_before == {p["status"]["podIP"]: p["metadata"]["uid"] for p in [pod, *dns_pods["items"]]
                           if p["spec"].get("nodeName") == NODE}
    assert podman("info", "--format", "{{.Host.NetworkBackend}}").stdout.strip() == "cni"
    [net] = json.loads(podman("network", "inspect", podman.network).stdout)
    assert net["driver"] == "flannel", net

    # A container that asks the netsim pod who it is: netsim's responder answers, and the
    # client it saw is the container, addressed out of the node's pod range.
    out = podman.run("--rm", IMAGE, "sh", "-c",
                     f"hostname; ip -4 -o addr show eth0; echo | nc -w 5 {pod['status']['podIP']} {POD_PORT}"
                     ).stdout.splitlines()
    podman.ids.append(out[0].strip())
    [cidr] = re.findall(r"inet (\S+)", out[1])
    address = ipaddress.ip_interface(cidr)
    assert len(out) == 3 and out[-1].startswith("{"), out
    answer = json.loads(out[-1])
    assert (answer["pod"], answer["namespace"], answer["node"]) == (POD, "default", NODE), answer
    client = answer["client"].rsplit(":", 1)[0]
    assert client == str(address.ip) and address.network == node.pod_cidr, (answer, cidr)
    assert client not in pod_ips and client != gateway
    # --rm: the container is gone, and with it its address and flannel's saved delegate.
    assert node.addresses_held() == held_before
    assert sorted(os.listdir(node.flannel_dir)) == saved_before

    # A container that stays: what netsim's plugins made for it, seen from every side.
    cid = podman.run("-d", "-p", f"{HOST_PORT}:{POD_PORT}", IMAGE, "sh", "-c",
                     f"hostname > /www/index.html && exec httpd -f -p {POD_PORT} -h /www").stdout.strip()
    podman.ids.append(cid)
    settings = json.loads(podman("inspect", cid).stdout)[0]["NetworkSettings"]
    ip = settings["Networks"][podman.network]["IPAddress"]
    sandbox = settings["SandboxKey"]
    assert ipaddress.ip_address(ip) in node.pod_cidr and ip not in pod_ips and ip != gateway, settings
    assert settings["Networks"][podman.network]["Gateway"] == gateway
    assert node.addresses_held() == {**held_before, ip: cid}
    assert (node.store / ip).read_bytes() == f"{cid}\r\neth0".encode()  # the reference host-local's format
    saved = json.loads((node.flannel_dir / cid).read_text())
    assert saved["type"] == "bridge" and saved["ipam"]["ranges"] == [[{"subnet": str(node.pod_cidr)}]], saved
    libcni_entry = LIBCNI_CACHE / "results" / f"{podman.network}-{cid}-eth0"
    assert json.loads(libcni_entry.read_text())["containerId"] == cid
    inside = podman("exec", cid, "sh", "-c", "ip -4 -o addr show eth0; ip route; cat /sys/class/net/eth0/iflink"
                    ).stdout
    assert f"inet {ip}/{node.pod_cidr.prefixlen}" in inside and f"default via {gateway}" in inside, inside
    peer = int(inside.split()[-1])  # the ifindex of the veth's other end, in the node's namespace
    veth = node.links()[peer]
    assert veth["master"] == podnet.BRIDGE and veth["ifname"].startswith("veth"), veth
    assert cid in node.nat_rules()  # portmap's DNAT for the container's hostPort
    # Reachable from netsim's pod on the bridge, and from the node through the hostPort.
    assert node.curl(node.pod_netns, f"http://{ip}:{POD_PORT}/") == cid[:12]
    assert node.curl(node.netns, f"http://{node.ip}:{HOST_PORT}/") == cid[:12]

    # kill -9 of the agent and a new one: its CNI GC must keep what podman holds in the
    # node's network (podman's attachment is in libcni's cache, not in the agent's).
    [agent] = daemon.agent_pids(node.name)
    os.kill(agent, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while daemon.agent_pids(node.name) and time.monotonic() < deadline:
        time.sleep(0.01)
    again = run_netsim("up", str(node.tmp_path / "scenario.yaml"), "--name", node.name)
    assert again.returncode == 0, again.stderr
    assert (node.store / ip).read_bytes() == f"{cid}\r\neth0".encode(), "the agent's GC took podman's address"
    assert (node.flannel_dir / cid).exists()
    assert node.curl(node.netns, f"http://{node.ip}:{HOST_PORT}/") == cid[:12]

    podman("rm", "--force", "--time", "0", cid)
    assert not (node.store / ip).exists(), "host-local did not release the container's address"
    assert node.addresses_held() == held_before
    assert sorted(os.listdir(node.flannel_dir)) == saved_before
    links = node.links()
    assert peer not in links and veth["ifname"] not in {link["ifname"] for link in links.values()}
    assert cid not in node.nat_rules()
    assert not os.path.lexists(sandbox) and not libcni_entry.exists()
    # The agent's pod was never disturbed.
    assert json.loads(node.curl(node.netns, f"http://{pod['status']['podIP']}:{POD_PORT}/"))["pod"] == POD
