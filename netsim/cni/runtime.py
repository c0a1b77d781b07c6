"""A CNI runtime, as libcni is one: network lists from a config dir, plugins from CNI_PATH,
ADD chained in order, DEL in reverse with the cached result, CHECK, STATUS and GC.

Plugins are exec'd as any runtime would (netsim's own are found on CNI_PATH like anyone's).
``runtime_netns`` is where they run: the node's namespace; the calling thread enters it for
the exec only, so the child starts there and nothing else in the process moves.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import subprocess
from dataclasses import dataclass, field

from netsim.cni import spec

DEFAULT_CONF_DIR = "/etc/cni/net.d"
CACHE_KIND = "cniCacheV1"


class PluginError(Exception):
    """A plugin failed; carries the plugin's error JSON."""

    def __init__(self, plugin: str, command: str, error: dict):
        self.plugin, self.command, self.error = plugin, command, error
        super().__init__(f"plugin type={plugin!r} {command} failed (code {error.get('code')}): "
                         f"{error.get('msg', '')}{': ' + error['details'] if error.get('details') else ''}")

    @property
    def code(self) -> int:
        return int(self.error.get("code", spec.INTERNAL))


@dataclass
class NetworkList:
    name: str
    cni_version: str
    plugins: list[dict]
    raw: bytes
    disable_check: bool = False
    disable_gc: bool = False
    source: str = ""


@dataclass
class RuntimeConf:
    container_id: str
    netns: str
    ifname: str = "eth0"
    args: list[tuple[str, str]] = field(default_factory=list)
    capability_args: dict = field(default_factory=dict)
    cache_dir: str = "/var/lib/cni"


def parse_conflist(raw: bytes, source: str = "") -> NetworkList:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a network list must be a JSON object")
    if "plugins" not in data:  # a single-plugin .conf: libcni wraps it in a list
        if "type" not in data:
            raise ValueError(f"{source}: neither 'plugins' nor 'type'")
        data = {"cniVersion": data.get("cniVersion", ""), "name": data.get("name", ""), "plugins": [data]}
        raw = json.dumps(data).encode()
    if not data.get("name"):
        raise ValueError(f"{source}: 'name' is required")
    plugins = data["plugins"]
    if not isinstance(plugins, list) or not plugins or not all(isinstance(p, dict) and p.get("type") for p in plugins):
        raise ValueError(f"{source}: 'plugins' must be a non-empty list of objects with a 'type'")
    return NetworkList(name=data["name"], cni_version=data.get("cniVersion", ""), plugins=plugins, raw=raw,
                       disable_check=bool(data.get("disableCheck")), disable_gc=bool(data.get("disableGC")),
                       source=source)


def config_files(conf_dir: str) -> list[str]:
    return sorted(f for ext in ("*.conf", "*.conflist", "*.json") for f in glob.glob(os.path.join(conf_dir, ext)))


def load_conflist(conf_dir: str, name: str) -> NetworkList:
    """The network list called ``name`` in ``conf_dir`` (libcni's LoadConfList)."""
    for path in config_files(conf_dir):
        with open(path, "rb") as f:
            raw = f.read()
        try:
            netlist = parse_conflist(raw, path)
        except ValueError:
            continue
        if netlist.name == name:
            return netlist
    raise FileNotFoundError(f"no net configuration with name {name!r} in {conf_dir}")


def cached_attachments(network: str, cache_dir: str) -> list[dict]:
    """The entries of a libcni-style results cache for ``network``."""
    out = []
    for path in glob.glob(os.path.join(cache_dir, "results", f"{network}-*")):
        try:
            with open(path) as f:
                entry = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict) and entry.get("networkName") == network:
            out.append(entry)
    return out


