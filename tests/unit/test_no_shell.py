"""netsim runs as root, and names from manifests and scenarios reach the commands it runs: no
command line ever goes through a shell (a scan of the sources, pure).  The rest of issue 11's
security part, on namespaces and a cluster, is tests/e2e/test_security.py."""

from __future__ import annotations

import ast

from tests.conftest import REPO

SOURCES = [p for d in ("netsim", "proxy", "cni_plugins", "bench", "scripts") for p in (REPO / d).rglob("*")
           if p.suffix == ".py" or (p.parent.name == "cni_plugins" and p.is_file() and p.suffix == ""
                                    and p.read_bytes()[:2] == b"#!")]


SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            yield node, owner, name


def test_no_shell_ever_runs_a_command_line():
    """Names from manifests and scenarios reach commands (iptables chain comments, namespace
    names): every command is an argument list, never a shell string."""
    assert len(SOURCES) > 40
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for call, owner, name in _calls(tree):
            where = f"{path.relative_to(REPO)}:{call.lineno}"
            if owner == "os" and name in ("system", "popen") or owner == "subprocess" and name in (
                    "getoutput", "getstatusoutput"):
                problems.append(f"{where}: {owner}.{name} runs a shell")
            if name in SUBPROCESS_CALLS and owner == "subprocess":
                if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                       for k in call.keywords):
                    problems.append(f"{where}: shell=")
                if call.args and isinstance(call.args[0], (ast.JoinedStr, ast.BinOp)) or (
                        call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
                    problems.append(f"{where}: a command given as one string")
    assert not problems, "\n".join(problems)


