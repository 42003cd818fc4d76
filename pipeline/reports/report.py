"""Read models for people: the status overview and the export report built from storage."""

from __future__ import annotations

from datetime import UTC, datetime
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
        "id": run.id,
        "status": run.status,
        "model": run.model,
        "started_at": run.started_at.isoformat(),
        "prompts": run.prompts,
        "tokens_in": run.tokens_in,
        "tokens_out": run.tokens_out,
        "wall_seconds": round(run.wall_seconds, 3),
        "output_tokens_per_second": round(run.tokens_per_second, 2),
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
    return datetime.now(UTC).isoformat(timespec="seconds")


def document_entry(
    s: Session, doc, prompt_version: str, playbook=None, *, low_confidence: float = 80.0
) -> dict[str, Any]:
    """One document of the export report, from storage. With ``playbook``, its summary is the
    one made with that playbook (else the latest) and every clause type of the playbook is listed:
    found, not_found (asked, absent) or not_asked (the summary's playbook never asked it). Pages OCR
    read are counted, those whose OCR confidence is below ``low_confidence`` listed, and each
    citation says whether it rests on OCR text."""
    ocr_pages = repo.ocr_pages_of(s, doc.id)
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
        "playbook": None,
        "playbook_version": None,
        "provenance": None,
        "ocr_pages": len(ocr_pages),
        "low_confidence_pages": sorted(n for n, c in ocr_pages.items() if c is not None and c < low_confidence),
    }
    key = playbook.review_key(prompt_version) if playbook is not None else prompt_version
    if doc.status == "needs_ocr":
        entry["status"] = "needs_ocr"
        return entry
    # With a playbook, only that playbook's summary counts: another playbook's would hide a failure.
    summary = repo.summary_for(s, doc.id, key) or (repo.latest_summary(s, doc.id) if playbook is None else None)
    if summary is None:
        failed = repo.failed_job(s, doc.id, key)
        if failed is not None:
            entry["status"], entry["error"] = "failed", failed.last_error
        return entry
    cites: dict[int, list[dict[str, Any]]] = {}
    for c in repo.citations_of(s, summary.id):
        cites.setdefault(c.clause_id, []).append(
            {
                "sentence_id": f"S{c.sentence_ordinal}",
                "page": c.page_number,
                "text": c.text,
                "char_start": c.char_start,
                "char_end": c.char_end,
                "ocr": c.page_number in ocr_pages,
                "ocr_confidence": ocr_pages.get(c.page_number),
            }
        )
    entry.update(
        status="summarized",
        summary=summary.summary,
        parties=list(summary.parties),
        dates=list(summary.dates),
        clauses=_clause_entries(repo.clauses_of(s, summary.id), cites, playbook, legacy=summary.playbook is None),
        playbook=summary.playbook or "default",
        playbook_version=summary.playbook_version or "1",
    )
    run = repo.engine_run(s, summary.engine_run_id)
    if run is not None:
        entry["provenance"] = {
            "model": run.model,
            "dtype": run.dtype,
            "quantization": run.quantization,
            "tensor_parallel_size": run.tensor_parallel_size,
            "vllm_version": run.vllm_version,
            "prompt_version": summary.prompt_version,
            "engine_run_id": run.id,
        }
    return entry


def _clause_entries(
    rows, cites: dict[int, list[dict[str, Any]]], playbook, *, legacy: bool = False
) -> list[dict[str, Any]]:
    """Stored clause rows in the playbook's order, then any the playbook does not name; the
    playbook's types with no row are ``not_asked``. A ``legacy`` summary (stored before playbooks,
    which kept only found types) asked every default type: the missing ones are ``not_found``."""
    entries = [
        {
            "type": cl.type,
            "status": cl.status or "found",
            "finding": cl.finding,
            "answer": cl.answer,
            "citations": cites.get(cl.id, []),
        }
        for cl in rows
    ]
    if legacy:
        from pipeline.review.schema import CLAUSE_TYPES

        have = {e["type"] for e in entries}
        entries += [
            {"type": t, "status": "not_found", "finding": "", "answer": None, "citations": []}
            for t in CLAUSE_TYPES
            if t not in have
        ]
    if playbook is None:
        return entries
    order = {t: i for i, t in enumerate(playbook.ids)}
    have = {e["type"] for e in entries}
    entries += [
        {"type": t, "status": "not_asked", "finding": "", "answer": None, "citations": []}
        for t in playbook.ids
        if t not in have
    ]
    return sorted(entries, key=lambda e: order.get(e["type"], len(order)))


def build_report(
    factory: sessionmaker[Session],
    *,
    prompt_version: str,
    batch: str | None = None,
    playbook=None,
    low_confidence: float = 80.0,
) -> dict[str, Any]:
    """The export report: every document (of ``batch``), plus the batch's files that failed ingest."""
    with factory() as s:
        batch_id = resolve_batch(s, batch)
        docs = repo.documents(s, batch_id=batch_id, statuses=("ok", "needs_ocr"))
        entries = [document_entry(s, d, prompt_version, playbook, low_confidence=low_confidence) for d in docs]
        if batch_id is not None:
            for rec in repo.batch_records(s, batch_id):
                if rec.status == "failed":
                    entries.append(
                        {
                            "document_id": None,
                            "source": _name(rec.source),
                            "sha256": rec.sha256,
                            "pages": rec.pages,
                            "status": "failed",
                            "error": rec.reason,
                            "summary": None,
                            "parties": [],
                            "dates": [],
                            "clauses": [],
                            "playbook": None,
                            "playbook_version": None,
                            "provenance": None,
                            "ocr_pages": 0,
                            "low_confidence_pages": [],
                        }
                    )
    return {"generated_at": now_iso(), "batch": batch, "documents": entries}


def _name(path: str) -> str:
    from pathlib import Path

    return Path(path).name or path
