"""`netsim trace`: one packet through a real cluster, its hops, rules, NAT and verdict; and
`netsim probe` naming what dropped a denied connection."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from netsim import kernel
from netsim.cni import gate
from netsim.model import names
from netsim.node import podnet
from netsim.observe import nftrace
from tests.conftest import SCENARIO, K8s, run_netsim, running, unique_name

APP = """apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: worker1
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: b, labels: {app: b}}
spec:
  nodeName: worker2
  containers:
    - name: c
      image: agnhost
      ports: [{containerPort: 8080}, {containerPort: 5353, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: svc-b}
spec:
  selector: {app: b}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: dns, port: 53, targetPort: 5353, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: np}
spec:
  type: NodePort
  selector: {app: b}
  ports: [{port: 80, targetPort: 8080, nodePort: 30081}]
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Namespace
metadata: {name: locked}
---
apiVersion: v1
kind: Pod
metadata: {name: vault, namespace: locked, labels: {app: near}}
spec:
  nodeName: worker2
  containers: [{name: c, image: agnhost, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: near, namespace: locked, labels: {app: near}}
spec:
  nodeName: worker1
  containers: [{name: c, image: agnhost, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: near, namespace: locked}
spec:
  selector: {app: near}
  ports: [{port: 8080, targetPort: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: locked}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"""


@pytest.fixture(scope="module")
def k8s(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("trace")
    os.environ["NETSIM_STATE_DIR"] = str(tmp_path / "state")
    name = unique_name("tr")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    up = run_netsim("up", str(scenario), "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        k = K8s(name, tmp_path)
        k.apply(APP)
        assert len(running(k.pods("app=b"))) == 1
        yield k
    finally:
        assert run_netsim("down", name).returncode == 0
        assert kernel.list_netns(names.cluster_prefix(name)) == []
        os.environ.pop("NETSIM_STATE_DIR", None)


def trace(k8s: K8s, *args) -> tuple[int, dict]:
    result = k8s("trace", *args, "-o", "json", check=False)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def index(hops: list[dict], pred) -> int:
    return next(i for i, h in enumerate(hops) if pred(h))


def test_pod_to_cluster_ip_on_another_node(k8s):
    code, t = trace(k8s, "pod/default/client", "svc/default/svc-b")
    assert code == 0, t["verdict"]
    hops = t["hops"]
    svc_ip = k8s.get("svc", "svc-b")["spec"]["clusterIP"]
    b_ip = k8s.pods("app=b")[0]["status"]["podIP"]
    nodes = {n["metadata"]["name"]: n["status"]["addresses"][0]["address"]
             for n in json.loads(k8s("get", "nodes", "-o", "json").stdout)["items"]}
    # In order: sent from the pod; on worker1 the Service rule, the endpoint choice and the DNAT;
    # out through flannel.1, VXLAN over the underlay, decapsulated on worker2, delivered to b.
    sent = index(hops, lambda h: h["kind"] == "capture" and h["where"] == "pod default/client")
    assert f"> {svc_ip}:80 TCP [S]" in hops[sent]["summary"]
    svc_rule = index(hops, lambda h: h["kind"] == "rule" and h["node"] == "worker1"
                     and "default/svc-b:http cluster IP" in h["rule"])
    chose = index(hops, lambda h: h["kind"] == "rule" and h["node"] == "worker1"
                  and h["chain"].startswith("KUBE-SVC-") and "-j KUBE-SEP-" in h["rule"])
    dnat = index(hops, lambda h: h["kind"] == "rule" and h["node"] == "worker1"
                 and f"DNAT --to-destination {b_ip}:8080" in h["rule"])
    conntrack = index(hops, lambda h: h["kind"] == "conntrack" and h["node"] == "worker1")
    assert f"DNAT {svc_ip}:80 -> {b_ip}:8080" in hops[conntrack]["summary"]
    encap = index(hops, lambda h: h["kind"] == "capture" and h["node"] == "worker1" and h["interface"] == "eth0"
                  and "outer" in h)
    outer = hops[encap]["outer"]
    assert (outer["src"], outer["dst"], outer["dport"], outer["vni"]) == (nodes["worker1"], nodes["worker2"], 8472, 1)
    assert "encapsulated" in hops[encap]["note"]
    flannel_out = index(hops, lambda h: h["kind"] == "capture" and h["node"] == "worker1"
                        and h["interface"] == "flannel.1")
    decap = index(hops, lambda h: h["kind"] == "capture" and h["node"] == "worker2" and h["interface"] == "flannel.1")
    assert hops[decap]["note"] == "decapsulated" and hops[decap]["packet"]["dst"] == b_ip
    delivered = index(hops, lambda h: h["kind"] == "capture" and h["where"] == "pod default/b")
    assert sent < svc_rule < chose < dnat < conntrack < flannel_out < encap < decap < delivered == len(hops) - 1
    assert t["verdict"]["result"] == "DELIVERED" and t["verdict"]["where"] == "pod default/b"
    # The reply (SYN-ACK) comes back the same way, un-NATed before it reaches the client.
    reply = t["reply"]
    assert reply[0]["where"] == "pod default/b" and reply[-1]["where"] == "pod default/client"
    assert f"{svc_ip}:80 > " in reply[-1]["summary"] and "[SA]" in reply[-1]["summary"]


def test_service_without_endpoints_is_rejected_by_its_rule(k8s):
    code, t = trace(k8s, "pod/default/client", "svc/default/empty")
    assert code == 1
    v = t["verdict"]
    assert v["result"] == "REJECTED" and v["where"] == "node worker1" and v["by"] == "kube-proxy", v
    assert "default/empty has no endpoints" in v["reason"] and "-j REJECT" in v["reason"]
    assert "ICMP unreachable (port)" in t["reply"][-1]["summary"] and t["reply"][-1]["where"] == "pod default/client"


def test_policy_drop_names_the_policy(k8s):
    code, t = trace(k8s, "pod/default/client", "pod/locked/vault", "--port", "80")
    assert code == 1
    v = t["verdict"]
    assert v["result"] == "DROPPED" and v["where"] == "node worker2", v
    assert "locked/deny-all" in v["by"] and v["reason"].startswith("nft netsim-policy ingress-")
    assert t["reply"] == [] and t["elapsedMs"] < 1500
    # probe says the same about a denied connection.
    code, answer = k8s.probe("pod/default/client", "pod/locked/vault", "--port", "80", "--timeout", "0.5")
    assert code == 1 and answer["result"] == "deny"
    assert answer["droppedAt"] == "node worker2" and "locked/deny-all" in answer["droppedBy"], answer


def test_policy_drop_behind_a_service_names_the_policy(k8s):
    """A Service with two isolated endpoints, one on the client's node (worker1), one not.  The
    explanation is judged on the packet the drop rule saw (after kube-proxy's DNAT: the pod's
    address, port 80), not on the last capture, which may be the ClusterIP and port 8080: then
    no pod is selected and it said "the rules now in the store allow it"."""
    ips = {json.loads(k8s("get", "pod", p, "-n", "locked", "-o", "json").stdout)["status"]["podIP"]
           for p in ("near", "vault")}
    for _ in range(6):  # kube-proxy picks an endpoint at random: both kinds of drop
        code, t = trace(k8s, "pod/default/client", "svc/locked/near")
        v = t["verdict"]
        assert code == 1 and v["result"] == "DROPPED", v
        assert "locked/deny-all" in v["by"] and "allow it" not in v["by"], v
        assert any(f"ingress of {ip}:80 " in v["by"] for ip in ips), v
        code, answer = k8s.probe("pod/default/client", "svc/locked/near", "--timeout", "0.5")
        assert code == 1 and answer["result"] == "deny"
        assert "locked/deny-all" in answer["droppedBy"] and "allow it" not in answer["droppedBy"], answer
    explain = run_netsim("policy", "explain", "pod/default/client", "svc/locked/near", "-c", k8s.name)
    assert explain.returncode == 1, explain.stderr  # 1: denied
    explain = explain.stdout
    assert "locked/deny-all" in explain and "DENIED" in explain, explain


def test_a_pod_whose_gate_is_closed_is_dropped_by_its_gate(k8s):
    """A pod not yet opened by its agent (its rules not written): the gate is routing in the
    pod's own namespace (no rule event, not even an ARP answer), and the trace names it."""
    path = kernel.netns_path(podnet.pod_netns(k8s.name, "default", "b"))
    for family in ("-4", "-6"):  # back to a namespace without a gate, then closed as a new pod's is
        subprocess.run(["nsenter", f"--net={path}", "ip", family, "rule", "del", "pref", "0", "table", "local"],
                       check=True)
        subprocess.run(["nsenter", f"--net={path}", "ip", family, "rule", "add", "pref", "0", "table", "local"],
                       check=True)
    assert gate.close(path) is True
    try:
        assert gate.state(path) == "closed"
        code, t = trace(k8s, "pod/default/client", "pod/default/b", "--port", "8080")
    finally:
        gate.open_(path)
    assert code == 1
    v = t["verdict"]
    assert v["result"] == "DROPPED" and v["where"] == "pod default/b" and "gate" in v["by"], v
    assert t["reply"] == []
    code, t = trace(k8s, "pod/default/client", "pod/default/b", "--port", "8080")
    assert code == 0 and t["verdict"]["result"] == "DELIVERED", t["verdict"]


def test_nodeport_from_the_external_host_is_masqueraded(k8s):
    code, t = trace(k8s, "host/client", "node/control-plane", "--port", "30081")
    assert code == 0, t["verdict"]
    hops = t["hops"]
    client_ip = hops[0]["packet"]["src"]
    ct = next(h for h in hops if h["kind"] == "conntrack" and h["node"] == "control-plane")
    assert any(n.startswith(f"SNAT {client_ip}:") for n in ct["conntrack"]["nat"]), ct
    masq = next(h for h in hops if h["kind"] == "rule" and h["node"] == "control-plane" and "MASQUERADE" in h["rule"])
    assert "kubernetes service traffic requiring SNAT" in masq["rule"]
    arrived = hops[-1]
    assert arrived["where"] == "pod default/b" and arrived["packet"]["src"] != client_ip
    # The answer goes back to the external host from the node's address and NodePort.
    assert t["reply"][-1]["where"] == "host client" and t["reply"][-1]["packet"]["sport"] == 30081


def test_udp_and_icmp(k8s):
    code, t = trace(k8s, "pod/default/client", "svc/default/svc-b", "--port", "53", "--proto", "udp")
    assert code == 0 and t["verdict"]["result"] == "DELIVERED", t["verdict"]
    assert t["reply"] and t["reply"][-1]["where"] == "pod default/client"
    code, t = trace(k8s, "node/worker1", "pod/default/b", "--proto", "icmp")
    assert code == 0 and "echo-reply" in t["verdict"]["reason"], t["verdict"]


def test_text_output_pcap_and_nothing_left_armed(k8s, tmp_path):
    from scapy.utils import rdpcap

    pcap = tmp_path / "t.pcapng"
    result = k8s("trace", "pod/default/client", "svc/default/svc-b", "--pcap", str(pcap))
    lines = result.stdout.splitlines()
    assert lines[0] == "trace pod/default/client -> svc/default/svc-b 80/TCP"
    assert any(line.startswith("verdict: DELIVERED at pod default/b") for line in lines)
    assert "reply:" in lines and any("^ encapsulated: VXLAN VNI 1, UDP 8472" in line for line in lines)
    packets = rdpcap(str(pcap))
    captures = int(lines[-1].split(", ")[1].split()[0])
    assert len(packets) == captures >= 10
    # Nothing of the trace stays: no marker table, every node's IPv4 logger as it was.
    for node in ("control-plane", "worker1", "worker2"):
        netns = names.netns_name(k8s.name, node)
        ns = kernel.Namespace.open(netns)
        try:
            assert ns.sysctl(nftrace.LegacyTraceListener.SYSCTL) != "nfnetlink_log"
        finally:
            ns.close()
        with kernel.entered(kernel.netns_path(netns)):
            import subprocess

            tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        assert "netsim-trace" not in tables


def test_errors(k8s):
    bad = k8s("trace", "pod/default/nope", "svc/default/svc-b", check=False)
    assert bad.returncode == 2 and "pod default/nope not found" in bad.stderr
    bad = k8s("trace", "pod/default/client", "svc/default/svc-b", "--proto", "sctp", check=False)
    assert bad.returncode == 2 and "--proto" in bad.stderr


def test_nftables_mode(tmp_path, state_dir):
    """kube-proxy in nftables mode: the rules come from nftables trace events."""
    name = unique_name("trn")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO + "networking:\n  kubeProxyMode: nftables\n")
    up = run_netsim("up", str(scenario), "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        k = K8s(name, tmp_path)
        k.apply(APP.split("---\napiVersion: v1\nkind: Namespace")[0])
        assert len(running(k.pods("app=b"))) == 1
        code, t = trace(k, "pod/default/client", "svc/default/svc-b")
        assert code == 0, t["verdict"]
        b_ip = k.pods("app=b")[0]["status"]["podIP"]
        dnat = [h for h in t["hops"] if h["kind"] == "rule" and h["table"] == "kube-proxy"
                and f"dnat to {b_ip}:8080" in h["rule"]]
        assert dnat and dnat[0]["node"] == "worker1" and dnat[0]["source"] == "nft", t["hops"]
        code, t = trace(k, "pod/default/client", "svc/default/empty")
        v = t["verdict"]
        assert code == 1 and v["result"] == "REJECTED" and v["by"] == "kube-proxy", v
        assert "@no-endpoint-services" in v["reason"], v
    finally:
        assert run_netsim("down", name).returncode == 0
