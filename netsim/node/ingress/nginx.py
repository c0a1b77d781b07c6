"""A ProxyConfig rendered as nginx.conf text in ingress-nginx's shape (its nginx.tmpl and
internal/ingress/controller/location.go), for Debian's nginx 1.22 without Lua.

What it knows: routes.py's contract and nginx's configuration language.  What it writes: only
the PEM files a config's TLS servers need (``write_files``); ``render`` itself is pure text.

How ingress-nginx's Lua parts are done in plain nginx here:
- the balancer: an ``upstream`` of the ready endpoint addresses (round robin); a backend with
  none answers 503 in its location, as balancer.lua does;
- canary: chained ``map``s (header, then cookie, then a ``split_clients`` on ``$request_id`` for
  the weight), with the precedence of balancer.lua's route_to_alternative_balancer;
- affinity: ``hash $affinity consistent`` where the cookie's value, or a new ``$request_id``
  that is then sent back in Set-Cookie, is the key.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path

from netsim.node.ingress.match import pcre_escape
from netsim.node.ingress.routes import Backend, Canary, Location, ProxyConfig, Server

DEFAULT_UPSTREAM = "upstream-default-backend"  # ingress-nginx's name for the built-in 404
STATUS_PORT = 10246  # ingress-nginx's internal status server (nginx_status), loopback only
UNRESOLVED = "=500"  # a weighted share whose backend does not resolve (no upstream has this name)
FAKE_CERT = "default-fake-certificate.pem"  # ingress-nginx's name for its self-signed fallback

LOG_FORMAT = ('$time_iso8601 stdout F $remote_addr "$request_method $request_uri" $status '
              '[$proxy_upstream_name] $upstream_addr')
# The request headers ingress-nginx sets upstream (nginx.tmpl); the incoming X-Forwarded-For is
# not trusted (use-forwarded-headers false), so it is replaced by the client address.
PROXY_HEADERS = (
    ("Host", "$host"), ("X-Request-ID", "$req_id"), ("X-Real-IP", "$remote_addr"),
    ("X-Forwarded-For", "$remote_addr"), ("X-Forwarded-Host", "$host"), ("X-Forwarded-Port", "$server_port"),
    ("X-Forwarded-Proto", "$scheme"), ("X-Forwarded-Scheme", "$scheme"), ("X-Scheme", "$scheme"),
    ("Connection", '""'),
)


def quote(text: str) -> str:
    """An nginx string literal (a location path or regex may hold spaces, ';' or '{')."""
    return '"' + text.replace('"', '\\"') + '"'


def _var(name: str) -> str:
    """The nginx variable suffix of a header or cookie name ($http_x_canary)."""
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


def cert_file(secret: str) -> str:
    """The PEM (certificate then key) of a TLS Secret "namespace/name", as ingress-nginx names
    them under /etc/ingress-controller/ssl; the self-signed fallback for ""."""
    return FAKE_CERT if not secret else "ssl/" + secret.replace("/", "-") + ".pem"


@functools.cache
def fake_certificate() -> tuple[str, str]:
    """ingress-nginx's "Kubernetes Ingress Controller Fake Certificate" (self-signed, made once
    per process): the certificate for TLS hosts without a usable Secret and for unknown SNI."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Kubernetes Ingress Controller Fake Certificate")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("ingress.local")]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()).decode())


def files(config: ProxyConfig) -> dict[str, str]:
    """The files ``render``'s text refers to, relative to the prefix dir: the PEMs."""
    out = {FAKE_CERT: "".join(fake_certificate())}
    for s in config.servers:
        if s.tls is not None and s.tls.secret and s.tls.cert_pem and s.tls.key_pem:
            out[cert_file(s.tls.secret)] = s.tls.cert_pem.rstrip("\n") + "\n" + s.tls.key_pem.rstrip("\n") + "\n"
    return out


