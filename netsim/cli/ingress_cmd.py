"""`netsim ingress explain [--host H] PATH [-H k:v]`: which server and location of an ingress-nginx
controller take a request and why, the rewritten path, and the endpoints it would pick from
(netsim.node.ingress: the same ProxyConfig the controller's nginx is rendered from)."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer

from netsim.cli.common import err, open_cluster_store, parse_headers
from netsim.model import ingress_nginx, k8s
from netsim.node.ingress import gateway, ingress, match

ingress_app = typer.Typer(help="Ingress: which server and location take a request, and where it goes.",
                          no_args_is_help=True)

DEFAULT_CONTROLLER = "ingress-nginx/ingress-nginx-controller"


def controller_args(store, controller: str) -> tuple[ingress_nginx.ControllerArgs, str]:
    """The controller's flags, read as the agent reads them: from its Deployment's (or
    DaemonSet's) pod template, in the namespace its pods run in; and a note saying where from."""
    ns, _, name = controller.partition("/")
    for kind in ("Deployment", "DaemonSet"):
        try:
            obj = store.get(k8s.key(kind, ns, name))
        except Exception:  # noqa: BLE001 - NotFound from any backend: try the next kind
            continue
        template = (obj.get("spec") or {}).get("template") or {}
        pod = {"metadata": {**(template.get("metadata") or {}), "namespace": ns, "name": name},
               "spec": template.get("spec") or {}}
        return ingress_nginx.controller_args(pod), f"{kind} {controller}"
    return ingress_nginx.ControllerArgs(), f"no Deployment {controller}: the controller's default flags"


def text(d: match.Decision, method: str, url: str, source: str, related: list[str]) -> list[str]:
    out = [f"{method} {url}  ({source})"]
    out.append(f"  server:    {d.server or '(none)'}: {d.server_why}")
    if d.block:
        out.append(f"  location:  {d.block}: {d.location_why}")
        if d.location is not None and d.location.source:
            out.append(f"             from {d.location.source}")
    elif d.server:
        out.append(f"  location:  (none): {d.location_why}")
    if d.candidates:
        out.append("  candidates:")
        width = max(len(c.block) for c in d.candidates)
        for c in d.candidates:
            out.append(f"    {'+' if c.matched else '-'} {c.block.ljust(width)}  {c.why}")
    if d.canary:
        out.append(f"  canary:    {d.canary}")
    if d.upstream_path is not None:
        out.append(f"  upstream:  {d.upstream_path}")
    for upstream, share in d.shares:
        out.append(f"  backend:   {upstream}" + (f" ({share:.0%})" if share < 1 else ""))
    if d.backend is not None and d.backend.cluster_ip:
        out.append(f"  via:       ClusterIP {d.backend.cluster_ip} (service-upstream)")
    if d.endpoints:
        out.append(f"  endpoints: {', '.join(f'{e.ip}:{e.port}' for e in d.endpoints)}")
    if d.tls is not None:
        out.append(f"  tls:       {d.tls.secret or 'self-signed fallback (secret missing)'}")
    for note in d.notes + related:
        out.append(f"  note:      {note}")
    answer = f"{d.status}" + (f" -> {d.redirect}" if d.redirect else "")
    out.append(f"  answer:    {answer}: {d.status_why}")
    return out


@ingress_app.command("explain")
def explain(
    path: Annotated[str, typer.Argument(help="The request path (with ?query), or a URL http(s)://HOST/PATH.")],
    host: Annotated[str | None, typer.Option("--host", help="The Host header (default: the URL's, else none).")] = None,
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="A request header NAME:VALUE.")] = None,
    scheme: Annotated[str | None, typer.Option(help="http or https (default: the URL's, else http).")] = None,
    method: Annotated[str, typer.Option("--method", "-X", help="The request method.")] = "GET",
    port: Annotated[int | None, typer.Option(help="The port the proxy receives it on (default: 80, 443 for https).")
                    ] = None,
    controller: Annotated[str, typer.Option(help="The controller's NS/NAME.")] = DEFAULT_CONTROLLER,
    gateway_ref: Annotated[str | None, typer.Option("--gateway", help="A Gateway's NS/NAME: explain its proxy "
                                                    "(its HTTPRoutes) instead of the ingress controller.")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json.")] = "text",
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", envvar="NETSIM_CLUSTER")] = None,
) -> None:
    """Say which server and location answer a request, why, and where it goes; exit 1 unless it is
    proxied or redirected."""
    headers = parse_headers(header or [])
    if "://" in path:
        url_scheme, _, rest = path.partition("://")
        url_host, slash, rest = rest.partition("/")
        scheme, host, path = scheme or url_scheme, host or url_host, slash + rest
    scheme = (scheme or "http").lower()
    if scheme not in ("http", "https"):
        raise err(f"error: scheme {scheme!r}: use http or https", 2)
    if not path.startswith("/"):
        raise err(f"error: {path!r}: a path starts with / (or give a URL http://HOST/PATH)", 2)
    if "/" not in controller:
        raise err(f"error: --controller {controller!r}: give NAMESPACE/NAME", 2)
    host = host if host is not None else headers.get("Host", headers.get("host", ""))
    if gateway_ref is not None:
        _explain_gateway(cluster, gateway_ref, host, path, headers, scheme, method, port, output)
        return
    _, store = open_cluster_store(cluster)
    try:
        args, source = controller_args(store, controller)
        objs = {kind: store.list(k8s.prefix(kind))[0]
                for kind in ("Ingress", "IngressClass", "Service", "EndpointSlice", "Secret")}
    finally:
        store.close()
    config = ingress.proxy_config(controller, objs["Ingress"], objs["IngressClass"], objs["Service"],
                                  objs["EndpointSlice"], objs["Secret"], args=args)
    d = match.explain(config, host, path, headers, scheme, method, port)
    related = []
    for ing in objs["Ingress"]:
        hosts = {r.get("host", "") for r in (ing.get("spec") or {}).get("rules") or []}
        why = config.extra.get(f"ignored Ingress {ingress.key(ing)}")
        if why and (d.host in hosts or not hosts):
            related.append(f"Ingress {ingress.key(ing)} is not served by this controller: {why}")
    related += [v for k, v in config.extra.items() if k.startswith(f"server {d.server} note")]
    if output == "json":
        typer.echo(json.dumps({"controller": controller, "flags": dataclasses.asdict(args), **d.to_dict(),
                               "related": related}))
    else:
        url = f"{scheme}://{host or '(no Host)'}{path}"
        for line in text(d, method.upper(), url, source, related):
            typer.echo(line)
    raise typer.Exit(0 if d.status < 400 else 1)


