"""The kind-shaped commands: up, join, down, status, exec, and node add/delete.

netsim.fabric.control_plane (which imports the node agent) is imported by the commands that
start a control plane, not here: down, status and exec do without it."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from netsim import fabric, kernel
from netsim.cli.common import (
    ClusterOpt,
    Output,
    age,
    err,
    print_table,
    require_root,
    resolve_cluster,
    running_cluster,
    whole_cluster_here,
)
from netsim.model import cnimode, names, state
from netsim.model.scenario import ScenarioError, host_gw_problem, load_scenario, manifest_objects, scenario_warnings
from netsim.node import podexec, podnet

DEFAULT_SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "basic.yaml"


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _not_built_yet(scenario) -> list[str]:
    """Scenario fields this version accepts and records but does not act on yet."""
    out = []
    net = scenario.networking
    if net.kubeProxyMode == "ipvs":
        from proxy.ipvs import effective_mode

        _, why = effective_mode(net.kubeProxyMode)
        if why:
            out.append(f"kube-proxy mode ipvs: {why}; Services use iptables rules (python -m netsim.kernel.guest runs "
                       "a kernel that has it)")
    return out


def _load_for_creation(scenario: Path, name: str | None):
    """The scenario and its manifests' objects, and a valid --name, or exit 2 with nothing made."""
    try:
        scn = load_scenario(scenario)
        objects = manifest_objects(scn, scenario.resolve().parent)
    except ScenarioError as exc:
        raise err(f"error: {exc}\nnothing was created.", 2) from None
    if name is not None and (not names.DNS_LABEL.match(name) or len(name) > names.CLUSTER_NAME_MAX):
        raise err(f"error: --name {name!r}: use a DNS label (lowercase letters, digits and '-') "
                  f"of at most {names.CLUSTER_NAME_MAX} characters\nnothing was created.", 2)
    return scn, objects


def _check_requirements(scenario: Path, scn, cluster: str) -> None:
    """What the scenario's networking needs of this machine (netsim.fabric.requirements), or exit 2."""
    from netsim.fabric import requirements

    missing = requirements.unmet(scn, cluster)
    if missing:
        raise err("".join(f"error: {scenario}: {m}\n" for m in missing) + "nothing was created.", 2)


def _check_kubeconfig() -> None:
    """`up` merges the cluster's entries into the user's kubeconfig at its end: a file it could
    not merge into is refused now, before anything is built."""
    from netsim.apiserver import kubeconfig

    try:
        kubeconfig.check()
    except kubeconfig.KubeconfigError as exc:
        raise err(f"error: {exc}\nnothing was created.", 2) from None


