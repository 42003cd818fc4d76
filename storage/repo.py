"""Queries. Each takes a Session; the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Select, and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from storage.models import (
    Batch,
    Chunk,
    Citation,
    Clause,
    Configuration,
    Document,
    EngineRun,
    IngestRecord,
    Job,
    Page,
    Sentence,
    StoredCompletion,
    Summary,
    utcnow,
)

# --- batches and files --------------------------------------------------------------------


def get_or_create_batch(session: Session, name: str, *, origin: str = "cli") -> Batch:
    batch = session.scalar(select(Batch).where(Batch.name == name))
    if batch is None:
        batch = Batch(name=name, origin=origin)
        session.add(batch)
        session.flush()
    return batch


def get_batch(session: Session, name: str) -> Batch | None:
    return session.scalar(select(Batch).where(Batch.name == name))


def document_by_sha(session: Session, sha256: str) -> Document | None:
    return session.scalar(select(Document).where(Document.sha256 == sha256))


def record_file(
    session: Session,
    batch: Batch,
    *,
    source: str,
    status: str,
    reason: str = "",
    sha256: str | None = None,
    pages: int | None = None,
    document_id: int | None = None,
) -> IngestRecord:
    """The one outcome of ``source`` in ``batch``; re-recording the same file replaces it."""
    record = session.scalar(
        select(IngestRecord).where(IngestRecord.batch_id == batch.id, IngestRecord.source == source)
    )
    if record is None:
        record = IngestRecord(batch_id=batch.id, source=source)
        session.add(record)
    record.status, record.reason, record.sha256 = status, reason, sha256
    record.pages, record.document_id = pages, document_id
    session.flush()
    return record


def add_document(
    session: Session,
    batch: Batch,
    *,
    sha256: str,
    source: str,
    source_path: str,
    kind: str,
    size_bytes: int,
    status: str,
    pages: Sequence[tuple[int, str, bool] | tuple[int, str, bool, str, str | None, str | None, float | None]],
    sentences: Sequence[tuple[int, int, int, int, str]],
) -> Document:
    """Insert a document with its pages (number, text, has_text[, text_source, ocr_engine,
    ocr_engine_version, ocr_confidence]) and sentences (ordinal, page, start, end, text) in bulk."""
    doc = Document(
        sha256=sha256,
        source=source,
        source_path=source_path,
        kind=kind,
        size_bytes=size_bytes,
        page_count=len(pages),
        status=status,
        batch_id=batch.id,
    )
    session.add(doc)
    session.flush()
    if pages:
        session.execute(
            insert(Page),
            [_page_row(doc.id, page) for page in pages],
        )
    if sentences:
        session.execute(
            insert(Sentence),
            [
                {"document_id": doc.id, "ordinal": o, "page_number": p, "char_start": a, "char_end": b, "text": t}
                for o, p, a, b, t in sentences
            ],
        )
    return doc


def _page_row(document_id: int, page: tuple) -> dict[str, Any]:
    number, text, has_text, *ocr = page
    source, engine, version, confidence = (
        (*ocr, None, None, None, None)[:4] if ocr else ("text_layer", None, None, None)
    )
    return {
        "document_id": document_id,
        "number": number,
        "text": text,
        "has_text": has_text,
        "text_source": source,
        "ocr_engine": engine,
        "ocr_engine_version": version,
        "ocr_confidence": confidence,
    }


def replace_text(
    session: Session,
    doc: Document,
    *,
    status: str,
    pages: Sequence[tuple],
    sentences: Sequence[tuple[int, int, int, int, str]],
) -> None:
    """Replace the pages and sentences of a document that has no chunks yet (a needs_ocr one that
    OCR has now read), and its status."""
    session.execute(delete(Sentence).where(Sentence.document_id == doc.id))
    session.execute(delete(Page).where(Page.document_id == doc.id))
    session.execute(delete(Chunk).where(Chunk.document_id == doc.id))
    doc.status = status
    doc.page_count = len(pages)
    session.flush()
    if pages:
        session.execute(insert(Page), [_page_row(doc.id, page) for page in pages])
    if sentences:
        session.execute(
            insert(Sentence),
            [
                {"document_id": doc.id, "ordinal": o, "page_number": p, "char_start": a, "char_end": b, "text": t}
                for o, p, a, b, t in sentences
            ],
        )


def text_page_count(session: Session, document_id: int) -> int:
    return session.scalar(select(func.count()).where(Page.document_id == document_id, Page.has_text.is_(True))) or 0


def ocr_pages_of(session: Session, document_id: int) -> dict[int, float | None]:
    """{page number: OCR confidence} of the document's pages whose text OCR read."""
    rows = session.execute(
        select(Page.number, Page.ocr_confidence).where(Page.document_id == document_id, Page.text_source == "ocr")
    )
    return {n: c for n, c in rows}


