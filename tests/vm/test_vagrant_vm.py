"""vagrant/ for real: a Debian 12 VM booted by vagrant-libvirt, provisioned by vagrant/provision.sh,
a cluster brought up, checked, traced and torn down inside it, the VM destroyed, and the host
left as it was (its links, addresses, routes, rules, both iptables backends, nftables, ipsets,
network sysctls, processes and mounts compared before and after).

The box is built from Debian's packages by scripts/build-vagrant-box.sh (reused while its
inputs are unchanged) and added as debian/bookworm64 under a VAGRANT_HOME of the test's own,
/var/cache/netsim/vagrant/home; the user's ~/.vagrant.d is never read or written.  libvirt's
driver is kvm where /dev/kvm works and qemu (software emulation) elsewhere.  Each phase's time
is printed (run with -s, as `make test-vagrant` does)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from netsim.kernel.guest import kvm_usable
from tests.conftest import REPO, host_mounts, host_processes, host_state
from tests.vm import libvirt

pytestmark = pytest.mark.vm

CACHE = Path("/var/cache/netsim/vagrant")
BOX_NAME = "debian/bookworm64"
BOX_FILE = CACHE / "debian-bookworm64-libvirt.box"


def phase(name: str, started: float) -> float:
    elapsed = time.monotonic() - started
    print(f"vagrant-vm: {name:<22} {elapsed:7.1f} s", flush=True)
    return elapsed


def vagrant_env(dotfile: Path, prefix: str) -> dict[str, str]:
    return {**os.environ, "VAGRANT_HOME": str(CACHE / "home"), "VAGRANT_DOTFILE_PATH": str(dotfile),
            "VAGRANT_CHECKPOINT_DISABLE": "1", "VAGRANT_DEFAULT_PROVIDER": "libvirt",
            "NETSIM_LIBVIRT_DRIVER": "kvm" if kvm_usable() else "qemu", "NETSIM_LIBVIRT_PREFIX": prefix}


def vagrant(env: dict, cwd: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    result = subprocess.run(["vagrant", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"vagrant {' '.join(args)} failed ({result.returncode}):\n" \
                                   f"{result.stdout[-6000:]}\n{result.stderr[-4000:]}"
    return result


def in_vm(env: dict, cwd: Path, command: str, machine: str | None = None,
          timeout: float = 900) -> subprocess.CompletedProcess:
    args = ["ssh", *([machine] if machine else []), "-c", command, "--", "-o", "LogLevel=ERROR"]
    return subprocess.run(["vagrant", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def ensure_box(env: dict) -> None:
    """Builds the box (or reuses it) and adds it under the test's VAGRANT_HOME unless the same
    build is already there."""
    build = subprocess.run([str(REPO / "scripts" / "build-vagrant-box.sh"), str(CACHE)], capture_output=True,
                           text=True, timeout=3600)
    assert build.returncode == 0, f"building the box failed:\n{build.stdout[-4000:]}{build.stderr[-4000:]}"
    print(build.stdout, end="")
    stamp = Path(f"{BOX_FILE}.stamp").read_text()
    added = CACHE / "home" / "netsim-box.stamp"
    if not added.exists() or added.read_text() != stamp:
        subprocess.run(["vagrant", "box", "remove", "--force", "--all", BOX_NAME], env=env, capture_output=True,
                       check=False, timeout=300)
        vagrant(env, REPO, "box", "add", "--force", "--name", BOX_NAME, str(BOX_FILE), timeout=1200)
        added.write_text(stamp)


def assert_host_unchanged(before: tuple) -> None:
    state_before, procs_before, mounts_before = before
    state_after, procs_after, mounts_after = host_state(), host_processes(), host_mounts()
    changed = {key: state_after[key] for key in state_before if state_after[key] != state_before[key]}
    assert not changed, "the host changed:\n" + "\n".join(f"--- {k}:\n{v}" for k, v in changed.items())
    assert procs_after - procs_before == set(), f"processes left running: {procs_after - procs_before}"
    assert mounts_after == mounts_before


NAT_NETWORK = """<network>
  <name>netsim-vmtest-nat</name>
  <forward mode='nat'/>
  <ip address='192.168.213.1' netmask='255.255.255.0'>
    <dhcp><range start='192.168.213.2' end='192.168.213.254'/></dhcp>
  </ip>
