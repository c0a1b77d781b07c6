"""The ``host-local`` IPAM plugin (CNI spec 1.1), compatible with containernetworking/plugins'.

Addresses come from range sets (``ipam.ranges``, a list of lists of ``{subnet, rangeStart,
rangeEnd, gateway}``; the legacy single range ``ipam.subnet``/``rangeStart``/... is prepended,
and the ``ipRanges`` capability in front of both).  ADD takes one address from every range
set, round-robin: it starts after ``last_reserved_ip.<set index>``, wraps around, skips
addresses already held and each range's gateway.  A requested address (CNI_ARGS ``IP=``,
``args.cni.ips``, the ``ips`` capability) is taken from the range set that contains it.

The store is byte-for-byte the reference plugin's (1.1.1), so either can read the other's:
``<dataDir>/<network name>/`` (dirs 0755) holds one file per held address, named by the
address and containing ``<containerID>\\r\\n<ifname>`` (files 0644; a file holding only the
container ID, as pre-0.7 plugins wrote, is still matched by ID), ``last_reserved_ip.<n>``
with the last address given out of range set n, and ``lock``, flock()ed around every
operation (a fresh open() per call, so threads of one process exclude each other as
processes do).  An address file is written complete under a temporary name and link()ed
into place, which fails if the name exists: two callers can never hold one address, even
one that ignores the lock.

Error codes (the reference answers 999 for everything):

* 7  bad ipam configuration, a requested address that is not in any range or is a gateway;
* 4  ADD for a (CNI_CONTAINERID, CNI_IFNAME) that already holds an address in that range set
  (the reference's "duplicate allocation is not allowed");
* 11 a range set has no free address, or the requested address is held by someone else
  (both clear up when containers go away), or the lock stayed held for LOCK_TIMEOUT seconds;
* 3  CHECK for an attachment that holds nothing;
* 5  the store cannot be read or written;
* 50 STATUS when the store is unusable or some range set is exhausted (ADD would fail).

GC (``cni.dev/valid-attachments``) releases every address of this network whose owner is
not in the list; a file holding only a container ID stays while any listed attachment has
that ID.  STATUS and GC are 1.1 additions the reference (1.1.1) does not implement.

Deliberate differences from the reference: ``name`` must be a spec network name (and no
``..``) and ``dataDir`` absolute, so no file lands outside dataDir; a gateway of the other
address family is refused; when ADD fails part-way only the addresses this call reserved
are released (the reference releases every address of the attachment); unknown CNI_ARGS
keys are ignored (the reference wants ``IgnoreUnknown=1``); files are read without
following symlinks and only address-named files are considered.

Only the standard library is imported: this module is on every pod's critical path.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field

from netsim.cni import spec

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
LAST_IP_PREFIX = "last_reserved_ip."
LINE_BREAK = "\r\n"
LOCK_TIMEOUT = 30.0
VALID_ATTACHMENTS = "cni.dev/valid-attachments"
NETWORK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
ROUTE_KEYS = ("dst", "gw", "mtu", "advmss", "priority", "table", "scope")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _invalid(msg: str, details: str = "") -> spec.CNIError:
    return spec.CNIError(spec.INVALID_CONFIG, msg, details)


# -- addresses ----------------------------------------------------------------------------
def parse_ip(value, what: str = "IP") -> Address:
    """An address as Go's net.ParseIP reads it (v4-mapped v6 becomes v4); never a scope."""
    if not isinstance(value, str) or "%" in value:
        raise _invalid(f"invalid {what} {value!r}")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError as exc:
        raise _invalid(f"invalid {what} {value!r}", str(exc)) from exc
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_requested(value) -> Address:
    """A requested address: ``IP`` or ``IP/prefix`` (the prefix is ignored, as upstream)."""
    text = value.split("/", 1)[0] if isinstance(value, str) else value
    try:
        return parse_ip(text)
    except spec.CNIError as err:
        raise _invalid(f"cannot understand ip: {value!r}", err.details) from err


