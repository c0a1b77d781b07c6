"""Ingress, IngressClass and TLS Secret through the registry (netsim.api.validation and
netsim.api.admission): every validation rule of upstream's networking validation.go with its
field path and message, the DefaultIngressClass admission, and the same refusals from the
real kubectl against the API server."""

from __future__ import annotations

import copy
import json

import pytest

from netsim.api import admission, registry, validation
from netsim.model import k8s
from tests.unit.fakes import MemoryStore

NET = "networking.k8s.io/v1"


@pytest.fixture
def store():
    s = MemoryStore()
    registry.bootstrap(s, registry.ClusterConfig())
    return s


def backend(name="web", port=80):
    return {"service": {"name": name, "port": {"number": port} if isinstance(port, int) else {"name": port}}}


def ing(spec=None, name="web", **meta):
    spec = spec if spec is not None else {"rules": [{"host": "foo.example.com", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": backend()}]}}]}
    return {"apiVersion": NET, "kind": "Ingress", "metadata": {"name": name, "namespace": "default", **meta},
            "spec": spec}


def with_path(**path):
    p = {"path": "/", "pathType": "Prefix", "backend": backend(), **path}
    p = {k: v for k, v in p.items() if v is not None}
    return ing({"rules": [{"http": {"paths": [p]}}]})


def causes(obj, old=None):
    return validation.errors(obj, old)


def refused(store, obj) -> registry.ApiError:
    with pytest.raises(registry.ApiError) as exc:
        registry.create(store, obj)
    assert exc.value.reason == "Invalid" and exc.value.code == 422
    return exc.value


P = "spec.rules[0].http.paths[0]"


def test_a_valid_ingress_passes():
    assert causes(ing()) == []
    assert causes(ing({"defaultBackend": backend(port="http")})) == []
    assert causes(ing({"rules": [{"host": "*.foo.com", "http": {"paths": [
        {"path": "/a", "pathType": "Exact", "backend": backend()},
        {"pathType": "ImplementationSpecific", "backend": {"resource": {"apiGroup": "k8s.example.com",
                                                                        "kind": "Bucket", "name": "b"}}}]}}],
        "tls": [{"hosts": ["*.foo.com", "foo.com"], "secretName": "foo-tls"}], "ingressClassName": "nginx"})) == []


def test_path_type_is_required_and_one_of_three():
    assert causes(with_path(pathType=None)) == [(f"{P}.pathType", "Required value: pathType must be specified")]
    assert causes(with_path(pathType="Regex")) == [
        (f"{P}.pathType", 'Unsupported value: "Regex": supported values: "Exact", "ImplementationSpecific", "Prefix"')]


@pytest.mark.parametrize("kind", ["Exact", "Prefix"])
def test_exact_and_prefix_paths_are_absolute_and_clean(kind):
    assert causes(with_path(pathType=kind, path="foo")) == [
        (f"{P}.path", 'Invalid value: "foo": must be an absolute path')]
    assert causes(with_path(pathType=kind, path="")) == [(f"{P}.path", 'Invalid value: "": must be an absolute path')]
    for seq in ("//", "/./", "/../", "%2f", "%2F"):
        assert causes(with_path(pathType=kind, path=f"/a{seq}b")) == [
            (f"{P}.path", f'Invalid value: "/a{seq}b": must not contain \'{seq}\'')], seq
    assert causes(with_path(pathType=kind, path="/a/..")) == [
        (f"{P}.path", 'Invalid value: "/a/..": cannot end with \'/..\'')]
    assert causes(with_path(pathType=kind, path="/a/.")) == [
        (f"{P}.path", 'Invalid value: "/a/.": cannot end with \'/.\'')]
    # upstream reports each sequence and suffix it finds: "/a/./.." has "/./" and ends with "/.."
    assert [m for _, m in causes(with_path(pathType=kind, path="/a/./.."))] == [
        'Invalid value: "/a/./..": must not contain \'/./\'', 'Invalid value: "/a/./..": cannot end with \'/..\'']


def test_implementation_specific_may_be_empty_or_anything_absolute():
    assert causes(with_path(pathType="ImplementationSpecific", path=None)) == []
    assert causes(with_path(pathType="ImplementationSpecific", path="/a//(.*)")) == []
    assert causes(with_path(pathType="ImplementationSpecific", path="a")) == [
        (f"{P}.path", 'Invalid value: "a": must be an absolute path')]


def test_hosts_are_dns_names_or_wildcards_never_ips():
    def host(h):
        return causes(ing({"rules": [{"host": h}]}))
    assert host("foo.bar.com") == [] and host("*.bar.com") == []
    assert host("1.2.3.4") == [
        ("spec.rules[0].host", 'Invalid value: "1.2.3.4": must be a DNS name, not an IP address')]
    assert host("::1")[0] == ("spec.rules[0].host", 'Invalid value: "::1": must be a DNS name, not an IP address')
    [(field, msg)] = host("Foo.com")
    assert field == "spec.rules[0].host" and msg.startswith(
        'Invalid value: "Foo.com": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric')
    assert msg.endswith("(e.g. 'example.com', regex used for validation is "
                        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
    for bad in ("*", "*.*.foo.com", "foo.*.com", "*foo.com"):
        [(field, msg)] = host(bad)
        assert msg.startswith(f'Invalid value: "{bad}": a wildcard DNS-1123 subdomain must start with \'*.\''), bad
    assert host("a" * 254)[0] == ("spec.rules[0].host", f'Invalid value: "{"a" * 254}": must be no more than 253 '
                                                        "characters")


def test_rules_with_http_need_paths():
    assert causes(ing({"rules": [{"host": "foo.com", "http": {"paths": []}}]})) == [
        ("spec.rules[0].http.paths", "Required value")]
    assert causes(ing({"rules": [{"host": "foo.com", "http": {}}]})) == [("spec.rules[0].http.paths", "Required value")]


def test_default_backend_or_rules_required():
    assert causes(ing({})) == [
        ("spec", "Invalid value: []networking.IngressRule(nil): either `defaultBackend` or `rules` must be specified")]
    assert causes(ing({"rules": []})) == [
        ("spec", "Invalid value: []networking.IngressRule{}: either `defaultBackend` or `rules` must be specified")]
    no_spec = ing()
    del no_spec["spec"]
    assert [f for f, _ in causes(no_spec)] == ["spec"]


def test_a_backend_is_one_of_service_or_resource():
    resource = {"apiGroup": "k8s.example.com", "kind": "Bucket", "name": "b"}
    assert causes(ing({"defaultBackend": {**backend(), "resource": resource}})) == [
        ("spec.defaultBackend", 'Invalid value: "": cannot set both resource and service backends')]
    assert causes(ing({"defaultBackend": {}})) == [
        ("spec.defaultBackend", 'Invalid value: "": resource or service backend is required')]
    group, *rest = causes(ing({"defaultBackend": {"resource": {"name": "a/b", "apiGroup": "Bad_Group"}}}))
    assert group[0] == "spec.defaultBackend.resource.apiGroup" and group[1].startswith(
        'Invalid value: "Bad_Group": a lowercase RFC 1123 subdomain')
    assert rest == [("spec.defaultBackend.resource.kind", "Required value"),
                    ("spec.defaultBackend.resource.name", "Invalid value: \"a/b\": may not contain '/'")]


def test_a_service_backend_has_a_dns1035_name_and_one_of_port_name_or_number():
    def svc(service):
        return causes(ing({"defaultBackend": {"service": service}}))
    at = "spec.defaultBackend"
    assert svc({"port": {"number": 80}}) == [(f"{at}.service.name", "Required value")]
    [(field, msg)] = svc({"name": "1web", "port": {"number": 80}})
    assert field == f"{at}.service.name" and msg.startswith('Invalid value: "1web": a DNS-1035 label must consist')
    assert svc({"name": "web", "port": {"name": "http", "number": 80}}) == [
        (at, 'Invalid value: "": cannot set both port name & port number')]
    assert svc({"name": "web", "port": {}}) == [(at, "Required value: port name or number is required")]
    assert svc({"name": "web"}) == [(at, "Required value: port name or number is required")]
    assert svc({"name": "web", "port": {"number": 70000}}) == [
        (f"{at}.service.port.number", "Invalid value: 70000: must be between 1 and 65535, inclusive")]
    assert svc({"name": "web", "port": {"name": "HTTP"}}) == [
        (f"{at}.service.port.name", 'Invalid value: "HTTP": must contain only alpha-numeric characters (a-z, 0-9), '
                                    "and hyphens (-)")]
    assert [m for _, m in svc({"name": "web", "port": {"name": "-a--b-"}})] == [
        'Invalid value: "-a--b-": must not contain consecutive hyphens (-)',
        'Invalid value: "-a--b-": must not begin or end with a hyphen (-)']
    assert svc({"name": "web", "port": {"name": "8080"}}) == [
        (f"{at}.service.port.name", 'Invalid value: "8080": must contain at least one letter (a-z)')]


def test_tls_hosts_and_secret_names():
    def tls(entry):
        return causes(ing({"defaultBackend": backend(), "tls": [entry]}))
    assert tls({"hosts": ["foo.com", "*.foo.com"]}) == []
    [(field, msg)] = tls({"hosts": ["ok.com", "Bad.com"]})
    assert field == "spec.tls[0].hosts[1]" and msg.startswith('Invalid value: "Bad.com": a lowercase RFC 1123')
    [(field, msg)] = tls({"hosts": ["*.*.foo.com"]})
    assert field == "spec.tls[0].hosts[0]" and "wildcard DNS-1123 subdomain" in msg
    [(field, msg)] = tls({"secretName": "Foo_TLS"})
    assert field == "spec.tls[0].secretName" and msg.startswith('Invalid value: "Foo_TLS": a lowercase RFC 1123')
    # an update keeps an invalid secretName the stored object already had (AllowInvalidSecretName)
    old = ing({"defaultBackend": backend(), "tls": [{"secretName": "Foo_TLS"}]})
    assert causes(copy.deepcopy(old), old) == []


def test_an_update_keeps_invalid_rules_under_a_wildcard_host_the_old_object_had():
    bad = ing({"rules": [{"host": "*.foo.com", "http": {"paths": [{"path": "/", "backend": backend()}]}}]})
    assert [f for f, _ in causes(bad)] == [f"{P}.pathType"]
    assert causes(copy.deepcopy(bad), bad) == []


def test_class_name_and_the_legacy_annotation():
    [(field, msg)] = causes(ing({**ing()["spec"], "ingressClassName": "Nginx"}))
    assert field == "spec.ingressClassName" and msg.startswith('Invalid value: "Nginx": a lowercase RFC 1123')
    both = ing({**ing()["spec"], "ingressClassName": "nginx"},
               annotations={"kubernetes.io/ingress.class": "traefik"})
    assert causes(both) == [("annotations.kubernetes.io/ingress.class",
                             'Invalid value: "traefik": must match `ingressClassName` when both are specified')]
    assert causes(both, old=both) == []  # checked on create only
    same = ing({**ing()["spec"], "ingressClassName": "nginx"}, annotations={"kubernetes.io/ingress.class": "nginx"})
    assert causes(same) == []


def test_status_addresses_are_checked_on_a_status_update():
    obj = ing()
    obj["status"] = {"loadBalancer": {"ingress": [{"ip": "10.0.0.300"}, {"hostname": "1.2.3.4"}, {"ip": "10.0.0.1"}]}}
    assert validation.ingress_status(obj, None) == [
        ("status.loadBalancer.ingress[0].ip",
         'Invalid value: "10.0.0.300": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)'),
        ("status.loadBalancer.ingress[1].hostname", 'Invalid value: "1.2.3.4": must be a DNS name, not an IP address')]


# -- IngressClass -----------------------------------------------------------------------------

def klass(controller="k8s.io/ingress-nginx", parameters=None, name="nginx", **meta):
    spec = {"controller": controller, **({"parameters": parameters} if parameters is not None else {})}
    return {"apiVersion": NET, "kind": "IngressClass", "metadata": {"name": name, **meta}, "spec": spec}


def test_ingress_class_controller_is_a_domain_prefixed_path():
    assert causes(klass()) == []
    assert causes(klass("")) == [("spec.controller", "Required value")]
    assert causes(klass("nginx")) == [
        ("spec.controller", 'Invalid value: "nginx": must be a domain-prefixed path (such as "acme.io/foo")')]
    assert causes(klass("k8s.io/")) == [
        ("spec.controller", 'Invalid value: "k8s.io/": must be a domain-prefixed path (such as "acme.io/foo")')]
    [(field, msg)] = causes(klass("K8s.io/x"))
    assert field == "spec.controller" and msg.startswith('Invalid value: "K8s.io": a lowercase RFC 1123')
    assert causes(klass("k8s.io/a b")) == [
        ("spec.controller", "Invalid value: \"a b\": Invalid path (regex used for validation is "
                            "'[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+')")]
    too_long = "k8s.io/" + "a" * 250
    assert ("spec.controller", "Too long: may not be more than 250 bytes") in causes(klass(too_long))
    assert causes(klass("acme.io/other"), old=klass()) == [
        ("spec.controller", 'Invalid value: "acme.io/other": field is immutable')]


def test_ingress_class_parameters():
    ok = {"apiGroup": "k8s.example.com", "kind": "Params", "name": "p", "scope": "Namespace", "namespace": "team"}
    assert causes(klass(parameters=ok)) == []
    assert causes(klass(parameters={"kind": "Params", "name": "p", "scope": "Cluster"})) == []
    assert causes(klass(parameters={"scope": "Cluster"})) == [
        ("spec.parameters.kind", "Required value"), ("spec.parameters.name", "Required value")]
    assert causes(klass(parameters={"kind": "P", "name": "p"})) == [("spec.parameters.scope", "Required value")]
    # ... which never happens through the API: SetDefaults_IngressClass makes it Cluster first
    store = MemoryStore()
    registry.bootstrap(store, registry.ClusterConfig())
    stored = registry.create(store, klass(parameters={"kind": "P", "name": "p"}))
    assert stored["spec"]["parameters"] == {"kind": "P", "name": "p", "scope": "Cluster"}
    with pytest.raises(registry.ApiError) as exc:  # defaulted before validation: Cluster forbids a namespace
        registry.create(store, klass(name="n", parameters={"kind": "P", "name": "p", "namespace": "team"}))
    assert exc.value.causes == [("spec.parameters.namespace", "Forbidden: `parameters.scope` is set to 'Cluster'")]
    assert causes(klass(parameters={"kind": "P", "name": "p", "scope": "Global"})) == [
        ("spec.parameters.scope", 'Unsupported value: "Global": supported values: "Cluster", "Namespace"')]
    assert causes(klass(parameters={"kind": "P", "name": "p", "scope": "Namespace"})) == [
        ("spec.parameters.namespace", "Required value: `parameters.scope` is set to 'Namespace'")]
    assert causes(klass(parameters={"kind": "P", "name": "p", "scope": "Cluster", "namespace": "team"})) == [
        ("spec.parameters.namespace", "Forbidden: `parameters.scope` is set to 'Cluster'")]
    assert causes(klass(parameters={"kind": "..", "name": "a%b", "scope": "Cluster"})) == [
        ("spec.parameters.kind", "Invalid value: \"..\": may not be '..'"),
        ("spec.parameters.name", "Invalid value: \"a%b\": may not contain '%'")]
    [(field, msg)] = causes(klass(parameters={**ok, "namespace": "Team"}))
    assert field == "spec.parameters.namespace" and msg.startswith('Invalid value: "Team": a lowercase RFC 1123 label')


# -- Secret -----------------------------------------------------------------------------------

def secret(type_="kubernetes.io/tls", **fields):
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
            "type": type_, **fields}


def test_a_tls_secret_needs_its_certificate_and_key(store):
    assert causes(secret()) == [("data[tls.crt]", "Required value"), ("data[tls.key]", "Required value")]
    assert causes(secret(data={"tls.crt": "eA=="})) == [("data[tls.key]", "Required value")]
    assert causes(secret(data={"tls.crt": "eA=="}, stringData={"tls.key": "k"})) == []
    assert causes(secret("Opaque")) == []
    assert causes(secret("Opaque"), old=secret(data={"tls.crt": "", "tls.key": ""})) == [
        ("type", 'Invalid value: "Opaque": field is immutable')]
    exc = refused(store, secret())
    assert str(exc) == 'Secret "s" is invalid: [data[tls.crt]: Required value, data[tls.key]: Required value]'


# -- through the registry: every writer --------------------------------------------------------

def test_create_replace_and_apply_refuse_with_the_causes(store):
    bad = with_path(pathType=None)
    exc = refused(store, bad)
    assert str(exc) == (f'Ingress.networking.k8s.io "web" is invalid: {P}.pathType: Required value: pathType must be '
                        "specified")
    assert exc.causes == [(f"{P}.pathType", "Required value: pathType must be specified")]
    with pytest.raises(registry.ApiError) as applied:
        registry.apply(store, [ing(name="ok"), bad])
    assert applied.value.index == 1 and applied.value.causes == exc.causes
    assert not registry.store_has(store, k8s.key("Ingress", "default", "ok"))  # nothing half-applied
    registry.create(store, ing())
    with pytest.raises(registry.ApiError) as replaced:
        registry.replace(store, bad)
    assert replaced.value.causes == exc.causes
    with pytest.raises(registry.ApiError):
        registry.apply(store, [bad])
    good = registry.apply(store, [ing()])
    assert good == [("ingress/default/web", "unchanged")]


# -- DefaultIngressClass ----------------------------------------------------------------------

def test_a_new_ingress_without_a_class_gets_the_default_one(store):
    registry.apply(store, [klass(name="plain"), klass(name="nginx", annotations={
        "ingressclass.kubernetes.io/is-default-class": "true"}), klass(name="not", annotations={
            "ingressclass.kubernetes.io/is-default-class": "True"})])  # only "true" counts
    assert registry.create(store, ing())["spec"]["ingressClassName"] == "nginx"
    # a class given, even "", or the legacy annotation: left alone
    assert registry.create(store, ing({**ing()["spec"], "ingressClassName": "plain"}, name="b"))["spec"][
        "ingressClassName"] == "plain"
    empty = ing({**ing()["spec"], "ingressClassName": ""}, name="c")
    admission.default_class(store, empty)  # "" is a class given: not defaulted, then refused as a name
    assert empty["spec"]["ingressClassName"] == ""
    assert refused(store, empty).causes[0][0] == "spec.ingressClassName"
    legacy = registry.create(store, ing(name="d", annotations={"kubernetes.io/ingress.class": "traefik"}))
    assert "ingressClassName" not in legacy["spec"]
    # admission runs on create only: an update that drops the class keeps it dropped (PUT) ...
    put = registry.replace(store, ing())
    assert "ingressClassName" not in put["spec"]
    # ... while netsim apply, like kubectl apply's three-way merge, keeps the stored class
    registry.delete(store, "Ingress", "default", "web")
    registry.apply(store, [ing()])
    assert registry.apply(store, [ing()]) == [("ingress/default/web", "unchanged")]
    assert store.get(k8s.key("Ingress", "default", "web"))["spec"]["ingressClassName"] == "nginx"


def test_no_default_class_no_class(store):
    registry.apply(store, [klass()])
    assert "ingressClassName" not in registry.create(store, ing())["spec"]


def test_several_defaults_the_newest_wins_then_the_first_name(store):
    default = {"ingressclass.kubernetes.io/is-default-class": "true"}
    for name, created in (("old", "2026-01-01T00:00:00Z"), ("newer-b", "2026-02-01T00:00:00Z"),
                          ("newer-a", "2026-02-01T00:00:00Z")):
        store.create(k8s.key("IngressClass", None, name), registry.new_object(
            klass(name=name, annotations=default, creationTimestamp=created)))
    assert registry.create(store, ing())["spec"]["ingressClassName"] == "newer-a"


def test_a_default_class_applied_in_the_same_batch_counts(store):
    registry.apply(store, [klass(name="old", annotations={"ingressclass.kubernetes.io/is-default-class": "true"})])
    registry.apply(store, [klass(name="nginx", annotations={"ingressclass.kubernetes.io/is-default-class": "true"}),
                           ing()])
    assert store.get(k8s.key("Ingress", "default", "web"))["spec"]["ingressClassName"] == "nginx"


# -- the real kubectl -------------------------------------------------------------------------

def test_kubectl_apply_of_an_invalid_ingress_shows_the_status(kubectl):
    code, _, err = kubectl("apply", "-f", "-", stdin=with_path(pathType=None, path="foo"))
    assert code == 1
    assert f'The Ingress "web" is invalid: {P}.pathType: Required value: pathType must be specified' in err
    bad = with_path(path="foo//bar")
    code, _, err = kubectl("apply", "-f", "-", stdin=bad)
    assert code == 1 and 'The Ingress "web" is invalid: ' in err
    assert f"* {P}.path: Invalid value: \"foo//bar\": must be an absolute path" in err
    assert f"* {P}.path: Invalid value: \"foo//bar\": must not contain '//'" in err
    code, out, err = kubectl("create", "-f", "-", "-o", "json", stdin=secret(data={"tls.crt": "eA=="}))
    assert code == 1 and 'The Secret "s" is invalid: data[tls.key]: Required value' in err


def test_kubectl_get_ing_wide_and_the_default_class(kubectl):
    code, _, err = kubectl("apply", "-f", "-", stdin={"apiVersion": "v1", "kind": "List", "items": [
        klass(annotations={"ingressclass.kubernetes.io/is-default-class": "true"}),
        ing({"rules": [{"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend()}]}}
                       for h in ("a.example.com", "b.example.com", "c.example.com", "d.example.com")],
             "tls": [{"hosts": ["a.example.com"], "secretName": "a-tls"}]})]})
    assert code == 0, err
    code, out, err = kubectl("get", "ing", "-o", "wide")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert row.split()[:6] == ["web", "nginx", "a.example.com,b.example.com,c.example.com", "+", "1", "more..."]
    assert row.split()[6] == "80," and row.split()[7] == "443"
    code, out, _ = kubectl("get", "ing", "web", "-o", "json")
    assert json.loads(out)["spec"]["ingressClassName"] == "nginx"
    code, out, err = kubectl("get", "ingressclass")
    assert code == 0 and out.split()[:8] == ["NAME", "CONTROLLER", "PARAMETERS", "AGE", "nginx",
                                             "k8s.io/ingress-nginx", "<none>", out.split()[7]]


def test_kubectl_create_ingress_status_address_and_a_bad_status(kubectl):
    code, out, err = kubectl("create", "ingress", "simple", "--rule=foo.com/bar*=svc1:8080,tls=my-cert",
                             "--rule=bar.com/=svc2:http")
    assert code == 0, err
    status = {"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}, {"hostname": "lb.example.com"}]}}}
    code, _, err = kubectl("patch", "ing", "simple", "--subresource=status", "--type=merge", "-p", json.dumps(status))
    assert code == 0, err
    code, out, err = kubectl("get", "ing", "simple", "-o", "wide", "--no-headers")
    assert out.split() == ["simple", "<none>", "foo.com,bar.com", "198.51.100.7,lb.example.com", "80,", "443",
                           out.split()[-1]]
    bad = {"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.300"}]}}}
    code, _, err = kubectl("patch", "ing", "simple", "--subresource=status", "--type=merge", "-p", json.dumps(bad))
    assert code == 1 and ('status.loadBalancer.ingress[0].ip: Invalid value: "198.51.100.300": must be a valid IP '
                          "address") in err
    # a PUT of the main resource keeps the status (the status subresource owns it)
    code, out, _ = kubectl("get", "ing", "simple", "-o", "json")
    obj = json.loads(out)
    obj["metadata"]["labels"] = {"a": "b"}
    obj.pop("status")
    code, _, err = kubectl("replace", "-f", "-", stdin=obj)
    assert code == 0, err
    code, out, _ = kubectl("get", "ing", "simple", "-o", "json")
    assert json.loads(out)["status"] == status["status"]


def test_describe_matches_kubectls_ingress_describer(kubectl, tmp_path):
    """The real kubectl's describe ingress and netsim's (netsim.cli.describe_ingress) over the same
    store show the same rules, backends and endpoints."""
    from netsim.api.store.sqlite import SQLiteStore
    from netsim.cli import describe_ingress

    objs = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
         "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
         "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}},
                       {"addresses": ["10.244.2.3"], "conditions": {"ready": True}},
                       {"addresses": ["10.244.2.9"], "conditions": {"ready": False}}]},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cold"}, "spec": {"ports": [{"port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
         "metadata": {"name": "cold-abc", "labels": {"kubernetes.io/service-name": "cold"}},
         "ports": [{"name": "", "port": 80, "protocol": "TCP"}],
         "endpoints": [{"addresses": ["10.244.3.3"], "conditions": {"ready": False}}]},
        ing({"rules": [{"host": "frontend.aa.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": backend()},
            {"path": "/cold", "pathType": "Prefix", "backend": backend("cold")},
            {"path": "/gone", "pathType": "Exact", "backend": backend("gone", "http")}]}}],
            "tls": [{"hosts": ["frontend.aa.com"], "secretName": "aa-tls"}]})]
    code, _, err = kubectl("apply", "-f", "-", stdin={"apiVersion": "v1", "kind": "List", "items": objs})
    assert code == 0, err
    code, out, err = kubectl("describe", "ing", "web")
    assert code == 0, err
    theirs = [line.split() for line in out.splitlines()]
    store = SQLiteStore(tmp_path / "store.db")
    try:
        _, blocks = describe_ingress.describe(store, store.get(k8s.key("Ingress", "default", "web")))
    finally:
        store.close()
    ours = [line.split() for line in blocks]
    assert ["/", "web:80", "(10.244.1.5:8080,10.244.2.3:8080)"] in theirs, out
    assert ["/cold", "cold:80", "()"] in theirs, out
    start = theirs.index(["TLS:"])
    assert ours[:-1] == theirs[start:start + len(ours) - 1]


def test_fields_of_the_wrong_type_are_named_not_crashed_on():
    assert ("spec.rules", 'Invalid value: "x": must be a list') in causes(ing({"rules": "x"}))
    assert causes(ing({"rules": ["x"]})) == [("spec.rules[0]", 'Invalid value: "x": must be an object')]
    assert causes(ing({"defaultBackend": {"service": {"name": "web", "port": 80}}})) == [
        ("spec.defaultBackend.service.port", "Invalid value: 80: must be an object"),
        ("spec.defaultBackend", "Required value: port name or number is required")]
    assert causes(ing({"defaultBackend": backend(), "ingressClassName": 5})) == [
        ("spec.ingressClassName", "Invalid value: 5: must be a string")]
    assert causes(klass(parameters="p")) == [("spec.parameters", 'Invalid value: "p": must be an object')]
