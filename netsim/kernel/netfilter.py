"""iptables-restore input, as netsim's writers of it (CNI plugins, flannel) quote it.

Standard library only: CNI plugins import this on every pod's path.
"""

from __future__ import annotations


def quote(token: str) -> str:
    """A token as iptables-restore reads it back (quoted when it holds blanks, quotes, '#')."""
    if token and not any(ch in token for ch in " \t\"'\\#"):
        return token
    return '"' + token.replace("\\", "\\\\").replace('"', '\\"') + '"'


def line(op: str, chain: str, tokens: list[str]) -> str:
    """One rule line: ``-A CHAIN tok tok ...`` with each token quoted as needed."""
    return " ".join([op, chain, *(quote(t) for t in tokens)])
