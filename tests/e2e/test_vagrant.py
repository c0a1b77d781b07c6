"""vagrant/: both Vagrantfiles validate, the shell scripts are shellcheck-clean, and
vagrant/provision.sh provisions a clean Debian 12 and runs its smoke scenario to the end.

No VM here: the provision script runs in a debootstrapped Debian 12 root (the box's release)
in a chroot with private mount and PID namespaces, so whatever it mounts or starts (proc, the
cluster's netns bind mounts under its own /run, agents) ends with it and never shows in this
host's /run/netns or mount table.  The debootstrapped base, apt's .debs and pip's cache stay in
/var/cache/netsim/vagrant-test/ between runs (remove that directory for a fresh base)."""

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from netsim import kernel
from netsim.model import names

REPO = Path(__file__).resolve().parents[2]
CACHE = Path("/var/cache/netsim/vagrant-test")
MIRROR = "http://deb.debian.org/debian"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
SMOKE_CLUSTER = "provision-smoke"  # vagrant/provision.sh's name for its smoke run
# What the Vagrantfiles' rsync leaves out of the VM's /netsim, and so does the copy here.
NOT_SYNCED = {".venv", ".git", "cni_plugins/bin", "build", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis",
              "vagrant/.vagrant", "vagrant/multi/.vagrant"}


def not_synced(directory: str, names: list[str]) -> list[str]:
    rel = Path(directory).relative_to(REPO)
    return [n for n in names if n in NOT_SYNCED or str(rel / n) in NOT_SYNCED or n.endswith(".egg-info")]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: scripts/install-deps.sh installs it")
    return path


