"""Scenario files: one YAML document describing a cluster, shaped like kind's cluster config.

Validation happens here, before anything touches the kernel: a bad file gets a
:class:`ScenarioError` naming the file, the field path, what is wrong and how to fix it.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from netsim.model import k8s
from netsim.model.names import CLUSTER_NAME_MAX

API_VERSION = "netsim/v1alpha1"

DnsLabel = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
ClusterName = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=CLUSTER_NAME_MAX)
]

# What to tell the user when a field is wrong: shown after the error, keyed by field name.
FIX_HINTS = {
    "name": "use lowercase letters, digits and '-', starting and ending with a letter or digit "
    f"(a DNS label; at most {CLUSTER_NAME_MAX} characters for a cluster)",
    "role": "use 'control-plane' or 'worker'",
    "apiVersion": f"use '{API_VERSION}'",
    "kind": "use 'Scenario'",
    "underlaySubnet": "use an IPv4 CIDR such as 192.168.56.0/24",
    "podSubnet": "use an IPv4 CIDR such as 10.244.0.0/16",
    "serviceSubnet": "use an IPv4 CIDR such as 10.96.0.0/12",
    "loadBalancerPool": "use an IPv4 CIDR such as 198.51.100.0/28",
    "backend": "use 'vxlan' or 'host-gw'",
    "kubeProxyMode": "use 'iptables', 'nftables' or 'ipvs'",
    "ipvsScheduler": "use one of the kernel's IPVS schedulers: rr, wrr, lc, wlc, lblc, lblcr, dh, sh, fo, ovf, nq, "
    "sed, mh, twos",
    "underlayMTU": "use a whole number from 1280 to 9000",
    "ip": "use an IPv4 address inside networking.underlaySubnet (or one of networking.underlaySubnets)",
    "subnet": "use one of networking.underlaySubnets",
    "underlaySubnets": "use a list of disjoint IPv4 CIDRs such as [192.168.56.0/24, 192.168.57.0/24]",
    "cni": "use 'canal' (flannel + NetworkPolicy, the default), 'flannel' (no NetworkPolicy) or 'calico'",
    "ipipMode": "use 'Always', 'CrossSubnet' or 'Never'",
    "vxlanMode": "use 'Always', 'CrossSubnet' or 'Never'",
    "blockSize": "use a prefix length from 20 to 32 (Calico's IPv4 block size; 26 by default)",
    "protocol": "use TCP, UDP, SCTP or ICMP",
    "expect": "use 'allow' or 'deny'",
    "port": "use a port number from 1 to 65535",
    "scheme": "use 'http' or 'https'",
    "status": "use an HTTP status code from 100 to 599, e.g. 200, 404 or 503",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class NodeSpec(_Model):
    name: DnsLabel
    role: Literal["control-plane", "worker"] = "worker"
    ip: ipaddress.IPv4Address | None = None
    # The underlay segment ("rack") the member sits on; default: the one holding `ip`, else the first.
    subnet: ipaddress.IPv4Network | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class ExternalHostSpec(_Model):
    name: DnsLabel
    ip: ipaddress.IPv4Address | None = None
    subnet: ipaddress.IPv4Network | None = None


EncapMode = Literal["Always", "CrossSubnet", "Never"]


class CalicoSpec(_Model):
    """The default IPPool's settings (projectcalico.org/v3 IPPool spec)."""

    ipipMode: EncapMode = "Always"
    vxlanMode: EncapMode = "Never"
    natOutgoing: bool = True
    blockSize: int = Field(26, ge=20, le=32)

    @model_validator(mode="after")
    def _one_encapsulation(self) -> CalicoSpec:
        if self.ipipMode != "Never" and self.vxlanMode != "Never":
            raise ValueError(f"ipipMode {self.ipipMode} and vxlanMode {self.vxlanMode} are both enabled; an IPPool "
                             "uses at most one encapsulation: set the other to Never")
        return self


