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
) -> None:
    """Write summaries, clauses and citations (page + sentence) as JSON, CSV, Markdown or HTML."""
    from pipeline.errors import ConfigError
    from pipeline.reports.export import FORMATS, write_report
    from pipeline.reports.report import build_report

    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    from pipeline.review.playbooks import playbook_for

    settings = settings_from(ctx)
    book = playbook_for(settings, playbook)
    factory = open_db(settings)
    report = build_report(
        factory,
        prompt_version=settings.prompt_version,
        batch=batch,
        playbook=book,
        low_confidence=settings.ocr_low_confidence,
    )
    target = out or settings.reports_dir / f"{batch or 'all'}.{fmt}"
    path = write_report(report, fmt, target)
    done = sum(1 for d in report["documents"] if d["status"] == "summarized")
    console.print(f"wrote {path} ({done} of {len(report['documents'])} documents summarized)", highlight=False)
