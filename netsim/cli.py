"""The `netsim` command line, shaped like kind and kubectl."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import yaml

from netsim import fabric, kernel, names, state
from netsim.scenario import ScenarioError, load_scenario

DEFAULT_SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "basic.yaml"

app = typer.Typer(
    help="netsim: a Kubernetes dataplane emulator built from real namespaces, links and rules.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

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


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise err(f"netsim {action} needs root: it creates and inspects network namespaces. "
                  f"Run it with sudo (sudo netsim {action} ...).")


def resolve_cluster(cluster: str | None) -> str:
    if cluster:
        return cluster
    known = state.known_clusters()
    if len(known) == 1:
        return known[0]
    if not known:
        raise err("no cluster is up; start one with `netsim up`")
    raise err(f"several clusters are up ({', '.join(known)}); pick one with --cluster/-c or NETSIM_CLUSTER")


def _running_cluster(cluster: str | None) -> fabric.Cluster:
    name = resolve_cluster(cluster)
    c = fabric.load_cluster(name)
    if c is None:
        raise err(f"cluster {name!r} has no state (a crashed `up`?); remove it with `netsim down {name}`")
    return c


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _unsupported(scenario) -> list[str]:
    """Scenario fields this version accepts and records but does not act on yet."""
    out = []
    if scenario.manifests:
        out.append(f"manifests ({len(scenario.manifests)}): validated, not applied yet "
                   "(needs the control-plane store)")
    if scenario.expect:
        out.append(f"expect ({len(scenario.expect)}): recorded, `netsim check` is not available yet")
    net = scenario.networking
    out.append(f"pod network {net.podSubnet} ({net.backend}), service network {net.serviceSubnet} "
               f"(kube-proxy {net.kubeProxyMode}): recorded, not built yet")
    return out


@app.command()
def up(
    scenario: Annotated[Path, typer.Argument(help="Scenario file.")] = DEFAULT_SCENARIO,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Cluster name (overrides the file's).")] = None,
) -> None:
    """Build the cluster a scenario describes (idempotent: converges a cluster that is up)."""
    try:
        scn = load_scenario(scenario)
    except ScenarioError as exc:
        raise err(f"error: {exc}\nnothing was created.", 2) from None
    if name is not None and (not names.DNS_LABEL.match(name) or len(name) > names.CLUSTER_NAME_MAX):
        raise err(f"error: --name {name!r}: use a DNS label (lowercase letters, digits and '-') "
                  f"of at most {names.CLUSTER_NAME_MAX} characters\nnothing was created.", 2)
    require_root("up")
    cluster = fabric.Cluster.from_scenario(scn, name=name, source=str(scenario.resolve()))
    typer.echo(f"Creating cluster {cluster.name!r} from {scenario} ...", err=True)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    start = time.perf_counter()
    try:
        cluster.up(progress=lambda msg: typer.echo(f" ✓ {msg}", err=True))
    except KeyboardInterrupt:
        raise err("interrupted: everything this run created was removed", 130) from None
    except Exception as exc:
        raise err(f"error: {exc}\neverything this run created was removed", 1) from None
    for note in _unsupported(scn):
        typer.echo(f" · {note}", err=True)
    typer.echo(f"Cluster {cluster.name!r} is up in {time.perf_counter() - start:.2f}s.", err=True)
    _print_nodes(cluster, Output.table)
    typer.echo(f"\nTry: netsim exec node/{cluster.nodes()[0].name} -- ip addr", err=True)


@app.command()
def down(
    name: Annotated[str | None, typer.Argument(help="Cluster to remove.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Remove every netsim cluster on this host.")] = False,
    cluster: ClusterOpt = None,
) -> None:
    """Remove a cluster: its namespaces, links, rules, processes and state."""
    require_root("down")
    targets = state.known_clusters() if all_ else [name or resolve_cluster(cluster)]
    if not targets:
        typer.echo("no netsim clusters on this host", err=True)
    for target in targets:
        with state.state_lock():
            removed = fabric.teardown(target)
        if removed:
            typer.echo(f"Deleted cluster {target!r} ({len(removed)} namespaces).", err=True)
        else:
            typer.echo(f"cluster {target!r} was not up; nothing to delete", err=True)


@app.command()
def status() -> None:
    """List the clusters on this host."""
    require_root("status")
    rows = [("NAME", "PHASE", "NODES", "HOSTS", "UNDERLAY", "AGE")]
    for name in state.known_clusters():
        st = state.read_state(name)
        if st is None:
            rows.append((name, "broken (no state; run netsim down)", "-", "-", "-", "-"))
            continue
        members = st["members"]
        rows.append((name, st["phase"], str(sum(m["kind"] == "node" for m in members)),
                     str(sum(m["kind"] == "host" for m in members)), st["underlay"]["subnet"],
                     _age(st["updated"])))
    if len(rows) == 1:
        typer.echo("no netsim clusters on this host", err=True)
        return
    _table(rows)


def _age(since: float) -> str:
    s = int(time.time() - since)
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


NODE_KINDS = {"nodes", "node", "no"}


@app.command()
def get(
    kind: Annotated[str, typer.Argument(help="What to list: nodes.")],
    name: Annotated[str | None, typer.Argument(help="One object by name.")] = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="table, wide, json or yaml.")] = Output.table,
    cluster: ClusterOpt = None,
) -> None:
    """Show cluster objects, like kubectl get."""
    if kind not in NODE_KINDS:
        raise err(f"error: unknown kind {kind!r}; this version knows: nodes", 2)
    require_root("get")
    c = _running_cluster(cluster)
    if name is not None and name not in {n.name for n in c.nodes()}:
        raise err(f'Error: nodes "{name}" not found in cluster {c.name!r}', 1)
    _print_nodes(c, output, only=name)


def node_object(c: fabric.Cluster, m: fabric.Member, ready: bool) -> dict:
    labels = {"kubernetes.io/hostname": m.name, "kubernetes.io/os": "linux", **m.labels}
    if m.role == "control-plane":
        labels["node-role.kubernetes.io/control-plane"] = ""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": m.name, "labels": labels,
                     "annotations": {"netsim.io/netns": m.netns, "netsim.io/underlay-port": m.uplink}},
        "status": {
            "addresses": [{"type": "InternalIP", "address": m.ip}, {"type": "Hostname", "address": m.name}],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def _print_nodes(c: fabric.Cluster, output: Output, only: str | None = None) -> None:
    nodes = [m for m in c.nodes() if only is None or m.name == only]
    ready = {m.name: kernel.netns_exists(m.netns) for m in nodes}
    if output in (Output.json, Output.yaml):
        objs = [node_object(c, m, ready[m.name]) for m in nodes]
        doc = objs[0] if only else {"apiVersion": "v1", "kind": "List", "items": objs}
        typer.echo(json.dumps(doc, indent=2) if output is Output.json else yaml.safe_dump(doc, sort_keys=False))
        return
    header = ("NAME", "STATUS", "ROLES", "INTERNAL-IP")
    wide = output is Output.wide
    rows = [header + (("NETNS", "UNDERLAY-PORT") if wide else ())]
    for m in nodes:
        row = (m.name, "Ready" if ready[m.name] else "NotReady", m.role or "<none>", m.ip)
        rows.append(row + ((m.netns, m.uplink) if wide else ()))
    _table(rows)


def _target_netns(c: fabric.Cluster, target: str) -> str:
    kind, _, name = target.partition("/")
    if not name:
        kind, name = "node", kind
    kinds = {"node": "node", "nodes": "node", "no": "node", "host": "host", "hosts": "host"}
    if kind not in kinds:
        raise err(f"error: target {target!r}: use node/NAME or host/NAME", 2)
    m = c.members.get(name)
    if m is None or m.kind != kinds[kind]:
        choices = ", ".join(f"{x.kind}/{x.name}" for x in c.members.values())
        raise err(f"error: no {kinds[kind]} {name!r} in cluster {c.name!r}; choose one of: {choices}", 1)
    if not kernel.netns_exists(m.netns):
        raise err(f"error: {target} has no namespace (run `netsim up` to repair the cluster)", 1)
    return m.netns


@app.command(name="exec")
def exec_(
    target: Annotated[str, typer.Argument(help="node/NAME or host/NAME.")],
    command: Annotated[list[str], typer.Argument(help="Command and its arguments, after --.")],
    cluster: ClusterOpt = None,
) -> None:
    """Run a command inside a node's or external host's network namespace."""
    if not command:
        raise err("error: give the command after --, e.g. netsim exec node/worker1 -- ip route", 2)
    require_root("exec")
    netns = _target_netns(_running_cluster(cluster), target)
    sys.stdout.flush()
    # `ip netns exec` also bind-mounts /etc/netns/<name>/* and remounts /sys for the namespace,
    # which later issues rely on (resolv.conf); exec replaces this process, so no fork.
    os.execvp("ip", ["ip", "netns", "exec", netns, *command])


def main() -> None:
    app()


if __name__ == "__main__":
    main()
