"""netsim runs as root: what it runs, writes and lets through must not be steerable by what
users and runtimes hand it (issue 11's security part)."""

from __future__ import annotations

import json
import stat

import pytest

from netsim import kernel
from netsim.cni import spec
from netsim.model import names, state
from tests.conftest import REPO, SCENARIO, run_netsim, unique_name


@pytest.fixture
def runtime_netns():
    """A namespace playing the node (plugins run in it) and one playing the container."""
    prefix = f"{names.NETNS_ROOT}.{unique_name('sec')}"
    made = [f"{prefix}.node", f"{prefix}.pod"]
    for name in made:
        kernel.Namespace.create(name).close()
    yield made[0], kernel.netns_path(made[1])
    kernel.remove_netns(made)


@pytest.mark.parametrize("plugin", sorted(spec.MODULES))
def test_cni_inputs_cannot_name_paths_outside_their_directories(plugin, tmp_path, runtime_netns):
    """Container IDs, interface names and network names end up in file names (host-local's
    allocations, flannel's saved delegates, the results cache) and link names."""
    out = tmp_path / "out"
    subnet_env = tmp_path / "subnet.env"
    subnet_env.write_text("FLANNEL_NETWORK=10.99.0.0/16\nFLANNEL_SUBNET=10.99.0.1/24\nFLANNEL_MTU=1450\n")
    base = {"cniVersion": "1.1.0", "name": "net", "type": plugin, "dataDir": str(out / "data"),
            "subnetFile": str(subnet_env),
            "ipam": {"type": "host-local", "subnet": "10.99.0.0/24", "dataDir": str(out / "ipam")}}
    runtime, container = runtime_netns
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": container, "CNI_IFNAME": "eth0",
           "CNI_PATH": str(REPO / "cni_plugins")}
    cases = [({"CNI_CONTAINERID": "../../../tmp/x"}, base), ({"CNI_CONTAINERID": "/etc/passwd"}, base),
             ({"CNI_IFNAME": "../eth0"}, base), ({"CNI_IFNAME": "a/b"}, base)]
    if plugin in ("host-local", "flannel"):
        cases += [({}, {**base, "name": "../../escape"}), ({}, {**base, "name": "a/b"})]
    for command in ("ADD", "DEL", "CHECK"):
        for change, conf in cases:
            with kernel.entered(kernel.netns_path(runtime)):
                code, answer = spec.run(plugin, {**env, "CNI_COMMAND": command, **change},
                                        json.dumps(conf).encode())
            # ADD is refused; DEL of what never was may succeed (nothing to undo); CHECK may
            # also say it knows no such container.
            refused = {spec.INVALID_ENVIRONMENT, spec.INVALID_CONFIG} | (
                {spec.UNKNOWN_CONTAINER} if command == "CHECK" else set())
            if not (command == "DEL" and code == 0):
                assert code == 1 and json.loads(answer)["code"] in refused, (command, change, answer)
    files = [p for p in out.rglob("*") if not p.is_dir()]
    assert not files, f"a refused call wrote {files}"
    assert {p for p in out.rglob("*")} <= {out / "data", out / "ipam"}, "a directory outside dataDir"


def test_state_and_store_are_readable_by_root_only(tmp_path, state_dir):
    """The state directory holds the scenario, the store (every object users applied), the
    agent's log and the CNI plugins' files: nobody but root may read any of it."""
    name = unique_name("sec")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    try:
        r = run_netsim("up", str(scenario), "--name", name)
        assert r.returncode == 0, r.stderr
        top = state.cluster_dir(name)
        assert stat.S_IMODE(top.stat().st_mode) == 0o700
        paths = [top, *top.rglob("*")]
        assert len(paths) > 10 and {"store.db", "cluster.json", "agent.log"} <= {p.name for p in paths}
        # Inside the 0700 directory nothing is writable by others, and the files that hold
        # users' objects and the cluster's description are root's alone.
        loose = [f"{p} {stat.filemode(p.lstat().st_mode)}" for p in paths
                 if not p.is_symlink() and p.lstat().st_mode & 0o022]
        assert not loose, loose
        private = [p for p in paths if p.name.startswith(("store.db", "cluster.json", "agent.log", "pods.json"))]
        assert private and all(p.stat().st_mode & 0o077 == 0 for p in private), \
            [f"{p} {stat.filemode(p.stat().st_mode)}" for p in private]
    finally:
        assert run_netsim("down", name).returncode == 0
