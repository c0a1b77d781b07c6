"""The API server's commands: `netsim apiserver` (the long-running server `up` starts) and
`netsim kubeconfig` (a standalone kubeconfig for kubectl and client libraries)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
import yaml

from netsim.cli.common import ClusterOpt, err, require_root, resolve_cluster


def apiserver_cmd(
    cluster: Annotated[str, typer.Option("--cluster", "-c", envvar="NETSIM_CLUSTER")],
    store: Annotated[str, typer.Option(help="The cluster's store URL.")],
    node_netns: Annotated[str | None, typer.Option(help="The control-plane node's network namespace.")] = None,
    node_address: Annotated[str | None, typer.Option(help="Its address; the server listens there on :6443.")]
    = None,
) -> None:
    """The Kubernetes API server of a cluster (long-running): serves kubectl; `up` starts it."""
    from netsim.apiserver import server

    require_root("apiserver")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server.serve(cluster, store, node_netns, node_address)
    except (OSError, RuntimeError) as exc:
        raise err(f"error: {exc}") from None


def kubeconfig_cmd(cluster: ClusterOpt = None) -> None:
    """Print a standalone kubeconfig for the cluster's API server (kubectl --kubeconfig FILE)."""
    from netsim.apiserver import kubeconfig, pki, process

    require_root("kubeconfig")
    name = resolve_cluster(cluster)
    url = process.server_url(name)
    if url is None:
        raise err(f"error: cluster {name!r} has no API server running; `netsim up` starts it", 1)
    typer.echo(yaml.safe_dump(kubeconfig.standalone(name, url, pki.paths(name)), sort_keys=False), nl=False)
