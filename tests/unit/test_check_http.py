"""HTTP expectations of scenario files (`host`, `path`, `scheme`, `status`, `answeredBy`):
how they load, how a bad one is refused (field and fix named), and how `netsim check` judges
an answer (pure: a fake store and hand-made results; tests/e2e/test_check.py sends real requests,
tests/kernel/test_responder.py has the echo answers they are judged by)."""

from __future__ import annotations

import pytest

from netsim.api.store import NotFound
from netsim.model.scenario import ScenarioError, load_scenario, manifest_objects
from netsim.observe import check, httpprobe
from tests.conftest import REPO

HEAD = ("apiVersion: netsim/v1alpha1\nkind: Scenario\nname: x\nnodes:\n  - {name: cp, role: control-plane}\n"
        "externalHosts: [{name: client}]\nexpect:\n  - ")


def _load(tmp_path, edit):
    path = tmp_path / "scn.yaml"
    path.write_text(HEAD + edit + "\n")
    return load_scenario(path)


def test_http_expectations_load_and_become_http_checks(tmp_path):
    scn = _load(tmp_path, "{from: host/client, to: lb/ingress-nginx/ingress-nginx-controller, host: backend.aa.com, "
                          "path: '/api?x=1', answeredBy: app=backend}\n  - {from: host/client, to: svc/web, "
                          "host: 'a.b:8080', status: 404}\n  - {from: host/client, to: ip:10.0.0.1, scheme: https, "
                          "answeredBy: web-}\n  - {from: host/client, to: svc/web, answeredBy: web-, protocol: UDP}")
    [a, b, c, d] = check.from_scenario(scn)
    assert a.http and (a.host, a.path, a.answered_by, a.status, a.port) == \
        ("backend.aa.com", "/api?x=1", "app=backend", None, None)
    assert a.kind == "HTTP" and a.column == "lb/ingress-nginx/ingress-nginx-controller backend.aa.com/api?x=1"
    assert b.status == 404 and c.kind == "HTTPS" and c.column == "ip:10.0.0.1 /"
    assert not d.http and d.kind == "UDP" and d.answered_by == "web-"  # the responder's pod, without HTTP


@pytest.mark.parametrize("edit, field, words", [
    ("{from: host/client, to: svc/web, host: 'bad host'}", "expect[0].host", "fix: use a DNS name"),
    ("{from: host/client, to: svc/web, host: 'a.com:99999'}", "expect[0].host", "is not a host name"),
    ("{from: host/client, to: svc/web, path: api}", "expect[0].path", "fix: start it with '/'"),
    ("{from: host/client, to: svc/web, path: '/a b'}", "expect[0].path", "no spaces"),
    ("{from: host/client, to: svc/web, scheme: ftp}", "expect[0].scheme", "fix: use 'http' or 'https'"),
    ("{from: host/client, to: svc/web, status: 42}", "expect[0].status", "fix: use an HTTP status code"),
    ("{from: host/client, to: svc/web, answeredBy: 'app in (a'}", "expect[0].answeredBy", "not a label selector"),
    ("{from: host/client, to: svc/web, answeredBy: Web_1}", "expect[0].answeredBy", "pod name prefix"),
    ("{from: host/client, to: svc/web, host: a.com, protocol: UDP}", "expect[0]", "fix: drop `protocol` or use TCP"),
    ("{from: host/client, to: svc/web, answeredBy: web, protocol: ICMP}", "expect[0]", "ICMP echo names no pod"),
    ("{from: host/client, to: svc/web, status: 404, expect: deny}", "expect[0]", "fix: use expect: allow"),
    ("{from: host/client, to: lb/a/b/c}", "expect[0].to", "fix: use lb/NS/NAME"),
    ("{from: host/client, to: svc/web, hostname: a.com}", "expect[0].hostname", "known fields here: from, to"),
])
def test_bad_http_fields_are_named_with_their_fix(tmp_path, edit, field, words):
    with pytest.raises(ScenarioError) as info:
        _load(tmp_path, edit)
    [(where, message)] = info.value.problems
    assert where == field and words in message, (where, message)


