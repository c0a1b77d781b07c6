"""What a scenario needs of this machine before anything is built: kernel features and programs
that only some networking choices use (Calico's IPIP tunnel, BIRD).  A missing one is reported as
the scenario field that asks for it and the fix, so `up` and `join` stop with nothing made.

The kernel is asked, not guessed: a tunnel device is created in a throwaway namespace of the
cluster's (``nsim.<cluster>._kprobe``, removed before returning), because a module that is not
loaded may still be loaded on demand, and a container's kernel may lack one that /proc lists.
"""

from __future__ import annotations

import shutil
import subprocess

from netsim import kernel
from netsim.model import names
from netsim.model.scenario import Scenario

PROBE_MEMBER = "_kprobe"


def bird_needed(scn: Scenario) -> bool:
    """Calico runs BIRD unless the pool is VXLAN-only (upstream's calico_backend "vxlan")."""
    net = scn.networking
    return net.cni == "calico" and net.calico.vxlanMode == "Never"


def unmet(scn: Scenario, cluster: str) -> list[str]:
    """One message per requirement this machine does not meet (empty: all met)."""
    net = scn.networking
    if net.cni != "calico":
        return []
    out = []
    if net.calico.ipipMode != "Never" and not link_kind_supported(cluster, "ipip"):
        out.append(f"networking.calico.ipipMode: {net.calico.ipipMode} needs the kernel's IPIP tunnel (module ipip), "
                   "which this kernel does not provide; fix: set ipipMode: Never and vxlanMode: Always (or "
                   "CrossSubnet), or run netsim in a VM whose kernel has it (vagrant/)")
    if bird_needed(scn) and shutil.which("bird") is None:
        out.append("networking.cni: calico with BGP needs BIRD (Debian package bird, version 1.6); fix: "
                   "`apt-get install bird` (scripts/install-deps.sh does) or use vxlanMode: Always, which runs no BGP")
    return out


def link_kind_supported(cluster: str, kind: str) -> bool:
    netns = names.netns_name(cluster, PROBE_MEMBER)
    kernel.delete_netns(netns)
    try:
        subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True, timeout=10)
        made = subprocess.run(["ip", "-n", netns, "link", "add", "nsimprobe0", "type", kind],
                              capture_output=True, timeout=10)
        if made.returncode == 0:
            return True
        # A kernel with the module loaded gives every new namespace its fallback device (tunl0 for
        # ipip, unless net.core.fb_tunnels_only_for_init_net), and a second tunnel with the same
        # (any, any) endpoints is refused as existing: the kind is there all the same.
        listed = subprocess.run(["ip", "-n", netns, "-o", "link", "show", "type", kind],
                                capture_output=True, text=True, timeout=10)
        return listed.returncode == 0 and bool(listed.stdout.strip())
    finally:
        kernel.delete_netns(netns)