def batch_records(session: Session, batch_id: int) -> list[IngestRecord]:
    return list(
        session.scalars(select(IngestRecord).where(IngestRecord.batch_id == batch_id).order_by(IngestRecord.id))
    )


def sentences_of(session: Session, document_id: int) -> list[Sentence]:
    return list(session.scalars(select(Sentence).where(Sentence.document_id == document_id).order_by(Sentence.ordinal)))


def sentences_by_ordinal(session: Session, document_id: int, ordinals: Iterable[int]) -> dict[int, Sentence]:
    wanted = sorted(set(ordinals))
    if not wanted:
        return {}
    rows = session.scalars(select(Sentence).where(Sentence.document_id == document_id, Sentence.ordinal.in_(wanted)))
    return {s.ordinal: s for s in rows}


def documents(session: Session, *, batch_id: int | None = None, statuses: Sequence[str] = ("ok",)) -> list[Document]:
    """Documents (of a batch: those its files resolved to, duplicates included)."""
    q = select(Document).where(Document.status.in_(statuses)).order_by(Document.id)
    if batch_id is not None:
        ids = select(IngestRecord.document_id).where(
            IngestRecord.batch_id == batch_id, IngestRecord.document_id.is_not(None)
        )
        q = q.where(Document.id.in_(ids))
    return list(session.scalars(q))


def find_document(session: Session, ref: str) -> Document | None:
    """A document by id, sha256 (or a unique prefix of 8+), or source file name."""
    if ref.isdigit():
        doc = session.get(Document, int(ref))
        if doc is not None:
            return doc
    if len(ref) >= 8:
        hits = list(session.scalars(select(Document).where(Document.sha256.startswith(ref.lower())).limit(2)))
        if len(hits) == 1:
            return hits[0]
    return session.scalar(select(Document).where(Document.source == ref).order_by(Document.id.desc()).limit(1))


# --- chunks and jobs ----------------------------------------------------------------------


def chunks_of(session: Session, document_id: int, plan: str) -> list[Chunk]:
    return list(
        session.scalars(
            select(Chunk).where(Chunk.document_id == document_id, Chunk.plan == plan).order_by(Chunk.ordinal)
        )
    )


def save_chunks(session: Session, document_id: int, plan: str, rows: Sequence[dict[str, Any]]) -> list[Chunk]:
    """Store a document's chunks for ``plan`` once; a second call returns what is there."""
    existing = chunks_of(session, document_id, plan)
    if existing:
        return existing
    if rows:
        session.execute(insert(Chunk), [{"document_id": document_id, "plan": plan, **r} for r in rows])
    return chunks_of(session, document_id, plan)


def job_key(kind: str, document_id: int, config_id: str, plan: str, level: int, ordinal: int) -> str:
    """A job's identity: the same work for the same configuration always gets the same key, so a
    rerun queues none twice. (Map jobs are all level 0, which their key leaves out. Keys stored
    before configurations name the prompt version where the configuration id now stands.)"""
    if kind == "map":
        return f"map:{document_id}:{config_id}:{plan}:{ordinal}"
    return f"{kind}:{document_id}:{config_id}:{plan}:{level}:{ordinal}"


