"""The CNI specification (v1.1) as one small layer every netsim plugin stands on.

A plugin is a module with ``cmd_add``, ``cmd_del``, ``cmd_check``, ``cmd_status`` and
``cmd_gc``, each taking a :class:`Request`.  ``cmd_add`` returns a result in the 1.1 shape;
:func:`run` converts it to the version the configuration asked for.  :func:`run` is pure
(environment and stdin in, exit code and stdout out), so the same plugin code serves an
exec'd process (:func:`main`) and the node agent's socket (netsim.cni.server).

Only the standard library is imported here: this module is on every plugin call's path.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from dataclasses import dataclass, field

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = "1.1.0"

# Error codes of the spec (SPEC.md "Error").
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
INTERNAL = 999  # reserved by the spec for errors with no better code
UNEXPECTED = "unexpected error in the plugin"  # the msg of an exception no plugin code anticipated

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
CONTAINER_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
IFNAME_BAD = re.compile(r"[/:\s]")

# Plugins netsim implements, by ``type``.  A delegate whose executable on CNI_PATH is one of
# ours runs in-process (same code, same stdin and environment) instead of paying an exec.
MODULES = {
    "loopback": "netsim.cni.loopback",
    "bridge": "netsim.cni.bridge",
    "host-local": "netsim.cni.hostlocal",
    "portmap": "netsim.cni.portmap",
    "flannel": "netsim.cni.flannel",
    "netsim-policy": "netsim.cni.netpolicy",
    "calico": "netsim.cni.calico",
    "calico-ipam": "netsim.cni.calico_ipam",
}
SHIM_MARKER = b"netsim-cni-plugin"


class CNIError(Exception):
    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, version: str) -> dict:
        out = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


@dataclass
class Request:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    path: list[str]
    config: dict
    env: dict[str, str]
    stdin: bytes
    version: str = LATEST
    prev_result: dict | None = field(default=None)

    @property
    def name(self) -> str:
        return self.config.get("name", "")

    @property
    def runtime_config(self) -> dict:
        return self.config.get("runtimeConfig") or {}

    def delegate(self, plugin_type: str, config: dict, command: str | None = None) -> dict | None:
        """Call another plugin (IPAM, or a meta-plugin's delegate) with this request's
        environment, as the spec's delegation does; returns its result (1.1 shape) or None."""
        env = dict(self.env)
        if command:
            env["CNI_COMMAND"] = command
        stdin = json.dumps(config).encode()
        code, out = invoke(plugin_type, env, stdin, self.path)
        if code != 0:
            try:
                err = json.loads(out)
                raise CNIError(int(err.get("code", INTERNAL)), err.get("msg", "delegate failed"),
                               err.get("details", ""))
            except (ValueError, AttributeError) as exc:
                raise CNIError(INTERNAL, f"{plugin_type} failed", out.decode(errors="replace")) from exc
        if env["CNI_COMMAND"] != "ADD" or not out.strip():
            return None
        return to_latest(json.loads(out))


# -- locating and invoking plugins ---------------------------------------------------------
def find_plugin(plugin_type: str, path: list[str]) -> str:
    if not isinstance(plugin_type, str) or not plugin_type or "/" in plugin_type or plugin_type.startswith("."):
        raise CNIError(INVALID_CONFIG, f"invalid plugin type {plugin_type!r}")
    for directory in path:
        candidate = os.path.join(directory, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(INVALID_CONFIG, f"failed to find plugin {plugin_type!r} in path {path}")


def is_ours(executable: str, plugin_type: str) -> bool:
    if plugin_type not in MODULES:
        return False
    try:
        with open(executable, "rb") as f:
            return SHIM_MARKER in f.read(65536)
    except OSError:
        return False


def invoke(plugin_type: str, env: dict[str, str], stdin: bytes, path: list[str]) -> tuple[int, bytes]:
    executable = find_plugin(plugin_type, path)
    if is_ours(executable, plugin_type):
        return run(plugin_type, env, stdin)
    proc = subprocess.run([executable], input=stdin, env=env, capture_output=True, check=False)
    return proc.returncode, proc.stdout


# -- parsing a call -----------------------------------------------------------------------
def parse_args(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, raw.split(";")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise CNIError(INVALID_ENVIRONMENT, f"invalid CNI_ARGS pair {part!r}", "use KEY=VALUE;KEY=VALUE")
        out[key] = value
    return out


def validate_ifname(ifname: str) -> None:
    if not ifname:
        raise CNIError(INVALID_ENVIRONMENT, "CNI_IFNAME is required")
    if len(ifname) > 15 or IFNAME_BAD.search(ifname) or ifname in (".", ".."):
        raise CNIError(INVALID_ENVIRONMENT, f"invalid interface name {ifname!r}",
                       "at most 15 characters, no '/', ':' or whitespace")


def parse_request(env: dict[str, str], stdin: bytes) -> Request:
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CNIError(INVALID_ENVIRONMENT, f"unknown CNI_COMMAND {command!r}", f"one of {', '.join(COMMANDS)}")
    try:
        config = json.loads(stdin or b"{}")
    except ValueError as exc:
        raise CNIError(DECODE_FAILURE, "failed to decode network configuration", str(exc)) from exc
    if not isinstance(config, dict):
        raise CNIError(DECODE_FAILURE, "network configuration must be a JSON object")
    # A config that names no version is the spec's 0.1.0 (which is then refused as too old).
    version = config.get("cniVersion", LATEST) if command == "VERSION" else (config.get("cniVersion") or "0.1.0")
    req = Request(command=command, container_id=env.get("CNI_CONTAINERID", ""), netns=env.get("CNI_NETNS", ""),
                  ifname=env.get("CNI_IFNAME", ""), args={}, path=[p for p in env.get("CNI_PATH", "").split(":") if p],
                  config=config, env=env, stdin=stdin, version=version)
    if command == "VERSION":
        return req
    if version not in SUPPORTED_VERSIONS:
        raise CNIError(INCOMPATIBLE_VERSION, f"incompatible CNI version {version!r}",
                       f"supported: {', '.join(SUPPORTED_VERSIONS)}")
    if command == "CHECK" and version_tuple(version) < (0, 4, 0):
        raise CNIError(INCOMPATIBLE_VERSION, f"config version {version} does not allow CHECK", "needs 0.4.0 or later")
    if command in ("STATUS", "GC") and version_tuple(version) < (1, 1, 0):
        raise CNIError(INCOMPATIBLE_VERSION, f"config version {version} does not allow {command}", "needs 1.1.0")
    if not isinstance(config.get("type"), str) or not config["type"]:
        raise CNIError(INVALID_CONFIG, "network configuration has no 'type'")
    check_config_types(config)
    if command in ("ADD", "DEL", "CHECK"):
        if not req.container_id:
            raise CNIError(INVALID_ENVIRONMENT, "CNI_CONTAINERID is required")
        if not CONTAINER_ID.match(req.container_id):
            raise CNIError(INVALID_ENVIRONMENT, f"invalid container ID {req.container_id!r}",
                           "start with a letter or digit; then letters, digits, '_', '.', '-'")
        validate_ifname(req.ifname)
        if command != "DEL":
            if not req.netns:
                raise CNIError(INVALID_ENVIRONMENT, "CNI_NETNS is required")
            if not os.path.exists(req.netns):
                raise CNIError(INVALID_ENVIRONMENT, f"netns path {req.netns!r} does not exist")
        req.args = parse_args(env.get("CNI_ARGS", ""))
    if "prevResult" in config and config["prevResult"] is not None:
        prev = config["prevResult"]
        if not isinstance(prev, dict):
            raise CNIError(DECODE_FAILURE, "prevResult must be a JSON object")
        check_result(prev, "prevResult")
        req.prev_result = to_latest(dict(prev, cniVersion=prev.get("cniVersion", version)))
    return req


# The spec's well-known fields of a network configuration and their JSON types: a config that
# gives one another type is refused here, before any plugin reads it.
_CONFIG_TYPES = {"cniVersion": str, "name": str, "type": str, "ipam": dict, "dns": dict, "prevResult": dict,
                 "runtimeConfig": dict, "capabilities": dict, "args": dict}
_JSON_NAMES = {str: "a string", dict: "an object", list: "an array", int: "an integer"}


def check_config_types(config: dict) -> None:
    for key, kind in _CONFIG_TYPES.items():
        value = config.get(key)
        if value is not None and not isinstance(value, kind):
            raise CNIError(INVALID_CONFIG, f"network configuration: {key} must be {_JSON_NAMES[kind]}",
                           f"got {json.dumps(value)[:80]}")
    if not isinstance(config.get("name"), str) or not config["name"]:
        raise CNIError(INVALID_CONFIG, "network configuration has no 'name'")


def check_result(result: dict, where: str) -> None:
    """A result (a chained plugin's prevResult) in the spec's shape: interfaces, ips, routes."""
    def bad(field_path: str, why: str) -> CNIError:
        return CNIError(INVALID_CONFIG, f"{where}.{field_path}: {why}")

    for key in ("interfaces", "ips", "routes"):
        items = result.get(key)
        if items is None:
            continue
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise bad(key, "must be an array of objects")
    for i, iface in enumerate(result.get("interfaces") or []):
        if not isinstance(iface.get("name"), str):
            raise bad(f"interfaces[{i}].name", "must be a string")
    for i, ip in enumerate(result.get("ips") or []):
        _address(ip.get("address"), ipaddress.ip_interface, bad(f"ips[{i}].address", "must be an address/prefix"))
        if ip.get("gateway") is not None:
            _address(ip["gateway"], ipaddress.ip_address, bad(f"ips[{i}].gateway", "must be an address"))
        if ip.get("interface") is not None and (type(ip["interface"]) is not int or ip["interface"] < 0):
            raise bad(f"ips[{i}].interface", "must be an index into interfaces")
    for i, route in enumerate(result.get("routes") or []):
        _address(route.get("dst"), ipaddress.ip_network, bad(f"routes[{i}].dst", "must be a network"), strict=False)
        if route.get("gw") is not None:
            _address(route["gw"], ipaddress.ip_address, bad(f"routes[{i}].gw", "must be an address"))


def _address(value, parse, error: CNIError, **kw) -> None:
    if not isinstance(value, str):
        raise error
    try:
        parse(value, **kw)
    except ValueError:
        raise error from None


# -- results ------------------------------------------------------------------------------
def _ip_version(address: str) -> str:
    return "6" if ":" in address else "4"


def to_latest(result: dict) -> dict:
    """A result of any supported version in the 1.1 shape (drops 0.x's per-IP ``version``)."""
    out = {k: v for k, v in result.items() if k in ("interfaces", "ips", "routes", "dns")}
    out["ips"] = [{k: v for k, v in ip.items() if k != "version"} for ip in out.get("ips") or []]
    out["cniVersion"] = LATEST
    return out


def convert(result: dict, version: str) -> dict:
    """A 1.1-shaped result as the asked version writes it."""
    out: dict = {"cniVersion": version}
    if result.get("interfaces"):
        out["interfaces"] = [dict(i) for i in result["interfaces"]]
    ips = [dict(ip) for ip in result.get("ips") or []]
    routes = [dict(r) for r in result.get("routes") or []]
    if version_tuple(version) < (1, 0, 0):
        for ip in ips:
            ip["version"] = _ip_version(ip["address"])
    if version_tuple(version) < (1, 1, 0):
        # 1.1 added mtu/advmss/priority/table/scope to routes and mtu/socketPath/pciID to interfaces.
        routes = [{k: v for k, v in r.items() if k in ("dst", "gw")} for r in routes]
        for iface in out.get("interfaces", []):
            for key in ("mtu", "socketPath", "pciID"):
                iface.pop(key, None)
    if ips:
        out["ips"] = ips
    if routes:
        out["routes"] = routes
    out["dns"] = result.get("dns") or {}
    return out


# -- running a plugin ---------------------------------------------------------------------
def _load(plugin_type: str):
    import importlib

    return importlib.import_module(MODULES[plugin_type])


def run(plugin_type: str, env: dict[str, str], stdin: bytes) -> tuple[int, bytes]:
    """One plugin call: the exit code and what the plugin writes to stdout."""
    version = LATEST
    try:
        req = parse_request(env, stdin)
        version = req.version if req.version in SUPPORTED_VERSIONS else LATEST
        if req.command == "VERSION":
            return 0, dump({"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)})
        module = _load(plugin_type)
        handler = {"ADD": module.cmd_add, "DEL": module.cmd_del, "CHECK": module.cmd_check,
                   "STATUS": module.cmd_status, "GC": module.cmd_gc}[req.command]
        result = handler(req)
        if req.command == "ADD":
            return 0, dump(convert(result, version))
        return 0, b""
    except CNIError as err:
        return 1, dump(err.to_json(version))
    except OSError as err:
        return 1, dump(CNIError(IO_FAILURE, f"{type(err).__name__}: {err}").to_json(version))
    except Exception as err:  # a plugin must answer with the error JSON, never a traceback
        return 1, dump(CNIError(INTERNAL, UNEXPECTED, f"{type(err).__name__}: {err}").to_json(version))


def dump(obj: dict) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def main(plugin_type: str) -> None:
    import sys

    stdin = sys.stdin.buffer.read() if not sys.stdin.isatty() else b""
    code, out = run(plugin_type, dict(os.environ), stdin)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    raise SystemExit(code)
