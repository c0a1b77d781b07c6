"""The ``portmap`` chained plugin: hostPort forwarding with iptables DNAT, laid out as
containernetworking/plugins' portmap (plugins/meta/portmap) lays it out, so either plugin
finds and removes the other's rules.

All nat-table chains::

    PREROUTING, OUTPUT  -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
    CNI-HOSTPORT-DNAT   -m comment --comment 'dnat name: "NET" id: "ID"' -m multiport
                        -p tcp --destination-ports 8080,8443 -j CNI-DN-<hash(NET+ID)>
    CNI-DN-<hash>       -p tcp --dport 8080 -s <container CIDR> -j CNI-HOSTPORT-SETMARK  (hairpin)
                        -p tcp --dport 8080 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK         (localhost, v4)
                        -p tcp --dport 8080 -j DNAT --to-destination <container IP>:80
    CNI-HOSTPORT-SETMARK  -j MARK --set-xmark <1 << markMasqBit>
    POSTROUTING (first) -j CNI-HOSTPORT-MASQ
    CNI-HOSTPORT-MASQ   -m mark --mark <bit> -j MASQUERADE

Every ADD, DEL and GC reads the table once (``iptables-save -t nat``) and applies what it
changes in one ``iptables-restore --noflush`` transaction per address family.  The tools are
the backend ``iptables`` on PATH resolves to (nft or legacy), as the reference plugin's.

This may run in a thread of the plugin server that has setns'd itself into the runtime's
network namespace: every child process is started from the calling thread (it inherits that
thread's namespace), sysctls are written from the calling thread, and the process-wide
environment is never read.  Only the standard library is imported.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import os
import re
import subprocess
import time
from dataclasses import dataclass, field

from netsim import kernel
from netsim.cni import spec
from netsim.kernel import netfilter

DNAT_CHAIN = "CNI-HOSTPORT-DNAT"
SETMARK_CHAIN = "CNI-HOSTPORT-SETMARK"
MASQ_CHAIN = "CNI-HOSTPORT-MASQ"
OLD_SNAT_CHAIN = "CNI-HOSTPORT-SNAT"  # upstream created CNI-SN-* chains under it once; DEL still removes them
DN_PREFIX = "CNI-DN-"
SN_PREFIX = "CNI-SN-"
MAX_CHAIN = 28  # upstream's utils.maxChainLength
DEFAULT_MARK_BIT = 13
PROTOCOLS = ("tcp", "udp", "sctp")
MULTIPORT_MAX = 15  # ports one multiport match takes
COMMENT_MAX = 255  # bytes an iptables comment takes
VALID_ATTACHMENTS = "cni.dev/valid-attachments"
COMMENT_RE = re.compile(r'^dnat name: "(.*)" id: "(.*)"$', re.S)
CHAIN_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,28}$")
FALLBACK_PATH = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin", "/bin"]
LOCK_PATH = "/run/netsim/cni-portmap.lock"  # beside netsim's state, not loose in /run
LOCK_WAIT = 10.0
ATTEMPTS = 3


# -- configuration ------------------------------------------------------------------------
@dataclass
class Mapping:
    host_port: int
    container_port: int
    protocol: str
    host_ip: str = ""


@dataclass
class Conf:
    name: str
    container_id: str
    snat: bool
    mark_bit: int
    setmark_chain: str
    external_setmark: bool
    masq_all: bool
    conditions: dict[int, list[str]]
    mappings: list[Mapping]
    ips: dict[int, ipaddress.IPv4Interface | ipaddress.IPv6Interface] = field(default_factory=dict)


def _bad(msg: str, details: str = "") -> spec.CNIError:
    return spec.CNIError(spec.INVALID_CONFIG, f"portmap: {msg}", details)


def _port(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _bad(f"invalid {what} number: {value!r}", "an integer from 1 to 65535")
    return value


def _mappings(raw) -> list[Mapping]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _bad("runtimeConfig.portMappings must be a list")
    out = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise _bad(f"port mapping {entry!r} is not an object")
        protocol = entry.get("protocol") or "tcp"
        if not isinstance(protocol, str) or protocol.lower() not in PROTOCOLS:
            raise _bad(f"invalid protocol {protocol!r} in port mapping", f"one of {', '.join(PROTOCOLS)}")
        host_ip = entry.get("hostIP") or ""
        if not isinstance(host_ip, str):
            raise _bad(f"invalid hostIP {host_ip!r}")
        if host_ip:
            try:
                host_ip = str(ipaddress.ip_address(host_ip))
            except ValueError as exc:
                raise _bad(f"invalid hostIP {host_ip!r}", "an IPv4 or IPv6 address") from exc
        out.append(Mapping(host_port=_port(entry.get("hostPort"), "host port"),
                           container_port=_port(entry.get("containerPort"), "container port"),
                           protocol=protocol.lower(), host_ip=host_ip))
    return out


def _conditions(raw, key: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, str) and "\n" not in t and "\0" not in t for t in raw):
        raise _bad(f"{key} must be a list of strings (iptables arguments)")
    return list(raw)


def _container_ips(prev: dict, ifname: str) -> dict[int, ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The first IPv4 and first IPv6 address of the sandbox interface ``ifname`` (upstream
    skips addresses on interfaces that are known and are not that sandbox interface)."""
    interfaces = prev.get("interfaces") or []
    out: dict = {}
    for ip in prev.get("ips") or []:
        try:
            addr = ipaddress.ip_interface(ip["address"])
        except (KeyError, TypeError, ValueError) as exc:
            raise spec.CNIError(spec.DECODE_FAILURE, f"portmap: bad address in prevResult: {ip!r}") from exc
        if addr.version in out:
            continue
        index = ip.get("interface")
        if isinstance(index, int) and 0 <= index < len(interfaces):
            iface = interfaces[index] or {}
            if iface.get("name") != ifname or not iface.get("sandbox"):
                continue
        out[addr.version] = addr
    return out


