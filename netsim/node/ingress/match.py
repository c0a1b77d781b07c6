"""Which server and location of a ProxyConfig take a request, and what nginx answers: the pure
model behind ``netsim ingress explain``.  Imports routes.py only; no I/O.

The rendering contract (nginx.py renders exactly this, so that explain and the proxy agree):

- Servers: ``server_name`` is the hostname; a ``*.foo.com`` server with ``wildcard="one"`` renders
  as ingress-nginx's regex name ``~^(?<subdomain>[\\w-]+)\\.foo\\.com$`` (one label), with
  ``wildcard="many"`` as nginx's own ``*.foo.com`` (one or more labels); ``_`` is the default_server.
  nginx picks: the exact name, then the longest ``*.`` name, then the first matching regex name (in
  the config's server order), then the default server.  Host is compared lower-case, port and a
  trailing dot stripped.  HTTPS routes by Host like HTTP (the certificate is chosen by SNI).
- Locations: :func:`blocks` is the list of nginx ``location`` blocks of a server, the server's
  Locations taken longest path first (stable), each becoming:
  Exact ``P`` → ``location = P``, or ``location ~ "^P$"`` (P escaped) when P ends in ``/``
  (``= /foo/`` would make nginx answer ``/foo`` with a 301);
  Prefix ``P`` → ``location B/`` and ``location = B``, ``B`` being ``P`` without trailing slashes
  (just ``location /`` for ``/``), so ``/aaa/bbb/`` also matches ``/aaa/bbb``;
  Nginx ``P`` → ``location P``;  Regex ``P`` → ``location ~* "^P"``.
  A block made twice is made once (nginx refuses duplicates), and serves its Locations Exact
  first, then in order: the first one alone, unless it matches on headers or the method
  (HTTPRoute); then the first of :func:`candidates` that matches (none: ``no_match_status``).
  nginx selects: an exact ``=`` block; else the longest prefix block (``^~`` stops there); else
  the first regex block in order that matches; else that longest prefix.  A proxied prefix or
  exact block ``/x/`` answers ``/x`` with a 301 to ``/x/`` unless an exact block takes it
  (nginx's auto_redirect: only Nginx-type locations meet it, as rendered above).
- In a location: plain HTTP with ``ssl_redirect`` → 308 to ``https://host`` + the request URI
  without a trailing slash (lua_ingress.lua); ``redirect`` → its status; ``status`` → that status;
  ``rewrite_target`` → ``rewrite "(?i)PATH" TARGET break;`` (unanchored, ``$1..`` from PATH's groups,
  the query kept unless TARGET has one); no backend → 503 (balancer.lua: no active endpoints);
  the first canary by header (value, pattern, else always/never), then cookie (always/never),
  then weight/weight_total; ``affinity_cookie`` keeps a request that carries the cookie on the
  primary.  The request's path is matched after nginx's normalisation (%-decoding, ``//`` merged,
  dot segments resolved); proxied without a rewrite, it goes upstream as sent.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from urllib.parse import unquote

from netsim.node.ingress.routes import TLS, Backend, Endpoint, Location, ProxyConfig, Server

CATCH_ALL = "_"


@dataclass(frozen=True)
class Block:
    """One nginx ``location`` block: modifier ``=``, ``""`` (prefix), ``^~`` or ``~*`` (then path is
    the regex, ``^`` included) and the Locations it serves (variants, first match wins)."""
    modifier: str
    path: str
    locations: tuple[Location, ...]

    @property
    def text(self) -> str:
        if self.modifier in ("~", "~*"):
            return f'location {self.modifier} "' + self.path.replace('"', '\\"') + '"'  # as nginx.py quotes
        return f"location {self.modifier + ' ' if self.modifier else ''}{self.path}"


def blocks(server: Server) -> tuple[Block, ...]:
    """The nginx location blocks of a server, in config order (the rendering contract above)."""
    order: list[tuple[str, str]] = []
    members: dict[tuple[str, str], list[Location]] = {}

    def add(mod: str, path: str, loc: Location) -> None:
        if (mod, path) not in members:
            order.append((mod, path))
            members[(mod, path)] = []
        members[(mod, path)].append(loc)

    # Longest Location path first, stable: the producers' order already is (nginx.py sorts the same way).
    for loc in sorted(server.locations, key=lambda loc: -len(loc.path)):
        if loc.match == "Exact" and loc.path.endswith("/") and loc.path != "/":
            # "= /foo/" would answer /foo with nginx's 301 (auto_redirect); a case-sensitive regex
            # of the whole path does not, and matches what "=" would (no other regex can: the
            # server's other locations are Exact and Prefix ones, or all Regex).
            add("~", "^" + pcre_escape(loc.path) + "$", loc)
        elif loc.match == "Exact":
            add("=", loc.path, loc)
        elif loc.match == "Prefix":
            base = loc.path.rstrip("/")
            if not base:
                add("", "/", loc)
                continue
            add("", base + "/", loc)
            add("=", base, loc)
        elif loc.match == "Nginx":
            add("", loc.path, loc)
        else:
            add("~*", "^" + loc.path, loc)
    # Exact first among the Locations of one block ("= /foo" of an Exact /foo and of a Prefix /foo/).
    return tuple(Block(m, p, tuple(sorted(members[(m, p)], key=lambda loc: loc.match != "Exact")))
                 for m, p in order)


def conditional(loc: Location) -> bool:
    """A Location that also matches on headers or the method (HTTPRoute matches)."""
    return bool(loc.headers) or loc.method is not None


def _covers(prefix: str, path: str) -> bool:
    stem = prefix.rstrip("/")
    return not stem or path == stem or path.startswith(stem + "/")


def candidates(server: Server, block: Block) -> list[Location]:
    """The Locations a block may hand a request to, in order: just its first, unless that one
    matches on headers or the method; then the block's others and the shorter Prefix Locations
    covering its path (HTTPRoute precedence falls through to them), up to the first that matches
    on the path alone."""
    if not conditional(block.locations[0]):
        return [block.locations[0]]
    out = list(block.locations)
    if block.modifier not in ("~", "~*"):
        request = block.path if block.modifier == "=" else (block.path.rstrip("/") or "/")
        out += [loc for loc in sorted(server.locations, key=lambda loc: -len(loc.path))
                if loc.match == "Prefix" and loc not in out and _covers(loc.path, request)]
    cut = next((i for i, loc in enumerate(out) if not conditional(loc)), len(out) - 1)
    return out[:cut + 1]


@dataclass
class Candidate:
    block: str
    source: str
    matched: bool
    why: str


@dataclass
class Decision:
    """What the proxy does with one request, and why."""
    host: str
    path: str
    scheme: str
    port: int
    status: int = 404
    status_why: str = ""
    server: str | None = None
    server_why: str = ""
    block: str | None = None
    location: Location | None = None
    location_why: str = ""
    candidates: list[Candidate] = field(default_factory=list)
    upstream_path: str | None = None
    backend: Backend | None = None  # the backend the request goes to (the canary's when it wins)
    shares: list[tuple[str, float]] = field(default_factory=list)  # upstream → share of requests
    endpoints: tuple[Endpoint, ...] = ()
    canary: str | None = None
    redirect: str | None = None  # the Location header of a 30x
    tls: TLS | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["tls"]:
            d["tls"] = {"secret": self.tls.secret or "(self-signed fallback)"}  # no key material in output
        return d


def _norm_host(host: str) -> tuple[str, int | None]:
    host = host.strip()
    port = None
    if host.startswith("["):
        h, _, rest = host[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
        return h.lower(), port
    h, colon, p = host.rpartition(":")
    if colon and p.isdigit() and ":" not in h:
        host, port = h, int(p)
    return host.lower().rstrip("."), port


def normalize(uri: str) -> str | None:
    """nginx's $uri: %-decoded, ``//`` merged, ``.``/``..`` resolved; None when it climbs above root (400)."""
    uri = unquote(uri)
    if not uri.startswith("/"):
        uri = "/" + uri
    out: list[str] = []
    parts = re.sub(r"/+", "/", uri).split("/")[1:]
    for i, seg in enumerate(parts):
        last = i == len(parts) - 1
        if seg == ".":
            if last:
                out.append("")
            continue
        if seg == "..":
            if not out:
                return None
            out.pop()
            if last:
                out.append("")
            continue
        out.append(seg)
    return "/" + "/".join(out)


