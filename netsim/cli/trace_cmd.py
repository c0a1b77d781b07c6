"""`netsim trace FROM TO`: one packet followed through the cluster (netsim.observe.trace)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from netsim.cli.common import ClusterOpt, err, open_cluster_store, require_root, whole_cluster_here
from netsim.observe import probe, trace


def trace_cmd(
    src: Annotated[str, typer.Argument(help=f"Where the packet starts: {probe.REFS}.")],
    dst: Annotated[str, typer.Argument(help=f"Where it goes: {probe.REFS}.")],
    port: Annotated[int | None, typer.Option(help="Port (default: the target's first declared port).")] = None,
    proto: Annotated[str, typer.Option(help="tcp, udp or icmp.")] = "tcp",
    output: Annotated[str, typer.Option("--output", "-o", help="text or json.")] = "text",
    pcap: Annotated[str | None, typer.Option(help="Write every capture, merged, to this pcapng file.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to follow the packet at most.")] = 1.5,
    cluster: ClusterOpt = None,
) -> None:
    """Send one packet and show every hop, rewrite, encapsulation and rule it met, and the reply.
    Exit code 0 when it was delivered, 1 otherwise."""
    if proto not in ("tcp", "udp", "icmp"):
        raise err("error: --proto: use tcp, udp or icmp", 2)
    if output not in ("text", "json"):
        raise err("error: --output: use text or json", 2)
    require_root("trace")
    c, store = open_cluster_store(cluster)
    try:
        whole_cluster_here(c, "trace")
        result = trace.run(c, store, src, dst, port, proto, timeout)
    except (probe.ProbeError, trace.TraceError) as exc:
        raise err(f"error: {exc}", 2) from None
    finally:
        store.close()
    if pcap:
        trace.write_pcap(result, pcap)
    if output == "json":
        typer.echo(json.dumps(result.as_dict(), indent=2))
    else:
        for line in trace.render_text(result):
            typer.echo(line)
    raise typer.Exit(0 if result.verdict["result"] == "DELIVERED" else 1)