def write_files(config: ProxyConfig, prefix_dir: str) -> None:
    """Write ``files(config)`` under prefix_dir (keys: mode 0600, atomically), and the temp dirs
    nginx writes to; PEMs of Secrets no longer used are removed."""
    root = Path(prefix_dir)
    (root / "ssl").mkdir(mode=0o700, parents=True, exist_ok=True)
    (root / "tmp").mkdir(mode=0o700, exist_ok=True)
    want = files(config)
    for rel, text in want.items():
        write_atomic(root / rel, text)
    for old in (root / "ssl").glob("*.pem"):
        if f"ssl/{old.name}" not in want:
            old.unlink(missing_ok=True)


def write_atomic(path: Path, text: str) -> bool:
    """Replace ``path`` with ``text`` (mode 0600) unless it already holds it; True if written."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return True


# -- locations -------------------------------------------------------------------------------
def location_blocks(loc: Location) -> list[tuple[str, str]]:
    """(modifier, path) of the nginx locations one Location becomes.  Prefix follows
    location.go (``/foo`` → ``location /foo/`` and ``location = /foo``) and also renders
    ``= /foo`` for ``/foo/``, which ingress-nginx misses (the API's table says /foo matches)."""
    if loc.match == "Exact" and loc.path.endswith("/") and loc.path != "/":
        # "= /foo/" with proxy_pass answers /foo with nginx's 301 (auto_redirect); a
        # case-sensitive regex of the whole path matches what "=" would, and nothing else.
        return [("~", "^" + pcre_escape(loc.path) + "$")]
    if loc.match == "Exact":
        return [("=", loc.path)]
    if loc.match == "Regex":
        return [("~*", "^" + loc.path)]
    if loc.match == "Nginx":
        return [("", loc.path)]
    if loc.path == "/":
        return [("", "/")]
    stem = loc.path.rstrip("/") or "/"
    return [("", stem + "/"), ("=", stem)]


def sorted_locations(server: Server) -> list[tuple[str, str, list[Location]]]:
    """The server's nginx locations, longest path first as ingress-nginx orders them (regex
    locations match in this order, first match wins), each with the Locations it serves: more
    than one when they share an nginx location (an Exact and a Prefix of one path, HTTPRoute
    rules told apart by headers or method), Exact first, then the producer's order."""
    groups: dict[tuple[str, str], list[Location]] = {}
    for loc in server.locations:
        for modifier, path in location_blocks(loc):
            groups.setdefault((modifier, path), []).append(loc)
    out = [(m, p, sorted(locs, key=lambda loc: loc.match != "Exact")) for (m, p), locs in groups.items()]
    out.sort(key=lambda m: -len(m[2][0].path))  # stable: the producer's order among equals
    return out


def conditional(loc: Location) -> bool:
    """A Location that also matches on headers or the method (HTTPRoute matches)."""
    return bool(loc.headers) or loc.method is not None


def covers(prefix: str, path: str) -> bool:
    """Whether a Prefix location's path matches every request path ``path`` stands for."""
    stem = prefix.rstrip("/")
    return not stem or path == stem or path.startswith(stem + "/")


FIRST_ROUTE_STATUS = 460  # error_page codes that hand a request to a rule's named location
MAX_ROUTES = 40
ROUTE_SEPARATOR = r"\|"  # between the header values (and method) the route map matches on


class _Renderer:
    def __init__(self, config: ProxyConfig, prefix_dir: str, access_log: str | None):
        self.config = config
        self.prefix = prefix_dir.rstrip("/")
        self.access_log = access_log or f"{self.prefix}/access.log"
        self.upstreams: dict[str, list[str]] = {}
        self.maps: list[str] = []
        self.nmaps = 0
        self.bodies: dict[tuple[Location, bool], list[str]] = {}
        self.routes: dict[tuple, list[str]] = {}

    # upstream blocks -------------------------------------------------------------------
    def upstream(self, b: Backend, affinity: str | None = None) -> str | None:
        """The upstream name for a backend (declared once); None when it has no address."""
        if b.missing is not None:
            return None
        servers = [b.cluster_ip] if b.cluster_ip else [f"{e.ip}:{e.port}" for e in b.endpoints]
        if not servers:
            return None
        name = b.upstream if affinity is None else f"{b.upstream}-affinity-{_var(affinity)}"
        if name not in self.upstreams:
            body = [f"    server {s} max_fails=0;" for s in servers]
            if affinity is not None:
                body.insert(0, f"    hash $affinity_{_var(affinity)} consistent;")
            self.upstreams[name] = body
        return name

    def new_var(self, kind: str) -> str:
        self.nmaps += 1
        return f"${kind}_{self.nmaps}"

    def weighted(self, backends: tuple[Backend, ...], affinity: str | None) -> str:
        """A value (upstream name, or "" for none) choosing among weighted backends."""
        live = [(b, self.upstream(b, affinity) or "") for b in backends if b.weight > 0]
        if not live:
            return ""
        if len(live) == 1:
            return live[0][1]
        # Among weighted backends (HTTPRoute), the share of one that does not resolve gets 500.
        live = [(b, name or (UNRESOLVED if b.missing else "")) for b, name in live]
        total = sum(b.weight for b, _ in live)
        var = self.new_var("split")
        lines = [f'split_clients "${{request_id}}" {var} {{']
        for b, name in live[:-1]:
            lines.append(f"    {100 * b.weight / total:.2f}% {quote(name)};")
        lines.append(f"    * {quote(live[-1][1])};")
        self.maps.append("\n".join(lines) + "\n}")
        return var

    def canary(self, c: Canary, main: str, affinity: str | None) -> str:
        """A variable: the canary's upstream when balancer.lua would route there, else ``main``."""
        target = quote(self.upstream(c.backend, affinity) or "")
        main_q = quote(main)
        decision = main_q
        if c.weight > 0:
            var = self.new_var("canary_weight")
            share = min(100.0, 100 * c.weight / (c.weight_total or 100))
            self.maps.append(f'split_clients "${{request_id}}" {var} {{\n    {share:.2f}% {target};\n'
                             f'    * {main_q};\n}}' if share < 100 else
                             f'map $request_id {var} {{\n    default {target};\n}}')
            decision = var
        if c.cookie:
            var = self.new_var("canary_cookie")
            self.maps.append(f"map $cookie_{_var(c.cookie)} {var} {{\n    always {target};\n    never {main_q};\n"
                             f"    default {decision};\n}}")
            decision = var
        if c.header:
            var = self.new_var("canary_header")
            if c.header_value:
                rows = f"    {quote(c.header_value)} {target};\n"
            elif c.header_pattern:
                rows = f"    {quote('~' + c.header_pattern)} {target};\n"
            else:
                rows = f"    always {target};\n    never {main_q};\n"
            self.maps.append(f"map $http_{_var(c.header)} {var} {{\n{rows}    default {decision};\n}}")
            decision = var
        if decision == main_q:
            return main
        return decision

    # locations -------------------------------------------------------------------------
    def location(self, modifier: str, path: str, loc: Location, server: Server) -> list[str]:
        head = f"location {modifier} {quote(path)}" if modifier else f"location {quote(path)}"
        # A Prefix is two nginx locations of one body: its maps are made once.
        key = (loc, server.tls is not None)
        if key not in self.bodies:
            self.bodies[key] = self.location_body(loc, server)
        return [head + " {", *_indent(self.bodies[key]), "}"]

    def location_body(self, loc: Location, server: Server) -> list[str]:
        body = [f"# {loc.source}"] if loc.source else []
        https = self.config.https_port
        if loc.ssl_redirect:
            # lua_ingress.lua's redirect: the request URI without its trailing slash
            port = "" if https == 443 else f":{https}"
            body.append(f"if ($scheme = http) {{\n    return 308 https://$host{port}$ssl_redirect_uri;\n}}")
        if loc.redirect is not None:
            body.append(f"set $proxy_upstream_name {quote('-')};")
            body.append(f"return {loc.redirect.status} {self.redirect_url(loc)};")
            return body
        if loc.status is not None:
            body += [f"set $proxy_upstream_name {quote('-')};", f"return {loc.status};"]
            return body
        main = self.weighted(loc.backends, loc.affinity_cookie)
        target = main
        for c in loc.canaries:
            target = self.canary(c, target, loc.affinity_cookie)
        label = loc.backends[0].upstream if len(loc.backends) == 1 and not loc.canaries else target
        body.append(f"set $proxy_upstream_name {quote(label or _first_upstream(loc))};")
        if loc.rewrite_target is not None:
            pattern = "(?i)" + loc.path  # as ingress-nginx: unanchored, the location's own path
            body.append(f"rewrite {quote(pattern)} {quote(loc.rewrite_target)} break;")
        if not target:
            body.append("return 503;")
            return body
        if target.startswith("$"):
            body.append(f'if ({target} = "") {{\n    return 503;\n}}')
            if len(loc.backends) > 1:
                body.append(f'if ({target} = "{UNRESOLVED}") {{\n    return 500;\n}}')
        if loc.affinity_cookie:
            body.append(f"add_header Set-Cookie $affinity_set_{_var(loc.affinity_cookie)};")
        body += self.proxy_headers(loc)
        protocol = (loc.backends[0].protocol if loc.backends else "HTTP").lower()
        body.append(f"proxy_pass {protocol}://{target};")
        return body

    def proxy_headers(self, loc: Location) -> list[str]:
        # proxy_set_header inherits nothing once a level sets one: each location sets them all.
        headers = dict(PROXY_HEADERS)
        names = {h.lower(): h for h in headers}
        mod = loc.request_headers
        if mod is not None:
            for name, value in mod.set:
                headers[names.get(name.lower(), name)] = quote(value)
                names.setdefault(name.lower(), name)
            for name, value in mod.add:
                var = self.new_var("add_header")
                self.maps.append(f"map $http_{_var(name)} {var} {{\n    \"\" {quote(value)};\n"
                                 f"    default {quote(f'$http_{_var(name)},{value}')};\n}}")
                headers[names.get(name.lower(), name)] = var
                names.setdefault(name.lower(), name)
            for name in mod.remove:
                headers[names.get(name.lower(), name)] = '""'
                names.setdefault(name.lower(), name)
        return [f"proxy_set_header {name} {value};" for name, value in headers.items()]

    def redirect_url(self, loc: Location) -> str:
        r = loc.redirect
        scheme = r.scheme or "$scheme"
        host = r.hostname or "$host"
        if r.port is not None:
            port = "" if (r.scheme or "http", r.port) in (("http", 80), ("https", 443)) else f":{r.port}"
        elif r.scheme:
            port = ""  # the scheme's well-known port
        else:
            port = "$redirect_port"
        path = (r.path + "$is_args$args") if r.path else "$request_uri"
        return quote(f"{scheme}://{host}{port}{path}")

    # servers ---------------------------------------------------------------------------
    def server(self, server: Server, default: bool) -> list[str]:
        c = self.config
        flag = " default_server" if default else ""
        lines = []
        for port in (server.listeners if not default else sorted(self.ports())):
            if port == c.https_port:
                lines.append(f"listen {port} ssl{flag};")
            else:
                lines.append(f"listen {port}{flag};")
        lines.append(f"server_name {server_name(server)};")
        if any(p == c.https_port for p in (server.listeners if not default else self.ports())):
            pem = cert_file(server.tls.secret if server.tls is not None and server.tls.cert_pem else "")
            lines += [f"ssl_certificate {self.prefix}/{pem};", f"ssl_certificate_key {self.prefix}/{pem};"]
        blocks = sorted_locations(server)
        named: list[str] = []
        for modifier, path, group in blocks:
            lines += self.location_group(modifier, path, group, server, named)
        if not any(modifier in ("", "~*") and path in ("/", "^/") for modifier, path, _ in blocks):
            lines += self.fallback()
        return ["server {", *_indent(lines + named), "}"]

    def location_group(self, modifier: str, path: str, group: list[Location], server: Server,
                       named: list[str]) -> list[str]:
        """One nginx location for the Locations that share it.  When the first matches on
        headers or the method, a ``map`` over those picks the first Location that matches (then
        the shorter Prefix Locations that also cover the path, as HTTPRoute precedence falls
        through to them), whose body runs in a named location reached by error_page."""
        if not conditional(group[0]):
            return self.location(modifier, path, group[0], server)
        candidates = list(group)
        if modifier not in ("~", "~*"):
            request = path if modifier == "=" else (path.rstrip("/") or "/")
            candidates += [loc for loc in sorted(server.locations, key=lambda loc: -len(loc.path))
                           if loc.match == "Prefix" and loc not in candidates and covers(loc.path, request)]
        cut = next((i for i, loc in enumerate(candidates) if not conditional(loc)), len(candidates) - 1)
        candidates = candidates[:min(cut + 1, MAX_ROUTES)]
        head = f"location {modifier} {quote(path)}" if modifier else f"location {quote(path)}"
        key = (id(server), server.tls is not None, tuple(candidates))
        if key in self.routes:  # a Prefix's "/p/" and "= /p": one map, one set of named locations
            return [head + " {", *_indent(self.routes[key]), "}"]
        headers = list(dict.fromkeys(h.name.lower() for loc in candidates for h in loc.headers))
        method = any(loc.method for loc in candidates)
        source = "|".join([f"$http_{_var(h)}" for h in headers] + (["$request_method"] if method else []))
        var = self.new_var("route")
        rows, default = [], '""'
        for i, loc in enumerate(candidates):
            if not conditional(loc):
                default = str(i)
                break
            parts = []
            for h in headers:
                m = next((x for x in loc.headers if x.name.lower() == h), None)
                parts.append(".*" if m is None else re.escape(m.value) if m.type == "Exact" else f"(?:{m.value})")
            if method:
                parts.append(re.escape(loc.method) if loc.method else ".*")
            rows.append(f"    {quote('~^' + ROUTE_SEPARATOR.join(parts) + '$')} {i};")
        self.maps.append(f"map {quote(source)} {var} {{\n" + "\n".join(rows) + f"\n    default {default};\n}}")
        body = [f"set $proxy_upstream_name {quote('-')};"]
        for i, loc in enumerate(candidates):
            where = f"@{var[1:]}_{i}"
            body += [f"error_page {FIRST_ROUTE_STATUS + i} = {where};",
                     f'if ({var} = "{i}") {{\n    return {FIRST_ROUTE_STATUS + i};\n}}']
            body_key = (loc, server.tls is not None)
            if body_key not in self.bodies:
                self.bodies[body_key] = self.location_body(loc, server)
            named += [f"location {where} {{", *_indent(self.bodies[body_key]), "}"]
        body.append(f"return {self.config.no_match_status};")
        self.routes[key] = body
        return [head + " {", *_indent(body), "}"]

    def fallback(self) -> list[str]:
        """``location /`` of a server whose paths do not cover everything: the default backend,
        else the controller's own 404."""
        b = self.config.default_backend
        if b is not None:
            loc = Location(path="/", match="Prefix", backends=(b,), source="default backend")
            return self.location("", "/", loc, Server(hostname="_"))
        return ["location / {", f"    set $proxy_upstream_name {quote(DEFAULT_UPSTREAM)};",
                f"    return {self.config.no_match_status};", "}"]

    def ports(self) -> set[int]:
        ports = {self.config.http_port, self.config.https_port}
        for s in self.config.servers:
            ports.update(s.listeners)
        return ports

    def render(self) -> str:
        c = self.config
        catch_all = next((s for s in c.servers if s.hostname == "_"), None)
        servers = [s for s in c.servers if s.hostname != "_"]
        blocks = self.server(catch_all or Server(hostname="_"), default=True)
        for s in servers:
            blocks += self.server(s, default=False)
        for name in sorted(self.upstreams):
            blocks[:0] = [f"upstream {name} {{", *self.upstreams[name], "}"]
        blocks[:0] = self.maps
        p = self.prefix
        http = [
            f"log_format netsim {quote(LOG_FORMAT)};",
            f"access_log {self.access_log} netsim;",
            "server_tokens off;", "sendfile on;", "keepalive_timeout 75s;",
            "proxy_http_version 1.1;", "proxy_connect_timeout 5s;", "proxy_read_timeout 60s;",
            "proxy_send_timeout 60s;", "proxy_next_upstream error timeout;", "proxy_next_upstream_tries 3;",
            "proxy_ssl_server_name on;", "server_names_hash_bucket_size 128;",
            "map_hash_bucket_size 128;", "variables_hash_bucket_size 256;",
            f"client_body_temp_path {p}/tmp/client-body;", f"proxy_temp_path {p}/tmp/proxy;",
            f"fastcgi_temp_path {p}/tmp/fastcgi;", f"uwsgi_temp_path {p}/tmp/uwsgi;",
            f"scgi_temp_path {p}/tmp/scgi;",
            # ingress-nginx keeps a client's X-Request-ID and makes one up otherwise.
            'map $http_x_request_id $req_id {\n    default $http_x_request_id;\n    "" $request_id;\n}',
            'map $request_uri $ssl_redirect_uri {\n    "~^(?<netsim_stem>.*)/$" $netsim_stem;\n'
            '    default $request_uri;\n}',
            'map "$scheme:$server_port" $redirect_port {\n    "http:80" "";\n    "https:443" "";\n'
            '    default ":$server_port";\n}',
            *self.affinity_maps(),
            *blocks,
            # The controller's own status server (ingress-nginx's nginx_status on 10246):
            # readiness, and which configuration the running workers have loaded.
            "server {", f"    listen 127.0.0.1:{STATUS_PORT};", "    access_log off;",
            "    location = /healthz {", "        return 200 \"ok\\n\";", "    }",
            "    location = /configuration {", f"        return 200 \"{config_id(c)}\\n\";", "    }", "}",
        ]
        head = [
            f"# netsim: {c.name}, rendered from a ProxyConfig in ingress-nginx's shape",
            "user root;",  # the state dir is 0700: workers must reach the temp paths in it
            "worker_processes 1;", f"pid {p}/nginx.pid;", "pcre_jit on;",
            "events {", "    worker_connections 1024;", "}",
        ]
        return "\n".join(head + ["http {", *_indent(http), "}"]) + "\n"

    def affinity_maps(self) -> list[str]:
        names = sorted({loc.affinity_cookie for s in self.config.servers for loc in s.locations
                        if loc.affinity_cookie})
        out = []
        for n in names:
            v = _var(n)
            out.append(f'map $cookie_{v} $affinity_{v} {{\n    "" $request_id;\n    default $cookie_{v};\n}}')
            out.append(f'map $cookie_{v} $affinity_set_{v} {{\n    "" "{n}=$request_id; Path=/; HttpOnly";\n'
                       f'    default "";\n}}')
        return out


def _first_upstream(loc: Location) -> str:
    return loc.backends[0].upstream if loc.backends else "-"


def _indent(lines: list[str]) -> list[str]:
    return ["    " + line for block in lines for line in block.split("\n")]


def server_name(server: Server) -> str:
    """nginx's server_name: an Ingress wildcard ("one" label) as a regex, since nginx's own
    ``*.foo.com`` also matches ``a.b.foo.com``; a Gateway wildcard ("many") as nginx's."""
    h = server.hostname.lower()
    if h.startswith("*.") and server.wildcard == "one":
        return quote("~^(?<subdomain>[\\w-]+)" + pcre_escape(h[1:]) + "$")  # ingress-nginx's
    return h


def config_id(config: ProxyConfig) -> str:
    """A short digest naming a configuration: /configuration answers it once loaded."""
    return hashlib.sha256(repr(config).encode()).hexdigest()[:16]


def render(config: ProxyConfig, prefix_dir: str, access_log: str | None = None) -> str:
    """nginx.conf for ``config``; paths (pid, temp dirs, certificates) under ``prefix_dir``,
    the access log (one CRI-format line per request) at ``access_log``."""
    return _Renderer(config, prefix_dir, access_log).render()
