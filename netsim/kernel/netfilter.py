"""Netfilter as netsim drives it: its tools run in a namespace, iptables-save read back,
iptables-restore input written, and the sysctls that steer packets.

Every iptables, nft, ipvsadm, ipset, conntrack or modprobe netsim starts goes through
:func:`run` (or :func:`start`, for input streamed while it is rendered): a child forked while
the calling thread stands in the namespace, with a fixed PATH and the C locale (the tools'
output is parsed), a timeout, and a :class:`ToolError` naming the tool and the namespace when
it fails.  ``netns`` is a name under /run/netns, a path (``/proc/PID/ns/net``), or None for
the calling thread's own namespace (a CNI plugin run by the plugin server, whose thread has
entered the runtime's namespace).  libnftables, which needs no child, is in
:mod:`netsim.kernel.libnft`.

Standard library only, and nothing heavy at import: CNI plugins import this on every pod's path.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from netsim.kernel.netns import KernelError, standing_in

TOOL_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
TIMEOUT = 30.0
JUMP_FLAGS = ("-j", "-g", "--jump", "--goto")


class ToolError(KernelError):
    """A tool that could not start, failed or timed out; the message names it and its namespace."""

    def __init__(self, message: str, argv: Sequence[str], netns: str | None, returncode: int | None = None,
                 stderr: str = ""):
        super().__init__(message)
        self.argv, self.netns, self.returncode, self.stderr = list(argv), netns, returncode, stderr


# -- running the tools --------------------------------------------------------------------
def _where(netns: str | None) -> str:
    return "" if netns is None else f" in {netns}"




def _env(search_path: Iterable[str]) -> dict[str, str]:
    # The caller's environment is never passed on: a plugin server's thread serves many
    # runtimes, and the tools' output is parsed, so the locale is fixed.
    return {"PATH": ":".join(search_path), "LC_ALL": "C"}


def run(argv: Sequence[str], *, netns: str | None = None, stdin: bytes = b"", timeout: float | None = TIMEOUT,
        check: bool = True, executable: str | None = None,
        search_path: Iterable[str] = TOOL_PATH) -> subprocess.CompletedProcess:
    """Run ``argv`` in ``netns`` and collect its output.  ``check``: a non-zero exit raises
    :class:`ToolError` (else the caller reads ``returncode``); a tool that cannot start or
    outlives ``timeout`` seconds raises it either way.  ``executable`` runs that file with
    ``argv[0]`` as its name (xtables-*-multi dispatches on it)."""
    where = _where(netns)
    try:
        with standing_in(netns):
            proc = subprocess.run(list(argv), executable=executable, input=stdin, capture_output=True,
                                  timeout=timeout, check=False, env=_env(search_path))
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{argv[0]}{where} timed out after {timeout}s", argv, netns) from exc
    except OSError as exc:
        raise ToolError(f"{argv[0]}{where} could not start: {exc.strerror or exc}", argv, netns) from exc
    if check and proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace").strip()
        raise ToolError(f"{' '.join(argv)}{where} failed ({proc.returncode}): {stderr}", argv, netns,
                        proc.returncode, stderr)
    return proc


def start(argv: Sequence[str], *, netns: str | None = None, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
          stderr=subprocess.PIPE, search_path: Iterable[str] = TOOL_PATH) -> subprocess.Popen:
    """Start ``argv`` in ``netns`` and return at once, for a caller that feeds its input while
    still producing it; the caller waits for it (and kills it if it must)."""
    try:
        with standing_in(netns):
            return subprocess.Popen(list(argv), stdin=stdin, stdout=stdout, stderr=stderr, env=_env(search_path))
    except OSError as exc:
        raise ToolError(f"{argv[0]}{_where(netns)} could not start: {exc.strerror or exc}", argv, netns) from exc


# -- iptables-save ------------------------------------------------------------------------
def tokens(rule: str) -> list[str]:
    """A saved rule as the arguments iptables was given (iptables-save quotes as a shell does)."""
    try:
        return shlex.split(rule)
    except ValueError:
        return rule.split()


def jumps_to(args: Sequence[str], target: str) -> bool:
    """Whether a rule's arguments jump or go to ``target``."""
    return any(t in JUMP_FLAGS and args[i + 1:i + 2] == [target] for i, t in enumerate(args))