def pcre_escape(text: str) -> str:
    """``text`` as a PCRE literal."""
    return re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", text)


def pcre(pattern: str) -> re.Pattern:
    """A PCRE pattern as Python's re reads it (named groups ``(?<n>`` → ``(?P<n>``)."""
    return re.compile(re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", pattern))


def _wild(server: Server, host: str) -> bool:
    suffix = server.hostname[1:]  # ".foo.com"
    if server.wildcard == "many":
        return host.endswith(suffix) and len(host) > len(suffix)
    return re.fullmatch(r"[\w-]+" + re.escape(suffix), host) is not None


def select_server(config: ProxyConfig, host: str, port: int) -> tuple[Server | None, str]:
    servers = [s for s in config.servers if port in s.listeners]
    if not servers:
        return None, f"no server listens on port {port}"
    for s in servers:
        if s.hostname.lower() == host and s.hostname != CATCH_ALL:
            return s, f"server_name {s.hostname} equals the Host"
    many = [s for s in servers if s.hostname.startswith("*.") and s.wildcard == "many" and _wild(s, host)]
    if many:
        s = max(many, key=lambda s: len(s.hostname))
        return s, f"wildcard {s.hostname} (one or more labels) is the longest matching the Host"
    for s in servers:
        if s.hostname.startswith("*.") and s.wildcard == "one" and _wild(s, host):
            return s, f"wildcard {s.hostname} matches exactly one label of the Host"
    near = [s.hostname for s in servers if s.hostname.startswith("*.") and host.endswith(s.hostname[1:])]
    hint = f" ({', '.join(near)} matches exactly one label)" if near else ""
    for s in servers:
        if s.hostname == CATCH_ALL:
            return s, f"no server_name matches {host or '(no Host)'}{hint}: the catch-all server _"
    return None, f"no server_name matches {host or '(no Host)'}{hint}"


def _headers_match(loc: Location, headers: dict[str, str], method: str) -> tuple[bool, str]:
    if loc.method and loc.method.upper() != method.upper():
        return False, f"method {method} is not {loc.method}"
    for h in loc.headers:
        v = headers.get(h.name.lower())
        if v is None:
            return False, f"no header {h.name}"
        if h.type == "Exact" and v != h.value:
            return False, f"header {h.name}: {v!r} is not {h.value!r}"
        if h.type == "RegularExpression":
            try:
                if not pcre(h.value).search(v):
                    return False, f"header {h.name}: {v!r} does not match /{h.value}/"
            except re.error as exc:
                return False, f"header {h.name}: bad regex {h.value!r} ({exc})"
    return True, ""


def _proxies(loc: Location) -> bool:
    """Whether nginx.py gives the location a proxy_pass (which sets nginx's auto_redirect)."""
    return loc.status is None and loc.redirect is None and any(
        b.endpoints or b.cluster_ip for b in loc.backends if b.weight > 0)


def select_location(server: Server, uri: str) -> tuple[Block | None, str, list[Candidate], bool]:
    """nginx's location search; the last value: the answer is the prefix block's 301 auto-redirect."""
    bl = blocks(server)
    cands: list[Candidate] = []
    exact = next((b for b in bl if b.modifier == "=" and b.path == uri), None)
    prefixes = [b for b in bl if b.modifier in ("", "^~") and uri.startswith(b.path)]
    longest = max(prefixes, key=lambda b: len(b.path), default=None)
    # nginx's auto_redirect: a proxied prefix *or exact* location "P/" answers "P" with a 301.
    redirect = next((b for b in bl if b.modifier in ("", "^~", "=") and b.path == uri + "/"
                     and _proxies(b.locations[0])), None)
    regex_hit = None
    for b in bl:
        src = "; ".join(loc.source for loc in b.locations if loc.source)
        if b.modifier == "=":
            ok = b.path == uri
            why = "exact match" if ok else f"{uri} is not {b.path}"
        elif b.modifier in ("", "^~"):
            ok = uri.startswith(b.path)
            why = f"prefix {b.path} matches" if ok else f"{uri} does not start with {b.path}"
            if ok and b is not longest:
                why += f", but {longest.path} is longer" if longest else ""
        else:
            flags = re.IGNORECASE if b.modifier == "~*" else 0
            try:
                ok = re.search(pcre(b.path).pattern, uri, flags) is not None
                why = ("the regex matches" + (" (case-insensitive)" if flags else "")) if ok else \
                    "the regex does not match"
            except re.error as exc:
                ok, why = False, f"cannot evaluate this regex here ({exc})"
            if ok and regex_hit is None:
                regex_hit = b
            elif ok:
                why += f", but {regex_hit.text} comes first"
        cands.append(Candidate(b.text, src, ok, why))
    if exact is not None:
        return exact, "the exact match wins over prefixes and regexes", cands, False
    if redirect is not None and not (longest is not None and len(longest.path) > len(redirect.path)):
        return redirect, (f"{redirect.path} is {uri} plus a slash: nginx redirects (301) to add it "
                          "(no exact location takes it)"), cands, True
    if longest is not None and longest.modifier == "^~":
        return longest, "the longest prefix, and ^~ stops the regex search", cands, False
    if regex_hit is not None:
        pre = f" (checked after the longest prefix {longest.path})" if longest else ""
        return regex_hit, f"the first matching regex in config order{pre}", cands, False
    if longest is not None:
        return longest, "the longest matching prefix", cands, False
    return None, "no location matches", cands, False


def rewrite(path_regex: str, target: str, uri: str, args: str) -> str:
    """nginx ``rewrite "(?i)REGEX" TARGET break;`` on $uri, with the query as nginx keeps it."""
    m = re.search(pcre(path_regex).pattern, uri, re.IGNORECASE)
    if m is None:
        return uri + (f"?{args}" if args else "")

    def group(g: re.Match) -> str:
        key = g.group(1) or g.group(2) or g.group(3)
        try:
            return m.group(int(key) if key.isdigit() else key) or ""
        except IndexError:  # no such group: nginx substitutes nothing
            return ""

    new = re.sub(r"\$(?:\{(\w+)\}|(\d)|([A-Za-z_]\w*))", group, target)
    if new.endswith("?"):
        return new[:-1]
    if "?" in new:
        return new + (f"&{args}" if args else "")
    return new + (f"?{args}" if args else "")


def _cookie(headers: dict[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None


def _canary(loc: Location, headers: dict[str, str]) -> tuple[bool | None, str]:
    """balancer.lua route_to_alternative_balancer: True/False, or None for "by weight" (both)."""
    c = loc.canaries[0]
    if loc.affinity_cookie and _cookie(headers, loc.affinity_cookie) is not None:
        return False, f"the request carries affinity cookie {loc.affinity_cookie}: it stays on the primary"
    if c.header and c.header.lower() in headers:
        v = headers[c.header.lower()]
        if c.header_value:
            if v == c.header_value:
                return True, f"canary by header {c.header}: {v}"
        elif c.header_pattern:
            try:
                if pcre(c.header_pattern).search(v):
                    return True, f"canary by header {c.header} matching /{c.header_pattern}/"
            except re.error:
                pass
        elif v == "always":
            return True, f"canary by header {c.header}: always"
        elif v == "never":
            return False, f"header {c.header}: never (the primary)"
    if c.cookie:
        v = _cookie(headers, c.cookie)
        if v == "always":
            return True, f"canary by cookie {c.cookie}=always"
        if v == "never":
            return False, f"cookie {c.cookie}=never (the primary)"
    total = max(c.weight_total, 100)
    if c.weight <= 0:
        return False, "no canary header or cookie, canary weight 0: the primary"
    if c.weight >= total:
        return True, f"canary weight {c.weight}/{total}: always the canary"
    return None, f"canary by weight: {c.weight}/{total} of requests go to {c.backend.upstream}"


def explain(config: ProxyConfig, host: str, path: str, headers: dict[str, str] | None = None,
            scheme: str = "http", method: str = "GET", port: int | None = None) -> Decision:
    """What nginx rendered from ``config`` does with ``scheme://host/path`` arriving on ``port``
    (default: the config's port for the scheme; a port in ``host`` is the Host header's, which
    nginx ignores when it picks the server)."""
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    h, _ = _norm_host(host)
    port = port or (config.https_port if scheme == "https" else config.http_port)
    d = Decision(host=h, path=path, scheme=scheme, port=port)
    uri_raw, _, args = path.partition("?")
    uri = normalize(uri_raw or "/")
    if uri is None:
        d.status, d.status_why = 400, f"{uri_raw} climbs above the root: nginx answers 400"
        return d
    server, d.server_why = select_server(config, h, port)
    if server is None:
        return _fallback(config, d, uri_raw, args)
    d.server = server.hostname
    if scheme == "https":
        d.tls = server.tls
        if server.tls is None:
            d.notes.append("no certificate for this server: nginx presents the default (self-signed) one")
        elif not server.tls.secret:
            d.notes.append("its TLS secret is missing or incomplete: the self-signed fallback certificate")
    block, d.location_why, d.candidates, auto = select_location(server, uri)
    if block is None:
        return _fallback(config, d, uri_raw, args)
    d.block = block.text
    if auto:
        d.location = block.locations[0]
        d.status, d.redirect = 301, f"{scheme}://{host}{uri}/" + (f"?{args}" if args else "")
        d.status_why = "nginx's auto-redirect of a prefix location ending in /"
        return d
    loc, misses = None, []
    tried = candidates(server, block)
    for variant in tried:
        ok, why = _headers_match(variant, hdrs, method)
        if ok:
            loc = variant
            break
        misses.append(why)
    if loc is None:
        d.status = config.no_match_status
        d.status_why = f"{block.text}: no variant matches ({'; '.join(misses)})"
        return d
    d.location = loc
    if len(tried) > 1:
        d.location_why += f"; variant {tried.index(loc)} ({loc.source})"
    return _answer(d, loc, hdrs, uri, uri_raw, args, h, scheme)


def _fallback(config: ProxyConfig, d: Decision, uri_raw: str, args: str) -> Decision:
    if config.default_backend is not None:
        b = config.default_backend
        d.backend, d.endpoints, d.shares = b, b.endpoints, [(b.upstream, 1.0)]
        d.upstream_path = uri_raw + (f"?{args}" if args else "")
        d.status = 200 if b.endpoints else 503
        d.status_why = "nothing matched: the default backend" + (
            "" if b.endpoints else f" has no endpoint ({b.missing})")
        return d
    d.status = config.no_match_status
    d.status_why = f"nothing matched: the controller answers {config.no_match_status}"
    return d


def _answer(d: Decision, loc: Location, hdrs: dict[str, str], uri: str, uri_raw: str, args: str,
            host: str, scheme: str) -> Decision:
    if scheme == "http" and loc.ssl_redirect:
        request_uri = uri_raw + (f"?{args}" if args else "")
        if request_uri.endswith("/"):
            request_uri = request_uri[:-1]  # preserve-trailing-slash is off by default
        d.status, d.redirect = 308, f"https://{host}{request_uri}"
        d.status_why = "the host has TLS: plain HTTP is redirected (ssl-redirect)"
        return d
    if loc.redirect is not None:
        r = loc.redirect
        port = f":{r.port}" if r.port else ""
        d.status = r.status
        d.redirect = f"{r.scheme or scheme}://{r.hostname or host}{port}{r.path or uri}" + (f"?{args}" if args else "")
        d.status_why = f"a redirect ({loc.source})"
        return d
    if loc.status is not None:
        d.status, d.status_why = loc.status, f"the location answers {loc.status} itself ({loc.source})"
        return d
    d.upstream_path = (rewrite(loc.path, loc.rewrite_target, uri, args) if loc.rewrite_target
                       else uri_raw + (f"?{args}" if args else ""))
    if loc.rewrite_target:
        d.notes.append(f'rewrite "(?i){loc.path}" {loc.rewrite_target}: upstream gets {d.upstream_path}')
    live = [b for b in loc.backends if b.weight > 0]
    if not live:
        d.status, d.status_why = 503, "no backend: nginx answers 503"
        return d
    total = sum(b.weight for b in live)
    d.shares = [(b.upstream, b.weight / total) for b in live]
    primary = live[0] if len(live) == 1 else None
    if primary is not None and loc.canaries and primary.endpoints:
        to_canary, why = _canary(loc, hdrs)
        d.canary = why
        c = loc.canaries[0].backend
        if to_canary is True:
            primary = c
            d.shares = [(c.upstream, 1.0)]
        elif to_canary is None:
            share = loc.canaries[0].weight / max(loc.canaries[0].weight_total, 100)
            d.shares = [(live[0].upstream, 1 - share), (c.upstream, share)]
            d.endpoints = live[0].endpoints + c.endpoints
    if primary is not None:
        d.backend = primary
        d.endpoints = d.endpoints or primary.endpoints
        if not primary.endpoints:
            d.status = 503
            d.status_why = f"{primary.upstream}: {primary.missing or 'no ready endpoint'} (503, no active endpoints)"
            return d
    else:
        d.endpoints = tuple(e for b in live for e in b.endpoints)
        empty = [b.upstream for b in live if not b.endpoints]
        if len(empty) == len(live):
            d.status, d.status_why = 503, "no backend has a ready endpoint (503)"
            return d
        if empty:
            d.notes.append(f"{', '.join(empty)} have no endpoint: their share of requests gets 503")
    if loc.affinity_cookie:
        d.notes.append(f"affinity: cookie {loc.affinity_cookie} pins a client to one endpoint")
    via = f" via ClusterIP {d.backend.cluster_ip}" if d.backend is not None and d.backend.cluster_ip else ""
    d.status = 200
    d.status_why = f"proxied to {', '.join(u for u, _ in d.shares)}{via} (the endpoint answers)"
    return d
