"""Every table contractsum keeps. Typed SQLAlchemy 2 models; relationships are lazy="raise"."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


TS = DateTime(timezone=True)


class Batch(Base):
    """A set of files submitted together (a CLI call, a nightly run)."""

    __tablename__ = "batches"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    origin: Mapped[str] = mapped_column(String(40), default="cli")
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    files: Mapped[list[IngestRecord]] = relationship(back_populates="batch", lazy="raise")


class Document(Base):
    """A unique contract, by the sha256 of its bytes."""

    __tablename__ = "documents"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(String(1024))  # file name as first seen
    source_path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(8))  # pdf | txt
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    page_count: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # ok | needs_ocr
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="RESTRICT"), index=True)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    pages: Mapped[list[Page]] = relationship(lazy="raise", order_by="Page.number")


class IngestRecord(Base):
    """What happened to one file in one batch: ok, duplicate, failed or needs_ocr, with a reason."""

    __tablename__ = "ingest_records"
    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    pages: Mapped[int | None] = mapped_column(Integer)
    document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    batch: Mapped[Batch] = relationship(back_populates="files", lazy="raise")
    __table_args__ = (UniqueConstraint("batch_id", "source"),)


class Page(Base):
    """One physical page (1-based) and its cleaned text; sentence offsets point into ``text``."""

    __tablename__ = "pages"
    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    has_text: Mapped[bool] = mapped_column(Boolean, default=True)
    # How the text was obtained: "text_layer" (the PDF's own text) or "ocr"; for OCR, the engine,
    # its version and its mean word confidence (0-100).
    text_source: Mapped[str] = mapped_column(String(16), default="text_layer", server_default="text_layer")
    ocr_engine: Mapped[str | None] = mapped_column(String(32))
    ocr_engine_version: Mapped[str | None] = mapped_column(String(32))
    ocr_confidence: Mapped[float | None] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("document_id", "number"),)


class Sentence(Base):
    """A sentence: ``pages.text[char_start:char_end] == text``. ``ordinal`` is the stable id (S<ordinal>)."""

    __tablename__ = "sentences"
    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(Integer)  # 1-based, document order
    page_number: Mapped[int] = mapped_column(Integer)
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    __table_args__ = (UniqueConstraint("document_id", "ordinal"),)


class Chunk(Base):
    """Consecutive sentences that fit one prompt for a given tokenizer and budget (``plan``)."""

    __tablename__ = "chunks"
    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    plan: Mapped[str] = mapped_column(String(64))  # hash of tokenizer + budget
    ordinal: Mapped[int] = mapped_column(Integer)
    token_count: Mapped[int] = mapped_column(Integer)
    first_page: Mapped[int] = mapped_column(Integer)
    last_page: Mapped[int] = mapped_column(Integer)
    first_sentence: Mapped[int] = mapped_column(Integer)  # ordinal, inclusive
    last_sentence: Mapped[int] = mapped_column(Integer)  # ordinal, inclusive
    # Set when one over-long sentence was split: the piece is text[piece_start:piece_end].
    piece_start: Mapped[int | None] = mapped_column(Integer)
    piece_end: Mapped[int | None] = mapped_column(Integer)
    __table_args__ = (UniqueConstraint("document_id", "plan", "ordinal"),)


class Job(Base):
    """A unit of engine work: ``map`` (one chunk) or ``reduce`` (merge results of one document)."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)  # idempotent enqueue
    kind: Mapped[str] = mapped_column(String(16))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id", ondelete="SET NULL"), index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    chunk_id: Mapped[int | None] = mapped_column(ForeignKey("chunks.id", ondelete="CASCADE"))
    plan: Mapped[str] = mapped_column(String(64), default="")
    level: Mapped[int] = mapped_column(Integer, default=0)  # 0 = map, 1.. = reduce rounds
    ordinal: Mapped[int] = mapped_column(Integer, default=0)
    inputs: Mapped[list[Any] | None] = mapped_column(JSON)  # reduce: ordinals of the level below
    prompt_version: Mapped[str] = mapped_column(String(32))  # the review key (prompt version + playbook)
    # The configuration this job's result is for (NULL: queued before configurations were recorded).
    config_id: Mapped[str | None] = mapped_column(
        String(16), ForeignKey("configurations.id", ondelete="RESTRICT"), index=True
    )
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued|leased|done|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # tries that produced an answer (or none yet)
    interruptions: Mapped[int] = mapped_column(Integer, default=0)  # leases lost to a dead engine or worker
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(TS)
    last_error: Mapped[str | None] = mapped_column(Text)
    raw_output: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    engine_run_id: Mapped[int | None] = mapped_column(ForeignKey("engine_runs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TS, default=utcnow, onupdate=utcnow)
    __table_args__ = (Index("ix_jobs_state_lease", "state", "lease_expires_at"),)


class EngineRun(Base):
    """One engine lifetime: its config snapshot and what it did."""

    __tablename__ = "engine_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(Text)
    dtype: Mapped[str] = mapped_column(String(32))
    quantization: Mapped[str | None] = mapped_column(String(32))
    tensor_parallel_size: Mapped[int] = mapped_column(Integer)
    vllm_version: Mapped[str] = mapped_column(String(64))
    prompt_version: Mapped[str] = mapped_column(String(32))
    device: Mapped[str] = mapped_column(String(32), default="cpu")
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The result configuration it worked for, and its engine tier.
    config_id: Mapped[str | None] = mapped_column(String(16), ForeignKey("configurations.id", ondelete="SET NULL"))
    tier: Mapped[str] = mapped_column(String(40), default="primary", server_default="primary")
    started_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(TS)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running|finished|failed
    error: Mapped[str | None] = mapped_column(Text)
    prompts: Mapped[int] = mapped_column(Integer, default=0)
    tokens_in: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens_out: Mapped[int] = mapped_column(BigInteger, default=0)
    wall_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    tokens_per_second: Mapped[float] = mapped_column(Float, default=0.0)


class Configuration(Base):
    """What produced a result (pipeline/review/configuration.py): ``id`` is the hash of ``fields``."""

    __tablename__ = "configurations"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    review_key: Mapped[str] = mapped_column(String(32))
    tier: Mapped[str] = mapped_column(String(40), default="primary")
    label: Mapped[str] = mapped_column(Text)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class StoredCompletion(Base):
    """One prompt's answer from one model, by :func:`request_key` (the exact tokens, schema, sampling
    and model): a rerun whose prompt did not change takes the answer from here instead of the engine."""

    __tablename__ = "completions"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    engine_run_id: Mapped[int | None] = mapped_column(ForeignKey("engine_runs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class Summary(Base):
    """The one summary of a document under a configuration."""

    __tablename__ = "summaries"
    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    prompt_version: Mapped[str] = mapped_column(String(32))  # the review key (prompt version + playbook)
    config_id: Mapped[str] = mapped_column(String(16), ForeignKey("configurations.id", ondelete="RESTRICT"), index=True)
    engine_run_id: Mapped[int | None] = mapped_column(ForeignKey("engine_runs.id", ondelete="SET NULL"))
    summary: Mapped[str] = mapped_column(Text)
    parties: Mapped[list[Any]] = mapped_column(JSON)
    dates: Mapped[list[Any]] = mapped_column(JSON)
    output: Mapped[dict[str, Any]] = mapped_column(JSON)
    chunks: Mapped[int] = mapped_column(Integer, default=1)
    # The playbook that asked the questions (NULL: written before playbooks, i.e. default@1).
    playbook: Mapped[str | None] = mapped_column(String(40))
    playbook_version: Mapped[str | None] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    clauses: Mapped[list[Clause]] = relationship(lazy="raise", order_by="Clause.id")
    __table_args__ = (UniqueConstraint("document_id", "config_id"),)


class Clause(Base):
    """One clause type the summary's playbook asked about: ``found`` (a finding, the answer for
    non-yes/no kinds, citations) or ``not_found`` (asked, absent). A type with no row was not asked."""

    __tablename__ = "clauses"
    id: Mapped[int] = mapped_column(primary_key=True)
    summary_id: Mapped[int] = mapped_column(ForeignKey("summaries.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    finding: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="found", server_default="found")  # found | not_found
    answer: Mapped[str | None] = mapped_column(Text)
    playbook: Mapped[str | None] = mapped_column(String(40))
    playbook_version: Mapped[str | None] = mapped_column(String(12))


class Citation(Base):
    """A clause's evidence: one sentence, with its page and span copied for export."""

    __tablename__ = "citations"
    id: Mapped[int] = mapped_column(primary_key=True)
    summary_id: Mapped[int] = mapped_column(ForeignKey("summaries.id", ondelete="CASCADE"), index=True)
    clause_id: Mapped[int] = mapped_column(ForeignKey("clauses.id", ondelete="CASCADE"), index=True)
    sentence_id: Mapped[int] = mapped_column(ForeignKey("sentences.id", ondelete="CASCADE"))
    sentence_ordinal: Mapped[int] = mapped_column(Integer)
    page_number: Mapped[int] = mapped_column(Integer)
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)


class GoldenRun(Base):
    __tablename__ = "golden_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    golden_version: Mapped[str] = mapped_column(String(32))
    thresholds_version: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(32))  # real-fp8 | emulated-fp8 | noise | config
    baseline: Mapped[dict[str, Any]] = mapped_column(JSON)
    candidate: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    verdict: Mapped[str | None] = mapped_column(String(8))
    report_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class GoldenResult(Base):
    __tablename__ = "golden_results"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("golden_runs.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[str] = mapped_column(String(128))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    baseline_output: Mapped[str] = mapped_column(Text)
    candidate_output: Mapped[str] = mapped_column(Text)
    __table_args__ = (UniqueConstraint("run_id", "case_id"),)


class TierBenchmark(Base):
    """One ``contractsum bench --tier`` run: what the tier's engine measured, and plan's estimate."""

    __tablename__ = "tier_benchmarks"
    id: Mapped[int] = mapped_column(primary_key=True)
    tier: Mapped[str] = mapped_column(String(64), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # EngineConfig.fingerprint() of the tier's engine
    model: Mapped[str] = mapped_column(Text)
    device: Mapped[str] = mapped_column(String(32))
    vllm_version: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # the engine as run (Engine.snapshot)
    figures: Mapped[dict[str, Any]] = mapped_column(JSON)  # measurements
    estimate: Mapped[dict[str, Any]] = mapped_column(JSON)  # plan's figures for the same config
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
