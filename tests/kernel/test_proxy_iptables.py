"""kube-proxy's iptables mode (proxy.iptables): the proxier on real namespaces with real
connections.  The renderer alone, against upstream's own golden output and documented names, is
tests/unit/test_proxy_iptables_render.py; the builders and constants are tests/proxy_util.py.

The lab: a "node" namespace with a bridge (10.244.1.1/24) holding a client pod (.20) and two
backend pods (.11, .12) that each run a small TCP and UDP server in this process, plus an
"external" namespace (192.168.77.2) routed through the node (192.168.77.1).  br_netfilter is
on in the node, as kube-proxy wants it with a bridge CNI: replies from a backend to a client
on the same bridge are bridged, and must still meet the node's conntrack to be un-DNATed; and
the pod ports are in hairpin mode, as the bridge CNI's hairpinMode sets them, since a pod's
packet DNATed back to itself leaves the bridge by the port it came in on."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from netsim import kernel
from netsim.model import names
from proxy import iptables as ipt
from proxy import iptables_sync
from proxy.proxier import BACKENDS, run_in
from tests.conftest import unique_name
from tests.proxy_util import (  # the lab's addresses and the builders
    BRIDGE_IP,
    CLIENT,
    CLUSTER_CIDR,
    EXTERNAL_IP,
    NODE,
    NODE_IP,
    POD_A,
    POD_B,
    TCP_PORT,
    UDP_PORT,
    ep,
    svc,
    upstream_hash,
)


# == the proxier, on real namespaces ===========================================================
@dataclass
class Lab:
    cluster: str
    node: str
    client: str
    external: str
    pods: dict[str, str] = field(default_factory=dict)  # pod IP -> namespace
    stop: threading.Event = field(default_factory=threading.Event)
    socks: list = field(default_factory=list)
    threads: list = field(default_factory=list)
    proxiers: list = field(default_factory=list)

    def proxier(self, **kw) -> iptables_sync.Proxier:
        p = iptables_sync.Proxier(self.node, node=NODE, node_ips=[NODE_IP], cluster_cidr=CLUSTER_CIDR, **kw)
        self.proxiers.append(p)
        return p

    def sh(self, *argv: str, check=True) -> str:
        return run_in(kernel.netns_path(self.node), list(argv), check=check).stdout.decode()

    def save(self, backend="legacy", counters=False) -> str:
        out = self.sh(BACKENDS[backend].save, *(["-c"] if counters else []))
        return "\n".join(line for line in out.splitlines() if not line.startswith("#"))


def _serve_tcp(lab: Lab, ns: str, name: str) -> None:
    srv = kernel.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", TCP_PORT))
    srv.listen(64)
    srv.settimeout(0.2)
    lab.socks.append(srv)

    def loop():
        while not lab.stop.is_set():
            try:
                conn, peer = srv.accept()
            except (TimeoutError, OSError):
                continue
            with conn, contextlib.suppress(OSError):
                conn.sendall(f"{name} {peer[0]}\n".encode())
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    lab.threads.append(t)


def _serve_udp(lab: Lab, ns: str, name: str) -> None:
    srv = kernel.socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("0.0.0.0", UDP_PORT))
    srv.settimeout(0.2)
    lab.socks.append(srv)

    def loop():
        while not lab.stop.is_set():
            try:
                _, peer = srv.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            with contextlib.suppress(OSError):
                srv.sendto(f"{name} {peer[0]}".encode(), peer)
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    lab.threads.append(t)


def _wire(host: kernel.Namespace, peer: kernel.Namespace, host_if: str, cidr: str, gateway: str,
          master: int | None = None, host_cidr: str | None = None) -> None:
    with host.batch() as b:
        b.add_veth(host_if, "eth0", peer, 1500)
    index = host.index(host_if)
    with host.batch() as b:
        if master is not None:
            b.set_link(host_if, index=index, master=master, up=True)
            b.set_bridge_port(host_if, hairpin=True)  # as the bridge CNI's hairpinMode (kubelet's hairpin-veth)
        else:
            b.set_link(host_if, index=index, up=True)
            b.add_address(index, host_cidr)
    eth0 = peer.index("eth0")
    with peer.batch() as b:
        b.set_link("lo", index=1, up=True)
        b.set_link("eth0", index=eth0, up=True)
        b.add_address(eth0, cidr)
        b.replace_route("default", gateway=gateway)


@contextlib.contextmanager
def build_lab(lab_class: type[Lab], prefix: str):
    """The lab (module docstring) in namespaces of a fresh cluster name; everything goes after."""
    cluster = unique_name(prefix)
    ns = {m: names.netns_name(cluster, m) for m in ("node", "client", "pod-a", "pod-b", "external")}
    made = []
    lab = lab_class(cluster, ns["node"], ns["client"], ns["external"], {POD_A: ns["pod-a"], POD_B: ns["pod-b"]})
    try:
        opened = {}
        for member, name in ns.items():
            opened[member] = kernel.Namespace.create(name)
            made.append(name)
        node = opened["node"]
        with node.batch() as b:
            b.set_link("lo", index=1, up=True)
            b.add_bridge("br0", 1500)
        br = node.index("br0")
        with node.batch() as b:
            b.add_address(br, f"{BRIDGE_IP}/24")
            b.set_link("br0", index=br, up=True)
        for host_if, member, ip in (("va", "pod-a", POD_A), ("vb", "pod-b", POD_B), ("vc", "client", CLIENT)):
            _wire(node, opened[member], host_if, f"{ip}/24", BRIDGE_IP, master=br)
        _wire(node, opened["external"], "ext0", f"{EXTERNAL_IP}/24", NODE_IP, host_cidr=f"{NODE_IP}/24")
        with node.batch() as b:  # a node has a way out: Service IPs without rules are routed, not unreachable
            b.replace_route("default", gateway=EXTERNAL_IP)
        node.sysctl("net.ipv4.ip_forward", 1)
        node.sysctl("net.bridge.bridge-nf-call-iptables", 1)
        for o in opened.values():
            o.close()
        for name, pod_ns in (("pod-a", ns["pod-a"]), ("pod-b", ns["pod-b"])):
            _serve_tcp(lab, pod_ns, name)
            _serve_udp(lab, pod_ns, name)
        yield lab
    finally:
        lab.stop.set()
        for t in lab.threads:
            t.join(timeout=2)
        for s in lab.socks:
            s.close()
        for p in lab.proxiers:
            if hasattr(p, "close"):  # the nftables proxier holds a libnftables context
                p.close()
        kernel.remove_netns(made)


@pytest.fixture
def lab():
    with build_lab(Lab, "kp") as made:
        yield made


@contextlib.contextmanager
def udp_client(lab: Lab, ip: str, port: int):
    """A UDP socket in the client pod bound to one source port (one conntrack flow); yields a
    function that sends one datagram to ip:port and returns the name of the backend that answered."""
    with kernel.socket_in(lab.client, socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.bind((CLIENT, 40053))

        def query() -> str:
            s.sendto(b"q", (ip, port))
            return s.recv(256).decode().split()[0]
        yield query


def ask(ns: str, ip: str, port: int, timeout: float = 1.0) -> tuple[str, str]:
    """One TCP connection: (the backend that answered, the source address it saw)."""
    with kernel.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((ip, port))
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
    name, peer = data.decode().split()
    return name, peer


WEB = svc("web", "10.96.0.10", [ep(POD_A), ep(POD_B)], port_name="http", type="NodePort", node_port=30080)


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_cluster_ip_spreads_and_nodeport_masquerades(lab, backend):
    p = lab.proxier(backend=backend)
    result = p.sync([WEB])
    assert result.full and result.reason == "start" and result.jumps_added == len(ipt.JUMPS) + len(ipt.KUBELET_JUMPS)
    seen = Counter()
    for _ in range(60):
        name, peer = ask(lab.client, "10.96.0.10", 80)
        assert peer == CLIENT  # from inside the cluster CIDR: no masquerade
        seen[name] += 1
    assert seen["pod-a"] >= 10 and seen["pod-b"] >= 10, seen  # statistic --probability 0.5: P(fail) ~ 1e-9
    name, peer = ask(lab.external, NODE_IP, 30080)
    assert name in ("pod-a", "pod-b") and peer == BRIDGE_IP  # masqueraded to the node's own address
    # iptables-save shows the jumps back as they were written: a full resync finds them all.
    p.force_full_sync()
    result = p.sync([WEB])
    assert result.full and result.jumps_added == 0 and result.chains_deleted == 0


def test_no_endpoints_refused_at_once(lab):
    p = lab.proxier()
    p.sync([WEB, svc("empty", "10.96.0.12", [])])
    assert ask(lab.client, "10.96.0.10", 80)
    empty_web = svc("web", "10.96.0.10", [], port_name="http", type="NodePort", node_port=30080)
    for services, src, ip, port in (([WEB, svc("empty", "10.96.0.12", [])], lab.client, "10.96.0.12", 80),
                                    ([empty_web], lab.client, "10.96.0.10", 80),
                                    ([empty_web], lab.external, NODE_IP, 30080)):
        p.sync(services)
        t = time.monotonic()
        with pytest.raises(ConnectionRefusedError):  # REJECT: an ICMP port unreachable, not a timeout
            ask(src, ip, port, timeout=2.0)
        assert time.monotonic() - t < 0.5


def test_external_traffic_policy_local_keeps_source(lab):
    p = lab.proxier()
    local = svc("local", "10.96.0.20", [ep(POD_A)], type="NodePort", node_port=30090, external_local=True)
    remote = svc("remote", "10.96.0.21", [ep(POD_B, node="other")], type="NodePort", node_port=30091,
                 external_local=True)
    p.sync([local, remote])
    for _ in range(5):
        assert ask(lab.external, NODE_IP, 30090) == ("pod-a", EXTERNAL_IP)  # source preserved
    # Only remote endpoints: this node drops external traffic to it ...
    t = time.monotonic()
    with pytest.raises((TimeoutError, socket.timeout)):
        ask(lab.external, NODE_IP, 30091, timeout=0.5)
    assert time.monotonic() - t < 1.0
    # ... while pods still get there: through the cluster IP, and short-circuited to the cluster chain.
    assert ask(lab.client, "10.96.0.21", 80)[0] == "pod-b"
    assert ask(lab.client, NODE_IP, 30091)[0] == "pod-b"


def test_hairpin(lab):
    p = lab.proxier()
    p.sync([svc("self", "10.96.0.25", [ep(POD_A)])])
    assert ask(lab.pods[POD_A], "10.96.0.25", 80) == ("pod-a", BRIDGE_IP)  # reached itself, masqueraded


def test_client_ip_affinity(lab):
    p = lab.proxier()
    p.sync([svc("sticky", "10.96.0.22", [ep(POD_A), ep(POD_B)], affinity_timeout=600)])
    assert len({ask(lab.client, "10.96.0.22", 80)[0] for _ in range(20)}) == 1
    # Without affinity the same client is spread (sanity check of the comparison).
    p.sync([svc("sticky", "10.96.0.22", [ep(POD_A), ep(POD_B)])])
    assert len({ask(lab.client, "10.96.0.22", 80)[0] for _ in range(30)}) == 2


def test_udp_flow_follows_conntrack_flush(lab):
    both = [ep(POD_A, UDP_PORT), ep(POD_B, UDP_PORT)]
    dns = lambda eps: svc("dns", "10.96.0.30", eps, proto="UDP", port=53)  # noqa: E731
    p = lab.proxier(conntrack_cleanup=False)
    p.sync([dns(both)])
    with udp_client(lab, "10.96.0.30", 53) as query:
        first = query()
        gone = POD_A if first == "pod-a" else POD_B
        rest = [e for e in both if e.ip != gone]
        p.sync([dns(rest)])
        assert query() == first  # the rules changed, the flow did not: conntrack still says `first`
        assert p.clean_stale_conntrack() >= 1
        other = query()
        assert other != first  # the flushed flow was load-balanced afresh
        # With the cleanup on (the default), the sync itself does it.
        p.conntrack_cleanup = True
        p.sync([dns(both)])
        assert query() == other  # still a live endpoint: left alone
        result = p.sync([dns([e for e in both if e.ip == gone])])
        assert result.conntrack_deleted >= 1
        assert query() == first


def test_partial_sync_touches_only_the_changed_service(lab):
    """Service b changes; a and c are neither declared nor rewritten: their rules keep their
    packet counters (a rewritten rule starts again at 0) and iptables-save shows them byte for
    byte as before.  Rules of others (flannel's, portmap's) are never touched, even by a full sync."""
    lab.sh("iptables-legacy", "-t", "nat", "-N", "FLANNEL-POSTRTG")
    lab.sh("iptables-legacy", "-t", "nat", "-A", "FLANNEL-POSTRTG", "-m", "mark", "--mark", "0x4000/0x4000", "-j",
           "RETURN")
    lab.sh("iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-j", "FLANNEL-POSTRTG")
    lab.sh("iptables-legacy", "-t", "nat", "-N", "CNI-HOSTPORT-DNAT")
    lab.sh("iptables-legacy", "-t", "nat", "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j",
           "CNI-HOSTPORT-DNAT")
    theirs = [line for line in lab.save().splitlines() if "FLANNEL" in line or "CNI-" in line]
    a = svc("a", "10.96.0.40", [ep(POD_A)])
    b = svc("b", "10.96.0.41", [ep(POD_A), ep(POD_B)])
    c = svc("c", "10.96.0.42", [ep(POD_B)], type="NodePort", node_port=30200)
    p = lab.proxier()
    p.sync([a, b, c])
    for _ in range(3):
        ask(lab.client, "10.96.0.40", 80)
    before = lab.save(counters=True)
    ha, hb, hc = (upstream_hash(f"default/{n}tcp") for n in "abc")
    a_sep = ipt.endpoint_chain("default/a", "tcp", f"{POD_A}:8080")
    assert re.search(rf"\[[1-9]\d*:\d+\] -A KUBE-SVC-{ha} .*-j {a_sep}", before)  # counted traffic

    b2 = svc("b", "10.96.0.41", [ep(POD_A)])
    result = p.sync([a, b2, c])
    assert not result.full and result.reason == "partial"
    assert result.services_written == 1 and result.chains_deleted == 1  # b's SEP for pod-b went away
    text = p.last_restore_text
    assert f":KUBE-SVC-{hb} - [0:0]" in text
    assert f":KUBE-SVC-{ha}" not in text and f":KUBE-SVC-{hc}" not in text and f":{a_sep}" not in text
    b_gone = ipt.endpoint_chain("default/b", "tcp", f"{POD_B}:8080")
    assert f"-X {b_gone}" in text
    after = lab.save(counters=True)

    def untouched(save: str) -> list[str]:
        # The chains of a and c, with their counters; not KUBE-SERVICES (rewritten each sync).
        return [line for line in save.splitlines()
                if re.search(rf"KUBE-(SVC|EXT|SEP)-({ha}|{hc})|{a_sep}|default/[ac]\b", line)
                and "KUBE-SERVICES " not in line and "KUBE-NODEPORTS " not in line]
    assert untouched(after) == untouched(before) and untouched(before)
    assert b_gone not in after and f"KUBE-SVC-{hb}" in after
    assert ask(lab.client, "10.96.0.41", 80)[0] == "pod-a"
    # A full sync leaves them exactly as they are too (same rules, nothing stale).
    p.force_full_sync()
    result = p.sync([a, b2, c])
    assert result.full and result.reason == "forced" and result.jumps_added == 0 and result.chains_deleted == 0
    assert [line for line in lab.save().splitlines() if "FLANNEL" in line or "CNI-" in line] == theirs
    lines = lab.save().splitlines()
    for jump in ipt.JUMPS + ipt.KUBELET_JUMPS:  # each jump once, whatever number of syncs
        assert lines.count(f"-A {jump.chain} {jump.args()}") == 1, jump


def test_canary_detects_a_flush_and_resyncs_in_full(lab):
    p = lab.proxier()
    services = [WEB, svc("other", "10.96.0.50", [ep(POD_B)])]
    p.sync(services)
    want = _kube_lines(lab.save())
    assert ask(lab.client, "10.96.0.10", 80)
    # Someone flushes the tables (a firewall reload, `iptables -F; iptables -X` in each table).
    for table in ("nat", "mangle", "filter"):
        lab.sh("iptables-legacy", "-t", table, "-F")
        lab.sh("iptables-legacy", "-t", table, "-X")
    with pytest.raises(OSError):
        ask(lab.client, "10.96.0.10", 80, timeout=0.5)
    result = p.sync(services)
    assert result.full and result.reason == "canary"
    assert _kube_lines(lab.save()) == want
    assert ask(lab.client, "10.96.0.10", 80)
    # Only nat emptied and its chains deleted, the mangle canary intact: the partial restore
    # fails on the missing chains and the proxier starts over with a full sync.
    lab.sh("iptables-legacy", "-t", "nat", "-F")
    lab.sh("iptables-legacy", "-t", "nat", "-X")
    result = p.sync(services)
    assert result.full and result.reason == "partial restore failed" and result.partial_failure
    assert _kube_lines(lab.save()) == want
    # Emptied but not deleted, nothing fails: the periodic full sync repairs it.
    p.full_sync_every = 1
    lab.sh("iptables-legacy", "-t", "nat", "-F")
    assert not p.sync(services).full
    result = p.sync(services)
    assert result.full and result.reason == "periodic"
    assert _kube_lines(lab.save()) == want


def _kube_lines(save: str) -> list[str]:
    return sorted(re.sub(r"\[\d+:\d+\]", "", line) for line in save.splitlines() if "KUBE-" in line)


def _host_tables() -> dict[str, str]:
    """iptables-save of the host's own namespace, both backends, without dates and counters."""
    out = {}
    for tool in ("iptables-legacy-save", "iptables-nft-save"):
        text = subprocess.run([tool], capture_output=True, text=True, check=True, timeout=30).stdout
        out[tool] = "\n".join(re.sub(r"\[\d+:\d+\]", "", line) for line in text.splitlines()
                              if not line.startswith("#"))
    return out