def parse_cidr(text, what: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """``address/prefix-length`` as Go's net.ParseCIDR reads it (no netmask form, no scope)."""
    addr, sep, prefix = text.partition("/") if isinstance(text, str) else ("", "", "")
    if not sep or not prefix.isdigit() or "%" in addr:
        raise _invalid(f"invalid {what} {text!r}", "an address and a prefix length, e.g. 10.1.0.0/24")
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError as exc:
        raise _invalid(f"invalid {what} {text!r}", str(exc)) from exc
    return iface


def _addr(version: int, value: int) -> Address:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


@dataclass
class Range:
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network
    start: int
    end: int
    gateway: Address

    @property
    def version(self) -> int:
        return self.subnet.version

    def contains(self, addr: Address) -> bool:
        return addr.version == self.version and self.start <= int(addr) <= self.end

    def gateway_int(self) -> int | None:
        return int(self.gateway) if self.gateway.version == self.version else None

    def size(self) -> int:
        gw = self.gateway_int()
        return self.end - self.start + 1 - (1 if gw is not None and self.start <= gw <= self.end else 0)

    def overlaps(self, other: Range) -> bool:
        if self.version != other.version:
            return False
        return not (self.end < other.start or other.end < self.start)

    def __str__(self) -> str:
        return f"{_addr(self.version, self.start)}-{_addr(self.version, self.end)}"


def parse_range(raw) -> Range:
    if not isinstance(raw, dict):
        raise _invalid("a range must be an object with 'subnet'")
    text = raw.get("subnet")
    iface = parse_cidr(text, "subnet")
    net = iface.network
    if net.prefixlen > net.max_prefixlen - 2:
        raise _invalid(f"Network {net} too small to allocate from")
    if iface.ip != net.network_address:
        raise _invalid(f"Network has host bits set. For a subnet mask of length {net.prefixlen} "
                       f"the network address is {net.network_address}")
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - (1 if net.version == 4 else 0)

    def bound(key: str, default: int) -> int:
        if raw.get(key) in (None, ""):
            return default
        addr = parse_ip(raw[key], key)
        if addr.version != net.version or addr not in net:
            raise _invalid(f"{key[0].upper()}{key[1:]} {addr} not in network {net}")
        return int(addr)

    gateway = parse_ip(raw["gateway"], "gateway") if raw.get("gateway") not in (None, "") else _addr(net.version, first)
    if gateway.version != net.version:
        raise _invalid(f"gateway {gateway} is not of the address family of {net}")
    start = bound("rangeStart", first)
    end = bound("rangeEnd", last)
    if end < start:
        raise _invalid(f"RangeEnd {_addr(net.version, end)} not in network {net}",
                       f"rangeEnd is before rangeStart {_addr(net.version, start)}")
    return Range(net, start, end, gateway)


class RangeSet(list):
    def range_for(self, addr: Address) -> Range | None:
        return next((r for r in self if r.contains(addr)), None)

    def contains(self, addr: Address) -> bool:
        return self.range_for(addr) is not None

    def size(self) -> int:
        return sum(r.size() for r in self)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self)


def parse_range_set(index: int, raw) -> RangeSet:
    try:
        if not isinstance(raw, list) or not raw:
            raise _invalid("empty range set")
        rs = RangeSet(parse_range(r) for r in raw)
        if len({r.version for r in rs}) > 1:
            raise _invalid("mixed address families")
        for i, r1 in enumerate(rs):
            for r2 in rs[i + 1:]:
                if r1.overlaps(r2):
                    raise _invalid(f"subnets {r1} and {r2} overlap")
    except spec.CNIError as err:
        raise _invalid(f"invalid range set {index}: {err.msg}", err.details) from err
    return rs


def candidates(rs: RangeSet, last: Address | None):
    """Round-robin order (the reference's): every address once, starting after ``last`` when
    the set contains it (``last`` itself comes last), else at the first range's start;
    gateways are skipped.  Yields (range, address as int)."""
    n = len(rs)
    at = next((i for i, r in enumerate(rs) if last is not None and r.contains(last)), None)
    if at is None:
        segments = [(r, r.start, r.end) for r in rs]
    else:
        cur = int(last)
        segments = [(rs[at], cur + 1, rs[at].end)]
        segments += [(rs[(at + k) % n], rs[(at + k) % n].start, rs[(at + k) % n].end) for k in range(1, n)]
        segments.append((rs[at], rs[at].start, cur))
    for r, lo, hi in segments:
        gw = r.gateway_int()
        for value in range(lo, hi + 1):
            if value != gw:
                yield r, value


# -- configuration ------------------------------------------------------------------------
@dataclass
class IPAMConfig:
    name: str
    data_dir: str
    range_sets: list[RangeSet]
    routes: list[dict] = field(default_factory=list)
    resolv_conf: str = ""
    requested: list[Address] = field(default_factory=list)

    @property
    def directory(self) -> str:
        return os.path.join(self.data_dir, self.name)


