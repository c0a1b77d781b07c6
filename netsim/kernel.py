"""The one thin layer through which netsim touches the kernel.

Namespaces are made the way ``ip netns add`` makes them (unshare + bind mount under
/run/netns), but in-process: the calling thread enters the new namespace, opens a netlink
socket there and returns.  A netlink socket stays bound to the namespace it was opened in,
so each :class:`Namespace` keeps one open for all its work: no process per call.
pyroute2 is imported lazily; it costs ~180 ms, which commands that never touch netlink
should not pay.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyroute2 import IPRoute

NETNS_DIR = "/run/netns"

CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_BIND = 0x1000
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


class KernelError(RuntimeError):
    pass


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def _current_netns_fd() -> int:
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def _setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def ensure_netns_dir() -> None:
    """Make /run/netns a shared mount point, exactly as iproute2 does, so namespace bind
    mounts made here are seen by ``ip netns`` and by every other mount namespace."""
    os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
    if _libc.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:
        _check(-1, f"mount --make-rshared {NETNS_DIR}")
    _check(_libc.mount(NETNS_DIR.encode(), NETNS_DIR.encode(), b"none", MS_BIND | MS_REC, None),
           f"mount --bind {NETNS_DIR}")
    _check(_libc.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None),
           f"mount --make-rshared {NETNS_DIR}")


def list_netns(prefix: str = "") -> list[str]:
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def netns_exists(name: str) -> bool:
    path = netns_path(name)
    try:
        # A mounted namespace file is on nsfs; a bare file left by a killed `up` is not.
        return os.stat(path).st_dev != os.stat(NETNS_DIR).st_dev
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def entered(path: str) -> Iterator[None]:
    """Run the body with the calling thread inside the namespace at ``path``."""
    home = _current_netns_fd()
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


class Namespace:
    """One network namespace and the netlink socket netsim keeps open in it."""

    def __init__(self, name: str, ipr: IPRoute):
        self.name = name
        self.path = netns_path(name)
        self.ipr = ipr
        self._index: dict[str, int] = {}

    # -- life cycle -----------------------------------------------------------------
    @classmethod
    def create(cls, name: str) -> Namespace:
        """Create the namespace and open a netlink socket inside it."""
        from pyroute2 import IPRoute

        path = netns_path(name)
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
        home = _current_netns_fd()
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            try:
                _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
                       f"bind mount {path}")
                ipr = IPRoute()
            finally:
                _setns(home)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        finally:
            os.close(home)
        return cls(name, ipr)

    @classmethod
    def open(cls, name: str) -> Namespace:
        from pyroute2 import IPRoute

        path = netns_path(name)
        with entered(path):
            ipr = IPRoute()
        return cls(name, ipr)

    def close(self) -> None:
        self.ipr.close()

    def fd(self) -> int:
        return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)

    # -- links ----------------------------------------------------------------------
    def index(self, ifname: str) -> int:
        if ifname not in self._index:
            found = self.ipr.link_lookup(ifname=ifname)
            if not found:
                raise KernelError(f"no link {ifname!r} in namespace {self.name}")
            self._index[ifname] = found[0]
        return self._index[ifname]

    def links(self) -> dict[str, dict]:
        """Every link in the namespace: name -> {index, state, mtu, master}."""
        out = {}
        for msg in self.ipr.link("dump"):
            name = msg.get("IFLA_IFNAME")
            out[name] = {
                "index": msg["index"],
                "up": bool(msg["flags"] & 1),
                "mtu": msg.get("IFLA_MTU"),
                "master": msg.get("IFLA_MASTER"),
                "operstate": msg.get("IFLA_OPERSTATE"),
            }
            self._index[name] = msg["index"]
        return out

    def operstate(self, ifname: str) -> str:
        return self.ipr.link("get", index=self.index(ifname))[0].get("IFLA_OPERSTATE")

    def add_bridge(self, ifname: str, mtu: int) -> None:
        self.ipr.link("add", ifname=ifname, kind="bridge", mtu=mtu)

    def add_veth(self, ifname: str, peer: str, peer_ns: Namespace, mtu: int) -> None:
        """A veth pair whose peer end is born directly in ``peer_ns``: it never appears in
        this namespace under a name that could clash."""
        fd = peer_ns.fd()
        try:
            self.ipr.link("add", ifname=ifname, kind="veth", mtu=mtu,
                          peer={"ifname": peer, "net_ns_fd": fd, "mtu": mtu})
        finally:
            os.close(fd)

    def delete_link(self, ifname: str) -> None:
        """Delete a link if present; deleting one veth end takes its peer with it at once."""
        found = self.ipr.link_lookup(ifname=ifname)
        if found:
            self.ipr.link("del", index=found[0])
        self._index.pop(ifname, None)

    def set_link(self, ifname: str, *, up: bool | None = None, master: str | None = None,
                 mtu: int | None = None) -> None:
        attrs: dict = {}
        if up is not None:
            attrs["state"] = "up" if up else "down"
        if master is not None:
            attrs["master"] = self.index(master)
        if mtu is not None:
            attrs["mtu"] = mtu
        self.ipr.link("set", index=self.index(ifname), **attrs)

    # -- addresses and routes ---------------------------------------------------------
    def addresses(self) -> dict[str, set[str]]:
        """ifname -> {"a.b.c.d/len", ...} for IPv4."""
        names = {v["index"]: k for k, v in self.links().items()}
        out: dict[str, set[str]] = {}
        for msg in self.ipr.addr("dump", family=socket.AF_INET):
            name = names.get(msg["index"], str(msg["index"]))
            out.setdefault(name, set()).add(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
        return out

    def add_address(self, ifname: str, cidr: str) -> None:
        address, prefixlen = cidr.split("/")
        try:
            self.ipr.addr("add", index=self.index(ifname), address=address, prefixlen=int(prefixlen))
        except Exception as exc:  # pyroute2's NetlinkError carries the errno as .code
            if getattr(exc, "code", None) != errno.EEXIST:
                raise

    def replace_route(self, dst: str, *, gateway: str | None = None, ifname: str | None = None) -> None:
        spec: dict = {"dst": dst}
        if gateway:
            spec["gateway"] = gateway
        if ifname:
            spec["oif"] = self.index(ifname)
        self.ipr.route("replace", **spec)

    def routes(self) -> list[dict]:
        out = []
        for msg in self.ipr.route("dump", family=socket.AF_INET, table=254):
            dst = msg.get("RTA_DST")
            out.append({"dst": f"{dst}/{msg['dst_len']}" if dst else "default",
                        "gateway": msg.get("RTA_GATEWAY")})
        return out

    # -- sysctls ----------------------------------------------------------------------
    def sysctl(self, key: str, value: str | int | None = None) -> str:
        """Read, or write then read, a net.* sysctl of this namespace."""
        path = "/proc/sys/" + key.replace(".", "/")
        with entered(self.path):
            # /proc/sys/net resolves against the opening thread's namespace.
            if value is not None:
                with open(path, "w") as f:
                    f.write(str(value))
            with open(path) as f:
                return f.read().strip()

    def socket(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        """A socket that lives in this namespace (sockets keep the namespace they were made in)."""
        with entered(self.path):
            return socket.socket(family, kind, proto)


# -- teardown -----------------------------------------------------------------------------
def _netns_ids(names: Iterable[str]) -> dict[tuple[int, int], str]:
    ids = {}
    for name in names:
        with contextlib.suppress(OSError):
            st = os.stat(netns_path(name))
            ids[(st.st_dev, st.st_ino)] = name
    return ids


def pids_in_netns(names: Iterable[str]) -> dict[int, str]:
    """Processes whose network namespace is one of ``names``: pid -> namespace."""
    ids = _netns_ids(names)
    found: dict[int, str] = {}
    if not ids:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{entry}/ns/net")
            name = ids.get((st.st_dev, st.st_ino))
            if name is not None and int(entry) != os.getpid():
                found[int(entry)] = name
    return found


def kill_processes_in(names: Iterable[str], grace: float = 1.0) -> list[int]:
    """SIGTERM every process in the namespaces, then SIGKILL what is left after ``grace``."""
    names = list(names)
    victims = list(pids_in_netns(names))
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while victims and time.monotonic() < deadline:
        time.sleep(0.02)
        victims = [p for p in victims if _alive(p)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return victims


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def delete_netns(name: str) -> None:
    """Unmount and remove the namespace file; the kernel frees the namespace (and every link
    in it, taking veth peers elsewhere with them) once nothing holds it."""
    path = netns_path(name)
    if _libc.umount2(path.encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        _check(-1, f"umount {path}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
