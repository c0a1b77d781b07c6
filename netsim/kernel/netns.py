"""The one thin layer through which netsim touches the kernel.

Namespaces are made the way ``ip netns add`` makes them (unshare + bind mount under
/run/netns), but in-process: the calling thread enters the new namespace, opens a netlink
socket there and returns.  Each :class:`Namespace` keeps that socket for all its work: no
process per call.  Requests are batched (:meth:`Namespace.batch`): many messages go to the
kernel in one sendmsg and their acks are read together.  pyroute2 supplies the wire format
(its message classes); its request layer costs ~0.5 ms of Python per call, which a 50-node
`up` would pay hundreds of times.  pyroute2 is imported lazily (~160 ms), so commands that
never touch netlink do not pay for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator

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
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # first: a missing path leaks no fd
    try:
        home = _current_netns_fd()
    except BaseException:
        os.close(target)
        raise
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def standing_in(netns: str | None) -> contextlib.AbstractContextManager:
    """entered() for a namespace given by name or path; None stays where the thread is."""
    if netns is None:
        return contextlib.nullcontext()
    return entered(netns if "/" in netns else netns_path(netns))


# -- sysctls (the net.* ones are per namespace) -------------------------------------------
_KEY_TO_PATH = str.maketrans("./", "/.")


def sysctl(key: str, value: str | int | None = None, *, netns: str | None = None) -> str:
    """Read, or write then read, a sysctl (``net.ipv4.ip_forward``) of ``netns``.  The net.*
    ones are per namespace, and /proc/sys/net resolves against the namespace of the thread
    that opens it, so the file is opened standing in ``netns`` (None: the calling thread's).
    As for sysctl(8), a ``/`` in the key is a dot in a name (``net.ipv4.conf.eth0/100.forwarding``)."""
    path = "/proc/sys/" + key.translate(_KEY_TO_PATH)
    with standing_in(netns):
        if value is not None:
            with open(path, "w") as f:
                f.write(str(value))
        with open(path) as f:
            return f.read().strip()



NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
IFF_UP = 0x1
IFF_PROMISC = 0x100
IFA_F_NODAD = 0x2
RTM_DELROUTE = 25
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
FR_ACT_TO_TBL, FR_ACT_BLACKHOLE = 1, 6
RT_TABLE_LOCAL = 255
RTNH_F_ONLINK = 0x4
RTM_F_CLONED = 0x200  # a cached exception (PMTU, redirect) of a route, not a route
RTPROT_KERNEL, RTPROT_BOOT, RTPROT_STATIC = 2, 3, 4
RTN_UNICAST, RTN_BLACKHOLE = 1, 6
RT_SCOPE_NOWHERE = 255
NUD_PERMANENT = 0x80
NTF_SELF = 0x2
AF_BRIDGE = 7
_NLMSGHDR = struct.Struct("=IHHII")


def socket_in(netns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket that lives in namespace ``netns`` (a socket keeps the namespace it was made in)."""
    with entered(netns_path(netns)):
        return socket.socket(family, kind, proto)


class NetlinkError(OSError):
    pass


def _link_info(msg) -> dict:
    linkinfo = msg.get("IFLA_LINKINFO")
    return {
        "index": msg["index"],
        "up": bool(msg["flags"] & IFF_UP),
        "mtu": msg.get("IFLA_MTU"),
        "master": msg.get("IFLA_MASTER"),
        "operstate": msg.get("IFLA_OPERSTATE"),
        "carrier": bool(msg.get("IFLA_CARRIER")),
        "mac": msg.get("IFLA_ADDRESS"),
        "promisc": bool(msg["flags"] & IFF_PROMISC),
        "kind": linkinfo.get("IFLA_INFO_KIND") if linkinfo else None,
    }


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _codec():
    """pyroute2's rtnetlink message classes: the wire format, without its request machinery."""
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    return ifinfmsg, ifaddrmsg, rtmsg


def load_codec() -> None:
    """Import the netlink codec now (~160 ms), not during the first request that needs it."""
    _codec()


def _rule_codec():
    """pyroute2's policy routing rule message class (`ip rule`)."""
    from pyroute2.netlink.rtnl.fibmsg import fibmsg

    return fibmsg


def _neigh_codec():
    """pyroute2's neighbour message class (ARP/ND entries, and fdb entries with AF_BRIDGE)."""
    from pyroute2.netlink.rtnl.ndmsg import ndmsg

    return ndmsg


class Batch:
    """rtnetlink requests for one namespace, sent in one sendmsg when the block ends; every
    request is acknowledged and the first failure is raised, naming the request."""

    def __init__(self, ns: Namespace):
        self.ns = ns
        self.requests: list[tuple[object, frozenset[int], str]] = []
        self.fds: list[int] = []

    def _add(self, msg_class, msg_type: int, flags: int, fields: dict, attrs: list, what: str,
             allow: tuple[int, ...] = ()) -> None:
        msg = msg_class()
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        for key, value in fields.items():
            msg[key] = value
        msg["attrs"] = attrs
        self.requests.append((msg, frozenset(allow), what))

    def add_bridge(self, ifname: str, mtu: int, *, exist_ok: bool = False) -> None:
        ifinfmsg, _, _ = _codec()
        self._add(ifinfmsg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, {},
                  [("IFLA_IFNAME", ifname), ("IFLA_MTU", mtu),
                   ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]})], f"add bridge {ifname}",
                  allow=(errno.EEXIST,) if exist_ok else ())

    def add_dummy(self, ifname: str, kind: str = "dummy") -> None:
        """A link of a kind with no parameters: dummy, or the fallback tunnel of "ipip" (tunl0)."""
        ifinfmsg, _, _ = _codec()
        self._add(ifinfmsg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, {},
                  [("IFLA_IFNAME", ifname), ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", kind)]})],
                  f"add {kind} {ifname}", allow=(errno.EEXIST,))

    def add_veth(self, ifname: str, peer: str, peer_ns: Namespace, mtu: int, index: int = 0,
                 peer_mac: str | None = None) -> None:
        """A veth pair whose peer end is born directly in ``peer_ns`` (so it never appears here
        under a name that could clash).  ``index`` pins this end's ifindex: in a fresh
        namespace the next requests can then name it without asking."""
        ifinfmsg, _, _ = _codec()
        fd = peer_ns.fd()
        self.fds.append(fd)
        peer_attrs = [("IFLA_IFNAME", peer), ("IFLA_NET_NS_FD", fd), ("IFLA_MTU", mtu)]
        if peer_mac:
            peer_attrs.append(("IFLA_ADDRESS", peer_mac))
        self._add(ifinfmsg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, {"index": index},
                  [("IFLA_IFNAME", ifname), ("IFLA_MTU", mtu),
                   ("IFLA_LINKINFO", {"attrs": [
                       ("IFLA_INFO_KIND", "veth"),
                       ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer_attrs})]})]})],
                  f"add veth {ifname} (peer {peer} in {peer_ns.name})")

    def set_link(self, ifname: str, *, index: int = 0, up: bool | None = None, master: int | None = None,
                 mtu: int | None = None, promisc: bool | None = None, mac: str | None = None,
                 rename: str | None = None) -> None:
        """Change a link, named by index or (index 0) by name; ``rename`` needs the index and a
        link that is down."""
        ifinfmsg, _, _ = _codec()
        fields: dict = {"index": index, "flags": 0, "change": 0}
        for flag, wanted in ((IFF_UP, up), (IFF_PROMISC, promisc)):
            if wanted is not None:
                fields["flags"] |= flag if wanted else 0
                fields["change"] |= flag
        attrs: list = [] if index else [("IFLA_IFNAME", ifname)]
        if rename is not None:
            if not index:
                raise ValueError("rename a link by its index")
            attrs.append(("IFLA_IFNAME", rename))
        if master is not None:
            attrs.append(("IFLA_MASTER", master))
        if mtu is not None:
            attrs.append(("IFLA_MTU", mtu))
        if mac is not None:
            attrs.append(("IFLA_ADDRESS", mac))
        self._add(ifinfmsg, RTM_NEWLINK, 0, fields, attrs, f"set link {ifname}")

    def move_link(self, index: int, target: Namespace) -> None:
        """Move a link into another namespace (``ip link set X netns T``).  The kernel takes it
        down and drops its addresses and routes on the way."""
        ifinfmsg, _, _ = _codec()
        fd = target.fd()
        self.fds.append(fd)
        self._add(ifinfmsg, RTM_NEWLINK, 0, {"index": index, "flags": 0, "change": 0},
                  [("IFLA_NET_NS_FD", fd)], f"move link {index} to {target.name}")

    def set_bridge_port(self, ifname: str, *, hairpin: bool) -> None:
        """Bridge-port options of an enslaved link (``ip link set X type bridge_slave hairpin on``)."""
        ifinfmsg, _, _ = _codec()
        self._add(ifinfmsg, RTM_NEWLINK, 0, {"index": 0},
                  [("IFLA_IFNAME", ifname),
                   ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_SLAVE_KIND", "bridge"),
                                                ("IFLA_INFO_SLAVE_DATA", {"attrs": [
                                                    ("IFLA_BRPORT_MODE", int(hairpin))]})]})],
                  f"set bridge port {ifname} hairpin {hairpin}")

    def delete_link(self, ifname: str) -> None:
        """Delete a link if present; deleting one veth end takes its peer with it at once."""
        ifinfmsg, _, _ = _codec()
        self._add(ifinfmsg, RTM_DELLINK, 0, {}, [("IFLA_IFNAME", ifname)], f"delete link {ifname}",
                  allow=(errno.ENODEV,))

    def add_address(self, index: int, cidr: str, *, nodad: bool = False, broadcast: str | None = None) -> None:
        _, ifaddrmsg, _ = _codec()
        address, prefixlen = cidr.split("/")
        family = _family(address)
        fields = {"family": family, "prefixlen": int(prefixlen), "index": index}
        if nodad and family == socket.AF_INET6:
            fields["flags"] = IFA_F_NODAD
        attrs = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)] if family == socket.AF_INET else [
            ("IFA_ADDRESS", address)]
        if broadcast:
            attrs.append(("IFA_BROADCAST", broadcast))
        self._add(ifaddrmsg, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, fields, attrs, f"add address {cidr}",
                  allow=(errno.EEXIST,))

    def delete_address(self, index: int, cidr: str) -> None:
        _, ifaddrmsg, _ = _codec()
        address, prefixlen = cidr.split("/")
        self._add(ifaddrmsg, RTM_DELADDR, 0, {"family": _family(address), "prefixlen": int(prefixlen),
                                             "index": index},
                  [("IFA_LOCAL", address), ("IFA_ADDRESS", address)], f"delete address {cidr}",
                  allow=(errno.EADDRNOTAVAIL,))

    def replace_route(self, dst: str, *, gateway: str | None = None, oif: int = 0, onlink: bool = False,
                      proto: int = RTPROT_STATIC, priority: int | None = None, rtype: int = RTN_UNICAST) -> None:
        """``onlink``: the gateway is taken to be on ``oif``'s link whatever its addresses say
        (RTNH_F_ONLINK, as ``ip route ... onlink``); ``rtype`` RTN_BLACKHOLE: ``blackhole DST``."""
        _, _, rtmsg = _codec()
        prefixlen = 0
        attrs: list = []
        family = _family(gateway or dst)
        if dst not in ("default", "0.0.0.0/0", "::/0"):
            network, prefixlen = dst.split("/")
            attrs.append(("RTA_DST", network))
        if gateway:
            attrs.append(("RTA_GATEWAY", gateway))
        if oif:
            attrs.append(("RTA_OIF", oif))
        if priority is not None:
            attrs.append(("RTA_PRIORITY", priority))
        self._add(rtmsg, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE,
                  {"family": family, "dst_len": int(prefixlen), "table": 254, "proto": proto,
                   "scope": 0 if gateway or rtype != RTN_UNICAST else 253, "type": rtype,
                   "flags": RTNH_F_ONLINK if onlink else 0},
                  attrs, f"replace route {dst}")

    def delete_route(self, dst: str, *, gateway: str | None = None, oif: int = 0,
                     priority: int | None = None) -> None:
        """Delete one main-table route if present; gateway, oif and priority (when given) must
        match too, so a route of the same destination that differs is left alone."""
        _, _, rtmsg = _codec()
        network, prefixlen = dst.split("/")
        attrs: list = [("RTA_DST", network)]
        if gateway:
            attrs.append(("RTA_GATEWAY", gateway))
        if oif:
            attrs.append(("RTA_OIF", oif))
        if priority is not None:
            attrs.append(("RTA_PRIORITY", priority))
        # Scope "nowhere", type and protocol 0: the kernel matches any of them.
        self._add(rtmsg, RTM_DELROUTE, 0,
                  {"family": _family(network), "dst_len": int(prefixlen), "table": 254, "proto": 0,
                   "scope": RT_SCOPE_NOWHERE, "type": 0},
                  attrs, f"delete route {dst}", allow=(errno.ESRCH,))

    def add_vxlan(self, ifname: str, *, vni: int, port: int, local: str, link: int, mtu: int,
                  mac: str | None = None, learning: bool = False) -> None:
        """A VXLAN device (``ip link add IFNAME type vxlan id VNI local LOCAL dev LINK dstport
        PORT [no]learning``), no group or remote: its fdb entries say where frames go."""
        ifinfmsg, _, _ = _codec()
        attrs: list = [("IFLA_IFNAME", ifname), ("IFLA_MTU", mtu)]
        if mac:
            attrs.append(("IFLA_ADDRESS", mac))
        attrs.append(("IFLA_LINKINFO", {"attrs": [
            ("IFLA_INFO_KIND", "vxlan"),
            ("IFLA_INFO_DATA", {"attrs": [("IFLA_VXLAN_ID", vni), ("IFLA_VXLAN_LOCAL", local),
                                          ("IFLA_VXLAN_LINK", link), ("IFLA_VXLAN_PORT", port),
                                          ("IFLA_VXLAN_LEARNING", int(learning))]})]}))
        self._add(ifinfmsg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, {}, attrs,
                  f"add vxlan {ifname} (vni {vni}, port {port}, local {local})")

    def _rule(self, msg_type: int, flags: int, family: int, priority: int, action: int, table: int,
              iifname: str | None, ipproto: int, protocol: int | None, what: str, allow: tuple[int, ...]) -> None:
        attrs = [("FRA_PRIORITY", priority)]
        if table:
            attrs.append(("FRA_TABLE", table))
        if iifname:
            attrs.append(("FRA_IIFNAME", iifname))
        if ipproto:
            attrs.append(("FRA_IP_PROTO", ipproto))
        if protocol is not None:
            attrs.append(("FRA_PROTOCOL", protocol))
        fields = {"family": family, "action": action, "table": table if table < 256 else 0}
        self._add(_rule_codec(), msg_type, flags, fields, attrs, what, allow=allow)

    def add_rule(self, family: int, priority: int, *, action: int = FR_ACT_TO_TBL, table: int = 0,
                 iifname: str | None = None, ipproto: int = 0, protocol: int | None = None) -> None:
        """An `ip rule` (a rule that is there already is no error)."""
        self._rule(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, family, priority, action, table, iifname, ipproto,
                   protocol, f"add rule pref {priority}", (errno.EEXIST,))

    def delete_rule(self, family: int, priority: int, *, action: int = FR_ACT_TO_TBL, table: int = 0,
                    iifname: str | None = None, ipproto: int = 0, protocol: int | None = None) -> None:
        """Delete the first rule matching what is given (one that is not there is no error)."""
        self._rule(RTM_DELRULE, 0, family, priority, action, table, iifname, ipproto, protocol,
                   f"delete rule pref {priority}", (errno.ENOENT,))

    def replace_neigh(self, index: int, ip: str, mac: str) -> None:
        """A permanent neighbour entry (``ip neigh replace IP lladdr MAC dev X nud permanent``)."""
        ndmsg = _neigh_codec()
        self._add(ndmsg, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE,
                  {"family": _family(ip), "ifindex": index, "state": NUD_PERMANENT, "ndm_type": 1},
                  [("NDA_DST", ip), ("NDA_LLADDR", mac)], f"replace neighbour {ip} ({mac})")

    def delete_neigh(self, index: int, ip: str) -> None:
        ndmsg = _neigh_codec()
        self._add(ndmsg, RTM_DELNEIGH, 0, {"family": _family(ip), "ifindex": index},
                  [("NDA_DST", ip)], f"delete neighbour {ip}", allow=(errno.ENOENT,))

    def replace_fdb(self, index: int, mac: str, dst: str) -> None:
        """A permanent forwarding entry of the device itself (``bridge fdb replace MAC dev X dst
        DST self permanent``): on a VXLAN device, frames for MAC go to DST."""
        ndmsg = _neigh_codec()
        self._add(ndmsg, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE,
                  {"family": AF_BRIDGE, "ifindex": index, "state": NUD_PERMANENT, "flags": NTF_SELF},
                  [("NDA_LLADDR", mac), ("NDA_DST", dst)], f"replace fdb {mac} dst {dst}")

    def delete_fdb(self, index: int, mac: str, dst: str | None = None) -> None:
        """Delete a device's own forwarding entry: only the remote ``dst`` of it when given,
        else (or when that was its only remote) the whole entry."""
        ndmsg = _neigh_codec()
        attrs: list = [("NDA_LLADDR", mac)]
        if dst:
            attrs.append(("NDA_DST", dst))
        self._add(ndmsg, RTM_DELNEIGH, 0, {"family": AF_BRIDGE, "ifindex": index, "flags": NTF_SELF},
                  attrs, f"delete fdb {mac}" + (f" dst {dst}" if dst else ""), allow=(errno.ENOENT,))

    def commit(self) -> None:
        if self.requests:
            self.ns.send(self.requests)
        self.requests = []

    def close(self) -> None:
        """Close the namespace fds that add_veth requests carried, sent or not."""
        for fd in self.fds:
            os.close(fd)
        self.fds = []


