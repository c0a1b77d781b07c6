"""`netsim policy explain FROM TO --port P`: which NetworkPolicies select the two ends, and the
rule that admits the connection or why it is denied (netsim.node.policy.evaluate, the same
semantics the node tables are rendered from).  In a cluster whose CNI enforces no policy
(cni: flannel, netsim.model.cnimode) the policies are still judged, and the verdict says that
nothing blocks the connection."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from netsim.api import registry
from netsim.cli.common import err, open_cluster_store
from netsim.model import cnimode, k8s
from netsim.node import policy
from netsim.observe import probe

policy_app = typer.Typer(help="NetworkPolicy: why a connection is allowed or denied.", no_args_is_help=True)


def explain_text(src_label: str, dst_label: str, src_ip: str, dst_ip: str, port: int, protocol: str,
                 verdict: policy.Verdict, not_enforced: str | None = None) -> list[str]:
    """``not_enforced``: why the cluster's CNI ignores the policies (cnimode.not_enforced), or None."""
    out = [f"from {src_label} ({src_ip}) to {dst_label} ({dst_ip}) port {port}/{protocol}"]
    if verdict.egress_policies:
        how = f"allowed by {verdict.egress_rule}" if verdict.egress_rule else "no egress rule admits it: DENIED"
        out.append(f"  egress:  isolated by {', '.join(verdict.egress_policies)}; {how}")
    else:
        out.append("  egress:  not isolated (no policy with Egress selects the source)")
    if verdict.ingress_policies:
        how = f"allowed by {verdict.ingress_rule}" if verdict.ingress_rule else "no ingress rule admits it: DENIED"
        out.append(f"  ingress: isolated by {', '.join(verdict.ingress_policies)}; {how}")
    else:
        out.append("  ingress: not isolated (no policy with Ingress selects the destination)")
    if not_enforced is None:
        out.append(f"  verdict: {'allowed' if verdict.allowed else 'denied'}")
    else:
        out.append(f"  enforced: no: {not_enforced}")
        would = "" if verdict.allowed else " (the policies would deny it under a CNI that enforces them)"
        out.append(f"  verdict: allowed, NetworkPolicy not enforced{would}")
    return out


@policy_app.command("explain")
def explain(
    src: Annotated[str, typer.Argument(help="pod/NS/NAME or ip:ADDR.")],
    dst: Annotated[str, typer.Argument(help="pod/NS/NAME, svc/NS/NAME (judged per backend) or ip:ADDR.")],
    port: Annotated[int | None, typer.Option(help="Destination port (default: the target's first).")] = None,
    proto: Annotated[str, typer.Option(help="TCP, UDP or SCTP.")] = "TCP",
    output: Annotated[str, typer.Option("--output", "-o", help="text or json.")] = "text",
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", envvar="NETSIM_CLUSTER")] = None,
) -> None:
    """Say which policies select FROM and TO and which rule allows the connection, or why not."""
    protocol = proto.upper()
    if protocol not in policy.PROTOCOLS:
        raise err("error: --proto: use TCP, UDP or SCTP", 2)
    c, store = open_cluster_store(cluster)
    try:
        try:
            source = probe.resolve(c, store, src)
            target = probe.resolve(c, store, dst, port)
        except probe.ProbeError as exc:
            raise err(f"error: {exc}", 2) from None
        policies, pods, namespaces = policy.inputs(store)
        not_enforced = cnimode.not_enforced(registry.read_config(store).cni)
        node_ips = [m.ip for m in c.members.values() if m.kind == "node"]
        # A Service is judged after DNAT: against each backend, on the port its endpoint has.
        pairs = [(dst, target.ip, target.port)]
        if dst.split("/", 1)[0] in ("svc", "service", "services"):
            pairs = []
            for s in store.list(k8s.prefix("EndpointSlice"))[0]:
                ns, _, name = dst.split("/", 1)[1].partition("/")
                if not name:
                    ns, name = "default", ns
                if s["metadata"]["namespace"] != ns or (s["metadata"].get("labels") or {}).get(
                        "kubernetes.io/service-name") != name:
                    continue
                ports = s.get("ports") or []
                ep_port = ports[0]["port"] if ports else target.port
                for e in s.get("endpoints") or []:
                    ref = e.get("targetRef") or {}
                    for ip in e.get("addresses") or []:
                        pairs.append((f"pod/{ref.get('namespace', ns)}/{ref.get('name', ip)}", ip, ep_port))
            if not pairs:
                raise err(f"error: {dst} has no endpoints: connections to it are refused before any policy", 1)
    finally:
        store.close()
    results = []
    for label, ip, p in pairs:
        if p is None:
            raise err(f"error: {label} declares no port; give one with --port", 2)
        v = policy.evaluate(policies, pods, namespaces, source.ip, ip, protocol, p, node_ips)
        results.append((label, ip, p, v))
    enforced = not_enforced is None
    if output == "json":
        typer.echo(json.dumps([{"from": src, "to": label, "ip": ip, "port": p, "protocol": protocol,
                                "allowed": v.allowed or not enforced, "enforced": enforced,
                                "policyAllows": v.allowed, "egressPolicies": v.egress_policies,
                                "ingressPolicies": v.ingress_policies, "egressRule": v.egress_rule,
                                "ingressRule": v.ingress_rule, "reason": v.reason}
                               for label, ip, p, v in results]))
    else:
        for label, ip, p, v in results:
            for line in explain_text(src, label, source.ip, ip, p, protocol, v, not_enforced):
                typer.echo(line)
    raise typer.Exit(0 if not enforced or all(v.allowed for *_, v in results) else 1)
