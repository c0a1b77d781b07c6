"""Pod sandboxes on one node, networked by CNI as a container runtime does it.

The agent plays containerd's part: it makes the pod's network namespace (with ``lo`` up, as
CRI-O does itself, and the pod's gate closed: netsim.cni.gate), then runs the node's network list
(flannel delegating to bridge + host-local, then portmap, then netsim-policy where the cluster's
CNI enforces NetworkPolicy: netsim.model.cnimode) through netsim's CNI runtime, and DEL in
reverse with the cached result when the pod goes.  Plugins are exec'd from CNI_PATH like
anyone's; they hand their work to this agent's plugin server over NETSIM_CNI_SOCKET.

What a node holds is written ahead to a checkpoint before the kernel is touched, so an agent
killed half-way finds every namespace it made; DEL is idempotent, so a half-made sandbox is
simply deleted and made again.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from netsim import kernel
from netsim.cni import gate, runtime, shim
from netsim.model import cnimode, names

log = logging.getLogger("netsim.node.podnet")

BRIDGE = "cni0"
POD_IF = "eth0"
NETWORK = "cbr0"  # kube-flannel's network name
CONFLIST = "10-flannel.conflist"
CALICO_NETWORK = "k8s-pod-network"  # calico/node's install-cni network name
CALICO_CONFLIST = "10-calico.conflist"
CNI_VERSION = "1.1.0"
PARALLEL_ADDS = 8


@dataclass
class Sandbox:
    key: str  # namespace/name
    uid: str
    netns: str
    ip: str = ""
    veth: str = ""  # host-side end, in the node's namespace, from the CNI result
    port_mappings: list[dict] = field(default_factory=list)


def pod_netns(cluster: str, namespace: str, name: str) -> str:
    """``nsim.<cluster>.<namespace>.<pod>``: the dot after the namespace keeps pod namespaces
    apart from node and host names (DNS labels, no dots)."""
    member = f"{namespace}.{name}"
    if len(member) > 200:
        member = f"{namespace[:40]}.{name[:100]}-{names.short_hash(member, 8)}"
    return names.netns_name(cluster, member)


def server_socket(cluster_dir: Path, component: str) -> str:
    """Where an agent's plugin server listens; a Unix socket path has 107 usable bytes."""
    path = str(cluster_dir / f"cni-{names.short_hash(component, 8)}.sock")
    if len(path) < 100:
        return path
    return f"/run/netsim-cni/{hashlib.sha256(path.encode()).hexdigest()[:16]}.sock"


def port_mappings(pod: dict) -> list[dict]:
    """The portMappings capability, as the kubelet derives it from containers' hostPorts."""
    out = []
    for c in pod["spec"].get("containers", []):
        for p in c.get("ports", []):
            if p.get("hostPort"):
                m = {"hostPort": p["hostPort"], "containerPort": p["containerPort"],
                     "protocol": p.get("protocol", "TCP").lower()}
                if p.get("hostIP"):
                    m["hostIP"] = p["hostIP"]
                out.append(m)
    return out


