"""`contractsum matrix`: the portfolio view, one row per contract, one column per clause type."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from pipeline.cli._common import console, open_db, settings_from


def register(app: typer.Typer) -> None:
    app.command("matrix")(matrix)


def matrix(
    ctx: typer.Context,
    batch: str | None = typer.Option(None, "--batch", "-b", help="Only this batch (default: every document)."),
    playbook: str | None = typer.Option(None, "--playbook", help="Playbook name or .toml path (default: settings)."),
    fmt: str = typer.Option(
        "csv", "--format", "-f", help="csv (CUAD's master_clauses.csv layout) | xlsx | html | json."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="File or folder (default: stdout; xlsx: <home>/reports/)."
    ),
    config_id: str | None = typer.Option(
        None, "--config-id", help="This configuration's results (id or unique prefix; see `contractsum configs`)."
    ),
    as_of: str | None = typer.Option(None, "--as-of", help="The newest results made by this ISO date or time."),
) -> None:
    """The portfolio matrix: one row per contract, one column per clause type of the playbook.

    Each cell says found / not found / not asked / failed, the answer where the kind has one, and
    the cited sentences with their pages; the last column names the configuration of each row's
    result and marks a stale one. Without --out, csv/json/html go to stdout."""
    from pipeline.errors import ConfigError
    from pipeline.reports.portfolio import MATRIX_FORMATS, build_matrix, write_matrix
    from pipeline.review.playbooks import playbook_for

    if fmt not in MATRIX_FORMATS:
        raise ConfigError(f"unknown format {fmt!r}", hint=f"use one of {', '.join(MATRIX_FORMATS)}")
    settings = settings_from(ctx, playbook=playbook)
    book = playbook_for(settings)
    factory = open_db(settings)
    with factory() as s:
        from pipeline.reports.selection import selection_for

        chosen = selection_for(s, settings, book, config_id=config_id, as_of=as_of)
        m = build_matrix(s, batch=batch, playbook=book, prompt_version=settings.prompt_version, selection=chosen)
    if out is None and fmt != "xlsx":
        from pipeline.reports import matrix as render

        sys.stdout.write({"csv": render.to_csv, "json": render.to_json, "html": render.to_html}[fmt](m))
        sys.stdout.flush()
        return
    target = out or settings.reports_dir / f"matrix-{batch or 'all'}-{book.name}.{fmt}"
    path = write_matrix(m, fmt, target)
    found = sum(1 for r in m.rows for c in r.cells.values() if c.status == "found")
    console.print(
        f"wrote {path} ({len(m.rows)} contracts x {len(m.columns)} clause types, {found} found)", highlight=False
    )
