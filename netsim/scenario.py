"""Scenario files: one YAML document describing a cluster, shaped like kind's cluster config.

Validation happens here, before anything touches the kernel: a bad file gets a
:class:`ScenarioError` naming the file, the field path, what is wrong and how to fix it.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from netsim import api
from netsim.names import CLUSTER_NAME_MAX

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
    "ip": "use an IPv4 address inside networking.underlaySubnet",
    "protocol": "use TCP, UDP, SCTP or ICMP",
    "expect": "use 'allow' or 'deny'",
    "port": "use a port number from 1 to 65535",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class NodeSpec(_Model):
    name: DnsLabel
    role: Literal["control-plane", "worker"] = "worker"
    ip: ipaddress.IPv4Address | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class ExternalHostSpec(_Model):
    name: DnsLabel
    ip: ipaddress.IPv4Address | None = None


class Networking(_Model):
    underlaySubnet: ipaddress.IPv4Network = ipaddress.IPv4Network("192.168.56.0/24")
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

    @model_validator(mode="after")
    def _no_overlaps(self) -> Networking:
        named = [("underlaySubnet", self.underlaySubnet), ("podSubnet", self.podSubnet),
                 ("serviceSubnet", self.serviceSubnet), ("loadBalancerPool", self.loadBalancerPool)]
        named = [(n, net) for n, net in named if net is not None]
        for i, (a_name, a) in enumerate(named):
            for b_name, b in named[i + 1:]:
                if a.overlaps(b):
                    raise ValueError(f"{a_name} {a} overlaps {b_name} {b}; the networks must be disjoint")
        return self


class Expectation(_Model):
    from_: str = Field(alias="from")
    to: str
    port: int | None = Field(None, ge=1, le=65535)
    protocol: Literal["TCP", "UDP", "SCTP", "ICMP"] = "TCP"
    expect: Literal["allow", "deny"] = "allow"


class Scenario(_Model):
    apiVersion: Literal["netsim/v1alpha1"] = API_VERSION
    kind: Literal["Scenario"] = "Scenario"
    name: ClusterName = "netsim"
    nodes: list[NodeSpec] = Field(min_length=1)
    externalHosts: list[ExternalHostSpec] = Field(default_factory=list)
    networking: Networking = Field(default_factory=Networking)
    manifests: list[str | dict[str, Any]] = Field(default_factory=list)
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
        subnet = self.networking.underlaySubnet
        ips: dict[ipaddress.IPv4Address, str] = {}
        for m in [*self.nodes, *self.externalHosts]:
            if m.ip is None:
                continue
            if m.ip not in subnet or m.ip in (subnet.network_address, subnet.broadcast_address):
                raise ValueError(f"{m.name}: ip {m.ip} is not a host address of underlaySubnet {subnet}")
            if m.ip == gateway_of(subnet):
                raise ValueError(f"{m.name}: ip {m.ip} is the underlay gateway; pick another address")
            if m.ip in ips:
                raise ValueError(f"{m.name}: ip {m.ip} is already used by {ips[m.ip]}")
            ips[m.ip] = m.name
        room = subnet.num_addresses - 3  # network, broadcast, gateway
        if len(self.nodes) + len(self.externalHosts) > room:
            raise ValueError(f"underlaySubnet {subnet} has room for {room} members, "
                             f"not {len(self.nodes) + len(self.externalHosts)}; use a larger subnet")
        return self


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
        msg += f" (got {err['input']!r})"
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
    problems = _check_manifests(scenario, base_dir)
    if problems:
        raise ScenarioError(source, problems)
    return scenario


def _check_manifests(scenario: Scenario, base_dir: Path | None) -> list[tuple[str, str]]:
    problems = []
    for i, item in enumerate(scenario.manifests):
        where = f"manifests[{i}]"
        if isinstance(item, dict):
            try:
                api.validate(item, "inline object")
            except ValueError as exc:
                problems.append((where, str(exc)))
            continue
        path = Path(item) if base_dir is None else base_dir / item
        if not path.exists():
            problems.append((where, f"{item}: no such file or directory (paths are relative to the "
                                    "scenario file)"))
            continue
        try:
            api.read_manifests(path)
        except api.ManifestError as exc:
            problems.append((where, str(exc)))
    return problems


def manifest_objects(scenario: Scenario, base_dir: Path | None) -> list[dict]:
    """The objects the scenario's manifests declare, in order (already validated by load)."""
    out: list[dict] = []
    for item in scenario.manifests:
        if isinstance(item, dict):
            out.append(api.validate(item, "inline object"))
        else:
            path = Path(item) if base_dir is None else base_dir / item
            out += [o for _, objs in api.read_manifests(path) for o in objs]
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

