"""A pod's gate (netsim.cni.gate) and the netsim-policy plugin that closes it, on real namespaces:
closed, nothing but loopback passes either way; open, everything does; closing never
re-closes an open gate; the rules are in the pod's namespace only."""

from __future__ import annotations

import contextlib
import errno
import socket

from netsim import kernel
from netsim.cni import gate
from netsim.model import names

NODE_IP, POD_IP, PORT = "10.98.0.1", "10.98.0.2", 8080


def _wire(box) -> tuple[str, str]:
    """The runtime namespace and one container joined by a veth; (container name, its path)."""
    path = box.container("pod")
    name = box.made[-1]
    with kernel.Namespace.open(box.runtime) as node, kernel.Namespace.open(name) as pod:
        with node.batch() as b:
            b.add_veth("vgate0", "eth0", pod, 1500)
            b.set_link("lo", index=1, up=True)
        with node.batch() as b:
            b.add_address(node.index("vgate0"), f"{NODE_IP}/24", nodad=True)
            b.set_link("vgate0", up=True)
        with pod.batch() as b:
            b.set_link("lo", index=1, up=True)
            b.add_address(pod.index("eth0"), f"{POD_IP}/24", nodad=True)
            b.set_link("eth0", up=True)
    return name, path


def _listen(netns: str, ip: str) -> socket.socket:
    s = kernel.socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, PORT))
    s.listen(16)
    return s


def _connects(netns: str, ip: str, timeout: float = 0.3) -> str:
    """The outcome of one TCP connect.  Expect "connected" with a timeout of a few seconds: a
    veth just up may drop the first packets until the kernel's link watch gives it a qdisc."""
    with contextlib.closing(kernel.socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(timeout)
        try:
            s.connect((ip, PORT))
        except TimeoutError:
            return "timeout"
        except ConnectionRefusedError:
            return "refused"
        except OSError as exc:
            return errno.errorcode.get(exc.errno, repr(exc))
        return "connected"


def _rules(netns: str) -> list[dict]:
    with kernel.Namespace.open(netns) as ns:
        return ns.rules(socket.AF_INET) + ns.rules(socket.AF_INET6)


def test_a_closed_gate_drops_both_ways_but_loopback_and_opening_lets_all_through(cni_sandbox):
    pod, path = _wire(cni_sandbox)
    servers = [_listen(pod, "0.0.0.0"), _listen(cni_sandbox.runtime, NODE_IP)]
    try:
        assert _connects(cni_sandbox.runtime, POD_IP, 3) == "connected"  # the control: nothing in the way
        assert gate.state(path) is None

        kernel_rules = _rules(pod)
        assert gate.close(path) is True
        assert gate.state(path) == "closed"
        assert _connects(cni_sandbox.runtime, POD_IP) == "timeout"  # dropped (not even ARP), not refused
        assert _connects(pod, NODE_IP) == "EINVAL"  # no route out: the blackhole rule
        assert _connects(pod, "127.0.0.1", 3) == "connected"
        assert _connects(pod, POD_IP, 3) == "connected"  # its own address: over lo
        assert gate.close(path) is False and gate.state(path) == "closed"

        gate.open_(path)
        assert gate.state(path) == "open"
        assert _connects(cni_sandbox.runtime, POD_IP, 3) == "connected"
        assert _connects(pod, NODE_IP, 3) == "connected"
        gate.open_(path)  # idempotent
        assert gate.close(path) is False and gate.state(path) == "open"  # never re-closed
        assert _connects(cni_sandbox.runtime, POD_IP, 3) == "connected"
        # Open is the kernel's rule set again (its local rule tagged as netsim's).
        opened = _rules(pod)
        assert [{**r, "protocol": None} for r in opened] == [{**r, "protocol": None} for r in kernel_rules]
        assert [r["protocol"] for r in opened if r["priority"] == 0] == [gate.PROTO, gate.PROTO]
    finally:
        for s in servers:
            s.close()
    # Nothing in the runtime's (the node's) namespace: the gate lives in the pod's.
    assert all(r["protocol"] != gate.PROTO for r in _rules(cni_sandbox.runtime))


def test_netsim_policy_closes_the_containers_gate_and_checks_it(cni_sandbox):
    pod, path = _wire(cni_sandbox)
    prev = {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": path}],
            "ips": [{"address": f"{POD_IP}/24", "interface": 0}]}
    conf = {"cniVersion": "1.1.0", "name": "gate", "type": "netsim-policy", "prevResult": prev}

    r = cni_sandbox.call("netsim-policy", "CHECK", conf, container_id="c1", netns=path)
    assert r.rc != 0 and r.error["code"] == 999 and "no gate" in r.error["msg"], r.raw

    r = cni_sandbox.call("netsim-policy", "ADD", conf, container_id="c1", netns=path)
    assert r.rc == 0, r.raw
    assert r.out["ips"] == prev["ips"]  # the chain's result, passed on
    assert gate.state(path) == "closed"
    assert _connects(cni_sandbox.runtime, POD_IP) == "timeout"
    assert cni_sandbox.call("netsim-policy", "CHECK", conf, container_id="c1", netns=path).rc == 0

    # The runtime's own namespace is refused: its gate would cut the node off.
    own = kernel.netns_path(cni_sandbox.runtime)
    r = cni_sandbox.call("netsim-policy", "ADD", conf, container_id="c2", netns=own)
    assert r.rc != 0 and r.error["code"] == 4 and "own namespace" in r.error["msg"], r.raw
    assert all(r["protocol"] != gate.PROTO for r in _rules(cni_sandbox.runtime))

    r = cni_sandbox.call("netsim-policy", "ADD", {k: v for k, v in conf.items() if k != "prevResult"},
                         container_id="c3", netns=path)
    assert r.rc != 0 and r.error["code"] == 7, r.raw
    assert cni_sandbox.call("netsim-policy", "DEL", conf, container_id="c1", netns=path).rc == 0


def test_the_agent_closes_a_pods_gate_before_the_first_plugin_runs(tmp_path, monkeypatch):
    """The ordering that makes a new pod unreachable from its first moment, seen at the
    moment it matters: when the runtime calls the chain's first plugin (which makes eth0 and
    gives the address), the pod's gate is already closed.  Then the gate stays closed with the
    pod wired, until the agent opens it."""
    from netsim.node import podnet
    from tests.conftest import unique_name

    cluster = unique_name("gate")
    node_ns = names.netns_name(cluster, "n1")
    kernel.Namespace.create(node_ns).close()
    node = podnet.NodePods(cluster, "n1", node_ns, tmp_path / "n1")
    seen: list[str | None] = []
    real_add = node.runtime.add

    def add(netlist, rt):
        seen.append(gate.state(rt.netns))
        return real_add(netlist, rt)

    monkeypatch.setattr(node.runtime, "add", add)
    listener = None
    try:
        node.ensure_network("10.77.1.0/24", "10.77.0.0/16")
        [sb] = node.add([("default/p", "uid-p", "default", "p", [])])
        assert seen == ["closed"]
        assert sb.ip.startswith("10.77.1.") and gate.state(kernel.netns_path(sb.netns)) == "closed"
        listener = _listen(sb.netns, "0.0.0.0")
        assert _connects(node_ns, sb.ip) == "timeout"
        assert node.open_gates({"default/p"}) == 1
        assert _connects(node_ns, sb.ip, 3) == "connected"
        assert node.open_gates({"default/p"}) == 0  # already open
    finally:
        if listener is not None:
            listener.close()
        node.remove(list(node.sandboxes))
        kernel.remove_netns([node_ns])
