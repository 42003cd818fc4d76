"""`contractsum ingest` and `contractsum status`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.cli._common import console, err_console, open_db, print_json, settings_from
from pipeline.errors import ModelNotFoundError

STATUS_STYLE = {"ok": "green", "duplicate": "cyan", "failed": "red", "needs_ocr": "yellow"}


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("status")(status)


def ingest(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(..., help="Files, folders or glob patterns (.pdf, .txt)."),
    batch: str | None = typer.Option(
        None, "--batch", "-b", help="Batch name (default: batch-<timestamp>); reusing a name adds to it."
    ),
    password: str | None = typer.Option(
        None, "--password", help="Password for encrypted PDFs (an empty one is always tried)."
    ),
    model: Path | None = typer.Option(None, "--model", help="Model folder whose tokenizer sizes the chunks."),
    workers: int | None = typer.Option(
        None, "--workers", "-w", help="Extract in this many processes (default: settings.ingest_workers)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Read contracts into the database: pages, sentences and token-budget chunks.

    Exit 0 when every file ended ok or duplicate, 1 when any failed or needs OCR, 2 for usage errors.
    """
    from pipeline.batch import chunker_for_tier, ingest_paths

    settings = settings_from(ctx, model=model, ingest_workers=workers)
    factory = open_db(settings)
    try:
        chunker = chunker_for_tier(settings)
    except ModelNotFoundError:
        chunker = None

    progress = Progress(
        TextColumn("[bold]ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err_console,
        transient=True,
        disable=as_json or not err_console.is_terminal,
    )
    with progress:
        task = progress.add_task("", total=None)
        report = ingest_paths(
            factory,
            settings,
            paths,
            batch_name=batch,
            password=password,
            chunker=chunker,
            on_start=lambda n: progress.update(task, total=n),
            on_file=lambda f: progress.update(task, advance=1, description=f.source[:40]),
        )

    for notice in report.notices:  # stderr, so --json output stays one JSON document
        err_console.print(f"[yellow]note:[/] {notice}", highlight=False)
    if as_json:
        print_json(
            {
                "batch": report.batch,
                "batch_id": report.batch_id,
                "counts": report.counts(),
                "chunking": report.chunking,
                "notices": report.notices,
                "documents": [
                    {k: v for k, v in f.as_dict().items() if k != "path"} for f in report.files + report.problems
                ],
            }
        )
    else:
        table = Table(title=f"batch {report.batch}", title_justify="left")
        for col in ("file", "status", "pages", "chunks", "reason"):
            table.add_column(col, overflow="fold")
        for f in report.files + report.problems:
            style = STATUS_STYLE.get(f.status, "")
            table.add_row(
                f.source,
                f"[{style}]{f.status}[/]",
                str(f.pages or ""),
                str(f.chunks if f.chunks is not None else ""),
                f.reason,
            )
        console.print(table)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(report.counts().items()))
        console.print(f"{len(report.files) + len(report.problems)} files: {counts or 'none'}")
        if report.chunking:
            console.print(f"[yellow]note:[/] {report.chunking}")
    if not report.files and not report.problems:
        raise typer.Exit(1)
    raise typer.Exit(0 if report.ok else 1)


def status(
    ctx: typer.Context,
    batch: str | None = typer.Option(None, "--batch", "-b", help="Only this batch."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """What the database holds: documents, chunks, jobs by state, summaries; per batch, how many
    documents have a result under the current configuration and how many only stale ones."""
    from pipeline.cli.bench import measurements_table
    from pipeline.reports.report import status_report, tier_measurements
    from pipeline.reports.selection import current_config_id
    from pipeline.review.playbooks import playbook_for

    settings = settings_from(ctx)
    factory = open_db(settings)
    data = status_report(factory, batch=batch, current=current_config_id(settings, playbook_for(settings)))
    data["tier_benchmarks"] = tier_measurements(factory)
    if as_json:
        print_json(data)
        return
    totals = Table(title="contractsum", title_justify="left")
    totals.add_column("what")
    totals.add_column("count", justify="right")
    for k, v in data["totals"].items():
        totals.add_row(k, str(v))
    for k, v in data["jobs"].items():
        totals.add_row(f"jobs {k}", str(v))
    console.print(totals)
    if data["batches"]:
        bt = Table(title="batches", title_justify="left")
        for col in (
            "batch",
            "created",
            "files",
            "ok",
            "duplicate",
            "failed",
            "needs_ocr",
            "summarized",
            "current",
            "stale",
            "by tier",
        ):
            bt.add_column(col)
        for b in data["batches"]:
            c = b["files"]
            r = b["results"]
            bt.add_row(
                b["name"],
                b["created_at"][:19],
                str(sum(c.values())),
                str(c.get("ok", 0)),
                str(c.get("duplicate", 0)),
                str(c.get("failed", 0)),
                str(c.get("needs_ocr", 0)),
                str(b["summarized"]),
                str(r["current"]),
                str(r["stale"]),
                ", ".join(f"{t} {n}" for t, n in sorted(r["by_tier"].items())),
            )
        console.print(bt)
        conf = data["configuration"]
        console.print(
            f"current configuration: {conf['current'] or 'unknown (no model configured)'}"
            + (f" — {conf['label']}" if conf["label"] else ""),
            highlight=False,
            markup=False,
        )
        for b in data["batches"]:
            for row in b["results"]["by_configuration"]:
                if not row["current"]:
                    console.print(
                        f"  {b['name']}: {row['documents']} document(s) under {row['id']} (stale) — {row['label']}",
                        highlight=False,
                        markup=False,
                    )
    if data["tier_benchmarks"]:
        console.print(measurements_table(data["tier_benchmarks"]))
