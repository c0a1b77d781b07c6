"""The `netsim` entry point: a root group that reads its commands from netsim.cli.commands and
imports a command's module only when that command is used, so `netsim --help` and `netsim get`
do not pay for the agent, the CNI server or the packet tracer."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

import typer
from typer.core import TyperCommand, TyperGroup

from netsim.cli.commands import BY_NAME, COMMANDS, Entry

HELP = "netsim: a Kubernetes dataplane emulator built from real namespaces, links and rules."
# What the root app passes down to every command it builds: the same for a command loaded
# on demand as for one registered up front.
SETTINGS = dict(add_completion=False, pretty_exceptions_enable=False,
                rich_markup_mode=None)  # help texts are plain: "etcd://HOST:PORT[/PREFIX]" is not markup


def load(entry: Entry):
    """The click command for one entry of the table, built as the root app would build it."""
    target = getattr(importlib.import_module(entry.module), entry.attr)
    parent = typer.Typer(**SETTINGS)
    if isinstance(target, typer.Typer):
        parent.add_typer(target, name=entry.name)
    else:
        parent.command(name=entry.name)(target)
    return typer.main.get_group(parent).commands[entry.name]


class _Commands(Mapping):
    """The table's commands by name, each built on first access.  A mapping rather than a dict
    filled up front because click and typer read `group.commands` directly (typer suggests
    "Did you mean 'get'?" from its keys)."""

    def __init__(self) -> None:
        self._built: dict = {}

    def __getitem__(self, name: str):
        if name not in self._built:
            self._built[name] = load(BY_NAME[name])
        return self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(BY_NAME)

    def __len__(self) -> int:
        return len(BY_NAME)


class NetsimGroup(TyperGroup):
    """Lists and resolves commands through the table (list_commands and get_command read
    `self.commands`); the help listing shows the table's one-line help instead of importing
    every command to ask it."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.commands = _Commands()

    def format_commands(self, ctx, formatter) -> None:
        limit = formatter.width - 6 - max(len(e.name) for e in COMMANDS)
        # Shortened by click's own rule (first sentence, cut at the width), as a loaded command would be.
        rows = [(e.name, TyperCommand(name=e.name, help=e.help).get_short_help_str(limit)) for e in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _root() -> None:
    pass  # typer makes a group only of an app with a callback or registered commands


app = typer.Typer(cls=NetsimGroup, callback=_root, help=HELP, no_args_is_help=True, **SETTINGS)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
