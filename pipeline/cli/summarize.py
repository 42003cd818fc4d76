"""`contractsum summarize` and `contractsum show`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.cli._common import console, engine_option, err_console, open_db, print_json, settings_from


def register(app: typer.Typer) -> None:
    app.command("summarize")(summarize)
    app.command("show")(show)


def summarize(
    ctx: typer.Context,
    batch: str | None = typer.Option(None, "--batch", "-b", help="Only this batch (default: all queued work)."),
    model: Path | None = typer.Option(
        None, "--model", help="Model checkpoint folder (default: settings / latest demo model)."
    ),
    tensor_parallel_size: int | None = engine_option("tensor_parallel_size"),
    dtype: str | None = engine_option("dtype"),
    quantization: str | None = engine_option("quantization"),
    max_model_len: int | None = engine_option("max_model_len"),
    playbook: str | None = typer.Option(
        None, "--playbook", help="Clause playbook: a name or a .toml path (default: settings)."
    ),
    max_documents: int | None = typer.Option(
        None,
        "--max-documents",
        min=1,
        help="At most this many documents this run (in progress first, then new, then stale ones).",
    ),
    stale_first: bool = typer.Option(
        False, "--stale-first", help="Upgrade documents with results under an older configuration before new ones."
    ),
    tier: str | None = typer.Option(
        None, "--tier", help="Run on this engine tier (default: primary, then the fallbacks as needed)."
    ),
    upgrade_fallback: bool = typer.Option(
        False, "--upgrade-fallback", help="Redo on the primary (or --tier) the documents a fallback tier did."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Give every document (of the batch) a result under the current configuration — model,
    numerics, prompts, playbook, sampling — where it has none, reusing every stored answer to a
    prompt that did not change. Stores summaries with citations.

    Exit 0 when every document in scope has a summary, 1 when any failed.
    """
    from pipeline.batch import ProgressEvent
    from pipeline.engine.routing import summarize_routed
    from pipeline.engine.tiers import tier as tier_named

    settings = settings_from(
        ctx,
        model=model,
        tensor_parallel_size=tensor_parallel_size,
        dtype=dtype,
        quantization=quantization,
        max_model_len=max_model_len,
        playbook=playbook,
    )
    from pipeline.review.playbooks import playbook_for

    playbook_for(settings)  # a bad playbook is a usage error before any engine starts
    if tier is not None:
        tier_named(settings, tier)  # an unknown tier too
    factory = open_db(settings)
    progress = Progress(
        TextColumn("[bold]summarize"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err_console,
        transient=True,
        disable=as_json or not err_console.is_terminal,
    )
    with progress:
        task = progress.add_task("starting engine", total=None)

        def on_progress(ev: ProgressEvent) -> None:
            if ev.kind == "progress":
                progress.update(task, completed=ev.done, total=ev.total, description=f"wave {ev.wave}")
            elif ev.kind == "db_retry":  # the run goes on; operators should still see the outage
                err_console.print(f"database unreachable ({ev.error}): retrying, attempt {ev.attempt}", highlight=False)

        routed = summarize_routed(
            factory,
            settings,
            batch=batch,
            on_progress=on_progress,
            max_documents=max_documents,
            stale_first=stale_first,
            tier_name=tier,
            upgrade_fallback=upgrade_fallback,
        )
    report = merged_report(routed.reports)
    data = {**report.as_dict(), "routing": routed.as_dict()}
    if as_json:
        print_json(data)
    elif report.nothing_to_do:
        console.print(
            f"nothing to do: every document in scope has a result under configuration {report.config_id} or failed"
        )
    else:
        engine = f"engine run {report.engine_run_id}" if report.engine_run_id is not None else "no engine started"
        console.print(
            f"{len(report.summarized)} summarized ({report.stale_queued} upgraded from an older configuration), "
            f"{len(report.failed)} failed; {report.prompts} prompts in {report.waves} waves, "
            f"{report.reused} answered from stored completions; {report.tokens_in} tokens in, "
            f"{report.tokens_out} out, {report.tokens_per_second:.1f} output tok/s ({engine}; "
            f"configuration {report.config_id})",
            highlight=False,
        )
    if report.deferred and not as_json:
        console.print(f"{report.deferred} more document(s) left for a later run (--max-documents)", highlight=False)
    if routed.fallback_used and not as_json:
        console.print(f"[yellow]{routed.message()}[/]", highlight=False)
    for doc_id, reason in report.failed.items():
        err_console.print(f"[red]document {doc_id} failed:[/] {reason}", highlight=False)
    raise typer.Exit(1 if report.failed else 0)


def merged_report(reports: list):
    """One report of a routed run's tiers (numbers added up, documents joined)."""
    from pipeline.review.summarize import SummarizeReport

    if len(reports) == 1:
        return reports[0]
    out = SummarizeReport(nothing_to_do=all(r.nothing_to_do for r in reports))
    for r in reports:
        out.documents += [d for d in r.documents if d not in out.documents]
        out.summarized += r.summarized
        out.failed.update(r.failed)
        for name in ("waves", "prompts", "retries", "tokens_in", "tokens_out", "seconds", "engine_seconds", "reused"):
            setattr(out, name, getattr(out, name) + getattr(r, name))
        out.engine_run_id = r.engine_run_id or out.engine_run_id
        out.playbook, out.config_id = r.playbook, r.config_id
    return out


def _ocr_mark(citation: dict, entry: dict) -> str:
    if not citation.get("ocr"):
        return ""
    return " (OCR, low confidence)" if citation["page"] in entry["low_confidence_pages"] else " (OCR)"


def _ocr_line(entry: dict) -> str:
    line = f"{entry['ocr_pages']} of {entry['pages']} pages read by OCR; citations marked (OCR) rest on OCR text"
    if entry["low_confidence_pages"]:
        line += "; low OCR confidence on page(s) " + ", ".join(str(n) for n in entry["low_confidence_pages"])
    return line


def show(
    ctx: typer.Context,
    document: str = typer.Argument(..., help="Document id, sha256 (prefix of 8+) or file name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    config_id: str | None = typer.Option(
        None, "--config-id", help="Show this configuration's result (id or unique prefix; see `contractsum configs`)."
    ),
    as_of: str | None = typer.Option(None, "--as-of", help="Show the newest result made by this ISO date or time."),
) -> None:
    """Show one document: its summary, clauses and the cited sentences with pages (the current
    configuration's result; where it has none, the newest of the same review, marked stale)."""
    from pipeline.errors import ConfigError
    from pipeline.reports.report import document_entry

    settings = settings_from(ctx)
    factory = open_db(settings)
    from storage import repo

    with factory() as s:
        doc = repo.find_document(s, document)
        if doc is None:
            raise ConfigError(f"no document {document!r}", hint="see `contractsum status`")
        from pipeline.reports.selection import selection_for
        from pipeline.review.playbooks import playbook_for

        book = playbook_for(settings)
        entry = document_entry(
            s,
            doc,
            settings.prompt_version,
            book,
            low_confidence=settings.ocr_low_confidence,
            selection=selection_for(s, settings, book, config_id=config_id, as_of=as_of),
        )
    if as_json:
        print_json(entry)
        return
    console.print(
        f"[bold]{entry['source']}[/] (document {entry['document_id']}, {entry['pages']} pages) — {entry['status']}",
        highlight=False,
    )
    if entry["error"]:
        console.print(f"[red]{entry['error']}[/]", highlight=False)
    if entry["configuration"]:
        from pipeline.reports.export import ConfigurationReport, configuration_fact

        conf = entry["configuration"]
        style = "" if conf["state"] == "current" else "[yellow]"
        console.print(style + "configuration: ", end="", highlight=False)
        console.print(configuration_fact(ConfigurationReport(**conf)), highlight=False, markup=False)
    if entry["ocr_pages"]:
        console.print(_ocr_line(entry), highlight=False, markup=False)
    if entry["summary"]:
        console.print(entry["summary"], highlight=False, markup=False)
    if entry["parties"]:
        console.print("parties: " + "; ".join(entry["parties"]), highlight=False, markup=False)
    table = Table(show_lines=True)
    table.add_column("clause")
    table.add_column("finding", overflow="fold")
    table.add_column("evidence", overflow="fold")
    for cl in entry["clauses"]:
        if cl["status"] != "found":
            table.add_row(cl["type"], cl["status"].replace("_", " "), "")
            continue
        ev = "\n".join(f"p.{c['page']} {c['sentence_id']}{_ocr_mark(c, entry)}: {c['text']}" for c in cl["citations"])
        table.add_row(cl["type"], cl["finding"], ev)
    if entry["clauses"]:
        console.print(table)
