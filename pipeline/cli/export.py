"""`contractsum export`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.cli._common import console, handle_errors, open_db, settings_from


def register(app: typer.Typer) -> None:
    app.command("export")(export)


@handle_errors
def export(
    ctx: typer.Context,
    batch: Optional[str] = typer.Option(None, "--batch", "-b", help="Only this batch (default: every document)."),
    fmt: str = typer.Option("html", "--format", "-f", help="json | csv | md | html."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="File or folder (default: <home>/reports/)."),
) -> None:
    """Write summaries, clauses and citations (page + sentence) as JSON, CSV, Markdown or HTML."""
    from pipeline.reports.export import FORMATS, write_report
    from pipeline.errors import ConfigError
    from pipeline.reports.report import build_report

    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    settings = settings_from(ctx)
    factory = open_db(settings)
    report = build_report(
        factory, prompt_version=settings.prompt_version, batch=batch, low_confidence=settings.ocr_low_confidence
    )
    target = out or settings.reports_dir / f"{batch or 'all'}.{fmt}"
    path = write_report(report, fmt, target)  # type: ignore[arg-type]
    done = sum(1 for d in report["documents"] if d["status"] == "summarized")
    console.print(f"wrote {path} ({done} of {len(report['documents'])} documents summarized)", highlight=False)
