"""Run a command inside a throwaway qemu guest that boots Debian's kernel over this machine's
own filesystem, for kernel features the host kernel lacks (IPVS: this machine has no
``ip_vs``).  virtme-ng's idea, in a page: the host's ``/`` is shared read-only over 9p,
the guest's ``/run`` is a fresh tmpfs and ``/etc``, ``/tmp``,
``/var/tmp`` and ``/usr/lib`` are overlays (written in the guest, never on the host),
``/lib/modules`` holds the guest kernel's modules, and one more 9p
share (read-write) carries the command in and its output and exit code out.

    python -m netsim.kernel.guest [--timeout S] -- COMMAND [ARG...]   # exit code of COMMAND

The kernel comes from Debian's ``linux-image-<abi>-amd64`` package, fetched with ``apt-get
download`` and unpacked with ``dpkg -x`` into :func:`kernel_dir` (nothing is installed on
the host; ``depmod -b`` indexes its modules there).  The initramfs is written here (busybox
+ the virtio/9p modules the init needs, as a newc cpio), so no initramfs-tools, no cpio.
qemu runs with ``-accel kvm`` when /dev/kvm opens and the CPU shows vmx/svm, and ``-accel
tcg`` (software) otherwise; ``NETSIM_GUEST_ACCEL=kvm|tcg`` overrides that (this machine has
a /dev/kvm whose guests fail: no nested virtualisation), ``NETSIM_GUEST_DEBUG=1`` prints the
guest's console.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("NETSIM_GUEST_CACHE", "/var/cache/netsim/guest"))
BUSYBOX = "/bin/busybox"
QEMU = "qemu-system-x86_64"
# What the init needs before the host's root is mounted; modules.dep adds their dependencies.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
# busybox's modprobe misses crc32c's soft dependency, and the kernel asks for it by name.
PRELOAD = ("crc32c_generic",)


class GuestError(RuntimeError):
    pass


def kernel_dir() -> Path:
    return CACHE / "kernel"


def kernel_release(root: Path | None = None) -> str:
    root = root or kernel_dir()
    releases = sorted(p.name for p in (root / "lib" / "modules").iterdir()) if (root / "lib/modules").is_dir() else []
    if not releases:
        raise GuestError(f"no guest kernel under {root}; run `python -m netsim.kernel.guest --fetch` (needs apt)")
    return releases[-1]


def fetch_kernel() -> Path:
    """Debian's current amd64 kernel, unpacked under kernel_dir() (idempotent)."""
    root = kernel_dir()
    if (root / "boot").is_dir() and any((root / "boot").glob("vmlinuz-*")):
        return root
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, check=True)
    image = next((line.split(":", 1)[1].strip() for line in out.stdout.splitlines()
                  if line.strip().startswith("Depends:") and "linux-image-" in line), None)
    if not image:
        raise GuestError("apt-cache depends linux-image-amd64 names no kernel image package")
    with tempfile.TemporaryDirectory(dir=CACHE.parent if CACHE.parent.is_dir() else None) as tmp:
        os.chmod(tmp, 0o755)  # apt's download user must write here
        subprocess.run(["apt-get", "download", image], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob("*.deb"))
        staging = Path(tmp) / "root"
        subprocess.run(["dpkg", "-x", str(deb), str(staging)], check=True)
        release = kernel_release(staging)
        subprocess.run(["depmod", "-b", str(staging), release], check=True)
        root.parent.mkdir(parents=True, exist_ok=True)
        if root.exists():
            shutil.rmtree(root)
        shutil.move(str(staging), root)
    return root


def unavailable() -> str:
    """'' when a guest can boot here, else why not."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} not found (apt-get install --no-install-recommends qemu-system-x86)"
    try:
        kernel_release()
    except GuestError as exc:
        return str(exc)
    return ""


def _module_closure(root: Path, release: str, names) -> list[Path]:
    """The .ko files of ``names`` and everything they depend on, dependencies first."""
    moddir = root / "lib" / "modules" / release
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {Path(p).name.split(".ko")[0].replace("-", "_"): p for p in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for d in reversed(deps.get(path, [])):
            visit(d)
        order.append(path)

    for name in names:
        path = by_name.get(name.replace("-", "_"))
        if path is None:
            continue  # built in
        visit(path)
    return [moddir / p for p in order]


def _cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, mode, data) entries (directories have empty data)."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


INIT = r"""#!/bin/busybox sh
B=/bin/busybox
P9=trans=virtio,version=9p2000.L,msize=524288
$B mkdir -p /proc /sys /dev /newroot /share
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in $($B cat /modules.order); do $B insmod "$m" || echo "guest: insmod $m failed"; done
$B mount -t 9p -o $P9,ro,cache=loose hostroot /newroot || exec $B poweroff -f
$B mount -t tmpfs -o mode=0755 tmpfs /newroot/run
$B mkdir -p /newroot{share}
$B mount -t 9p -o $P9 share /newroot{share} || exec $B poweroff -f
# /etc, /usr/lib (for /lib/modules), /tmp and /var/tmp get a writable layer over the read-only
# host's: what the command writes stays in the guest, what the host has there (a checkout in
# /tmp, say) is seen.
for d in etc usr/lib tmp var/tmp; do
  up=/newroot/run/overlay/$d
  $B mkdir -p $up/up $up/work
  $B mount -t overlay -o lowerdir=/newroot/$d,upperdir=$up/up,workdir=$up/work overlay /newroot/$d