class Networking(_Model):
    underlaySubnet: ipaddress.IPv4Network = ipaddress.IPv4Network("192.168.56.0/24")
    # Several L2 segments behind the underlay's router; the first is the default segment.
    underlaySubnets: list[ipaddress.IPv4Network] | None = Field(None, min_length=1)
    underlayMTU: int = Field(1500, ge=1280, le=9000)
    podSubnet: ipaddress.IPv4Network = ipaddress.IPv4Network("10.244.0.0/16")
    serviceSubnet: ipaddress.IPv4Network = ipaddress.IPv4Network("10.96.0.0/12")
    backend: Literal["vxlan", "host-gw"] = "vxlan"
    directRouting: bool = False  # vxlan: nodes on the same underlay subnet route directly (flannel's DirectRouting)
    kubeProxyMode: Literal["iptables", "nftables", "ipvs"] = "iptables"
    # kube-proxy's ipvs.scheduler (KubeProxyConfiguration): the kernel's IPVS schedulers.
    ipvsScheduler: Literal["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "fo", "ovf", "nq", "sed", "mh",
                           "twos"] = "rr"
    loadBalancerPool: ipaddress.IPv4Network | None = None
    # canal: flannel's network with netsim's NetworkPolicy plugin (the default); flannel: the same
    # network, NetworkPolicy stored but not enforced; calico: Calico's CNI, IPAM, BGP and policy.
    cni: Literal["canal", "flannel", "calico"] = "canal"
    calico: CalicoSpec = Field(default_factory=CalicoSpec)

    @property
    def segments(self) -> list[ipaddress.IPv4Network]:
        """The underlay's L2 segments, the default one first."""
        return list(self.underlaySubnets) if self.underlaySubnets else [self.underlaySubnet]

    @model_validator(mode="after")
    def _modes(self) -> Networking:
        given = self.model_fields_set
        if self.underlaySubnets and "underlaySubnet" in given and self.underlaySubnet != self.underlaySubnets[0]:
            raise ValueError(f"underlaySubnet {self.underlaySubnet} and underlaySubnets {self.underlaySubnets[0]}, ... "
                             "disagree; give only underlaySubnets (its first entry is the default segment)")
        if self.underlaySubnets:
            self.underlaySubnet = self.underlaySubnets[0]
        if self.cni == "calico":
            for flannel_field in ("backend", "directRouting"):
                if flannel_field in given:
                    raise ValueError(f"{flannel_field} configures flannel, and cni is calico; fix: remove it and "
                                     "set networking.calico.ipipMode/vxlanMode instead")
            if self.calico.blockSize < self.podSubnet.prefixlen:
                raise ValueError(f"calico.blockSize {self.calico.blockSize} is larger than podSubnet {self.podSubnet}; "
                                 f"fix: use a block size of at least {self.podSubnet.prefixlen}")
        elif "calico" in given:
            raise ValueError(f"calico settings apply to cni: calico, and cni is {self.cni}; "
                             "fix: set networking.cni: calico or remove networking.calico")
        return self

    @model_validator(mode="after")
    def _no_overlaps(self) -> Networking:
        named = [(f"underlaySubnets[{i}]" if self.underlaySubnets else "underlaySubnet", seg)
                 for i, seg in enumerate(self.segments)]
        named += [("podSubnet", self.podSubnet),
                  ("serviceSubnet", self.serviceSubnet), ("loadBalancerPool", self.loadBalancerPool)]
        named = [(n, net) for n, net in named if net is not None]
        for i, (a_name, a) in enumerate(named):
            for b_name, b in named[i + 1:]:
                if a.overlaps(b):
                    raise ValueError(f"{a_name} {a} overlaps {b_name} {b}; the networks must be disjoint")
        return self


# -- expectation references ---------------------------------------------------------------------
# What `netsim check` probes from and to: the refs netsim.observe.probe resolves, plus
# `pods/NS/SELECTOR`, every running pod the label selector matches (netsim.observe.check expands it).

POD_KINDS = ("pod", "po", "pods")
SVC_KINDS = ("svc", "service", "services")
LB_KINDS = ("lb",)
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?"  # as netsim.observe.probe.DNS_NAME
_DNS_NAME_RE = re.compile(rf"^(?=.{{1,253}}$){_NAME_LABEL}(\.{_NAME_LABEL})*\.?$", re.IGNORECASE)
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY_RE = re.compile(rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_LABEL_NAME}$")
_LABEL_VALUE_RE = re.compile(rf"^({_LABEL_NAME})?$")
_SET_RE = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
REF_FORMS = ("pod/NS/NAME, pods/NS/SELECTOR (e.g. pods/default/app=web), svc/NS/NAME, lb/NS/NAME (a "
             "Service's LoadBalancer address), node/NAME, host/NAME, ip:ADDR or a DNS name")