def test_nothing_leaks_into_the_host(lab):
    before = _host_tables()
    p = lab.proxier()
    p.sync([WEB])
    p.sync([WEB, svc("udp", "10.96.0.60", [ep(POD_A, UDP_PORT)], proto="UDP", port=53)])
    p.force_full_sync()
    p.sync([WEB])
    p.cleanup()
    assert _kube_lines(lab.save()) == []  # cleanup took every kube-proxy chain and jump with it
    assert _host_tables() == before


def test_refuses_unknown_backend(lab):
    with pytest.raises(ValueError):
        lab.proxier(backend="ebpf")


def test_skip_unchanged_top_level_chains(lab):
    """The opt-in departure from upstream: a partial sync also leaves out top-level chains
    whose rules did not change (an endpoint change leaves KUBE-SERVICES as it was)."""
    a = svc("a", "10.96.0.40", [ep(POD_A)])
    b = svc("b", "10.96.0.41", [ep(POD_A), ep(POD_B)])
    p = lab.proxier(skip_unchanged_top_level=True)
    p.sync([a, b])
    result = p.sync([a, svc("b", "10.96.0.41", [ep(POD_B)])])
    assert not result.full and result.top_chains_skipped == len(ipt.FILTER_TOP) + 1 + len(ipt.NAT_TOP)
    assert ":KUBE-SERVICES" not in p.last_restore_text and "-A KUBE-SERVICES" not in p.last_restore_text
    assert result.services_written == 1 and result.chains_deleted == 1
    assert {ask(lab.client, "10.96.0.41", 80)[0] for _ in range(5)} == {"pod-b"}
    result = p.sync([a, svc("b", "10.96.0.41", [ep(POD_B)])])  # nothing changed: nothing to restore
    assert result.restore_bytes == 0 and result.restore_s == 0
    result = p.sync([svc("b", "10.96.0.41", [ep(POD_B)])])  # a goes: KUBE-SERVICES changes
    text = p.last_restore_text
    assert ":KUBE-SERVICES - [0:0]" in text.split("*nat")[1] and "-X KUBE-SVC-" in text
    with pytest.raises(OSError):
        ask(lab.client, "10.96.0.40", 80, timeout=0.3)
    assert ask(lab.client, "10.96.0.41", 80)[0] == "pod-b"


@pytest.fixture(autouse=True, scope="module")
def host_tables_untouched():
    """Across every test here: the host's own tables end as they began."""
    before = _host_tables()
    yield
    assert _host_tables() == before
