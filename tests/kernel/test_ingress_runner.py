"""The agent's nginx runner (netsim.node.ingress.controller) with a real nginx in a real
namespace, a responder behind it and curl in front: started, reloaded only when the text
changes (same master), started again after a kill -9 (its orphaned worker cleared), and gone
without a trace when stopped."""

import json
import os
import signal
import subprocess

import pytest

from netsim.node.ingress import controller
from netsim.node.ingress.routes import Backend, Endpoint, Location, ProxyConfig, Server
from tests.kernel.proxypod import responder_namespace

pytestmark = pytest.mark.skipif(controller.nginx_binary() is None, reason="no nginx (scripts/install-deps.sh)")


@pytest.fixture
def pod_ns():
    with responder_namespace("ngx", 1) as ns:
        yield ns


def cfg(path: str, name: str = "test") -> ProxyConfig:
    web = Backend("default-web-80", "default", "web", "80", (Endpoint("127.0.0.1", 9000),))
    return ProxyConfig(name=name, servers=(Server("a.test", (Location(path, "Prefix", (web,)),)),))


def curl(ns: str, path: str, host: str = "a.test") -> tuple[int, str]:
    out = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-m", "5", "-H", f"Host: {host}",
                          "-w", "\n%{http_code}", f"http://127.0.0.1{path}"], capture_output=True, text=True)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def test_start_reload_on_change_only_restart_and_stop(pod_ns, tmp_path):
    log = tmp_path / "controller.log"
    n = controller.Nginx(pod_ns, tmp_path / "proxy", log)
    try:
        assert n.apply(cfg("/a"))
        code, body = curl(pod_ns, "/a/x")
        assert code == 200 and json.loads(body)["pod"] == "s0-0"
        assert curl(pod_ns, "/b")[0] == 404
        assert curl(pod_ns, "/a", host="other.test")[0] == 404  # no such host: the catch-all
        line = log.read_text().splitlines()[0]
        assert ' stdout F 127.0.0.1 "GET /a/x" 200 [default-web-80] 127.0.0.1:9000' in line
        master, mtime = n.proc.pid, n.conf.stat().st_mtime_ns
        assert n.apply(cfg("/a")) and n.reloads == 0 and n.conf.stat().st_mtime_ns == mtime  # same text
        assert n.apply(cfg("/b")) and n.reloads == 1 and n.proc.pid == master  # SIGHUP, same master
        assert curl(pod_ns, "/b/y")[0] == 200 and curl(pod_ns, "/a/x")[0] == 404
        print(f"nginx reload to the new configuration answering: {n.last_reload_ms:.1f} ms")
        os.kill(master, signal.SIGKILL)  # its worker lives on, holding :80
        n.proc.wait()
        assert any(pid != master for pid in controller.nginx_pids_in(pod_ns))
        assert not n.alive()
        n.text = ""
        assert n.apply(cfg("/b"))  # a new master; the orphaned worker was cleared
        assert n.proc.pid != master and curl(pod_ns, "/b/z")[0] == 200
    finally:
        n.stop()
    assert controller.nginx_pids_in(pod_ns) == []
    assert not (tmp_path / "proxy").exists()


def test_a_refused_configuration_keeps_the_running_one(pod_ns, tmp_path):
    n = controller.Nginx(pod_ns, tmp_path / "proxy")
    try:
        assert n.apply(cfg("/a"))
        bad = ProxyConfig(name="bad", servers=(Server("a.test", (Location("/(", "Regex", ()),)),))
        assert n.apply(bad)  # the old configuration still runs
        assert n.errors and "pcre" in n.errors[0] and "[emerg]" in n.errors[0]
        assert curl(pod_ns, "/a/1")[0] == 200
    finally:
        n.stop()


def test_proxies_generic_over_kinds(pod_ns, tmp_path, monkeypatch):
    monkeypatch.setenv("NETSIM_STATE_DIR", str(tmp_path / "state"))
    calls = []

    def config(pod, objects):
        calls.append(len(objects("Ingress")))
        return cfg("/" + pod["metadata"]["name"])

    kind = controller.ProxyKind("test", lambda p: p["metadata"]["name"].startswith("gw"), config, ("Ingress",))
    proxies = controller.Proxies("c1", [kind])
    pod = {"metadata": {"name": "gw1", "namespace": "default", "uid": "u1"}, "spec": {"containers": []}}
    objects = {"Ingress": [], "Service": [{"metadata": {"name": "s", "resourceVersion": "1"}}]}
    try:
        proxies.begin(lambda k: objects.get(k, []))
        assert proxies.prepare("default/gw1", pod) is not None
        assert proxies.run("default/gw1", pod_ns, None)
        assert curl(pod_ns, "/gw1/")[0] == 200
        objects["Service"][0]["metadata"]["resourceVersion"] = "2"  # not a kind it watches
        proxies.begin(lambda k: objects.get(k, []))
        proxies.prepare("default/gw1", pod)
        assert calls == [0]
        objects["Ingress"].append({"metadata": {"name": "i", "namespace": "default", "resourceVersion": "3"}})
        proxies.begin(lambda k: objects.get(k, []))
        proxies.prepare("default/gw1", pod)
        assert calls == [0, 1]
        assert proxies.prepare("default/x", {**pod, "metadata": {**pod["metadata"], "name": "x"}}) is None
    finally:
        proxies.close()
    assert controller.nginx_pids_in(pod_ns) == []


def test_header_and_method_matches_route_real_requests(pod_ns, tmp_path):
    """HTTPRoute-style rules sharing a path, told apart by a header and the method, falling
    through to the shorter Prefix when none matches: real nginx, real requests."""
    from netsim.node.ingress.routes import HeaderMatch, HeaderModifier

    one = Backend("default-web-80", "default", "web", "80", (Endpoint("127.0.0.1", 9000),))
    config = ProxyConfig(name="gw", servers=(Server("a.test", (
        Location("/", "Prefix", status=418),
        Location("/v2", "Prefix", (one,), headers=(HeaderMatch("Version", "two"),),
                 request_headers=HeaderModifier(set=(("X-Rule", "version"),))),
        Location("/v2", "Prefix", redirect=None, status=500, method="POST"),
    ), wildcard="many"),))
    n = controller.Nginx(pod_ns, tmp_path / "proxy")
    try:
        assert n.apply(config)
        out = subprocess.run(
            ["ip", "netns", "exec", pod_ns, "sh", "-c",
             "for a in '-H Version:two' '-X POST' '-H Version:three' ''; do "
             "curl -s -o /dev/null -m 5 -w '%{http_code} ' -H 'Host: a.test' $a http://127.0.0.1/v2/x; done; "
             "curl -s -m 5 -H 'Host: a.test' -H 'Version: two' http://127.0.0.1/v2"],
            capture_output=True, text=True).stdout
        codes, _, body = out.partition("{")
        assert codes.split() == ["200", "500", "418", "418"]
        echo = json.loads("{" + body)
        assert echo["path"] == "/v2" and echo["headers"]["X-Rule"] == ["version"]
    finally:
        n.stop()