SOURCE_FORMS = "pod/NS/NAME, pods/NS/SELECTOR, node/NAME or host/NAME"
SELECTOR_FORMS = "KEY=VALUE, KEY!=VALUE, KEY in (V1,V2), KEY notin (V1,V2), KEY or !KEY, joined by commas"


def is_selector_ref(ref: str) -> bool:
    """`pods/NS/SELECTOR` (or `pods/SELECTOR` in default): the last part holds what no pod name can."""
    kind, _, rest = ref.partition("/")
    return kind in POD_KINDS and any(c in rest for c in "=!( ")


def split_pod_ref(ref: str) -> tuple[str, str]:
    """(namespace, name or selector) of a pod ref, as netsim.observe.probe reads it."""
    rest = ref.partition("/")[2]
    if is_selector_ref(ref):
        # A selector's keys may have a prefix with a slash: the namespace is the first part
        # only when it is followed by more.
        ns, sep, sel = rest.partition("/")
        if sep and _DNS_LABEL_RE.match(ns) and not any(c in ns for c in "=!( "):
            return ns, sel
        return "default", rest
    ns, _, name = rest.partition("/")
    return ("default", ns) if not name else (ns, name)


def parse_selector(text: str) -> dict:
    """A kubectl-style label selector (`-l`) as a LabelSelector (matchLabels +
    matchExpressions); ValueError saying what is wrong."""
    parts, depth, cur = [], 0, ""
    for c in text:
        depth += c == "("
        depth -= c == ")"
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    labels: dict[str, str] = {}
    exprs: list[dict] = []

    def key_ok(k: str) -> str:
        if not _LABEL_KEY_RE.match(k):
            raise ValueError(f"{k!r} is not a label key")
        return k

    def value_ok(v: str) -> str:
        if not _LABEL_VALUE_RE.match(v):
            raise ValueError(f"{v!r} is not a label value")
        return v

    for raw in parts:
        part = raw.strip()
        if not part:
            raise ValueError("an empty requirement (two commas, or one at an end)")
        if m := _SET_RE.match(part):
            values = [value_ok(v.strip()) for v in m["values"].split(",")]
            exprs.append({"key": key_ok(m["key"]), "operator": "In" if m["op"] == "in" else "NotIn",
                          "values": values})
        elif "!=" in part:
            k, v = (x.strip() for x in part.split("!=", 1))
            exprs.append({"key": key_ok(k), "operator": "NotIn", "values": [value_ok(v)]})
        elif "=" in part:
            k, v = (x.strip() for x in part.split("==" if "==" in part else "=", 1))
            if labels.get(key_ok(k), value_ok(v)) != v:
                raise ValueError(f"{k} is given two values")
            labels[k] = v
        elif part.startswith("!"):
            exprs.append({"key": key_ok(part[1:].strip()), "operator": "DoesNotExist"})
        else:
            exprs.append({"key": key_ok(part), "operator": "Exists"})
    return {"matchLabels": labels, "matchExpressions": exprs}


def ref_problem(ref: str, source: bool) -> str | None:
    """Why `ref` cannot be probed (from, when ``source``; else to), with the fix; None when fine."""
    forms = SOURCE_FORMS if source else REF_FORMS
    kind, slash, rest = ref.partition("/")
    if ref.startswith("ip:"):
        try:
            ipaddress.IPv4Address(ref[3:])
        except ValueError:
            return f"{ref[3:]!r} is not an IPv4 address; fix: use ip:A.B.C.D"
        if source:
            return f"an address cannot start a connection; fix: use {forms}"
        return None
    if not slash:
        if source:
            return f"a DNS name cannot start a connection; fix: use {forms}"
        return None if _DNS_NAME_RE.match(ref) else f"not a reference netsim can probe; fix: use {forms}"
    if kind in POD_KINDS:
        ns, name = split_pod_ref(ref)
        if not _DNS_LABEL_RE.match(ns):
            return f"namespace {ns!r} is not a DNS label; fix: use {kind}/NS/NAME with a namespace such as default"
        if is_selector_ref(ref):
            if kind != "pods":
                return f"{name!r} is a label selector, not a pod name; fix: use pods/{ns}/{name} for every " \
                       "running pod it matches"
            try:
                parse_selector(name)
            except ValueError as exc:
                return f"{name!r} is not a label selector: {exc}; fix: use {SELECTOR_FORMS}"
            return None
        if not _DNS_SUBDOMAIN_RE.match(name):
            return f"pod name {name!r} is not a DNS subdomain; fix: use {kind}/NS/NAME with the pod's name"
        return None
    if kind in SVC_KINDS + LB_KINDS:
        if source:
            return f"a Service cannot start a connection; fix: use {forms}"
        ns, _, name = rest.partition("/")
        ns, name = ("default", ns) if not name else (ns, name)
        if not _DNS_LABEL_RE.match(ns) or not _DNS_LABEL_RE.match(name):
            return f"{rest!r} is not NS/NAME of a Service; fix: use {kind}/NS/NAME, e.g. {kind}/default/web"
        return None
    if kind in ("node", "no", "host"):
        if not _DNS_LABEL_RE.match(rest):
            return f"{rest!r} is not a {'host' if kind == 'host' else 'node'} name; fix: use {kind}/NAME with " \
                   "a name from the scenario's " + ("externalHosts" if kind == "host" else "nodes")
        return None
    return f"unknown kind {kind!r}; fix: use {forms}"


