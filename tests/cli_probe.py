"""A command module for tests/test_cli_registration.py: commands that raise expected errors and
were written without ``handle_errors`` (registration must add it)."""

from __future__ import annotations

import typer

from pipeline.errors import ConfigError, StorageError

probe_app = typer.Typer(help="Probe group.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)
    app.add_typer(probe_app, name="probes")


def probe(ctx: typer.Context) -> None:
    """Fails as a bad setting does."""
    raise ConfigError("the probe's setting is wrong", hint="set it right")


@probe_app.command("deep")
def deep(ctx: typer.Context) -> None:
    """Fails as an unreachable database does, one group down."""
    raise StorageError("the probe's database is away")