class Store:
    def __init__(self, pods):
        self.pods = {f"/registry/pods/{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in pods}

    def get(self, key):
        if key not in self.pods:
            raise NotFound(key)
        return self.pods[key]


STORE = Store([{"metadata": {"namespace": "default", "name": "backend-7d9-x2", "labels": {"app": "backend"}}},
               {"metadata": {"namespace": "default", "name": "frontend-5c-a1", "labels": {"app": "frontend"}}}])


def _answer(status, pod=None, result="allow"):
    return {"result": result, "reason": f"HTTP {status}" if status else "timeout", "status": status,
            "responder": pod, "namespace": "default" if pod else None, "server": "nginx"}


@pytest.mark.parametrize("expect, answer, ok, words", [
    (dict(host="backend.aa.com", answered_by="app=backend"), _answer(200, "backend-7d9-x2"), True, "HTTP 200"),
    (dict(host="backend.aa.com", answered_by="backend-"), _answer(200, "backend-7d9-x2"), True, "from pod"),
    (dict(host="backend.aa.com", answered_by="app=backend"), _answer(200, "frontend-5c-a1"), False,
     "HTTP 200 from pod default/frontend-5c-a1: that pod does not match answeredBy app=backend"),
    (dict(host="nobody.aa.com"), _answer(404), False, "HTTP 404 from nginx: expected status 200"),
    (dict(host="nobody.aa.com", status=404), _answer(404), True, "HTTP 404 from nginx"),
    (dict(path="/", answered_by="app=backend"), _answer(200), False,
     "no pod's echo came back, expected one matching answeredBy app=backend"),
    (dict(path="/gone", answered_by="app=backend"), _answer(200, "deleted-pod"), False,
     "does not match answeredBy app=backend"),
    (dict(path="/"), _answer(None, result="deny"), False, "no HTTP answer (timeout)"),
])
def test_judging_an_http_answer(expect, answer, ok, words):
    e = check.Expect("host/client", "lb/ingress-nginx/ingress-nginx-controller", None, "TCP", True, **expect)
    o = check.judge(STORE, e, answer)
    assert o.ok is ok and words in o.detail, o.detail


def test_a_deny_http_expectation_is_met_by_no_answer_and_broken_by_any():
    e = check.Expect("host/client", "svc/web", None, "TCP", False, path="/")
    assert check.judge(STORE, e, _answer(None, result="deny")).ok
    assert not check.judge(STORE, e, _answer(503)).ok


def test_report_gives_each_host_and_path_its_own_column():
    outs = [check.judge(STORE, check.Expect("host/client", "lb/x/y", None, "TCP", True, host=h,
                                            answered_by=f"app={h.split('.')[0]}"), _answer(200, pod))
            for h, pod in (("backend.aa.com", "backend-7d9-x2"), ("frontend.aa.com", "backend-7d9-x2"))]
    text = "\n".join(check.report(outs))
    assert "== HTTP: 1/2 as expected" in text
    assert "lb/x/y backend.aa.com/" in text and "lb/x/y frontend.aa.com/" in text


def test_parse_response():
    assert httpprobe.parse_response(b"HTTP/1.1 308 Permanent Redirect\r\nLocation: https://a/\r\n\r\n") == \
        (308, {"location": "https://a/"}, b"")
    assert httpprobe.parse_response(b"HTTP/1.1 200 OK\r\nContent-") is None
    assert httpprobe.parse_response(b"SSH-2.0-OpenSSH\r\n\r\n") is None


def test_the_ingress_scenario_loads_with_the_notes_two_hosts():
    """scenarios/ingress.yaml as a model (tests/e2e/test_scenarios.py brings it up and checks it)."""
    path = REPO / "scenarios" / "ingress.yaml"
    scn = load_scenario(path)
    assert scn.addons == ["ingress-nginx"] and scn.networking.loadBalancerPool is not None
    assert [h.name for h in scn.externalHosts] == ["client"]
    objs = manifest_objects(scn, path.parent)
    [ing] = [o for o in objs if o["kind"] == "Ingress"]
    routes = {r["host"]: r["http"]["paths"][0]["backend"]["service"]["name"] for r in ing["spec"]["rules"]}
    assert routes == {"backend.aa.com": "backend", "frontend.aa.com": "frontend"}
    deployments = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"] for o in objs
                   if o["kind"] == "Deployment"}
    assert deployments == {"backend": {"app": "backend"}, "frontend": {"app": "frontend"}}
    lb = "lb/ingress-nginx/ingress-nginx-controller"
    http = {(e.to, e.host, e.answeredBy, e.status) for e in scn.expect if e.from_ == "host/client" and e.http}
    assert {(lb, "backend.aa.com", "app=backend", None), (lb, "frontend.aa.com", "app=frontend", None),
            (lb, "nobody.aa.com", None, 404)} <= http
