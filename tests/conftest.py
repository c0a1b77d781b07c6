"""What every test may use, importable without root: names, the state directory, clusters made
and torn down, an etcd, the `netsim` command and the K8s driver.  Nothing here runs at import or
for a test that does not ask for it, so tests/unit/ runs as an ordinary user; the root check and
the leak check live in tests/rooted.py, which tests/kernel/ and tests/e2e/ load."""

import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from netsim import kernel
from netsim.api.store.etcd_server import find_etcd, temporary_etcd
from netsim.fabric import Cluster, daemon, teardown
from netsim.model import names

REPO = Path(__file__).resolve().parent.parent
_serial = itertools.count()


def unique_name(tag: str = "t") -> str:
    """Cluster names no other run uses, so a leak is always traceable to its test."""
    return f"{tag}{os.getpid() % 100000}x{next(_serial)}"


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    d = tmp_path / "state"
    monkeypatch.setenv("NETSIM_STATE_DIR", str(d))
    return d


@pytest.fixture
def make_cluster(state_dir):
    """Factory for clusters that are always torn down, even when the test fails."""
    made: list[str] = []

    def make(nodes=("cp", "w1", "w2"), hosts=("client",), name=None, **kw) -> Cluster:
        c = Cluster(name or unique_name(), **kw)
        for i, n in enumerate(nodes):
            c.add_node(n, role="control-plane" if i == 0 else "worker")
        for h in hosts:
            c.add_host(h)
        made.append(c.name)
        return c

    yield make
    for name in made:
        teardown(name)


@pytest.fixture(scope="session")
def etcd_url():
    """A temporary etcd for the whole run: its client URL, http://127.0.0.1:PORT.  CI sets
    NETSIM_REQUIRE_ETCD=1, so there a missing etcd fails the run instead of skipping tests."""
    if find_etcd() is None:
        if os.environ.get("NETSIM_REQUIRE_ETCD") == "1":
            pytest.fail("etcd is not installed: scripts/install-deps.sh installs etcd-server")
        pytest.skip("etcd is not installed: scripts/install-deps.sh installs etcd-server")
    with temporary_etcd() as url:
        yield url


def run_netsim(*args, check=False, env=None, **kw) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "netsim", *args], capture_output=True, text=True,
                          check=check, env=full_env, cwd=REPO, timeout=120, **kw)


def host_snapshot() -> dict[str, str]:
    """What `up`/`down` must leave as they found it in the host's own namespace."""
    commands = {
        "links": ["ip", "-o", "link", "show"],
        "addresses": ["ip", "-o", "addr", "show"],
        "routes": ["ip", "route", "show", "table", "all"],
        "routes6": ["ip", "-6", "route", "show", "table", "all"],
        "rules": ["ip", "rule", "show"],
        "iptables": ["iptables-save"],
        "ip6tables": ["ip6tables-save"],
        "nft": ["nft", "list", "ruleset"],
    }
    snap = {}
    for key, cmd in commands.items():
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        if key in ("iptables", "ip6tables"):
            out = "\n".join(re.sub(r"\[\d+:\d+\]", "", line) for line in out.splitlines()
                            if not line.startswith("#"))
        snap[key] = out
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        snap["ip_forward"] = f.read()
    return snap


def host_state() -> dict[str, str]:
    """host_snapshot, and the legacy iptables backend, ipsets and the network sysctls."""
    snap = host_snapshot()
    for key, cmd in {"iptables-legacy": ["iptables-legacy-save"], "ipset": ["ipset", "list"]}.items():
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        snap[key] = "\n".join(line for line in r.stdout.splitlines() if not line.startswith("#"))
    snap["iptables-legacy"] = "\n".join(line.split(" [")[0] for line in snap["iptables-legacy"].splitlines())
    sysctls = []
    for top in ("/proc/sys/net/ipv4", "/proc/sys/net/ipv6/conf/all", "/proc/sys/net/bridge", "/proc/sys/net/core"):
        for path in sorted(Path(top).glob("*")) if Path(top).is_dir() else []:
            if path.is_file() and os.access(path, os.R_OK) and not path.name.startswith(("tcp_mem", "udp_mem")):
                with contextlib.suppress(OSError):
                    sysctls.append(f"{path}={path.read_text().strip()}")
    snap["sysctls"] = "\n".join(s for s in sysctls if "random" not in s and "stat" not in s)
    return snap

def host_processes() -> set[str]:
    """The command lines of the processes no one waits for (their parent is PID 1): daemons and
    whatever outlived its parent, which is what a test leaks.  A shell's own children (the
    user's commands while the tests run) are not counted."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, AttributeError):
            status = (entry / "status").read_text()
            ppid = int(re.search(r"^PPid:\s+(\d+)", status, re.MULTILINE).group(1))
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            if ppid == 1 and cmdline:  # kernel threads have no command line
                found.add(cmdline)
    return found


def host_mounts() -> list[str]:
    """Mount points and filesystem types of this mount namespace."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return sorted(f"{line.split()[4]} {line.split(' - ')[1].split()[0]}" for line in lines)


# -- a cluster with its agent, driven by the `netsim` command as a user drives it --------------
SCENARIO = """apiVersion: netsim/v1alpha1
kind: Scenario
name: ignored
nodes:
  - name: control-plane
    role: control-plane
  - name: worker1
  - name: worker2
externalHosts:
  - name: client
"""


class K8s:
    def __init__(self, name, tmp_path):
        self.name = name
        self.tmp_path = tmp_path

    def __call__(self, *args, check=True):
        # The cluster goes right after the subcommand: after `exec ... --` it would be the
        # command's own argument.
        result = run_netsim(args[0], "-c", self.name, *args[1:])
        if check:
            assert result.returncode == 0, f"netsim {' '.join(args)}: {result.stdout}{result.stderr}{self.log_tail()}"
        return result

    def log_tail(self, lines: int = 40) -> str:
        from netsim.model import state

        try:
            text = (state.cluster_dir(self.name) / "agent.log").read_text()
        except OSError:
            return ""
        return "\n--- agent.log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def apply(self, text: str):
        path = self.tmp_path / f"m{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(text)
        return self("apply", "-f", str(path))

    def pods(self, selector: str | None = None) -> list[dict]:
        args = ["get", "pods", "-o", "json"] + (["-l", selector] if selector else [])
        return json.loads(self(*args).stdout)["items"]

    def get(self, kind: str, name: str) -> dict:
        return json.loads(self("get", kind, name, "-o", "json").stdout)

    def probe(self, src: str, dst: str, *extra) -> tuple[int, dict]:
        result = self("probe", src, dst, "-o", "json", *extra, check=False)
        return result.returncode, json.loads(result.stdout)


@pytest.fixture(params=["sqlite", "etcd"])
def k8s(request, tmp_path, state_dir):
    name = unique_name("w")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    args = ["up", str(scenario), "--name", name]
    if request.param == "etcd":
        endpoint = request.getfixturevalue("etcd_url").removeprefix("http://")
        args += ["--store", f"etcd://{endpoint}/test-{name}"]
    up = run_netsim(*args)
    try:
        assert up.returncode == 0, up.stderr
        yield K8s(name, tmp_path)
    finally:
        down = run_netsim("down", name)
        assert down.returncode == 0, down.stderr
        assert kernel.list_netns(names.cluster_prefix(name)) == []
        assert daemon.agent_pids(name) == []


def running(pods):
    return [p for p in pods if p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP")]