def answered_by_problem(value: str) -> str | None:
    """Why `answeredBy` (a pod name prefix, or a label selector such as app=web) is not usable."""
    if any(c in value for c in "=!( "):
        try:
            parse_selector(value)
        except ValueError as exc:
            return f"{value!r} is not a label selector: {exc}; fix: use {SELECTOR_FORMS}, or a pod name prefix"
        return None
    if not re.match(r"^[a-z0-9]([-a-z0-9.]*)?$", value):
        return f"{value!r} is neither a pod name prefix nor a label selector; fix: use e.g. 'backend-' or 'app=backend'"
    return None


HTTP_FIELDS = ("host", "path", "scheme", "status")


class Expectation(_Model):
    """One probe: from, to, port and protocol; with any of ``host``, ``path``, ``scheme`` or
    ``status`` it is an HTTP request (over TCP, port 80 or 443 for https by default) judged by
    the status and the echo's answer; ``answeredBy`` names the pods that must answer."""

    from_: str = Field(alias="from")
    to: str
    port: int | None = Field(None, ge=1, le=65535)
    protocol: Literal["TCP", "UDP", "SCTP", "ICMP"] = "TCP"
    expect: Literal["allow", "deny"] = "allow"
    host: str | None = None
    path: str | None = None
    scheme: Literal["http", "https"] | None = None
    status: int | None = Field(None, ge=100, le=599)
    answeredBy: str | None = None

    @property
    def http(self) -> bool:
        return any(getattr(self, f) is not None for f in HTTP_FIELDS)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        name, _, port = v.rpartition(":") if ":" in v else (v, "", "")
        if not _DNS_NAME_RE.match(name) or (port and not (port.isdigit() and 0 < int(port) < 65536)):
            raise ValueError(f"{v!r} is not a host name; fix: use a DNS name such as backend.aa.com "
                             "(optionally with :PORT), sent as the Host header")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or any(c.isspace() for c in v):
            raise ValueError(f"{v!r} is not a request path; fix: start it with '/', e.g. /api?x=1 "
                             "(no spaces; encode them as %20)")
        return v

    @field_validator("answeredBy")
    @classmethod
    def _answered_by(cls, v: str) -> str:
        if problem := answered_by_problem(v):
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _http_over_tcp(self) -> Expectation:
        given = [f for f in (*HTTP_FIELDS, "answeredBy") if getattr(self, f) is not None]
        if self.http and self.protocol != "TCP":
            raise ValueError(f"{', '.join(given)}: an HTTP expectation runs over TCP, not {self.protocol}; "
                             "fix: drop `protocol` or use TCP")
        if self.answeredBy is not None and self.protocol == "ICMP":
            raise ValueError("answeredBy: an ICMP echo names no pod; fix: probe a TCP or UDP port")
        if given and self.expect == "deny" and (self.status is not None or self.answeredBy is not None):
            raise ValueError("status/answeredBy: a denied connection gets no answer to judge; fix: use "
                             "expect: allow (a refusal by the proxy is a status such as 404 or 503)")
        return self

    @field_validator("from_")
    @classmethod
    def _source_ref(cls, v: str) -> str:
        if problem := ref_problem(v, source=True):
            raise ValueError(problem)
        return v

    @field_validator("to")
    @classmethod
    def _target_ref(cls, v: str) -> str:
        if problem := ref_problem(v, source=False):
            raise ValueError(problem)
        return v


