"""Pod sandboxes on one node: a namespace per pod with a veth into the node's bridge.

This is the agent's built-in wiring (bridge + host-local addressing, the picture of the
CNI bridge plugin) until the CNI runtime takes over the same calls.  What a node holds is
written ahead to a checkpoint before the kernel is touched (like the CNI cache and
host-local's files), so an agent killed half-way finds every namespace and address it made
and neither leaks one nor hands an address out twice.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from netsim import kernel, names

BRIDGE = "cni0"
POD_IF = "eth0"
FIRST_FREE_INDEX = 2


@dataclass
class Sandbox:
    key: str  # namespace/name
    uid: str
    netns: str
    ip: str
    veth: str  # host-side end, in the node's namespace


def pod_netns(cluster: str, namespace: str, name: str) -> str:
    """``nsim.<cluster>.<namespace>.<pod>``: the dot after the namespace keeps pod namespaces
    apart from node and host names (DNS labels, no dots)."""
    member = f"{namespace}.{name}"
    if len(member) > 200:
        member = f"{namespace[:40]}.{name[:100]}-{names.short_hash(member, 8)}"
    return names.netns_name(cluster, member)


def host_veth(uid: str) -> str:
    # Named from the pod's uid, as calico names caliXXXX: a pod re-created under the same name
    # gets a different link, so a stale one is never mistaken for it.
    return "veth" + names.short_hash(uid, 8)


class NodePods:
    def __init__(self, cluster: str, node: str, node_netns: str, checkpoint_dir: Path, mtu: int = 1500):
        self.cluster = cluster
        self.node = node
        self.node_netns = node_netns
        self.mtu = mtu
        self.checkpoint = checkpoint_dir / "pods.json"
        checkpoint_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.sandboxes: dict[str, Sandbox] = self._load()
        self.pod_cidr: ipaddress.IPv4Network | None = None

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

    # -- the node's bridge ------------------------------------------------------------------
    @property
    def gateway(self) -> str:
        return str(self.pod_cidr.network_address + 1)

    def ensure_bridge(self, pod_cidr: str) -> None:
        self.pod_cidr = ipaddress.IPv4Network(pod_cidr)
        ns = kernel.Namespace.open(self.node_netns)
        try:
            bridge = ns.links().get(BRIDGE)
            if bridge is None:
                with ns.batch() as b:
                    b.add_bridge(BRIDGE, self.mtu)
                bridge = {"index": ns.index(BRIDGE), "up": False}
            with ns.batch() as b:
                b.add_address(bridge["index"], f"{self.gateway}/{self.pod_cidr.prefixlen}")
                if not bridge["up"]:
                    b.set_link(BRIDGE, index=bridge["index"], up=True)
        finally:
            ns.close()

    # -- pods -------------------------------------------------------------------------------
    def _free_ips(self, count: int) -> list[str]:
        taken = {s.ip for s in self.sandboxes.values()} | {self.gateway}
        out = []
        for host in self.pod_cidr.hosts():
            if len(out) == count:
                break
            if str(host) not in taken:
                out.append(str(host))
        if len(out) < count:
            raise kernel.KernelError(f"node {self.node}: pod CIDR {self.pod_cidr} has no free address")
        return out

    def add(self, pods: list[tuple[str, str, str, str]]) -> list[Sandbox]:
        """Sandboxes for (key, uid, namespace, name) tuples, made together: addresses are
        reserved in the checkpoint first, then namespaces, veths and routes go in batches."""
        if not pods:
            return []
        made = []
        for (key, uid, namespace, name), ip in zip(pods, self._free_ips(len(pods)), strict=True):
            sb = Sandbox(key, uid, pod_netns(self.cluster, namespace, name), ip, host_veth(uid))
            self.sandboxes[key] = sb
            made.append(sb)
        self._save()
        node = kernel.Namespace.open(self.node_netns)
        handles: list[kernel.Namespace] = []
        try:
            bridge = node.index(BRIDGE)
            for sb in made:
                kernel.delete_netns(sb.netns)  # a bare file from a killed agent is not a namespace
                pod = kernel.Namespace.create(sb.netns)
                handles.append(pod)
                with pod.batch() as b:
                    b.add_veth(POD_IF, sb.veth, node, self.mtu, index=FIRST_FREE_INDEX)
                    b.set_link("lo", index=1, up=True)
                    b.set_link(POD_IF, index=FIRST_FREE_INDEX, up=True)
                    b.add_address(FIRST_FREE_INDEX, f"{sb.ip}/{self.pod_cidr.prefixlen}")
                    b.replace_route("default", gateway=self.gateway)
            with node.batch() as b:
                for sb in made:
                    b.set_link(sb.veth, master=bridge, up=True)
            self._wait_up(node, {sb.veth for sb in made})
        except BaseException:
            self.remove([sb.key for sb in made])
            raise
        finally:
            for h in handles:
                h.close()
            node.close()
        return made

    @staticmethod
    def _wait_up(node: kernel.Namespace, veths: set[str], timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while veths:
            links = node.links()
            veths = {v for v in veths if links.get(v, {}).get("operstate") != "UP"}
            if not veths:
                return
            if time.monotonic() > deadline:
                raise kernel.KernelError(f"pod links not up after {timeout}s: {sorted(veths)}")
            time.sleep(0.002)

    def remove(self, keys: list[str]) -> None:
        """Remove sandboxes; deleting a pod namespace takes its veth (and the host end) along."""
        gone = [self.sandboxes[k] for k in keys if k in self.sandboxes]
        if not gone:
            return
        kernel.remove_netns([sb.netns for sb in gone])
        with contextlib.suppress(Exception):
            # The namespace is freed asynchronously; cut the host ends now so the bridge
            # forgets them at once.  A missing one (ENODEV) is fine.
            node = kernel.Namespace.open(self.node_netns)
            try:
                with node.batch() as b:
                    for sb in gone:
                        b.delete_link(sb.veth)
            finally:
                node.close()
        for sb in gone:
            self.sandboxes.pop(sb.key, None)
        self._save()

    def intact(self, sb: Sandbox, node_links: dict[str, dict]) -> bool:
        """The sandbox is whole: its namespace is mounted and its veth is on the bridge."""
        link = node_links.get(sb.veth)
        bridge = node_links.get(BRIDGE)
        return (kernel.netns_exists(sb.netns) and link is not None and bridge is not None
                and link["master"] == bridge["index"] and link["up"])

    def node_links(self) -> dict[str, dict]:
        ns = kernel.Namespace.open(self.node_netns)
        try:
            return ns.links()
        finally:
            ns.close()
