"""Read models for people: the status overview and the export report built from storage."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pipeline.batch import resolve_batch
from storage import repo


def status_report(factory: sessionmaker[Session], *, batch: str | None = None) -> dict[str, Any]:
    with factory() as s:
        batch_id = resolve_batch(s, batch)
        return {
            "totals": repo.counts(s),
            "jobs": repo.job_counts(s, batch_id=batch_id),
            "batches": repo.batches_overview(s, name=batch),
            "engine_runs": [engine_run_entry(r) for r in repo.engine_runs(s)],
        }


def engine_run_entry(run) -> dict[str, Any]:
    return {
        "id": run.id, "status": run.status, "model": run.model, "started_at": run.started_at.isoformat(),
        "prompts": run.prompts, "tokens_in": run.tokens_in, "tokens_out": run.tokens_out,
        "wall_seconds": round(run.wall_seconds, 3), "output_tokens_per_second": round(run.tokens_per_second, 2),
    }


def run_timing(factory: sessionmaker[Session], *, batch: str, engine_run_id: int | None) -> dict[str, Any]:
    """What a batch run did, from storage: the batch's contracts and pages (those with text), and
    the prompts, output tokens and generation time of the engine run that summarized it."""
    with factory() as s:
        overview = repo.batches_overview(s, name=batch)
        run = repo.engine_run(s, engine_run_id)
        return {
            "contracts": overview[0]["documents"] if overview else 0,
            "pages": overview[0]["pages"] if overview else 0,
            "engine_run": engine_run_entry(run) if run is not None else None,
        }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def document_entry(s: Session, doc, prompt_version: str) -> dict[str, Any]:
    """One document of the export report, from storage."""
    entry: dict[str, Any] = {
        "document_id": doc.id,
        "source": doc.source,
        "sha256": doc.sha256,
        "pages": doc.page_count,
        "status": "pending",
        "error": None,
        "summary": None,
        "parties": [],
        "dates": [],
        "clauses": [],
        "provenance": None,
    }
    if doc.status == "needs_ocr":
        entry["status"] = "needs_ocr"
        return entry
    summary = repo.summary_for(s, doc.id, prompt_version) or repo.latest_summary(s, doc.id)
    if summary is None:
        failed = repo.failed_job(s, doc.id, prompt_version)
        if failed is not None:
            entry["status"], entry["error"] = "failed", failed.last_error
        return entry
    cites: dict[int, list[dict[str, Any]]] = {}
    for c in repo.citations_of(s, summary.id):
        cites.setdefault(c.clause_id, []).append(
            {"sentence_id": f"S{c.sentence_ordinal}", "page": c.page_number, "text": c.text,
             "char_start": c.char_start, "char_end": c.char_end}
        )
    entry.update(
        status="summarized",
        summary=summary.summary,
        parties=list(summary.parties),
        dates=list(summary.dates),
        clauses=[{"type": cl.type, "finding": cl.finding, "citations": cites.get(cl.id, [])} for cl in repo.clauses_of(s, summary.id)],
    )
    run = repo.engine_run(s, summary.engine_run_id)
    if run is not None:
        entry["provenance"] = {
            "model": run.model, "dtype": run.dtype, "quantization": run.quantization,
            "tensor_parallel_size": run.tensor_parallel_size, "vllm_version": run.vllm_version,
            "prompt_version": summary.prompt_version, "engine_run_id": run.id,
        }
    return entry


def build_report(factory: sessionmaker[Session], *, prompt_version: str, batch: str | None = None) -> dict[str, Any]:
    """The export report: every document (of ``batch``), plus the batch's files that failed ingest."""
    with factory() as s:
        batch_id = resolve_batch(s, batch)
        docs = repo.documents(s, batch_id=batch_id, statuses=("ok", "needs_ocr"))
        entries = [document_entry(s, d, prompt_version) for d in docs]
        if batch_id is not None:
            for rec in repo.batch_records(s, batch_id):
                if rec.status == "failed":
                    entries.append(
                        {"document_id": None, "source": _name(rec.source), "sha256": rec.sha256, "pages": rec.pages,
                         "status": "failed", "error": rec.reason, "summary": None, "parties": [], "dates": [],
                         "clauses": [], "provenance": None}
                    )
    return {"generated_at": now_iso(), "batch": batch, "documents": entries}


def _name(path: str) -> str:
    from pathlib import Path

    return Path(path).name or path
