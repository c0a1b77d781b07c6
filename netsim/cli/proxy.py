"""`netsim proxy rules NODE`: what a node's kube-proxy rendered, with every hashed chain name
mapped back to the Service port and endpoint it stands for (KUBE-SVC-XPGD46QRK7WJZT7O says
nothing to a person; "default/web:http" does)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

import typer

from netsim.api.registry import read_config
from netsim.api.store import open_store
from netsim.cli.common import err, print_table, running_cluster
from netsim.kernel import netfilter
from netsim.model import k8s
from proxy import iptables, ipvs, proxier
from proxy.model import service_ports

proxy_app = typer.Typer(help="What kube-proxy rendered on a node.", no_args_is_help=True)

CHAIN = re.compile(r"KUBE-(?:SVC|SVL|EXT|FW|SEP)-[A-Z2-7]{16}")


class RulesOutput(StrEnum):
    raw = "raw"
    table = "table"


def chain_names(store) -> dict[str, tuple[str, str, str]]:
    """Hashed chain -> (kind, service port "ns/name:port/proto", endpoint or "") from the
    Services and EndpointSlices in the store, named as the proxier names them."""
    ports = service_ports(store.list(k8s.prefix("Service"))[0], store.list(k8s.prefix("EndpointSlice"))[0])
    out = {}
    for sp in ports:
        label = f"{sp.key}/{sp.proto}"
        for prefix, kind in ((iptables.SVC_PREFIX, "service"), (iptables.SVL_PREFIX, "service, local endpoints"),
                             (iptables.EXT_PREFIX, "external"), (iptables.FW_PREFIX, "firewall")):
            out[iptables.service_chain(prefix, sp.key, sp.proto)] = (kind, label, "")
        for ep in sp.endpoints:
            out[iptables.endpoint_chain(sp.key, sp.proto, ep.address)] = ("endpoint", label, ep.address)
    return out


@proxy_app.command("rules")
def rules(
    node: Annotated[str, typer.Argument(help="Node name.")],
    output: Annotated[RulesOutput, typer.Option("--output", "-o", help="raw: iptables-save with each hashed "
                                                "chain annotated; table: one row per chain.")] = RulesOutput.table,
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", envvar="NETSIM_CLUSTER")] = None,
) -> None:
    """Show the rules kube-proxy rendered on NODE (nftables mode: its table as nft lists it; ipvs mode: its
    virtual servers)."""
    c = running_cluster(cluster)
    member = c.members.get(node)
    if member is None or member.kind != "node":
        raise err(f"error: no node {node!r} in cluster {c.name!r}", 1)
    store = open_store(c.store_url)
    try:
        names = chain_names(store)
        mode = read_config(store).proxy_mode
        ports = service_ports(store.list(k8s.prefix("Service"))[0], store.list(k8s.prefix("EndpointSlice"))[0])
    finally:
        store.close()
    mode, why = ipvs.effective_mode(mode, load=False)
    if why:
        typer.echo(f"# kube-proxy mode is ipvs, but {why}: it rendered iptables rules", err=True)
    if mode == "ipvs":
        _show_ipvs(_netns_path(member.netns), node, ports, output)
        return
    if mode == "nftables":
        # nftables mode's chains already carry ns/name/proto/port after their hash.
        typer.echo(netfilter.run(["nft", "list", "table", "ip", "kube-proxy"], netns=member.netns)
                   .stdout.decode(), nl=False)
        return
    backend = proxier.BACKENDS[proxier.DEFAULT_BACKEND]
    saved = netfilter.run([backend.save], netns=member.netns).stdout.decode()
    if output is RulesOutput.raw:
        for line in saved.splitlines():
            found = sorted({m for m in CHAIN.findall(line) if m in names})
            notes = "; ".join(f"{m} = {names[m][1]}" + (f" -> {names[m][2]}" if names[m][2] else "")
                              for m in found)
            typer.echo(f"{line}    # {notes}" if notes else line)
        return
    counts = {(t.name, chain): len(rules) for t in netfilter.parse_save(saved).values()
              for chain, rules in t.chains.items() if rules}
    rows = [("TABLE", "CHAIN", "RULES", "KIND", "SERVICE PORT", "ENDPOINT")]
    for (table_name, chain), n in sorted(counts.items()):
        if not chain.startswith("KUBE-"):
            continue
        kind, label, endpoint = names.get(chain, ("", "", ""))
        if CHAIN.fullmatch(chain) and not kind:
            kind = "stale (no such Service now)"
        rows.append((table_name, chain, str(n), kind or "kube-proxy", label or "-", endpoint or "-"))
    print_table(rows)


def _show_ipvs(path: str, node: str, ports, output: RulesOutput) -> None:
    """IPVS mode: each virtual server the kernel holds, with the Service port and role it
    serves and its real servers; raw adds the ipsets and iptables rules, as the tools list them."""
    if output is RulesOutput.raw:
        for argv in (["ipvsadm", "-Ln"], ["ipset", "list", "-t"], [proxier.BACKENDS[proxier.DEFAULT_BACKEND].save]):
            typer.echo(f"# {' '.join(argv)}")
            typer.echo(netfilter.run(argv, netns=path).stdout.decode(), nl=False)
        return
    owner = {}
    for key, rules in ipvs.render(ports, node=node, node_ips=[], cluster_cidr="0.0.0.0/0").services.items():
        for role, vs in rules.servers:
            owner[vs.key] = (key, role)
    # NodePorts sit on the node's IPs, which the render above does not know: match on the port.
    by_node_port = {(sp.proto, sp.node_port): f"{sp.key}/{sp.proto}" for sp in ports if sp.node_port}
    kernel_servers = ipvs.parse_save(netfilter.run(["ipvsadm", "-Sn"], netns=path).stdout.decode())
    rows = [("SERVICE PORT", "ROLE", "VIRTUAL SERVER", "SCHEDULER", "PERSISTENCE", "REAL SERVERS")]
    for key in sorted(kernel_servers, key=lambda k: (owner.get(k, ("~",))[0], k)):
        vs, reals = kernel_servers[key]
        service, role = owner.get(key) or (by_node_port.get((vs.protocol, vs.port)), "node port")
        if service is None:
            service, role = "-", "stale (no such Service now)"
        rows.append((service, role, f"{vs.protocol.upper()} {vs.address}", vs.scheduler,
                     f"{vs.persistence}s" if vs.persistence else "-", ", ".join(sorted(reals)) or "(none: refused)"))
    print_table(rows)


def _netns_path(netns: str) -> str:
    from netsim import kernel

    return kernel.netns_path(netns)
