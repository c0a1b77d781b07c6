#!/usr/bin/env bash
# Provisions one VM of the multi-machine cluster (see Vagrantfile):
#   provision.sh NODE NODE_IP STORE_IP ETCD_IP etcd|no-etcd
# installs netsim (as ../provision.sh does), runs the cluster's etcd on the VM that has it
# (on its store-network address STORE_IP), waits for that etcd, then joins this VM's node to the
# cluster with the NIC that holds NODE_IP.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
node=${1:?node name}
node_ip=${2:?node IP}
store_ip=${3:?store-network IP of this VM}
etcd_ip=${4:?etcd IP}
role=${5:-no-etcd}
src=/netsim
scenario=$src/vagrant/multi/cluster.yaml
store=etcd://$etcd_ip:2379

# The NIC that has the node's address on the cluster's LAN (eth2 on Debian's boxes).  Once
# joined it lives in the node's namespace; a second provisioning run finds the join recorded.
uplink=$(ip -o -4 addr show to "$node_ip/32" | awk '{print $2; exit}')
uplink=${uplink:-eth2}

# ---------------------------------------------------------------------------------------------
# THE command that makes this VM's node part of the multi-machine cluster: it starts
# `netsim agent` for $node, with the cluster's store in the etcd on netsim-1 and the VM's
# private NIC as the node's uplink.  Only this function knows netsim's command line for it.
# Expected to return once the agent runs in the background (as `netsim up` does).
join_cluster() {
  netsim join --store "$store" --node "$node" --uplink "$uplink" "$scenario"
}
# ---------------------------------------------------------------------------------------------

if modprobe ip_vs 2>/dev/null; then
  echo ip_vs >/etc/modules-load.d/netsim.conf
fi
"$src/scripts/install-deps.sh"
ln -sf "$src/.venv/bin/netsim" /usr/local/bin/netsim
# etcdctl, to look at the cluster's keys: etcdctl --endpoints "$store" get --prefix /netsim
dpkg-query -W -f='${Status}' etcd-client 2>/dev/null | grep -q "install ok installed" ||
  apt-get install -y -qq --no-install-recommends etcd-client >/dev/null

if [[ $role == etcd ]]; then
  # install-deps.sh keeps Debian's etcd service disabled (netsim starts private etcds for its
  # tests); here it is the cluster's store, listening on the private network.
  cat >/etc/default/etcd <<CONF
ETCD_LISTEN_CLIENT_URLS="http://$store_ip:2379,http://127.0.0.1:2379"
ETCD_ADVERTISE_CLIENT_URLS="http://$store_ip:2379"
CONF
  systemctl enable etcd.service >/dev/null 2>&1
  systemctl restart etcd.service
fi

# The VMs come up in parallel under libvirt: wait for netsim-1's etcd (10 minutes at most).
etcd_healthy() {
  "$src/.venv/bin/python" -c "import urllib.request as u; u.urlopen('http://$etcd_ip:2379/health', timeout=2)" \
    2>/dev/null
}
for _ in $(seq 150); do
  etcd_healthy && break
  sleep 2
done
etcd_healthy || { echo "error: no etcd answers at http://$etcd_ip:2379 (netsim-1 runs it)" >&2; exit 1; }

join_cluster
echo "$node joined the cluster in $store (uplink $uplink):"
netsim get nodes -o wide || true
