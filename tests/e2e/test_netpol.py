"""NetworkPolicy truth tables, modelled on the Kubernetes e2e NetworkPolicy tests.

Namespaces x, y, z, pods a, b, c in each (a on worker1, b on worker2, c on control-plane: same-
node and cross-node paths), servers on ports 80 and 81 over TCP and UDP (the built-in
responders), a Service per pod.  Each case applies policies, then probes every pair with real
connections -- to pod IPs and to Service IPs -- and compares with a reachability matrix written
out by hand in the case.  On a mismatch the expected, observed and comparison tables are
printed as the e2e framework prints them (rows from, columns to, ``.`` allowed, ``X`` denied).
Every observed matrix is also checked against ``netsim policy explain``'s evaluation."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from netsim import kernel
from netsim.model import names
from netsim.node import podnet, policy
from netsim.observe import probe
from tests.conftest import SCENARIO, K8s, run_netsim, unique_name
from tests.unit.test_manifest_nulls import RECIPE

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
NODE_OF = {"a": "worker1", "b": "worker2", "c": "control-plane"}
ALL = [f"{ns}/{p}" for ns in NAMESPACES for p in PODS]
EXTERNAL_PORT = 8080
DENY_TIMEOUT = 1.0


def manifests() -> str:
    docs = []
    for ns in NAMESPACES:
        docs.append(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n")
        for p in PODS:
            docs.append(f"""apiVersion: v1
kind: Pod
metadata: {{name: {p}, namespace: {ns}, labels: {{pod: {p}}}}}
spec:
  nodeName: {NODE_OF[p]}
  containers:
  - name: cont-80-tcp
    image: agnhost
    ports: [{{name: serve-80-tcp, containerPort: 80}}, {{name: serve-80-udp, containerPort: 80, protocol: UDP}}]
  - name: cont-81-tcp
    image: agnhost
    ports: [{{name: serve-81-tcp, containerPort: 81}}, {{name: serve-81-udp, containerPort: 81, protocol: UDP}}]
""")
            docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: s-{p}, namespace: {ns}}}
spec:
  selector: {{pod: {p}}}
  ports:
  - {{name: p80, port: 80, targetPort: 80}}
  - {{name: p81, port: 81, targetPort: 81}}
  - {{name: u80, port: 80, targetPort: 80, protocol: UDP}}
  - {{name: u81, port: 81, targetPort: 81, protocol: UDP}}
""")
    return "---\n".join(docs)


class Cluster(K8s):
    def __init__(self, name, tmp_path):
        super().__init__(name, tmp_path)
        self.ips: dict[str, str] = {}
        self.svc_ips: dict[str, str] = {}
        self.netns = {k: podnet.pod_netns(name, *k.split("/")) for k in ALL}

    def refresh(self) -> None:
        pods = json.loads(self("get", "pods", "-A", "-o", "json").stdout)["items"]
        self.ips = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["status"].get("podIP") for p in pods}
        svcs = json.loads(self("get", "svc", "-A", "-o", "json").stdout)["items"]
        self.svc_ips = {f"{s['metadata']['namespace']}/{s['metadata']['name'][2:]}": s["spec"]["clusterIP"]
                        for s in svcs if s["metadata"]["name"].startswith("s-")}

    def apply_policies(self, text: str) -> None:
        self.apply(text)

    def clear_policies(self) -> None:
        for ns in NAMESPACES:
            self("delete", "networkpolicy", "--all", "-n", ns, check=False)


def _probe(c: Cluster, src: str, dst_ip: str, port: int, proto: str) -> bool:
    return probe.connect(c.netns[src], dst_ip, port, proto.lower(), timeout=DENY_TIMEOUT)["result"] == "allow"


class Matrix:
    """Reachability from × to, True = allowed.  Starts all-allowed (or all-denied)."""

    def __init__(self, default: bool = True):
        self.cells = {(f, t): default for f in ALL for t in ALL}

    def set(self, value: bool, frm=None, to=None) -> Matrix:
        for f, t in self.cells:
            if (frm is None or _matches(frm, f)) and (to is None or _matches(to, t)):
                self.cells[(f, t)] = value
        return self

    def allow(self, frm=None, to=None) -> Matrix:
        return self.set(True, frm, to)

    def deny(self, frm=None, to=None) -> Matrix:
        return self.set(False, frm, to)

    def table(self) -> str:
        lines = ["-\t" + "\t".join(ALL)]
        for f in ALL:
            lines.append(f + "\t" + "\t".join("." if self.cells[(f, t)] else "X" for t in ALL))
        return "\n".join(lines)


