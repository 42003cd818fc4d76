"""A batch: files in, documents stored, chunks planned, map jobs queued. Plain Python, no Prefect."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Literal

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.ingest import ingest, ocr
from pipeline.ingest.chunking import TokenCounter, chunk_budget, plan_chunks, plan_key
from pipeline.ingest.extractors import ExtractionStats, extract_all
from pipeline.ingest.ingest import display_name
from pipeline.review.configuration import ResultConfig
from pipeline.review.prompts import effective_context, load_template, template_tokens_cached
from pipeline.settings import Settings
from storage import repo
from storage.db import transaction
from storage.models import Batch, Chunk, Document

log = logging.getLogger(__name__)

# Tokens kept free between the template and the chunk: BPE merges at the seam can shift a count.
SEAM_TOKENS = 8


ProgressKind = Literal["wave_start", "progress", "wave_end", "document_done", "db_retry", "finished"]


@dataclass(frozen=True)
class ProgressEvent:
    """What a summarize run tells its listener (CLI progress bar, Prefect artifact): a wave
    started (``prompts``), ``done`` of ``total`` prompts of ``wave`` finished, a wave ended
    (``tokens_out`` so far), a document got its summary, the database is being retried
    (``attempt``, ``error``); the batch flow adds ``percent``/``text`` and ``finished``."""

    kind: ProgressKind
    wave: int | None = None
    prompts: int | None = None
    done: int | None = None
    total: int | None = None
    tokens_out: int | None = None
    document_id: int | None = None
    attempt: int | None = None
    error: str | None = None
    percent: float | None = None
    text: str | None = None

    def describe(self) -> str | None:
        """One line for people, where the event has one."""
        if self.text is not None:
            return self.text
        if self.kind == "progress":
            return f"wave {self.wave}: {self.done}/{self.total} prompts"
        return None


@dataclass
class FileOutcome:
    source: str
    status: str  # ok | duplicate | failed | needs_ocr
    reason: str = ""
    pages: int | None = None
    sha256: str | None = None
    document_id: int | None = None
    chunks: int | None = None
    path: str = ""
    ocr_pages: int = 0  # pages whose text OCR read

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class IngestReport:
    batch: str
    batch_id: int
    files: list[FileOutcome] = field(default_factory=list)
    problems: list[FileOutcome] = field(default_factory=list)  # paths that named no file
    chunking: str | None = None  # why chunks were not made, if they were not
    extraction: ExtractionStats = field(default_factory=ExtractionStats)  # what the reading processes did
    notices: list[str] = field(default_factory=list)  # said once per batch (e.g. the OCR engine is missing)

    @property
    def ok(self) -> bool:
        return all(f.status in ("ok", "duplicate") for f in self.files) and not self.problems

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files + self.problems:
            out[f.status] = out.get(f.status, 0) + 1
        return out


@dataclass
class Chunker:
    """The model's tokenizer and the per-prompt budget, built once per run."""

    counter: TokenCounter
    budget: int
    plan: str
    context: int
    model_dir: Path
    # The playbook's namespace (Playbook.review_key): the prompt version alone for the default
    # playbook; shown beside results, and what a stale result must share to stand in for a current one.
    review_key: str = ""
    # The configuration results will be made under (pipeline/review/configuration.py): jobs and
    # summaries are keyed on its id.
    config: ResultConfig | None = None

    @property
    def config_id(self) -> str:
        if self.config is None:
            raise ValueError("this chunker was built without a configuration")
        return self.config.id

    @classmethod
    def for_model(cls, settings: Settings, model_dir: Path, playbook=None, *, tier: str = "primary") -> Chunker:
        """The chunk budget leaves room for the summarize template with ``playbook``'s clause list
        (default: ``settings.playbook``), so a longer playbook gets smaller chunks."""
        from pipeline.review.configuration import current_config
        from pipeline.review.playbooks import playbook_for

        playbook = playbook_for(settings, playbook)
        template = load_template(settings.prompts_dir, "summarize", settings.prompt_version, playbook=playbook)
        context = effective_context(settings.max_model_len, model_dir)
        cache = settings.home / "cache" / "template-tokens.json"
        overhead = template_tokens_cached(model_dir, template, cache) + SEAM_TOKENS
        budget = chunk_budget(
            max_model_len=context,
            template_tokens=overhead,
            max_output_tokens=settings.max_output_tokens,
            cap=settings.chunk_budget,
        )
        counter = TokenCounter.from_model_dir(model_dir)
        plan = plan_key(counter.name, budget)
        return cls(
            counter=counter,
            budget=budget,
            plan=plan,
            context=context,
            model_dir=model_dir,
            review_key=playbook.review_key(settings.prompt_version),
            config=current_config(settings, model_dir, playbook, plan=plan, max_model_len=context, tier=tier),
        )


