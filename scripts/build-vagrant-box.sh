#!/usr/bin/env bash
# Builds a Debian 12 libvirt box for vagrant/'s Vagrantfiles, from Debian's packages only, on a
# machine that cannot (or would rather not) download debian/bookworm64 from Vagrant Cloud:
#
#   scripts/build-vagrant-box.sh [--no-netsim-packages] [OUTDIR]     # as root
#   vagrant box add --name debian/bookworm64 OUTDIR/debian-bookworm64-libvirt.box
#
# The root is debootstrapped with a kernel, systemd, sshd, sudo, rsync and DHCP on eth0 (ifupdown,
# as Debian's own boxes), the `vagrant` user with Vagrant's well-known insecure key and
# passwordless sudo, and this machine's local CA certificates (so apt and pip in the VM trust
# what this machine trusts).  Unless --no-netsim-packages, netsim's apt packages are installed
# too, with their services disabled, so that provisioning does not spend minutes in dpkg under
# software emulation.  The disk is a 20 GiB qcow2 with one ext4 partition booted by extlinux.
#
# OUTDIR (default /var/cache/netsim/vagrant) keeps the box and a stamp of what it was built
# from; run again with the same inputs, the script reuses it and says so.  Mounts happen in a
# private mount namespace, so nothing stays mounted when the script ends, however it ends.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
with_netsim=1
if [[ ${1:-} == --no-netsim-packages ]]; then with_netsim=0; shift; fi
out=${1:-/var/cache/netsim/vagrant}
box=$out/debian-bookworm64-libvirt.box
size_gib=20
insecure_key=$(find /usr/share/rubygems-integration/all/gems /opt/vagrant/embedded/gems/gems -path '*/vagrant-*/keys/vagrant.pub' 2>/dev/null | head -1 || true)

[[ $(id -u) == 0 ]] || { echo "error: run as root (debootstrap, chroot, loop mounts)" >&2; exit 1; }
for tool in debootstrap sfdisk mkfs.ext4 extlinux qemu-img unshare; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing: scripts/install-deps.sh --vm installs it" >&2; exit 1; }
done
mbr=/usr/lib/syslinux/mbr/mbr.bin
[[ -f $mbr ]] || { echo "error: $mbr is missing (package syslinux-common)" >&2; exit 1; }
[[ -n $insecure_key ]] || { echo "error: Vagrant's insecure public key not found (package vagrant)" >&2; exit 1; }

base_packages=(linux-image-amd64 openssh-server sudo rsync ifupdown isc-dhcp-client ca-certificates)
netsim_packages=()
if ((with_netsim)); then
  mapfile -t netsim_packages < <("$here/install-deps.sh" --print-apt-packages)
  netsim_packages+=(etcd-client)  # vagrant/multi/provision.sh's, to look at the cluster's keys