def _matches(pattern, key: str) -> bool:
    """'x/a' exactly, 'x/*' a namespace, '*/a' a pod name in every namespace; or a list of them."""
    if isinstance(pattern, list | tuple | set):
        return any(_matches(p, key) for p in pattern)
    ns, _, name = pattern.partition("/")
    kns, _, kname = key.partition("/")
    return ns in ("*", kns) and name in ("*", kname)


def observe(c: Cluster, port: int, proto: str, via_service: bool = False) -> Matrix:
    m = Matrix()
    targets = c.svc_ips if via_service else c.ips
    jobs = []
    with ThreadPoolExecutor(max_workers=48) as pool:
        for f in ALL:
            for t in ALL:
                if f == t:
                    continue  # a pod always reaches itself (its own address never leaves it)
                jobs.append(((f, t), pool.submit(_probe, c, f, targets[t], port, proto)))
        for key, fut in jobs:
            m.cells[key] = fut.result()
    return m


def compare(c: Cluster, expected: Matrix, port: int, proto: str, via_service: bool = False) -> None:
    observed = observe(c, port, proto, via_service)
    wrong = [k for k in expected.cells if k[0] != k[1] and expected.cells[k] != observed.cells[k]]
    if wrong:
        comparison = Matrix()
        for k in comparison.cells:
            comparison.cells[k] = k not in wrong
        pytest.fail(f"reachability on {port}/{proto}{' via Services' if via_service else ''}: "
                    f"{len(wrong)} wrong\nexpected:\n{expected.table()}\n\nobserved:\n{observed.table()}\n\n"
                    f"comparison (X = mismatch):\n{comparison.table()}")
    # netsim policy explain's evaluation agrees with the kernel.
    store_policies = json.loads(c("get", "networkpolicy", "-A", "-o", "json").stdout)["items"]
    pods = [i for p in json.loads(c("get", "pods", "-A", "-o", "json").stdout)["items"]
            if (i := policy.pod_info(p)) is not None]
    namespaces = {n["metadata"]["name"]: n["metadata"].get("labels") or {}
                  for n in json.loads(c("get", "namespaces", "-o", "json").stdout)["items"]}
    for (f, t), allowed in observed.cells.items():
        if f != t:
            v = policy.evaluate(store_policies, pods, namespaces, c.ips[f], c.ips[t], proto, port)
            assert v.allowed == allowed, (f, t, port, proto, v)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("netpol")
    os.environ["NETSIM_STATE_DIR"] = str(tmp_path / "state")
    name = unique_name("np")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    up = run_netsim("up", str(scenario), "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        c = Cluster(name, tmp_path)
        c.apply(manifests())
        c.refresh()
        assert all(c.ips.get(k) for k in ALL), c.ips
        yield c
    finally:
        assert run_netsim("down", name).returncode == 0
        assert kernel.list_netns(names.cluster_prefix(name)) == []
        os.environ.pop("NETSIM_STATE_DIR", None)


@pytest.fixture
def c(cluster):
    cluster.clear_policies()
    yield cluster
    cluster.clear_policies()


def netpol(name: str, ns: str, body: str) -> str:
    return f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\n" \
           f"spec:\n{body}"


DENY_INGRESS_X = netpol("deny-ingress", "x", "  podSelector: {}\n  policyTypes: [Ingress]\n")


# == the cases =================================================================================
def test_no_policies_everything_reaches_everything(c):
    for port, proto in ((80, "TCP"), (81, "UDP")):
        compare(c, Matrix(), port, proto)


def test_default_deny_ingress_and_allow_all_union(c):
    c.apply_policies(DENY_INGRESS_X)
    expected = Matrix().deny(to="x/*")
    compare(c, expected, 80, "TCP")
    compare(c, expected, 80, "TCP", via_service=True)  # judged after DNAT, against the backend
    compare(c, expected, 81, "UDP")
    # A second policy that allows all ingress: the union allows everything again.
    c.apply_policies(netpol("allow-all", "x", "  podSelector: {}\n  ingress: [{}]\n"))
    compare(c, Matrix(), 80, "TCP")


def test_null_fields_mean_unset_as_in_the_recipes(c):
    """The policy recipe with `matchLabels:` left empty (null): a real cluster stores it with the
    empty selector, so every pod of the namespace admits its own namespace and no other.  Then
    `ingress:` left empty: no ingress rules, every pod of the namespace isolated."""
    c.apply_policies(RECIPE.replace("namespace: default", "namespace: x"))
    stored = json.loads(c("get", "networkpolicy", "deny-from-other-namespaces", "-n", "x", "-o", "json").stdout)
    assert stored["spec"]["podSelector"] == {}
    compare(c, Matrix().deny(to="x/*").allow(frm="x/*", to="x/*"), 80, "TCP")
    c.clear_policies()
    c.apply_policies(netpol("no-rules", "x", "  podSelector:\n  ingress:\n"))
    compare(c, Matrix().deny(to="x/*"), 80, "TCP")


def test_pod_selector_match_labels_and_expressions(c):
    c.apply_policies(netpol("from-b", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n"
                                           "  - from: [{podSelector: {matchLabels: {pod: b}}}]\n"))
    compare(c, Matrix().deny(to="x/a").allow(frm="x/b", to="x/a"), 80, "TCP")
    c.clear_policies()
    c.apply_policies(netpol("from-b-c", "x", "  podSelector: {matchExpressions: [{key: pod, operator: In, "
                                             "values: [a]}]}\n  ingress:\n  - from: [{podSelector: {matchExpressions: "
                                             "[{key: pod, operator: NotIn, values: [a]}]}}]\n"))
    compare(c, Matrix().deny(to="x/a").allow(frm=["x/b", "x/c"], to="x/a"), 80, "TCP")


def test_namespace_selector_and_both_in_one_peer_or_separate_peers(c):
    c.apply_policies(netpol("from-y", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n"
                                           "  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n"))
    compare(c, Matrix().deny(to="x/a").allow(frm="y/*", to="x/a"), 80, "TCP")
    c.clear_policies()
    # One peer with both selectors: AND.
    c.apply_policies(netpol("and", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n"
                                        "  - from: [{namespaceSelector: {matchLabels: {ns: y}}, "
                                        "podSelector: {matchLabels: {pod: b}}}]\n"))
    compare(c, Matrix().deny(to="x/a").allow(frm="y/b", to="x/a"), 80, "TCP")
    c.clear_policies()
    # Two peers: OR.
    c.apply_policies(netpol("or", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n"
                                       "  - from: [{namespaceSelector: {matchLabels: {ns: y}}}, "
                                       "{podSelector: {matchLabels: {pod: b}}}]\n"))
    compare(c, Matrix().deny(to="x/a").allow(frm=["y/*", "x/b"], to="x/a"), 80, "TCP")


def test_ports_numbers_names_ranges_and_protocols(c):
    c.apply_policies(netpol("port-80", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n"
                                            "  - ports: [{port: 80, protocol: TCP}]\n"))
    compare(c, Matrix(), 80, "TCP")
    compare(c, Matrix().deny(to="x/a"), 81, "TCP")
    compare(c, Matrix().deny(to="x/a"), 80, "UDP")
    c.clear_policies()
    # A named port, resolved on the destination pod.
    c.apply_policies(netpol("named", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n"
                                          "  - ports: [{port: serve-81-udp, protocol: UDP}]\n"))
    compare(c, Matrix(), 81, "UDP")
    compare(c, Matrix().deny(to="x/a"), 81, "TCP")
    c.clear_policies()
    # endPort: a range.
    c.apply_policies(netpol("range", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n"
                                          "  - ports: [{port: 79, endPort: 81, protocol: TCP}]\n"))
    compare(c, Matrix(), 81, "TCP")
    compare(c, Matrix().deny(to="x/a"), 81, "UDP")


def test_egress_default_deny_replies_and_named_ports(c):
    # Egress denied for every x pod; traffic into x (not isolated for ingress) still gets its replies.
    c.apply_policies(netpol("deny-egress", "x", "  podSelector: {}\n  policyTypes: [Egress]\n"))
    compare(c, Matrix().deny(frm="x/*"), 80, "TCP")
    c.clear_policies()
    # Egress to pods named b anywhere, on the destination's named port serve-80-tcp only.
    c.apply_policies(netpol("to-b", "x", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n"
                                         "  egress:\n  - to: [{namespaceSelector: {}, podSelector: {matchLabels: "
                                         "{pod: b}}}]\n    ports: [{port: serve-80-tcp}]\n"))
    compare(c, Matrix().deny(frm="x/a").allow(frm="x/a", to="*/b"), 80, "TCP")
    compare(c, Matrix().deny(frm="x/a"), 81, "TCP")
    compare(c, Matrix().deny(frm="x/a").allow(frm="x/a", to="*/b"), 80, "TCP", via_service=True)


def test_ingress_and_egress_together_and_multiple_policies(c):
    c.apply_policies(netpol("in-from-y-a", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n"
                                                "  - from: [{namespaceSelector: {matchLabels: {ns: y}}, "
                                                "podSelector: {matchLabels: {pod: a}}}]\n"))
    c.apply_policies(netpol("in-from-z-b", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n"
                                                "  - from: [{namespaceSelector: {matchLabels: {ns: z}}, "
                                                "podSelector: {matchLabels: {pod: b}}}]\n"))
    c.apply_policies(netpol("out-none", "y", "  podSelector: {matchLabels: {pod: a}}\n"
                                             "  policyTypes: [Ingress, Egress]\n  ingress: [{}]\n"))
    expected = Matrix().deny(to="x/a").allow(frm="z/b", to="x/a").deny(frm="y/a")
    compare(c, expected, 80, "TCP")


def test_traffic_from_the_pods_own_node_is_allowed_in(c):
    c.apply_policies(DENY_INGRESS_X)
    worker1 = names.netns_name(c.name, "worker1")
    deadline = time.monotonic() + 1
    while probe.connect(c.netns["y/a"], c.ips["x/a"], 80, timeout=0.3)["result"] == "allow":
        assert time.monotonic() < deadline
    assert probe.connect(worker1, c.ips["x/a"], 80, timeout=DENY_TIMEOUT)["result"] == "allow"  # its node
    worker2 = names.netns_name(c.name, "worker2")
    assert probe.connect(worker2, c.ips["x/a"], 80, timeout=DENY_TIMEOUT)["result"] == "deny"  # another node


@contextlib.contextmanager
def external_server(c: Cluster):
    """A TCP listener on the external host `client`, answering like the responders."""
    ns = names.netns_name(c.name, "client")
    srv = kernel.socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", EXTERNAL_PORT))
    srv.listen(64)
    srv.settimeout(0.2)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                conn, peer = srv.accept()
            except (TimeoutError, OSError):
                continue
            with conn, contextlib.suppress(OSError):
                conn.sendall(json.dumps({"pod": "external", "client": f"{peer[0]}:{peer[1]}"}).encode() + b"\n")
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield json.loads(c("get", "node", "worker1", "-o", "json").stdout)  # (the caller needs no more)
    finally:
        stop.set()
        t.join(timeout=2)
        srv.close()


def test_egress_ip_block_with_except_to_an_external_host(c):
    external_ip = "192.168.56.254"
    with external_server(c):
        for src in ("x/a", "x/b"):
            assert probe.connect(c.netns[src], external_ip, EXTERNAL_PORT)["result"] == "allow"
        c.apply_policies(netpol("to-lan-but-client", "x", "  podSelector: {}\n  policyTypes: [Egress]\n"
                                "  egress:\n  - to: [{ipBlock: {cidr: 192.168.56.0/24, "
                                "except: [192.168.56.254/32]}}]\n"))
        for src in ("x/a", "x/b"):
            assert probe.connect(c.netns[src], external_ip, EXTERNAL_PORT, timeout=DENY_TIMEOUT)["result"] == "deny"
        assert probe.connect(c.netns["y/a"], external_ip, EXTERNAL_PORT)["result"] == "allow"  # not selected
        c.apply_policies(netpol("to-client", "x", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n"
                                "  egress:\n  - to: [{ipBlock: {cidr: 192.168.56.254/32}}]\n"))
        assert probe.connect(c.netns["x/a"], external_ip, EXTERNAL_PORT)["result"] == "allow"  # union
        assert probe.connect(c.netns["x/b"], external_ip, EXTERNAL_PORT, timeout=DENY_TIMEOUT)["result"] == "deny"


def _first_change(check, limit: float = 3.0) -> float:
    """Seconds until check() is true, probing as fast as connections allow."""
    t = time.monotonic()
    while not check():
        assert time.monotonic() - t < limit, "no change within the limit"
    return time.monotonic() - t


def test_updates_take_effect_on_live_traffic_within_a_second(c):
    src, dst = "y/b", "x/a"

    def reaches() -> bool:
        return probe.connect(c.netns[src], c.ips[dst], 80, timeout=0.2)["result"] == "allow"
    assert reaches()
    c.apply_policies(netpol("only-from-b", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n"
                                                "  - from: [{namespaceSelector: {matchLabels: {ns: y}}, "
                                                "podSelector: {matchLabels: {pod: allowed}}}]\n"))
    assert _first_change(lambda: not reaches()) < 1.0
    # A pod label changes: the pod is now a peer.
    c("label", "pod", "b", "-n", "y", "pod=allowed", "--overwrite")
    try:
        assert _first_change(reaches) < 1.0
        # A namespace label changes: y stops matching.
        c("label", "namespace", "y", "ns=y2", "--overwrite")
        try:
            assert _first_change(lambda: not reaches()) < 1.0
        finally:
            c("label", "namespace", "y", "ns=y", "--overwrite")
        assert _first_change(reaches) < 1.0
    finally:
        c("label", "pod", "b", "-n", "y", "pod=b", "--overwrite")


def _hammer_new_pod(c: Cluster, ns: str, name: str, node_port: int, seconds_after_running: float = 1.0
                    ) -> dict[str, int]:
    """Create pod NS/NAME on worker1 (and a NodePort Service for it) and, from the moment its
    address exists in its namespace until it has been Running for a while, connect to it from
    every other pod, node and the external host at once (one thread each, 0.2 s per try; the
    threads are started before the pod is created and wait for a watcher that reads the
    address off the pod's eth0 in a tight loop from before the apply).  Returns how many tries
    reached it per source: connected, or, to its address, refused by its namespace (there is no
    listener until the pod runs); through the NodePort only connected counts (kube-proxy itself refuses while the
    Service has no endpoint).  How few tries fall between the address and the end of the CNI
    chain depends on the machine; test_gate checks the order itself (gate before eth0)."""
    worker1 = json.loads(c("get", "node", "worker1", "-o", "json").stdout)["status"]["addresses"][0]["address"]
    path = c.tmp_path / f"{ns}-{name}.yaml"
    path.write_text(f"""apiVersion: v1
kind: Service
metadata: {{name: np-{name}, namespace: {ns}}}
spec: {{type: NodePort, selector: {{pod: {name}}}, ports: [{{port: 80, nodePort: {node_port}}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{pod: {name}}}}}
spec:
  nodeName: worker1
  containers: [{{name: c, image: agnhost, ports: [{{containerPort: 80}}]}}]
""")
    pod_ns = podnet.pod_netns(c.name, ns, name)
    target: dict[str, str] = {}
    addressed = threading.Event()
    sources = {"pod y/a (same node)": (c.netns["y/a"], None, 80), "pod x/b": (c.netns["x/b"], None, 80),
               "node worker2": (names.netns_name(c.name, "worker2"), None, 80),
               "node control-plane": (names.netns_name(c.name, "control-plane"), None, 80),
               "host client (NodePort)": (names.netns_name(c.name, "client"), worker1, node_port)}
    reached = {src: 0 for src in sources}
    tries = {src: 0 for src in sources}
    stop = threading.Event()

    def hammer(src: str) -> None:
        netns, dst, port = sources[src]
        counts = ("connected",) if port == node_port else ("connected", "refused")
        addressed.wait()
        while not stop.is_set():
            tries[src] += 1
            if probe.connect(netns, dst or target["ip"], port, timeout=0.2)["reason"] in counts:
                reached[src] += 1
            time.sleep(0.002)

    def watch() -> None:
        deadline = time.monotonic() + 20
        while not addressed.is_set() and not stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(Exception), kernel.Namespace.open(pod_ns) as pns:
                ip = next((a.split("/")[0] for a in pns.addresses_of(pns.index("eth0"), socket.AF_INET)), None)
                if ip:
                    target["ip"] = ip
                    addressed.set()

    # The watcher runs before the apply: the agent may wire the pod before `apply` has exited.
    threads = [threading.Thread(target=watch), *(threading.Thread(target=hammer, args=(src,)) for src in sources)]
    for t in threads:
        t.start()
    running = False
    try:
        c("apply", "-f", str(path), "--wait=false")
        addressed.wait(20)
        assert addressed.is_set(), f"{ns}/{name} got no address"
        deadline = time.monotonic() + 60  # a loaded machine (CI) can take its time
        while not running and time.monotonic() < deadline:
            status = json.loads(c("get", "pod", name, "-n", ns, "-o", "json").stdout).get("status", {})
            running = status.get("phase") == "Running"
        if running:
            time.sleep(seconds_after_running)
    finally:
        stop.set()
        addressed.set()
        for t in threads:
            t.join()
        c("delete", "-f", str(path))
    assert running, f"{ns}/{name} did not become Running{c.log_tail()}"
    assert all(n >= 2 for n in tries.values()), tries
    return reached


def test_a_new_pod_in_a_default_deny_namespace_is_never_reachable(c):
    """From its first moment (its address exists), from every other pod, node and the external
    host; the same hammering of a pod in a namespace without policy reaches it (the control)."""
    c.apply_policies(DENY_INGRESS_X)
    reached = _hammer_new_pod(c, "x", "fresh", 30911)
    assert not any(reached.values()), reached
    opened = _hammer_new_pod(c, "z", "fresh", 30912)
    assert all(n > 0 for n in opened.values()), opened


def test_policy_explain_names_the_rule_or_the_reason(c):
    c.apply_policies(DENY_INGRESS_X)
    c.apply_policies(netpol("from-b", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n"
                                           "  - from: [{podSelector: {matchLabels: {pod: b}}}]\n"))
    ok = run_netsim("policy", "explain", "pod/x/b", "pod/x/a", "--port", "80", "-c", c.name)
    assert ok.returncode == 0 and "allowed by x/from-b ingress[0]" in ok.stdout and "verdict: allowed" in ok.stdout
    no = run_netsim("policy", "explain", "pod/y/a", "svc/x/s-a", "--port", "80", "-c", c.name)
    assert no.returncode == 1 and "isolated by x/deny-ingress, x/from-b" in no.stdout and "DENIED" in no.stdout
    listed = c("get", "netpol", "-n", "x").stdout
    assert "deny-ingress" in listed and "from-b" in listed


# == netsim's own verbs and kubectl: one API ====================================================
def test_netsim_apply_of_a_crd_with_its_resource_and_rbac_documents_is_what_kubectl_sees(cluster, tmp_path):
    """`netsim apply -f` of one file with a CRD, a custom resource of it, a ServiceAccount, a
    Secret and a Role; the real kubectl reads the same objects back through the API server, and
    `netsim delete -f` takes them away again (tests/unit/test_verbs.py: the same, pure)."""
    from tests.unit.test_verbs import CRD, GADGET, REST

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    path = tmp_path / "gadgets.yaml"
    path.write_text(CRD + "---\n" + GADGET + "---\n" + REST)
    out = cluster("apply", "-f", str(path)).stdout
    assert "gadget/default/g1 created" in out and "secret/default/token created" in out, out
    [g] = json.loads(cluster("get", "gadgets", "-l", "tier in (web)", "-o", "json").stdout)["items"]
    assert g["spec"] == {"size": 3}

    config = tmp_path / "kubeconfig"
    config.write_text(run_netsim("kubeconfig", "-c", cluster.name, check=True).stdout)

    def k(*args, check=True):
        r = subprocess.run([kubectl, "--kubeconfig", str(config), "--cache-dir", str(tmp_path / "cache"), *args],
                           capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 or not check, r.stderr
        return r

    assert k("get", "gd", "-o", "name").stdout.strip() == "gadget.verbs.example.com/g1"
    assert base64.b64decode(k("get", "secret", "token", "-o", "jsonpath={.data.password}").stdout) == b"s3cret"
    assert "reader" in k("get", "roles").stdout and "robot" in k("get", "serviceaccounts").stdout
    # What kubectl writes, netsim reads: a label set by kubectl, refused without --overwrite by netsim.
    k("label", "gadget", "g1", "owner=kubectl")
    refused = cluster("label", "gadget", "g1", "owner=netsim", check=False)
    assert refused.returncode == 1 and "'owner' already has a value (kubectl)" in refused.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text(REST + "---\napiVersion: verbs.example.com/v1\nkind: Gizmo\nmetadata: {name: x}\n")
    failed = cluster("apply", "-f", str(bad), check=False)
    assert failed.returncode == 2 and f"{bad}: document 4: kind 'Gizmo' is not known" in failed.stderr
    assert "fix: apply its CustomResourceDefinition first" in failed.stderr and "nothing was applied" in failed.stderr

    out = cluster("delete", "-f", str(path)).stdout
    assert "customresourcedefinition/gadgets.verbs.example.com deleted" in out, out
    gone = k("get", "gadgets", check=False)  # kubectl's discovery cache may still name the kind
    assert gone.returncode == 1 and ("doesn't have a resource type" in gone.stderr
                                     or "could not find the requested resource" in gone.stderr), gone.stderr
