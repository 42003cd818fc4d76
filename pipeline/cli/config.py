"""`contractsum config`: the effective settings, secrets masked, with where each came from."""

from __future__ import annotations

import typer
from rich.table import Table

from pipeline.cli._common import console, print_json, settings_from, sources_from
from pipeline.settings import Settings, describe


def register(app: typer.Typer) -> None:
    app.command("config")(config)


def config(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the effective settings (database passwords masked) and the source of each value."""
    settings = settings_from(ctx)
    rows = describe(settings, sources_from(ctx))
    if as_json:
        print_json({name: {"value": value, "source": source} for name, value, source in rows})
        return
    table = Table(title="contractsum settings", title_justify="left")
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    table.add_column("from")
    table.add_column("meaning", overflow="fold", style="dim")
    for name, value, source in rows:
        table.add_row(name, value, source, Settings.model_fields[name].description or "")
    console.print(table)
