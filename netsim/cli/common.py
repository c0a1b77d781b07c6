"""Options and helpers the command modules share.  No command lives here, and this module
imports only typer at the top: every command module imports it, `netsim --help` and
`netsim cni ...` included, so what resolves and opens a cluster is imported where it is called."""

from __future__ import annotations

import os
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from netsim import fabric
    from netsim.api.store import Store

ClusterOpt = Annotated[
    str | None,
    typer.Option("--cluster", "-c", envvar="NETSIM_CLUSTER",
                 help="Cluster to act on (default: $NETSIM_CLUSTER, else the only cluster that is up)."),
]


class Output(StrEnum):
    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"


def err(msg: str, code: int = 1) -> typer.Exit:
    typer.echo(msg, err=True)
    return typer.Exit(code)


def parse_headers(values: list[str]) -> dict[str, str]:
    """``-H NAME:VALUE`` options as a header map (exit code 2 naming the bad one)."""
    out = {}
    for v in values:
        k, colon, val = v.partition(":")
        if not colon or not k.strip():
            raise err(f"error: -H {v!r}: give a header as NAME:VALUE (e.g. -H 'X-Canary: always')", 2)
        out[k.strip()] = val.strip()
    return out


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise err(f"netsim {action} needs root: it creates and inspects network namespaces. "
                  f"Run it with sudo (sudo netsim {action} ...).")


def resolve_cluster(cluster: str | None) -> str:
    if cluster:
        return cluster
    from netsim.model import state

    known = state.known_clusters()
    if len(known) == 1:
        return known[0]
    if not known:
        raise err("no cluster is up; start one with `netsim up`")
    raise err(f"several clusters are up ({', '.join(known)}); pick one with --cluster/-c or NETSIM_CLUSTER")


def running_cluster(cluster: str | None) -> fabric.Cluster:
    from netsim import fabric

    name = resolve_cluster(cluster)
    c = fabric.load_cluster(name)
    if c is None:
        raise err(f"cluster {name!r} has no state (a crashed `up`?); remove it with `netsim down {name}`")
    return c


def open_cluster_store(cluster: str | None) -> tuple[fabric.Cluster, Store]:
    from netsim.api.store import StoreError, open_store

    c = running_cluster(cluster)
    try:
        return c, open_store(c.store_url)
    except StoreError as exc:
        raise err(f"error: cannot open the store of cluster {c.name!r}: {exc}") from None


def whole_cluster_here(c: fabric.Cluster, command: str) -> None:
    """Commands that need every namespace of the cluster on this machine (trace, graph, node
    add/delete, up) refuse on a machine that runs one node of a multi-machine cluster."""
    if c.joined:
        raise err(f"error: netsim {command} needs the whole cluster on one machine; this machine runs node "
                  f"{c.joined.node} of cluster {c.name!r} (netsim join): use probe, check, get, exec here", 2)


def age(since: float) -> str:
    s = int(time.time() - since)
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