done
$B chmod 1777 /newroot/tmp /newroot/var/tmp
$B mkdir -p /newroot/usr/lib/modules/{release}
$B mount --bind /newroot{kernel}/lib/modules/{release} /newroot/usr/lib/modules/{release}
$B mount --move /proc /newroot/proc
$B mount --move /sys /newroot/sys
$B mount --move /dev /newroot/dev
exec $B switch_root /newroot /bin/sh {share}/guest-init.sh
"""

GUEST_INIT = r"""#!/bin/sh
# Runs as the guest's PID 1 on the host's root filesystem: the command, then power off.
mkdir -p /dev/pts /dev/shm /run/netns /sys/fs/cgroup /etc/netns
mount -t tmpfs tmpfs /etc/netns  # the host's own per-namespace files are not the guest's
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ip link set lo up
hostname netsim-guest
for m in {preload}; do modprobe "$m"; done
cd {cwd}
export PATH={path} HOME=/tmp PYTHONDONTWRITEBYTECODE=1 NETSIM_IN_GUEST=1 TERM=dumb
timeout -s KILL {timeout} {command} > {share}/output 2>&1
echo $? > {share}/rc
sync
echo o > /proc/sysrq-trigger
sleep 5
"""


def kvm_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    return " vmx" in flags or " svm" in flags


def run(argv: list[str], *, timeout: float = 600, memory_mb: int = 2048, cpus: int | None = None,
        cwd: str | None = None, echo=None) -> tuple[int, str]:
    """Boot the guest, run ``argv`` there (cwd as here), return (exit code, its output)."""
    root = kernel_dir()
    release = kernel_release(root)
    vmlinuz = root / "boot" / f"vmlinuz-{release}"
    if shutil.which(QEMU) is None:
        raise GuestError(f"{QEMU} not found: apt-get install --no-install-recommends qemu-system-x86")
    mods = _module_closure(root, release, BOOT_MODULES)
    with tempfile.TemporaryDirectory(prefix="netsim-guest-") as tmp:
        share = Path(tmp) / "share"
        share.mkdir()
        guest_share = "/run/netsim-guest-share"
        entries: list[tuple[str, int, bytes]] = [("bin", 0o40755, b""), ("mods", 0o40755, b"")]
        entries.append(("bin/busybox", 0o100755, Path(BUSYBOX).read_bytes()))
        order = []
        for m in mods:
            entries.append((f"mods/{m.name}", 0o100644, m.read_bytes()))
            order.append(f"/mods/{m.name}")
        entries.append(("modules.order", 0o100644, "\n".join(order).encode() + b"\n"))
        init = INIT.replace("{share}", guest_share).replace("{kernel}", str(root)).replace("{release}", release)
        entries.append(("init", 0o100755, init.encode()))
        initrd = Path(tmp) / "initrd.gz"
        initrd.write_bytes(gzip.compress(_cpio(entries), compresslevel=1))
        (share / "guest-init.sh").write_text(
            GUEST_INIT.replace("{share}", guest_share).replace("{preload}", " ".join(PRELOAD))
            .replace("{cwd}", shlex.quote(cwd or os.getcwd()))
            .replace("{path}", shlex.quote(os.environ.get("PATH", "")))
            .replace("{timeout}", str(int(timeout))).replace("{command}", shlex.join(argv)))
        accel = os.environ.get("NETSIM_GUEST_ACCEL")
        kvm = accel == "kvm" if accel else kvm_usable()
        cmd = [QEMU, "-accel", "kvm" if kvm else "tcg", "-cpu", "host" if kvm else "max",
               "-m", str(memory_mb), "-smp", str(cpus or os.cpu_count() or 1),
               "-kernel", str(vmlinuz), "-initrd", str(initrd),
               "-append", "console=ttyS0 panic=-1 rw quiet loglevel=3 mitigations=off",
               "-display", "none", "-serial", "stdio", "-monitor", "none", "-nic", "none", "-no-reboot",
               "-virtfs", "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap",
               "-virtfs", f"local,path={share},mount_tag=share,security_model=passthrough"]
        t0 = time.monotonic()
        try:
            console = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                     errors="replace", timeout=timeout + 120)
        except subprocess.TimeoutExpired as exc:
            raise GuestError(f"guest did not power off within {timeout + 120:.0f} s") from exc
        elapsed = time.monotonic() - t0
        output = (share / "output").read_text(errors="replace") if (share / "output").exists() else ""
        if not (share / "rc").exists():
            raise GuestError(f"guest ended after {elapsed:.1f} s without running the command "
                             f"(qemu exit {console.returncode}):\n{console.stdout[-3000:]}{console.stderr[-2000:]}")
        if os.environ.get("NETSIM_GUEST_DEBUG"):
            sys.stderr.write(console.stdout + console.stderr)
        if echo:
            echo(f"guest: {'kvm' if kvm else 'tcg'}, {elapsed:.1f} s")
        return int((share / "rc").read_text().strip() or 1), output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetch", action="store_true", help="fetch and unpack the guest kernel, then exit")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("command", nargs="*")
    args = parser.parse_args()
    if args.fetch:
        print(fetch_kernel())
        return
    if not args.command:
        parser.error("a command to run in the guest")
    rc, output = run(args.command, timeout=args.timeout, echo=lambda s: print(s, file=sys.stderr))
    sys.stdout.write(output)
    sys.exit(rc)


if __name__ == "__main__":
    main()