class NodePods:
    def __init__(self, cluster: str, node: str, node_netns: str, node_dir: Path, mtu: int = 1500,
                 socket_path: str | None = None, cni: str = cnimode.DEFAULT):
        self.cluster = cluster
        self.cni = cni  # netsim.model.cnimode: which plugins the conflist chains
        self.node = node
        self.node_netns = node_netns
        self.mtu = mtu
        self.dir = node_dir
        self.checkpoint = node_dir / "pods.json"
        self.conf_dir = node_dir / "cni" / "net.d"
        self.cache_dir = node_dir / "cni" / "cache"
        self.subnet_env = node_dir / "run" / "flannel" / "subnet.env"
        for d in (node_dir, self.conf_dir, self.cache_dir, self.subnet_env.parent):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.sandboxes: dict[str, Sandbox] = self._load()
        self.pod_cidr: ipaddress.IPv4Network | None = None
        extra_env = {shim.SOCKET_ENV: socket_path} if socket_path else {}
        self.runtime = runtime.Runtime([runtime.plugin_dir()], kernel.netns_path(node_netns), extra_env)
        self.netlist: runtime.NetworkList | None = None
        self.collected = False
        # Pods whose gate may be closed: all of them after a restart (opening is idempotent).
        self.gated: set[str] = set(self.sandboxes)

    # -- checkpoint -------------------------------------------------------------------------
    def _load(self) -> dict[str, Sandbox]:
        try:
            return {k: Sandbox(**v) for k, v in json.loads(self.checkpoint.read_text()).items()}
        except FileNotFoundError:
            return {}

    def _save(self) -> None:
        tmp = self.checkpoint.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({k: asdict(s) for k, s in self.sandboxes.items()}, f)
        os.replace(tmp, self.checkpoint)

    # -- the node's network config ------------------------------------------------------------
    def conflist(self, kubeconfig: str = "") -> dict:
        """The network list the node's CNI mode chains (netsim.model.cnimode): flannel's
        (kube-flannel's cbr0) or Calico's (calico/node's k8s-pod-network, whose plugins reach
        the API with ``kubeconfig``)."""
        cni = self.dir / "cni"
        configs = {
            "flannel": {"type": "flannel", "subnetFile": str(self.subnet_env), "dataDir": str(cni / "flannel"),
                        "ipam": {"dataDir": str(cni / "networks")},
                        "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
            "calico": {"type": "calico", "datastore_type": "kubernetes", "nodename": self.node, "mtu": self.mtu,
                       "ipam": {"type": "calico-ipam"}, "policy": {"type": "k8s"},
                       "kubernetes": {"kubeconfig": kubeconfig}},
            "portmap": {"type": "portmap", "capabilities": {"portMappings": True}},
            # NetworkPolicy: a new pod stays isolated until the agent has rendered its rules.
            cnimode.POLICY_PLUGIN: {"type": cnimode.POLICY_PLUGIN},
        }
        if self.cni == "calico":
            configs["portmap"]["snat"] = True  # as calico/node's install-cni writes it
        chain = cnimode.mode(self.cni).plugins
        unknown = [t for t in chain if t not in configs]
        if unknown:
            raise RuntimeError(f"cni {self.cni}: no network config for plugin(s) {', '.join(unknown)} on this node")
        name = CALICO_NETWORK if self.cni == "calico" else NETWORK
        return {"name": name, "cniVersion": CNI_VERSION, "plugins": [configs[t] for t in chain]}

    def ensure_network(self, pod_cidr: str, cluster_cidr: str) -> None:
        """Write the node's subnet.env (as flanneld does) and its conflist (as kube-flannel's
        install-cni container does)."""
        self.pod_cidr = ipaddress.IPv4Network(pod_cidr)
        gateway = self.pod_cidr.network_address + 1
        write_file(self.subnet_env,
                   f"FLANNEL_NETWORK={cluster_cidr}\nFLANNEL_SUBNET={gateway}/{self.pod_cidr.prefixlen}\n"
                   f"FLANNEL_MTU={self.mtu}\nFLANNEL_IPMASQ=true\n")
        raw = json.dumps(self.conflist(), indent=2).encode()
        write_file(self.conf_dir / CONFLIST, raw.decode())
        self.netlist = runtime.parse_conflist(raw, str(self.conf_dir / CONFLIST))

    def ensure_calico_network(self, kubeconfig: str) -> None:
        """Write the node's Calico conflist (as calico/node's install-cni does); pods get /32s
        from calico-ipam and no bridge, so the node needs no pod range of its own."""
        self.cni = "calico"
        raw = json.dumps(self.conflist(kubeconfig), indent=2).encode()
        write_file(self.conf_dir / CALICO_CONFLIST, raw.decode())
        with contextlib.suppress(FileNotFoundError):
            (self.conf_dir / CONFLIST).unlink()
        self.netlist = runtime.parse_conflist(raw, str(self.conf_dir / CALICO_CONFLIST))

    def _rt(self, sb: Sandbox) -> runtime.RuntimeConf:
        namespace, name = sb.key.split("/", 1)
        args = [("IgnoreUnknown", "1"), ("K8S_POD_NAMESPACE", namespace), ("K8S_POD_NAME", name),
                ("K8S_POD_INFRA_CONTAINER_ID", sb.uid), ("K8S_POD_UID", sb.uid)]
        caps = {"portMappings": sb.port_mappings} if sb.port_mappings else {}
        return runtime.RuntimeConf(container_id=sb.uid, netns=kernel.netns_path(sb.netns), ifname=POD_IF,
                                   args=args, capability_args=caps, cache_dir=str(self.cache_dir))

    # -- pods -------------------------------------------------------------------------------
    def add(self, pods: list[tuple[str, str, str, str, list[dict]]]) -> list[Sandbox]:
        """Sandboxes for (key, uid, namespace, name, portMappings) tuples: recorded in the
        checkpoint first, then namespaces made, then CNI ADDs run side by side."""
        if not pods:
            return []
        made = []
        for key, uid, namespace, name, mappings in pods:
            sb = Sandbox(key, uid, pod_netns(self.cluster, namespace, name), port_mappings=mappings)
            self.sandboxes[key] = sb
            made.append(sb)
        self._save()
        for sb in made:
            kernel.delete_netns(sb.netns)  # a bare file from a killed agent is not a namespace
            with kernel.Namespace.create(sb.netns) as pod, pod.batch() as b:
                b.set_link("lo", index=1, up=True)
                gate.closing(b)
            self.gated.add(sb.key)
        failed = []
        with ThreadPoolExecutor(max_workers=min(PARALLEL_ADDS, len(made))) as pool:
            for sb, outcome in zip(made, pool.map(self._add_one, made), strict=True):
                if isinstance(outcome, Exception):
                    log.error("node %s: CNI ADD for pod %s failed: %s", self.node, sb.key, outcome)
                    failed.append(sb.key)
        self._save()
        if failed:
            self.remove(failed)
        return [sb for sb in made if sb.key not in failed]

    def _add_one(self, sb: Sandbox) -> Exception | None:
        try:
            result = self.runtime.add(self.netlist, self._rt(sb))
        except Exception as exc:  # reported per pod; the others go on
            return exc
        ips = result.get("ips") or []
        sb.ip = ipaddress.ip_interface(ips[0]["address"]).ip.compressed if ips else ""
        host = [i for i in result.get("interfaces") or [] if not i.get("sandbox") and i["name"] != BRIDGE]
        sb.veth = host[0]["name"] if host else ""
        return None

    def remove(self, keys: list[str]) -> None:
        """CNI DEL (with the cached result), then the namespace; a DEL that fails is logged and
        left to GC, which the runtime runs at the agent's next start."""
        gone = [self.sandboxes[k] for k in keys if k in self.sandboxes]
        if not gone:
            return
        if self.netlist is not None:
            with ThreadPoolExecutor(max_workers=min(PARALLEL_ADDS, len(gone))) as pool:
                for sb, err in zip(gone, pool.map(self._del_one, gone), strict=True):
                    if err is not None:
                        log.error("node %s: CNI DEL for pod %s failed: %s", self.node, sb.key, err)
        kernel.remove_netns([sb.netns for sb in gone])
        for sb in gone:
            self.sandboxes.pop(sb.key, None)
            self.gated.discard(sb.key)
        self._save()

    def open_gates(self, keys: set[str]) -> int:
        """Open the gates of these pods (the node's policy rules for them are written); how
        many were opened.  A failure other than a namespace already gone raises after the
        others were tried, and that pod stays closed."""
        opened, failures = 0, []
        for k in sorted(keys & self.gated):
            try:
                gate.open_(kernel.netns_path(self.sandboxes[k].netns))
                opened += 1
            except FileNotFoundError:
                pass  # its namespace went with the pod
            except Exception as exc:  # noqa: BLE001 -- tried again at the next sync
                failures.append(f"{k}: {exc}")
                continue
            self.gated.discard(k)
        if failures:
            raise RuntimeError(f"node {self.node}: could not open the gates of " + "; ".join(failures))
        return opened

    def _del_one(self, sb: Sandbox) -> Exception | None:
        try:
            self.runtime.delete(self.netlist, self._rt(sb))
        except Exception as exc:
            return exc
        return None

    def collect_garbage(self) -> None:
        """Once per agent start: CNI GC with the sandboxes this node still has as the valid
        attachments, so allocations of pods lost to a crash are released."""
        if self.collected or self.netlist is None:
            return
        self.collected = True
        valid = [{"containerID": sb.uid, "ifname": POD_IF} for sb in self.sandboxes.values()]
        valid += other_runtimes_attachments(self.netlist.name)
        try:
            removed = self.runtime.gc(self.netlist, valid, str(self.cache_dir))
        except runtime.PluginError as exc:
            log.error("node %s: CNI GC failed: %s", self.node, exc)
            return
        if removed:
            log.info("node %s: CNI GC removed %d stale attachments", self.node, len(removed))

    def intact(self, sb: Sandbox, node_links: dict[str, dict]) -> bool:
        """The sandbox is whole: its namespace is mounted and its veth is up (on the bridge, but for
        Calico's, which are routed)."""
        link = node_links.get(sb.veth)
        if not (sb.ip and kernel.netns_exists(sb.netns) and link is not None and link["up"]):
            return False
        if self.cni == "calico":
            return True
        bridge = node_links.get(BRIDGE)
        return bridge is not None and link["master"] == bridge["index"]

    def node_links(self) -> dict[str, dict]:
        with kernel.Namespace.open(self.node_netns) as ns:
            return ns.links()


LIBCNI_CACHE = "/var/lib/cni"


def other_runtimes_attachments(network: str, cache_dir: str = LIBCNI_CACHE) -> list[dict]:
    """Attachments of ``network`` that another runtime on this host (podman, cnitool,
    containerd: libcni's default cache) holds.  A runtime's GC names only the attachments it
    knows, so without these the agent's GC would release the addresses of containers that
    another runtime wired into the node's network (CNI leaves one network shared by several
    runtimes to the runtimes)."""
    found = []
    for entry in runtime.cached_attachments(network, cache_dir):
        if entry.get("containerId"):
            found.append({"containerID": entry["containerId"], "ifname": entry.get("ifName") or POD_IF})
    return found


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Atomically (a reader sees the old file or the new one), with ``mode`` whatever the umask."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        os.chmod(path, mode)
