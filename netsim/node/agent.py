"""The node agent (netsim's kubelet): registers its nodes, realises the pods bound to them and
writes their status back.  With ``controllers=True`` the same process also runs the
controller manager and scheduler (the single-machine default that `netsim up` starts).

Every reconciler here is level-triggered: a sync compares the pods the store binds to this
machine's nodes with the sandboxes the checkpoints and the kernel hold, and fixes the
difference, so a restart (also after kill -9) converges to the same kernel state.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import signal
import threading
import time
from pathlib import Path

from netsim import controllers, kernel
from netsim.api import events
from netsim.api.informer import Cache, Loop
from netsim.api.registry import new_object, now, read_config
from netsim.api.store import AlreadyExists, Conflict, NotFound, Store, open_store
from netsim.cni.server import ServerPool
from netsim.model import calico, cnimode, k8s, names, state
from netsim.model.state import Member
from netsim.node import dns, flanneld, podlog, policy
from netsim.node.ingress import kinds
from netsim.node.ingress.controller import Proxies, listen_ports
from netsim.node.podnet import NodePods, port_mappings, server_socket, write_file
from netsim.node.responder import Identity, Responders
from proxy import kubeproxy

log = logging.getLogger("netsim.node.agent")

READY_ANNOTATION = "netsim.io/ready"
CALICO_ANNOTATIONS = "projectcalico.org/"
JOB_RUN_S = 1.0


def node_object(member: Member, has_workers: bool) -> dict:
    labels = {"kubernetes.io/hostname": member.name, "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", **member.labels}
    taints = []
    if member.role == "control-plane":
        labels["node-role.kubernetes.io/control-plane"] = ""
        if has_workers:
            # As kubeadm and kind do; a single-node cluster keeps its control plane schedulable.
            taints.append({"key": controllers.CONTROL_PLANE_TAINT, "effect": "NoSchedule"})
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": member.name, "labels": labels,
                     "annotations": {"netsim.io/netns": member.netns}},
        "spec": {"taints": taints} if taints else {},
        "status": {
            "addresses": [{"type": "InternalIP", "address": member.ip},
                          {"type": "Hostname", "address": member.name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "netsim agent is posting ready status", "lastTransitionTime": now()}],
        },
    }


def register_nodes(store: Store, members: list[Member], has_workers: bool) -> None:
    """Create or refresh the Node objects of this machine's nodes, keeping what controllers
    set (spec.podCIDR)."""
    for m in members:
        want = node_object(m, has_workers)
        k = k8s.key("Node", None, m.name)
        for _ in range(5):
            try:
                have = store.get(k)
            except NotFound:
                try:
                    store.create(k, new_object(want))
                    break
                except AlreadyExists:
                    continue
            spec = {**have.get("spec", {}), **want["spec"]}
            if not want["spec"]:
                spec.pop("taints", None)
            # calico/node's annotations (projectcalico.org/*) are its own, not the kubelet's.
            kept = {k: v for k, v in (have["metadata"].get("annotations") or {}).items()
                    if k.startswith(CALICO_ANNOTATIONS)}
            merged = {**have, "metadata": {**have["metadata"], "labels": want["metadata"]["labels"],
                                           "annotations": {**kept, **want["metadata"]["annotations"]}},
                      "spec": spec, "status": want["status"]}
            try:
                store.update(k, merged, int(have["metadata"]["resourceVersion"]))
                break
            except (Conflict, NotFound):
                continue


def _set_pod_cidr(store: Store, node_name: str, cidr: str) -> None:
    k = k8s.key("Node", None, node_name)
    for _ in range(10):
        node = store.get(k)
        spec = node.get("spec", {})
        if spec.get("podCIDR") == cidr and spec.get("podCIDRs") == [cidr]:
            return
        try:
            store.update(k, {**node, "spec": {**spec, "podCIDR": cidr, "podCIDRs": [cidr]}},
                         int(node["metadata"]["resourceVersion"]))
            return
        except Conflict:
            continue
    raise RuntimeError(f"could not set spec.podCIDR of node {node_name}")


def _is_job_pod(pod: dict) -> bool:
    return (controllers.controller_of(pod) or {}).get("kind") == "Job"


def _ports(pod: dict) -> list[int]:
    return [p["containerPort"] for c in pod["spec"].get("containers", []) for p in c.get("ports", [])]


class Agent:
    def __init__(self, cluster: str, store_url: str, node_names: list[str] | None = None,
                 run_controllers: bool = True):
        st = state.read_state(cluster)
        if st is None:
            raise RuntimeError(f"cluster {cluster!r} has no state on this machine; run `netsim up` first")
        self.cluster = cluster
        self.store_url = store_url
        self.has_workers = any(role != "control-plane" for role in st.cluster_roles())
        self.members = [m for m in st.nodes() if node_names is None or m.name in node_names]
        if node_names is not None and len(self.members) != len(node_names):
            unknown = set(node_names) - {m.name for m in self.members}
            raise RuntimeError(f"no such node(s) in cluster {cluster!r}: {', '.join(sorted(unknown))}")
        self.run_controllers = run_controllers
        self.stop = threading.Event()
        mtu = st.underlay.mtu
        base = state.cluster_dir(cluster) / "nodes"
        self.socket_path = server_socket(state.cluster_dir(cluster),
                                         names.component_name(names.AGENT, (m.name for m in self.members)))
        self.nodes = {m.name: NodePods(cluster, m.name, m.netns, Path(base / m.name), mtu, self.socket_path)
                      for m in self.members}
        self.node_ip = {m.name: m.ip for m in self.members}
        self.underlay = st.underlay
        self.flannel: flanneld.Flanneld | None = None
        self.felix = None  # netsim.node.calico.felix.Felix in a calico cluster
        self.birds = None  # netsim.node.calico.bird.Birds when the cluster's Calico runs BGP
        self._kubeconfig_written: str | None = None
        self.responders: Responders | None = None
        # L7 proxy pods (ingress-nginx controllers, Gateway proxies): nginx in their namespaces.
        self.proxies = Proxies(cluster, list(kinds.ALL))
        self.running_since: dict[str, float] = {}
        self.logs: dict[str, Path] = {}  # pod key -> its log (netsim.node.podlog), removed with the pod
        self.enforcers: dict[str, policy.Enforcer] = {}
        self.enforce_policy = True  # NetworkPolicy: set from the cluster's CNI in run() (netsim.model.cnimode)

    @property
    def name(self) -> str:
        return names.component_name(names.AGENT, self.nodes)

    def run(self) -> None:
        store = open_store(self.store_url)
        register_nodes(store, self.members, self.has_workers)
        self.config = read_config(store)
        self.cluster_cidr = self.config.pod_subnet
        self.enforce_policy = cnimode.enforces_policy(self.config.cni)
        for node in self.nodes.values():
            node.cni = self.config.cni
        self.calico = self.config.cni == "calico"
        if self.calico:
            self._start_calico(store)
        else:
            self._start_flannel(store)
        self.responders = Responders()
        server = ServerPool(self.socket_path).start()
        threads = []
        url = self.store_url
        recorders = [events.Recorder(lambda: open_store(url), "kubelet")]
        if self.run_controllers:
            recorders.append(events.Recorder(lambda: open_store(url), "kube-controller-manager", collect=True))
            loop = Loop(open_store(self.store_url), names.CONTROLLER_MANAGER, controllers.sync, self.stop,
                        recorder=recorders[-1])
            threads.append(threading.Thread(target=loop.run, name="controllers", daemon=True))
        loop = Loop(store, self.name, self.sync, self.stop, recorder=recorders[0])
        threads.append(threading.Thread(target=loop.run, name="pods", daemon=True))
        if self.calico:
            threads.append(threading.Thread(target=self.felix.run, name="felix", daemon=True))
            if self.birds is not None:
                loop = Loop(open_store(self.store_url), names.component_name("bird", self.nodes), self.birds.sync,
                            self.stop)
                threads.append(threading.Thread(target=loop.run, name="bird", daemon=True))
        else:
            threads.append(threading.Thread(target=self.flannel.run, name="flannel", daemon=True))
        loop = Loop(open_store(self.store_url), names.component_name(names.DNS, self.nodes), self.dns_sync, self.stop)
        threads.append(threading.Thread(target=loop.run, name="dns", daemon=True))
        proxy = self._kube_proxy(store)
        loop = Loop(open_store(self.store_url), names.component_name(names.KUBE_PROXY, self.nodes), proxy.sync,
                    self.stop, resync_s=kubeproxy.RESYNC_S)
        threads.append(threading.Thread(target=loop.run, name="kube-proxy", daemon=True))
        for t in threads:
            t.start()
        log.info("agent for %s started (store %s, controllers %s)", ", ".join(self.nodes), self.store_url,
                 self.run_controllers)
        try:
            while not self.stop.wait(0.5):
                if server.check():
                    log.error("a CNI plugin server process died; started a new one")
                if self.birds is not None:
                    self.birds.check()
                if not all(t.is_alive() for t in threads):
                    log.error("a reconciler thread died; exiting so the agent is restarted")
                    break
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=5)
            self.proxies.close()
            self.responders.close()
            # BIRDs outlive the agent (a restarted one adopts them without a session flap);
            # `down` ends them (netsim.fabric.lifecycle).
            server.stop()
            for r in recorders:
                r.close()

    # -- flannel -------------------------------------------------------------------------
    def _start_flannel(self, store: Store) -> None:
        """Leases first (each node's spec.podCIDR shows its lease, as with flannel's kube
        subnet manager), then one converge of the overlay before pods are wired, so a pod
        that is Running reaches pods on other nodes."""
        local = [flanneld.LocalNode(m.name, m.netns, m.ip, prefixlen=ipaddress.IPv4Network(m.subnet).prefixlen)
                 for m in self.members]
        self.flannel = flanneld.Flanneld(open_store(self.store_url), local, self.underlay.subnet,
                                         self.underlay.mtu, self.stop)
        for node_name, subnet in self.flannel.acquire_all().items():
            _set_pod_cidr(store, node_name, str(subnet))
        try:
            self.flannel.converge()
        except Exception:
            log.exception("flannel: first converge failed; its loop retries")

    # -- calico ---------------------------------------------------------------------------
    def _start_calico(self, store: Store) -> None:
        """calico/node's part: its startup (the Node's BGP address, tunnel addresses), Felix's
        first converge before pods are wired, and one BIRD per node unless the pool is VXLAN-only
        (upstream's calico_backend "vxlan" runs no BGP)."""
        from netsim.node.calico import bird, felix

        local = [felix.LocalNode(m.name, m.netns, m.ip, ipaddress.IPv4Network(m.subnet).prefixlen)
                 for m in self.members]
        pools = [felix.Pool.from_object(o) for o in store.list(k8s.prefix("IPPool"))[0]]
        if felix.bird_runs(pools):
            self.birds = bird.Birds(self.cluster, self.stop, {m.name: m.netns for m in self.members})
        felix.startup(store, local)
        self.felix = felix.Felix(open_store(self.store_url), local, self.underlay.mtu, self.stop,
                                 bird=self.birds is not None)
        try:
            self.felix.converge()
        except Exception:
            log.exception("felix: first converge failed; its loop retries")

    def _calico_kubeconfig(self, cache: Cache) -> bool:
        """Write the plugins' kubeconfig from the Secret the control plane published (as
        calico/node's install-cni does on every node); whether the file is there."""
        secret = cache.get("Secret", "kube-system", calico.KUBECONFIG_SECRET)
        path = calico.kubeconfig_path(self.cluster)
        if secret is None:
            return path.exists()
        text = base64.b64decode((secret.get("data") or {}).get("kubeconfig", "")).decode()
        if self._kubeconfig_written != text:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_file(path, text, 0o600)  # root's only: it holds a client key
            self._kubeconfig_written = text
        return True

    def pod_mtu(self, cache: Cache, node: NodePods) -> int:
        """What new pods get: flannel's subnet.env MTU, or Felix's (the pool's encapsulation)."""
        if self.calico:
            pool = cache.get("IPPool", None, calico.DEFAULT_POOL) or {}
            return calico.pod_mtu(pool.get("spec") or {}, self.underlay.mtu)
        return self.flannel.mtu() if self.flannel and self.flannel.config else node.mtu

    def _kube_proxy(self, store: Store) -> kubeproxy.KubeProxy:
        config = read_config(store)
        nodes = [kubeproxy.ProxyNode(m.name, m.netns, m.ip) for m in self.members]
        # The agent that runs the controllers is the one with the underlay on its machine: it
        # routes LoadBalancer IPs there, as MetalLB's speaker announces them.  A joined
        # machine's underlay is a real LAN, which netsim does not route.
        underlay = names.netns_name(self.cluster, names.UNDERLAY_MEMBER) \
            if self.run_controllers and self.underlay.netns else None
        return kubeproxy.KubeProxy(nodes, config.pod_subnet, config.proxy_mode, underlay, self.underlay.subnet,
                                   ipvs_scheduler=config.ipvs_scheduler)

    # -- the pod reconciler --------------------------------------------------------------
    def sync(self, cache: Cache) -> float | None:
        retry: float | None = None
        self.proxies.begin(cache.of_kind)
        for node_name, pods_here in self.nodes.items():
            r = self._sync_node(cache, node_name, pods_here)
            if r is not None:
                retry = r if retry is None else min(retry, r)
        here = {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in cache.of_kind("Pod")
                if p["spec"].get("nodeName") in self.nodes}
        for k in set(self.running_since) - here:
            del self.running_since[k]
        for k in set(self.logs) - here:
            podlog.remove(self.logs.pop(k))
        for k in set(self.proxies.pods) - here:
            self.proxies.remove(k)
        return retry

    def _sync_node(self, cache: Cache, node_name: str, node: NodePods) -> float | None:
        mtu = self.pod_mtu(cache, node)
        if self.calico:
            if not self._calico_kubeconfig(cache):
                return 0.5  # the control plane has not published it yet
            if node.netlist is None or node.mtu != mtu:
                node.mtu = mtu
                node.ensure_calico_network(str(calico.kubeconfig_path(self.cluster)))
        else:
            node_obj = cache.get("Node", None, node_name)
            cidr = (node_obj or {}).get("spec", {}).get("podCIDR")
            if not cidr:
                return 0.2  # the node IPAM controller has not given this node a range yet
            if node.pod_cidr is None or str(node.pod_cidr) != cidr or node.mtu != mtu:
                node.mtu = mtu  # subnet.env's FLANNEL_MTU: what new pods get
                node.ensure_network(cidr, self.cluster_cidr)
        bound = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in cache.of_kind("Pod")
                 if p["spec"].get("nodeName") == node_name}
        retry = None
        want: dict[str, dict] = {}
        for k, p in bound.items():
            if p["spec"].get("hostNetwork"):
                continue
            if controllers.terminating(p) or controllers.pod_phase(p) in ("Succeeded", "Failed"):
                continue
            want[k] = p
        links = node.node_links()
        stale = [k for k, sb in node.sandboxes.items()
                 if k not in want or want[k]["metadata"]["uid"] != sb.uid or not node.intact(sb, links)]
        for k in stale:
            self.responders.remove(k)
            self.proxies.remove(k)
        node.remove(stale)
        node.collect_garbage()
        missing = [k for k in want if k not in node.sandboxes]
        node.add([(k, want[k]["metadata"]["uid"], *k.split("/", 1), port_mappings(want[k])) for k in missing])
        if any(k not in node.sandboxes for k in missing):
            retry = 1.0  # a failed ADD is retried, as the kubelet retries sandbox creation
        # NetworkPolicy before any new pod reports Running: its rules exist by then.
        self._enforce_policy(cache, node_name, node, bound)
        for k, p in bound.items():
            if controllers.terminating(p):
                self.responders.remove(k)
                self.proxies.remove(k)
                if cache.delete(p):
                    log.info("pod %s deleted", k)
                    for c in p["spec"].get("containers", []):
                        cache.recorder.event(p, events.NORMAL, "Killing", f"Stopping container {c['name']}",
                                             field_path=f"spec.containers{{{c['name']}}}", host=node_name)
                continue
            r = self._pod_status(cache, node_name, node, k, p)
            if r is not None:
                retry = r if retry is None else min(retry, r)
        return retry

    def _enforce_policy(self, cache: Cache, node_name: str, node: NodePods, bound: dict[str, dict]) -> None:
        """The node's NetworkPolicy table (netsim.node.policy), rendered for the pods it runs;
        with a CNI that enforces none (cni: flannel), no table, and the gates open as the pods
        come up."""
        if not self.enforce_policy:
            if node_name not in self.enforcers:
                # A node that ran with policy before the cluster's CNI changed keeps no table.
                self.enforcers[node_name] = policy.Enforcer(kernel.netns_path(node.node_netns))
                self.enforcers[node_name].remove()
            node.open_gates({k for k, sb in node.sandboxes.items() if sb.ip and k in bound})
            return
        namespaces = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in cache.of_kind("Namespace")}
        pods = [info for p in cache.of_kind("Pod") if p["spec"].get("nodeName") != node_name
                and (info := policy.pod_info(p)) is not None]
        local = []
        for k, sb in node.sandboxes.items():
            p = bound.get(k)
            if p is not None:
                info = policy.pod_info({**p, "status": {**p.get("status", {}), "podIP": sb.ip, "phase": "Running"}})
                if info is not None:
                    local.append(info)
        pods += local
        # The node's own addresses (kubelet probes, hostNetwork pods): with flannel also cni0's.
        node_ips = [self.node_ip[node_name]]
        if node.pod_cidr is not None:
            node_ips.append(str(node.pod_cidr.network_address + 1))
        table = policy.render(cache.of_kind("NetworkPolicy"), pods, namespaces, local, node_ips)
        enforcer = self.enforcers.get(node_name)
        if enforcer is None:
            enforcer = self.enforcers[node_name] = policy.Enforcer(kernel.netns_path(node.node_netns))
        if enforcer.apply(table.text(node_ips)):
            log.info("policy %s: %d policies, %d isolated pods", node_name, len(cache.of_kind("NetworkPolicy")),
                     len(set(table.ingress) | set(table.egress)))
        # Only now that the kernel holds their rules: the new pods' gates (netsim.cni.gate).
        node.open_gates({info.key for info in local})

    def _resolv_conf(self, cache: Cache, netns: str, pod: dict) -> None:
        """The pod's /etc/resolv.conf (/etc/netns/<netns>/resolv.conf, which `ip netns exec`
        mounts over /etc/resolv.conf), as kubelet writes it for dnsPolicy ClusterFirst."""
        spec = pod["spec"]
        dns_policy = spec.get("dnsPolicy", "ClusterFirst")
        if dns_policy == "Default":
            return  # the node's resolver: the host's own file, nothing to write
        config = self.config
        text = dns.resolv_conf(pod["metadata"]["namespace"], dns.cluster_dns_ip(config.service_subnet),
                               config.cluster_domain, spec.get("dnsConfig"), dns_policy)
        kernel.write_netns_etc(netns, "resolv.conf", text)

    def dns_sync(self, cache: Cache) -> float | None:
        """The cluster DNS's records, rebuilt on every change of Services or EndpointSlices."""
        self.responders.dns.update(dns.build(cache.of_kind("Service"), cache.of_kind("EndpointSlice"),
                                             self.config.cluster_domain))
        return None

    def _pod_status(self, cache: Cache, node_name: str, node: NodePods, k: str, p: dict) -> float | None:
        phase = controllers.pod_phase(p)
        if phase in ("Succeeded", "Failed"):
            return None
        host_ip = self.node_ip[node_name]
        if p["spec"].get("hostNetwork"):
            netns, ip = node.node_netns, host_ip
        elif k in node.sandboxes:
            sb = node.sandboxes[k]
            netns, ip = sb.netns, sb.ip
        else:
            return 1.0  # its sandbox failed to come up; the next sync tries again
        ports = _ports(p)
        meta = p["metadata"]
        log = self.logs.get(k)
        if log is None or meta["uid"] not in log.name:
            if log is not None:
                podlog.remove(log)  # the pod was replaced by one of the same name
            log = self.logs[k] = podlog.path(self.cluster, meta["namespace"], meta["name"], meta["uid"])
        proxy = self.proxies.prepare(k, p)
        if proxy is not None:
            ports = [port for port in ports if port not in listen_ports(proxy)]  # nginx's
        failed = self.responders.ensure(k, netns, Identity(meta["name"], meta["namespace"], node_name), ports,
                                        dns_ports=[dns.DNS_PORT] if dns.is_dns_pod(p) else [], log=log)
        proxy_ready = True
        if self.proxies.claims(p) is not None:
            # Ready only once nginx answers with the pod's current configuration.
            proxy_ready = proxy is not None and self.proxies.run(k, netns, log)
        if not p["spec"].get("hostNetwork"):
            self._resolv_conf(cache, netns, p)
        retry = None
        started = self.running_since.setdefault(k, time.monotonic())
        if _is_job_pod(p) and time.monotonic() - started >= JOB_RUN_S:
            # netsim runs no container: a Job's pod "runs" for a moment, then completes and
            # gives its sandbox (and address) back, as a finished pod does.
            self.responders.remove(k)
            node.remove([k])
            phase, ready = "Succeeded", False
        else:
            phase = "Running"
            ready = p["metadata"].get("annotations", {}).get(READY_ANNOTATION, "true") != "false" and not failed \
                and proxy_ready
            if _is_job_pod(p):
                retry = JOB_RUN_S
            elif not proxy_ready or not self.proxies.settled(k):
                retry = 0.5
        status = p.get("status", {})
        cond = "True" if ready else "False"
        want = {
            "phase": phase, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": status.get("startTime") or now(),
            "conditions": [{"type": t, "status": s} for t, s in
                           (("PodScheduled", "True"), ("Initialized", "True"),
                            ("ContainersReady", cond), ("Ready", cond))],
        }
        if failed:
            want["message"] = "responder could not listen: " + "; ".join(failed)
        if any(status.get(f) != v for f, v in want.items()):
            written = cache.update({**p, "status": {**status, **want}})
            if written and phase == "Running" and status.get("phase") != "Running":
                for c in p["spec"].get("containers", []):
                    where = f"spec.containers{{{c['name']}}}"
                    for reason, message in (
                            ("Pulled", f'Container image "{c.get("image", "")}" already present on machine'),
                            ("Created", f"Created container: {c['name']}"),
                            ("Started", f"Started container {c['name']}")):
                        cache.recorder.event(p, events.NORMAL, reason, message, field_path=where, host=node_name)
        return retry


def main(cluster: str, store_url: str, nodes: list[str] | None, run_controllers: bool) -> None:
    agent = Agent(cluster, store_url, nodes, run_controllers)

    def stop(_signum, _frame):
        # Not Event.set() here: the handler runs on the main thread, which may be inside
        # stop.wait() holding the event's lock, and would deadlock on it.
        threading.Thread(target=agent.stop.set, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()
