"""kube-proxy's IPVS mode (proxy.ipvs): the proxier on real namespaces with real connections --
in the lab of the iptables mode's tests (the renderer alone is tests/unit/test_proxy_ipvs_render.py).

This machine's kernel has no ip_vs, so the dataplane tests run inside a qemu guest that boots
Debian's kernel over this filesystem (netsim.kernel.guest): ``test_ipvs_dataplane_in_a_guest`` runs
this module there and wants every test passed, none skipped.  Where the kernel has ip_vs,
they run directly; where neither works, they are skipped, saying why."""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from netsim import kernel
from netsim.kernel import guest
from netsim.model import names
from proxy import ipvs
from proxy.proxier import run_in
from tests.conftest import run_netsim
from tests.e2e.test_services import cluster_in_mode, services_behave
from tests.kernel.test_proxy_iptables import (  # the lab, builders and constants of the iptables mode's tests
    BRIDGE_IP,
    CLIENT,
    CLUSTER_CIDR,
    EXTERNAL_IP,
    NODE,
    NODE_IP,
    POD_A,
    POD_B,
    UDP_PORT,
    WEB,
    ask,
    ep,
    lab,
    svc,
    udp_client,
)

__all__ = ["lab"]  # a fixture, imported to be used here

ROOT = Path(__file__).resolve().parents[2]


# == the proxier on a real kernel ==============================================================
WHY_NOT_HERE = ipvs.load_ipvs()
needs_ipvs = pytest.mark.skipif(bool(WHY_NOT_HERE), reason=f"{WHY_NOT_HERE}; test_ipvs_dataplane_in_a_guest runs "
                                "these tests in a qemu guest whose kernel has it")


@pytest.fixture(autouse=True, scope="module")
def br_netfilter():
    """The lab turns bridge-nf-call-iptables on: a fresh guest kernel has not loaded br_netfilter yet."""
    if not WHY_NOT_HERE and not os.path.exists("/proc/sys/net/bridge"):
        run_in("/proc/self/ns/net", ["modprobe", "br_netfilter"], check=False)


@pytest.fixture
def proxier(lab):
    made = []

    def make(**kw) -> ipvs.Proxier:
        p = ipvs.Proxier(lab.node, node=NODE, node_ips=[NODE_IP], cluster_cidr=CLUSTER_CIDR, **kw)
        made.append(p)
        return p
    with kernel.Namespace.open(lab.node) as ns:
        ns.sysctl("net.bridge.bridge-nf-call-iptables", 1)
    yield make


def _ipvsadm(lab) -> str:
    return lab.sh("ipvsadm", "-Sn")


@needs_ipvs
def test_cluster_ip_round_robin_and_nodeport_masquerades(lab, proxier):
    p = proxier()
    result = p.sync([WEB])
    assert result.full and result.iptables_written and result.servers == 2
    saved = _ipvsadm(lab)
    assert "-A -t 10.96.0.10:80 -s rr" in saved and f"-a -t {NODE_IP}:30080 -r {POD_A}:8080 -m -w 1" in saved
    assert "10.96.0.10/32" in lab.sh("ip", "-o", "addr", "show", "dev", ipvs.DUMMY)
    names = [ask(lab.client, "10.96.0.10", 80) for _ in range(20)]
    assert all(peer == CLIENT for _, peer in names)  # from inside the cluster CIDR: no masquerade
    assert Counter(n for n, _ in names) == {"pod-a": 10, "pod-b": 10}  # rr: strictly alternating
    name, peer = ask(lab.external, NODE_IP, 30080)
    assert name in ("pod-a", "pod-b") and peer == BRIDGE_IP  # masqueraded to the node's own address
    name, peer = ask(lab.node, "10.96.0.10", 80)  # from the node itself
    assert name in ("pod-a", "pod-b")
    # A port of the Service IP that no Service has is refused (KUBE-IPVS-FILTER), not the node's.
    with pytest.raises(ConnectionRefusedError):
        ask(lab.client, "10.96.0.10", 22, timeout=2.0)
    # Unchanged: nothing rewritten.
    result = p.sync([WEB])
    assert not result.full and result.ipvs_commands == 0 and not result.iptables_written