def _runtime_config(req: spec.Request) -> dict:
    rc = req.runtime_config
    if not isinstance(rc, dict):
        raise _bad("runtimeConfig must be an object")
    return rc


def parse(req: spec.Request) -> Conf:
    c = req.config
    name = c.get("name", "")
    if not isinstance(name, str) or "\n" in name or "\0" in name:
        raise _bad(f"invalid network name {name!r}")
    backend = c.get("backend")
    if backend not in (None, "iptables"):
        raise spec.CNIError(spec.UNSUPPORTED_FIELD, f"portmap: unsupported backend {backend!r}",
                            "netsim's portmap implements the iptables backend only")
    snat = c.get("snat")
    snat = True if snat is None else snat
    if not isinstance(snat, bool):
        raise _bad(f"'snat' must be true or false, not {snat!r}")
    masq_all = c.get("masqAll") or False
    if not isinstance(masq_all, bool):
        raise _bad(f"'masqAll' must be true or false, not {masq_all!r}")
    bit, external = c.get("markMasqBit"), c.get("externalSetMarkChain")
    if bit is not None and external is not None:
        raise _bad("cannot specify both externalSetMarkChain and markMasqBit")
    bit = DEFAULT_MARK_BIT if bit is None else bit
    if isinstance(bit, bool) or not isinstance(bit, int) or not 0 <= bit <= 31:
        raise _bad(f"markMasqBit must be between 0 and 31, not {bit!r}")
    if external is not None and (not isinstance(external, str) or not CHAIN_NAME_RE.match(external)):
        raise _bad(f"invalid externalSetMarkChain {external!r}", "an iptables chain name")
    conf = Conf(name=name, container_id=req.container_id, snat=snat, mark_bit=bit,
                setmark_chain=external or SETMARK_CHAIN, external_setmark=external is not None,
                masq_all=masq_all,
                conditions={4: _conditions(c.get("conditionsV4"), "conditionsV4"),
                            6: _conditions(c.get("conditionsV6"), "conditionsV6")},
                mappings=_mappings(_runtime_config(req).get("portMappings")))
    if req.prev_result is not None:
        conf.ips = _container_ips(req.prev_result, req.ifname)
    return conf


