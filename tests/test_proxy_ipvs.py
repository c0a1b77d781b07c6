"""kube-proxy's IPVS mode (proxy.ipvs): the renderer against upstream's names and rules, then
the proxier on real namespaces with real connections -- in the lab of the iptables mode's tests.

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
from tests.test_proxy_iptables import (  # the lab, builders and constants of the iptables mode's tests
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
from tests.test_services import cluster_in_mode, services_behave

__all__ = ["lab"]  # a fixture, imported to be used here

ROOT = Path(__file__).resolve().parent.parent


def render(sps, **kw) -> ipvs.Ruleset:
    return ipvs.render(sps, node=NODE, node_ips=[NODE_IP], cluster_cidr=CLUSTER_CIDR, **kw)


# == the renderer, pure ========================================================================
def test_virtual_servers_per_ip_and_port():
    lb = svc("lb", "10.96.0.40", [ep(POD_A), ep(POD_B, node="other")], type="LoadBalancer", node_port=30040,
             load_balancer_ips=("10.200.0.5",), external_ips=("10.200.1.1",), affinity_timeout=600)
    rs = render([lb, svc("headless", None, [ep(POD_A)])], scheduler="wrr")
    servers = rs.servers
    assert set(servers) == {("tcp", "10.96.0.40", 80), ("tcp", "10.200.0.5", 80), ("tcp", "10.200.1.1", 80),
                            ("tcp", NODE_IP, 30040)}  # the headless Service gets nothing
    for vs in servers.values():
        assert vs.scheduler == "wrr" and vs.persistence == 600
        assert vs.reals == (f"{POD_A}:8080", f"{POD_B}:8080")
    assert servers[("tcp", "10.96.0.40", 80)].add_line() == "-A -t 10.96.0.40:80 -s wrr -p 600"
    assert rs.addresses == {"10.96.0.40", "10.200.0.5", "10.200.1.1"}  # node IPs are not put on kube-ipvs0
    assert rs.ipsets[ipvs.CLUSTER_IP] == {"10.96.0.40,tcp:80"}
    assert rs.ipsets[ipvs.LOOP_BACK] == {f"{POD_A},tcp:8080,{POD_A}"}  # local endpoints only
    assert rs.ipsets[ipvs.NODE_PORT_TCP] == {"30040"} and not rs.ipsets[ipvs.NODE_PORT_LOCAL_TCP]
    assert rs.ipsets[ipvs.IPVS_IPS] == rs.addresses
    roles = [role for role, _ in rs.services["default/lb/tcp"].servers]
    assert roles == ["cluster IP", "external IP", "load balancer", "node port"]
    with pytest.raises(ValueError, match="unknown IPVS scheduler"):
        render([lb], scheduler="fastest")


def test_traffic_policies_choose_the_real_servers():
    eps = [ep(POD_A), ep(POD_B, node="other")]
    rs = render([svc("ext", "10.96.0.41", eps, type="NodePort", node_port=30041, external_local=True),
                 svc("int", "10.96.0.42", eps, internal_local=True),
                 svc("udp", "10.96.0.43", [ep(POD_A, UDP_PORT)], proto="UDP", port=53, type="NodePort",
                     node_port=30053, external_local=True)])
    s = rs.servers
    assert s[("tcp", "10.96.0.41", 80)].reals == (f"{POD_A}:8080", f"{POD_B}:8080")  # internal: every endpoint
    assert s[("tcp", NODE_IP, 30041)].reals == (f"{POD_A}:8080",)  # external: local only
    assert s[("tcp", "10.96.0.42", 80)].reals == (f"{POD_A}:8080",)
    assert rs.ipsets[ipvs.NODE_PORT_LOCAL_TCP] == {"30041"} and rs.ipsets[ipvs.NODE_PORT_LOCAL_UDP] == {"30053"}
    # Terminating endpoints only when none is ready (upstream's rule, shared with the other modes).
    rs = render([svc("t", "10.96.0.44", [ep(POD_A, ready=False, serving=True, terminating=True),
                                         ep(POD_B, ready=False, serving=False, terminating=True)])])
    assert rs.servers[("tcp", "10.96.0.44", 80)].reals == (f"{POD_A}:8080",)


def test_iptables_rules_follow_the_sets():
    rs = render([svc("plain", "10.96.0.50", [ep(POD_A)])])
    assert (f'-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" '
            f"-m set --match-set KUBE-CLUSTER-IP dst,dst ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ") in rs.nat
    assert rs.nat[0] == ('-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip '
                         'for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE')
    assert not any("KUBE-NODE-PORT-TCP" in r or "-j KUBE-LOAD-BALANCER" in r for r in rs.nat)  # empty sets: no rule
    assert rs.nat[-1] == "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000"
    assert rs.filter[-1] == ("-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst "
                             "-j REJECT")
    rs = render([svc("lb", "10.96.0.51", [ep(POD_A)], type="LoadBalancer", node_port=30051,
                     load_balancer_ips=("10.200.0.6",), source_ranges=(f"{NODE_IP}/24",))])
    assert "-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port for masquerade purpose\" " \
           "-m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ" in rs.nat
    assert any("--match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL" in r for r in rs.filter)
    assert rs.ipsets[ipvs.LOAD_BALANCER_SOURCE_CIDR] == {"10.200.0.6,tcp:80,192.168.77.0/24"}
    assert rs.ipsets[ipvs.LOAD_BALANCER_SOURCE_IP] == {"10.200.0.6,tcp:80,10.200.0.6"}  # the node is in the range
    text = rs.iptables_text(jumps=ipvs.JUMPS)
    assert '-I PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in text
    assert text.count("COMMIT") == 3 and ":KUBE-PROXY-CANARY - [0:0]" in text


def test_ipvsadm_save_parsed_and_diffed():
    current = ipvs.parse_save(
        "-A -t 10.96.0.10:80 -s rr\n-a -t 10.96.0.10:80 -r 10.244.1.11:8080 -m -w 1\n"
        "-a -t 10.96.0.10:80 -r 10.244.1.12:8080 -m -w 1\n"
        "-A -u 10.96.0.30:53 -s rr -p 600\n-A -f 7 -s rr\n-A -t 10.96.0.99:80 -s rr\n")
    assert set(current) == {("tcp", "10.96.0.10", 80), ("udp", "10.96.0.30", 53), ("tcp", "10.96.0.99", 80)}
    assert current[("udp", "10.96.0.30", 53)][0].persistence == 600
    desired = {vs.key: vs for vs in (
        ipvs.VirtualServer("tcp", "10.96.0.10", 80, reals=("10.244.1.11:8080", "10.244.1.13:8080")),
        ipvs.VirtualServer("udp", "10.96.0.30", 53, reals=()),
        ipvs.VirtualServer("sctp", "10.96.0.31", 9, "sh"))}
    assert ipvs.diff_commands(current, desired) == [
        "-D -t 10.96.0.99:80",
        "-A --sctp-service 10.96.0.31:9 -s sh",
        "-d -t 10.96.0.10:80 -r 10.244.1.12:8080",
        "-a -t 10.96.0.10:80 -r 10.244.1.13:8080 -m -w 1",
        "-E -u 10.96.0.30:53 -s rr",
    ]
    assert ipvs.diff_commands({k: (v, dict.fromkeys(v.reals, 1)) for k, v in desired.items()}, desired) == []


def test_ipset_text_full_and_partial():
    full = ipvs.ipset_text(None, {ipvs.CLUSTER_IP: {"10.96.0.10,tcp:80"}})
    assert "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 comment -exist" in full
    assert "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535 comment -exist" in full
    assert "flush KUBE-CLUSTER-IP\nadd KUBE-CLUSTER-IP 10.96.0.10,tcp:80 -exist" in full
    part = ipvs.ipset_text({ipvs.CLUSTER_IP: {"10.96.0.10,tcp:80"}}, {ipvs.CLUSTER_IP: {"10.96.0.11,tcp:80"}})
    assert "flush" not in part
    assert part.endswith("del KUBE-CLUSTER-IP 10.96.0.10,tcp:80 -exist\nadd KUBE-CLUSTER-IP 10.96.0.11,tcp:80 -exist\n")


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
                            "tests/test_proxy_ipvs.py", "-k", "not in_a_guest"], cwd=str(ROOT), timeout=900)
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    assert rc == 0, output[-6000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 10 and "skipped" not in summary, output[-3000:]
