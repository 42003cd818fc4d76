"""`contractsum compare A B` and `contractsum configs`: results per configuration, and what changed."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from pipeline.cli._common import console, open_db, print_json, settings_from


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
    app.command("configs")(configs)


def compare(
    ctx: typer.Context,
    a: str = typer.Argument(..., help="Configuration A: an id, a unique prefix (4+), or 'current'."),
    b: str = typer.Argument(..., help="Configuration B: an id, a unique prefix (4+), or 'current'."),
    batch: str | None = typer.Option(None, "--batch", "-b", help="Only this batch (default: every document)."),
    fmt: str = typer.Option("md", "--format", "-f", help="md | html | json."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to this file (default: stdout)."),
    playbook: str | None = typer.Option(None, "--playbook", help="For 'current': the playbook (default: settings)."),
) -> None:
    """Per document: clause types found under one configuration and not the other, citations added
    and removed, answers that differ, summary similarity (ROUGE-L F1); totals per clause type; the
    documents that changed most first."""
    from pipeline.errors import ConfigError
    from pipeline.quality.compare import COMPARE_FORMATS, render
    from pipeline.quality.compare import compare as run

    if fmt not in COMPARE_FORMATS:
        raise ConfigError(f"unknown format {fmt!r}", hint=f"use one of {', '.join(COMPARE_FORMATS)}")
    settings = settings_from(ctx, playbook=playbook)
    factory = open_db(settings)
    with factory() as s:
        ids = [config_ref(s, settings, ref) for ref in (a, b)]
        result = run(s, ids[0], ids[1], batch=batch)
    text = render(result, fmt)
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from pipeline.reports.export import write_private, write_synced

    path = write_private(out, lambda tmp: write_synced(tmp, text), what="comparison")
    console.print(f"wrote {path} ({len(result.documents)} documents compared)", highlight=False)


def config_ref(s, settings, ref: str) -> str:
    """A configuration id from an id, a unique prefix, or 'current' (what settings ask for now)."""
    from pipeline.errors import ConfigError
    from pipeline.reports.selection import current_config_id, resolve_config
    from pipeline.review.playbooks import playbook_for

    if ref == "current":
        current = current_config_id(settings, playbook_for(settings))
        if current is None:
            raise ConfigError("no current configuration: no model is configured", hint="pass --model or a config id")
        return current
    return resolve_config(s, ref)


def configs(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    playbook: str | None = typer.Option(None, "--playbook", help="Playbook of the current configuration."),
) -> None:
    """Every configuration results were made under: id, what it is, how many results, the last
    one; the current one (what `summarize` would use now) is marked."""
    from pipeline.reports.selection import current_config_id
    from pipeline.review.playbooks import playbook_for
    from storage import repo

    settings = settings_from(ctx, playbook=playbook)
    factory = open_db(settings)
    current = current_config_id(settings, playbook_for(settings))
    with factory() as s:
        rows = [
            {
                "id": c.id,
                "current": c.id == current,
                "tier": c.tier,
                "review_key": c.review_key,
                "label": c.label,
                "results": n,
                "last_result_at": last.isoformat() if last else None,
                "fields": c.fields,
            }
            for c, n, last in repo.configurations(s)
        ]
    if as_json:
        print_json({"current": current, "configurations": rows})
        return
    table = Table(title=f"configurations (current: {current or 'unknown: no model configured'})")
    for col in ("id", "", "results", "last result", "configuration"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            str(r["id"]),
            "current" if r["current"] else "",
            str(r["results"]),
            str(r["last_result_at"] or ""),
            str(r["label"]),
        )
    console.print(table)