def up(
    scenario: Annotated[Path, typer.Argument(help="Scenario file.")] = DEFAULT_SCENARIO,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Cluster name (overrides the file's).")] = None,
    store: Annotated[str | None, typer.Option(
        help="Control-plane store: etcd://HOST:PORT[/PREFIX] (default: SQLite in the state directory).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the agent and the manifests.")] = 120.0,
) -> None:
    """Build the cluster a scenario describes (idempotent: converges a cluster that is up)."""
    from netsim.fabric import control_plane

    scn, objects = _load_for_creation(scenario, name)
    for warning in scenario_warnings(scn):
        typer.echo(f"warning: {warning}", err=True)
    if store is not None and not store.startswith("etcd://"):
        raise err(f"error: --store {store!r}: use etcd://HOST:PORT[/PREFIX], or leave it out for SQLite"
                  "\nnothing was created.", 2)
    require_root("up")
    _check_kubeconfig()
    _check_requirements(scenario, scn, name or scn.name)
    existing = fabric.load_cluster(name or scn.name)
    if existing is not None:
        whole_cluster_here(existing, "up")
        # A running cluster keeps its store: a new one would be empty, and the agent would
        # tear down every pod the old one holds.
        wanted = fabric.store_url_for(existing.name, store) if store else existing.store_url
        if wanted != existing.store_url:
            raise err(f"error: --store: cluster {existing.name!r} keeps its objects in {existing.store_url}; "
                      f"run `netsim down {existing.name}` first to move it to another store", 2)
        store = existing.store_url
    cluster = fabric.Cluster.from_scenario(scn, name=name, source=str(scenario.resolve()), store=store)
    typer.echo(f"Creating cluster {cluster.name!r} from {scenario} ...", err=True)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    start = time.perf_counter()
    fresh = existing is None
    progress = lambda msg: typer.echo(f" ✓ {msg}", err=True)  # noqa: E731
    try:
        cluster.up(progress=progress)
        control_plane.start(cluster, scn, objects, timeout, progress)
    except KeyboardInterrupt:
        if fresh:
            fabric.teardown(cluster.name)
        raise err("interrupted: everything this run created was removed", 130) from None
    except Exception as exc:
        if fresh:
            fabric.teardown(cluster.name)
        raise err(f"error: {exc}\n" + ("everything this run created was removed" if fresh else
                                        "the cluster is left as it was; fix the cause and run up again"), 1) from None
    cni = cnimode.mode(scn.networking.cni)
    typer.echo(f" · CNI {cni.name}: {cni.summary}", err=True)
    for note in _not_built_yet(scn):
        typer.echo(f" · {note}", err=True)
    typer.echo(f"Cluster {cluster.name!r} is up in {time.perf_counter() - start:.2f}s.", err=True)
    from netsim.cli.kubectl import get
    get("nodes", output=Output.table, cluster=cluster.name)
    typer.echo(f"\nTry: kubectl get pods -o wide (context netsim-{cluster.name})    "
               f"netsim exec node/{cluster.nodes()[0].name} -- ip addr", err=True)


def join(
    scenario: Annotated[Path, typer.Argument(help="The cluster's scenario file (the same on every machine).")],
    store: Annotated[str, typer.Option(help="The cluster's shared store: etcd://HOST:PORT[/PREFIX].")],
    node: Annotated[str, typer.Option(help="The scenario's node that this machine runs.")],
    uplink: Annotated[str, typer.Option(
        help="This machine's NIC on the cluster's network; it becomes the node's eth0 until `down`.")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Cluster name (overrides the file's).")] = None,
    controllers: Annotated[bool | None, typer.Option(
        "--controllers/--no-controllers",
        help="Run the controllers and scheduler here (default: on the control-plane node's machine).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the agent and the manifests.")] = 120.0,
) -> None:
    """Run one node of a cluster whose nodes span several machines (agent, NIC, shared etcd)."""
    from netsim.fabric import control_plane
    from netsim.fabric import join as join_mod

    scn, objects = _load_for_creation(scenario, name)
    cluster_name = name or scn.name
    if not store.startswith("etcd://"):
        raise err(f"error: --store {store!r}: machines share the cluster through an etcd: "
                  "use etcd://HOST:PORT[/PREFIX]\nnothing was created.", 2)
    wanted = next((n for n in scn.nodes if n.name == node), None)
    if wanted is None:
        raise err(f"error: {scenario}: nodes: no node {node!r} (the scenario has "
                  f"{', '.join(n.name for n in scn.nodes)}); pass one of them with --node\nnothing was created.", 2)
    require_root("join")
    _check_requirements(scenario, scn, cluster_name)
    if wanted.role == "control-plane":
        _check_kubeconfig()
    existing = fabric.load_cluster(cluster_name)
    if existing is not None and (existing.joined.node if existing.joined else None) != node:
        what = f"runs node {existing.joined.node}" if existing.joined else "has it up with `netsim up`"
        raise err(f"error: cluster {cluster_name!r}: this machine already {what}; "
                  f"run `netsim down {cluster_name}` first\nnothing was created.", 2)
    subnet = scn.networking.underlaySubnet
    try:
        nic = join_mod.inspect_uplink(uplink) if existing is None else \
            existing.joined.uplink
        ip = join_mod.node_address(nic, subnet, node, str(wanted.ip) if wanted.ip else None)
    except join_mod.JoinError as exc:
        raise err(f"error: {exc}\nnothing was created.", 2) from None
    run_controllers = wanted.role == "control-plane" if controllers is None else controllers
    cluster = fabric.Cluster(cluster_name, str(subnet), nic.mtu, scn, str(scenario.resolve()), store)
    cluster.add_node(node, role=wanted.role, ip=ip, labels=wanted.labels)
    typer.echo(f"Joining {node} to cluster {cluster.name!r} in {cluster.store_url} (uplink {uplink}, {ip}) ...",
               err=True)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    start = time.perf_counter()
    progress = lambda msg: typer.echo(f" ✓ {msg}", err=True)  # noqa: E731
    try:
        cluster.join(node, nic, run_controllers)
        progress(f"{uplink} ({nic.mac}) is node {node}'s eth0 with {ip}")
        control_plane.join_node(cluster, scn, objects, node, run_controllers, timeout, progress)
    except KeyboardInterrupt:
        fabric.teardown(cluster.name)
        raise err(f"interrupted: {node} left the cluster and {uplink} is back", 130) from None
    except Exception as exc:
        fabric.teardown(cluster.name)
        raise err(f"error: {exc}\n{node} left the cluster, {uplink} is back and nothing else was kept", 1) from None
    typer.echo(f"{node} joined cluster {cluster.name!r} in {time.perf_counter() - start:.2f}s; "
               f"`netsim down {cluster.name}` takes it out and gives {uplink} back.", err=True)


def down(
    name: Annotated[str | None, typer.Argument(help="Cluster to remove.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Remove every netsim cluster on this host.")] = False,
    cluster: ClusterOpt = None,
) -> None:
    """Remove a cluster: its namespaces, links, rules, processes and state."""
    require_root("down")
    targets = _every_cluster() if all_ else [name or resolve_cluster(cluster)]
    if not targets:
        typer.echo("no netsim clusters on this host", err=True)
    from netsim.apiserver import process
    from netsim.fabric import daemon

    for target in targets:
        running = process.pids(target) + daemon.agent_pids(target)
        with state.state_lock():
            removed = fabric.teardown(target)
        if removed:
            typer.echo(f"Deleted cluster {target!r} ({len(removed)} namespaces).", err=True)
        elif running:
            typer.echo(f"Stopped cluster {target!r}'s {len(running)} processes (its namespaces were gone).", err=True)
        else:
            typer.echo(f"cluster {target!r} was not up; nothing to delete", err=True)
    if all_:
        from netsim.cni import standalone

        # The plugin servers that netsim's CNI launchers start on demand when no cluster is up.
        for pid in standalone.stop_all():
            typer.echo(f"Stopped the standalone CNI plugin server (pid {pid}).", err=True)


def _every_cluster() -> list[str]:
    """Clusters with state or namespaces here, and those whose agent or API server still runs
    (a state directory removed by hand leaves them behind)."""
    from netsim.apiserver import process
    from netsim.fabric import daemon

    return sorted(set(state.known_clusters()) | set(process.clusters()) | set(daemon.agent_clusters()))


def _cni(st: state.ClusterState) -> str:
    """The scenario's networking.cni (a state written before it existed: canal, what it ran)."""
    return ((st.scenario or {}).get("networking") or {}).get("cni") or cnimode.DEFAULT


def status() -> None:
    """List the clusters on this host."""
    require_root("status")
    rows = [("NAME", "PHASE", "CNI", "NODES", "HOSTS", "UNDERLAY", "AGE")]
    for name in state.known_clusters():
        st = state.read_state(name)
        if st is None:
            rows.append((name, "broken (no state; run netsim down)", "-", "-", "-", "-", "-"))
            continue
        rows.append((name, st.phase, _cni(st), str(len(st.nodes())), str(len(st.hosts())),
                     ",".join(seg.subnet for seg in st.underlay.segments),
                     age(st.updated)))
    if len(rows) == 1:
        typer.echo("no netsim clusters on this host", err=True)
        return
    print_table(rows)


def _target_netns(c: fabric.Cluster, target: str) -> str:
    kind, _, name = target.partition("/")
    if not name:
        kind, name = "node", kind
    if kind in ("pod", "pods", "po"):
        ns, _, pod = name.partition("/")
        if not pod:
            ns, pod = "default", ns
        netns = podnet.pod_netns(c.name, ns, pod)
        if not kernel.netns_exists(netns):
            raise err(f"error: pod {ns}/{pod} has no network namespace here (not running, or on another "
                      "machine's agent); see `netsim get pods -o wide`", 1)
        return netns
    kinds = {"node": "node", "nodes": "node", "no": "node", "host": "host", "hosts": "host"}
    if kind not in kinds:
        raise err(f"error: target {target!r}: use node/NAME, host/NAME or pod/NAMESPACE/NAME", 2)
    m = c.members.get(name)
    if m is None or m.kind != kinds[kind]:
        choices = ", ".join(f"{x.kind}/{x.name}" for x in c.members.values())
        raise err(f"error: no {kinds[kind]} {name!r} in cluster {c.name!r}; choose one of: {choices}", 1)
    if not kernel.netns_exists(m.netns):
        raise err(f"error: {target} has no namespace (run `netsim up` to repair the cluster)", 1)
    return m.netns


def exec_(
    target: Annotated[str, typer.Argument(help="node/NAME, host/NAME or pod/NAMESPACE/NAME.")],
    command: Annotated[list[str], typer.Argument(help="Command and its arguments, after --.")],
    cluster: ClusterOpt = None,
) -> None:
    """Run a host command inside a node's, external host's or pod's network namespace."""
    if not command:
        raise err("error: give the command after --, e.g. netsim exec node/worker1 -- ip route", 2)
    require_root("exec")
    netns = _target_netns(running_cluster(cluster), target)
    sys.stdout.flush()
    # podexec.argv: `ip netns exec`, as the API server's pods/exec runs commands (resolv.conf
    # included); exec replaces this process, so no fork.
    args = podexec.argv(netns, command)
    os.execvp(args[0], args)


node_app = typer.Typer(help="Add nodes to a running cluster or take them out (like kind/kubeadm join and delete).",
                       no_args_is_help=True)


def _change_nodes(cluster: str | None, change, timeout: float) -> fabric.Cluster:
    from netsim.fabric import control_plane

    require_root("node")
    c = fabric.load_cluster(resolve_cluster(cluster))
    if c is None or c.phase != "up":
        raise err("error: the cluster is not up; run `netsim up` first", 1)
    whole_cluster_here(c, "node")
    try:
        change(c)
    except ValueError as exc:
        raise err(f"error: {exc}", 2) from None
    progress = lambda msg: typer.echo(f" ✓ {msg}", err=True)  # noqa: E731
    try:
        c.up(progress=progress)
        control_plane.start(c, None, [], timeout, progress)
    except Exception as exc:
        raise err(f"error: {exc}", 1) from None
    return c


@node_app.command("add")
def node_add(
    name: Annotated[str, typer.Argument(help="Node name (a DNS label).")],
    ip: Annotated[str | None, typer.Option(help="Underlay address (default: the next free one).")] = None,
    subnet: Annotated[str | None, typer.Option(
        help="The underlay segment to join (one of networking.underlaySubnets; default: the one holding --ip, "
             "else the first).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="key=value, repeatable.")] = None,
    cluster: ClusterOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the node to register.")] = 60.0,
) -> None:
    """Join a worker node: its namespace on the underlay, a Node object, a flannel lease; the
    other nodes' overlay learns it from the lease."""
    if not names.DNS_LABEL.match(name):
        raise err(f"error: node name {name!r}: use a DNS label (lowercase letters, digits and '-')", 2)
    labels = {}
    for pair in label or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise err(f"error: --label {pair!r}: use key=value", 2)
        labels[key] = value
    c = _change_nodes(cluster, lambda c: c.add_node(name, role="worker", ip=ip, labels=labels, subnet=subnet),
                      timeout)
    typer.echo(f"node/{name} joined cluster {c.name!r} at {c.members[name].ip}", err=True)
    st = state.read_state(c.name)
    backend = ((st.scenario if st else None) or {}).get("networking", {}).get("backend", "vxlan")
    if problem := host_gw_problem(backend, {m.name: m.subnet for m in c.nodes()}):
        typer.echo(f"warning: {problem}", err=True)


@node_app.command("delete")
def node_delete(
    name: Annotated[str, typer.Argument(help="Node to remove.")],
    cluster: ClusterOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the control plane.")] = 60.0,
) -> None:
    """Remove a node: its pods, its Node object and lease (the other nodes drop its routes,
    fdb and neighbour entries), its namespace."""
    def drop(c: fabric.Cluster) -> None:
        if name not in {m.name for m in c.nodes()}:
            raise ValueError(f"no node {name!r} in cluster {c.name!r}")
        if len(c.nodes()) == 1:
            raise ValueError(f"{name!r} is the cluster's last node; use `netsim down` to remove the cluster")
        c.remove_member(name)

    c = _change_nodes(cluster, drop, timeout)
    typer.echo(f"node/{name} removed from cluster {c.name!r}", err=True)
