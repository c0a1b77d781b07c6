#!/usr/bin/env python3
"""Write docs/cli.md, the reference of every `netsim` command, from the typer app itself.

    python scripts/gen-cli-reference.py            # rewrite docs/cli.md
    python scripts/gen-cli-reference.py --check    # exit 1 (with a diff) if docs/cli.md is stale

The command tree is the one `netsim` runs: netsim.cli.app's root group, which loads each command
of the table in netsim.cli.commands as the walk asks for it.  Commands and sub-commands are
listed depth-first in sorted order; arguments in their positional order, options sorted by name.
Nothing in the output depends on the machine: the repository's own path in a default is
written as `<repo>`.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import sys
from enum import Enum
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "docs" / "cli.md"
GENERATOR = "scripts/gen-cli-reference.py"

if str(REPO) not in sys.path:  # `python scripts/gen-cli-reference.py` puts scripts/ first, not the repo
    sys.path.insert(0, str(REPO))


def netsim_command():
    """The click command `netsim` runs; walking it loads every sub-command."""
    import typer.main

    from netsim.cli.app import app

    return typer.main.get_command(app)


def _context(command, name: str, parent=None):
    return command.context_class(command, info_name=name, parent=parent)


def walk(command=None, ctx=None):
    """Yield (context, command) for the root and every visible sub-command, depth-first, sorted."""
    if command is None:
        command = netsim_command()
        ctx = _context(command, "netsim")
    yield ctx, command
    if hasattr(command, "commands"):
        for name in sorted(command.list_commands(ctx)):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from walk(sub, _context(sub, name, ctx))


def command_paths() -> dict[str, bool]:
    """Every command path ("netsim", "netsim proxy rules", ...) -> whether it is a group."""
    return {ctx.command_path: hasattr(cmd, "commands") for ctx, cmd in walk()}


# == formatting ==================================================================================
def _help_text(text: str | None) -> str:
    if not text:
        return ""
    text = text.split("\f", 1)[0]  # click: what follows \f is not help
    lines = [line for line in inspect.cleandoc(text).splitlines() if line.strip() != "\b"]
    return "\n".join(lines).strip()


def _summary(command) -> str:
    first = _help_text(command.help).split("\n\n", 1)[0]
    return " ".join(first.split())


def _cell(text: str) -> str:
    """Text for a table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text: str) -> str:
    text = str(text)
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|")


def _machine_free(text: str) -> str:
    return text.replace(str(REPO), "<repo>")


def _default(param, ctx) -> str:
    """The default as `--help` shows it, or "" when it shows none."""
    show = param.show_default
    if isinstance(show, str):
        return f"({show})"
    resilient, ctx.resilient_parsing = ctx.resilient_parsing, True
    try:
        value = param.get_default(ctx, call=False)
    finally:
        ctx.resilient_parsing = resilient
    if value is None or not (show or ctx.show_default):
        return ""
    is_flag = getattr(param, "is_flag", False)
    if is_flag and param.secondary_opts:
        opt = param.opts[0] if value else param.secondary_opts[0]
        return opt.lstrip("-")
    if is_flag:
        return "" if not value else str(value)
    if callable(value):
        return "(dynamic)"
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        return ""
    return _machine_free(", ".join(str(v.value if isinstance(v, Enum) else v) for v in values))


def _option_names(param) -> str:
    def ordered(opts):  # short options first, as --help lists them
        return sorted(opts, key=lambda o: (len(o) - len(o.lstrip("-")), o))
    names = ", ".join(ordered(param.opts))
    if param.secondary_opts:
        names += " / " + ", ".join(ordered(param.secondary_opts))
    return names


def _type(param, ctx) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    return param.display_type_rich(ctx) or ""


def _param_help(param) -> str:
    help_ = _help_text(getattr(param, "help", None))
    envvar = getattr(param, "envvar", None)
    if envvar:
        names = envvar if isinstance(envvar, str) else ", ".join(envvar)
        help_ = f"{help_} (env: `{names}`)" if help_ else f"env: `{names}`"
    return help_