class Namespace:
    """One network namespace and the rtnetlink socket netsim keeps open in it.  A netlink
    socket stays bound to the namespace it was opened in, so all work here goes through it."""

    def __init__(self, name: str, sock: socket.socket):
        self.name = name
        self.path = netns_path(name)
        self.sock = sock
        self._seq = 0

    # -- life cycle -----------------------------------------------------------------
    @staticmethod
    def _rtnl_socket() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)  # NETLINK_ROUTE
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, 0))
        return sock

    @classmethod
    def create(cls, name: str) -> Namespace:
        """Create the namespace (as `ip netns add` does) and open a netlink socket inside it."""
        path = netns_path(name)
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
        home = _current_netns_fd()
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            try:
                _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
                       f"bind mount {path}")
                sock = cls._rtnl_socket()
            finally:
                _setns(home)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        finally:
            os.close(home)
        return cls(name, sock)

    @classmethod
    def open(cls, name: str) -> Namespace:
        with entered(netns_path(name)):
            sock = cls._rtnl_socket()
        return cls(name, sock)

    @classmethod
    def at(cls, path: str) -> Namespace:
        """A namespace known by a path only (a CNI_NETNS: /run/netns/x, /proc/PID/ns/net)."""
        with entered(path):
            sock = cls._rtnl_socket()
        ns = cls(path, sock)
        ns.path = path
        return ns

    @classmethod
    def here(cls) -> Namespace:
        """The calling thread's own namespace (a CNI plugin's runtime namespace)."""
        path = f"/proc/self/task/{threading.get_native_id()}/ns/net"
        ns = cls(path, cls._rtnl_socket())
        ns.path = path
        return ns

    def __enter__(self) -> Namespace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def fd(self) -> int:
        return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)

    # -- talking netlink ------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[Batch]:
        b = Batch(self)
        try:
            yield b
            b.commit()
        finally:
            b.close()

    def send(self, requests: list[tuple[object, frozenset[int], str]]) -> None:
        pending: dict[int, tuple[frozenset[int], str]] = {}
        chunks: list[bytes] = []
        for msg, allow, what in requests:
            self._seq += 1
            msg["header"]["sequence_number"] = self._seq
            msg.encode()
            chunks.append(bytes(msg.data))
            pending[self._seq] = (allow, what)
        # The kernel handles every message of one sendmsg in order and acks each.  The acks of
        # one sendmsg (at most 32 KiB and 128 requests) are read before the next is sent: each
        # ack takes ~1 KiB of the socket's receive buffer (212 KiB), and a few hundred unread
        # ones overflow it (ENOBUFS).
        if not chunks:
            return
        failure = None
        seqs = list(pending)
        size = start = 0
        for i, chunk in enumerate(chunks + [b""]):
            if i == len(chunks) or ((size + len(chunk) > 32768 or i - start >= 128) and i > start):
                self.sock.send(b"".join(chunks[start:i]))
                last = seqs[i - 1]
                while last in pending:
                    for msg_type, seq, payload in self._read():
                        if msg_type != NLMSG_ERROR or seq not in pending:
                            continue
                        allow, what = pending.pop(seq)
                        code = -struct.unpack_from("=i", payload)[0]
                        if code and code not in allow and failure is None:
                            failure = NetlinkError(code, f"{what} in {self.name}: {os.strerror(code)}")
                start, size = i, 0
            size += len(chunk)
        if failure:
            raise failure

    def _read(self) -> Iterator[tuple[int, int, bytes]]:
        data = self.sock.recv(1 << 20)
        offset = 0
        while offset + _NLMSGHDR.size <= len(data):
            length, msg_type, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
            yield msg_type, seq, data[offset + _NLMSGHDR.size: offset + length]
            offset += (length + 3) & ~3

    def dump(self, msg_class, msg_type: int, family: int = 0) -> list:
        """Every object of a kind, decoded by pyroute2's codec."""
        req = msg_class()
        req["header"]["type"] = msg_type
        req["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
        self._seq += 1
        req["header"]["sequence_number"] = seq = self._seq
        req["family"] = family
        req.encode()
        self.sock.send(bytes(req.data))
        out = []
        while True:
            for mtype, rseq, payload in self._read():
                if rseq != seq:
                    continue
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    raise NetlinkError(code, f"dump in {self.name}: {os.strerror(code)}")
                msg = msg_class(struct.pack("=IHHII", len(payload) + 16, mtype, 0, rseq, 0) + payload)
                msg.decode()
                out.append(msg)

    # -- reading state --------------------------------------------------------------------
    def links(self) -> dict[str, dict]:
        """Every link in the namespace: name -> {index, up, mtu, master, operstate, carrier, mac, ...}."""
        ifinfmsg, _, _ = _codec()
        return {msg.get("IFLA_IFNAME"): _link_info(msg) for msg in self.dump(ifinfmsg, RTM_GETLINK)}

    def _get_link(self, ifname: str):
        """The RTM_NEWLINK message for one link by name (one request, one reply: no dump of
        every link), decoded; None if there is no such link."""
        ifinfmsg, _, _ = _codec()
        req = ifinfmsg()
        req["header"]["type"] = RTM_GETLINK
        req["header"]["flags"] = NLM_F_REQUEST
        self._seq += 1
        req["header"]["sequence_number"] = seq = self._seq
        req["attrs"] = [("IFLA_IFNAME", ifname)]
        req.encode()
        self.sock.send(bytes(req.data))
        while True:
            for mtype, rseq, payload in self._read():
                if rseq != seq:
                    continue
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code in (errno.ENODEV, errno.ENOENT):
                        return None
                    raise NetlinkError(code, f"get link {ifname} in {self.name}: {os.strerror(code)}")
                msg = ifinfmsg(struct.pack("=IHHII", len(payload) + 16, mtype, 0, rseq, 0) + payload)
                msg.decode()
                return msg

    def link(self, ifname: str) -> dict | None:
        """One link by name, or None."""
        msg = self._get_link(ifname)
        return None if msg is None else {"name": ifname, **_link_info(msg)}

    def addresses_of(self, index: int, family: int = 0) -> set[str]:
        """The addresses on one link (a dump of addresses only; links are not listed)."""
        _, ifaddrmsg, _ = _codec()
        return {f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}" for msg in self.dump(ifaddrmsg, RTM_GETADDR, family)
                if msg["index"] == index}

    def address_entries(self, index: int) -> list[dict]:
        """The IPv4 addresses of one link in full: [{cidr, broadcast}] (what restoring them needs)."""
        _, ifaddrmsg, _ = _codec()
        return [{"cidr": f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}", "broadcast": msg.get("IFA_BROADCAST")}
                for msg in self.dump(ifaddrmsg, RTM_GETADDR, socket.AF_INET) if msg["index"] == index]

    def index(self, ifname: str) -> int:
        link = self.links().get(ifname)
        if link is None:
            raise KernelError(f"no link {ifname!r} in namespace {self.name}")
        return link["index"]

    def addresses(self, family: int = socket.AF_INET) -> dict[str, set[str]]:
        """ifname -> {"a.b.c.d/len", ...} (IPv4 unless ``family`` says otherwise; 0 for both)."""
        _, ifaddrmsg, _ = _codec()
        names = {v["index"]: k for k, v in self.links().items()}
        out: dict[str, set[str]] = {}
        for msg in self.dump(ifaddrmsg, RTM_GETADDR, family):
            name = names.get(msg["index"], str(msg["index"]))
            out.setdefault(name, set()).add(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
        return out

    def routes(self) -> list[dict]:
        """The main table's IPv4 routes as {dst, gateway}."""
        _, _, rtmsg = _codec()
        out = []
        for msg in self.dump(rtmsg, RTM_GETROUTE, socket.AF_INET):
            if msg.get("RTA_TABLE") != 254:
                continue
            dst = msg.get("RTA_DST")
            out.append({"dst": f"{dst}/{msg['dst_len']}" if dst else "default",
                        "gateway": msg.get("RTA_GATEWAY")})
        return out

    def route_entries(self, family: int = socket.AF_INET) -> list[dict]:
        """The main table's routes in full: {dst ("a.b.c.d/n" or "default"), gateway, oif,
        priority, proto, scope, type, onlink, cloned}.  Multipath routes show their first hop only;
        ``cloned``: a cached exception (a tunnel's PMTU, say), which `ip route` shows only with
        ``show cache``."""
        _, _, rtmsg = _codec()
        out = []
        for msg in self.dump(rtmsg, RTM_GETROUTE, family):
            if msg.get("RTA_TABLE") != 254:
                continue
            dst = msg.get("RTA_DST")
            oif, gateway = msg.get("RTA_OIF"), msg.get("RTA_GATEWAY")
            flags = cloned = msg["flags"]
            hops = msg.get("RTA_MULTIPATH")
            if hops:
                oif, gateway, flags = hops[0]["oif"], hops[0].get("RTA_GATEWAY"), hops[0]["flags"]
            out.append({"dst": f"{dst}/{msg['dst_len']}" if dst else "default", "gateway": gateway,
                        "oif": oif or 0, "priority": msg.get("RTA_PRIORITY"), "proto": msg["proto"],
                        "scope": msg["scope"], "type": msg["type"], "onlink": bool(flags & RTNH_F_ONLINK),
                        "cloned": bool(cloned & RTM_F_CLONED)})
        return out

    def rules(self, family: int = socket.AF_INET) -> list[dict]:
        """The policy routing rules, in order: {priority, action, table, iifname, ipproto, protocol}."""
        return [{"priority": msg.get("FRA_PRIORITY") or 0, "action": msg["action"],
                 "table": msg.get("FRA_TABLE") or msg["table"], "iifname": msg.get("FRA_IIFNAME"),
                 "ipproto": msg.get("FRA_IP_PROTO") or 0, "protocol": msg.get("FRA_PROTOCOL")}
                for msg in self.dump(_rule_codec(), RTM_GETRULE, family)]

    def neighbours(self, ifindex: int, family: int = socket.AF_INET) -> dict[str, dict]:
        """The neighbour (ARP) entries of one link: ip -> {mac, state} (state: NUD_* bits)."""
        ndmsg = _neigh_codec()
        return {msg.get("NDA_DST"): {"mac": msg.get("NDA_LLADDR"), "state": msg["state"]}
                for msg in self.dump(ndmsg, RTM_GETNEIGH, family)
                if msg["ifindex"] == ifindex and msg.get("NDA_DST")}

    def fdb(self, ifindex: int) -> list[dict]:
        """The forwarding entries of one link (``bridge fdb show dev X``): [{mac, dst, state,
        self}]; a VXLAN entry with several remotes is one item per remote."""
        ndmsg = _neigh_codec()
        return [{"mac": msg.get("NDA_LLADDR"), "dst": msg.get("NDA_DST"), "state": msg["state"],
                 "self": bool(msg["flags"] & NTF_SELF)}
                for msg in self.dump(ndmsg, RTM_GETNEIGH, AF_BRIDGE) if msg["ifindex"] == ifindex]

    def vxlan(self, ifname: str) -> dict | None:
        """A link as :meth:`link` gives it plus, for a VXLAN device, {vni, port, local, link,
        learning}; None if there is no such link."""
        msg = self._get_link(ifname)
        if msg is None:
            return None
        info = {"name": ifname, **_link_info(msg)}
        linkinfo = msg.get("IFLA_LINKINFO")
        data = linkinfo.get("IFLA_INFO_DATA") if linkinfo else None
        if info["kind"] == "vxlan" and data is not None:
            info.update(vni=data.get("IFLA_VXLAN_ID"), port=data.get("IFLA_VXLAN_PORT"),
                        local=data.get("IFLA_VXLAN_LOCAL"), link=data.get("IFLA_VXLAN_LINK"),
                        learning=bool(data.get("IFLA_VXLAN_LEARNING")))
        return info

    # -- sysctls ----------------------------------------------------------------------
    def sysctl(self, key: str, value: str | int | None = None) -> str:
        """Read, or write then read, a net.* sysctl of this namespace."""
        return sysctl(key, value, netns=self.path)


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
    return terminate(list(pids_in_netns(list(names))), grace)


def signal_all(pids: list[int], sig: int = signal.SIGTERM) -> None:
    """Send sig to each of pids that still exists, waiting for none."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def terminate(pids: list[int], grace: float) -> list[int]:
    """SIGTERM ``pids``, then SIGKILL those still alive after ``grace`` seconds; returns those."""
    signal_all(pids)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.02)
        pids = [p for p in pids if process_alive(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):  # ESRCH: exiting while read
        return False


def delete_netns(name: str) -> None:
    """Unmount and remove the namespace file; the kernel frees the namespace (and every link
    in it, taking veth peers elsewhere with them) once nothing holds it."""
    path = netns_path(name)
    if _libc.umount2(path.encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        _check(-1, f"umount {path}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    remove_netns_etc(name)


NETNS_ETC = "/etc/netns"  # per-namespace files `ip netns exec` bind-mounts over /etc (resolv.conf)


def write_netns_etc(name: str, filename: str, text: str) -> bool:
    """Write /etc/netns/<name>/<filename> if it differs; True when written."""
    path = os.path.join(NETNS_ETC, name, filename)
    try:
        with open(path) as f:
            if f.read() == text:
                return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def remove_netns_etc(name: str) -> None:
    shutil.rmtree(os.path.join(NETNS_ETC, name), ignore_errors=True)


def list_netns_etc(prefix: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_ETC) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def remove_netns(names: Iterable[str]) -> list[str]:
    """Remove whole namespaces: first the processes in them, then the namespaces themselves."""
    names = list(names)
    kill_processes_in(names)
    for name in names:
        delete_netns(name)
    return names
