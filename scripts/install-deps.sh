#!/usr/bin/env bash
# Installs what netsim needs on a Debian/Ubuntu machine: kernel tools and etcd from apt, the
# project into .venv.  Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# containernetworking-plugins: the reference CNI plugins the differential tests and the CNI
# bench compare against; podman + runc + busybox-static: a real CNI runtime calling ours.
# ipvsadm + kmod + qemu-system-x86: kube-proxy's IPVS mode, tested in a qemu guest
# (netsim/kernel/guest.py) when the host kernel has no ip_vs; dnsutils: dig and nslookup, which the
# cluster DNS tests run in pods; graphviz: the `dot` program that renders `netsim graph -o x.svg|x.png`.
# vagrant + shellcheck + debootstrap: tests/test_vagrant.py validates vagrant/'s Vagrantfiles, lints
# the shell scripts and runs vagrant/provision.sh in a debootstrapped Debian 12 chroot.
# nginx: the ingress-nginx add-on runs Debian's real nginx in each controller pod's namespace
# (netsim/node/ingress/controller.py); the system service it brings must never run on the host.
# bird: Calico mode runs Debian's BIRD 1.6.8 (Calico's confd configs are BIRD 1 syntax; bird2 rejects
# them) in each node's namespace (netsim/node/calico/bird.py); its system service must never run either.
apt_packages=(iproute2 iptables nftables ipset conntrack tcpdump iperf3 iputils-ping procps python3 python3-venv make
              etcd-server containernetworking-plugins podman runc busybox-static gcc libc6-dev
              ipvsadm kmod qemu-system-x86 dnsutils graphviz vagrant shellcheck debootstrap nginx bird)
# --vm: also what `make test-vagrant` needs to boot vagrant/'s VMs here (tests/vm/test_vagrant_vm.py):
# the vagrant-libvirt plugin, libvirt's daemons and dnsmasq, qemu-img, and what
# scripts/build-vagrant-box.sh makes a bootable disk with (sfdisk, extlinux and its MBR).
vm_packages=(vagrant-libvirt libvirt-daemon-system dnsmasq-base qemu-utils fdisk extlinux syslinux-common)
case ${1:-} in
  --print-apt-packages) printf '%s\n' "${apt_packages[@]}"; exit 0 ;;
  --vm) apt_packages+=("${vm_packages[@]}") ;;
  "") ;;
  *) echo "usage: $0 [--vm | --print-apt-packages]" >&2; exit 2 ;;
esac
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  # etcd-server's postinst starts a system etcd on 2379, nginx's a web server on :80 and bird's a
  # BGP daemon on 179, and all enable themselves at boot.  netsim starts its own etcds on free ports
  # when it needs one (netsim/api/store/etcd_server.py), its nginx only inside pod namespaces and its
  # BIRDs only inside node namespaces, so forbid service starts during the install (policy-rc.d
  # exit 101; Docker images already have one) ...
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # ... and keep them from starting at the next boot, and stop them should a policy have let them start.
  for service in etcd nginx bird bird6; do
    pkg=$service; [[ $service == etcd ]] && pkg=etcd-server; [[ $service == bird6 ]] && pkg=bird
    [[ " ${missing[*]} " == *" $pkg "* ]] || continue
    if [[ -d /run/systemd/system ]]; then
      systemctl disable --now "$service.service" >/dev/null 2>&1 || true
      [[ $service == etcd ]] || { systemctl mask "$service.service" >/dev/null 2>&1 || true; }
    else
      update-rc.d "$service" disable >/dev/null 2>&1 || true
      "/etc/init.d/$service" stop >/dev/null 2>&1 || true
    fi
  done
  # libvirt's daemons (and, through them, its `default` network's bridge, dnsmasq and firewall
  # rules) run only while the VM test runs: it starts them and stops them (tests/vm/libvirt.py).
  if [[ " ${missing[*]} " == *" libvirt-daemon-system "* ]]; then
    units=(libvirtd.service libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket libvirt-guests.service
           virtlogd.service virtlogd.socket virtlogd-admin.socket virtlockd.service virtlockd.socket
           virtlockd-admin.socket)
    if [[ -d /run/systemd/system ]]; then
      systemctl disable --now "${units[@]}" >/dev/null 2>&1 || true
    else
      for service in libvirtd libvirt-guests virtlogd virtlockd; do
        update-rc.d "$service" disable >/dev/null 2>&1 || true
      done
    fi
  fi
fi

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
stamp=.venv/.installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
# The CNI plugins' compiled launcher (netsim/cni/shim.c): runtimes exec a plugin per pod, and
# a C launcher that hands the call to the node agent starts in ~1 ms where Python needs ~8.
missing_plugin=0
for launcher in cni_plugins/*; do
  [[ -f $launcher && $launcher != *.c && ! -x cni_plugins/bin/$(basename "$launcher") ]] && missing_plugin=1
done
if ((missing_plugin)) || [[ netsim/cni/shim.c -nt cni_plugins/bin/bridge ]]; then
  .venv/bin/netsim cni install cni_plugins/bin >/dev/null
fi
# The guest's kernel: Debian's linux-image, downloaded and unpacked under
# /var/cache/netsim/guest (never installed on this machine).
if [[ ! -f /proc/net/ip_vs ]]; then
  .venv/bin/python -m netsim.kernel.guest --fetch >/dev/null
fi