class Scenario(_Model):
    apiVersion: Literal["netsim/v1alpha1"] = API_VERSION
    kind: Literal["Scenario"] = "Scenario"
    name: ClusterName = "netsim"
    nodes: list[NodeSpec] = Field(min_length=1)
    externalHosts: list[ExternalHostSpec] = Field(default_factory=list)
    networking: Networking = Field(default_factory=Networking)
    manifests: list[str | dict[str, Any]] = Field(default_factory=list)
    # Cluster add-ons `up` installs besides the DNS: ingress-nginx (netsim.node.ingress.addon),
    # the Gateway API's "gateway".
    addons: list[Literal["ingress-nginx", "gateway"]] = Field(default_factory=list)
    expect: list[Expectation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _members(self) -> Scenario:
        seen: set[str] = set()
        for field, members in (("nodes", self.nodes), ("externalHosts", self.externalHosts)):
            for m in members:
                if m.name in seen:
                    raise ValueError(f"{field}: name {m.name!r} is used twice; "
                                     "every node and external host needs its own name")
                seen.add(m.name)
        if not any(n.role == "control-plane" for n in self.nodes):
            raise ValueError("nodes: no node has role 'control-plane'; mark one with `role: control-plane`")
        segments = self.networking.segments
        ips: dict[ipaddress.IPv4Address, str] = {}
        members: dict[ipaddress.IPv4Network, int] = dict.fromkeys(segments, 0)
        for m in [*self.nodes, *self.externalHosts]:
            subnet = segment_of(m, segments)
            members[subnet] += 1
            if m.ip is None:
                continue
            if m.ip not in subnet or m.ip in (subnet.network_address, subnet.broadcast_address):
                where = "underlay segment" if self.networking.underlaySubnets else "underlaySubnet"
                raise ValueError(f"{m.name}: ip {m.ip} is not a host address of {where} {subnet}")
            if m.ip == gateway_of(subnet):
                raise ValueError(f"{m.name}: ip {m.ip} is the underlay gateway; pick another address")
            if m.ip in ips:
                raise ValueError(f"{m.name}: ip {m.ip} is already used by {ips[m.ip]}")
            ips[m.ip] = m.name
        for subnet, count in members.items():
            room = subnet.num_addresses - 3  # network, broadcast, gateway
            if count > room:
                raise ValueError(f"underlay segment {subnet} has room for {room} members, not {count}; "
                                 "use a larger subnet or put members on another segment")
        return self


def segment_of(member: NodeSpec | ExternalHostSpec,
               segments: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The underlay segment a member sits on: its `subnet`, else the one holding its `ip`, else the first."""
    if member.subnet is not None:
        if member.subnet not in segments:
            raise ValueError(f"{member.name}: subnet {member.subnet} is not one of the underlay's segments "
                             f"({', '.join(map(str, segments))}); add it to networking.underlaySubnets")
        return member.subnet
    if member.ip is not None:
        for seg in segments:
            if member.ip in seg:
                return seg
    return segments[0]


def host_gw_problem(backend: str, node_segments: dict[str, str]) -> str | None:
    """Why flannel's host-gw cannot connect these nodes ({node: its underlay segment}), or None.

    A host-gw route is ``<pod subnet> via <node IP> dev eth0``: the next hop must be on-link,
    and the kernel refuses one that is not (``Nexthop has invalid gateway``, which flanneld
    logs as "network is unreachable").  Nodes on different L2 segments therefore get no routes
    to each other's pods, as in a real cluster whose racks are joined by a router."""
    if backend != "host-gw":
        return None
    by_segment: dict[str, list[str]] = {}
    for node, seg in node_segments.items():
        by_segment.setdefault(seg, []).append(node)
    if len(by_segment) < 2:
        return None
    where = "; ".join(f"{', '.join(sorted(nodes))} on {seg}" for seg, nodes in by_segment.items())
    return (f"networking.backend host-gw: the nodes are on {len(by_segment)} underlay segments ({where}); "
            "host-gw routes need the next hop on the node's own L2 segment, so pods on different segments "
            "cannot reach each other (flannel logs 'network is unreachable' for those routes); fix: use "
            "backend: vxlan (directRouting: true keeps direct routes within a segment), or put every node "
            "on one segment")


def scenario_warnings(scenario: Scenario) -> list[str]:
    """What a valid scenario builds but will not work as a user may expect (said at `up`)."""
    net = scenario.networking
    if net.cni == "calico":
        return []
    segments = net.segments
    problem = host_gw_problem(net.backend, {n.name: str(segment_of(n, segments)) for n in scenario.nodes})
    return [problem] if problem else []


def gateway_of(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The underlay's router: the first host address, as on a home LAN or VirtualBox's."""
    return subnet.network_address + 1


class ScenarioError(ValueError):
    """A scenario that cannot be built; ``problems`` are (field path, message) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: invalid scenario"]
        lines += [f"  {path}: {msg}" if path else f"  {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _explain(err: dict, data: Any) -> tuple[str, str]:
    # Pydantic reports a union's failure once per member type (e.g. `manifests.0.str`);
    # keep the user's own path.
    loc = tuple(p for p in err["loc"] if p not in ("str", "dict[str,any]"))
    path = _field_path(loc)
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if err["type"] == "extra_forbidden":
        parent = _known_fields(loc[:-1])
        known = f"; known fields here: {', '.join(parent)}" if parent else ""
        return path, f"unknown field {field!r}{known}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] != "missing" and "input" in err and not isinstance(err["input"], dict | list):
        head, sep, fix = msg.partition("; fix: ")
        msg = f"{head} (got {err['input']!r}){sep}{fix}"
    hint = FIX_HINTS.get(field)
    if hint and err["type"] != "value_error":
        msg += f"; fix: {hint}"
    return path, msg


def _known_fields(loc: tuple) -> list[str]:
    model: type[BaseModel] | None = Scenario
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        if info is None:
            return []
        ann = info.annotation
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def parse_scenario(data: Any, source: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(source, [("", f"expected a mapping with apiVersion: {API_VERSION} "
                                          f"and kind: Scenario, got {type(data).__name__}")])
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, [_explain(e, data) for e in exc.errors()]) from None
    problems = _check_manifests(scenario, base_dir) + _check_expectations(scenario)
    if problems:
        raise ScenarioError(source, problems)
    return scenario


def _check_manifests(scenario: Scenario, base_dir: Path | None) -> list[tuple[str, str]]:
    problems = []
    for i, item in enumerate(scenario.manifests):
        where = f"manifests[{i}]"
        if isinstance(item, dict):
            try:
                k8s.validate(item, "inline object")
            except ValueError as exc:
                problems.append((where, str(exc)))
            continue
        path = Path(item) if base_dir is None else base_dir / item
        if not path.exists():
            problems.append((where, f"{item}: no such file or directory (paths are relative to the "
                                    "scenario file)"))
            continue
        try:
            k8s.read_manifests(path)
        except k8s.ManifestError as exc:
            problems.append((where, str(exc)))
    return problems


def _check_expectations(scenario: Scenario) -> list[tuple[str, str]]:
    """node/NAME and host/NAME refs name members of this scenario."""
    nodes = {n.name for n in scenario.nodes}
    hosts = {h.name for h in scenario.externalHosts}
    problems = []
    for i, e in enumerate(scenario.expect):
        for field, ref in (("from", e.from_), ("to", e.to)):
            kind, _, name = ref.partition("/")
            if kind in ("node", "no") and name not in nodes:
                problems.append((f"expect[{i}].{field}", f"no node {name!r} in this scenario; fix: use one of "
                                                          f"{', '.join(sorted(nodes))}"))
            elif kind == "host" and name not in hosts:
                known = ", ".join(sorted(hosts)) or "none (add it under externalHosts)"
                problems.append((f"expect[{i}].{field}", f"no external host {name!r} in this scenario; fix: use "
                                                          f"one of {known}"))
    return problems


def manifest_objects(scenario: Scenario, base_dir: Path | None) -> list[dict]:
    """The objects the scenario's manifests declare, in order (already validated by load)."""
    out: list[dict] = []
    for item in scenario.manifests:
        if isinstance(item, dict):
            out.append(k8s.validate(item, "inline object"))
        else:
            path = Path(item) if base_dir is None else base_dir / item
            out += [o for _, objs in k8s.read_manifests(path) for o in objs]
    return out


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(str(path), [("", f"cannot read the file: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError(str(path), [(where, f"not valid YAML: {problem}")]) from None
    return parse_scenario(data, str(path), path.parent)

