"""`netsim trace` (netsim.observe.trace) over Calico's IPIP dataplane: Felix's tunl0 state built
on real namespaces (test_felix's lab: three nodes, pods wired as the calico CNI plugin wires
them), then one real packet followed from pod to pod through tunl0, the underlay as IP
protocol 4, and tunl0 on the peer.

This machine's kernel has no ipip: ``test_trace_ipip_in_a_guest`` runs the IPIP test in a
qemu guest (netsim.kernel.guest) whose kernel has it; here it is skipped.  With
NETSIM_TRACE_RECORD=1 the IPIP test prints what it saw (captures and route tables) as JSON,
the recording tests/data/calico/observe-ipip.json that the unit tests replay."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest

from netsim import kernel
from netsim.api.registry import new_object
from netsim.kernel import guest
from netsim.model import k8s
from netsim.observe import trace
from tests.kernel.test_felix import GUEST_ENV, IPS, ROOT, WHY_NO_IPIP, build, needs_ipip

RECORD_MARK = "NETSIM-TRACE-RECORDING "


def add_pods(lab) -> None:
    """The Pod objects of the lab's pods, as the API server holds them: trace resolves pod/NS/NAME there."""
    for node, ip in lab.pod_ips.items():
        lab.store.create(k8s.key("Pod", "default", f"pod-{node}"), new_object({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"pod-{node}", "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "agnhost"}]},
            "status": {"phase": "Running", "podIP": ip}}))


def recording(lab, result: trace.Result) -> dict:
    """What the unit tests replay: the captures in time order and each node's main table."""
    nodes = {}
    for n in ("n1", "n2", "n3"):
        with kernel.Namespace.open(lab.node(n).netns) as ns:
            nodes[n] = {"links": {k: {"index": v["index"], "kind": v["kind"]} for k, v in ns.links().items()},
                        "routes": ns.route_entries()}
    return {"cluster": lab.c.name, "flow": result.as_dict()["packet"], "podIPs": lab.pod_ips,
            "nodeIPs": IPS, "tunnelAddresses": {n: lab.notes(n)["projectcalico.org/IPv4IPIPTunnelAddr"]
                                                for n in ("n1", "n2", "n3")},
            "captures": [{"timeNs": c.time_ns, "netns": c.netns, "ifname": c.ifname, "outgoing": c.outgoing,
                          "frame": c.raw.hex()} for c in result.captures],
            "nodes": nodes}


@needs_ipip
def test_ipip_trace_shows_encapsulation_on_tunl0_the_wire_and_decapsulation(make_cluster):
    lab = build(make_cluster, ipip="Always", vxlan="Never")
    lab.converge(bird=True)
    add_pods(lab)
    tunnel = {n: lab.notes(n)["projectcalico.org/IPv4IPIPTunnelAddr"] for n in ("n1", "n3")}
    result = trace.run(lab.c, lab.store, "pod/default/pod-n1", "pod/default/pod-n3", proto="icmp", timeout=3)
    if os.environ.get("NETSIM_TRACE_RECORD"):
        print("\n" + RECORD_MARK + json.dumps(recording(lab, result)))
    doc = result.as_dict()
    hops = doc["hops"]
    assert doc["verdict"]["result"] == "DELIVERED" and doc["verdict"]["where"] == "pod default/pod-n3", doc["verdict"]
    captures = [(h["node"], h["interface"], h["direction"]) for h in hops if h["kind"] == "capture"]
    n1, n3 = (lab.node(n).netns for n in ("n1", "n3"))
    # pod eth0 -> cali veth on n1 -> tunl0 -> eth0 (IPIP) ... eth0 on n3 -> tunl0 -> cali veth -> pod
    cali1 = next(i for i, c in enumerate(captures) if c[0] == "n1" and c[1].startswith("cali") and c[2] == "in")
    assert captures[cali1 + 1:cali1 + 3] == [("n1", "tunl0", "out"), ("n1", "eth0", "out")], captures
    assert ("n3", "eth0", "in") in captures and ("n3", "tunl0", "in") in captures, captures
    by_place = {(h["netns"], h.get("interface"), h.get("direction")): h for h in hops if h["kind"] == "capture"}
    assert "routed from the pod's veth, no bridge" in by_place[(n1, captures[cali1][1], "in")]["note"]
    wire = by_place[(n1, "eth0", "out")]
    assert wire["outer"] == {"src": IPS["n1"], "dst": IPS["n3"], "proto": "IPIP", "encap": "ipip"}, wire
    assert wire["note"] == f"encapsulated: IPIP (IP protocol 4), {IPS['n1']} -> {IPS['n3']}", wire
    assert wire["summary"].startswith(f"IPIP {IPS['n1']} > {IPS['n3']} | {lab.pod_ips['n1']} > {lab.pod_ips['n3']}")
    decap = by_place[(n3, "tunl0", "in")]
    assert decap["note"] == "decapsulated" and "outer" not in decap and decap["packet"]["dst"] == lab.pod_ips["n3"]
    # The routes each node took, named: Felix's IPIP tunnel route on n1, the workload route on n3.
    route1 = next(h for h in hops if h["kind"] == "route" and h["node"] == "n1")
    assert route1["route"]["kind"] == "tunnel" and "IPIP (IP protocol 4) via tunl0" in route1["route"]["what"]
    assert re.fullmatch(rf"\S+/26 via {re.escape(IPS['n3'])} dev tunl0 proto 80 onlink", route1["route"]["matched"])
    route3 = next(h for h in hops if h["kind"] == "route" and h["node"] == "n3")
    assert route3["route"]["kind"] == "workload"
    assert route3["route"]["matched"].startswith(f"{lab.pod_ips['n3']} dev cali"), route3
    # The echo reply comes back through tunl0 the other way.
    back = [h for h in doc["reply"] if h["kind"] == "capture" and h.get("outer")]
    assert back and back[0]["outer"]["src"] == IPS["n3"] and back[0]["outer"]["encap"] == "ipip", doc["reply"]
    assert tunnel["n1"] != tunnel["n3"]


def test_trace_ipip_in_a_guest():
    if not WHY_NO_IPIP:
        pytest.skip("this kernel has ipip: the IPIP trace test above ran here")
    why = guest.unavailable()
    if why and os.environ.get("NETSIM_REQUIRE_GUEST"):
        pytest.fail(f"NETSIM_REQUIRE_GUEST is set and {why}")
    if why:
        pytest.skip(f"{WHY_NO_IPIP}, and no guest to run the IPIP trace test in: {why}")
    extra = ["-s"] if os.environ.get("NETSIM_TRACE_RECORD") else []
    rc, output = guest.run(["env", f"{GUEST_ENV}=1", *(["NETSIM_TRACE_RECORD=1"] if extra else []), sys.executable,
                            "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *extra,
                            "tests/kernel/test_trace_calico.py", "-k", "ipip and not in_a_guest"],
                           cwd=str(ROOT), timeout=900)
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    for line in output.splitlines():
        if line.startswith(RECORD_MARK):
            print(line)  # for -s: the recording comes out of the guest on its console output
    assert rc == 0, output[-6000:]
    assert re.search(r"\b1 passed", summary) and "skipped" not in summary, output[-3000:]