# -- calling plugins ------------------------------------------------------------------------
class Runtime:
    def __init__(self, cni_path: list[str], runtime_netns: str | None = None, extra_env: dict | None = None):
        self.cni_path = cni_path
        self.runtime_netns = runtime_netns
        self.extra_env = extra_env or {}

    def _plugin_config(self, netlist: NetworkList, plugin: dict, rt: RuntimeConf | None, prev: dict | None) -> dict:
        conf = dict(plugin)
        conf["name"] = netlist.name
        conf["cniVersion"] = netlist.cni_version
        if prev is not None:
            conf["prevResult"] = prev
        if rt is not None:
            caps = {k: v for k, v in rt.capability_args.items() if (plugin.get("capabilities") or {}).get(k)}
            if caps:
                conf["runtimeConfig"] = caps
            else:
                conf.pop("runtimeConfig", None)
        return conf

    def _env(self, command: str, rt: RuntimeConf | None) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), **self.extra_env,
               "CNI_COMMAND": command, "CNI_PATH": ":".join(self.cni_path)}
        if rt is not None:
            env.update(CNI_CONTAINERID=rt.container_id, CNI_IFNAME=rt.ifname)
            if rt.netns:
                env["CNI_NETNS"] = rt.netns
            if rt.args:
                env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in rt.args)
        return env

    def exec_plugin(self, plugin_type: str, command: str, conf: dict, rt: RuntimeConf | None) -> dict | None:
        try:
            executable = spec.find_plugin(plugin_type, self.cni_path)
        except spec.CNIError as err:
            raise PluginError(plugin_type, command, err.to_json(conf.get("cniVersion", ""))) from err
        stdin = json.dumps(conf).encode()
        env = self._env(command, rt)
        ctx = _entered(self.runtime_netns) if self.runtime_netns else contextlib.nullcontext()
        with ctx:
            proc = subprocess.run([executable], input=stdin, env=env, capture_output=True, check=False, timeout=120)
        out = proc.stdout.strip()
        if proc.returncode != 0:
            try:
                error = json.loads(out)
                if not isinstance(error, dict):
                    raise ValueError
            except ValueError:
                error = {"code": spec.INTERNAL, "msg": f"exit status {proc.returncode}",
                         "details": (out or proc.stderr).decode(errors="replace")[:2000]}
            raise PluginError(plugin_type, command, error)
        if command != "ADD":
            return None
        try:
            return json.loads(out)
        except ValueError as exc:
            raise PluginError(plugin_type, command, {"code": spec.DECODE_FAILURE, "msg": "undecodable result",
                                                       "details": out.decode(errors="replace")[:2000]}) from exc

    # -- the cache (libcni's results dir) --------------------------------------------------
    @staticmethod
    def cache_path(netlist: NetworkList, rt: RuntimeConf) -> str:
        return os.path.join(rt.cache_dir, "results", f"{netlist.name}-{rt.container_id}-{rt.ifname}")

    def _write_cache(self, netlist: NetworkList, rt: RuntimeConf, result: dict) -> None:
        path = self.cache_path(netlist, rt)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        entry = {"kind": CACHE_KIND, "containerId": rt.container_id,
                 "config": base64.b64encode(netlist.raw).decode(), "ifName": rt.ifname,
                 "networkName": netlist.name, "netns": rt.netns,
                 "cniArgs": [list(a) for a in rt.args], "capabilityArgs": rt.capability_args, "result": result}
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f)
        os.replace(tmp, path)

    def cached(self, netlist: NetworkList, rt: RuntimeConf) -> dict | None:
        try:
            with open(self.cache_path(netlist, rt)) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return None

    # -- verbs ------------------------------------------------------------------------------
    def add(self, netlist: NetworkList, rt: RuntimeConf) -> dict:
        prev = None
        for plugin in netlist.plugins:
            conf = self._plugin_config(netlist, plugin, rt, prev)
            prev = self.exec_plugin(plugin["type"], "ADD", conf, rt)
        self._write_cache(netlist, rt, prev or {})
        return prev or {}

    def delete(self, netlist: NetworkList, rt: RuntimeConf) -> None:
        entry = self.cached(netlist, rt)
        prev = entry.get("result") if entry and spec.version_tuple(netlist.cni_version) >= (0, 4, 0) else None
        if entry and not rt.capability_args:
            rt.capability_args = entry.get("capabilityArgs") or {}
        for plugin in reversed(netlist.plugins):
            conf = self._plugin_config(netlist, plugin, rt, prev)
            self.exec_plugin(plugin["type"], "DEL", conf, rt)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.cache_path(netlist, rt))

    def check(self, netlist: NetworkList, rt: RuntimeConf) -> None:
        if netlist.disable_check:
            return
        entry = self.cached(netlist, rt)
        if entry is None:
            raise PluginError(netlist.name, "CHECK", {"code": spec.UNKNOWN_CONTAINER,
                                                        "msg": f"no cached result for {rt.container_id}/{rt.ifname}"})
        if not rt.capability_args:
            rt.capability_args = entry.get("capabilityArgs") or {}
        for plugin in netlist.plugins:
            conf = self._plugin_config(netlist, plugin, rt, entry.get("result"))
            self.exec_plugin(plugin["type"], "CHECK", conf, rt)

    def status(self, netlist: NetworkList) -> None:
        for plugin in netlist.plugins:
            self.exec_plugin(plugin["type"], "STATUS", self._plugin_config(netlist, plugin, None, None), None)

    def gc(self, netlist: NetworkList, valid: list[dict], cache_dir: str) -> list[str]:
        """libcni's GCNetworkList: DEL every cached attachment not in ``valid``, then let each
        plugin sweep what it holds; returns the container IDs removed."""
        keep = {(a["containerID"], a.get("ifname", "eth0")) for a in valid}
        removed = []
        for entry in cached_attachments(netlist.name, cache_dir):
            key = (entry.get("containerId"), entry.get("ifName"))
            if key in keep:
                continue
            rt = RuntimeConf(container_id=key[0], netns=entry.get("netns", ""), ifname=key[1],
                             args=[tuple(a) for a in entry.get("cniArgs") or []],
                             capability_args=entry.get("capabilityArgs") or {}, cache_dir=cache_dir)
            with contextlib.suppress(PluginError):
                self.delete(netlist, rt)
                removed.append(key[0])
        if netlist.disable_gc or spec.version_tuple(netlist.cni_version) < (1, 1, 0):
            return removed
        attachments = [{"containerID": c, "ifname": i} for c, i in sorted(keep)]
        for plugin in netlist.plugins:
            conf = self._plugin_config(netlist, plugin, None, None)
            conf["cni.dev/valid-attachments"] = attachments
            self.exec_plugin(plugin["type"], "GC", conf, None)
        return removed


