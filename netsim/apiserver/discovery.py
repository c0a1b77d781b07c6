"""API discovery: /version, /api, /apis, /api/v1 and /apis/GROUP/VERSION (APIResourceList), and
the aggregated discovery documents (apidiscovery.k8s.io/v2 APIGroupDiscoveryList) kubectl 1.32
asks for first; all computed from the kinds netsim.model.k8s knows, custom resources included.
May import: the standard library and netsim.model, netsim.apiserver.resources."""

from __future__ import annotations

import platform
import re

from netsim.apiserver.resources import SCALABLE, STATUS_KINDS
from netsim.model import k8s

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
KUBE_VERSION = "v1.32.0"  # the API level netsim serves (what kubectl's version skew check reads)


def version() -> dict:
    return {"major": "1", "minor": "32", "gitVersion": f"{KUBE_VERSION}+netsim", "gitCommit": "netsim",
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "python"
            + platform.python_version(), "compiler": "cpython", "platform": f"linux/{platform.machine()}"}


def _groups() -> dict[str, list[k8s.Kind]]:
    """Group name -> its kinds, core ("") first and then by name; a group's kinds in one version."""
    out: dict[str, list[k8s.Kind]] = {}
    for k in k8s.ALL.values():
        out.setdefault(k.group, []).append(k)
    return dict(sorted(out.items(), key=lambda g: (g[0] != "", g[0])))


def _rank(v: str) -> tuple[int, int, int]:
    """Stable before beta before alpha, then the higher number: v2 > v1 > v1beta2 > v1alpha1."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", v)
    if not m:
        return (-1, 0, 0)
    return ({"beta": 1, "alpha": 0}.get(m.group(2) or "", 2), int(m.group(1)), int(m.group(3) or 0))


def _versions(kinds: list[k8s.Kind]) -> list[str]:
    """The group's versions, preferred (highest) first, as the API server orders them."""
    return sorted({k.version for k in kinds}, key=_rank, reverse=True)


def _subresources(k: k8s.Kind) -> list[tuple[str, str, str, str, list[str]]]:
    """(name, group, version, kind, verbs) of the kind's subresources."""
    out = []
    custom = not k8s.builtin({"apiVersion": k.api_version, "kind": k.kind})
    if k.kind in STATUS_KINDS or custom:
        out.append(("status", k.group, k.version, k.kind, ["get", "patch", "update"]))
    if k.kind in SCALABLE and k.acted:
        out.append(("scale", "autoscaling", "v1", "Scale", ["get", "patch", "update"]))
    if k.kind == "ServiceAccount" and k.group == "":
        out.append(("token", "authentication.k8s.io", "v1", "TokenRequest", ["create"]))
    if k.kind == "Pod" and k.acted:
        out += [("exec", "", "v1", "PodExecOptions", ["create", "get"]),
                ("attach", "", "v1", "PodAttachOptions", ["create", "get"]),
                ("portforward", "", "v1", "PodPortForwardOptions", ["create", "get"]),
                ("log", "", "v1", "Pod", ["get"])]
    return out


def resource_list(group: str, version: str) -> dict | None:
    api_version = f"{group}/{version}" if group else version
    kinds = [k for k in k8s.ALL.values() if k.api_version == api_version]
    if not kinds:
        return None
    resources = []
    for k in kinds:
        entry = {"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced, "kind": k.kind,
                 "verbs": VERBS}
        if k.aliases:
            entry["shortNames"] = [a for a in k.aliases if a != k.singular]
        if k.categories:
            entry["categories"] = list(k.categories)
        resources.append(entry)
        for name, g, v, kind, verbs in _subresources(k):
            sub = {"name": f"{k.plural}/{name}", "singularName": "", "namespaced": k.namespaced, "kind": kind,
                   "verbs": verbs}
            if (g, v) != (k.group, k.version):
                sub |= {"group": g, "version": v}
            resources.append(sub)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version, "resources": resources}


def api_versions() -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}


def api_group_list() -> dict:
    groups = []
    for name, kinds in _groups().items():
        if not name:
            continue
        versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in _versions(kinds)]
        groups.append({"name": name, "versions": versions, "preferredVersion": versions[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(name: str) -> dict | None:
    kinds = _groups().get(name)
    if not name or not kinds:
        return None
    versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in _versions(kinds)]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": versions,
            "preferredVersion": versions[0]}


def _aggregated_group(name: str, kinds: list[k8s.Kind]) -> dict:
    versions = []
    for v in _versions(kinds):
        resources = []
        for k in sorted((k for k in kinds if k.version == v), key=lambda k: k.plural):
            r = {"resource": k.plural, "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
                 "scope": "Namespaced" if k.namespaced else "Cluster", "singularResource": k.singular,
                 "verbs": VERBS}
            short = [a for a in k.aliases if a != k.singular]
            if short:
                r["shortNames"] = short
            if k.categories:
                r["categories"] = list(k.categories)
            subs = [{"subresource": s, "responseKind": {"group": g, "version": ver, "kind": kind}, "verbs": verbs}
                    for s, g, ver, kind, verbs in _subresources(k)]
            if subs:
                r["subresources"] = subs
            resources.append(r)
        versions.append({"version": v, "resources": resources, "freshness": "Current"})
    return {"metadata": {"name": name, "creationTimestamp": None}, "versions": versions}


def aggregated(core: bool) -> dict:
    """/api (core only) or /apis (every other group) as an APIGroupDiscoveryList."""
    items = [_aggregated_group(name, kinds) for name, kinds in _groups().items() if (name == "") == core]
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
            "items": items}