@dataclass
class Table:
    """One table as iptables-save printed it.  ``chains``: every chain it declares, in order,
    with its rules as printed after ``-A CHAIN `` (as they are written back with ``-D CHAIN``);
    ``policies``: each chain's policy (``-`` for a user chain)."""

    name: str
    chains: dict[str, list[str]] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)

    def rules(self, chain: str) -> list[str]:
        return self.chains.get(chain, [])

    def has_rule(self, chain: str, args: Sequence[str]) -> bool:
        """Whether ``chain`` holds the rule made of ``args`` (compared as arguments, so quoting
        and spacing do not matter)."""
        want = list(args)
        return any(tokens(rule) == want for rule in self.rules(chain))

    def jumps(self, target: str) -> list[tuple[str, str]]:
        """(chain, rule as saved) for every rule that jumps or goes to ``target``."""
        out = []
        for chain, rules in self.chains.items():
            for rule in rules:
                # The substring test first: tokenising every rule of a large table costs.
                if f" {target}" in f" {rule}" and jumps_to(tokens(rule), target):
                    out.append((chain, rule))
        return out


class Saved(dict[str, Table]):
    """iptables-save's tables by name; one it did not print reads as empty (``saved["nat"]``)."""

    def __missing__(self, name: str) -> Table:
        return Table(name)


def parse_save(text: str) -> Saved:
    """iptables-save output (every table, or the one ``-t`` asked for) by table name."""
    tables = Saved()
    table = Table("")
    for text_line in text.splitlines():
        if text_line.startswith("*"):
            table = tables.setdefault(text_line[1:].strip(), Table(text_line[1:].strip()))
        elif text_line.startswith(":"):
            name, _, rest = text_line[1:].partition(" ")
            table.chains.setdefault(name, [])
            table.policies[name] = rest.split(" ", 1)[0] or "-"
        elif text_line.startswith("-A "):
            chain, _, rule = text_line[3:].partition(" ")
            table.chains.setdefault(chain, []).append(rule)
    return tables


def save(tool: str = "iptables-save", *, table: str | None = None, netns: str | None = None,
         timeout: float | None = TIMEOUT, executable: str | None = None,
         search_path: Iterable[str] = TOOL_PATH) -> Saved:
    """Run ``tool`` (an iptables-save of some backend) in ``netns`` and parse what it printed."""
    argv = [tool, *(["-t", table] if table else [])]
    proc = run(argv, netns=netns, timeout=timeout, executable=executable, search_path=search_path)
    return parse_save(proc.stdout.decode(errors="replace"))


# -- iptables-restore ---------------------------------------------------------------------
def quote(token: str) -> str:
    """A token as iptables-restore reads it back (quoted when it holds blanks, quotes, '#')."""
    if token and not any(ch in token for ch in " \t\"'\\#"):
        return token
    return '"' + token.replace("\\", "\\\\").replace('"', '\\"') + '"'


def line(op: str, chain: str, args: Sequence[str]) -> str:
    """One rule line: ``-A CHAIN tok tok ...`` with each token quoted as needed."""
    return " ".join([op, chain, *(quote(t) for t in args)])


def restore_text(tables: Mapping[str, Sequence[str]]) -> str:
    """iptables-restore input: each table's lines between ``*table`` and ``COMMIT``."""
    return "".join(f"*{name}\n" + "".join(f"{text_line}\n" for text_line in body) + "COMMIT\n"
                   for name, body in tables.items())


def restore(text: str, tool: str = "iptables-restore", *, netns: str | None = None, counters: bool = False,
            check: bool = True, timeout: float | None = TIMEOUT, executable: str | None = None,
            search_path: Iterable[str] = TOOL_PATH) -> subprocess.CompletedProcess:
    """Apply ``text`` with ``tool --noflush`` (only the chains it names change) in one transaction,
    waiting up to 5 s for the xtables lock another writer holds."""
    argv = [tool, "--noflush", *(["--counters"] if counters else []), "-w", "5"]
    return run(argv, netns=netns, stdin=text.encode(), check=check, timeout=timeout, executable=executable,
               search_path=search_path)
