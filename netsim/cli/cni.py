"""`netsim cni ...`: netsim's CNI runtime by hand, shaped like cnitool.

Environment as cnitool reads it: NETCONFPATH (config dir, default /etc/cni/net.d), CNI_PATH
(default: netsim's own plugin dir), CNI_ARGS, CAP_ARGS (JSON capability args), CNI_IFNAME
(default eth0).  The container ID is derived from the netns path, as cnitool derives it.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Annotated

import typer

from netsim.cli.common import err
from netsim.cni import runtime, spec

cni_app = typer.Typer(help="CNI runtime and plugins (like cnitool): add, del, check, status, gc, path, install.",
                      no_args_is_help=True)


def _runtime() -> runtime.Runtime:
    cni_path = [p for p in os.environ.get("CNI_PATH", runtime.plugin_dir()).split(":") if p]
    return runtime.Runtime(cni_path)


def _netlist(net: str) -> runtime.NetworkList:
    conf_dir = os.environ.get("NETCONFPATH", runtime.DEFAULT_CONF_DIR)
    try:
        return runtime.load_conflist(conf_dir, net)
    except FileNotFoundError as exc:
        raise err(f"error: {exc} (set NETCONFPATH to the directory holding it)") from exc


def _rt(netns: str, cache_dir: str) -> runtime.RuntimeConf:
    container_id = "cnitool-" + hashlib.sha512(netns.encode()).hexdigest()[:20]
    args = []
    for pair in filter(None, os.environ.get("CNI_ARGS", "").split(";")):
        key, _, value = pair.partition("=")
        args.append((key, value))
    try:
        caps = json.loads(os.environ.get("CAP_ARGS") or "{}")
    except ValueError as exc:
        raise err(f"error: CAP_ARGS is not valid JSON: {exc}") from exc
    return runtime.RuntimeConf(container_id=container_id, netns=os.path.abspath(netns),
                               ifname=os.environ.get("CNI_IFNAME", "eth0"), args=args, capability_args=caps,
                               cache_dir=cache_dir)


CacheOpt = Annotated[str, typer.Option("--cache-dir", help="Where cached results live (libcni's /var/lib/cni).")]


def _run(fn, *args):
    try:
        return fn(*args)
    except runtime.PluginError as exc:
        typer.echo(json.dumps(exc.error), err=True)
        raise err(f"error: {exc}", 1) from exc


@cni_app.command("add")
def add(net: str, netns: str, cache_dir: CacheOpt = "/var/lib/cni") -> None:
    """ADD the network list NET to the namespace at NETNS (a path) and print the result."""
    result = _run(_runtime().add, _netlist(net), _rt(netns, cache_dir))
    typer.echo(json.dumps(result, indent=1))


@cni_app.command("del")
def delete(net: str, netns: str, cache_dir: CacheOpt = "/var/lib/cni") -> None:
    """DEL the network list NET from the namespace at NETNS (with the cached result)."""
    _run(_runtime().delete, _netlist(net), _rt(netns, cache_dir))


@cni_app.command("check")
def check(net: str, netns: str, cache_dir: CacheOpt = "/var/lib/cni") -> None:
    """CHECK the attachment of NET in NETNS against its cached result."""
    _run(_runtime().check, _netlist(net), _rt(netns, cache_dir))


@cni_app.command("status")
def status(net: str, netns: Annotated[str | None, typer.Argument()] = None) -> None:
    """STATUS: is every plugin of NET ready to ADD? (exit 0 = ready)"""
    _run(_runtime().status, _netlist(net))


@cni_app.command("gc")
def gc(net: str, netns: Annotated[str | None, typer.Argument(help="An attachment to keep.")] = None,
       cache_dir: CacheOpt = "/var/lib/cni") -> None:
    """GC: remove every attachment of NET except NETNS's (if given)."""
    valid = []
    if netns:
        rt = _rt(netns, cache_dir)
        valid.append({"containerID": rt.container_id, "ifname": rt.ifname})
    removed = _run(_runtime().gc, _netlist(net), valid, cache_dir)
    for container_id in removed:
        typer.echo(f"removed {container_id}")


@cni_app.command("path")
def path() -> None:
    """Print the directory of netsim's plugin executables (use it as CNI_PATH)."""
    typer.echo(runtime.plugin_dir())


@cni_app.command("install")
def install(directory: str) -> None:
    """Write netsim's plugins into DIRECTORY (e.g. a runtime's cni_plugin_dirs)."""
    for written in runtime.install(directory):
        typer.echo(written)


@cni_app.command("version")
def version() -> None:
    """The CNI spec versions netsim's plugins speak."""
    typer.echo(json.dumps({"cniVersion": spec.LATEST, "supportedVersions": list(spec.SUPPORTED_VERSIONS)}))
