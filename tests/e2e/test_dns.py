"""Cluster DNS (netsim/node/dns.py) on a real cluster: its pods ask with dig, nslookup and Python's
resolver through the kube-dns Service.  The answers alone, pure, are tests/unit/test_dns_records.py."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from netsim import kernel
from netsim.model import names
from netsim.node import dns
from tests.conftest import SCENARIO, K8s, run_netsim, running, unique_name

# == a real cluster ============================================================================
APP = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: nginx}
spec:
  clusterIP: None
  selector: {app: sts}
  ports: [{name: web, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web-sts}
spec:
  serviceName: nginx
  replicas: 2
  selector: {matchLabels: {app: sts}}
  template:
    metadata: {labels: {app: sts}}
    spec:
      containers: [{name: nginx, image: nginx, ports: [{name: web, containerPort: 8080}]}]
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec:
  containers: [{name: c, image: busybox, ports: [{containerPort: 9}]}]
"""


@pytest.fixture(scope="module")
def dns_cluster(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("dns")
    state = tmp_path / "state"
    os.environ["NETSIM_STATE_DIR"] = str(state)  # as the state_dir fixture, for a module-wide cluster
    name = unique_name("dns")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    up = run_netsim("up", str(scenario), "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        k8s = K8s(name, tmp_path)
        k8s.apply(APP)
        yield k8s
    finally:
        assert run_netsim("down", name).returncode == 0
        assert kernel.list_netns(names.cluster_prefix(name)) == []
        assert kernel.list_netns_etc(names.cluster_prefix(name)) == []
        os.environ.pop("NETSIM_STATE_DIR", None)


def in_pod(k8s, pod, *command, check=True) -> str:
    result = k8s("exec", pod, "--", *command, check=check)
    return result.stdout


def test_kube_dns_service_and_pods(dns_cluster):
    k8s = dns_cluster
    svc = json.loads(k8s("get", "svc", "kube-dns", "-n", "kube-system", "-o", "json").stdout)
    assert svc["spec"]["clusterIP"] == "10.96.0.10"
    pods = json.loads(k8s("get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns", "-o", "json").stdout)["items"]
    assert len(running(pods)) == 2
    conf = in_pod(k8s, "pod/shop/client", "cat", "/etc/resolv.conf")
    assert conf == dns.resolv_conf("shop", "10.96.0.10")
    assert conf.splitlines() == ["search shop.svc.cluster.local svc.cluster.local cluster.local",
                                 "nameserver 10.96.0.10", "options ndots:5"]


def test_dig_nslookup_and_python_resolve_services(dns_cluster):
    k8s = dns_cluster
    web_ip = k8s.get("service", "web")["spec"]["clusterIP"]
    client = "pod/shop/client"
    assert in_pod(k8s, client, "dig", "+short", "web.default.svc.cluster.local").split() == [web_ip]
    assert in_pod(k8s, client, "dig", "+short", "+tcp", "web.default.svc.cluster.local").split() == [web_ip]
    assert in_pod(k8s, client, "dig", "+short", "+search", "web.default").split() == [web_ip]  # search path
    out = in_pod(k8s, client, "nslookup", "web.default")
    assert f"Address: {web_ip}" in out and "Name:\tweb.default.svc.cluster.local" in out
    # Python's resolver (glibc's, through /etc/resolv.conf as `ip netns exec` mounts it).
    py = "import socket,sys; print(socket.gethostbyname(sys.argv[1]))"
    assert in_pod(k8s, client, "python3", "-c", py, "web.default").strip() == web_ip
    assert in_pod(k8s, client, "python3", "-c", py, "kube-dns.kube-system.svc.cluster.local").strip() == "10.96.0.10"


def test_headless_srv_and_statefulset_names(dns_cluster):
    k8s = dns_cluster
    sts = {p["metadata"]["name"]: p["status"]["podIP"] for p in running(k8s.pods("app=sts"))}
    assert set(sts) == {"web-sts-0", "web-sts-1"}
    client = "pod/shop/client"
    headless = in_pod(k8s, client, "dig", "+short", "nginx.default.svc.cluster.local").split()
    assert sorted(headless) == sorted(sts.values())
    stable = in_pod(k8s, client, "dig", "+short", "web-sts-0.nginx.default.svc.cluster.local").split()
    assert stable == [sts["web-sts-0"]]
    srv = in_pod(k8s, client, "dig", "+short", "SRV", "_web._tcp.nginx.default.svc.cluster.local").splitlines()
    assert sorted(line.split()[-1] for line in srv) == ["web-sts-0.nginx.default.svc.cluster.local.",
                                                        "web-sts-1.nginx.default.svc.cluster.local."]
    assert all(line.split()[2] == "8080" for line in srv)
    ip = sts["web-sts-1"]
    pod_name = f"{ip.replace('.', '-')}.default.pod.cluster.local"
    assert in_pod(k8s, client, "dig", "+short", pod_name).split() == [ip]


def test_unknown_and_outside_names_answer_at_once(dns_cluster):
    k8s = dns_cluster
    client = "pod/shop/client"
    out = in_pod(k8s, client, "dig", "nope.default.svc.cluster.local", check=False)
    assert "status: NXDOMAIN" in out
    t = time.monotonic()
    out = in_pod(k8s, client, "dig", "+tries=1", "+time=2", "example.com", check=False)
    assert "status: REFUSED" in out and time.monotonic() - t < 1.5, out


def test_a_new_service_resolves_within_a_second(dns_cluster):
    k8s = dns_cluster
    k8s.apply("apiVersion: v1\nkind: Service\nmetadata: {name: late}\nspec:\n  selector: {app: web}\n"
              "  ports: [{port: 81, targetPort: 8080}]\n")
    ip = k8s.get("service", "late")["spec"]["clusterIP"]
    worker = names.netns_name(k8s.name, "worker1")
    t = time.monotonic()
    while True:  # asked from a node, straight at the kube-dns Service, as soon as apply returns
        reply = dns.query(worker, "10.96.0.10", "late.default.svc.cluster.local")
        if [str(rr.rdata) for rr in reply.rr] == [ip] or time.monotonic() - t > 1.0:
            break
        time.sleep(0.05)
    assert [str(rr.rdata) for rr in reply.rr] == [ip], f"not answered within 1 s: {reply}"
    k8s("delete", "service", "late")


def test_probe_a_service_by_name(dns_cluster):
    k8s = dns_cluster
    web = {p["metadata"]["name"] for p in running(k8s.pods("app=web"))}
    for name in ("web.default", "web.default.svc.cluster.local"):
        code, answer = k8s.probe("pod/shop/client", name)
        assert code == 0 and answer["responder"] in web, answer
    result = k8s("probe", "pod/shop/client", "nope.default", check=False)
    assert result.returncode == 2 and "cannot resolve 'nope.default'" in result.stderr, result.stderr


def test_the_hosts_resolv_conf_is_untouched(dns_cluster):
    """The host's own /etc/resolv.conf is never changed: only /etc/netns/<pod netns>/ files."""
    host = subprocess.run(["cat", "/etc/resolv.conf"], capture_output=True, text=True).stdout
    assert "10.96.0.10" not in host