</network>
"""


def test_libvirt_leaves_the_host_as_it_was(tmp_path):
    """libvirt's daemons, and a NAT network as vagrant-libvirt makes one (bridge, dnsmasq, NAT
    and forwarding rules, ip_forward), started and removed: the host is as it was."""
    before = host_state(), host_processes(), host_mounts()
    xml = tmp_path / "net.xml"
    xml.write_text(NAT_NETWORK)
    with libvirt.running():
        libvirt.virsh("net-define", str(xml))
        try:
            libvirt.virsh("net-start", "netsim-vmtest-nat")
            assert "LIBVIRT_" in subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
            assert "192.168.213.1" in subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
            libvirt.virsh("net-destroy", "netsim-vmtest-nat")
        finally:
            libvirt.virsh("net-undefine", "netsim-vmtest-nat", check=False)
    assert_host_unchanged(before)


def test_vagrant_vm_runs_a_cluster(tmp_path):
    for tool in ("vagrant", "virsh", "rsync"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: `make test-vagrant` (scripts/install-deps.sh --vm) installs it")
    plugins = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True, check=False,
                             env={**os.environ, "VAGRANT_HOME": str(CACHE / "home")}).stdout
    assert "vagrant-libvirt" in plugins, f"the vagrant-libvirt plugin is missing: {plugins}"

    before = host_state(), host_processes(), host_mounts()
    env = vagrant_env(tmp_path / "dot-vagrant", f"netsim-vmtest-{os.getpid()}-")
    cwd = REPO / "vagrant"
    times = {}
    CACHE.joinpath("home").mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    ensure_box(env)
    times["box"] = phase("box (build or reuse)", started)

    with libvirt.running():
        try:
            started = time.monotonic()
            vagrant(env, cwd, "up", "--no-provision")
            times["boot"] = phase("boot to ssh", started)

            started = time.monotonic()
            provision = vagrant(env, cwd, "provision", timeout=2400)
            times["provision"] = phase("provision", started)
            assert "netsim is ready" in provision.stdout, provision.stdout[-4000:]

            started = time.monotonic()
            up = in_vm(env, cwd, "sudo netsim up")
            times["netsim up"] = phase("netsim up", started)
            assert up.returncode == 0, up.stdout + up.stderr
            assert "Cluster 'basic' is up" in up.stdout + up.stderr

            started = time.monotonic()
            check = in_vm(env, cwd, "sudo netsim check")
            times["check"] = phase("netsim check", started)
            assert check.returncode == 0, check.stdout + check.stderr

            # A web pod on another node than the client's: the trace crosses flannel's VXLAN.
            started = time.monotonic()
            pods = in_vm(env, cwd, "sudo netsim get pods -o json")
            assert pods.returncode == 0, pods.stdout + pods.stderr
            node_of = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in json.loads(pods.stdout)["items"]}
            web = [n for n, node in node_of.items() if n.startswith("web-") and node != node_of["client"]]
            assert web, f"no web pod on another node than the client's: {node_of}"
            trace = in_vm(env, cwd, f"sudo netsim trace pod/default/client pod/default/{web[0]} --port 80")
            times["trace"] = phase("netsim trace", started)
            assert trace.returncode == 0, trace.stdout + trace.stderr
            assert "VXLAN" in trace.stdout and "verdict: DELIVERED" in trace.stdout, trace.stdout

            started = time.monotonic()
            down = in_vm(env, cwd, "sudo netsim down && ! ls /run/netns 2>/dev/null | grep -q '^nsim'")
            times["netsim down"] = phase("netsim down", started)
            assert down.returncode == 0, down.stdout + down.stderr
        finally:
            started = time.monotonic()
            subprocess.run(["vagrant", "destroy", "-f"], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=600, check=False)
            times["destroy"] = phase("destroy", started)
            leftover = libvirt.virsh("list", "--all", "--name", check=False).stdout.split()
            assert not [d for d in leftover if d.startswith("netsim-vmtest-")], leftover

    assert_host_unchanged(before)
    print("vagrant-vm: total " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))


def test_two_vagrant_vms_run_one_cluster(tmp_path):
    """vagrant/multi/ with its first two VMs: etcd on netsim-1, one node per VM joined over it,
    traffic from an echo pod on netsim-2 to the one on netsim-1 through flannel's VXLAN across
    the VMs' NICs, `netsim check` on each, and each node leaving with `netsim down`."""
    machines = ("netsim-1", "netsim-2")
    before = host_state(), host_processes(), host_mounts()
    env = vagrant_env(tmp_path / "dot-vagrant", f"netsim-vmtest-{os.getpid()}-")
    cwd = REPO / "vagrant" / "multi"
    times = {}
    CACHE.joinpath("home").mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    ensure_box(env)
    times["box"] = phase("box (build or reuse)", started)

    with libvirt.running():
        try:
            started = time.monotonic()
            vagrant(env, cwd, "up", "--no-provision", *machines)
            times["boot"] = phase("boot to ssh (2 VMs)", started)

            # netsim-1 first: it runs the etcd that netsim-2's provisioning waits for.
            started = time.monotonic()
            for machine in machines:
                provision = vagrant(env, cwd, "provision", machine, timeout=2400)
                assert f"{machine} joined the cluster" in provision.stdout, provision.stdout[-4000:]
            times["provision"] = phase("provision + join (2)", started)

            started = time.monotonic()
            pods = in_vm(env, cwd, "sudo netsim get pods -o json", "netsim-2")
            assert pods.returncode == 0, pods.stdout + pods.stderr
            echo = {p["spec"].get("nodeName"): p for p in json.loads(pods.stdout)["items"]
                    if p["metadata"]["name"].startswith("echo-") and p.get("status", {}).get("podIP")}
            assert set(machines) <= set(echo), f"echo pods: {sorted(echo)}"
            src, dst = (f"pod/default/{echo[m]['metadata']['name']}" for m in machines[::-1])
            probe = in_vm(env, cwd, f"sudo netsim probe {src} {dst} --port 8080", "netsim-2")
            assert probe.returncode == 0, probe.stdout + probe.stderr
            for machine in machines:
                check = in_vm(env, cwd, "sudo netsim check", machine)
                assert check.returncode == 0, f"{machine}: {check.stdout}{check.stderr}"
            times["probe + check"] = phase("probe + check", started)

            started = time.monotonic()
            for machine in machines[::-1]:
                down = in_vm(env, cwd, "sudo netsim down multi && ip -o link show eth2", machine)
                assert down.returncode == 0, f"{machine}: {down.stdout}{down.stderr}"
            times["netsim down"] = phase("netsim down (2)", started)
        finally:
            started = time.monotonic()
            subprocess.run(["vagrant", "destroy", "-f"], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=900, check=False)
            times["destroy"] = phase("destroy", started)
            leftover = libvirt.virsh("list", "--all", "--name", check=False).stdout.split()
            assert not [d for d in leftover if d.startswith("netsim-vmtest-")], leftover

    assert_host_unchanged(before)
    print("vagrant-vm: total " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
