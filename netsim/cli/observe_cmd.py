"""Commands that look at a running cluster through netsim.observe: probe (one real connection),
check (a scenario's expectations, probed) and graph (a picture of the cluster)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from netsim.cli.common import ClusterOpt, err, open_cluster_store, require_root, whole_cluster_here
from netsim.observe import probe


def _who_denied(c, store, src: str, dst: str, port: int | None, proto: str) -> dict:
    """For a denied probe: one `netsim trace` of the same connection names the component that
    dropped or rejected it, when a rule or the kernel said so."""
    from netsim.observe import trace

    try:
        v = trace.run(c, store, src, dst, port, proto).verdict
    except (probe.ProbeError, trace.TraceError, OSError) as exc:
        return {"traceError": str(exc)}
    if v["result"] in ("DROPPED", "REJECTED", "UNREACHABLE"):
        return {"verdict": v["result"], "droppedAt": v["where"], "droppedBy": v.get("by"), "rule": v.get("reason")}
    return {"verdict": v["result"]}


def probe_cmd(
    src: Annotated[str, typer.Argument(help=f"Where the connection starts: {probe.REFS}.")],
    dst: Annotated[str, typer.Argument(help=f"Where it goes: {probe.REFS}.")],
    port: Annotated[int | None, typer.Option(help="Port (default: the target's first declared port).")] = None,
    proto: Annotated[str, typer.Option(help="tcp, udp, icmp, or http/https (one GET request; the answer "
                                       "is the responder's echo of it).")] = "tcp",
    host: Annotated[str | None, typer.Option(help="http: the Host header (and TLS SNI), e.g. backend.aa.com.")] = None,
    path: Annotated[str, typer.Option(help="http: the request path, with any query.")] = "/",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 2.0,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json.")] = "text",
    cluster: ClusterOpt = None,
) -> None:
    """Make one real connection and report who answered and what source address it saw."""
    from netsim.observe import httpprobe

    if proto not in ("tcp", "udp", "icmp", "http", "https"):
        raise err("error: --proto: use tcp, udp, icmp, http or https", 2)
    if (host is not None or path != "/") and proto not in ("http", "https"):
        raise err("error: --host and --path are for an HTTP request: add --proto http (or https)", 2)
    if not path.startswith("/"):
        raise err(f"error: --path {path!r}: start it with '/'", 2)
    require_root("probe")
    c, store = open_cluster_store(cluster)
    try:
        if proto in ("http", "https"):
            result = httpprobe.http_probe(c, store, src, dst, port, host, path, proto, timeout)
        else:
            result = probe.probe(c, store, src, dst, port, proto, timeout)
        if result["result"] != "allow" and proto not in ("http", "https"):
            result.update(_who_denied(c, store, src, dst, port, proto))
    except probe.ProbeError as exc:
        raise err(f"error: {exc}", 2) from None
    if output == "json":
        typer.echo(json.dumps(result))
    else:
        extra = f" (responder {result['responder']}, saw client {result['clientIP']})" if result["responder"] else ""
        if result.get("answer"):
            a = result["answer"]
            extra += f"; it received {a.get('method')} {a.get('path')} Host: {a.get('host')}"
        latency = f" in {result['latencyMs']} ms" if result["latencyMs"] is not None else ""
        if result.get("droppedBy"):
            extra += f"; {result['verdict'].lower()} at {result['droppedAt']} by {result['droppedBy']}"
        typer.echo(f"{src} -> {dst} [{result['target']}/{proto}]: {result['result']} ({result['reason']}){latency}"
                   f"{extra}")
    raise typer.Exit(0 if result["result"] == "allow" else 1)


def check_cmd(
    scenario: Annotated[Path | None, typer.Argument(help="Scenario whose `expect:` to check (default: the one "
                                                   "the cluster was brought up from).")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json.")] = "text",
    timeout: Annotated[float, typer.Option(help="Seconds before a connection counts as denied.")] = 1.0,
    cluster: ClusterOpt = None,
) -> None:
    """Probe the scenario's connectivity expectations (with none: every pod to every pod and
    Service) and print expected / observed / comparison tables; exit 1 on any mismatch."""
    from netsim.model.scenario import ScenarioError, load_scenario
    from netsim.observe import check

    require_root("check")
    c, store = open_cluster_store(cluster)
    try:
        path = scenario or (Path(c.source) if c.source and Path(c.source).exists() else None)
        expects = []
        if path is not None:
            try:
                expects = check.from_scenario(load_scenario(path))
            except ScenarioError as exc:
                raise err(f"error: {exc}", 2) from None
        if not expects:
            expects = check.everything(store)
        skipped: list = []
        outcomes = check.run(c, store, expects, timeout, skipped)
    finally:
        store.close()
    if output == "json":
        http = ("host", "path", "scheme", "status")
        typer.echo(json.dumps([{"from": o.expect.src, "to": o.expect.dst, "port": o.expect.port,
                                "protocol": o.expect.protocol, "expect": "allow" if o.expect.allow else "deny",
                                "observed": "allow" if o.allowed else "deny", "ok": o.ok, "detail": o.detail,
                                **{k: getattr(o.expect, k) for k in http if getattr(o.expect, k) is not None},
                                **({"answeredBy": o.expect.answered_by} if o.expect.answered_by else {})}
                               for o in outcomes]))
    else:
        for line in check.report(outcomes):
            typer.echo(line)
        wrong = [o for o in outcomes if not o.ok]
        for o in wrong:
            typer.echo(f"MISMATCH {o.expect.src} -> {o.expect.column} "
                       f"{f'{o.expect.port}/' if o.expect.port else ''}{o.expect.kind}: "
                       f"expected {'allow' if o.expect.allow else 'deny'}, got {o.detail}")
        typer.echo(f"{len(outcomes) - len(wrong)}/{len(outcomes)} as expected")
        if skipped:
            typer.echo(f"{len(skipped)} pairs start from pods on other machines: run `netsim check` there")
    raise typer.Exit(0 if all(o.ok for o in outcomes) else 1)


def graph_cmd(
    output: Annotated[str | None, typer.Option("--output", "-o", help="FILE.svg or FILE.png (rendered by "
                                               "Graphviz's dot) or FILE.dot; default: DOT on stdout.")] = None,
    trace: Annotated[Path | None, typer.Option(help="Draw the path of a `netsim trace ... -o json` file over "
                                               "the picture.")] = None,
    cluster: ClusterOpt = None,
) -> None:
    """Draw the cluster with Graphviz: the underlay (its segments and router), nodes with their
    tunnels (flannel.1, vxlan.calico, tunl0) and BGP sessions, external hosts, pods by namespace
    and Services with edges to their endpoints.

    canal and flannel: pods on each node's cni0 bridge, VXLAN tunnels from flannel.1's fdb.
    calico: no bridge (a pod's edge to its node names its cali veth), each node's IPAM blocks and
    BIRD's routes, vxlan.calico or tunl0 tunnels, and BGP sessions read from each node's BIRD
    (`netsim bgp status`) with each end's state."""
    from netsim.observe import graph

    try:
        graph.output_format(output)
        doc = graph.load_trace(trace) if trace is not None else None
    except graph.GraphError as exc:
        raise err(f"error: {exc}", exc.code) from None
    require_root("graph")
    c, store = open_cluster_store(cluster)
    try:
        whole_cluster_here(c, "graph")
        topo = graph.gather(c, store)
    finally:
        store.close()
    try:
        dot = graph.render(topo, doc)
        if output is None:
            typer.echo(dot, nl=False)
        else:
            graph.write(dot, output)
            typer.echo(f"wrote {output}", err=True)
    except graph.GraphError as exc:
        raise err(f"error: {exc}", exc.code) from None
