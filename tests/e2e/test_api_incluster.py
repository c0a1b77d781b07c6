"""The API server as pods reach it, and as `down` leaves it, on one real cluster (shared by the
module): curl in a pod asks https://kubernetes.default.svc, which is the cluster DNS, kube-proxy's
rules for the default/kubernetes Service and the server's socket in the control-plane node;
the certificates' names and modes; `down` removes the process, its ports, the certificates,
apiserver.json and the kubeconfig entries (and only those).  And an `up` whose API server step
fails rolls back, as does one refused for a kubeconfig it cannot merge into."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import stat
import subprocess

import pytest
import yaml
from cryptography import x509

from netsim import kernel
from netsim.apiserver import process
from netsim.fabric import daemon
from netsim.model import names
from tests.conftest import run_netsim, unique_name

SCENARIO = """apiVersion: netsim/v1alpha1
kind: Scenario
name: ignored
nodes:
  - name: control-plane
    role: control-plane
  - name: worker1
networking:
  serviceSubnet: 10.96.0.0/12
manifests: [pods.yaml]
"""

# A pod on the worker (its packets cross the overlay to the control-plane node's address) and
# one on the control-plane node itself (DNAT to a local address).
PODS = """apiVersion: v1
kind: Pod
metadata: {name: far}
spec:
  nodeName: worker1
  containers: [{name: c, image: busybox, command: [sleep, "1000"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: near}
spec:
  nodeName: control-plane
  tolerations: [{operator: Exists}]
  containers: [{name: c, image: busybox, command: [sleep, "1000"]}]
"""

# The user's kubeconfig before `up`: entries of another cluster, which must survive up and down.
THEIRS = {
    "apiVersion": "v1", "kind": "Config", "preferences": {"colors": True},
    "clusters": [{"name": "prod", "cluster": {"server": "https://prod.example:6443"}}],
    "users": [{"name": "prod-admin", "user": {"token": "t0ken"}}],
    "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod-admin", "namespace": "shop"}}],
    "current-context": "prod",
}
SERVICE_IP = "10.96.0.1"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("incluster")
    (d / "scenario.yaml").write_text(SCENARIO)
    (d / "pods.yaml").write_text(PODS)
    (d / "kubeconfig").write_text(yaml.safe_dump(THEIRS, sort_keys=False))
    env = {"NETSIM_STATE_DIR": str(d / "state"), "KUBECONFIG": str(d / "kubeconfig")}
    name = unique_name("inc")
    up = run_netsim("up", str(d / "scenario.yaml"), "--name", name, env=env)
    try:
        assert up.returncode == 0, up.stderr
        yield name, env, d
    finally:
        run_netsim("down", name, env=env)  # the last test took it down already, unless it failed first


def _in(env: dict, target: str, *argv: str, name: str) -> subprocess.CompletedProcess:
    return run_netsim("exec", target, "-c", name, "--", *argv, env=env)


def _curl(env: dict, target: str, name: str, pki: str, url: str, *extra: str) -> tuple[int, dict | str]:
    r = _in(env, target, "curl", "-sS", "--max-time", "10", "--cacert", f"{pki}/ca.crt", "-w", "\n%{http_code}",
            *extra, url, name=name)
    assert r.returncode == 0, f"{target}: curl {url}: {r.stderr}"
    body, _, code = r.stdout.rpartition("\n")
    with contextlib.suppress(ValueError):
        return int(code), json.loads(body)
    return int(code), body


def test_pods_reach_the_api_server_through_the_kubernetes_service(cluster):
    name, env, d = cluster
    pki = str(d / "state" / name / "pki")
    admin = ("--cert", f"{pki}/admin.crt", "--key", f"{pki}/admin.key")
    for pod in ("pod/default/far", "pod/default/near"):
        # By the Service's DNS name (the pod's resolv.conf searches default.svc.cluster.local),
        # its full name and its ClusterIP: curl checks each against the serving certificate.
        code, version = _curl(env, pod, name, pki, "https://kubernetes.default.svc/version")
        assert code == 200 and version["gitVersion"].startswith("v1."), version
        names_ = ("https://kubernetes.default.svc.cluster.local/version", f"https://{SERVICE_IP}/version",
                  "https://kubernetes/version", "https://kubernetes.default/version")
        for url in names_ if pod.endswith("far") else names_[:1]:  # the names are the pods' same DNS
            assert _curl(env, pod, name, pki, url)[0] == 200, url
        # The admin's client certificate (O=system:masters) lists the pods; without it, a 401 Status.
        code, pods = _curl(env, pod, name, pki, "https://kubernetes.default.svc/api/v1/namespaces/default/pods",
                           *admin)
        assert code == 200 and pods["kind"] == "PodList", pods
        assert {p["metadata"]["name"] for p in pods["items"]} == {"far", "near"}
        code, status = _curl(env, pod, name, pki, "https://kubernetes.default.svc/api/v1/namespaces/default/pods")
        assert code == 401 and status["kind"] == "Status" and status["reason"] == "Unauthorized", status
    # A node (host network) reaches the ClusterIP too: kube-proxy's OUTPUT rules.
    code, nodes = _curl(env, "node/worker1", name, pki, f"https://{SERVICE_IP}/api/v1/nodes", *admin)
    assert code == 200 and [n["metadata"]["name"] for n in nodes["items"]] == ["control-plane", "worker1"]
    # The Service and its EndpointSlice, as kube-apiserver keeps them: the node's :6443 behind :443.
    svc = json.loads(run_netsim("get", "svc", "kubernetes", "-n", "default", "-o", "json", "-c", name,
                                env=env).stdout)
    assert svc["spec"]["clusterIP"] == SERVICE_IP and svc["spec"]["ports"][0]["port"] == 443


def test_the_certificates_name_every_address_and_only_root_reads_them(cluster):
    name, env, d = cluster
    pki = d / "state" / name / "pki"
    cert = x509.load_pem_x509_certificate((pki / "apiserver.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    assert ips == {"127.0.0.1", "192.168.56.2", SERVICE_IP}
    assert {"kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local"} <= set(san.get_values_for_type(x509.DNSName))
    files = sorted(pki.iterdir())
    assert {f.name for f in files} == {"ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "admin.crt",
                                       "admin.key"}
    for f in [pki, *files]:
        st = f.stat()
        mode = 0o700 if f.is_dir() else 0o600
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, 0, 0), f
    info = json.loads((d / "state" / name / "apiserver.json").read_text())
    assert stat.S_IMODE((d / "state" / name / "apiserver.json").stat().st_mode) == 0o600
    assert info["nodeAddress"] == "192.168.56.2"


def _listening(netns: str | None, address: str, port: int) -> bool:
    sock = kernel.socket_in(netns, socket.AF_INET, socket.SOCK_STREAM) if netns else \
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(2)
        return sock.connect_ex((address, port)) == 0


def test_down_leaves_no_trace(cluster):
    name, env, d = cluster
    state = d / "state" / name
    info = json.loads((state / "apiserver.json").read_text())
    pids = process.pids(name)
    assert pids == [info["pid"]]
    node_netns = names.netns_name(name, "control-plane")
    assert _listening(None, "127.0.0.1", info["port"]) and _listening(node_netns, "192.168.56.2", 6443)
    merged = yaml.safe_load((d / "kubeconfig").read_text())
    assert merged["current-context"] == f"netsim-{name}"
    assert {e["name"] for e in merged["clusters"]} == {"prod", f"netsim-{name}"}

    down = run_netsim("down", name, env=env)
    assert down.returncode == 0, down.stderr
    # Ended (its parent, the `up` that started it, is gone: init reaps what is left of it).
    assert process.pids(name) == [] and not kernel.process_alive(info["pid"])
    assert daemon.agent_pids(name) == []
    assert not _listening(None, "127.0.0.1", info["port"])
    assert kernel.list_netns(names.cluster_prefix(name)) == []
    assert not state.exists()  # pki/, apiserver.json, apiserver.log, kubeconfig.json with it
    # The other cluster's entries as they were; the current context, which was netsim's, unset.
    after = yaml.safe_load((d / "kubeconfig").read_text())
    assert after == {**THEIRS, "current-context": ""}
    assert stat.S_IMODE((d / "kubeconfig").stat().st_mode) == 0o600
    assert sorted(p.name for p in d.iterdir()) == ["kubeconfig", "pods.yaml", "scenario.yaml"]


def test_up_whose_api_server_step_fails_leaves_nothing(tmp_path):
    """The certificates cannot be written (their directory's place is taken by a file): `up`
    fails naming it, after the nodes, agent and store were made, and removes all of it."""
    name = unique_name("incf")
    (tmp_path / "scenario.yaml").write_text(SCENARIO.replace("manifests: [pods.yaml]\n", ""))
    env = {"NETSIM_STATE_DIR": str(tmp_path / "state"), "KUBECONFIG": str(tmp_path / "kubeconfig")}
    (tmp_path / "state" / name).mkdir(parents=True)
    (tmp_path / "state" / name / "pki").write_text("not a directory\n")
    up = run_netsim("up", str(tmp_path / "scenario.yaml"), "--name", name, env=env)
    try:
        assert up.returncode == 1, up.stderr
        assert f"the API server's certificates: cannot make them in {tmp_path / 'state' / name / 'pki'}" \
            in up.stderr, up.stderr
        assert "everything this run created was removed" in up.stderr, up.stderr
        assert "2 nodes and 0 external hosts on the underlay" in up.stderr, up.stderr  # it failed later
        assert kernel.list_netns(names.cluster_prefix(name)) == []
        assert process.pids(name) == [] and daemon.agent_pids(name) == []
        assert not (tmp_path / "state").exists() and not (tmp_path / "kubeconfig").exists()
    finally:
        run_netsim("down", name, env=env)


def test_up_refuses_a_kubeconfig_it_cannot_merge_into(tmp_path):
    name = unique_name("inck")
    (tmp_path / "scenario.yaml").write_text(SCENARIO.replace("manifests: [pods.yaml]\n", ""))
    bad = "apiVersion: v1\nclusters: [{name: a\n"
    (tmp_path / "kubeconfig").write_text(bad)
    env = {"NETSIM_STATE_DIR": str(tmp_path / "state"), "KUBECONFIG": str(tmp_path / "kubeconfig")}
    up = run_netsim("up", str(tmp_path / "scenario.yaml"), "--name", name, env=env)
    try:
        assert up.returncode == 2, up.stderr
        assert f"kubeconfig {tmp_path / 'kubeconfig'}: not valid YAML" in up.stderr, up.stderr
        assert "nothing was created" in up.stderr
        assert (tmp_path / "kubeconfig").read_text() == bad
        assert kernel.list_netns(names.cluster_prefix(name)) == [] and not (tmp_path / "state" / name).exists()
    finally:
        run_netsim("down", name, env=env)


def test_down_all_stops_an_api_server_whose_cluster_left_no_state(tmp_path, monkeypatch):
    """A state directory removed by hand leaves no state and no namespace to find the cluster
    by: `down --all` finds it by its running API server."""
    from netsim.apiserver import pki

    monkeypatch.setenv("NETSIM_STATE_DIR", str(tmp_path / "state"))
    name = unique_name("incg")
    (tmp_path / "state" / name).mkdir(parents=True)
    pki.ensure(pki.paths(name), pki.server_sans([], None))
    info = process.start(name, str(tmp_path / "state" / name / "store.db"), None, None)
    try:
        shutil.rmtree(tmp_path / "state")
        down = run_netsim("down", "--all")
        assert down.returncode == 0 and f"Stopped cluster {name!r}'s 1 processes" in down.stderr, down.stderr
        assert process.pids(name) == [] and not kernel.process_alive(info["pid"])
        assert not _listening(None, "127.0.0.1", info["port"])
    finally:
        process.stop(name)
