"""`contractsum config`: the effective settings, secrets masked, with where each came from."""

from __future__ import annotations

import typer
from rich.table import Table

from pipeline.cli._common import console, print_json, settings_from, sources_from
from pipeline.engine.tiers import tiers_of
from pipeline.settings import Settings, describe


def register(app: typer.Typer) -> None:
    app.command("config")(config)


def config(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the effective settings (database passwords masked) and the source of each value, then
    the engine tiers in fallback order with the engine settings each runs."""
    settings = settings_from(ctx)
    rows = describe(settings, sources_from(ctx))
    tiers = [t.effective(settings) for t in tiers_of(settings)]
    if as_json:
        out: dict = {name: {"value": value, "source": source} for name, value, source in rows}
        out["tiers"]["value"] = tiers  # structured, primary first (the implicit one when none is configured)
        print_json(out)
        return
    table = Table(title="contractsum settings", title_justify="left")
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    table.add_column("from")
    table.add_column("meaning", overflow="fold", style="dim")
    for name, value, source in rows:
        table.add_row(name, value, source, Settings.model_fields[name].description or "")
    console.print(table)
    console.print(_tier_table(tiers))


def _tier_table(tiers: list[dict]) -> Table:
    table = Table(title="engine tiers (fallback order)", title_justify="left")
    for col in ("tier", "model", "TP", "quant", "context", "dtype", "seqs", "work pool", "deployment"):
        table.add_column(col, overflow="fold")
    for t in tiers:
        e = t["engine"]
        table.add_row(
            t["name"],
            t["model"] or "(latest demo model)",
            str(e["tensor_parallel_size"]),
            e["quantization"] or "-",
            str(e["max_model_len"]),
            e["dtype"],
            str(e["max_num_seqs"]),
            t["work_pool"],
            t["deployment"] or "-",
        )
    return table