def chunker_for_tier(settings: Settings, playbook=None, *, tier: str = "primary") -> Chunker:
    """The chunker (and configuration) of tier ``tier``: its own model and engine settings applied
    to ``settings``. Ingest queues work with the primary's, so the jobs it queues are the ones the
    primary's run leases. ModelNotFoundError when the tier's model is not here."""
    from pipeline.engine.tiers import tier as tier_named

    ts = tier_named(settings, tier).settings(settings)
    return Chunker.for_model(ts, ts.resolved_model(), playbook, tier=tier)


def config_id_for(settings: Settings, playbook=None, *, tier: str = "primary") -> str:
    """The id of the configuration tier ``tier``'s results are stored under, with ``settings`` as
    they are now."""
    return chunker_for_tier(settings, playbook, tier=tier).config_id


def record_configuration(session: Session, config: ResultConfig) -> None:
    """Store ``config`` (once) so results and jobs can name it."""
    repo.ensure_configuration(
        session,
        id=config.id,
        review_key=config.review_key,
        tier=config.tier,
        label=config.label(),
        fields=config.model_dump(mode="json"),
    )


def resolve_batch(session: Session, name: str | None) -> int | None:
    """The id of batch ``name`` (None for "every batch"); an unknown name is a usage error."""
    if name is None:
        return None
    row = repo.get_batch(session, name)
    if row is None:
        from pipeline.errors import ConfigError

        raise ConfigError(f"no batch named {name!r}", hint="see `contractsum status`")
    return row.id


def default_batch_name(prefix: str = "batch") -> str:
    return f"{prefix}-{datetime.now(UTC):%Y%m%d-%H%M%S-%f}"


def _ensure_chunks(
    session: Session, doc: Document, chunker: Chunker, sentences: Sequence[_SentenceView] | None = None
) -> list[Chunk]:
    """The chunks themselves. ``sentences``: the document's, when the caller has just stored
    them (saves reading them back); only ever given for a document with no chunks yet."""
    if sentences is None:
        existing = repo.chunks_of(session, doc.id, chunker.plan)
        if existing:
            return existing
        sentences = [_SentenceView(s.ordinal, s.page_number, s.text) for s in repo.sentences_of(session, doc.id)]
    plans = plan_chunks(sentences, counter=chunker.counter, budget=chunker.budget)
    rows = [
        {
            "ordinal": p.ordinal,
            "token_count": p.token_count,
            "first_page": p.first_page,
            "last_page": p.last_page,
            "first_sentence": p.first_sentence,
            "last_sentence": p.last_sentence,
            "piece_start": p.piece[0] if p.piece else None,
            "piece_end": p.piece[1] if p.piece else None,
        }
        for p in plans
    ]
    return repo.save_chunks(session, doc.id, chunker.plan, rows)


def queue_document(session: Session, doc: Document, chunker: Chunker, *, batch_id: int | None) -> int:
    """Map jobs under the chunker's configuration for every chunk of ``doc`` that has none yet (idempotent)."""
    return _queue(session, doc, chunker, batch_id=batch_id)[0]


def _queue(
    session: Session,
    doc: Document,
    chunker: Chunker,
    *,
    batch_id: int | None,
    sentences: Sequence[_SentenceView] | None = None,
) -> tuple[int, int]:
    """``queue_document`` that also says how many chunks the document has: (jobs added, chunks)."""
    assert chunker.config is not None
    record_configuration(session, chunker.config)
    chunks = _ensure_chunks(session, doc, chunker, sentences)
    added = repo.enqueue(
        session,
        [
            {
                "kind": "map",
                "batch_id": batch_id,
                "document_id": doc.id,
                "chunk_id": c.id,
                "plan": chunker.plan,
                "level": 0,
                "ordinal": c.ordinal,
                "prompt_version": chunker.review_key,
                "config_id": chunker.config_id,
            }
            for c in chunks
        ],
    )
    return added, len(chunks)