def enqueue(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert jobs whose key (:func:`job_key` of the row unless it brings one) is new; returns how
    many were added (reruns add none)."""
    if not rows:
        return 0
    rows = [
        r
        if "key" in r
        else {
            "key": job_key(r["kind"], r["document_id"], r["config_id"], r["plan"], r["level"], r["ordinal"]),
            **r,
        }
        for r in rows
    ]
    keys = [r["key"] for r in rows]
    have = set(session.scalars(select(Job.key).where(Job.key.in_(keys))))
    fresh = [r for r in rows if r["key"] not in have]
    if fresh:
        session.execute(insert(Job), [{"state": "queued", "attempts": 0, **r} for r in fresh])
    return len(fresh)


def _ready(now: datetime) -> Any:
    return or_(Job.state == "queued", and_(Job.state == "leased", Job.lease_expires_at < now))


def lease(
    session: Session,
    *,
    owner: str,
    lease_seconds: int,
    limit: int | None = None,
    kind: str | None = None,
    batch_id: int | None = None,
    document_ids: Sequence[int] | None = None,
    plan: str | None = None,
    config_id: str | None = None,
    count_attempt: bool = False,
) -> list[Job]:
    """Take ready jobs (queued, or leased with an expired lease) for ``owner``.

    PostgreSQL skips rows another worker has locked; SQLite serializes writers anyway.
    """
    now = utcnow()
    q: Select = select(Job).where(_ready(now)).order_by(Job.id)
    if kind is not None:
        q = q.where(Job.kind == kind)
    if batch_id is not None:
        q = q.where(Job.batch_id == batch_id)
    if document_ids is not None:
        q = q.where(Job.document_id.in_(list(document_ids)))
    if plan is not None:
        q = q.where(Job.plan == plan)
    if config_id is not None:
        q = q.where(Job.config_id == config_id)
    if limit is not None:
        q = q.limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    jobs = list(session.scalars(q))
    expires = now + timedelta(seconds=lease_seconds)
    for job in jobs:
        if job.state == "leased":  # its holder vanished without finishing: an interruption, not a try
            job.interruptions += 1
            job.attempts = max(job.attempts - 1, 0)
        job.state, job.lease_owner, job.lease_expires_at = "leased", owner, expires
        if count_attempt:
            # Counted at lease time, so a job that kills the engine every time still runs out.
            job.attempts += 1
    session.flush()
    return jobs


def release(session: Session, job_ids: Sequence[int], *, owner: str, error: str | None = None) -> int:
    """Give leased jobs back to the queue (engine died, shutdown)."""
    if not job_ids:
        return 0
    res = session.execute(
        update(Job)
        .where(Job.id.in_(list(job_ids)), Job.state == "leased", Job.lease_owner == owner)
        .values(**_interrupted(error))
    )
    return cast("CursorResult[Any]", res).rowcount or 0


def _interrupted(error: str | None) -> dict[str, Any]:
    # The try did not end in an answer: it does not count as an attempt, but as an interruption
    # (a job that kills its engine every time still ends failed, see Summarizer._prepare).
    return dict(
        state="queued",
        lease_owner=None,
        lease_expires_at=None,
        last_error=error,
        updated_at=utcnow(),
        attempts=Job.attempts - 1,
        interruptions=Job.interruptions + 1,
    )


def jobs_for_document(session: Session, document_id: int, config_id: str, plan: str | None = None) -> list[Job]:
    q = select(Job).where(Job.document_id == document_id, Job.config_id == config_id)
    if plan is not None:
        q = q.where(Job.plan == plan)
    return list(session.scalars(q.order_by(Job.level, Job.ordinal)))


def job_counts(session: Session, *, batch_id: int | None = None) -> dict[str, int]:
    q = select(Job.state, func.count()).group_by(Job.state)
    if batch_id is not None:
        q = q.where(Job.batch_id == batch_id)
    return {state: n for state, n in session.execute(q)}


# --- summaries ----------------------------------------------------------------------------


def summary_for(session: Session, document_id: int, config_id: str) -> Summary | None:
    """The document's result under configuration ``config_id``."""
    return session.scalar(select(Summary).where(Summary.document_id == document_id, Summary.config_id == config_id))


def summary_for_playbook(session: Session, document_id: int, playbook: str, version: str) -> Summary | None:
    """The latest summary of ``document_id`` made with playbook ``playbook`` at ``version`` (any prompt
    version); summaries stored before playbooks (NULL) count as default@1."""
    cond = and_(Summary.playbook == playbook, Summary.playbook_version == version)
    if (playbook, version) == ("default", "1"):
        cond = or_(cond, Summary.playbook.is_(None))
    return session.scalar(
        select(Summary).where(Summary.document_id == document_id, cond).order_by(Summary.id.desc()).limit(1)
    )


def latest_summary(session: Session, document_id: int) -> Summary | None:
    return session.scalar(
        select(Summary).where(Summary.document_id == document_id).order_by(Summary.id.desc()).limit(1)
    )


def add_summary(
    session: Session,
    *,
    document_id: int,
    prompt_version: str,
    config_id: str,
    engine_run_id: int | None,
    output: dict[str, Any],
    chunks: int,
    citations: Sequence[tuple[int, str, str, Sequence[Sentence]]],
    answers: dict[str, str | None] | None = None,
    not_found: Sequence[str] = (),
    playbook: str | None = None,
    playbook_version: str | None = None,
) -> Summary:
    """Store a summary with clauses and citations: ``citations`` is (clause index, type, finding,
    sentences) for each found type; ``not_found`` the types the playbook asked that were absent
    (stored as rows too, so "asked, not there" differs from "not asked")."""
    summary = Summary(
        document_id=document_id,
        prompt_version=prompt_version,
        config_id=config_id,
        engine_run_id=engine_run_id,
        summary=output.get("summary", ""),
        parties=list(output.get("parties", [])),
        dates=list(output.get("dates", [])),
        output=output,
        chunks=chunks,
        playbook=playbook,
        playbook_version=playbook_version,
    )
    session.add(summary)
    session.flush()
    answers = answers or {}
    for _idx, ctype, finding, sentences in citations:
        clause = Clause(
            summary_id=summary.id,
            type=ctype,
            finding=finding,
            status="found",
            answer=answers.get(ctype),
            playbook=playbook,
            playbook_version=playbook_version,
        )
        session.add(clause)
        session.flush()
        for s in sentences:
            session.add(
                Citation(
                    summary_id=summary.id,
                    clause_id=clause.id,
                    sentence_id=s.id,
                    sentence_ordinal=s.ordinal,
                    page_number=s.page_number,
                    char_start=s.char_start,
                    char_end=s.char_end,
                    text=s.text,
                )
            )
    for ctype in not_found:
        session.add(
            Clause(
                summary_id=summary.id,
                type=ctype,
                finding="",
                status="not_found",
                playbook=playbook,
                playbook_version=playbook_version,
            )
        )
    session.flush()
    return summary


def clauses_of(session: Session, summary_id: int) -> list[Clause]:
    return list(session.scalars(select(Clause).where(Clause.summary_id == summary_id).order_by(Clause.id)))


def citations_of(session: Session, summary_id: int) -> list[Citation]:
    return list(session.scalars(select(Citation).where(Citation.summary_id == summary_id).order_by(Citation.id)))


def all_citations(session: Session) -> list[tuple[Citation, Page]]:
    """Every stored citation with the page it names (for verification)."""
    q = (
        select(Citation, Page)
        .join(Summary, Summary.id == Citation.summary_id)
        .join(Page, and_(Page.document_id == Summary.document_id, Page.number == Citation.page_number))
        .order_by(Citation.id)
    )
    return [(c, p) for c, p in session.execute(q)]


# --- configurations and reuse (pipeline/review/configuration.py) ----------------------------


def ensure_configuration(session: Session, *, id: str, review_key: str, tier: str, label: str, fields: dict) -> None:
    """Record a configuration once (concurrent runs under the same one insert it once)."""
    _insert_ignore(
        session,
        Configuration,
        [{"id": id, "review_key": review_key, "tier": tier, "label": label, "fields": fields, "created_at": utcnow()}],
        "id",
    )


def configuration(session: Session, config_id: str) -> Configuration | None:
    return session.get(Configuration, config_id)


def configurations(session: Session) -> list[tuple[Configuration, int, datetime | None]]:
    """Every configuration with how many results it made and when the last one was, newest first."""
    q = (
        select(Configuration, func.count(Summary.id), func.max(Summary.created_at))
        .join(Summary, Summary.config_id == Configuration.id, isouter=True)
        .group_by(Configuration.id)
        .order_by(func.max(Summary.created_at).desc().nulls_last(), Configuration.created_at.desc())
    )
    return [(c, n, last) for c, n, last in session.execute(q)]


def find_configurations(session: Session, prefix: str) -> list[Configuration]:
    """Configurations whose id starts with ``prefix`` (at most 2: enough to tell unique from not)."""
    return list(session.scalars(select(Configuration).where(Configuration.id.startswith(prefix.lower())).limit(2)))


def stored_completions(session: Session, keys: Sequence[str]) -> dict[str, StoredCompletion]:
    out: dict[str, StoredCompletion] = {}
    wanted = list(dict.fromkeys(keys))
    for i in range(0, len(wanted), 500):
        for row in session.scalars(select(StoredCompletion).where(StoredCompletion.key.in_(wanted[i : i + 500]))):
            out[row.key] = row
    return out


def store_completions(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Keep prompts' answers by key; a key already there keeps its first answer."""
    _insert_ignore(session, StoredCompletion, [{"created_at": utcnow(), **r} for r in rows], "key")


def _insert_ignore(session: Session, model: Any, rows: Sequence[dict[str, Any]], key: str) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    session.execute(dialect_insert(model).on_conflict_do_nothing(index_elements=[key]), list(rows))


def select_summary(
    session: Session,
    document_id: int,
    current: str,
    *,
    review_key: str | None = None,
    config_id: str | None = None,
    as_of: datetime | None = None,
    prefer: Sequence[str] = (),
) -> tuple[Summary | None, str]:
    """The result to show for a document and how it stands: ``current`` (made under the current
    configuration ``current``), ``stale`` (one of ``prefer``'s configurations, else the newest one
    of the same review key under another, shown only when the current one is missing), or ``none``. ``config_id`` picks
    that configuration's result instead; ``as_of`` the newest result made by then (of ``review_key``
    when given). A result not made under ``current`` is never called current."""
    if config_id is not None:
        found = summary_for(session, document_id, config_id)
    elif as_of is not None:
        q = select(Summary).where(Summary.document_id == document_id, Summary.created_at <= as_of)
        if review_key is not None:
            q = q.where(Summary.prompt_version == review_key)
        found = session.scalar(q.order_by(Summary.created_at.desc(), Summary.id.desc()).limit(1))
    else:
        found = summary_for(session, document_id, current)
        for other in prefer:  # e.g. the fallback tiers' current configurations
            if found is None:
                found = summary_for(session, document_id, other)
        if found is None and review_key is not None:
            found = session.scalar(
                select(Summary)
                .where(Summary.document_id == document_id, Summary.prompt_version == review_key)
                .order_by(Summary.id.desc())
                .limit(1)
            )
    if found is None:
        return None, "none"
    return found, "current" if found.config_id == current else "stale"


def _in_slices(ids: Sequence[int], size: int = 500):
    """``ids`` in slices small enough for one IN list."""
    ids = list(ids)
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def documents_with_results(
    session: Session, document_ids: Sequence[int], *, config_id: str | None = None, review_key: str | None = None
) -> set[int]:
    """Of ``document_ids``, those with a stored result (under ``config_id``, of ``review_key``, or any)."""
    out: set[int] = set()
    for part in _in_slices(document_ids):
        q = select(Summary.document_id).where(Summary.document_id.in_(part))
        if config_id is not None:
            q = q.where(Summary.config_id == config_id)
        if review_key is not None:
            q = q.where(Summary.prompt_version == review_key)
        out |= set(session.scalars(q))
    return out


def documents_with_jobs(session: Session, document_ids: Sequence[int], *, config_id: str, plan: str) -> set[int]:
    """Of ``document_ids``, those with jobs under ``config_id`` and chunk ``plan`` (work started or queued)."""
    out: set[int] = set()
    for part in _in_slices(document_ids):
        out |= set(
            session.scalars(
                select(Job.document_id).where(Job.document_id.in_(part), Job.config_id == config_id, Job.plan == plan)
            )
        )
    return out


def result_states(session: Session, document_ids: Sequence[int], current: str) -> dict[str, Any]:
    """How many of ``document_ids`` have a result under ``current``, how many only under other
    configurations (stale), how many none, and the results per configuration."""
    ids = list(document_ids)
    have_current = documents_with_results(session, ids, config_id=current)
    have_any = documents_with_results(session, ids)
    per_config = {
        cid: n
        for cid, n in session.execute(
            select(Summary.config_id, func.count(func.distinct(Summary.document_id)))
            .where(Summary.document_id.in_(ids))
            .group_by(Summary.config_id)
        )
    }
    return {
        "current": len(have_current),
        "stale": len(have_any - have_current),
        "missing": len(set(ids) - have_any),
        "by_configuration": per_config,
    }


# --- engine runs --------------------------------------------------------------------------


def start_engine_run(session: Session, **fields: Any) -> EngineRun:
    run = EngineRun(**fields)
    session.add(run)
    session.flush()
    return run


def counts(session: Session) -> dict[str, int]:
    """Row counts for ``status``."""
    out = {}
    for name, model in (
        ("batches", Batch),
        ("documents", Document),
        ("pages", Page),
        ("sentences", Sentence),
        ("chunks", Chunk),
        ("summaries", Summary),
        ("citations", Citation),
        ("engine_runs", EngineRun),
    ):
        out[name] = session.scalar(select(func.count()).select_from(model)) or 0
    out["ocr_pages"] = (
        session.scalar(select(func.count()).where(Page.text_source == "ocr", Page.has_text.is_(True))) or 0
    )
    return out


def batches_overview(session: Session, *, name: str | None = None) -> list[dict[str, Any]]:
    """Per batch: file outcomes by status and how many of its documents have a summary."""
    q = select(Batch).order_by(Batch.id)
    if name is not None:
        q = q.where(Batch.name == name)
    out = []
    for b in session.scalars(q):
        files = {
            st: n
            for st, n in session.execute(
                select(IngestRecord.status, func.count())
                .where(IngestRecord.batch_id == b.id)
                .group_by(IngestRecord.status)
            )
        }
        doc_ids = select(IngestRecord.document_id).where(
            IngestRecord.batch_id == b.id, IngestRecord.document_id.is_not(None)
        )
        summarized = (
            session.scalar(
                select(func.count(func.distinct(Summary.document_id))).where(Summary.document_id.in_(doc_ids))
            )
            or 0
        )
        docs, pages = session.execute(
            select(func.count(), func.coalesce(func.sum(Document.page_count), 0)).where(
                Document.id.in_(doc_ids), Document.status == "ok"
            )
        ).one()
        out.append(
            {
                "name": b.name,
                "id": b.id,
                "origin": b.origin,
                "created_at": b.created_at.isoformat(),
                "files": files,
                "documents": docs,
                "pages": int(pages),
                "summarized": summarized,
            }
        )
    return out


def engine_runs(session: Session, *, limit: int = 10) -> list[EngineRun]:
    """The most recent engine runs, newest first."""
    return list(session.scalars(select(EngineRun).order_by(EngineRun.id.desc()).limit(limit)))


def get_chunk(session: Session, chunk_id: int | None) -> Chunk:
    chunk = session.get(Chunk, chunk_id)
    if chunk is None:
        raise LookupError(f"chunk {chunk_id} does not exist")
    return chunk


def sentence_range(session: Session, document_id: int, first: int, last: int) -> list[Sentence]:
    return list(
        session.scalars(
            select(Sentence)
            .where(Sentence.document_id == document_id, Sentence.ordinal >= first, Sentence.ordinal <= last)
            .order_by(Sentence.ordinal)
        )
    )


def jobs_at_level(session: Session, document_id: int, config_id: str, plan: str, level: int) -> list[Job]:
    return [j for j in jobs_for_document(session, document_id, config_id, plan) if j.level == level]


def ready_count(session: Session, *, document_ids: Sequence[int], plan: str, config_id: str) -> int:
    now = utcnow()
    return (
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                _ready(now),
                Job.document_id.in_(list(document_ids)),
                Job.plan == plan,
                Job.config_id == config_id,
            )
        )
        or 0
    )