fi
local_cas=(/usr/local/share/ca-certificates/*.crt)
[[ -e ${local_cas[0]} ]] || local_cas=()

stamp=$( { cat "$0"; printf '%s\n' "$mirror" "${base_packages[@]}" "${netsim_packages[@]}"; cat "$insecure_key" "${local_cas[@]}"; } | sha256sum | cut -c1-16)
if [[ -f $box && $(cat "$box.stamp" 2>/dev/null) == "$stamp" ]]; then
  echo "box: reused $box"
  exit 0
fi

mkdir -p "$out"
work=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf --one-file-system "$work"' EXIT
root=$work/root
started=$SECONDS

debootstrap --include="$(IFS=,; echo "${base_packages[*]}")" bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
echo "box: debootstrap $((SECONDS - started)) s"

# The guest's files.
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
echo netsim-box >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tnetsim-box\n' >"$root/etc/hosts"
cat >"$root/etc/network/interfaces" <<EOF
auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet dhcp
EOF
uuid=$(cat /proc/sys/kernel/random/uuid)
echo "UUID=$uuid / ext4 errors=remount-ro 0 1" >"$root/etc/fstab"
# Each VM makes its own machine-id at first boot (DHCP and journald key on it).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo 'UseDNS no' >"$root/etc/ssh/sshd_config.d/vagrant.conf"
for ca in "${local_cas[@]}"; do cp "$ca" "$root/usr/local/share/ca-certificates/"; done
# pip trusts its own certifi bundle unless told otherwise; the system bundle has the local CAs.
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
install -d -m 700 "$root/home/vagrant-skel-ssh"
cp "$insecure_key" "$root/home/vagrant-skel-ssh/authorized_keys"

# Runs in the chroot, with /proc, /sys and /dev mounted in the private namespace.
inner=$(cat <<'EOF'
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
useradd -m -s /bin/bash -G sudo vagrant
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >/etc/sudoers.d/vagrant
chmod 440 /etc/sudoers.d/vagrant
mv /home/vagrant-skel-ssh /home/vagrant/.ssh
chown -R vagrant:vagrant /home/vagrant/.ssh
chmod 600 /home/vagrant/.ssh/authorized_keys
update-ca-certificates >/dev/null
if (($#)); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
fi
# netsim starts its own etcd, nginx and BIRD where it needs them; the system services never run.
for unit in etcd nginx bird bird6; do
  systemctl disable "$unit.service" >/dev/null 2>&1 || true
done
systemctl mask nginx.service bird.service bird6.service >/dev/null 2>&1 || true
apt-get clean
rm -f /usr/sbin/policy-rc.d
EOF
)
# shellcheck disable=SC2016  # expanded by the inner shell
unshare --mount --pid --fork --kill-child --propagation private -- /bin/bash -c '
  set -e
  root=$1; shift
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  mount --rbind /dev "$root/dev"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 /bin/bash -c "$0" "$@"
' "$inner" "$root" "${netsim_packages[@]}"
echo "box: packages $((SECONDS - started)) s"

kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -1)
initrd=initrd.img-${kernel#vmlinuz-}
[[ -f $root/boot/$initrd ]] || { echo "error: no $initrd in the root" >&2; exit 1; }

# The disk: an MBR with one bootable partition from 1 MiB, ext4 without 64bit (extlinux reads
# it), the root copied in through a loop mount at the partition's offset (no partition device
# nodes needed: `losetup -P` makes none in a container), extlinux in /boot/extlinux.
raw=$work/disk.raw
truncate -s "${size_gib}G" "$raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$raw"
offset=$((2048 * 512))
fs_kib=$(((size_gib * 1024 * 1024) - 1024))
mkfs.ext4 -q -F -O ^64bit -L root -U "$uuid" -E offset=$offset "$raw" "${fs_kib}k"
cat >"$work/extlinux.conf" <<EOF
DEFAULT debian
TIMEOUT 1
PROMPT 0
LABEL debian
  LINUX /boot/$kernel
  INITRD /boot/$initrd
  APPEND root=UUID=$uuid ro net.ifnames=0 biosdevname=0 console=tty0 console=ttyS0,115200n8 quiet
EOF
# shellcheck disable=SC2016  # expanded by the inner shell
unshare --mount --propagation private -- /bin/bash -c '
  set -e
  raw=$1 offset=$2 root=$3 work=$4
  mkdir -p "$work/mnt"
  mount -o loop,offset="$offset" "$raw" "$work/mnt"
  cp -a "$root/." "$work/mnt/"
  mkdir -p "$work/mnt/boot/extlinux"
  cp "$work/extlinux.conf" "$work/mnt/boot/extlinux/extlinux.conf"
  extlinux --install "$work/mnt/boot/extlinux" >/dev/null 2>&1
  umount "$work/mnt"
' _ "$raw" "$offset" "$root" "$work"
dd if="$mbr" of="$raw" bs=440 count=1 conv=notrunc status=none
qemu-img convert -O qcow2 "$raw" "$work/box.img"
rm -f "$raw"

cat >"$work/metadata.json" <<EOF
{"provider": "libvirt", "format": "qcow2", "virtual_size": $size_gib}
EOF
cat >"$work/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.disk_bus = "virtio"
  end
end
EOF
tar -C "$work" -cf "$box.tmp" metadata.json Vagrantfile box.img
mv "$box.tmp" "$box"
echo "$stamp" >"$box.stamp"
echo "box: built $box ($(du -h "$box" | cut -f1)) in $((SECONDS - started)) s"