@dataclass(frozen=True, slots=True)
class _SentenceView:
    ordinal: int
    page: int
    text: str


def ingest_paths(
    factory: sessionmaker[Session],
    settings: Settings,
    paths: Sequence[str | Path],
    *,
    batch_name: str | None = None,
    password: str | None = None,
    origin: str = "cli",
    chunker: Chunker | None = None,
    on_file: Callable[[FileOutcome], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> IngestReport:
    """Ingest every file under ``paths`` into one batch. A bad file is recorded and skipped;
    it never stops the batch. With a ``chunker``, documents are chunked and queued too.

    Text is extracted in ``workers`` (default ``settings.ingest_workers``) child processes (pypdf,
    the bulk of the cost) while this process stores the results, in input order; a file that runs past
    ``settings.extract_timeout_seconds`` or kills its process fails alone (``pipeline.ingest.extractors``).
    """
    name = batch_name or default_batch_name()
    files, problems = ingest.discover(paths)
    with transaction(factory) as s:
        batch_id = repo.get_or_create_batch(s, name, origin=origin).id
    report = IngestReport(batch=name, batch_id=batch_id)
    for given, reason in problems:
        shown = display_name(str(given))
        report.problems.append(FileOutcome(source=shown, status="failed", reason=reason, path=shown))
    if on_start:
        on_start(len(files))
    ocr_config = ocr_settings(settings)
    if ocr_config.unavailable and any(f.suffix.lower() == ".pdf" for f in files):
        notice = f"OCR is unavailable: {ocr_config.unavailable}; PDF pages without a text layer stay needs_ocr"
        log.warning(notice)
        report.notices.append(notice)
    extract = partial(
        ingest.extract,
        password=password,
        max_pages=settings.max_pages,
        max_bytes=settings.max_file_bytes,
        max_decompressed_bytes=settings.max_decompressed_bytes,
        ocr=ocr_config,
    )
    runs = extract_all(
        files,
        extract,
        workers=settings.ingest_workers if workers is None else workers,
        timeout=settings.extract_timeout_seconds,
        memory_bytes=settings.extract_memory_bytes,
        ocr_seconds_per_page=settings.ocr_timeout_seconds_per_page,
        stats=report.extraction,
    )
    for path, ex in runs:
        try:
            outcome = _store_one(factory, settings, batch_id, path, ex, chunker=chunker)
        except OperationalError:
            raise  # the database went away: the caller (a flow task) retries the batch
        except Exception as exc:  # a bug or an unforeseen file must not stop the rest of the batch
            outcome = _record_internal_error(factory, batch_id, path, ex, exc)
        report.files.append(outcome)
        if on_file:
            on_file(outcome)
    if chunker is None:
        report.chunking = "no model configured: chunks are made when `summarize` runs"
    return report


def ocr_settings(settings: Settings) -> ocr.OcrConfig:
    """The OCR part of the settings, checked once here: a missing engine or language is one notice
    for the batch, and every file's reason, instead of each extraction process finding out again."""
    unavailable = ocr.problem(settings.ocr_languages) if settings.ocr != "off" else None
    return ocr.OcrConfig(
        mode=settings.ocr,
        languages=settings.ocr_languages,
        dpi=settings.ocr_dpi,
        low_confidence=settings.ocr_low_confidence,
        unavailable=unavailable,
    )


def _page_rows(ex: ingest.Extraction) -> list[tuple]:
    return [
        (p.number, p.text, p.has_text, p.text_source, p.ocr_engine, p.ocr_engine_version, p.ocr_confidence)
        for p in ex.pages
    ]


def _sentence_rows(ex: ingest.Extraction) -> list[tuple[int, int, int, int, str]]:
    return [(x.ordinal, x.page, x.start, x.end, x.text) for x in ex.sentences]


def _queue_review(
    session: Session,
    doc: Document,
    chunker: Chunker,
    settings: Settings,
    batch_id: int,
    sentences: Sequence[_SentenceView] | None = None,
) -> int:
    """Queue ``doc``'s jobs under the chunker's configuration: its chunk count."""
    return _queue(session, doc, chunker, batch_id=batch_id, sentences=sentences)[1]


def _reads_more(session: Session, doc: Document, ex: ingest.Extraction) -> bool:
    """Whether this extraction has text on more pages than the stored needs_ocr document."""
    return sum(p.has_text for p in ex.pages) > repo.text_page_count(session, doc.id)


def _record_internal_error(factory, batch_id: int, path: Path, ex: ingest.Extraction, exc: Exception) -> FileOutcome:
    where = display_name(str(path))
    reason = f"internal error while storing: {type(exc).__name__}: {display_name(str(exc))[:300]}"
    with transaction(factory) as s:
        repo.record_file(s, s.get_one(Batch, batch_id), source=where, status="failed", reason=reason, sha256=ex.sha256)
    return FileOutcome(source=display_name(ex.source), status="failed", reason=reason, sha256=ex.sha256, path=where)


def _store_one(
    factory: sessionmaker[Session],
    settings: Settings,
    batch_id: int,
    path: Path,
    ex: ingest.Extraction,
    *,
    chunker: Chunker | None,
) -> FileOutcome:
    source, where = display_name(ex.source), display_name(str(path))
    outcome = FileOutcome(
        source=source,
        status=ex.status,
        reason=ex.reason,
        pages=len(ex.pages) or None,
        sha256=ex.sha256,
        path=where,
        ocr_pages=ex.ocr_pages,
    )
    for attempt in range(2):
        try:
            with transaction(factory) as s:
                batch = s.get_one(Batch, batch_id)
                if ex.status == "failed" or ex.sha256 is None:
                    repo.record_file(s, batch, source=where, status="failed", reason=ex.reason, sha256=ex.sha256)
                    return outcome
                existing = repo.document_by_sha(s, ex.sha256)
                if existing is not None and existing.status == "needs_ocr" and _reads_more(s, existing, ex):
                    # Stored before OCR could read it (OCR off, engine missing): this reading replaces it.
                    repo.replace_text(s, existing, status=ex.status, pages=_page_rows(ex), sentences=_sentence_rows(ex))
                    outcome.document_id = existing.id
                    outcome.reason = "; ".join(
                        x for x in (ex.reason, f"re-read: document {existing.id} was needs_ocr") if x
                    )
                    if chunker is not None and existing.status == "ok":
                        outcome.chunks = _queue_review(s, existing, chunker, settings, batch_id)
                    repo.record_file(
                        s,
                        batch,
                        source=where,
                        status=ex.status,
                        reason=outcome.reason,
                        sha256=ex.sha256,
                        pages=len(ex.pages),
                        document_id=existing.id,
                    )
                    return outcome
                if existing is not None:
                    outcome.status = "duplicate"
                    outcome.reason = f"same content as {existing.source} (document {existing.id})"
                    outcome.document_id = existing.id
                    outcome.pages = existing.page_count
                    if chunker is not None and existing.status == "ok":
                        outcome.chunks = _queue_review(s, existing, chunker, settings, batch_id)
                    repo.record_file(
                        s,
                        batch,
                        source=where,
                        status="duplicate",
                        reason=outcome.reason,
                        sha256=ex.sha256,
                        pages=existing.page_count,
                        document_id=existing.id,
                    )
                    return outcome
                doc = repo.add_document(
                    s,
                    batch,
                    sha256=ex.sha256,
                    source=source,
                    source_path=where,
                    kind=ex.kind,
                    size_bytes=ex.size_bytes,
                    status=ex.status,
                    pages=_page_rows(ex),
                    sentences=_sentence_rows(ex),
                )
                outcome.document_id = doc.id
                if chunker is not None and doc.status == "ok":
                    # The sentences are in hand: chunk them without reading them back.
                    views = [_SentenceView(x.ordinal, x.page, x.text) for x in ex.sentences]
                    outcome.chunks = _queue_review(s, doc, chunker, settings, batch_id, sentences=views)
                repo.record_file(
                    s,
                    batch,
                    source=where,
                    status=ex.status,
                    reason=ex.reason,
                    sha256=ex.sha256,
                    pages=len(ex.pages),
                    document_id=doc.id,
                )
                return outcome
        except IntegrityError:
            # Another worker stored the same bytes between our check and insert: go again, and
            # the second pass sees a duplicate.
            if attempt:
                raise
    return outcome
