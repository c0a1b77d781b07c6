"""The ``flannel`` meta-plugin: reads the node's subnet.env and delegates to bridge +
host-local, as flannel's CNI plugin does (github.com/flannel-io/cni-plugin).

The delegate's config is saved under ``dataDir/<containerID>`` at ADD, so DEL and CHECK use
exactly what ADD used even if subnet.env changed since.
"""

from __future__ import annotations

import ipaddress
import json
import os

from netsim.cni import spec

DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_DATA_DIR = "/var/lib/cni/flannel"


def read_subnet_env(path: str) -> dict[str, str]:
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError as exc:
        raise spec.CNIError(spec.NOT_AVAILABLE, f"failed to load flannel 'subnet.env' file: open {path}: "
                            "no such file or directory. Check the flannel pod is running.") from exc
    env = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep:
            env[key] = value
    missing = [k for k in ("FLANNEL_NETWORK", "FLANNEL_SUBNET") if k not in env]
    if missing:
        raise spec.CNIError(spec.INVALID_CONFIG, f"{path} is missing {', '.join(missing)}")
    return env


def _data_dir(req: spec.Request) -> str:
    return req.config.get("dataDir") or DEFAULT_DATA_DIR


def _saved_path(req: spec.Request) -> str:
    # The container ID is validated by the spec layer (no '/', no leading '.'), so this stays
    # inside dataDir.
    return os.path.join(_data_dir(req), req.container_id)


def delegate_config(req: spec.Request, env: dict[str, str]) -> dict:
    conf = req.config
    if not isinstance(conf.get("delegate") or {}, dict):
        raise spec.CNIError(spec.INVALID_CONFIG, "flannel: 'delegate' must be an object")
    delegate = dict(conf.get("delegate") or {})
    if not isinstance(delegate.get("ipam") or {}, dict):
        raise spec.CNIError(spec.INVALID_CONFIG, "flannel: 'delegate.ipam' must be an object")
    delegate.setdefault("name", conf.get("name"))
    delegate.setdefault("type", "bridge")
    delegate["cniVersion"] = conf.get("cniVersion", spec.LATEST)
    if "ipMasq" not in delegate:
        # flannel masquerades itself when FLANNEL_IPMASQ is true; the bridge must not as well.
        delegate["ipMasq"] = env.get("FLANNEL_IPMASQ", "false") != "true"
    if "mtu" not in delegate and env.get("FLANNEL_MTU"):
        delegate["mtu"] = int(env["FLANNEL_MTU"])
    if delegate["type"] == "bridge":
        delegate.setdefault("isGateway", True)
    ipam = dict(conf.get("ipam") or {})
    ipam.update(delegate.get("ipam") or {})
    ipam.setdefault("type", "host-local")
    # flannel parses FLANNEL_SUBNET (the gateway, e.g. 10.244.3.1/24) as a CIDR and hands on
    # the network part; host-local refuses a subnet with host bits set.
    try:
        subnet = ipaddress.ip_network(env["FLANNEL_SUBNET"], strict=False)
    except ValueError as exc:
        raise spec.CNIError(spec.INVALID_CONFIG, f"invalid FLANNEL_SUBNET {env['FLANNEL_SUBNET']!r}") from exc
    ipam["ranges"] = [[{"subnet": str(subnet)}]]
    ipam.pop("subnet", None)
    ipam["routes"] = [{"dst": env["FLANNEL_NETWORK"]}] + list(ipam.get("routes") or [])
    delegate["ipam"] = ipam
    if conf.get("runtimeConfig"):
        delegate["runtimeConfig"] = conf["runtimeConfig"]
    return delegate


def cmd_add(req: spec.Request) -> dict:
    env = read_subnet_env(req.config.get("subnetFile") or DEFAULT_SUBNET_FILE)
    delegate = delegate_config(req, env)
    os.makedirs(_data_dir(req), mode=0o700, exist_ok=True)
    path = _saved_path(req)
    tmp = f"{path}.tmp{os.getpid()}.{os.urandom(3).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(delegate, f)
    os.replace(tmp, path)
    try:
        return req.delegate(delegate["type"], delegate)
    except BaseException:
        os.unlink(path)
        raise


def _saved(req: spec.Request) -> dict | None:
    try:
        with open(_saved_path(req)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise spec.CNIError(spec.DECODE_FAILURE, f"flannel: corrupt saved config {_saved_path(req)}") from exc


def cmd_del(req: spec.Request) -> None:
    delegate = _saved(req)
    if delegate is None:
        return  # nothing was added (or DEL already ran): DEL is idempotent
    if req.prev_result is not None:
        delegate["prevResult"] = spec.convert(req.prev_result, delegate.get("cniVersion", spec.LATEST))
    req.delegate(delegate["type"], delegate)
    os.unlink(_saved_path(req))


def cmd_check(req: spec.Request) -> None:
    delegate = _saved(req)
    if delegate is None:
        raise spec.CNIError(spec.UNKNOWN_CONTAINER, f"flannel: no saved config for container {req.container_id}")
    if req.prev_result is not None:
        delegate["prevResult"] = spec.convert(req.prev_result, delegate.get("cniVersion", spec.LATEST))
    req.delegate(delegate["type"], delegate)


def cmd_status(req: spec.Request) -> None:
    env = read_subnet_env(req.config.get("subnetFile") or DEFAULT_SUBNET_FILE)
    delegate = delegate_config(req, env)
    req.delegate(delegate["type"], dict(delegate, **{k: v for k, v in req.config.items()
                                                     if k.startswith("cni.dev/")}))


def cmd_gc(req: spec.Request) -> None:
    """Release what the delegate holds for attachments the runtime no longer knows, and the
    saved configs of containers that are gone."""
    valid = {a.get("containerID") for a in req.config.get("cni.dev/valid-attachments") or []}
    try:
        env = read_subnet_env(req.config.get("subnetFile") or DEFAULT_SUBNET_FILE)
    except spec.CNIError:
        env = None
    if env is not None:
        delegate = delegate_config(req, env)
        delegate["cni.dev/valid-attachments"] = req.config.get("cni.dev/valid-attachments") or []
        req.delegate(delegate["type"], delegate)
    data_dir = _data_dir(req)
    if os.path.isdir(data_dir):
        for entry in os.listdir(data_dir):
            if entry not in valid and spec.CONTAINER_ID.match(entry) and ".tmp" not in entry:
                os.unlink(os.path.join(data_dir, entry))