def _explain_gateway(cluster: str | None, ref: str, host: str, path: str, headers: dict[str, str], scheme: str,
                     method: str, port: int | None, output: str) -> None:
    """explain for a Gateway's proxy: its ProxyConfig (netsim.node.ingress.gateway), and why its
    routes that do not answer were not accepted or do not resolve."""
    ns, _, name = ref.partition("/")
    if not ns or not name:
        raise err(f"error: --gateway {ref!r}: give NAMESPACE/NAME", 2)
    _, store = open_cluster_store(cluster)
    try:
        objs = {kind: store.list(k8s.prefix(kind))[0] for kind in gateway.PROXY_KINDS}
    finally:
        store.close()
    gw = next((g for g in objs["Gateway"] if g["metadata"]["name"] == name and g["metadata"].get("namespace") == ns),
              None)
    if gw is None:
        raise err(f"error: no Gateway {ref}", 1)
    args = [objs[k] for k in ("HTTPRoute", "ReferenceGrant", "Service", "EndpointSlice", "Secret", "Namespace")]
    config = gateway.proxy_config(gw, *args)
    d = match.explain(config, host, path, headers, scheme, method, port)
    related = []
    for (rns, rname), parents in gateway.statuses(gw, *args)[1].items():
        for p in parents:
            for c in p["conditions"]:
                if c["status"] != "True":
                    related.append(f"HTTPRoute {rns}/{rname}: {c['type']} False ({c['reason']}): {c['message']}")
    if output == "json":
        typer.echo(json.dumps({"gateway": ref, **d.to_dict(), "related": related}))
    else:
        url = f"{scheme}://{host or '(no Host)'}{path}"
        for line in text(d, method.upper(), url, f"Gateway {ref}", related):
            typer.echo(line)
    raise typer.Exit(0 if d.status < 400 else 1)