# -- names and rules, as upstream spells them ---------------------------------------------
def chain_name(network: str, container_id: str, prefix: str = DN_PREFIX) -> str:
    """upstream's utils.MustFormatChainNameWithPrefix: the prefix, then SHA-512 of name+id."""
    return (prefix + hashlib.sha512((network + container_id).encode()).hexdigest())[:MAX_CHAIN]


def dnat_comment(network: str, container_id: str) -> str:
    text = f'dnat name: "{network}" id: "{container_id}"'
    raw = text.encode()
    if len(raw) <= COMMENT_MAX:
        return text
    # upstream keeps 253 bytes and adds "...": 256, which iptables refuses; 252 + "..." fits.
    return raw[:COMMENT_MAX - 3].decode(errors="ignore") + "..."


def _mark(bit: int) -> str:
    value = 1 << bit
    return f"{value:#x}/{value:#x}"


def setmark_rule(bit: int) -> list[str]:
    return ["-m", "comment", "--comment", "CNI portfwd masquerade mark", "-j", "MARK", "--set-xmark", _mark(bit)]


def masq_rule(bit: int) -> list[str]:
    return ["-m", "mark", "--mark", _mark(bit), "-j", "MASQUERADE"]


MASQ_ENTRY = ["-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", MASQ_CHAIN]
DNAT_ENTRY = ["-m", "addrtype", "--dst-type", "LOCAL", "-j", DNAT_CHAIN]


def entry_rules(conf: Conf, family: int) -> list[list[str]]:
    """The jumps from CNI-HOSTPORT-DNAT into the container's chain: one per protocol and
    run of at most 15 host ports (all mappings, whatever their hostIP, as upstream)."""
    chain = chain_name(conf.name, conf.container_id)
    comment = dnat_comment(conf.name, conf.container_id)
    by_proto: dict[str, list[int]] = {}
    for m in conf.mappings:
        by_proto.setdefault(m.protocol, []).append(m.host_port)
    rules = []
    for proto in sorted(by_proto):
        ports = by_proto[proto]
        for i in range(0, len(ports), MULTIPORT_MAX):
            run = ",".join(str(p) for p in ports[i:i + MULTIPORT_MAX])
            rules.append(["-m", "comment", "--comment", comment, "-m", "multiport", "-p", proto,
                          "--destination-ports", run, *conf.conditions[family], "-j", chain])
    return rules


