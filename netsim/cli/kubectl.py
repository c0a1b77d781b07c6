"""The kubectl-shaped commands: apply, delete, get, describe, label, annotate, and the agent itself.
They parse options and print; the work is netsim.cli.verbs, on the API server's own functions."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml

from netsim import controllers
from netsim.api import informer
from netsim.apiserver import tables
from netsim.cli import describe_ingress, verbs
from netsim.cli.common import (
    ClusterOpt,
    Output,
    err,
    open_cluster_store,
    print_table,
    require_root,
    resolve_cluster,
    running_cluster,
)
from netsim.model import k8s

# A string, as kubectl's: `--wait=false` is what users type.
WaitOpt = Annotated[str, typer.Option("--wait", help="true: return once controllers and agents have acted on "
                                      "it; false: return at once.")]
NamespaceOpt = Annotated[str | None, typer.Option("--namespace", "-n", help="Namespace (default: default).")]


def wait_for_agents(store, timeout: float, at_least: int = 0) -> None:
    ok, behind = informer.wait_settled(store, timeout, at_least=at_least)
    if not ok:
        raise err(f"error: not settled after {timeout:g}s: {', '.join(behind)} behind or not running "
                  "(see the agent log in the cluster's state directory; `netsim up` restarts it)")


def apply(
    filename: Annotated[list[Path], typer.Option("--filename", "-f", help="File, directory or - for stdin.")],
    namespace: NamespaceOpt = None,
    wait: WaitOpt = "true",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the agents.")] = 60.0,
    cluster: ClusterOpt = None,
) -> None:
    """Create or update objects from manifests (multi-document YAML, JSON, directories)."""
    want_wait = _flag(wait, "--wait")
    require_root("apply")
    _, store = open_cluster_store(cluster)
    try:
        docs = verbs.read(filename, store)
        results = verbs.apply(store, docs, namespace)
    except verbs.VerbError as exc:
        raise err(f"{exc.message}\nnothing was applied.", exc.code) from None
    for warning in verbs.apply_warnings(store, docs, results):
        typer.echo(f"Warning: {warning}", err=True)  # as kubectl prints the API server's warnings
    for ref, action in results:
        typer.echo(f"{ref} {action}")
    if want_wait:
        wait_for_agents(store, timeout)


def _flag(value: str, name: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise err(f"error: {name}={value}: use true or false", 2)


def delete(
    kind: Annotated[str | None, typer.Argument(help="Kind, e.g. pod, deployment, svc.")] = None,
    names: Annotated[list[str] | None, typer.Argument(help="Names.")] = None,
    filename: Annotated[list[Path] | None,
                        typer.Option("--filename", "-f", help="Delete what a file declares.")] = None,
    namespace: NamespaceOpt = None,
    force: Annotated[bool, typer.Option(help="Remove pods at once, without waiting for their node.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Every object of KIND in the namespace.")] = False,
    wait: WaitOpt = "true",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the agents.")] = 60.0,
    cluster: ClusterOpt = None,
) -> None:
    """Delete objects by kind and name, or those a manifest declares."""
    if not (filename or (kind and (names or all_))):
        raise err("error: give KIND NAME..., KIND --all or -f FILE", 2)
    if names and all_:
        raise err("error: give names or --all, not both", 2)
    want_wait = _flag(wait, "--wait")
    require_root("delete")
    _, store = open_cluster_store(cluster)
    try:
        if filename:
            # Last document first: a custom resource before its CRD, the objects before their namespace.
            targets = [verbs.target(k8s.kind_of(d.obj), d.obj["metadata"].get("namespace") or namespace,
                                    d.obj["metadata"]["name"]) for d in reversed(verbs.read(filename, store))]
        else:
            k = verbs.kind(kind, store)
            if all_:
                names = [o["metadata"]["name"] for o in verbs.get(store, verbs.target(k, namespace))]
            targets = [verbs.target(k, namespace, n) for n in names]
    except verbs.VerbError as exc:
        raise err(exc.message, exc.code) from None
    failed = False
    last = 0
    for t in targets:
        try:
            ref, last = verbs.delete(store, t, force)
            typer.echo(f"{ref} deleted")
        except verbs.VerbError as exc:
            typer.echo(exc.message, err=True)
            failed = True
    if want_wait:
        wait_for_agents(store, timeout, last)
    if failed:
        raise typer.Exit(1)


# -- get ---------------------------------------------------------------------------------------

def _ports(svc: dict) -> str:
    out = []
    for p in svc["spec"].get("ports", []):
        out.append(f"{p['port']}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _pod_status(pod: dict) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    st = pod.get("status", {})
    if st.get("phase") == "Succeeded":
        return "Completed"
    return st.get("phase", "Pending")


def _endpoints_by_service(store, namespace: str | None) -> dict[tuple[str, str], str]:
    """"ip:port, ..." of each Service's ready endpoints, as kubectl get endpoints prints them."""
    out: dict[tuple[str, str], list[str]] = {}
    for s in store.list(k8s.prefix("EndpointSlice", namespace))[0]:
        svc = (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        ports = [p.get("port") for p in s.get("ports") or []] or [None]
        for e in s.get("endpoints") or []:
            if (e.get("conditions") or {}).get("ready") is False:
                continue
            for ip in e.get("addresses") or []:
                out.setdefault((s["metadata"]["namespace"], svc), []).extend(
                    f"{ip}:{p}" if p else ip for p in ports)
    return {k: ",".join(v[:3]) + (f" + {len(v) - 3} more..." if len(v) > 3 else "") for k, v in out.items()}


def _server_table(k: k8s.Kind, objs: list[dict], wide: bool) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Header and rows of the API server's own Table (the columns kubectl prints), -o wide
    showing its priority-1 columns too."""
    extra = None if k.printer_columns is None else {"additionalPrinterColumns": list(k.printer_columns)}
    table = tables.table(k.kind, objs, time.time(), extra)
    show = [i for i, c in enumerate(table["columnDefinitions"]) if wide or c.get("priority", 0) == 0]
    header = tuple(table["columnDefinitions"][i]["name"].upper() for i in show)
    return header, [tuple(str(r["cells"][i]) for i in show) for r in table["rows"]]


def _netsim_columns(kind: str, objs: list[dict], store, namespace: str | None) -> tuple[tuple[str, ...], list]:
    """What netsim's -o wide adds to kubectl's columns: a node's pod CIDR and network
    namespace, a Service's ready endpoints."""
    if kind == "Node":
        return ("POD-CIDR", "NETNS"), [((o.get("spec") or {}).get("podCIDR") or "<none>",
                                        (o["metadata"].get("annotations") or {}).get("netsim.io/netns", ""))
                                       for o in objs]
    if kind == "Service":
        eps = _endpoints_by_service(store, namespace)
        return ("ENDPOINTS",), [(eps.get((o["metadata"]["namespace"], o["metadata"]["name"])) or "<none>",)
                                for o in objs]
    return (), [() for _ in objs]


def get(
    kind: Annotated[str, typer.Argument(help="pods, deployments, services, nodes, endpointslices, ...")],
    name: Annotated[str | None, typer.Argument(help="One object by name.")] = None,
    namespace: NamespaceOpt = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Every namespace.")] = False,
    selector: Annotated[str | None, typer.Option("--selector", "-l", help="Label selector: key=value, key!=value, "
                                                 "key in (a,b), key, !key (comma: and).")] = None,
    field_selector: Annotated[str | None, typer.Option("--field-selector", help="metadata.name=x, "
                                                       "spec.nodeName=y, status.phase=Running ...")] = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="table, wide, json or yaml.")] = Output.table,
    cluster: ClusterOpt = None,
) -> None:
    """Show objects from the control-plane store, like kubectl get."""
    require_root("get")
    _, store = open_cluster_store(cluster)
    try:
        k = verbs.kind(kind, store)
        ns = verbs.target(k, namespace, every_namespace=all_namespaces).namespace
        objs = verbs.get(store, verbs.target(k, namespace, name, all_namespaces), selector, field_selector)
    except verbs.VerbError as exc:
        raise err(exc.message, exc.code) from None
    if output in (Output.json, Output.yaml):
        doc = objs[0] if name else {"apiVersion": "v1", "kind": "List", "items": objs}
        typer.echo(json.dumps(doc, indent=2) if output is Output.json else yaml.safe_dump(doc, sort_keys=False))
        return
    if not objs:
        where = "" if not k.namespaced else " in any namespace" if ns is None else f" in {ns} namespace"
        typer.echo(f"No resources found{where}.", err=True)
        return
    wide = output is Output.wide
    lead = ("NAMESPACE",) if k.namespaced and ns is None else ()
    header, body = _server_table(k, objs, wide)
    if wide:
        more, cells = _netsim_columns(k.kind, objs, store, ns)
        header, body = header + more, [row + extra for row, extra in zip(body, cells, strict=True)]
    rows = [lead + header]
    for o, row in zip(objs, body, strict=True):
        rows.append(((o["metadata"]["namespace"],) if lead else ()) + row)
    print_table(rows)


