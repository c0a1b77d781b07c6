"""Calling CNI plugins the way a runtime does, inside namespaces a test made.

A "runtime" namespace plays the node (where the runtime and its plugins run); container
namespaces play pods.  Plugins are exec'd with ``ip netns exec`` into the runtime namespace,
so nothing a plugin does (bridges, iptables rules) lands in the host's own namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from netsim import kernel
from netsim.model import names

REPO = Path(__file__).resolve().parent.parent
OURS = REPO / "cni_plugins"
REFERENCE = Path("/usr/lib/cni")


@dataclass
class CniCall:
    rc: int
    out: dict | None
    raw: str
    stderr: str

    @property
    def error(self) -> dict:
        assert self.rc != 0, f"expected an error, got rc 0: {self.raw}"
        return self.out or {}


@dataclass
class Sandbox:
    """A runtime namespace and any number of container namespaces, all removed at the end."""

    prefix: str
    tmp: Path
    made: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> str:
        return f"{self.prefix}.node"

    def container(self, tag: str) -> str:
        """Create a container namespace; returns its path (what CNI_NETNS carries)."""
        name = f"{self.prefix}.{tag}"
        kernel.Namespace.create(name).close()
        self.made.append(name)
        return kernel.netns_path(name)

    def call(self, plugin: str | Path, command: str, conf: dict, *, container_id: str = "",
             netns: str = "", ifname: str = "eth0", env: dict | None = None,
             cni_path: str | None = None, stdin: bytes | None = None) -> CniCall:
        exe = Path(plugin) if os.sep in str(plugin) else OURS / str(plugin)
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_PATH": cni_path if cni_path is not None else str(exe.parent),
        }
        if container_id:
            full_env["CNI_CONTAINERID"] = container_id
        if netns:
            full_env["CNI_NETNS"] = netns
        if ifname:
            full_env["CNI_IFNAME"] = ifname
        full_env.update(env or {})
        data = stdin if stdin is not None else json.dumps(conf).encode()
        proc = subprocess.run(["ip", "netns", "exec", self.runtime, str(exe)], input=data, env=full_env,
                              capture_output=True, timeout=60, check=False)
        text = proc.stdout.decode(errors="replace")
        try:
            parsed = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = None
        return CniCall(proc.returncode, parsed, text, proc.stderr.decode(errors="replace"))

    def in_runtime(self, *argv: str) -> str:
        return subprocess.run(["ip", "netns", "exec", self.runtime, *argv], capture_output=True, text=True,
                              check=True, timeout=30).stdout

    def in_netns(self, path: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", f"--net={path}", *argv], capture_output=True, text=True,
                              check=check, timeout=30)

    def cleanup(self) -> None:
        kernel.remove_netns([*self.made, self.runtime])


@pytest.fixture
def cni_sandbox(tmp_path):
    from tests.conftest import unique_name

    box = Sandbox(prefix=names.netns_name(unique_name("cni"), "").rstrip("."), tmp=tmp_path)
    kernel.Namespace.create(box.runtime).close()
    yield box
    box.cleanup()