def _anchor(path: str) -> str:
    return path.replace(" ", "-")


def render() -> str:
    entries = list(walk())
    out = [
        f"<!-- Generated by {GENERATOR} from netsim's typer app. Do not edit by hand: "
        f"run `python {GENERATOR}` to regenerate. -->",
        "",
        "# netsim command-line reference",
        "",
        f"Generated by `{GENERATOR}` from the command-line app itself; do not edit it by hand "
        f"(`python {GENERATOR}` rewrites it, `--check` tells whether it is stale, and "
        "`tests/test_docs.py` fails when it is). Commands are in sorted order; arguments are in "
        "their positional order, options sorted by name. Every command also takes `--help`. "
        "For a walk through the commands on a real cluster see [the tutorial](tutorial.md).",
        "",
        "| command | what it does |",
        "| --- | --- |",
    ]
    for ctx, command in entries[1:]:
        out.append(f"| [{_code(ctx.command_path)}](#{_anchor(ctx.command_path)}) | {_cell(_summary(command))} |")
    out.append("")

    for ctx, command in entries:
        depth = ctx.command_path.count(" ")
        out.append(f"{'#' * min(2 + depth, 4)} {ctx.command_path}")
        out.append("")
        help_ = _help_text(command.help)
        if help_:
            out += [help_, ""]
        usage = " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])
        out += ["```", f"Usage: {usage}", "```", ""]

        help_option = command.get_help_option(ctx)
        params = [p for p in command.get_params(ctx) if p is not help_option and not getattr(p, "hidden", False)]
        arguments = [p for p in params if p.param_type_name == "argument"]
        options = sorted((p for p in params if p.param_type_name == "option"),
                         key=lambda p: max(p.opts, key=len).lstrip("-"))
        if arguments:
            out += ["| argument | type | default | required | description |", "| --- | --- | --- | --- | --- |"]
            for p in arguments:
                default = _default(p, ctx)
                out.append(f"| {_code(p.display_name_raw)} | {_code(_type(p, ctx))} | "
                           f"{_code(default) if default else ''} | {'yes' if p.required else 'no'} | "
                           f"{_cell(_param_help(p))} |")
            out.append("")
        if options:
            out += ["| option | type | default | description |", "| --- | --- | --- | --- |"]
            for p in options:
                default = _default(p, ctx)
                required = "**required.** " if p.required else ""
                out.append(f"| {_code(_option_names(p))} | {_code(_type(p, ctx))} | "
                           f"{_code(default) if default else ''} | {required}{_cell(_param_help(p))} |")
            out.append("")
        if hasattr(command, "commands") and ctx.parent is not None:  # the root's are the index above
            subs = [(sub_ctx, sub) for sub_ctx, sub in entries
                    if sub_ctx.parent is not None and sub_ctx.parent.command_path == ctx.command_path]
            if subs:
                out += ["| command | what it does |", "| --- | --- |"]
                for sub_ctx, sub in subs:
                    out.append(f"| [{_code(sub_ctx.command_path)}](#{_anchor(sub_ctx.command_path)}) | "
                               f"{_cell(_summary(sub))} |")
                out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    rel = OUTPUT.relative_to(REPO) if OUTPUT.is_relative_to(REPO) else OUTPUT
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 if {rel} differs from what would be generated")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current == text:
            print(f"{rel} is up to date")
            return 0
        diff = list(difflib.unified_diff(current.splitlines(keepends=True), text.splitlines(keepends=True),
                                         f"{rel} (on disk)", f"{rel} (generated)"))
        sys.stderr.writelines(diff[:80])
        if len(diff) > 80:
            sys.stderr.write(f"... ({len(diff) - 80} more diff lines)\n")
        sys.stderr.write(f"\n{rel} is stale: run `python {GENERATOR}` and commit the result\n")
        return 1
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