def describe(
    kind: Annotated[str, typer.Argument(help="Kind.")],
    name: Annotated[str, typer.Argument(help="Name.")],
    namespace: NamespaceOpt = None,
    cluster: ClusterOpt = None,
) -> None:
    """Show one object in detail, with what netsim knows about it (endpoints, pods, node)."""
    require_root("describe")
    _, store = open_cluster_store(cluster)
    try:
        k = verbs.kind(kind, store)
        t = verbs.target(k, namespace, name)
        [o] = verbs.get(store, t)
    except verbs.VerbError as exc:
        raise err(exc.message, exc.code) from None
    ns = t.namespace
    meta, spec, st = o["metadata"], o.get("spec", {}), o.get("status", {})
    lines = [("Name", meta["name"])]
    if ns:
        lines.append(("Namespace", ns))
    lines.append(("Labels", ", ".join(f"{a}={b}" for a, b in meta.get("labels", {}).items()) or "<none>"))
    owner = controllers.controller_of(o)
    if owner:
        lines.append(("Controlled By", f"{owner['kind']}/{owner['name']}"))
    if k.kind == "Pod":
        lines += [("Node", f"{spec.get('nodeName') or '<none>'}/{st.get('hostIP', '')}"),
                  ("Status", _pod_status(o)), ("IP", st.get("podIP", "<none>")),
                  ("Ports", ", ".join(f"{p['containerPort']}/{p.get('protocol', 'TCP')}"
                                      + (f" ({p['name']})" if p.get("name") else "")
                                      for c in spec.get("containers", []) for p in c.get("ports", [])) or "<none>"),
                  ("Ready", "True" if controllers.pod_ready(o) else "False")]
    if k.kind == "Service":
        slices = [s for s in store.list(k8s.prefix("EndpointSlice", ns))[0]
                  if s["metadata"].get("labels", {}).get("kubernetes.io/service-name") == name]
        eps = [f"{e['addresses'][0]}:{p['port']}" for s in slices for e in s.get("endpoints", [])
               if e["conditions"].get("ready") for p in s.get("ports", [])]
        lines += [("Type", spec.get("type", "ClusterIP")), ("IP", spec.get("clusterIP", "<none>")),
                  ("Port(s)", _ports(o)),
                  ("TargetPort(s)", ", ".join(str(p.get("targetPort")) for p in spec.get("ports", []))),
                  ("Selector", ", ".join(f"{a}={b}" for a, b in (spec.get("selector") or {}).items()) or "<none>"),
                  ("Endpoints", ", ".join(eps) or "<none>")]
    blocks: list[str] = []
    if k.kind == "Ingress":
        more, blocks = describe_ingress.describe(store, o)
        lines += more
    width = max(len(a) for a, _ in lines) + 2
    for a, b in lines:
        typer.echo(f"{a + ':':<{width}}{b}")
    for line in blocks:
        typer.echo(line)
    typer.echo("---")
    typer.echo(yaml.safe_dump({"spec": spec, "status": st} if spec or st else o, sort_keys=False).rstrip())


