"""netsim's CNI plugins from an ordinary pip install: a fresh venv, `pip install` of this
checkout (non-editable and editable), `netsim cni path`, then VERSION, ADD and DEL through the
executables it names, in namespaces the test made."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cni_util import REPO

PIP = ["-m", "pip", "install", "-q", "--disable-pip-version-check"]


@pytest.fixture(scope="module", params=["installed", "editable"])
def cni_dir(request, tmp_path_factory):
    venv = tmp_path_factory.mktemp(f"venv-{request.param}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    target = ["-e", str(REPO)]
    # The build happens in a copy: a non-editable build writes build/ and *.egg-info beside the sources.
    src = tmp_path_factory.mktemp("src") / "netsim"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__"))
    if request.param == "installed":
        target = [str(src)]
    pip = subprocess.run([str(python), *PIP, *target], check=False, timeout=600, capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    out = subprocess.run([str(venv / "bin" / "netsim"), "cni", "path"], capture_output=True, text=True,
                         check=True, timeout=120, cwd="/")
    directory = Path(out.stdout.strip())
    yield directory
    from netsim.cni import standalone

    standalone.stop_all(key=directory.name)  # the compiled launchers start one for this venv
    if directory.is_relative_to("/var/lib/netsim/cni-bin"):  # generated for this venv: ours to remove
        shutil.rmtree(directory, ignore_errors=True)


def test_path_exists_and_holds_every_plugin(cni_dir):
    for plugin in ("bridge", "host-local", "loopback", "portmap", "flannel", "netsim-policy", "calico", "calico-ipam"):
        assert (cni_dir / plugin).is_file(), f"{cni_dir / plugin} missing"


def test_version_add_del_through_the_printed_path(cni_dir, cni_sandbox):
    box = cni_sandbox
    conf = {"cniVersion": "1.0.0", "name": "testnet", "type": "bridge", "bridge": "cni0", "isGateway": True,
            "ipam": {"type": "host-local", "subnet": "10.23.0.0/24", "dataDir": str(box.tmp / "ipam")}}
    version = box.call(cni_dir / "bridge", "VERSION", conf)
    assert version.rc == 0, version.raw + version.stderr
    assert "1.0.0" in version.out["supportedVersions"]
    netns = box.container("a")
    add = box.call(cni_dir / "bridge", "ADD", conf, container_id="ctr-a", netns=netns)
    assert add.rc == 0, add.raw + add.stderr
    assert "ModuleNotFoundError" not in add.raw
    address = add.out["ips"][0]["address"]
    assert address.startswith("10.23.0.")
    assert address.split("/")[0] in box.in_netns(netns, "ip", "-4", "addr", "show", "eth0").stdout
    assert box.in_netns(netns, "ping", "-c1", "-W1", "10.23.0.1", check=False).returncode == 0
    delete = box.call(cni_dir / "bridge", "DEL", conf, container_id="ctr-a", netns=netns)
    assert delete.rc == 0, delete.raw + delete.stderr
    assert box.in_netns(netns, "ip", "link", "show", "eth0", check=False).returncode != 0