def _parse_route(raw) -> dict:
    if not isinstance(raw, dict) or "dst" not in raw:
        raise _invalid(f"invalid route {raw!r}", "a route needs 'dst' (a CIDR) and may have 'gw'")
    route = {"dst": str(parse_cidr(raw["dst"], "route dst"))}  # canonical, host bits kept, as upstream
    if raw.get("gw") not in (None, ""):
        route["gw"] = str(parse_ip(raw["gw"], "route gw"))
    for key in ROUTE_KEYS[2:]:
        if key in raw and raw[key] is not None:
            if not isinstance(raw[key], int) or isinstance(raw[key], bool):
                raise _invalid(f"route {key} must be an integer, not {raw[key]!r}")
            route[key] = raw[key]
    return route


def load_config(req: spec.Request) -> IPAMConfig:
    conf = req.config
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict):
        raise _invalid("IPAM config missing 'ipam' key")
    name = conf.get("name")
    if not isinstance(name, str) or not NETWORK_NAME.match(name) or ".." in name:
        raise _invalid(f"invalid network name {name!r}",
                       "start with a letter or digit; then letters, digits, '_', '.', '-'; no '..'")
    data_dir = ipam.get("dataDir") or DEFAULT_DATA_DIR
    if not isinstance(data_dir, str) or not os.path.isabs(data_dir) or "\0" in data_dir:
        raise _invalid(f"invalid dataDir {data_dir!r}", "an absolute path")
    resolv_conf = ipam.get("resolvConf") or ""
    if not isinstance(resolv_conf, str):
        raise _invalid(f"invalid resolvConf {resolv_conf!r}")

    requested: list[Address] = []
    if req.args.get("IP"):
        requested.append(parse_requested(req.args["IP"]))
    args = conf.get("args")
    cni_args = args.get("cni") if isinstance(args, dict) else None
    for source, values in (("args.cni.ips", (cni_args or {}).get("ips") if isinstance(cni_args, dict) else None),
                           ("runtimeConfig.ips", req.runtime_config.get("ips"))):
        if values is None:
            continue
        if not isinstance(values, list):
            raise _invalid(f"{source} must be a list of addresses")
        requested.extend(parse_requested(v) for v in values)
    requested = list(dict.fromkeys(requested))

    raw_sets = []
    ip_ranges = req.runtime_config.get("ipRanges")
    if ip_ranges:
        if not isinstance(ip_ranges, list):
            raise _invalid("runtimeConfig.ipRanges must be a list of range sets")
        raw_sets.extend(ip_ranges)
    if ipam.get("subnet"):
        raw_sets.append([{k: ipam.get(k) for k in ("subnet", "rangeStart", "rangeEnd", "gateway")}])
    ranges = ipam.get("ranges")
    if ranges is not None and not isinstance(ranges, list):
        raise _invalid("ipam.ranges must be a list of range sets")
    raw_sets.extend(ranges or [])
    if not raw_sets:
        raise _invalid("no IP ranges specified")
    range_sets = [parse_range_set(i, raw) for i, raw in enumerate(raw_sets)]
    for i, a in enumerate(range_sets):
        for j in range(i + 1, len(range_sets)):
            if any(r1.overlaps(r2) for r1 in a for r2 in range_sets[j]):
                raise _invalid(f"range set {i} overlaps with {j}")

    routes = ipam.get("routes") or []
    if not isinstance(routes, list):
        raise _invalid("ipam.routes must be a list")
    return IPAMConfig(name=name, data_dir=data_dir, range_sets=range_sets,
                      routes=[_parse_route(r) for r in routes], resolv_conf=resolv_conf, requested=requested)


def parse_resolv_conf(path: str) -> dict:
    dns: dict = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise spec.CNIError(spec.IO_FAILURE, f"failed to read resolvConf {path}", str(exc)) from exc
    for line in lines:
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver":
            dns.setdefault("nameservers", []).append(values[0])
        elif key == "domain":
            dns["domain"] = values[0]
        elif key == "search":
            dns.setdefault("search", []).extend(values)
        elif key == "options":
            dns.setdefault("options", []).extend(values)
    return dns


# -- the store ----------------------------------------------------------------------------
def _owner_keys(container_id: str, ifname: str) -> tuple[bytes, bytes]:
    """What a file holds for this attachment, and what a pre-0.7 file held (the ID alone)."""
    cid = container_id.strip()
    return f"{cid}{LINE_BREAK}{ifname}".encode(), cid.encode()


