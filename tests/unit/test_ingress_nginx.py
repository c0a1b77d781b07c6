"""The nginx renderer (netsim.node.ingress.nginx): pieces of the text in ingress-nginx's shape,
and every rendered configuration accepted by the real `nginx -t` (no namespace needed); the
controller helpers that read a controller pod's image and flags."""

import subprocess

import pytest

from netsim.model import ingress_nginx
from netsim.node.ingress import nginx
from netsim.node.ingress.routes import (
    TLS,
    Backend,
    Canary,
    Endpoint,
    HeaderModifier,
    Location,
    ProxyConfig,
    Redirect,
    Server,
)

EPS = (Endpoint("10.244.1.5", 8080), Endpoint("10.244.2.5", 8080))
WEB = Backend("default-web-80", "default", "web", "80", EPS)
API = Backend("default-api-http", "default", "api", "http", (Endpoint("10.244.1.7", 9000),))
NONE = Backend("default-none-80", "default", "none", "80")


def config(*servers, **kw) -> ProxyConfig:
    return ProxyConfig(name="ingress-nginx/ingress-nginx-controller", servers=servers, **kw)


def rendered(cfg: ProxyConfig, tmp_path) -> str:
    nginx.write_files(cfg, str(tmp_path))
    return nginx.render(cfg, str(tmp_path))


def nginx_t(cfg: ProxyConfig, tmp_path) -> subprocess.CompletedProcess:
    text = rendered(cfg, tmp_path)
    (tmp_path / "nginx.conf").write_text(text)
    return subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
                          capture_output=True, text=True)


def block(text: str, head: str) -> str:
    """The lines of the block opened by the line ``head`` (stripped), up to its closing brace."""
    lines = [line.strip() for line in text.splitlines()]
    start = lines.index(head + " {")
    depth, out = 0, []
    for line in lines[start:]:
        depth += line.count("{") - line.count("}")
        out.append(line)
        if depth == 0:
            return "\n".join(out)
    raise AssertionError(head)


EVERYTHING = config(
    Server("foo.com", (
        Location("/", "Prefix", (WEB,), source="Ingress default/a rule 0 path 0"),
        Location("/api", "Prefix", (API,), canaries=(Canary(WEB, header="X-Canary", cookie="canary", weight=20),)),
        Location("/exact", "Exact", (NONE,)),
        Location("/slash/", "Exact", (WEB,)),
        Location("/aaa/bbb/", "Prefix", (WEB,)),
        Location("/aff", "Prefix", (WEB,), affinity_cookie="INGRESSCOOKIE"),
        Location("/w", "Prefix", (WEB, API)),
        Location("/fixed", "Prefix", status=500),
        Location("/redir", "Exact", redirect=Redirect(hostname="x.com", status=301)),
        Location("/hm", "Prefix", (WEB,), request_headers=HeaderModifier(set=(("X-A", "1"),), add=(("X-B", "2"),),
                                                                          remove=("X-C",))),
        Location("/tls-only", "Prefix", (WEB,), ssl_redirect=True),
    ), tls=TLS("default/foo-tls", *nginx.fake_certificate())),
    Server("*.bar.com", (Location("/something(/|$)(.*)", "Regex", (WEB,), rewrite_target="/$2"),
                         Location("/s", "Regex", (API,)))),
    Server("*.gw.com", (Location("/", "Prefix", (WEB,)),), wildcard="many", listeners=(80, 8080)),
    default_backend=WEB)


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return rendered(EVERYTHING, tmp_path_factory.mktemp("nginx"))


