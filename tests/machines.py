"""Machines on one host, for multi-machine tests: each "machine" is a network namespace with
its own NICs plus a holder process with its own mount and PID namespaces, so its /run/netns,
/etc/netns, /proc and processes are its own, as a VM's are.  netsim run inside one (``run``)
sees only that machine: its namespaces, its agents, its state.

    with Machines(tag, {"store": "192.168.59.0/24", "lan": "192.168.60.0/24"}) as ms:
        vm1 = ms.add("vm1", {"eth0": ("store", "192.168.59.11"), "eth1": ("lan", "192.168.60.11")})
        vm1.run(["netsim", "status"])

The switch (one bridge per network) is a namespace of its own; nothing is made in the host's.
Leaving the ``with`` ends every machine: its PID 1 exits, the kernel kills what ran in it and
its mounts (its namespace files) go with its mount namespace.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# PID 1 of a machine: its own /run/netns and /etc/netns (tmpfs), reaps orphans (agents that
# `netsim join` left running), exits when the test closes its stdin.
_HOLDER = r"""
import os, subprocess, sys, threading, time
for path in ("/run/netns", "/etc/netns"):
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "machine", path], check=True)
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
print("ready", flush=True)
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.2)
"""


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


class Machine:
    def __init__(self, name: str, netns: str, state_dir: Path):
        self.name = name
        self.netns = netns
        self.state_dir = state_dir
        self.holder: subprocess.Popen | None = None
        self.pid = 0  # the holder's PID in the host's PID namespace
        self.kubeconfig = state_dir.parent / f"{name}.kubeconfig"

    def start(self) -> None:
        self.holder = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "--mount", "--pid", "--fork", "--mount-proc",
             "--propagation", "private", sys.executable, "-c", _HOLDER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.holder.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"machine {self.name} did not start: {line!r}")
        children = Path(f"/proc/{self.holder.pid}/task/{self.holder.pid}/children").read_text().split()
        self.pid = int(children[0])

    def run(self, argv: list[str], timeout: float = 180, check: bool = False, env: dict | None = None
            ) -> subprocess.CompletedProcess:
        """``argv`` inside the machine (``netsim`` means this checkout's), as root, from the repository."""
        if argv and argv[0] == "netsim":
            argv = [sys.executable, "-m", "netsim", *argv[1:]]
        # Its own kubeconfig too, as a VM's root has its own ~/.kube/config.
        environ = {**os.environ, "NETSIM_STATE_DIR": str(self.state_dir), "KUBECONFIG": str(self.kubeconfig),
                   **(env or {})}
        cmd = ["nsenter", f"--target={self.pid}", "--mount", "--pid", "--net", f"--wd={REPO}", "--", *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check, env=environ)

    def stop(self) -> None:
        if self.holder is None:
            return
        with contextlib.suppress(BrokenPipeError, OSError):
            self.holder.stdin.close()
        try:
            self.holder.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.holder.kill()
            self.holder.wait(timeout=10)
        self.holder.stdout.close()
        self.holder = None


class Machines:
    def __init__(self, tag: str, networks: dict[str, str], base: Path):
        self.tag = tag
        self.networks = networks  # name -> CIDR (the bridge has no address: a plain switch)
        self.base = base
        self.switch = f"{tag}-switch"
        self.machines: dict[str, Machine] = {}
        self._namespaces: list[str] = []

    def __enter__(self) -> Machines:
        os.makedirs("/etc/netns", mode=0o755, exist_ok=True)  # a machine's tmpfs goes over it
        self._netns(self.switch)
        for net in self.networks:
            _ip("link", "add", net, "type", "bridge", netns=self.switch)
            _ip("link", "set", net, "up", netns=self.switch)
        return self

    def _netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("link", "set", "lo", "up", netns=name)

    def add(self, name: str, nics: dict[str, tuple[str, str]]) -> Machine:
        """A machine with ``nics``: ifname -> (network, address)."""
        m = Machine(name, f"{self.tag}-{name}", self.base / name)
        self._netns(m.netns)
        for ifname, (net, address) in nics.items():
            port = f"{name}-{ifname}"
            _ip("link", "add", ifname, "netns", m.netns, "type", "veth", "peer", "name", port, netns=self.switch)
            _ip("link", "set", port, "master", net, "up", netns=self.switch)
            prefix = self.networks[net].split("/")[1]
            _ip("addr", "add", f"{address}/{prefix}", "dev", ifname, netns=m.netns)
            _ip("link", "set", ifname, "up", netns=m.netns)
        m.start()
        self.machines[name] = m
        return m

    def __exit__(self, *exc) -> None:
        for m in self.machines.values():
            m.stop()
        time.sleep(0.1)
        for name in reversed(self._namespaces):
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "delete", name)