def complete_job(
    session: Session, job_id: int, *, owner: str, result: dict[str, Any], raw_output: str, engine_run_id: int | None
) -> Job | None:
    """Mark ``owner``'s leased job done with its result; None when the lease was lost (it expired
    and another worker took the job: that worker's result wins)."""
    job = session.get(Job, job_id)
    if job is None or job.state != "leased" or job.lease_owner != owner:
        return None
    job.state, job.result, job.raw_output = "done", result, raw_output
    job.last_error, job.engine_run_id = None, engine_run_id
    job.lease_owner, job.lease_expires_at, job.updated_at = None, None, utcnow()
    session.flush()
    return job


def fail_job(session: Session, job_id: int, *, error: str, raw: str | None = None) -> None:
    job = session.get(Job, job_id)
    if job is not None:
        job.state, job.last_error, job.raw_output = "failed", error, raw
        job.lease_owner, job.lease_expires_at, job.updated_at = None, None, utcnow()


def retry_or_fail(session: Session, job_id: int, *, error: str, raw: str, max_attempts: int) -> bool:
    """Back to the queue for another try, or ``failed`` (raw output kept) once attempts run out.
    Returns True when the job is now failed."""
    job = session.get(Job, job_id)
    if job is None:
        return True
    final = job.attempts >= max_attempts
    job.state = "failed" if final else "queued"
    job.last_error = f"{error} (attempt {job.attempts} of {max_attempts})"
    job.raw_output = raw
    job.lease_owner, job.lease_expires_at, job.updated_at = None, None, utcnow()
    return final


