#!/usr/bin/env bash
# Provisions the netsim VM (Vagrant runs it as root; tests/test_vagrant.py runs it in a
# debootstrapped Debian 12 chroot): netsim's system packages and the project from the checkout
# at /netsim, `netsim` on root's PATH, then a smoke run of the default scenario (brought up,
# checked, torn down), so that afterwards `sudo netsim up` works from any directory.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
src=/netsim

# With ip_vs loaded, install-deps.sh needs no guest kernel for IPVS mode (netsim/kernel/guest.py) and
# kube-proxy's IPVS mode runs on the VM's own kernel; load it at boot too.
if modprobe ip_vs 2>/dev/null; then
  echo ip_vs >/etc/modules-load.d/netsim.conf
fi

"$src/scripts/install-deps.sh"
ln -sf "$src/.venv/bin/netsim" /usr/local/bin/netsim

# The smoke run: the default scenario (scenarios/basic.yaml, found from any directory) under a
# name of its own, so that provisioning again leaves a `basic` cluster of the user's alone.
cluster=provision-smoke
cd /
trap 'netsim down "$cluster"' EXIT
netsim up --name "$cluster"
netsim get pods -o wide -c "$cluster"
netsim check -c "$cluster"
trap - EXIT
netsim down "$cluster"
echo "netsim is ready: sudo netsim up"