@needs_ipvs
def test_endpoint_changes_are_partial_and_take_effect(lab, proxier):
    p = proxier()
    p.sync([WEB])
    only_b = svc("web", "10.96.0.10", [ep(POD_B)], port_name="http", type="NodePort", node_port=30080)
    result = p.sync([only_b])
    assert not result.full and result.ipvs_commands == 2 and not result.iptables_written  # -d on two servers
    assert {ask(lab.client, "10.96.0.10", 80)[0] for _ in range(6)} == {"pod-b"}
    unready = svc("web", "10.96.0.10", [ep(POD_A), ep(POD_B, ready=False, serving=False)], port_name="http",
                  type="NodePort", node_port=30080)
    p.sync([unready])
    assert {ask(lab.client, "10.96.0.10", 80)[0] for _ in range(6)} == {"pod-a"}


@needs_ipvs
def test_no_endpoints_refused_at_once(lab, proxier):
    p = proxier()
    empty = svc("web", "10.96.0.10", [], port_name="http", type="NodePort", node_port=30080)
    p.sync([empty])
    for src, ip, port in ((lab.client, "10.96.0.10", 80), (lab.external, NODE_IP, 30080)):
        t = time.monotonic()
        with pytest.raises(ConnectionRefusedError):  # IPVS answers ICMP port unreachable
            ask(src, ip, port, timeout=2.0)
        assert time.monotonic() - t < 0.5


@needs_ipvs
def test_external_traffic_policy_local_keeps_source(lab, proxier):
    p = proxier()
    local = svc("local", "10.96.0.20", [ep(POD_A)], type="NodePort", node_port=30090, external_local=True)
    remote = svc("remote", "10.96.0.21", [ep(POD_B, node="other")], type="NodePort", node_port=30091,
                 external_local=True)
    p.sync([local, remote])
    for _ in range(4):
        assert ask(lab.external, NODE_IP, 30090) == ("pod-a", EXTERNAL_IP)  # source preserved
    with pytest.raises((ConnectionRefusedError, TimeoutError, socket.timeout)):
        ask(lab.external, NODE_IP, 30091, timeout=1.0)  # no local endpoint: not served here
    assert ask(lab.client, "10.96.0.21", 80)[0] == "pod-b"  # the cluster IP still uses every endpoint


@needs_ipvs
def test_hairpin_and_affinity(lab, proxier):
    p = proxier()
    p.sync([svc("self", "10.96.0.25", [ep(POD_A)])])
    assert ask(lab.pods[POD_A], "10.96.0.25", 80) == ("pod-a", BRIDGE_IP)  # reached itself, masqueraded
    sticky = svc("sticky", "10.96.0.22", [ep(POD_A), ep(POD_B)], affinity_timeout=600)
    p.sync([sticky])
    assert "-A -t 10.96.0.22:80 -s rr -p 600" in _ipvsadm(lab)
    assert len({ask(lab.client, "10.96.0.22", 80)[0] for _ in range(10)}) == 1
    p.sync([svc("sticky", "10.96.0.22", [ep(POD_A), ep(POD_B)])])  # -E drops the persistence
    assert "-A -t 10.96.0.22:80 -s rr\n" in _ipvsadm(lab) + "\n"
    lab.sh("ipvsadm", "-C")  # forget the persistence templates too
    result = p.sync([svc("sticky", "10.96.0.22", [ep(POD_A), ep(POD_B)])])
    assert result.full and result.reason == "ipvs canary" and result.ipvs_commands == 3  # the flush seen
    assert len({ask(lab.client, "10.96.0.22", 80)[0] for _ in range(6)}) == 2


@needs_ipvs
def test_load_balancer_and_external_ips_with_source_ranges(lab, proxier):
    p = proxier()
    lb = svc("lb", "10.96.0.60", [ep(POD_A)], type="LoadBalancer", node_port=30060, load_balancer_ips=("10.200.0.5",),
             external_ips=("10.200.1.1",), source_ranges=(f"{EXTERNAL_IP}/32",))
    p.sync([lb])
    assert ask(lab.external, "10.200.0.5", 80)[0] == "pod-a"
    assert ask(lab.external, "10.200.1.1", 80)[0] == "pod-a"
    p.sync([svc("lb", "10.96.0.60", [ep(POD_A)], type="LoadBalancer", node_port=30060,
                load_balancer_ips=("10.200.0.5",), source_ranges=("10.9.9.0/24",))])
    with pytest.raises((TimeoutError, socket.timeout)):  # KUBE-SOURCE-RANGES-FIREWALL drops it
        ask(lab.external, "10.200.0.5", 80, timeout=0.5)
    assert "10.200.1.1/32" not in lab.sh("ip", "-o", "addr", "show", "dev", ipvs.DUMMY)  # external IP gone