def finish_engine_run(
    session: Session,
    run_id: int | None,
    *,
    status: str,
    error: str | None,
    prompts: int,
    tokens_in: int,
    tokens_out: int,
    wall_seconds: float,
) -> None:
    run = session.get(EngineRun, run_id) if run_id is not None else None
    if run is None:
        return
    run.status, run.error, run.finished_at = status, error, utcnow()
    run.prompts, run.tokens_in, run.tokens_out = prompts, tokens_in, tokens_out
    run.wall_seconds = wall_seconds
    run.tokens_per_second = tokens_out / wall_seconds if wall_seconds else 0.0


def engine_run(session: Session, run_id: int | None) -> EngineRun | None:
    return session.get(EngineRun, run_id) if run_id is not None else None


def failed_job(
    session: Session, document_id: int, config_id: str | None, *, review_key: str | None = None
) -> Job | None:
    """A failed job of the document under ``config_id`` (None: under any configuration of ``review_key``)."""
    which = Job.config_id == config_id if config_id else Job.prompt_version == review_key
    return session.scalar(
        select(Job).where(Job.document_id == document_id, which, Job.state == "failed").order_by(Job.id).limit(1)
    )


# --- golden -----------------------------------------------------------------------------------
# Golden-prompt check runs (pipeline/quality/golden_run.py): one row per run, one per case.

