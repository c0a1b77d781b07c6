"""The CLI loads only what a command uses: `netsim --help` and `netsim get pods` never import the
node agent, the CNI server or scapy, and the root help lists the commands from the table in
netsim.cli.commands without importing them.  Which modules, not how fast: the times are in
bench/cli_start.py.  No root, no cluster."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import typer
from typer.core import TyperGroup

from netsim.cli.app import app
from netsim.cli.commands import COMMANDS

REPO = Path(__file__).resolve().parents[2]
HEAVY = {"netsim.node.agent", "netsim.cni.server", "scapy", "pyroute2"}
COMMAND_MODULES = {e.module for e in COMMANDS}

# Pretends to be root so that `get` goes on past its root check to the cluster lookup, which
# fails (no such cluster): the point where a real run would first need the kernel.
RUN = """
import json, os, sys
os.geteuid = lambda: 0
sys.argv = ["netsim", *sys.argv[1:]]
from netsim.cli.app import main
try:
    main()
except SystemExit as exc:
    print(json.dumps({"exit": exc.code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def run(tmp_path, *args: str) -> tuple[int, list[str], str]:
    """Exit code, modules loaded and the rest of stderr of `netsim ARGS` in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "NETSIM_CLUSTER"}
    env["NETSIM_STATE_DIR"] = str(tmp_path)  # empty: no cluster has state here
    proc = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=60, check=False)
    *rest, last = proc.stderr.splitlines() or [""]
    assert last.startswith("{"), proc.stderr
    report = json.loads(last)
    return report["exit"], report["modules"], "\n".join(rest)


def test_help_imports_no_command_module(tmp_path):
    code, modules, _ = run(tmp_path, "--help")
    assert code == 0
    assert HEAVY.isdisjoint(modules)
    assert COMMAND_MODULES.isdisjoint(modules), "the root help lists the table; it needs no command's module"


def test_get_pods_reaches_the_cluster_lookup_without_agent_cni_server_or_scapy(tmp_path):
    code, modules, stderr = run(tmp_path, "get", "pods", "-c", "no-such-cluster")
    assert code == 1 and "cluster 'no-such-cluster' has no state" in stderr
    assert HEAVY.isdisjoint(modules)
    assert {m for m in COMMAND_MODULES if m in modules} == {"netsim.cli.kubectl"}


def test_get_help_loads_only_the_kubectl_commands(tmp_path):
    code, modules, _ = run(tmp_path, "get", "--help")
    assert code == 0
    assert HEAVY.isdisjoint(modules)
    assert {m for m in COMMAND_MODULES if m in modules} == {"netsim.cli.kubectl"}


def test_the_table_says_what_each_command_says():
    """Each entry's one-line help is the first paragraph of the command's own help (its docstring,
    or its group's help), and the listing the table prints is the one the loaded commands would."""
    root = typer.main.get_command(app)
    ctx = root.make_context("netsim", ["--help"], resilient_parsing=True)
    assert root.list_commands(ctx) == [e.name for e in COMMANDS]
    for entry in COMMANDS:
        command = root.get_command(ctx, entry.name)
        first = inspect.cleandoc(command.help).split("\n\n", 1)[0]
        assert entry.help == " ".join(first.split()), f"netsim.cli.commands: {entry.name}'s help differs from its own"
    from_table, from_commands = ctx.make_formatter(), ctx.make_formatter()
    root.format_commands(ctx, from_table)
    TyperGroup.format_commands(root, ctx, from_commands)
    assert from_table.getvalue() == from_commands.getvalue()


def test_a_mistyped_command_gets_a_suggestion(tmp_path):
    code, _, stderr = run(tmp_path, "gett")
    assert code == 2 and "Did you mean 'get'" in stderr
