"""The CLI layer: the `netsim` command line (typer), shaped like kind and kubectl.
May import: every layer; nothing imports it (the core never imports the CLI).

commands.py lists every command (name, module, attribute, one-line help); app.py is the entry
point, whose root group imports a command's module only when that command is used; common.py
holds the options and helpers the command modules share.  The commands: cluster.py (up, join,
down, status, exec, node), kubectl.py (apply, get, delete, describe, label, annotate, agent),
observe_cmd.py (probe, check, graph), trace_cmd.py, policy_cmd.py, cni.py, proxy.py."""
