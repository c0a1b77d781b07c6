"""`netsim trace FROM TO`: one packet followed through the cluster (netsim.observe.trace)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from netsim.cli.common import ClusterOpt, err, open_cluster_store, parse_headers, require_root, whole_cluster_here
from netsim.observe import l7trace, probe, trace


def trace_cmd(
    src: Annotated[str, typer.Argument(help=f"Where the packet starts: {probe.REFS}.")],
    dst: Annotated[str, typer.Argument(help=f"Where it goes: {probe.REFS}.")],
    port: Annotated[int | None, typer.Option(help="Port (default: the target's first declared port).")] = None,
    proto: Annotated[str, typer.Option(help="tcp, udp or icmp.")] = "tcp",
    output: Annotated[str, typer.Option("--output", "-o", help="text or json.")] = "text",
    pcap: Annotated[str | None, typer.Option(help="Write every capture, merged, to this pcapng file.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to follow the packet at most.")] = 1.5,
    host: Annotated[str | None, typer.Option(
        help="Through an ingress controller or Gateway: the request's Host (default: the address sent to).")] = None,
    path: Annotated[str, typer.Option(help="Through an ingress controller or Gateway: the request path.")] = "/",
    header: Annotated[list[str] | None, typer.Option(
        "--header", "-H", help="Through an ingress controller or Gateway: a request header NAME:VALUE.")] = None,
    cluster: ClusterOpt = None,
) -> None:
    """Send one packet and show every hop, rewrite, encapsulation and rule it met, and the reply.
    Exit code 0 when it was delivered, 1 otherwise.

    When it is delivered to an ingress controller or a Gateway's proxy, show what the proxy
    decides for the request (--host, --path, -H), send that request for real, and follow the
    proxy's new connection to the backend that answered; delivered then means delivered there."""
    if proto not in ("tcp", "udp", "icmp"):
        raise err("error: --proto: use tcp, udp or icmp", 2)
    if output not in ("text", "json"):
        raise err("error: --output: use text or json", 2)
    if not path.startswith("/"):
        raise err(f"error: --path {path!r}: a path starts with /", 2)
    headers = parse_headers(header or [])
    require_root("trace")
    c, store = open_cluster_store(cluster)
    try:
        whole_cluster_here(c, "trace")
        result = trace.run(c, store, src, dst, port, proto, timeout)
        leg = l7trace.follow(c, store, result, host, path, headers, timeout)
    except (probe.ProbeError, trace.TraceError) as exc:
        raise err(f"error: {exc}", 2) from None
    finally:
        store.close()
    if pcap:
        trace.write_pcap(result, pcap)
    if output == "json":
        doc = result.as_dict()
        if leg is not None:
            doc["proxy"] = leg.as_dict()
        typer.echo(json.dumps(doc, indent=2))
    else:
        for line in trace.render_text(result) + (l7trace.render_text(leg) if leg is not None else []):
            typer.echo(line)
    delivered = result.verdict["result"] == "DELIVERED" and (leg is None or leg.delivered)
    raise typer.Exit(0 if delivered else 1)
