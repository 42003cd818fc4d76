"""`contractsum export`."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli._common import console, open_db, settings_from


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    ctx: typer.Context,
    batch: str | None = typer.Option(None, "--batch", "-b", help="Only this batch (default: every document)."),
    fmt: str = typer.Option("html", "--format", "-f", help="json | csv | md | html."),
    out: Path | None = typer.Option(None, "--out", "-o", help="File or folder (default: <home>/reports/)."),
    playbook: str | None = typer.Option(None, "--playbook", help="Playbook name or .toml path (default: settings)."),
    config_id: str | None = typer.Option(
        None, "--config-id", help="Show this configuration's results (id or unique prefix; see `contractsum configs`)."
    ),
    as_of: str | None = typer.Option(None, "--as-of", help="Show the newest results made by this ISO date or time."),
) -> None:
    """Write summaries, clauses and citations (page + sentence) as JSON, CSV, Markdown or HTML.
    Each document shows its result under the current configuration; where it has none, the newest
    result of the same review, marked stale."""
    from pipeline.errors import ConfigError
    from pipeline.reports.export import FORMATS, write_report
    from pipeline.reports.report import report_for

    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    settings = settings_from(ctx)
    factory = open_db(settings)
    report = report_for(factory, settings, batch=batch, playbook=playbook, config_id=config_id, as_of=as_of)
    target = out or settings.reports_dir / f"{batch or 'all'}.{fmt}"
    path = write_report(report, fmt, target)
    done = sum(1 for d in report["documents"] if d["status"] == "summarized")
    stale = report["results"]["stale"]
    console.print(
        f"wrote {path} ({done} of {len(report['documents'])} documents summarized"
        + (f", {stale} of them stale" if stale else "")
        + ")",
        highlight=False,
    )
