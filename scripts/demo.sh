#!/usr/bin/env bash
# Brings up the basic scenario, shows it working with real packets, and tears it down.
set -euo pipefail
cd "$(dirname "$0")/.."
netsim=.venv/bin/netsim
cluster=basic

trap '$netsim down $cluster' EXIT
$netsim up scenarios/basic.yaml
echo
echo "== nodes (each one a network namespace on the underlay LAN)"
$netsim get nodes -o wide -c $cluster
echo
echo "== worker1's routing table: the underlay gateway is its default route"
$netsim exec node/worker1 -c $cluster -- ip route
echo
echo "== the external host 'client' pings every node over the underlay"
for ip in $($netsim get nodes -o json -c $cluster |
            .venv/bin/python -c 'import json,sys; print(*(i["status"]["addresses"][0]["address"] for i in json.load(sys.stdin)["items"]))'); do
  $netsim exec host/client -c $cluster -- ping -c 1 -W 2 "$ip" | grep -E "bytes from|100% packet loss"
done
echo
echo "== what it is made of: namespaces named nsim.$cluster.* (the host's own links, routes and rules are untouched)"
ip netns list | grep "^nsim\.$cluster\." || true
