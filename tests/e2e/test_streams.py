"""pods/exec, pods/log and pods/portforward of a real cluster, driven by the machine's kubectl
and curl and the official Python client through the cluster's API server
(netsim.apiserver.streams; kubectl's port-forward is SPDY, netsim.apiserver.spdyforward)."""

import contextlib
import json
import os
import re
import select
import shutil
import subprocess
import time

import pytest

from netsim import kernel
from netsim.fabric import daemon
from netsim.model import names
from tests.conftest import SCENARIO, run_netsim, unique_name

KUBECTL = shutil.which("kubectl")
MANIFEST = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports: [{containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 8080, targetPort: 80}]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("streams")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NETSIM_STATE_DIR", str(tmp / "state"))
        mp.setenv("KUBECONFIG", str(tmp / "kubeconfig"))
        name = unique_name("st")
        (tmp / "scenario.yaml").write_text(SCENARIO)
        (tmp / "web.yaml").write_text(MANIFEST)
        try:
            up = run_netsim("up", str(tmp / "scenario.yaml"), "--name", name)
            assert up.returncode == 0, up.stderr
            applied = run_netsim("apply", "-c", name, "-f", str(tmp / "web.yaml"))
            assert applied.returncode == 0, applied.stderr
            yield name, None, tmp / "kubeconfig", _running_pod(name)
        finally:
            down = run_netsim("down", name)
            assert down.returncode == 0, down.stderr
            assert kernel.list_netns(names.cluster_prefix(name)) == []
            assert daemon.agent_pids(name) == []


def _running_pod(cluster: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pods = json.loads(run_netsim("get", "-c", cluster, "pods", "-o", "json", check=True).stdout)["items"]
        ready = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
        if ready:
            return ready[0]
        time.sleep(0.2)
    raise AssertionError("the web pod did not start")


def kubectl(kubeconfig, *args, input=None, timeout=30):
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    return subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          input=input, timeout=timeout, check=False)


def test_exec_runs_in_the_pod_with_its_resolv_conf(cluster):
    _, _, kc, pod = cluster
    name = pod["metadata"]["name"]
    out = kubectl(kc, "exec", name, "--", "cat", "/etc/resolv.conf")
    assert out.returncode == 0, out.stderr
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in out.stdout
    addr = kubectl(kc, "exec", name, "--", "ip", "-4", "-o", "addr", "show", "eth0")
    assert pod["status"]["podIP"] in addr.stdout


def test_exec_curls_a_service_by_its_dns_name(cluster):
    _, _, kc, pod = cluster
    out = kubectl(kc, "exec", pod["metadata"]["name"], "--", "curl", "-s", "--max-time", "5",
                  "http://web.default.svc.cluster.local:8080/")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["pod"] == pod["metadata"]["name"]


def test_exec_exit_code_stderr_and_stdin(cluster):
    _, _, kc, pod = cluster
    name = pod["metadata"]["name"]
    failed = kubectl(kc, "exec", name, "--", "sh", "-c", "echo oops >&2; exit 3")
    assert failed.returncode == 3
    assert "oops" in failed.stderr and "command terminated with exit code 3" in failed.stderr
    # stdin ends with v5's close signal: cat sees EOF and exits.
    echoed = kubectl(kc, "exec", "-i", name, "--", "sh", "-c", "cat; echo done", input="hello\nworld\n")
    assert echoed.returncode == 0, echoed.stderr
    assert echoed.stdout == "hello\nworld\ndone\n"
    missing = kubectl(kc, "exec", "no-such-pod", "--", "true")
    assert missing.returncode != 0 and 'pods "no-such-pod" not found' in missing.stderr


def test_logs_show_each_answered_connection(cluster):
    _, _, kc, pod = cluster
    name = pod["metadata"]["name"]
    ip = pod["status"]["podIP"]
    for _ in range(3):
        assert kubectl(kc, "exec", name, "--", "curl", "-s", "--max-time", "5", f"http://{ip}:80/hello").returncode == 0
    logs = kubectl(kc, "logs", name)
    assert logs.returncode == 0, logs.stderr
    lines = [line for line in logs.stdout.splitlines() if "GET /hello" in line]
    assert len(lines) >= 3 and all(line.startswith(f"tcp {ip}:") and "-> :80" in line for line in lines)
    tail = kubectl(kc, "logs", name, "--tail=1", "--timestamps").stdout.splitlines()
    assert len(tail) == 1 and tail[0].split(" ", 1)[0].endswith("Z") and "GET /hello" in tail[0]
    assert kubectl(kc, "logs", name, "--since=1h").stdout == logs.stdout