def dnat_rules(conf: Conf, addr: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> list[list[str]]:
    """The container chain: per mapping, the hairpin and localhost marks, then the DNAT."""
    v6 = addr.version == 6
    target = f"[{addr.ip}]" if v6 else str(addr.ip)
    rules = []
    for m in conf.mappings:
        base = ["-p", m.protocol, "--dport", str(m.host_port)]
        if m.host_ip:
            host = ipaddress.ip_address(m.host_ip)
            if host.version != addr.version:
                continue
            if not host.is_unspecified:
                base += ["-d", m.host_ip]
        if conf.snat:
            source = ("::/0" if v6 else "0.0.0.0/0") if conf.masq_all else str(addr)
            rules.append([*base, "-s", source, "-j", conf.setmark_chain])
            if not v6 and not conf.masq_all:
                rules.append([*base, "-s", "127.0.0.1", "-j", conf.setmark_chain])
        rules.append([*base, "-j", "DNAT", "--to-destination", f"{target}:{m.container_port}"])
    return rules


# -- the tools ----------------------------------------------------------------------------
def _search_path(env: dict[str, str]) -> list[str]:
    dirs = [d for d in (env.get("PATH") or "").split(":") if d]
    return dirs + [d for d in FALLBACK_PATH if d not in dirs]


def _which(name: str, env: dict[str, str]) -> str | None:
    for directory in _search_path(env):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _tool(family: int, suffix: str, env: dict[str, str]) -> tuple[str, str]:
    """(executable, argv[0]) of ``iptables-<suffix>`` for the backend ``iptables`` on PATH
    resolves to: xtables-*-multi dispatches on argv[0], so the save/restore tools follow
    ``iptables``'s alternative even where their own alternatives point elsewhere."""
    base = "ip6tables" if family == 6 else "iptables"
    main = _which(base, env)
    if main is None:
        raise spec.CNIError(spec.IO_FAILURE, f"portmap: {base} not found", f"searched {_search_path(env)}")
    real = os.path.realpath(main)
    name = f"{base}-{suffix}"
    if re.match(r"^xtables-.*multi$", os.path.basename(real)):
        return real, name
    sibling = os.path.join(os.path.dirname(main), name)
    return (sibling if os.access(sibling, os.X_OK) else (_which(name, env) or sibling)), name


def _exec(executable: str, argv: list[str], env: dict[str, str], stdin: bytes = b"",
          timeout: float = netfilter.TIMEOUT) -> subprocess.CompletedProcess:
    """Run a tool as a child of the calling thread (so in that thread's network namespace)."""
    try:
        return netfilter.run(argv, executable=executable, stdin=stdin, timeout=timeout, check=False,
                             search_path=_search_path(env))
    except netfilter.ToolError as exc:
        raise spec.CNIError(spec.IO_FAILURE, f"portmap: {exc}") from exc


def _comments(table: netfilter.Table, chain: str, target: str) -> list[str]:
    """The comments on ``chain``'s rules that jump to ``target``."""
    out = []
    for parent, rule in table.jumps(target):
        if parent == chain:
            args = netfilter.tokens(rule)
            out += [args[i + 1] for i, t in enumerate(args[:-1]) if t == "--comment"]
    return out


def save_nat(family: int, env: dict[str, str]) -> netfilter.Table | None:
    """The nat table, or None when this family's iptables is not usable here."""
    try:
        executable, name = _tool(family, "save", env)
        proc = _exec(executable, [name, "-t", "nat"], env)
    except (OSError, spec.CNIError):
        return None
    if proc.returncode != 0:
        return None
    return netfilter.parse_save(proc.stdout.decode(errors="replace"))["nat"]


def restore(family: int, lines: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    executable, name = _tool(family, "restore", env)
    text = "\n".join(["*nat", *lines, "COMMIT", ""]).encode()
    return _exec(executable, [name, "--noflush", "-w", "5"], env, stdin=text)


class _Lock:
    """Serialises this plugin's read-then-write windows (other writers are covered by
    retrying: a stale read makes the transaction fail as a whole, never half-apply)."""

    def __init__(self):
        self.fd = -1

    def __enter__(self):
        try:
            os.makedirs(os.path.dirname(LOCK_PATH), mode=0o700, exist_ok=True)
            self.fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return self
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return self  # go on unlocked: the retries still keep the table consistent
                time.sleep(0.005)

    def __exit__(self, *exc):
        if self.fd >= 0:
            os.close(self.fd)  # releases the flock
            self.fd = -1


def apply(family: int, env: dict[str, str], build, what: str, optional: bool = False) -> bool:
    """Read the nat table, let ``build`` say what to change, apply that in one transaction;
    again from a fresh read if another writer changed the table in between.  False when this
    family's iptables is not usable and ``optional`` says that is no error."""
    error = ""
    with _Lock():
        for attempt in range(ATTEMPTS):
            table = save_nat(family, env)
            if table is None:
                if optional and not attempt:
                    return False
                raise spec.CNIError(spec.IO_FAILURE, f"portmap: {'ip6tables' if family == 6 else 'iptables'} "
                                                     "is not usable (iptables-save -t nat failed)")
            lines = build(table)
            if not lines:
                return True
            proc = restore(family, lines, env)
            if proc.returncode == 0:
                return True
            error = proc.stderr.decode(errors="replace").strip()
            time.sleep(0.02 * (attempt + 1))
    raise spec.CNIError(spec.IO_FAILURE, f"portmap: could not {what}", error)


# -- ADD ----------------------------------------------------------------------------------
def _forward_lines(conf: Conf, addr, table: netfilter.Table) -> list[str]:
    lines: list[str] = []

    def ensure_chain(chain: str) -> None:
        if chain not in table.chains:
            lines.append(f"-N {chain}")

    def ensure_rule(chain: str, rule: list[str], first: bool = False) -> None:
        if not table.has_rule(chain, rule):
            lines.append(netfilter.line("-I", f"{chain} 1", rule) if first else netfilter.line("-A", chain, rule))

    if conf.snat and not conf.external_setmark:
        ensure_chain(SETMARK_CHAIN)
        ensure_rule(SETMARK_CHAIN, setmark_rule(conf.mark_bit))
        ensure_chain(MASQ_CHAIN)
        ensure_rule(MASQ_CHAIN, masq_rule(conf.mark_bit))
        ensure_rule("POSTROUTING", MASQ_ENTRY, first=True)
    ensure_chain(DNAT_CHAIN)
    ensure_rule("PREROUTING", DNAT_ENTRY)
    ensure_rule("OUTPUT", DNAT_ENTRY)
    chain = chain_name(conf.name, conf.container_id)
    # A chain left from an earlier ADD of this container is rewritten, not merged into.
    lines.append(f"-F {chain}" if chain in table.chains else f"-N {chain}")
    lines += [f"-D {parent} {rule}" for parent, rule in table.jumps(chain) if parent == DNAT_CHAIN]
    lines += [netfilter.line("-A", chain, rule) for rule in dnat_rules(conf, addr)]
    lines += [netfilter.line("-A", DNAT_CHAIN, rule) for rule in entry_rules(conf, addr.version)]
    return lines


def _route_localnet(addr, env: dict[str, str]) -> None:
    """upstream sets route_localnet on the interface that routes to the container, so that
    connections from 127.0.0.1 to a hostPort survive the DNAT across interfaces."""
    ip = _which("ip", env)
    if ip is None:
        return
    proc = _exec(ip, ["ip", "-o", "-4", "route", "get", str(addr.ip)], env, timeout=10)
    toks = proc.stdout.decode(errors="replace").split()
    if proc.returncode != 0 or "dev" not in toks[:-1]:
        return
    dev = toks[toks.index("dev") + 1]
    if "/" in dev or dev in (".", ".."):
        return
    # A dot in an interface's name is a slash in a sysctl key.
    kernel.sysctl(f"net.ipv4.conf.{dev.replace('.', '/')}.route_localnet", 1)


def _flush_udp_conntrack(conf: Conf, family: int, env: dict[str, str]) -> None:
    """As upstream: drop UDP conntrack entries to the host ports, so traffic that started
    before the mapping existed is not stuck on an old flow.  Best effort."""
    conntrack = _which("conntrack", env)
    if conntrack is None:
        return
    for port in sorted({m.host_port for m in conf.mappings if m.protocol == "udp"}):
        with contextlib.suppress(OSError, spec.CNIError):
            _exec(conntrack, ["conntrack", "-D", "-f", "ipv6" if family == 6 else "ipv4", "-p", "udp",
                              "--orig-port-dst", str(port)], env, timeout=5)


def cmd_add(req: spec.Request) -> dict:
    conf = parse(req)
    if req.prev_result is None:
        raise _bad("must be called as a chained plugin", "prevResult is missing")
    if not conf.mappings:
        return req.prev_result
    for family in (4, 6):
        addr = conf.ips.get(family)
        if addr is None:
            continue
        apply(family, req.env, lambda table, a=addr: _forward_lines(conf, a, table),
              f"set up port forwarding to {addr.ip}")
        _flush_udp_conntrack(conf, family, req.env)
        if family == 4 and conf.snat:
            _route_localnet(addr, req.env)
    return req.prev_result


# -- DEL and GC ---------------------------------------------------------------------------
def _teardown_lines(chains: list[str], table: netfilter.Table) -> list[str]:
    """Remove each chain and every rule that jumps to it."""
    lines = []
    for chain in chains:
        lines += [f"-D {parent} {rule}" for parent, rule in table.jumps(chain) if parent not in chains]
    present = [chain for chain in chains if chain in table.chains]
    return lines + [f"-F {chain}" for chain in present] + [f"-X {chain}" for chain in present]


def _teardown(chains_for, env: dict[str, str], what: str) -> None:
    usable = False
    for family in (4, 6):
        # A family whose iptables is not usable here cannot hold anything of ours.
        usable |= apply(family, env, lambda t: _teardown_lines(chains_for(t), t), what, optional=True)
    if not usable:
        raise spec.CNIError(spec.IO_FAILURE, "portmap: neither iptables nor ip6tables is usable")


def cmd_del(req: spec.Request) -> None:
    # Only what DEL needs is read from the config: a config ADD refused must not make the
    # runtime's retried DELs fail forever.
    name = req.config.get("name", "")
    rc = req.runtime_config
    mappings = rc.get("portMappings") if isinstance(rc, dict) else None
    if not isinstance(name, str) or not mappings:
        return
    chains = [chain_name(name, req.container_id), chain_name(name, req.container_id, SN_PREFIX)]
    _teardown(lambda table: chains, req.env, f"remove the port forwarding of {req.container_id}")


def _stale_chains(name: str, valid: set[str], table: netfilter.Table) -> list[str]:
    """This network's CNI-DN-* chains whose container is not among the valid attachments
    (the owner is read from the comment on the chain's jumps, checked against the hash)."""
    stale = []
    for chain in table.chains:
        if not chain.startswith(DN_PREFIX):
            continue
        for comment in _comments(table, DNAT_CHAIN, chain):
            match = COMMENT_RE.match(comment)
            if match and match.group(1) == name and match.group(2) not in valid \
                    and chain_name(name, match.group(2)) == chain:
                stale.append(chain)
                break
    return stale


def cmd_gc(req: spec.Request) -> None:
    attachments = req.config.get(VALID_ATTACHMENTS) or []
    if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
        raise _bad(f"{VALID_ATTACHMENTS} must be a list of objects")
    valid = {a.get("containerID") for a in attachments if isinstance(a.get("containerID"), str)}
    name = req.name
    _teardown(lambda table: _stale_chains(name, valid, table), req.env, "remove stale port forwarding")


# -- CHECK and STATUS ---------------------------------------------------------------------
def _check_lines(conf: Conf, addr) -> list[tuple[str, str]]:
    chain = chain_name(conf.name, conf.container_id)
    want = [(chain, rule) for rule in dnat_rules(conf, addr)]
    want += [(DNAT_CHAIN, rule) for rule in entry_rules(conf, addr.version)]
    want += [("PREROUTING", DNAT_ENTRY), ("OUTPUT", DNAT_ENTRY)]
    if conf.snat and not conf.external_setmark:
        want += [(SETMARK_CHAIN, setmark_rule(conf.mark_bit)), (MASQ_CHAIN, masq_rule(conf.mark_bit)),
                 ("POSTROUTING", MASQ_ENTRY)]
    return [(parent, netfilter.line("-C", parent, rule)) for parent, rule in want]


def cmd_check(req: spec.Request) -> None:
    conf = parse(req)
    if req.prev_result is None:
        raise _bad("CHECK needs prevResult")
    if not conf.mappings:
        return
    for family in (4, 6):
        addr = conf.ips.get(family)
        if addr is None:
            continue
        chain = chain_name(conf.name, conf.container_id)
        table = save_nat(family, req.env)
        if table is None:
            raise spec.CNIError(spec.IO_FAILURE, f"portmap: IPv{family} iptables is not usable")
        if chain not in table.chains:
            raise spec.CNIError(spec.INTERNAL, f"portmap: chain {chain} not found in table nat (IPv{family})")
        checks = _check_lines(conf, addr)
        # iptables itself compares (-C), so rules match however iptables-save would print them.
        proc = restore(family, [line for _, line in checks], req.env)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace")
            found = re.search(r"line (\d+)", err)
            index = int(found.group(1)) - 2 if found else -1  # line 1 is "*nat"
            missing = checks[index][1][3:] if 0 <= index < len(checks) else err.strip()
            raise spec.CNIError(spec.INTERNAL, f"portmap: rule missing in table nat (IPv{family})", missing)


def cmd_status(req: spec.Request) -> None:
    if save_nat(4, req.env) is None:
        raise spec.CNIError(spec.NOT_AVAILABLE, "portmap: iptables is not usable",
                            "iptables-save -t nat failed in the runtime's network namespace")
