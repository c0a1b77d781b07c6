#!/usr/bin/env bash
# Brings up the basic scenario, shows it working with real packets, and tears it down.
set -euo pipefail
cd "$(dirname "$0")/.."
netsim=.venv/bin/netsim
cluster=basic

trap '$netsim down $cluster' EXIT
$netsim up scenarios/basic.yaml
# kubectl through the context `up` wrote (netsim-basic); without kubectl, netsim's own verbs.
if command -v kubectl >/dev/null; then
  kubectl="kubectl --context netsim-$cluster"
else
  echo "(kubectl is not installed: netsim's own get/apply/delete stand in for it)"
  kubectl="$netsim"
  export NETSIM_CLUSTER=$cluster
fi
echo
echo "== nodes (each one a network namespace on the underlay LAN), through kubectl and netsim's API server"
$kubectl get nodes -o wide
echo
echo "== worker1's routing table: the underlay gateway is its default route"
$netsim exec node/worker1 -c $cluster -- ip route
echo
echo "== the external host 'client' pings every node over the underlay"
for ip in $($kubectl get nodes -o json |
            .venv/bin/python -c 'import json,sys; print(*(i["status"]["addresses"][0]["address"] for i in json.load(sys.stdin)["items"]))'); do
  $netsim exec host/client -c $cluster -- ping -c 1 -W 2 "$ip" | grep -E "bytes from|100% packet loss"
done
echo
echo "== pods from scenarios/manifests/web.yaml: a Deployment of 3 spread over the workers, and 'client', a busybox pod (label app=busybox)"
$kubectl get pods -o wide
$kubectl get deployments
$kubectl get services
$kubectl get endpointslices
echo
echo "== every containerPort is served by a responder that names the pod and the client it saw"
# (a web pod on another node than the client: the connection crosses the VXLAN overlay)
read -r node web ip < <($kubectl get pods -o json | .venv/bin/python -c '
import json, sys
pods = json.load(sys.stdin)["items"]
node = next(p["spec"]["nodeName"] for p in pods if p["metadata"]["name"] == "client")
web = next(p for p in pods if p["metadata"]["name"].startswith("web-") and p["spec"]["nodeName"] != node)
print(web["spec"]["nodeName"], web["metadata"]["name"], web["status"]["podIP"])')
$netsim probe pod/default/client "pod/default/$web" -c $cluster
$netsim exec "node/$node" -c $cluster -- curl -s "http://$ip/"
echo
echo "== the overlay: flannel.1 on $node, with a permanent fdb entry and route per other node"
$netsim exec "node/$node" -c $cluster -- ip -d link show flannel.1 | grep -o 'vxlan id [0-9]* .*dstport [0-9]*'
$netsim exec "node/$node" -c $cluster -- bridge fdb show dev flannel.1
$netsim exec "node/$node" -c $cluster -- ip route show dev flannel.1
echo
echo "== Services through kube-proxy: the ClusterIP from a pod, the NodePort from the external host"
$netsim probe pod/default/client svc/default/web -c $cluster
$netsim probe host/client "ip:$($kubectl get node worker1 -o json | .venv/bin/python -c \
  'import json,sys; print(json.load(sys.stdin)["status"]["addresses"][0]["address"])')" --port 30080 -c $cluster
echo "-- worker1's kube-proxy rules, hashed chains mapped back to Services and endpoints"
$netsim proxy rules worker1 -c $cluster
echo
echo "== the scenario's expectations, checked with real connections (netsim check)"
$netsim check -c $cluster | tail -1
echo
echo "== cluster DNS: kube-dns at 10.96.0.10, the pod's resolv.conf, a Service found by its short name"
$netsim exec pod/default/client -c $cluster -- cat /etc/resolv.conf
$netsim exec pod/default/client -c $cluster -- dig +short +search web
$netsim probe pod/default/client web -c $cluster
echo
echo "== NetworkPolicy: deny all ingress to the web pods, then let only the client in on port 80"
# netsim apply, not kubectl apply: it returns once every node's agent has written the rules, so
# the probe right after meets them.
printf '%s\n' 'apiVersion: networking.k8s.io/v1' 'kind: NetworkPolicy' 'metadata: {name: web-deny-all}' \
  'spec: {podSelector: {matchLabels: {app: web}}, policyTypes: [Ingress]}' | $netsim apply -f - -c $cluster
# The probe's explanation of the drop must agree with `policy explain`: both name web-deny-all.
dropped=$($netsim probe pod/default/client svc/default/web --timeout 1 -c $cluster || true)
echo "$dropped"
explained=$($netsim policy explain pod/default/client svc/default/web -c $cluster || true)
echo "$explained" | head -4
for said in "$dropped" "$explained"; do
  if [[ $said != *default/web-deny-all* || $said == *"allow it"* ]]; then
    echo "demo: the drop is not explained by default/web-deny-all: $said" >&2
    exit 1
  fi
done
printf '%s\n' 'apiVersion: networking.k8s.io/v1' 'kind: NetworkPolicy' 'metadata: {name: web-from-client}' \
  'spec: {podSelector: {matchLabels: {app: web}}, ingress: [{from: [{podSelector: {matchLabels: {app: busybox}}}], ports: [{port: 80}]}]}' \
  | $netsim apply -f - -c $cluster
$kubectl get netpol
$netsim probe pod/default/client svc/default/web -c $cluster
$netsim delete networkpolicy --all -c $cluster >/dev/null
echo
echo "== each pod's network came from CNI plugins (spec 1.1), run by the agent as a container runtime runs them"
state=${NETSIM_STATE_DIR:-/run/netsim}/$cluster/nodes/$node
echo "-- $node's conflist: flannel (delegating to bridge + host-local), then portmap, as kube-flannel installs it; then netsim-policy, the gate that keeps a pod closed until its NetworkPolicy rules are written"
.venv/bin/python -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c["name"], [p["type"] for p in c["plugins"]])' \
  "$state/cni/net.d/10-flannel.conflist"
echo "-- host-local's allocations there (file per IP: container ID, interface)"
for f in "$state"/cni/networks/cbr0/[0-9]*; do printf '%s  %s\n' "$(basename "$f")" "$(tr '\r\n' '  ' <"$f")"; done
echo "-- to run the same plugins by hand, like cnitool: netsim cni add|del|check|status|gc NET NETNS (CNI_PATH: $($netsim cni path))"
echo
echo "== scale the Deployment to 5 and back: the controllers and the node agents follow"
if [[ $kubectl == kubectl* ]]; then
  $kubectl scale deployment web --replicas=5
  $kubectl rollout status deployment web --timeout=60s
  $kubectl get deployments
  $kubectl scale deployment web --replicas=3
  $kubectl rollout status deployment web --timeout=60s
else
  sed 's/replicas: 3/replicas: 5/' scenarios/manifests/web.yaml | $netsim apply -f - -c $cluster
  $netsim get deployments -c $cluster
  $netsim apply -f scenarios/manifests/web.yaml -c $cluster
fi
$kubectl get deployments
echo
echo "== what it is made of: namespaces named nsim.$cluster.* (the host's own links, routes and rules are untouched)"
ip netns list | grep "^nsim\.$cluster\." || true
