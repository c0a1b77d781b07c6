"""The CLI layer: the `netsim` command line (typer), shaped like kind and kubectl.
May import: every layer; nothing imports it (the core never imports the CLI)."""
