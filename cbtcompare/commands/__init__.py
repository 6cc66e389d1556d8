"""CLI subcommands, one module each (see cbtcompare.cli.COMMAND_MODULES)."""
