"""`netsim bgp status [NODE]`: what `calicoctl node status` prints on a Calico node, for each node
of a calico cluster: the BGP sessions its BIRD holds, read from the BIRD's control socket
(`show protocols`), as calicoctl reads /var/run/calico/bird.ctl."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer

from netsim.cli.common import ClusterOpt, err, open_cluster_store, require_root

HELP = "BGP in calico mode: each node's BIRD sessions, as calicoctl node status shows them."
bgp_app = typer.Typer(help=HELP, no_args_is_help=True)

COLUMNS = ("Peer address", "Peer type", "State", "Since", "Info")


class StatusOutput(StrEnum):
    table = "table"
    json = "json"


def boxed_table(headings: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """The table calicoctl prints (go-pretty's default style: boxed, headings upper-case and centred)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headings)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def centred(text: str, width: int) -> str:
        left = (width - len(text)) // 2
        return " " * left + text + " " * (width - len(text) - left)

    def line(cells, center=False) -> str:
        return "| " + " | ".join(centred(c.upper(), w) if center else c.ljust(w)
                                 for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([rule, line(headings, center=True), rule, *(line(r) for r in rows), rule])


@bgp_app.command("status")
def status(
    node: Annotated[str | None, typer.Argument(help="Node name (default: every node of the cluster).")] = None,
    output: Annotated[StatusOutput, typer.Option("--output", "-o", help="table: calicoctl's; json: one object "
                                                 "per node with its peers.")] = StatusOutput.table,
    cluster: ClusterOpt = None,
) -> None:
    """Show each node's BGP peers as `calicoctl node status` does: peer address, peer type (node-to-node mesh,
    global, node specific), state (up, start), since and info (Established, Connect, Active, ...).

    Read from the node's BIRD control socket, STATE_DIR/bird/NODE.ctl (STATE_DIR: /run/netsim/CLUSTER). BIRD's
    own view: netsim exec node/NODE -- birdc -s /run/netsim/CLUSTER/bird/NODE.ctl show protocols all (or show
    route, show status); its configuration is NODE.cfg and its log NODE.log beside the socket."""
    require_root("bgp status")
    from netsim.api.registry import read_config
    from netsim.fabric import daemon
    from netsim.node.calico import bird

    c, store = open_cluster_store(cluster)
    try:
        cni = read_config(store).cni
    finally:
        store.close()
    if cni != "calico":
        raise err(f"error: cluster {c.name!r} runs cni {cni}: no BGP there (flannel routes pods over its VXLAN "
                  "overlay); BIRD runs with networking.cni: calico", 1)
    nodes = [m for m in c.members.values() if m.kind == "node"]
    if node is not None:
        nodes = [m for m in nodes if m.name == node]
        if not nodes:
            choices = ", ".join(m.name for m in c.members.values() if m.kind == "node")
            raise err(f"error: no node {node!r} in cluster {c.name!r}; choose one of: {choices}", 1)
    if c.joined:  # a multi-machine cluster: only this machine's node has its BIRD here
        here = [m for m in nodes if m.name == c.joined.node]
        if not here:
            raise err(f"error: node {node} runs on another machine: run netsim bgp status there", 1)
        nodes = here
    running = bool(daemon.agent_pids(c.name))
    report = []
    for m in nodes:
        entry = {"node": m.name, "address": m.ip, "calicoRunning": running, "birdRunning": False, "peers": []}
        try:
            entry["peers"] = bird.protocols(bird.bird_dir(c.name) / f"{m.name}.ctl")
            entry["birdRunning"] = True
        except bird.BirdError as exc:
            entry["error"] = str(exc)
        report.append(entry)
    if output is StatusOutput.json:
        typer.echo(json.dumps(report, indent=2))
        return
    for i, entry in enumerate(report):
        if len(report) > 1:
            typer.echo(("\n" if i else "") + f"# node/{entry['node']} ({entry['address']})")
        if not running:
            typer.echo("Calico process is not running.")
            continue
        typer.echo("Calico process is running.\n")
        if not entry["birdRunning"]:
            typer.echo("The BGP backend process (BIRD) is not running.")
            continue
        typer.echo("IPv4 BGP status")
        if not entry["peers"]:
            typer.echo("No IPv4 peers found.")
            continue
        rows = [(p["peerAddress"], p["peerType"], p["state"], p["since"], p["info"]) for p in entry["peers"]]
        typer.echo(boxed_table(COLUMNS, rows))
    if not running:
        raise typer.Exit(1)