def test_logs_follow_streams_new_connections(cluster):
    _, _, kc, pod = cluster
    name = pod["metadata"]["name"]
    follow = subprocess.Popen([KUBECTL or "kubectl", "--kubeconfig", str(kc), "logs", "-f", "--tail=0", name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        kubectl(kc, "exec", name, "--", "curl", "-s", "--max-time", "5", "http://127.0.0.1:80/followed")
        line = follow.stdout.readline()
        assert "GET /followed" in line
    finally:
        follow.kill()
        follow.wait()


def test_port_forward_with_the_python_client(cluster):
    kubernetes = pytest.importorskip("kubernetes")
    from kubernetes.stream import portforward

    _, _, kc, pod = cluster
    api = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(kc)))
    name = pod["metadata"]["name"]
    pf = portforward(api.connect_get_namespaced_pod_portforward, name, "default", ports="80")
    sock = pf.socket(80)
    sock.setblocking(True)
    sock.settimeout(10)
    sock.sendall(b"GET /forwarded HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["pod"] == name
    assert pf.error(80) is None
    pf.close()
    # A port nothing listens on: the error channel says so.
    pf = portforward(api.connect_get_namespaced_pod_portforward, name, "default", ports="81")
    sock = pf.socket(81)
    sock.settimeout(10)
    assert sock.recv(10) == b""
    assert "connection refused" in (pf.error(81) or "")
    pf.close()


@contextlib.contextmanager
def port_forward(kubeconfig, target: str, remote: int, websockets: bool = True, pod_port: int | None = None):
    """kubectl port-forward TARGET 0:REMOTE on 127.0.0.1, yielding the local port kubectl chose
    (0: it picks a free one and prints it, with the pod port REMOTE came to) and the process.
    websockets=False turns kubectl's PortForwardWebsockets off, so it makes the plain SPDY
    upgrade it falls back to."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    env = {**os.environ, "KUBECTL_PORT_FORWARD_WEBSOCKETS": "true" if websockets else "false"}
    proc = subprocess.Popen([KUBECTL, "--kubeconfig", str(kubeconfig), "port-forward", "--address", "127.0.0.1",
                             target, f"0:{remote}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline() if ready else ""
        match = re.match(rf"Forwarding from 127\.0\.0\.1:(\d+) -> {pod_port or remote}$", line.strip())
        assert match, f"kubectl port-forward did not start: {line!r} {proc.stderr.read() if proc.poll() else ''}"
        yield int(match.group(1)), proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def curl(port: int, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-s", "--max-time", "5", f"http://127.0.0.1:{port}{path}"], capture_output=True,
                          text=True, timeout=15, check=False)


@pytest.mark.parametrize("websockets", [True, False], ids=["spdy-in-websocket", "spdy-upgrade"])
def test_kubectl_port_forward_to_a_pod(cluster, websockets):
    _, _, kc, pod = cluster
    name = pod["metadata"]["name"]
    with port_forward(kc, f"pod/{name}", 80, websockets) as (port, _):
        for i in range(3):  # each connection is a new pair of streams on the one session
            out = curl(port, f"/through-kubectl-{i}")
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["pod"] == name
    logs = kubectl(kc, "logs", name).stdout
    assert all(f"GET /through-kubectl-{i}" in logs for i in range(3))


def test_kubectl_port_forward_to_a_service(cluster):
    _, _, kc, pod = cluster
    # kubectl resolves the Service to one of its pods and port 8080 to targetPort 80 itself.
    with port_forward(kc, "svc/web", 8080, pod_port=80) as (port, _):
        out = curl(port, "/through-the-service")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["pod"] == pod["metadata"]["name"]


def test_kubectl_port_forward_to_a_closed_port_reports_the_error(cluster):
    _, _, kc, pod = cluster
    with port_forward(kc, f"pod/{pod['metadata']['name']}", 81) as (port, proc):
        out = curl(port, "/")
        assert out.returncode != 0 and out.stdout == ""
        # kubectl prints the error stream's text and gives up the session.
        proc.wait(timeout=20)
        err = proc.stderr.read()
    assert proc.returncode != 0
    assert "an error occurred forwarding" in err and "connection refused" in err, err
    assert "lost connection to pod" in err, err


def test_kubectl_exec_with_a_terminal_gets_its_size(cluster):
    _, _, kc, pod = cluster
    if shutil.which("script") is None or KUBECTL is None:
        pytest.skip("needs script(1) and kubectl")
    # script(1) gives kubectl a terminal of 45x123; kubectl sends that size on the resize channel.
    cmd = (f"stty rows 45 cols 123; {KUBECTL} --kubeconfig {kc} exec -it {pod['metadata']['name']} -- "
           "sh -c 'stty size; exit 5'")
    out = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL, check=False)
    assert out.returncode == 5, out.stdout + out.stderr
    assert "45 123" in out.stdout