@needs_ipvs
def test_udp_client_leaves_a_deleted_endpoint(lab, proxier):
    both = [ep(POD_A, UDP_PORT), ep(POD_B, UDP_PORT)]
    dns = lambda eps: svc("dns", "10.96.0.30", eps, proto="UDP", port=53)  # noqa: E731
    p = proxier()
    p.sync([dns(both)])
    with udp_client(lab, "10.96.0.30", 53) as query:
        first = query()
        assert query() == first  # one flow, one backend
        gone = POD_A if first == "pod-a" else POD_B
        p.sync([dns([e for e in both if e.ip != gone])])
        answers = []
        for _ in range(3):
            try:
                answers.append(query())
            except TimeoutError:
                answers.append("timeout")  # expire_nodest_conn may drop the first datagram
        assert answers[-1] != first and first not in answers[1:], answers


@needs_ipvs
def test_flushed_state_comes_back(lab, proxier):
    p = proxier()
    p.sync([WEB])
    lab.sh("iptables-legacy", "-t", "nat", "-F", "KUBE-SERVICES")
    lab.sh("iptables-legacy", "-t", "mangle", "-X", "KUBE-PROXY-CANARY")
    lab.sh("ipvsadm", "-C")
    result = p.sync([WEB])
    assert result.full and result.reason == "canary" and result.iptables_written and result.ipvs_commands == 6
    assert "KUBE-CLUSTER-IP" in lab.sh("iptables-legacy-save", "-t", "nat")
    name, peer = ask(lab.external, NODE_IP, 30080)
    assert peer == BRIDGE_IP


@needs_ipvs
def test_cleanup_leaves_nothing(lab, proxier):
    p = proxier()
    p.sync([WEB, svc("lb", "10.96.0.60", [ep(POD_A)], type="LoadBalancer", node_port=30060,
                     load_balancer_ips=("10.200.0.5",), source_ranges=("10.9.9.0/24",))])
    p.cleanup()
    assert _ipvsadm(lab).strip() == ""
    assert "KUBE-" not in lab.sh("iptables-legacy-save")
    assert lab.sh("ipset", "list", "-n").strip() == ""
    with kernel.Namespace.open(lab.node) as ns:
        assert ns.link(ipvs.DUMMY) is None


@needs_ipvs
def test_ipvs_mode_end_to_end(tmp_path, state_dir):
    """The Services of test_services through kube-proxy's IPVS mode, on a two-worker cluster
    (services_behave: pods on the same and the other node, NodePort and LoadBalancer from the
    external host, no endpoints, NetworkPolicy on what IPVS balances), and `netsim proxy rules`."""
    with cluster_in_mode(tmp_path, "ipvs", "  kubeProxyMode: ipvs\n  ipvsScheduler: rr\n") as k8s:
        saved = run_in(kernel.netns_path(names.netns_name(k8s.name, "worker2")), ["ipvsadm", "-Sn"]).stdout.decode()
        cluster_ip = k8s.get("service", "web")["spec"]["clusterIP"]
        assert f"-A -t {cluster_ip}:80 -s rr" in saved and f"-A -u {cluster_ip}:53 -s rr" in saved
        shown = run_netsim("proxy", "rules", "worker2", "-c", k8s.name)
        assert shown.returncode == 0 and "default/web:http/tcp" in shown.stdout and "node port" in shown.stdout, \
            shown.stdout + shown.stderr
        services_behave(k8s)


# == where the kernel has no IPVS: the same tests in a guest ===================================
def test_ipvs_dataplane_in_a_guest():
    if not WHY_NOT_HERE:
        pytest.skip("this kernel has ip_vs: the dataplane tests above ran here")
    why = guest.unavailable()
    if why and os.environ.get("NETSIM_REQUIRE_GUEST"):
        pytest.fail(f"NETSIM_REQUIRE_GUEST is set and {why}")
    if why:
        pytest.skip(f"{WHY_NOT_HERE}, and no guest to run the IPVS tests in: {why}")
    rc, output = guest.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                            "tests/kernel/test_proxy_ipvs.py", "-k", "not in_a_guest"], cwd=str(ROOT), timeout=900)
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    assert rc == 0, output[-6000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 10 and "skipped" not in summary, output[-3000:]