@contextlib.contextmanager
def _entered(path: str):
    from netsim import kernel

    with kernel.entered(path):
        yield


def source_dir() -> str:
    """netsim's plugin executables in a checkout (Python; absent from a pip-installed package)."""
    return os.path.join(_package_root(), "cni_plugins")


def built_dir() -> str:
    return os.path.join(source_dir(), "bin")


def _package_root() -> str:
    """The directory holding the ``netsim`` package: a checkout, or site-packages."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def shim_source() -> str:
    """The compiled launcher's source, shipped as package data so any install can build it."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim.c")


def install_key() -> str:
    """Names what a launcher is bound to: this interpreter and this netsim."""
    import hashlib
    import sys

    return hashlib.sha256(f"{sys.executable}\0{_package_root()}".encode()).hexdigest()[:16]


def generated_dir() -> str:
    """Where launchers for this interpreter and this netsim are generated: a directory netsim
    owns, one per (interpreter, package root), so two venvs never share launchers."""
    key = install_key()
    if os.geteuid() == 0:
        base = "/var/lib/netsim/cni-bin"
    else:
        base = os.path.join(os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"),
                            "netsim", "cni-bin")
    return os.path.join(base, key)


def _complete(directory: str) -> bool:
    return all(os.access(os.path.join(directory, t), os.X_OK) for t in spec.MODULES)


def plugin_dir() -> str:
    """The directory to use as CNI_PATH, holding launchers that run with this installation:
    a checkout's compiled launchers when `make install` built them, else launchers generated
    on first use for this interpreter (compiled when a C compiler is at hand, else scripts)."""
    built = built_dir()
    if _complete(built):
        return built
    directory = generated_dir()
    if not _complete(directory) or os.path.getmtime(os.path.join(directory, "bridge")) < os.path.getmtime(
            shim_source()):
        install(directory)
    return directory


def _compile_shim(output: str) -> bool:
    import shutil

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return False
    import sys

    source = shim_source()
    for value in (sys.executable, _package_root()):
        if any(c in value for c in "'\"\\"):
            raise OSError(f"cannot build the CNI launcher for a path with quotes or backslashes: {value!r}")
    from netsim.cni import standalone

    defines = [f'-DPYTHON="{sys.executable}"', f'-DNETSIM_ROOT="{_package_root()}"',
               f'-DSTANDALONE_SOCKET="{standalone.socket_path(install_key())}"']
    proc = subprocess.run([cc, "-O2", "-Wall", "-Werror", *defines, "-o", output, source], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise OSError(f"building the CNI launcher failed: {proc.stderr.strip()}")
    return True


def install(directory: str) -> list[str]:
    """Write netsim's plugins into ``directory``, for runtimes that look in a plugin dir of
    their own: the compiled launcher (netsim/cni/shim.c) under each plugin's name when a C
    compiler is at hand, else Python executables bound to this interpreter and checkout."""
    import sys

    from netsim.cni import standalone

    os.makedirs(directory, exist_ok=True)
    launcher = os.path.join(directory, f".netsim-cni-launcher.{os.getpid()}")
    compiled = _compile_shim(launcher)
    written = []
    try:
        for plugin_type in spec.MODULES:
            path = os.path.join(directory, plugin_type)
            tmp = f"{path}.tmp{os.getpid()}"
            if compiled:
                shutil_copy(launcher, tmp)
            else:
                with open(tmp, "w") as f:
                    f.write(f"#!{sys.executable}\n"
                            f"# {spec.SHIM_MARKER.decode()}: netsim's {plugin_type} CNI plugin (CNI spec 1.1)\n"
                            "import sys\n"
                            f"sys.path.insert(0, {_package_root()!r})\n"
                            "from netsim.cni.shim import main\n"
                            f"main({plugin_type!r}, {standalone.socket_path(install_key())!r})\n")
            os.chmod(tmp, 0o755)
            os.replace(tmp, path)
            written.append(path)
    finally:
        if compiled:
            os.unlink(launcher)
    return written


def shutil_copy(src: str, dst: str) -> None:
    import shutil

    shutil.copyfile(src, dst)
