"""``contractsum eval cuad``: review a folder in CUAD's layout and score the review against the
lawyers' labels, beside a keyword baseline scored on the same contracts in the same run.

The flow is the product's own: ingest the PDFs into a batch, summarize with the playbook, build
the portfolio matrix from storage, then map each column to its CUAD category (``cuad_category`` in
the playbook) and score (``pipeline.quality.cuad``). Nothing is scored that storage does not hold.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import ConfigError
from pipeline.review.playbooks import Playbook, playbook_for
from pipeline.settings import Settings


def matrix_predictions(matrix, documents_by_contract: dict[str, list[int]]) -> dict[str, dict[str, Any]]:
    """CUAD predictions (contract name -> category -> Prediction) from the matrix's rows. A contract
    split over several PDFs is found where any part found it, citing every part's sentences."""
    from pipeline.quality.cuad import Prediction

    rank = {"found": 3, "not_found": 2, "failed": 1, "not_asked": 0}
    by_doc = {r.document_id: r for r in matrix.rows}
    out: dict[str, dict[str, Any]] = {}
    for name, doc_ids in documents_by_contract.items():
        preds: dict[str, Any] = {}
        for col in matrix.columns:
            if not col.cuad_category:
                continue
            cells = [by_doc[d].cells[col.id] for d in doc_ids if d in by_doc]
            if not cells:
                continue
            best = max(cells, key=lambda c: rank[c.status])
            cites = [c.text for cell in cells if cell.status == "found" for c in cell.citations]
            answer = next((c.answer for c in cells if c.status == "found" and c.answer), None)
            preds[col.cuad_category] = Prediction(status=best.status, answer=answer, citations=cites)
        out[name] = preds
    return out


def run_cuad_eval(
    factory: sessionmaker[Session],
    settings: Settings,
    folder: Path,
    *,
    limit: int | None = None,
    playbook: Playbook | str | None = "cuad",
    engine=None,
    batch_name: str | None = None,
    mode: str | None = None,
) -> dict[str, Any]:
    """Ingest, review and score the contracts of ``folder``; the JSON object ``eval cuad --json`` prints.
    ``mode`` ("whole" | "candidates") overrides the playbook's ``review_mode``."""
    from pipeline.batch import Chunker, default_batch_name, ingest_paths
    from pipeline.ingest.ingest import display_name
    from pipeline.quality.baseline import baseline_predictions
    from pipeline.quality.cuad import load_cuad, score
    from pipeline.reports.portfolio import build_matrix
    from pipeline.review.summarize import summarize
    from storage import repo

    t0 = time.perf_counter()
    book = playbook_for(settings, playbook).with_mode(mode)
    if not any(c.cuad_category for c in book.clauses):
        raise ConfigError(f"playbook {book.name} maps no clause type to a CUAD category", hint="use --playbook cuad")
    contracts = load_cuad(Path(folder), limit=limit)
    if not contracts:
        raise ConfigError(f"{folder} holds no CUAD contracts to score")
    model_dir = settings.resolved_model()
    chunker = Chunker.for_model(settings, model_dir, book)
    batch = batch_name or default_batch_name("cuad-eval")
    pdfs = [p for c in contracts for p in c.pdf_paths]
    ingested = ingest_paths(factory, settings, pdfs, batch_name=batch, origin="eval", chunker=chunker)
    doc_of = {f.path: f.document_id for f in ingested.files if f.document_id is not None}
    documents_by_contract = {
        c.name: [doc_of[display_name(str(p))] for p in c.pdf_paths if display_name(str(p)) in doc_of] for c in contracts
    }
    reviewed = summarize(factory, settings, batch=batch, engine=engine, playbook=book)
    with factory() as s:
        from pipeline.reports.selection import Selection

        current = Selection(current=chunker.config_id, review_key=chunker.review_key)
        matrix = build_matrix(s, batch=batch, playbook=book, prompt_version=settings.prompt_version, selection=current)
        sentences = {
            name: [x.text for d in ids for x in repo.sentences_of(s, d)]
            for name, ids in documents_by_contract.items()
            if ids
        }
    model_score = score(contracts, matrix_predictions(matrix, documents_by_contract))
    base_score = score(contracts, baseline_predictions(contracts, sentences))
    result = model_score.to_json_dict()
    return {
        "contracts": len(contracts),
        "categories": result["categories"],
        "micro": result["micro"],
        "macro": result["macro"],
        "baseline": base_score.to_json_dict(),
        "model": model_dir.name,
        "playbook": f"{book.name}@{book.version}",
        "mode": book.mode_name,
        "seconds": round(time.perf_counter() - t0, 2),
        "batch": batch,
        "files": {
            "ingested": len(doc_of),
            "failed": [f"{f.source}: {f.reason}" for f in ingested.files if f.document_id is None],
        },
        "review": reviewed.as_dict(),
    }