class Store:
    """One network's directory, locked for as long as the ``with`` block runs."""

    def __init__(self, conf: IPAMConfig):
        self.dir = conf.directory
        self._lock_fd: int | None = None

    def __enter__(self) -> Store:
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        fd = os.open(os.path.join(self.dir, "lock"), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        deadline = time.monotonic() + LOCK_TIMEOUT
        delay = 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise spec.CNIError(spec.TRY_AGAIN_LATER, f"timed out waiting for the lock of {self.dir}",
                                        f"another process has held {self.dir}/lock for {LOCK_TIMEOUT:.0f}s") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.001)  # short waits: the lock is held for well under 1 ms
            except BaseException:
                os.close(fd)
                raise
        self._lock_fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the only descriptor releases the flock
            self._lock_fd = None

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def held(self) -> dict[Address, bytes]:
        """Every address file: its address and its content without surrounding whitespace."""
        out: dict[Address, bytes] = {}
        with os.scandir(self.dir) as entries:
            for entry in entries:
                if "%" in entry.name or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    addr = ipaddress.ip_address(entry.name)
                except ValueError:
                    continue
                data = self._read(entry.path)
                if data is not None:
                    out[addr] = data.strip()
        return out

    @staticmethod
    def _read(path: str) -> bytes | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write_temporary(self, data: bytes) -> str:
        tmp = self.path(f".tmp.{os.getpid()}.{threading.get_ident()}.{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            os.fchmod(fd, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        return tmp

    def reserve(self, addr: Address, container_id: str, ifname: str, range_id: int) -> bool:
        """Claim ``addr`` for the attachment; False when someone holds it."""
        name = str(addr)
        tmp = self.write_temporary(_owner_keys(container_id, ifname)[0])
        try:
            os.link(tmp, self.path(name))
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        try:
            self.set_last_reserved(range_id, addr)
        except BaseException:
            self.release(addr)
            raise
        return True

    def set_last_reserved(self, range_id: int, addr: Address) -> None:
        tmp = self.write_temporary(str(addr).encode())
        try:
            os.replace(tmp, self.path(f"{LAST_IP_PREFIX}{range_id}"))
        except BaseException:
            os.unlink(tmp)
            raise

    def last_reserved(self, range_id: int) -> Address | None:
        data = self._read(self.path(f"{LAST_IP_PREFIX}{range_id}"))
        try:
            return parse_ip(data.decode().strip()) if data else None
        except (spec.CNIError, UnicodeDecodeError):
            return None  # unreadable: lose round-robin once, as the reference does

    def release(self, addr: Address) -> bool:
        try:
            os.unlink(self.path(str(addr)))
            return True
        except FileNotFoundError:
            return False

    def remove_stale_temporaries(self) -> None:
        with os.scandir(self.dir) as entries:
            for entry in entries:
                if entry.name.startswith(".tmp.") and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)


# -- the commands -------------------------------------------------------------------------
def _owned_by(held: dict[Address, bytes], container_id: str, ifname: str) -> list[Address]:
    new, old = _owner_keys(container_id, ifname)
    return [addr for addr, data in held.items() if data in (new, old)]


def _in_use(held: dict[Address, bytes], rs: RangeSet) -> int:
    """How many of the set's allocatable addresses are held (a file for a gateway is not)."""
    count = 0
    for addr in held:
        r = rs.range_for(addr)
        if r is not None and addr != r.gateway:
            count += 1
    return count


def _allocate(store: Store, held: dict[Address, bytes], rs: RangeSet, index: int, req: spec.Request,
              requested: Address | None) -> dict:
    if requested is not None:
        r = rs.range_for(requested)
        if requested == r.gateway:
            raise _invalid(f"requested ip {requested} is subnet's gateway")
        if not store.reserve(requested, req.container_id, req.ifname, index):
            raise spec.CNIError(spec.TRY_AGAIN_LATER,
                                f"requested IP address {requested} is not available in range set {rs}",
                                "another attachment holds it")
        addr = requested
    else:
        for mine in _owned_by(held, req.container_id, req.ifname):
            if rs.contains(mine):
                raise spec.CNIError(spec.INVALID_ENVIRONMENT, f"{mine} has been allocated to {req.container_id}, "
                                    "duplicate allocation is not allowed",
                                    f"CNI_CONTAINERID {req.container_id} with CNI_IFNAME {req.ifname} already has "
                                    "an IP in this network: DEL it before ADDing again")
        taken = {(a.version, int(a)) for a in held}
        addr = r = None
        if _in_use(held, rs) < rs.size():
            for cand_range, value in candidates(rs, store.last_reserved(index)):
                if (cand_range.version, value) in taken:
                    continue
                cand = _addr(cand_range.version, value)
                if store.reserve(cand, req.container_id, req.ifname, index):
                    addr, r = cand, cand_range
                    break
        if addr is None:
            raise spec.CNIError(spec.TRY_AGAIN_LATER, f"no IP addresses available in range set: {rs}",
                                f"all {rs.size()} addresses are held; DEL or GC attachments to free some")
    held[addr] = _owner_keys(req.container_id, req.ifname)[0]
    return {"address": f"{addr}/{r.subnet.prefixlen}", "gateway": str(r.gateway)}