from storage.models import GoldenResult, GoldenRun  # noqa: E402  (kept with the section that uses it)


def add_golden_run(
    session: Session,
    *,
    golden_version: str,
    thresholds_version: str,
    mode: str,
    baseline: dict[str, Any],
    candidate: dict[str, Any],
    metrics: dict[str, Any],
    verdict: str,
    report_path: str | None,
) -> GoldenRun:
    run = GoldenRun(
        golden_version=golden_version,
        thresholds_version=thresholds_version,
        mode=mode,
        baseline=baseline,
        candidate=candidate,
        metrics=metrics,
        verdict=verdict,
        report_path=report_path,
    )
    session.add(run)
    session.flush()
    return run


def add_golden_results(session: Session, run_id: int, rows: Sequence[dict[str, Any]]) -> None:
    """Per-case rows: ``case_id``, ``metrics``, ``baseline_output``, ``candidate_output``."""
    if rows:
        session.execute(insert(GoldenResult), [{"run_id": run_id, **r} for r in rows])


def set_golden_report_path(session: Session, run_id: int | None, report_path: str) -> None:
    run = session.get(GoldenRun, run_id) if run_id is not None else None
    if run is not None:
        run.report_path = report_path


def golden_run(session: Session, run_id: int) -> GoldenRun | None:
    return session.get(GoldenRun, run_id)