def agent_cmd(
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", envvar="NETSIM_CLUSTER")] = None,
    store: Annotated[str | None, typer.Option(help="Store URL (default: the cluster's).")] = None,
    node: Annotated[list[str] | None, typer.Option(help="Node(s) this agent owns (default: all).")] = None,
    run_controllers: Annotated[bool, typer.Option("--controllers", help="Also run controllers and scheduler.")]
    = False,
) -> None:
    """The node agent (long-running): realises the pods of its nodes; `up` starts it."""
    # Imported here: the agent brings the CNI server, kube-proxy and DNS, which get and apply do not use.
    from netsim.node import agent as agent_mod

    require_root("agent")
    name = resolve_cluster(cluster)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    c = running_cluster(name)
    try:
        agent_mod.main(name, store or c.store_url, node, run_controllers)
    except RuntimeError as exc:
        raise err(f"error: {exc}") from None


def _set_metadata(field: str, kind: str, name: str, pairs: list[str], namespace: str | None, overwrite: bool,
                  cluster: str | None) -> None:
    try:
        changes = verbs.parse_pairs(pairs)
    except verbs.VerbError as exc:
        raise err(exc.message, exc.code) from None
    require_root(field[:-1])
    _, store = open_cluster_store(cluster)
    try:
        k = verbs.kind(kind, store)
        verbs.set_metadata(store, verbs.target(k, namespace, name), field, changes, overwrite)
    except verbs.VerbError as exc:
        raise err(exc.message, exc.code) from None
    typer.echo(f"{k.singular}/{name} {'labeled' if field == 'labels' else 'annotated'}")
    wait_for_agents(store, 60.0)


def label(
    kind: Annotated[str, typer.Argument(help="Kind.")],
    name: Annotated[str, typer.Argument(help="Name.")],
    pairs: Annotated[list[str], typer.Argument(help="key=value to set, key- to remove.")],
    namespace: NamespaceOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Allow changing an existing label.")] = False,
    cluster: ClusterOpt = None,
) -> None:
    """Set or remove labels, like kubectl label."""
    _set_metadata("labels", kind, name, pairs, namespace, overwrite, cluster)


def annotate(
    kind: Annotated[str, typer.Argument(help="Kind.")],
    name: Annotated[str, typer.Argument(help="Name.")],
    pairs: Annotated[list[str], typer.Argument(help="key=value to set, key- to remove.")],
    namespace: NamespaceOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Allow changing an existing annotation.")] = False,
    cluster: ClusterOpt = None,
) -> None:
    """Set or remove annotations, like kubectl annotate (netsim.io/ready=false makes a pod
    fail its readiness, as a failing readiness probe would)."""
    _set_metadata("annotations", kind, name, pairs, namespace, overwrite, cluster)
