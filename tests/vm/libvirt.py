"""libvirt for the VM tests: its daemons running while a test needs them, and the host as it was
afterwards.

Where systemd runs, the units are started (and stopped afterwards) if they were not active.
Where no init runs (containers, CI machines), virtlogd and libvirtd are started here as
daemons and killed afterwards.  Either way the domains' autostart is off for this run (the
sentinel files libvirt itself writes once per boot), so the package's `default` network
(virbr0, 192.168.122.1, its dnsmasq and NAT rules) is never started: vagrant-libvirt makes a
network of its own and removes it on `vagrant destroy`.

What libvirt leaves when its networks are gone is taken out here: the LIBVIRT_* chains and
their jumps in both address families (libvirt 9 never removes them), the nftables tables
iptables-nft made for them, ip_forward (a NAT network turns it on), /run/libvirt, and the files
it wrote under /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt and /etc/libvirt
(storage pools, volumes, logs, leases)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

URI = "qemu:///system"
DAEMONS = ("virtlogd", "libvirtd")  # started in this order, stopped in reverse
UNITS = ("virtlogd.service", "libvirtd.service")
STATE_DIRS = (Path("/var/lib/libvirt"), Path("/var/log/libvirt"), Path("/var/cache/libvirt"), Path("/etc/libvirt"))
# libvirt's drivers autostart their objects once per boot and write these to remember it.
AUTOSTARTED = (Path("/run/libvirt/network/autostarted"), Path("/run/libvirt/qemu/autostarted"),
               Path("/run/libvirt/storage/autostarted"))


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, check=check, timeout=120)


def _systemd() -> bool:
    return Path("/run/systemd/system").is_dir()


def _files(dirs=STATE_DIRS) -> set[Path]:
    found: set[Path] = set()
    for top in dirs:
        if top.exists():
            found.add(top)
            found.update(top.rglob("*"))
    return found


def _chains() -> dict[str, set[str]]:
    """The LIBVIRT_* chains per (command, table)."""
    chains: dict[str, set[str]] = {}
    for save in ("iptables-save", "ip6tables-save"):
        out = subprocess.run([save], capture_output=True, text=True, check=False).stdout
        table = ""
        for line in out.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":LIBVIRT_"):
                chains.setdefault(f"{save.removesuffix('-save')} {table}", set()).add(line[1:].split()[0])
    return chains


def _remove_chains(chains: dict[str, set[str]]) -> None:
    for key, names in chains.items():
        cmd, table = key.split()
        rules = subprocess.run([f"{cmd}-save", "-t", table], capture_output=True, text=True, check=False).stdout
        for line in rules.splitlines():  # the jumps into them, from the built-in chains
            parts = line.split()
            if line.startswith("-A ") and "-j" in parts and parts[parts.index("-j") + 1] in names:
                subprocess.run([cmd, "-t", table, "-D", *parts[1:]], check=False, capture_output=True)
        for name in names:
            subprocess.run([cmd, "-t", table, "-F", name], check=False, capture_output=True)
        for name in names:
            subprocess.run([cmd, "-t", table, "-X", name], check=False, capture_output=True)


def _nft_tables() -> set[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False).stdout
    return {line.strip() for line in out.splitlines() if line.startswith("table ")}


def _remove_empty_tables(tables: set[str]) -> None:
    """Tables iptables-nft made for libvirt's chains, once only empty built-in chains are left."""
    for table in tables:
        listing = subprocess.run(["nft", "list", *table.split()], capture_output=True, text=True,
                                 check=False).stdout.splitlines()
        body = [line.strip() for line in listing[1:]]
        if all(not line or line == "}" or line.startswith(("chain ", "type ")) for line in body):
            subprocess.run(["nft", "delete", *table.split()], check=False, capture_output=True)


def _pid_of(daemon: str) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(Path(f"/run/{daemon}.pid").read_text().strip())
        os.kill(pid, 0)
        return pid
    return None


def _wait_for_socket(deadline: float) -> None:
    while time.monotonic() < deadline:
        if virsh("version", check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"libvirtd did not answer on {URI} within the time allowed")


@contextlib.contextmanager
def running() -> Iterator[None]:
    """libvirt's daemons up for the duration, and the host as it was when it ends."""
    for tool in ("virsh", "libvirtd", "virtlogd"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed: scripts/install-deps.sh --vm installs it")
    files_before = _files()
    run_existed = Path("/run/libvirt").exists()
    chains_before = _chains()
    tables_before = _nft_tables()
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    started_units: list[str] = []
    started_pids: list[int] = []
    made_sentinels = []
    try:
        for sentinel in AUTOSTARTED:
            if not sentinel.exists():
                sentinel.parent.mkdir(parents=True, exist_ok=True)
                sentinel.touch()
                made_sentinels.append(sentinel)
        if _systemd():
            for unit in UNITS:
                active = subprocess.run(["systemctl", "is-active", "--quiet", unit], check=False).returncode == 0
                if not active:
                    subprocess.run(["systemctl", "start", unit], check=True, timeout=120)
                    started_units.append(unit)
        else:
            for daemon in DAEMONS:
                if _pid_of(daemon) is None:
                    subprocess.run([daemon, "--daemon", "--pid-file", f"/run/{daemon}.pid"], check=True, timeout=60)
                    deadline = time.monotonic() + 10
                    while _pid_of(daemon) is None and time.monotonic() < deadline:
                        time.sleep(0.05)
                    pid = _pid_of(daemon)
                    if pid is None:
                        raise RuntimeError(f"{daemon} did not start")
                    started_pids.append(pid)
        _wait_for_socket(time.monotonic() + 30)
        yield
    finally:
        for unit in reversed(started_units):
            subprocess.run(["systemctl", "stop", unit], check=False, timeout=120)
        for pid in reversed(started_pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        left = {k: v - chains_before.get(k, set()) for k, v in _chains().items()}
        _remove_chains({k: v for k, v in left.items() if v})
        _remove_empty_tables(_nft_tables() - tables_before)
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)
        for sentinel in made_sentinels:
            sentinel.unlink(missing_ok=True)
        if not run_existed:
            shutil.rmtree("/run/libvirt", ignore_errors=True)
        for daemon in DAEMONS:
            if started_pids:
                Path(f"/run/{daemon}.pid").unlink(missing_ok=True)
        for path in sorted(_files() - files_before, key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