def test_everything_passes_nginx_t(tmp_path):
    result = nginx_t(EVERYTHING, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_empty_config_passes_nginx_t_and_answers_404(tmp_path):
    result = nginx_t(config(), tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "nginx.conf").read_text()
    assert "listen 80 default_server;" in text and "listen 443 ssl default_server;" in text
    assert "server_name _;" in text
    body = block(text, "location /")
    assert 'set $proxy_upstream_name "upstream-default-backend";' in body and "return 404;" in body


def test_process_and_paths_stay_in_the_prefix(text, tmp_path):
    assert "worker_processes 1;" in text and "user root;" in text
    assert "daemon" not in text  # given with -g, as the controller does
    p = str(tmp_path.parent)
    for line in text.splitlines():
        if line.strip().startswith(("pid ", "client_body_temp_path", "proxy_temp_path", "ssl_certificate")):
            assert line.split()[1].startswith(p), line


def test_prefix_paths_as_location_go_plus_the_trailing_slash_fix(text):
    assert 'location "/api/" {' in text and 'location = "/api" {' in text
    # ingress-nginx renders only /aaa/bbb/ (and = /aaa/bbb/); the API table says /aaa/bbb matches
    assert 'location "/aaa/bbb/" {' in text and 'location = "/aaa/bbb" {' in text
    assert 'location = "/exact" {' in text
    # "= /slash/" would answer /slash with nginx's 301: a whole-path regex instead
    assert 'location ~ "^/slash/$" {' in text and 'location = "/slash/"' not in text
    assert 'location "/" {' in text


def test_regex_locations_longest_first_and_rewrite(text):
    assert 'location ~* "^/something(/|$)(.*)" {' in text
    assert text.index('"^/something(/|$)(.*)"') < text.index('location ~* "^/s" {')
    body = block(text, 'location ~* "^/something(/|$)(.*)"')
    assert 'rewrite "(?i)/something(/|$)(.*)" "/$2" break;' in body  # unanchored, as ingress-nginx


def test_wildcards_one_label_for_ingress_many_for_gateway(text):
    assert 'server_name "~^(?<subdomain>[\\w-]+)\\.bar\\.com$";' in text
    assert "server_name *.gw.com;" in text
    assert "listen 8080;" in text


def test_upstreams_of_endpoints_and_503_without(text):
    assert block(text, "upstream default-web-80") == \
        "upstream default-web-80 {\nserver 10.244.1.5:8080 max_fails=0;\nserver 10.244.2.5:8080 max_fails=0;\n}"
    assert "upstream default-none-80" not in text
    body = block(text, 'location = "/exact"')
    assert 'set $proxy_upstream_name "default-none-80";' in body and "return 503;" in body


def test_headers_sent_upstream(text):
    body = block(text, 'location "/api/"')
    for header in ("proxy_set_header Host $host;", "proxy_set_header X-Request-ID $req_id;",
                   "proxy_set_header X-Real-IP $remote_addr;", "proxy_set_header X-Forwarded-For $remote_addr;",
                   "proxy_set_header X-Forwarded-Host $host;", "proxy_set_header X-Forwarded-Port $server_port;",
                   "proxy_set_header X-Forwarded-Proto $scheme;", "proxy_set_header X-Scheme $scheme;"):
        assert header in body


def test_canary_precedence_header_cookie_weight(text):
    assert '20.00% "default-web-80";' in text
    header = block(text, "map $http_x_canary $canary_header_3")
    assert 'always "default-web-80";' in header and 'never "default-api-http";' in header
    assert "default $canary_cookie_2;" in header
    assert "default $canary_weight_1;" in block(text, "map $cookie_canary $canary_cookie_2")
    assert "proxy_pass http://$canary_header_3;" in block(text, 'location "/api/"')
    assert text.count("split_clients") == 2  # one for the canary, one for /w: maps are not made per block


def test_tls_server_with_the_secrets_pem_and_fallback(text, tmp_path_factory):
    foo = block(text, "server")  # the catch-all comes first, with the fallback certificate
    assert nginx.FAKE_CERT in foo
    assert "ssl/default-foo-tls.pem" in text
    body = block(text, 'location "/tls-only/"')
    assert "return 308 https://$host$ssl_redirect_uri;" in body  # without a trailing slash
    assert '"~^(?<netsim_stem>.*)/$" $netsim_stem;' in block(text, "map $request_uri $ssl_redirect_uri")


def test_pem_files_are_private(tmp_path):
    nginx.write_files(EVERYTHING, str(tmp_path))
    pem = tmp_path / "ssl" / "default-foo-tls.pem"
    assert pem.stat().st_mode & 0o777 == 0o600
    assert "BEGIN CERTIFICATE" in pem.read_text() and "PRIVATE KEY" in pem.read_text()
    nginx.write_files(config(), str(tmp_path))
    assert not pem.exists()  # a Secret no longer used goes


def test_affinity_cookie_hash_and_set_cookie(text):
    assert "hash $affinity_ingresscookie consistent;" in block(text, "upstream default-web-80-affinity-ingresscookie")
    assert "add_header Set-Cookie $affinity_set_ingresscookie;" in block(text, 'location "/aff/"')


def test_header_modifier_redirect_and_fixed_status(text):
    body = block(text, 'location "/hm/"')
    assert 'proxy_set_header X-A "1";' in body and 'proxy_set_header X-C "";' in body
    assert "proxy_set_header X-B $add_header_" in body
    assert 'return 301 "$scheme://x.com$redirect_port$request_uri";' in block(text, 'location = "/redir"')
    assert "return 500;" in block(text, 'location "/fixed/"')


def test_access_log_is_a_cri_line(text):
    assert '$time_iso8601 stdout F $remote_addr \\"$request_method $request_uri\\" $status ' \
           '[$proxy_upstream_name] $upstream_addr' in text


def test_equal_configs_render_equal_text(tmp_path):
    assert nginx.render(EVERYTHING, str(tmp_path)) == nginx.render(EVERYTHING, str(tmp_path))


@pytest.mark.parametrize("image,yes", [
    ("registry.k8s.io/ingress-nginx/controller:v1.12.1@sha256:" + "a" * 64, True),
    ("ingress-nginx/controller", True), ("localhost:5000/ingress-nginx/controller:dev", True),
    ("nginx", False), ("registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.5.2", False)])
def test_controller_pod_by_image(image, yes):
    assert ingress_nginx.is_controller_pod({"spec": {"containers": [{"name": "c", "image": image}]}}) is yes


def test_controller_args_from_the_pod_spec():
    pod = {"metadata": {"name": "c-1", "namespace": "ingress-nginx"},
           "spec": {"containers": [{
               "name": "controller", "image": "registry.k8s.io/ingress-nginx/controller:v1.12.1",
               "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
               "args": ["/nginx-ingress-controller", "--publish-service=$(POD_NAMESPACE)/ingress-nginx-controller",
                        "--controller-class", "example.com/other", "--ingress-class=other",
                        "--watch-ingress-without-class=true"]}]}}
    args = ingress_nginx.controller_args(pod)
    assert args == ingress_nginx.ControllerArgs(ingress_class="other", controller_class="example.com/other",
                                                publish_service="ingress-nginx/ingress-nginx-controller",
                                                watch_without_class=True)
    assert ingress_nginx.controller_args({"metadata": {}, "spec": {"containers": []}}) == ingress_nginx.ControllerArgs()


def test_scenario_addons_and_the_ingress_nginx_objects(tmp_path):
    from netsim.model.scenario import ScenarioError, load_scenario
    from netsim.node.ingress import addon

    base = "apiVersion: netsim/v1alpha1\nkind: Scenario\nnodes: [{name: cp, role: control-plane}]\n"
    (tmp_path / "ok.yaml").write_text(base + "addons: [ingress-nginx]\n")
    assert load_scenario(tmp_path / "ok.yaml").addons == ["ingress-nginx"]
    (tmp_path / "bad.yaml").write_text(base + "addons: [traefik]\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(tmp_path / "bad.yaml")
    assert any("addons" in where and "ingress-nginx" in what for where, what in err.value.problems)
    objs = {(o["kind"], o["metadata"]["name"]): o for o in addon.objects(["ingress-nginx"])}
    assert addon.objects([]) == [] and addon.objects(["gateway"]) == []
    svc = objs[("Service", "ingress-nginx-controller")]["spec"]
    assert svc["type"] == "LoadBalancer" and svc["externalTrafficPolicy"] == "Local"
    assert [(p["name"], p["port"]) for p in svc["ports"]] == [("http", 80), ("https", 443)]
    cls = objs[("IngressClass", "nginx")]
    assert cls["spec"]["controller"] == "k8s.io/ingress-nginx"
    assert cls["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] == "true"
    pod = {"metadata": {"name": "p", "namespace": "ingress-nginx"},
           "spec": objs[("Deployment", "ingress-nginx-controller")]["spec"]["template"]["spec"]}
    assert ingress_nginx.is_controller_pod(pod)
    assert ingress_nginx.controller_args(pod).publish_service == "ingress-nginx/ingress-nginx-controller"


def test_header_and_method_matches_pick_a_rule_then_fall_through_to_shorter_prefixes(tmp_path):
    from netsim.node.ingress.routes import HeaderMatch

    cfg = config(Server("gw.example.com", (
        Location("/", "Prefix", (WEB,)),
        Location("/v2", "Prefix", (API,), headers=(HeaderMatch("Version", "two"),)),
        Location("/v2", "Prefix", (NONE,), headers=(HeaderMatch("Color", "bl.*", "RegularExpression"),),
                 method="POST"),
        Location("/exact", "Exact", status=500, headers=(HeaderMatch("Version", "one"),)),
        Location("/exact", "Prefix", (API,)),
    ), wildcard="many", listeners=(80,)))
    result = nginx_t(cfg, tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "nginx.conf").read_text()
    # one map over the headers and method: first rule that matches, else the shorter Prefix "/"
    route = block(text, 'map "$http_version|$http_color|$request_method" $route_2')
    assert '"~^two\\|.*\\|.*$" 0;' in route and '"~^.*\\|(?:bl.*)\\|POST$" 1;' in route
    assert "default 2;" in route
    v2 = block(text, 'location "/v2/"')
    assert "error_page 460 = @route_2_0;" in v2 and 'if ($route_2 = "2") {' in v2
    assert block(text, 'location = "/v2"') == v2.replace('"/v2/"', '= "/v2"')  # one map for both
    assert text.count("location @route_2_0 {") == 1
    assert "proxy_pass http://default-web-80;" in block(text, "location @route_2_2")
    # Exact first on the shared "= /exact", then the Prefix of the same path
    exact = block(text, 'map "$http_version" $route_1')
    assert '"~^one$" 0;' in exact and "default 1;" in exact
    assert "return 500;" in block(text, "location @route_1_0")


def test_a_weighted_share_whose_backend_does_not_resolve_answers_500(tmp_path):
    gone = Backend("default-gone-80", "default", "gone", "80", missing="no Service default/gone")
    cfg = config(Server("gw.example.com", (Location("/", "Prefix", (WEB, gone)),), wildcard="many"))
    result = nginx_t(cfg, tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "nginx.conf").read_text()
    split = block(text, 'split_clients "${request_id}" $split_1')
    assert '50.00% "default-web-80";' in split and '* "=500";' in split
    assert 'if ($split_1 = "=500") {' in block(text, 'location "/"')
