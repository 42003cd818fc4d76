"""Read models for people: the status overview and the export report built from storage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pipeline.batch import resolve_batch
from storage import repo


def status_report(
    factory: sessionmaker[Session], *, batch: str | None = None, current: str | None = None
) -> dict[str, Any]:
    """Totals, jobs by state, engine runs, and per batch its files and how many of its documents
    have a result under the ``current`` configuration, how many only under others (stale), how
    many none — with the configurations those results were made under."""
    with factory() as s:
        batch_id = resolve_batch(s, batch)
        batches = repo.batches_overview(s, name=batch)
        labels: dict[str, str] = {}
        for b in batches:
            ids = [d.id for d in repo.documents(s, batch_id=b["id"])]
            states = repo.result_states(s, ids, current or "")
            for cid in states["by_configuration"]:
                if cid not in labels:
                    conf = repo.configuration(s, cid)
                    labels[cid] = conf.label if conf is not None else cid
            tiers: dict[str, int] = {}
            for cid, n in states["by_configuration"].items():
                conf = repo.configuration(s, cid)
                if conf is not None and (cid == current or conf.tier != "primary"):
                    tiers[conf.tier] = tiers.get(conf.tier, 0) + n
            b["results"] = {
                "by_tier": tiers,
                "current": states["current"] if current else 0,
                "stale": states["stale"] if current else states["current"] + states["stale"],
                "missing": states["missing"],
                "by_configuration": [
                    {"id": cid, "label": labels[cid], "documents": n, "current": cid == current}
                    for cid, n in sorted(states["by_configuration"].items(), key=lambda kv: -kv[1])
                ],
            }
        conf = repo.configuration(s, current) if current else None
        return {
            "configuration": {"current": current, "label": conf.label if conf is not None else None},
            "totals": repo.counts(s),
            "jobs": repo.job_counts(s, batch_id=batch_id),
            "batches": batches,
            "engine_runs": [engine_run_entry(r) for r in repo.engine_runs(s)],
        }


def engine_run_entry(run) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status,
        "model": run.model,
        "tier": run.tier,
        "config_id": run.config_id,
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
    s: Session, doc, prompt_version: str, playbook=None, *, low_confidence: float = 80.0, selection=None
) -> dict[str, Any]:
    """One document of the export report, from storage. Its result is the one ``selection`` (a
    reports.selection.Selection) picks: the current configuration's, else the newest of the same
    review marked stale; without a selection, the playbook's review key's newest (else the latest),
    which nothing calls current. Every clause type of the playbook is listed: found, not_found
    (asked, absent) or not_asked (the summary's playbook never asked it). Pages OCR read are
    counted, those whose OCR confidence is below ``low_confidence`` listed, and each citation says
    whether it rests on OCR text."""
    from pipeline.reports.selection import Selection

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
        "configuration": None,
        "ocr_pages": len(ocr_pages),
        "low_confidence_pages": sorted(n for n, c in ocr_pages.items() if c is not None and c < low_confidence),
    }
    key = playbook.review_key(prompt_version) if playbook is not None else prompt_version
    if selection is None:
        selection = Selection(current=None, review_key=key)
    if doc.status == "needs_ocr":
        entry["status"] = "needs_ocr"
        return entry
    # With a playbook, only that playbook's review counts: another playbook's would hide a failure.
    summary, state = selection.pick(s, doc.id)
    if summary is None and playbook is None and selection.config_id is None and selection.as_of is None:
        summary = repo.latest_summary(s, doc.id)
        state = "stale" if summary is not None and summary.config_id != selection.current else state
    if summary is None:
        failed = repo.failed_job(s, doc.id, selection.config_id or selection.current, review_key=key)
        if failed is not None:
            entry["status"], entry["error"] = "failed", failed.last_error
        return entry
    if state == "stale" and selection.current and selection.config_id is None and selection.as_of is None:
        failed = repo.failed_job(s, doc.id, selection.current)
        if failed is not None:  # the current configuration's review failed: say so, beside the stale result
            entry["status"], entry["error"] = "failed", failed.last_error
    conf = repo.configuration(s, summary.config_id)
    entry["configuration"] = {
        "id": summary.config_id,
        "label": conf.label if conf is not None else summary.config_id,
        "tier": conf.tier if conf is not None else "primary",
        "state": state,
        "current": selection.current,
    }
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
        status="summarized" if entry["status"] == "pending" else entry["status"],
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
    selection=None,
) -> dict[str, Any]:
    """The export report: every document (of ``batch``), plus the batch's files that failed ingest;
    which result each document shows is ``selection``'s choice (see :func:`document_entry`)."""
    with factory() as s:
        batch_id = resolve_batch(s, batch)
        docs = repo.documents(s, batch_id=batch_id, statuses=("ok", "needs_ocr"))
        entries = [
            document_entry(s, d, prompt_version, playbook, low_confidence=low_confidence, selection=selection)
            for d in docs
        ]
        shown = selection.describe(s) if selection is not None else None
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
                            "configuration": None,
                            "ocr_pages": 0,
                            "low_confidence_pages": [],
                        }
                    )
    states = [e["configuration"]["state"] for e in entries if e.get("configuration")]
    by_tier: dict[str, int] = {}
    for e in entries:
        if e.get("configuration") and e["configuration"]["state"] != "stale":
            by_tier[e["configuration"]["tier"]] = by_tier.get(e["configuration"]["tier"], 0) + 1
    return {
        "generated_at": now_iso(),
        "batch": batch,
        "configuration": shown,
        "results": {
            "current": states.count("current"),
            "fallback": states.count("fallback"),
            "stale": states.count("stale"),
            "by_tier": by_tier,
        },
        "documents": entries,
    }


def _name(path: str) -> str:
    from pathlib import Path

    return Path(path).name or path


def report_for(
    factory: sessionmaker[Session],
    settings: Any,
    *,
    batch: str | None = None,
    playbook=None,
    config_id: str | None = None,
    as_of: str | datetime | None = None,
) -> dict[str, Any]:
    """The export report of ``batch`` as ``settings`` ask for it: their playbook (or ``playbook``),
    the current configuration's results unless ``config_id``/``as_of`` pick others."""
    from pipeline.reports.selection import selection_for
    from pipeline.review.playbooks import playbook_for

    book = playbook_for(settings, playbook)
    with factory() as s:
        selection = selection_for(s, settings, book, config_id=config_id, as_of=as_of)
    return build_report(
        factory,
        prompt_version=settings.prompt_version,
        batch=batch,
        playbook=book,
        low_confidence=settings.ocr_low_confidence,
        selection=selection,
    )


def tier_measurements(factory: sessionmaker[Session]) -> list[dict[str, Any]]:
    """The newest stored `bench --tier` measurement of each tier (for `status` and the batch report)."""
    with factory() as s:
        rows = repo.latest_tier_benchmarks(s)
        return [
            {
                "tier": r.tier,
                "created_at": r.created_at.isoformat(),
                "model": r.model,
                "device": r.device,
                "fingerprint": r.fingerprint,
                "prefill_tokens_per_s": r.figures.get("prefill_tokens_per_s"),
                "decode_ms_per_token_batch1": r.figures.get("decode_ms_per_token_batch1"),
                "decode_ms_per_token_batch16": r.figures.get("decode_ms_per_token_batch16"),
                "cap_output_tokens_per_s": r.figures.get("cap_output_tokens_per_s"),
                "peak_memory_bytes": r.figures.get("peak_gpu_bytes", r.figures.get("peak_rss_bytes")),
            }
            for r in rows
        ]
