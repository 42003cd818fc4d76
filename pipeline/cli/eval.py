"""`contractsum eval cuad`: score the review against CUAD's lawyers, beside a keyword baseline."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from pipeline.cli._common import console, open_db, print_json, settings_from

eval_app = typer.Typer(help="Score the review against labelled data.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


@eval_app.command("cuad")
def cuad(
    ctx: typer.Context,
    folder: Path = typer.Argument(..., help="A folder in CUAD's layout: master_clauses.csv + full_contract_pdf/."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N contracts of the CSV."),
    playbook: str = typer.Option("cuad", "--playbook", help="Playbook whose clause types map to CUAD categories."),
    model: Path | None = typer.Option(
        None, "--model", help="Model checkpoint folder (default: settings / latest demo model)."
    ),
    mode: str | None = typer.Option(
        None,
        "--mode",
        help="Review mode: whole (one prompt per chunk asks every type), candidates (retrieval proposes "
        "sentences per type, the model judges and cites among them) or gated (candidates, asking only types whose "
        "keyword rule matched). Default: the playbook's review_mode.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Ingest the contracts, review them with the playbook and score presence, evidence and answers
    per CUAD category (micro and macro), with a non-LLM keyword baseline on the same contracts."""
    from pipeline.quality.cuad_eval import run_cuad_eval

    settings = settings_from(ctx, model=model)
    factory = open_db(settings)
    result = run_cuad_eval(factory, settings, folder, limit=limit, playbook=playbook, mode=mode)
    if as_json:
        print_json(result)
        return
    table = Table(
        title=f"CUAD: {result['contracts']} contracts, playbook {result['playbook']} ({result['mode']}), model {result['model']}"
    )
    for col in ("category", "support", "P", "R", "F1", "ev. R", "ev. P", "baseline F1"):
        table.add_column(col, justify="left" if col == "category" else "right")
    base = result["baseline"]["categories"]
    for name, c in result["categories"].items():
        table.add_row(
            name,
            str(c["support"]),
            _fmt(c["precision"]),
            _fmt(c["recall"]),
            _fmt(c["f1"]),
            _fmt(c["evidence_recall"]),
            _fmt(c["evidence_precision"]),
            _fmt(base.get(name, {}).get("f1")),
        )
    for label in ("micro", "macro"):
        m, b = result[label], result["baseline"][label]
        table.add_row(
            f"[bold]{label}[/]",
            str(m.get("support", "")),
            _fmt(m["precision"]),
            _fmt(m["recall"]),
            _fmt(m["f1"]),
            _fmt(m["evidence_recall"]),
            _fmt(m["evidence_precision"]),
            _fmt(b["f1"]),
        )
    console.print(table)
    console.print(f"{result['seconds']:.0f} s; batch {result['batch']}", highlight=False)
