"""What one L7 proxy serves, whichever API asked for it: servers by host, locations by path,
backends made of endpoint addresses.

Plain frozen dataclasses, no I/O and no imports from netsim: ingress.py (Ingress, IngressClass,
the nginx.ingress.kubernetes.io annotations) and gateway.py (Gateway, HTTPRoute, ReferenceGrant)
produce a ProxyConfig from the store's objects; nginx.py renders it into nginx.conf text and
match.py evaluates a request against it, so the proxy and ``netsim ingress explain`` can not
disagree about which location answers.

Order carries meaning only where the API says so: servers and locations are kept in the order
the producer resolved precedence in (match.py and the renderer must not re-sort what the
producer already ordered beyond nginx's own location rules)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# How a location's path is compared with the request path (the part before "?").
#   Exact      string equality, case-sensitive (Ingress Exact, HTTPRoute Exact)
#   Prefix     element-wise on "/"-separated segments, trailing slashes ignored
#              (Ingress Prefix, HTTPRoute PathPrefix)
#   Nginx      nginx's plain string prefix (Ingress ImplementationSpecific without use-regex)
#   Regex      case-insensitive PCRE anchored at the start (use-regex / rewrite-target: "~*")
PathMatch = Literal["Exact", "Prefix", "Nginx", "Regex"]

# Where a wildcard hostname may match: Ingress "*.foo.com" matches exactly one label,
# a Gateway listener or HTTPRoute wildcard one or more.
WildcardLabels = Literal["one", "many"]


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int  # the targetPort resolved for this endpoint


@dataclass(frozen=True)
class Backend:
    upstream: str  # nginx upstream name, ingress-nginx's "<namespace>-<service>-<port>"
    namespace: str
    service: str
    port: str  # the Service port as the object referenced it: a number or a port name
    endpoints: tuple[Endpoint, ...] = ()  # ready addresses; empty means 503 (no active endpoints)
    weight: int = 1  # share among the location's backends (Gateway weights); 0 takes no traffic
    protocol: Literal["HTTP", "HTTPS"] = "HTTP"  # backend-protocol
    cluster_ip: str | None = None  # "ip:port" when service-upstream asks for the ClusterIP instead
    missing: str | None = None  # why the backend does not resolve (no such Service, no grant): 503/500


@dataclass(frozen=True)
class Canary:
    """ingress-nginx's canary: by header (value or pattern), else by cookie, else by weight."""
    backend: Backend
    header: str | None = None
    header_value: str | None = None
    header_pattern: str | None = None
    cookie: str | None = None
    weight: int = 0
    weight_total: int = 100


@dataclass(frozen=True)
class HeaderMatch:
    name: str
    value: str
    type: Literal["Exact", "RegularExpression"] = "Exact"


@dataclass(frozen=True)
class HeaderModifier:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Redirect:
    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None
    path: str | None = None
    status: int = 302


@dataclass(frozen=True)
class Location:
    path: str
    match: PathMatch
    backends: tuple[Backend, ...] = ()  # weighted; none and no redirect/status: 503 (Ingress) or 500 (Gateway)
    source: str = ""  # what asked for it, for explain and the access log: "Ingress default/web rule 0 path 1"
    headers: tuple[HeaderMatch, ...] = ()  # all must match (HTTPRoute)
    method: str | None = None
    rewrite_target: str | None = None  # may hold $1.. capture groups of a Regex path
    canaries: tuple[Canary, ...] = ()
    affinity_cookie: str | None = None  # affinity: cookie, the cookie's name (INGRESSCOOKIE)
    ssl_redirect: bool = False  # plain HTTP answers 308 to https
    request_headers: HeaderModifier | None = None
    redirect: Redirect | None = None
    status: int | None = None  # a fixed answer instead of proxying (Gateway: 500 for unresolved refs)
    query_params: tuple[HeaderMatch, ...] = ()  # all must match (HTTPRoute queryParams; name is case-sensitive)


@dataclass(frozen=True)
class TLS:
    secret: str  # "namespace/name" of the kubernetes.io/tls Secret; "" for the self-signed fallback
    cert_pem: str
    key_pem: str


@dataclass(frozen=True)
class Server:
    hostname: str  # "_" is the catch-all; "*.foo.com" a wildcard
    locations: tuple[Location, ...] = ()
    tls: TLS | None = None
    wildcard: WildcardLabels = "one"
    listeners: tuple[int, ...] = (80, 443)  # the ports this server answers on (Gateway listeners)


@dataclass(frozen=True)
class ProxyConfig:
    """Everything one proxy pod serves; equal configs render equal nginx text."""
    name: str  # the controller or Gateway: "ingress-nginx/ingress-nginx-controller", "default/gw"
    servers: tuple[Server, ...] = ()
    default_backend: Backend | None = None  # no server or location matched: this, else 404
    no_match_status: int = 404
    http_port: int = 80
    https_port: int = 443
    extra: dict[str, str] = field(default_factory=dict, hash=False, compare=False)  # notes for explain