def golden_runs(session: Session, *, limit: int = 20) -> list[GoldenRun]:
    """The most recent runs first."""
    return list(session.scalars(select(GoldenRun).order_by(GoldenRun.id.desc()).limit(limit)))


def golden_results(session: Session, run_id: int) -> list[GoldenResult]:
    return list(session.scalars(select(GoldenResult).where(GoldenResult.run_id == run_id).order_by(GoldenResult.id)))


def leased_owners(session: Session) -> list[str]:
    return list(session.scalars(select(Job.lease_owner).where(Job.state == "leased").distinct()))


def release_owner(session: Session, owner: str, *, error: str) -> int:
    """Give back every job ``owner`` holds (its process is gone)."""
    res = session.execute(
        update(Job).where(Job.state == "leased", Job.lease_owner == owner).values(**_interrupted(error))
    )
    return cast("CursorResult[Any]", res).rowcount or 0


# --- tiers: handing documents over (pipeline/engine/routing.py) --------------------------------
# A document's work belongs to one tier at a time. Handing it over marks the giving tier's jobs
# ``handed_over`` (a state its lease never takes) in the same transaction that checks none of them
# has started, so no chunk is ever summarized by both tiers; the receiving tier then queues its own.


def hand_over(
    session: Session, document_ids: Sequence[int], *, config_id: str, to_tier: str, started_too: bool = False
) -> list[int]:
    """Give the documents of ``document_ids`` whose jobs under ``config_id`` have not started (all
    queued: none leased or done) to ``to_tier``; returns those handed over. Documents with work in
    progress or done stay where they are. ``started_too`` (the giving tier has stopped for good):
    also documents with done jobs, as long as none is leased. PostgreSQL locks the rows (skipping
    ones a worker holds)."""
    if not document_ids:
        return []
    q = select(Job).where(Job.config_id == config_id, Job.document_id.in_(list(document_ids))).order_by(Job.id)
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    by_doc: dict[int, list[Job]] = {}
    for job in session.scalars(q):
        by_doc.setdefault(job.document_id, []).append(job)
    locked_counts: dict[int, int] = {
        doc: n
        for doc, n in session.execute(
            select(Job.document_id, func.count())
            .where(Job.config_id == config_id, Job.document_id.in_(list(by_doc)))
            .group_by(Job.document_id)
        )
    }
    moved = []
    for doc_id, jobs in by_doc.items():
        # every job seen (none skipped as locked by a worker), none leased, and (unless
        # started_too) none done; a document whose jobs all failed stays failed where it is
        states = {j.state for j in jobs}
        if len(jobs) != locked_counts.get(doc_id) or "leased" in states or "queued" not in states:
            continue
        if not started_too and states != {"queued"}:
            continue
        for j in jobs:
            if j.state == "queued":
                j.state, j.last_error, j.updated_at = "handed_over", f"handed over to tier {to_tier}", utcnow()
        moved.append(doc_id)
    session.flush()
    return moved


