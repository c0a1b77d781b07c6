"""The ``portmap`` chained plugin: real iptables rules in a runtime namespace, real TCP
through them, and the reference plugin (/usr/lib/cni/portmap) as the yardstick."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import select
import shlex
import subprocess
import sys
import time

import pytest

from netsim.cni import portmap, spec
from tests.cni_util import REFERENCE

REF = str(REFERENCE / "portmap")
NET = "pmnet"
HOST_IP, POD_IP, CLIENT_IP, CLIENT_GW = "10.99.0.1", "10.99.0.2", "10.98.0.2", "10.98.0.1"

SERVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
s.settimeout(0.5)
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        c, peer = s.accept()
    except socket.timeout:
        continue
    c.sendall(("hello from " + peer[0] + "\n").encode())
    c.close()
"""

CLIENT = r"""
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    c.settimeout(2)
    print(c.recv(100).decode().strip())
except OSError as exc:
    print("ERR", type(exc).__name__)
"""


# -- helpers ------------------------------------------------------------------------------
def prev_result(netns: str, v4: str | None = f"{POD_IP}/24", v6: str | None = None) -> dict:
    ips = [{"address": a, "interface": 0} for a in (v4, v6) if a]
    return {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": netns}], "ips": ips}


def conf(mappings, prev=None, *, name=NET, version="1.0.0", **extra) -> dict:
    c = {"cniVersion": version, "name": name, "type": "portmap", **extra}
    if mappings is not None:
        c["runtimeConfig"] = {"portMappings": mappings}
    if prev is not None:
        c["prevResult"] = prev
    return c


def ok(call):
    assert call.rc == 0, (call.raw, call.stderr)
    return call


def nat(box, family: int = 4) -> str:
    """The runtime namespace's nat table, without timestamps and counters."""
    out = box.in_runtime("ip6tables-save" if family == 6 else "iptables-save", "-t", "nat")
    return "\n".join(re.sub(r"\[\d+:\d+\]", "[0:0]", line) for line in out.splitlines()
                     if not line.startswith("#"))


def ipt(box, *argv: str, family: int = 4) -> None:
    box.in_runtime("ip6tables" if family == 6 else "iptables", "-t", "nat", *argv)


def dn(container_id: str, name: str = NET) -> str:
    return portmap.chain_name(name, container_id)


def cni_chains(text: str) -> set[str]:
    return set(re.findall(r"^:(CNI-\S+)", text, re.M))


def wire(box, netns: str) -> str:
    """A veth from the runtime namespace (HOST_IP) into the container (POD_IP), and a client
    namespace routed through the runtime namespace (CLIENT_IP, gateway CLIENT_GW); returns
    the client namespace's name."""
    rt, pod = box.runtime, os.path.basename(netns)
    client = os.path.basename(box.container("client"))

    def ip(*argv):
        subprocess.run(["ip", *argv], check=True, timeout=10, capture_output=True)

    ip("-n", rt, "link", "set", "lo", "up")
    ip("-n", rt, "link", "add", "pm0", "type", "veth", "peer", "name", "eth0", "netns", pod)
    ip("-n", rt, "link", "add", "pmc", "type", "veth", "peer", "name", "eth0", "netns", client)
    for ns, dev, addr, gw in ((rt, "pm0", f"{HOST_IP}/24", None), (rt, "pmc", f"{CLIENT_GW}/24", None),
                              (pod, "eth0", f"{POD_IP}/24", HOST_IP), (client, "eth0", f"{CLIENT_IP}/24", CLIENT_GW)):
        ip("-n", ns, "addr", "add", addr, "dev", dev)
        ip("-n", ns, "link", "set", dev, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        if gw:
            ip("-n", ns, "route", "add", "default", "via", gw)
    box.in_runtime("sysctl", "-qw", "net.ipv4.ip_forward=1")
    return client


def listen(netns: str, port: int, seconds: float = 20) -> subprocess.Popen:
    proc = subprocess.Popen(["ip", "netns", "exec", os.path.basename(netns), sys.executable, "-c", SERVER,
                             str(port), str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready and proc.stdout.readline().strip() == b"ready", "listener did not start"
    return proc


def connect(netns_name: str, host: str, port: int) -> str:
    return subprocess.run(["ip", "netns", "exec", netns_name, sys.executable, "-c", CLIENT, host, str(port)],
                          capture_output=True, text=True, timeout=15, check=True).stdout.strip()


# -- traffic ------------------------------------------------------------------------------
def test_host_port_reaches_the_container_until_del(cni_sandbox):
    box = cni_sandbox
    netns = box.container("pod")
    client = wire(box, netns)
    mappings = [{"hostPort": 8080, "containerPort": 80}]
    c = conf(mappings, prev_result(netns))
    server = listen(netns, 80)
    try:
        assert connect(box.runtime, HOST_IP, 8080).startswith("ERR")
        call = ok(box.call("portmap", "ADD", c, container_id="pod1", netns=netns))
        assert call.out["ips"] == [{"address": f"{POD_IP}/24", "interface": 0}]
        # From the node itself, to its own address and to localhost (route_localnet + masquerade).
        assert connect(box.runtime, HOST_IP, 8080) == f"hello from {HOST_IP}"
        assert box.in_runtime("cat", "/proc/sys/net/ipv4/conf/pm0/route_localnet").strip() == "1"
        assert connect(box.runtime, "127.0.0.1", 8080) == f"hello from {HOST_IP}"
        # From another machine: DNAT without masquerade, the client's address is kept.
        assert connect(client, CLIENT_GW, 8080) == f"hello from {CLIENT_IP}"
        # Hairpin: the pod reaches itself through the host port, masqueraded to the node.
        assert connect(os.path.basename(netns), HOST_IP, 8080) == f"hello from {HOST_IP}"

        ok(box.call("portmap", "DEL", c, container_id="pod1", netns=netns))
        assert connect(box.runtime, HOST_IP, 8080).startswith("ERR")
        assert connect(client, CLIENT_GW, 8080).startswith("ERR")
        assert connect(box.runtime, POD_IP, 80) == f"hello from {HOST_IP}"  # the pod itself still serves
    finally:
        server.kill()
        server.wait(timeout=5)


# -- rule layout --------------------------------------------------------------------------
def test_rule_layout(cni_sandbox):
    box = cni_sandbox
    netns = box.container("pod")
    mappings = [{"hostPort": 8080, "containerPort": 80, "protocol": "TCP"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
                {"hostPort": 9000, "containerPort": 90, "hostIP": "fd00::1"}]
    ok(box.call("portmap", "ADD", conf(mappings, prev_result(netns)), container_id="abc", netns=netns))
    chain = dn("abc")
    assert chain == "CNI-DN-" + hashlib.sha512(f"{NET}abc".encode()).hexdigest()[:21]
    rules = [line for line in nat(box).splitlines() if line.startswith("-A")]
    comment = r'"dnat name: \"pmnet\" id: \"abc\""'
    assert rules == [
        "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
        "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
        '-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ',
        f"-A {chain} -s 10.99.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
        f"-A {chain} -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
        f"-A {chain} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.99.0.2:80",
        f"-A {chain} -s 10.99.0.0/24 -d 127.0.0.1/32 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK",
        f"-A {chain} -s 127.0.0.1/32 -d 127.0.0.1/32 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK",
        f"-A {chain} -d 127.0.0.1/32 -p udp -m udp --dport 5353 -j DNAT --to-destination 10.99.0.2:53",
        f"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {comment} -m multiport --dports 8080,9000 -j {chain}",
        f"-A CNI-HOSTPORT-DNAT -p udp -m comment --comment {comment} -m multiport --dports 5353 -j {chain}",
        "-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE",
        '-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000',
    ]
    assert not cni_chains(nat(box, 6)), "an IPv4-only pod gets no ip6tables rules"


def test_add_again_rewrites_the_chain_and_never_duplicates_shared_rules(cni_sandbox):
    box = cni_sandbox
    netns = box.container("pod")
    prev = prev_result(netns)
    for _ in range(2):
        ok(box.call("portmap", "ADD", conf([{"hostPort": 8080, "containerPort": 80}], prev),
                    container_id="abc", netns=netns))
    first = nat(box)
    ok(box.call("portmap", "ADD", conf([{"hostPort": 8081, "containerPort": 80}], prev),
                container_id="abc", netns=netns))
    again = nat(box)
    for text in (first, again):
        rules = [line for line in text.splitlines() if line.startswith("-A")]
        assert len(rules) == len(set(rules)), text
        assert sum("-j CNI-HOSTPORT-MASQ" in r for r in rules) == 1
    assert "8081" in again and "8080" not in again


def test_no_mappings_passes_prev_result_through_and_touches_nothing(cni_sandbox):
    box = cni_sandbox
    netns = box.container("pod")
    before = nat(box)
    prev = prev_result(netns, v6="fd99::2/64")
    for mappings in (None, []):
        call = ok(box.call("portmap", "ADD", conf(mappings, prev), container_id="abc", netns=netns))
        assert call.out == {**prev, "dns": {}}
        ok(box.call("portmap", "DEL", conf(mappings, prev), container_id="abc", netns=netns))
    assert nat(box) == before and not cni_chains(before)


# -- against the reference plugin ---------------------------------------------------------
DIFF_CASES = {  # the reference (1.1.1) has no default protocol: every mapping names one
    "dual-stack": ({}, [
        *({"hostPort": 20000 + i, "containerPort": 80 + i, "protocol": "tcp"} for i in range(17)),  # multiport: 15
        {"hostPort": 8081, "containerPort": 81, "protocol": "udp"},
        {"hostPort": 8082, "containerPort": 82, "protocol": "sctp"},
        {"hostPort": 9090, "containerPort": 90, "protocol": "tcp", "hostIP": "127.0.0.1"},
        {"hostPort": 9091, "containerPort": 91, "protocol": "tcp", "hostIP": "fd00::1"},
        {"hostPort": 9092, "containerPort": 92, "protocol": "tcp", "hostIP": "0.0.0.0"}]),
    "conditions-markbit": ({"markMasqBit": 5, "conditionsV4": ["!", "-s", "192.168.0.0/16"],
                            "conditionsV6": ["-d", "fd00::/8"]},
                           [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
    "no-snat": ({"snat": False}, [{"hostPort": 8080, "containerPort": 80, "protocol": "udp"}]),
    "external-mark": ({"externalSetMarkChain": "KUBE-MARK-MASQ"},
                      [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
}


@pytest.mark.parametrize("case", list(DIFF_CASES))
def test_same_rules_as_the_reference_plugin(cni_sandbox, case):
    box = cni_sandbox
    netns = box.container("pod")
    extra, mappings = DIFF_CASES[case]
    if "externalSetMarkChain" in extra:
        for family in (4, 6):
            ipt(box, "-N", "KUBE-MARK-MASQ", family=family)
    c = conf(mappings, prev_result(netns, v6="fd99::2/64"), **extra)
    kw = {"container_id": "ctr-1", "netns": netns}

    ours = ok(box.call("portmap", "ADD", c, **kw))
    ours_rules = (nat(box, 4), nat(box, 6))
    ok(box.call("portmap", "DEL", c, **kw))
    after_ours = (nat(box, 4), nat(box, 6))
    # The reference plugin, adding into what ours left (the shared chains): it must find
    # our shared rules equal to its own (no duplicates) and write the same container chain.
    ref = ok(box.call(REF, "ADD", c, **kw))
    ref_rules = (nat(box, 4), nat(box, 6))
    assert ref_rules == ours_rules
    assert ours.out == ref.out  # prevResult passed through alike
    assert dn("ctr-1") in cni_chains(ref_rules[0]) and dn("ctr-1") in cni_chains(ref_rules[1])
    ok(box.call(REF, "DEL", c, **kw))
    assert (nat(box, 4), nat(box, 6)) == after_ours
    assert all(dn("ctr-1") not in cni_chains(t) for t in after_ours)


def test_each_plugin_deletes_what_the_other_added(cni_sandbox):
    box = cni_sandbox
    netns = box.container("pod")
    c = conf([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
              {"hostPort": 53, "containerPort": 53, "protocol": "udp"}], prev_result(netns, v6="fd99::2/64"))
    for adder, deleter in ((REF, "portmap"), ("portmap", REF)):
        ok(box.call(adder, "ADD", c, container_id="x1", netns=netns))
        ok(box.call(adder, "ADD", c, container_id="x2", netns=netns))
        for family in (4, 6):
            assert {dn("x1"), dn("x2")} <= cni_chains(nat(box, family))
        ok(box.call(deleter, "DEL", c, container_id="x1", netns=netns))
        for family in (4, 6):
            text = nat(box, family)
            assert dn("x1") not in text, (adder, deleter, text)  # neither the chain nor a jump to it
            assert dn("x2") in cni_chains(text)
        ok(box.call(deleter, "DEL", c, container_id="x2", netns=netns))
        assert all(dn("x2") not in nat(box, f) for f in (4, 6))


def test_check_accepts_either_plugins_rules_and_fails_once_they_are_gone(cni_sandbox):
    box = cni_sandbox
    netns = box.container("pod")
    c = conf([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}], prev_result(netns))
    kw = {"container_id": "chk", "netns": netns}
    ok(box.call(REF, "ADD", c, **kw))
    ok(box.call("portmap", "CHECK", c, **kw))
    ok(box.call(REF, "DEL", c, **kw))
    ok(box.call("portmap", "ADD", c, **kw))
    ok(box.call("portmap", "CHECK", c, **kw))
    # A mapping CHECK is told about but ADD never made.
    other = conf([{"hostPort": 8080, "containerPort": 80}, {"hostPort": 8081, "containerPort": 81}],
                 prev_result(netns))
    call = box.call("portmap", "CHECK", other, **kw)
    assert call.rc != 0 and "8081" in call.error.get("details", ""), call.raw

    chain = dn("chk")
    ipt(box, "-F", chain)
    call = box.call("portmap", "CHECK", c, **kw)
    assert call.rc != 0 and "8080" in call.error.get("details", ""), call.raw
    for line in nat(box).splitlines():
        if line.startswith("-A ") and line.endswith(f"-j {chain}"):
            ipt(box, "-D", *shlex.split(line)[1:])
    ipt(box, "-X", chain)
    call = box.call("portmap", "CHECK", c, **kw)
    assert call.rc != 0 and chain in call.error["msg"], call.raw
    # CHECK needs prevResult (and a config ADD would take).
    assert box.call("portmap", "CHECK", conf([{"hostPort": 8080, "containerPort": 80}]), **kw).error["code"] == 7


def test_del_is_idempotent(cni_sandbox):
    box = cni_sandbox
    netns = box.container("pod")
    prev = prev_result(netns)
    c = conf([{"hostPort": 8080, "containerPort": 80}], prev)
    ok(box.call("portmap", "DEL", c, container_id="gone", netns=netns))  # nothing was ever added
    ok(box.call("portmap", "ADD", c, container_id="d1", netns=netns))
    ok(box.call("portmap", "DEL", c, container_id="d1", netns=netns))
    ok(box.call("portmap", "DEL", c, container_id="d1", netns=netns))
    ok(box.call("portmap", "ADD", c, container_id="d2", netns=netns))
    no_prev = conf([{"hostPort": 8080, "containerPort": 80}])
    ok(box.call("portmap", "DEL", no_prev, container_id="d2", netns="/run/netns/no-such-namespace"))
    ok(box.call("portmap", "DEL", no_prev, container_id="d2"))  # no netns at all
    # DEL of a config ADD refused must not fail the runtime's retries forever.
    ok(box.call("portmap", "DEL", conf([{"hostPort": 0, "protocol": "icmp"}]), container_id="d3"))
    text = nat(box)
    assert not [c for c in cni_chains(text) if c.startswith("CNI-DN-")], text


# -- GC, STATUS, errors -------------------------------------------------------------------
def test_gc_removes_chains_of_containers_no_longer_attached(cni_sandbox):
    box = cni_sandbox
    netns = box.container("pod")
    prev = prev_result(netns)
    c = conf([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}], prev)
    for cid in ("keep", "stale1"):
        ok(box.call("portmap", "ADD", c, container_id=cid, netns=netns))
    ok(box.call(REF, "ADD", c, container_id="stale2", netns=netns))  # the reference plugin's are found too
    ok(box.call("portmap", "ADD", conf([{"hostPort": 8081, "containerPort": 80}], prev, name="othernet"),
                container_id="stale1", netns=netns))
    gc = conf(None, version="1.1.0", **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    ok(box.call("portmap", "GC", gc))
    text = nat(box)
    chains = cni_chains(text)
    assert dn("keep") in chains and dn("stale1", "othernet") in chains  # another network's are not ours
    assert dn("stale1") not in text and dn("stale2") not in text
    ok(box.call("portmap", "GC", gc))  # nothing left to do
    assert nat(box) == text


def test_status(cni_sandbox, tmp_path):
    box = cni_sandbox
    status = conf(None, version="1.1.0")
    ok(box.call("portmap", "STATUS", status))
    # An iptables that does not work: STATUS answers 50 ("plugin not available").
    for tool in ("iptables", "iptables-save"):
        (tmp_path / tool).write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / tool).chmod(0o755)
    call = box.call("portmap", "STATUS", status, env={"PATH": f"{tmp_path}:{os.environ.get('PATH', '/usr/bin')}"})
    assert call.error["code"] == 50, call.raw


@pytest.mark.parametrize("mapping, extra, code", [
    ({"hostPort": 8080, "containerPort": 80, "protocol": "icmp"}, {}, 7),
    ({"hostPort": 70000, "containerPort": 80}, {}, 7),
    ({"hostPort": 0, "containerPort": 80}, {}, 7),
    ({"hostPort": 8080, "containerPort": -1}, {}, 7),
    ({"hostPort": "8080", "containerPort": 80}, {}, 7),
    ({"hostPort": 8080, "containerPort": 80, "hostIP": "not-an-ip"}, {}, 7),
    ({"hostPort": 8080, "containerPort": 80}, {"markMasqBit": 32}, 7),
    ({"hostPort": 8080, "containerPort": 80}, {"markMasqBit": 14, "externalSetMarkChain": "X"}, 7),
    ({"hostPort": 8080, "containerPort": 80}, {"snat": "yes"}, 7),
    ({"hostPort": 8080, "containerPort": 80}, {"backend": "nftables"}, 2),
    ({"hostPort": 8080, "containerPort": 80}, {"prevResult": None}, 7),
])
def test_invalid_config(cni_sandbox, mapping, extra, code):
    box = cni_sandbox
    netns = box.container("pod")
    c = conf([mapping], prev_result(netns), **extra)
    if "prevResult" in extra:
        del c["prevResult"]
    call = box.call("portmap", "ADD", c, container_id="bad", netns=netns)
    assert call.rc != 0 and call.error["code"] == code, call.raw
    assert call.error["msg"]
    assert not cni_chains(nat(box))


def test_many_adds_stay_fast(cni_sandbox):
    """One save and one restore per call: ten pods' ADD and DEL well within a few seconds."""
    box = cni_sandbox
    netns = box.container("pod")
    c = conf([{"hostPort": 8080 + i, "containerPort": 80} for i in range(3)], prev_result(netns))
    start = time.monotonic()
    for i in range(10):
        ok(box.call("portmap", "ADD", c, container_id=f"p{i}", netns=netns))
    text = nat(box)
    assert len([x for x in cni_chains(text) if x.startswith("CNI-DN-")]) == 10
    for i in range(10):
        ok(box.call("portmap", "DEL", c, container_id=f"p{i}", netns=netns))
    assert time.monotonic() - start < 10
    assert not [x for x in cni_chains(nat(box)) if x.startswith("CNI-DN-")]


def test_restore_quoting_round_trips(cni_sandbox):
    """Network names with quotes, backslashes and spaces reach the comment intact."""
    box = cni_sandbox
    netns = box.container("pod")
    name = 'we ird"net\\x'
    c = conf([{"hostPort": 8080, "containerPort": 80}], prev_result(netns), name=name)
    ok(box.call("portmap", "ADD", c, container_id="q1", netns=netns))
    ok(box.call("portmap", "CHECK", c, container_id="q1", netns=netns))
    rule = next(line for line in nat(box).splitlines() if line.startswith("-A CNI-HOSTPORT-DNAT"))
    assert portmap.dnat_comment(name, "q1") in shlex.split(rule)
    assert portmap.chain_name(name, "q1") in rule
    ok(box.call("portmap", "DEL", c, container_id="q1", netns=netns))
    assert portmap.chain_name(name, "q1") not in nat(box)


def test_results_json_is_valid_for_every_version(cni_sandbox):
    box = cni_sandbox
    netns = box.container("pod")
    for version in ("0.3.1", "0.4.0", "1.0.0", "1.1.0"):
        prev = {**prev_result(netns), "cniVersion": version}
        call = ok(box.call("portmap", "ADD", conf([{"hostPort": 8080, "containerPort": 80}], prev,
                                                  version=version), container_id="v", netns=netns))
        assert call.out["cniVersion"] == version
        assert json.loads(call.raw)["ips"][0]["address"] == f"{POD_IP}/24"


def test_masq_all_and_long_comments():
    """Upstream's later ``masqAll`` (masquerade every source) and its 255-byte comment cap."""
    req = spec.Request(command="ADD", container_id="c" * 300, netns="", ifname="eth0", args={}, path=[],
                       config=conf([{"hostPort": 8080, "containerPort": 80}], masqAll=True), env={}, stdin=b"")
    c = portmap.parse(req)
    rules = portmap.dnat_rules(c, ipaddress.ip_interface("10.99.0.2/24"))
    assert rules == [["-p", "tcp", "--dport", "8080", "-s", "0.0.0.0/0", "-j", "CNI-HOSTPORT-SETMARK"],
                     ["-p", "tcp", "--dport", "8080", "-j", "DNAT", "--to-destination", "10.99.0.2:80"]]
    comment = portmap.entry_rules(c, 4)[0][3]
    assert len(comment.encode()) == 255 and comment.endswith("...")
    assert len(portmap.chain_name(NET, "c" * 300)) == 28
