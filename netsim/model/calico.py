"""Calico's datastore objects as netsim stores them: the crd.projectcalico.org/v1 kinds (what
kube-controllers, calico/node and the CNI plugin keep in a Kubernetes-datastore cluster), the
objects a new cluster starts with (the default IPPool from the scenario, BGPConfiguration and
FelixConfiguration "default"), and the arithmetic every Calico part shares (pod MTU, block names).

Knows the scenario model; uses nothing above netsim.model.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from netsim.model import state

GROUP = "crd.projectcalico.org"
API_VERSION = f"{GROUP}/v1"
DEFAULT_POOL = "default-ipv4-ippool"
DEFAULT = "default"  # BGPConfiguration, FelixConfiguration and IPAMConfig singletons
DEFAULT_AS = 64512
IPIP_OVERHEAD = 20
VXLAN_OVERHEAD = 50
VXLAN_VNI = 4096
VXLAN_PORT = 4789
IPIP_DEVICE = "tunl0"
VXLAN_DEVICE = "vxlan.calico"
# (kind, plural, short names) of the kinds served; all cluster-scoped, as upstream's CRDs.
KINDS = (("IPPool", "ippools", ()), ("IPAMBlock", "ipamblocks", ()), ("BlockAffinity", "blockaffinities", ()),
         ("IPAMHandle", "ipamhandles", ()), ("IPAMConfig", "ipamconfigs", ()),
         ("BGPConfiguration", "bgpconfigurations", ()), ("BGPPeer", "bgppeers", ()),
         ("FelixConfiguration", "felixconfigurations", ()), ("ClusterInformation", "clusterinformations", ()))


KUBECONFIG_SECRET = "calico-cni-kubeconfig"  # kube-system: what the agents write to kubeconfig_path


def kubeconfig_path(cluster: str) -> Path:
    """The kubeconfig the calico and calico-ipam plugins reach the API with (upstream's
    /etc/cni/net.d/calico-kubeconfig, written by calico/node's install-cni)."""
    return state.cluster_dir(cluster) / "calico" / "calico-kubeconfig"


def pod_mtu(pool_spec: dict, underlay_mtu: int) -> int:
    """The workload MTU Felix writes to /var/lib/calico/mtu: the smallest enabled encapsulation's."""
    mtu = underlay_mtu
    if pool_spec.get("ipipMode", "Never") != "Never":
        mtu = min(mtu, underlay_mtu - IPIP_OVERHEAD)
    if pool_spec.get("vxlanMode", "Never") != "Never":
        mtu = min(mtu, underlay_mtu - VXLAN_OVERHEAD)
    return mtu


def block_name(block: ipaddress.IPv4Network | str) -> str:
    """IPAMBlock's object name: 10.244.1.0/26 -> 10-244-1-0-26 (libcalico-go's names.CIDRToName)."""
    return str(block).replace(".", "-").replace("/", "-")


def affinity_name(node: str, block: ipaddress.IPv4Network | str) -> str:
    return f"{node}-{block_name(block)}"


def initial_objects(pod_subnet: str, calico: dict) -> list[dict]:
    """What a new calico cluster's datastore holds before any node starts: the default IPPool made
    from the scenario's networking.calico (CalicoSpec field names are IPPool's), the default
    BGPConfiguration (full mesh, AS 64512) and FelixConfiguration."""
    def obj(kind: str, name: str, spec: dict) -> dict:
        return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}

    pool = {"cidr": pod_subnet, "blockSize": calico.get("blockSize", 26),
            "ipipMode": calico.get("ipipMode", "Always"), "vxlanMode": calico.get("vxlanMode", "Never"),
            "natOutgoing": calico.get("natOutgoing", True), "nodeSelector": "all()"}
    return [obj("IPPool", DEFAULT_POOL, pool),
            obj("BGPConfiguration", DEFAULT, {"asNumber": DEFAULT_AS, "nodeToNodeMeshEnabled": True,
                                              "logSeverityScreen": "Info"}),
            obj("FelixConfiguration", DEFAULT, {"bpfEnabled": False, "logSeverityScreen": "Info",
                                                "reportingInterval": "0s"}),
            obj("IPAMConfig", DEFAULT, {"strictAffinity": False, "autoAllocateBlocks": True,
                                        "maxBlocksPerHost": 0})]