def take_back(session: Session, document_ids: Sequence[int], *, config_id: str) -> int:
    """Return handed-over jobs under ``config_id`` to the queue (``summarize --upgrade-fallback``)."""
    if not document_ids:
        return 0
    res = session.execute(
        update(Job)
        .where(Job.config_id == config_id, Job.document_id.in_(list(document_ids)), Job.state == "handed_over")
        .values(state="queued", attempts=0, interruptions=0, last_error=None, updated_at=utcnow())
    )
    return cast("CursorResult[Any]", res).rowcount or 0


def handed_over_documents(session: Session, document_ids: Sequence[int], *, config_id: str) -> set[int]:
    return set(
        session.scalars(
            select(Job.document_id).where(
                Job.config_id == config_id, Job.document_id.in_(list(document_ids)), Job.state == "handed_over"
            )
        )
    )


def queued_work(session: Session, document_ids: Sequence[int], *, config_id: str) -> dict[int, dict[str, int]]:
    """Per document with work left under ``config_id``: jobs queued, jobs done, and the prompt tokens
    of the queued map jobs' chunks (what the deadline estimate weighs)."""
    rows = session.execute(
        select(Job.document_id, Job.state, func.count(), func.coalesce(func.sum(Chunk.token_count), 0))
        .join(Chunk, Chunk.id == Job.chunk_id, isouter=True)
        .where(Job.config_id == config_id, Job.document_id.in_(list(document_ids)))
        .group_by(Job.document_id, Job.state)
    ).all()
    out: dict[int, dict[str, int]] = {}
    for doc_id, state, n, tokens in rows:
        entry = out.setdefault(
            doc_id, {"queued": 0, "leased": 0, "done": 0, "failed": 0, "handed_over": 0, "tokens": 0}
        )
        entry[state] = entry.get(state, 0) + n
        if state in ("queued", "leased"):
            entry["tokens"] += int(tokens)
    return {d: e for d, e in out.items() if e["queued"] or e["leased"]}


# --- tier benchmarks ------------------------------------------------------------------------
# `contractsum bench --tier` (pipeline/cli/bench.py): one row per measurement.

from storage.models import TierBenchmark  # noqa: E402  (kept with the section that uses it)


def add_tier_benchmark(
    session: Session,
    *,
    tier: str,
    fingerprint: str,
    model: str,
    device: str,
    vllm_version: str,
    config: dict[str, Any],
    figures: dict[str, Any],
    estimate: dict[str, Any],
) -> TierBenchmark:
    row = TierBenchmark(
        tier=tier,
        fingerprint=fingerprint,
        model=model,
        device=device,
        vllm_version=vllm_version,
        config=config,
        figures=figures,
        estimate=estimate,
    )
    session.add(row)
    session.flush()
    return row


def latest_tier_benchmarks(session: Session) -> list[TierBenchmark]:
    """The newest measurement of each tier, by tier name."""
    newest = select(func.max(TierBenchmark.id)).group_by(TierBenchmark.tier)
    return list(session.scalars(select(TierBenchmark).where(TierBenchmark.id.in_(newest)).order_by(TierBenchmark.tier)))


def tier_benchmarks(session: Session, *, tier: str | None = None, limit: int = 20) -> list[TierBenchmark]:
    """Measurements, newest first (of one tier when ``tier`` is given)."""
    q = select(TierBenchmark).order_by(TierBenchmark.id.desc()).limit(limit)
    if tier is not None:
        q = q.where(TierBenchmark.tier == tier)
    return list(session.scalars(q))


def active_elsewhere(session: Session, document_ids: Sequence[int], *, config_id: str) -> set[int]:
    """Documents with queued or leased jobs under a configuration other than ``config_id`` (another
    tier is working on them)."""
    if not document_ids:
        return set()
    return set(
        session.scalars(
            select(Job.document_id).where(
                Job.document_id.in_(list(document_ids)),
                Job.config_id != config_id,
                Job.state.in_(("queued", "leased")),
            )
        )
    )