def vagrant_validate(directory: Path, tmp_path: Path, driver: str | None = None) -> subprocess.CompletedProcess:
    # --ignore-provider: neither the vagrant-libvirt plugin nor VirtualBox is needed (without
    # it, validate looks for a usable provider first); the providers' blocks are not checked,
    # everything else is (settings, networks, synced folders, provisioners and their scripts).
    env = {**os.environ, "VAGRANT_HOME": str(tmp_path / "vagrant.d"),
           "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot-vagrant"), "VAGRANT_CHECKPOINT_DISABLE": "1"}
    if driver:
        env["NETSIM_LIBVIRT_DRIVER"] = driver
    return subprocess.run([need("vagrant"), "validate", "--ignore-provider"], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("driver", [None, "qemu"])  # kvm by default; qemu where there is no KVM
@pytest.mark.parametrize("where", ["vagrant", "vagrant/multi"])
def test_vagrantfile_validates(where, driver, tmp_path):
    result = vagrant_validate(REPO / where, tmp_path, driver)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


def test_vagrant_validate_catches_mistakes(tmp_path):
    """The check above means something: a misspelt setting and a missing script fail it."""
    (tmp_path / "Vagrantfile").write_text(
        'Vagrant.configure("2") do |config|\n'
        '  config.vm.box = "debian/bookworm64"\n'
        '  config.vm.hostnam = "typo"\n'
        '  config.vm.provision "shell", path: "missing.sh"\n'
        "end\n")
    result = vagrant_validate(tmp_path, tmp_path)
    assert result.returncode != 0
    assert "hostnam" in result.stderr and "missing.sh" in result.stderr, result.stderr


def test_shell_scripts_are_shellcheck_clean():
    scripts = sorted([REPO / "vagrant" / "provision.sh", *(REPO / "vagrant" / "multi").glob("*.sh"),
                      *(REPO / "scripts").glob("*.sh")])
    assert len(scripts) >= 4
    result = subprocess.run([need("shellcheck"), "--severity=style", *map(str, scripts)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# -- vagrant/provision.sh in a clean Debian 12 -------------------------------------------------

def debootstrapped_base() -> Path:
    """A Debian 12 root as debootstrap makes it (the default variant: what a Debian install
    has), made once and reused; concurrent runs wait for the one that builds it."""
    base = CACHE / "bookworm"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # What runs killed on the way left: partial bases, and work copies hours old.
        stale = [*CACHE.glob("bookworm.tmp-*"),
                 *(w for w in CACHE.glob("work-*") if time.time() - w.stat().st_mtime > 6 * 3600)]
        for d in stale:
            if not mounts_under(d):
                subprocess.run(["rm", "-rf", "--one-file-system", str(d)], check=False)
        if not base.is_dir():
            tmp = CACHE / f"bookworm.tmp-{os.getpid()}"
            result = subprocess.run([need("debootstrap"), "bookworm", str(tmp), MIRROR], capture_output=True,
                                    text=True, timeout=1800)
            if result.returncode != 0:
                subprocess.run(["rm", "-rf", "--one-file-system", str(tmp)], check=False)
                pytest.fail(f"debootstrap failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
            tmp.rename(base)  # only a complete base is ever named `bookworm`
    return base


# Runs as PID 1 of the new PID namespace, in the new mount namespace, with the host's paths:
# mounts the chroot's filesystems and the caches, then enters the chroot.
OUTER = r"""
set -eu
root=$1 apt_cache=$2 pip_cache=$3 guest_cache=$4
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
mkdir -p "$root/run/lock" "$root/var/cache/apt/archives" "$root/root/.cache/pip"
mount --bind "$apt_cache" "$root/var/cache/apt/archives"
mount --bind "$pip_cache" "$root/root/.cache/pip"
if [ -n "$guest_cache" ]; then
  mkdir -p "$root/var/cache/netsim/guest"
  mount --bind "$guest_cache" "$root/var/cache/netsim/guest"
  mount -o remount,bind,ro "$root/var/cache/netsim/guest"
fi
inner=$5
shift 5
exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  TERM=dumb "$@" chroot "$root" /bin/bash -c "$inner"
"""

# Runs in the chroot: the provision script as Vagrant runs it (root, the checkout at /netsim),
# then what it left behind.
INNER = r"""
/netsim/vagrant/provision.sh
rc=$?
echo "LEFT-NETNS: $(ls /run/netns 2>/dev/null | grep '^nsim\.' | tr '\n' ' ')"
echo "LEFT-PROCS: $({ pgrep -f '[n]etsim agent|[n]etsim[.]cni[.]server'; pgrep -x etcd; } | tr '\n' ' ')"
echo "NETSIM-ON-PATH: $(command -v netsim)"
apt-get autoclean -qq >/dev/null 2>&1 || true  # keep the .deb cache to what the mirror still has
exit $rc
"""


def mounts_under(path: Path) -> list[str]:
    prefix = str(path) + "/"
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if (line.split()[4] + "/").startswith(prefix)]


@pytest.mark.slow
def test_provision_script_in_a_clean_debian_12():
    need("unshare")
    base = debootstrapped_base()
    apt_cache, pip_cache = CACHE / "apt-archives", CACHE / "pip"
    for d in (apt_cache, pip_cache):
        d.mkdir(parents=True, exist_ok=True)
    guest_cache = Path("/var/cache/netsim/guest")  # netsim/kernel/guest.py's kernel, when this host fetched it
    guest = str(guest_cache) if any((guest_cache / "kernel" / "boot").glob("vmlinuz-*")) else ""

    work = Path(tempfile.mkdtemp(prefix="work-", dir=CACHE))
    root = work / "root"
    try:
        subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)], check=True, timeout=600)
        shutil.copytree(REPO, root / "netsim", symlinks=True, ignore=not_synced)
        shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
        # The network as this host reaches it: its proxies, and its CA bundle for pip (where
        # TLS goes through an intercepting proxy, only this host's bundle trusts PyPI).
        env = [f"{k}={v}" for k, v in os.environ.items() if k.lower() in PROXY_VARS]
        if Path(HOST_CA).is_file():
            (root / "etc" / "ssl").mkdir(exist_ok=True)
            shutil.copy(HOST_CA, root / "etc" / "ssl" / "host-ca-certificates.crt")
            env.append("PIP_CERT=/etc/ssl/host-ca-certificates.crt")
        # Debian's box has the security and updates suites as well as the release.
        (root / "etc" / "apt" / "sources.list").write_text(
            f"deb {MIRROR} bookworm main\ndeb {MIRROR} bookworm-updates main\n"
            "deb http://deb.debian.org/debian-security bookworm-security main\n")
        # As in any chroot (and Docker image): package installs start no services.
        policy = root / "usr" / "sbin" / "policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)

        result = subprocess.run(
            ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private", "--",
             "/bin/sh", "-c", OUTER, "outer", str(root), str(apt_cache), str(pip_cache), guest, INNER, *env],
            capture_output=True, text=True, timeout=2400)
        output = result.stdout + result.stderr
        print(output)  # in pytest's report of a failure (and with -rP)
        assert result.returncode == 0, f"provision.sh failed ({result.returncode}):\n{output[-6000:]}"
        assert f"Cluster '{SMOKE_CLUSTER}' is up" in output, output[-6000:]
        assert "web-" in output and "Running" in output, output[-6000:]  # netsim get pods -o wide
        assert f"Deleted cluster '{SMOKE_CLUSTER}'" in output, output[-6000:]
        assert "netsim is ready" in output
        left = dict(re.findall(r"^([A-Z-]+): ?(.*)$", result.stdout, re.MULTILINE))
        assert left["LEFT-NETNS"].strip() == "", f"provision.sh left namespaces: {left['LEFT-NETNS']}"
        assert left["LEFT-PROCS"].strip() == "", f"provision.sh left processes: {left['LEFT-PROCS']}"
        assert left["NETSIM-ON-PATH"].strip() == "/usr/local/bin/netsim"
        assert kernel.list_netns(names.cluster_prefix(SMOKE_CLUSTER)) == []  # this host never had any
    finally:
        # The mounts lived in the namespace that ended with unshare; never delete through one.
        leftover = mounts_under(work)
        for mountpoint in reversed(leftover):
            subprocess.run(["umount", "--lazy", mountpoint], check=False)
        assert not mounts_under(work), f"still mounted under {work}: {mounts_under(work)}"
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=True, timeout=600)
        assert not leftover, f"mounts outlived the chroot's namespace: {leftover}"