def cmd_add(req: spec.Request) -> dict:
    conf = load_config(req)
    result: dict = {"cniVersion": spec.LATEST, "ips": [], "dns": {}}
    if conf.resolv_conf:
        result["dns"] = parse_resolv_conf(conf.resolv_conf)
    remaining = list(conf.requested)
    reserved: list[Address] = []
    with Store(conf) as store:
        held = store.held()
        try:
            for index, rs in enumerate(conf.range_sets):
                requested = next((a for a in remaining if rs.contains(a)), None)
                if requested is not None:
                    remaining.remove(requested)
                try:
                    ip = _allocate(store, held, rs, index, req, requested)
                except spec.CNIError as err:
                    raise spec.CNIError(err.code, f"failed to allocate for range {index}: {err.msg}",
                                        err.details) from err
                reserved.append(ipaddress.ip_interface(ip["address"]).ip)
                result["ips"].append(ip)
            if remaining:
                raise _invalid("failed to allocate all requested IPs: " + " ".join(str(a) for a in remaining),
                               "a requested IP must be inside one of the range sets")
        except BaseException:
            for addr in reserved:
                store.release(addr)
            raise
    if conf.routes:
        result["routes"] = [dict(r) for r in conf.routes]
    return result


def cmd_del(req: spec.Request) -> None:
    conf = load_config(req)
    new, old = _owner_keys(req.container_id, req.ifname)
    with Store(conf) as store:
        held = store.held()
        released = [addr for addr, data in held.items() if data == new and store.release(addr)]
        # The reference releases once per range set, each time falling back to files that
        # hold the container ID alone when it finds none in the new format.
        if not released or len(conf.range_sets) > 1:
            for addr, data in held.items():
                if data == old:
                    store.release(addr)


def cmd_check(req: spec.Request) -> None:
    conf = load_config(req)
    with Store(conf) as store:
        mine = _owned_by(store.held(), req.container_id, req.ifname)
    if not mine:
        raise spec.CNIError(spec.UNKNOWN_CONTAINER,
                            f"host-local: Failed to find address added by container {req.container_id}",
                            f"no address in {conf.directory} belongs to {req.container_id}/{req.ifname}")


def cmd_status(req: spec.Request) -> None:
    conf = load_config(req)
    try:
        with Store(conf) as store:
            probe = store.write_temporary(b"")  # the store must be writable, not just present
            os.unlink(probe)
            held = store.held()
    except (OSError, spec.CNIError) as exc:
        raise spec.CNIError(spec.NOT_AVAILABLE, f"host-local: dataDir {conf.directory} is not usable",
                            getattr(exc, "msg", None) or str(exc)) from exc
    for index, rs in enumerate(conf.range_sets):
        if _in_use(held, rs) >= rs.size():
            raise spec.CNIError(spec.NOT_AVAILABLE, f"no IP addresses available in range set {index}: {rs}",
                                f"all {rs.size()} addresses are held")


def cmd_gc(req: spec.Request) -> None:
    conf = load_config(req)
    valid = req.config.get(VALID_ATTACHMENTS)
    if not isinstance(valid, list) or not all(
            isinstance(a, dict) and isinstance(a.get("containerID"), str) and isinstance(a.get("ifname"), str)
            for a in valid):
        raise _invalid(f"GC needs {VALID_ATTACHMENTS}: a list of {{containerID, ifname}}",
                       "without it every address would look stale; nothing was released")
    keep = {_owner_keys(a["containerID"], a["ifname"])[0] for a in valid}
    keep_old = {_owner_keys(a["containerID"], a["ifname"])[1] for a in valid}
    errors = []
    with Store(conf) as store:
        for addr, data in store.held().items():
            if data in keep or (LINE_BREAK.encode() not in data and data and data in keep_old):
                continue
            try:
                store.release(addr)
            except OSError as exc:
                errors.append(f"{addr}: {exc}")
        try:
            store.remove_stale_temporaries()
        except OSError as exc:
            errors.append(str(exc))
    if errors:
        raise spec.CNIError(spec.IO_FAILURE, "host-local: GC could not release every stale address",
                            "; ".join(errors))
