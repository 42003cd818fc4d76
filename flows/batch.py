"""The batch flow: ingest → chunk → queue → engine → store → report.

Each task calls a plain ``pipeline/`` function; this module adds only Prefect's share: retries for
transient faults, no result caching (the database is the record, and every step is idempotent),
logging, run names, tags and artifacts.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.states import Completed
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from flows._prefect import progress_listener, run_settings
from pipeline.batch import IngestReport, ProgressEvent, chunker_for_tier, ingest_paths
from pipeline.engine.tiers import parse_deadline
from pipeline.engine.tiers import tier as tier_named
from pipeline.errors import ConfigError, ContractsumError, EngineError, IngestError, OutputError, PromptError
from pipeline.reports.markdown import md_inline as _md
from pipeline.review.summarize import SummarizeReport
from pipeline.settings import Settings
from storage import repo

if TYPE_CHECKING:
    from flows.handover import TierSummary

FLOW_NAME = "summarize-batch"
# Database restarts and full or flaky disks pass within seconds to minutes; anything else will
# fail the same way again, so it is not retried.
RETRIES = 2
RETRY_DELAYS = [5, 30]
TRANSIENT = (OperationalError, OSError)
# Errors that say something is wrong with the input, the settings or the engine: never retried
# (a bad document is recorded by ingest and never raised at all).
PERMANENT = (ConfigError, IngestError, PromptError, OutputError, EngineError)
PROGRESS_INTERVAL_S = 1.0


class BatchFailed(ContractsumError):
    """The system did not do its job on the batch (the engine failed, work was left undone), or a
    strict batch has failed documents; the message says which, with reasons."""


def is_transient(exc: BaseException | None) -> bool:
    """True for a database or filesystem fault anywhere in the exception's chain."""
    if exc is None or isinstance(exc, PERMANENT):
        return False
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, TRANSIENT):
            return True
        seen.add(id(exc))
        # ``raise X from None`` hides the cause but keeps it as __context__: still follow it.
        exc = exc.__cause__ or exc.__context__
    return False


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: retry only what :func:`is_transient` accepts."""
    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return is_transient(exc if isinstance(exc, BaseException) else None)


_task_options: dict[str, Any] = dict(
    retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE
)


def slug(batch: str) -> str:
    """A batch name as Prefect artifact keys and folder names allow (lowercase, digits, dashes);
    names that change get a short hash so two batches never share one."""
    s = re.sub(r"[^a-z0-9]+", "-", batch.lower()).strip("-") or "batch"
    if s != batch:
        s = f"{s[:40]}-{hashlib.sha256(batch.encode()).hexdigest()[:6]}"
    return s


# --- tasks ---------------------------------------------------------------------------------


@task(name="connect", **_task_options)
def connect(settings: Settings) -> sessionmaker[Session]:
    """The session factory (SQLite is migrated on first use)."""
    from storage.db import open_home_database

    return open_home_database(settings)


@task(name="ingest", **_task_options)
def ingest(
    settings: Settings, factory: sessionmaker[Session], batch: str, paths: Sequence[str], origin: str
) -> IngestReport:
    """Read the files into the batch, chunk them and queue their map jobs; bad files are recorded."""
    logger = get_run_logger()
    chunker = chunker_for_tier(settings)

    def log(outcome) -> None:
        if outcome.status in ("ok", "duplicate"):
            logger.info("%s: %s (%s pages, %s chunks)", outcome.source, outcome.status, outcome.pages, outcome.chunks)
        else:
            logger.warning("%s: %s — %s", outcome.source, outcome.status, outcome.reason)

    report = ingest_paths(factory, settings, list(paths), batch_name=batch, origin=origin, chunker=chunker, on_file=log)
    for problem in report.problems:
        logger.warning("%s: %s", problem.source, problem.reason)
    return report


@task(name="summarize", **_task_options)
def summarize_documents(
    settings: Settings,
    factory: sessionmaker[Session],
    batch: str,
    tier: str | None = None,
    deadline: datetime | None = None,
) -> TierSummary:
    """The batch over its engine tiers (pipeline/engine/routing.py): the first tier (``tier``, else
    ``primary``) on the process's shared engine; documents it cannot do by ``deadline`` or at all
    go to the next tier, as a linked flow run of that tier's deployment where one is served,
    else here afterwards. A progress artifact follows the waves."""
    from flows.handover import route_documents

    logger = get_run_logger()
    pending = _pending_documents(factory, settings, batch)
    tracker = _ProgressArtifact(batch, pending, listener=progress_listener(), logger=logger)
    ctx = FlowRunContext.get()
    parent = str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else None
    try:
        summary = route_documents(
            settings,
            factory,
            batch,
            tier_name=tier,
            document_ids=None,
            deadline=deadline,
            logger=logger,
            on_progress=tracker,
            parent=parent,
        )
    except EngineError as exc:
        tracker.close(f"engine failed: {exc}")
        raise
    report = summary.first
    nothing = report is None or (report.nothing_to_do and not summary.message)
    counts = ", ".join(f"{n} by {t}" for t, n in summary.by_tier.items())
    tracker.close("nothing to do" if nothing else counts or "nothing summarized")
    if nothing:
        logger.info("nothing to do: every document of %s is summarized or failed; no engine started", batch)
    elif report is not None:
        logger.info(
            "%s; first tier: %d summarized, %d failed; %d prompts in %d waves; %.1f output tok/s (engine run %s)",
            counts or "nothing summarized",
            len(report.summarized),
            len(report.failed),
            report.prompts,
            report.waves,
            report.tokens_per_second,
            report.engine_run_id,
        )
    if summary.message:
        logger.warning("%s", summary.message)
    return summary


@task(name="report", **_task_options)
def write_batch_report(
    settings: Settings,
    factory: sessionmaker[Session],
    batch: str,
    ingested: IngestReport | None,
    summarized: TierSummary | None,
    engine_error: str | None = None,
) -> BatchOutcome:
    """Export the batch's report (HTML and JSON) and its contract x clause matrix (CSV, XLSX, HTML,
    JSON), and publish the report and matrix artifacts."""
    from pipeline.reports.export import write_report
    from pipeline.reports.report import report_for
    from pipeline.review.playbooks import playbook_for

    book = playbook_for(settings)
    report = report_for(factory, settings, batch=batch, playbook=book)
    folder = settings.reports_dir / slug(batch)
    html = write_report(report, "html", folder / "report.html")
    write_report(report, "json", folder / "report.json")
    publish_matrix(settings, factory, batch, book, folder)
    outcome = BatchOutcome.from_report(
        batch, report, ingested, summarized.first if summarized else None, html, engine_error, tiers=summarized
    )
    from pipeline.reports.report import tier_measurements

    outcome.tier_sizing = tier_measurements(factory)
    create_markdown_artifact(
        key=f"batch-report-{slug(batch)}",
        markdown=outcome.markdown(),
        description=f"contractsum batch {_md(batch)}: {outcome.headline()}",  # the UI renders it as Markdown
    )
    get_run_logger().info("report: %s", html)
    return outcome


@task(name="compare", **_task_options)
def compare_artifact(settings: Settings, factory: sessionmaker[Session], batch: str, other: str) -> Path:
    """Compare the batch's results under configuration ``other`` (A) with the current one's (B):
    written beside the batch report and published as a Markdown artifact."""
    from pipeline.quality.compare import compare, render
    from pipeline.reports.export import write_private, write_synced
    from pipeline.reports.selection import current_config_id, resolve_config
    from pipeline.review.playbooks import playbook_for

    current = current_config_id(settings, playbook_for(settings))
    if current is None:
        raise ConfigError("cannot compare: no current configuration (no model configured)")
    with factory() as s:
        result = compare(s, resolve_config(s, other), current, batch=batch)
    md = render(result, "md")
    folder = settings.reports_dir / slug(batch)
    path = write_private(folder / "compare.md", lambda tmp: write_synced(tmp, md), what="comparison")
    write_private(folder / "compare.json", lambda tmp: write_synced(tmp, render(result, "json")), what="comparison")
    create_markdown_artifact(
        key=f"batch-compare-{slug(batch)}",
        markdown=md,
        description=f"contractsum batch {_md(batch)}: {result.a} vs {result.b}",
    )
    get_run_logger().info("comparison: %s", path)
    return path


def publish_matrix(
    settings: Settings, factory: sessionmaker[Session], batch: str, playbook, folder: Path
) -> list[Path]:
    """The batch's matrix files next to its report, and the matrix as a Prefect table artifact."""
    from prefect.artifacts import create_table_artifact

    from pipeline.reports.portfolio import MATRIX_FORMATS, artifact_table, build_matrix, write_matrix

    with factory() as s:
        from pipeline.reports.selection import selection_for

        chosen = selection_for(s, settings, playbook)
        m = build_matrix(s, batch=batch, playbook=playbook, prompt_version=settings.prompt_version, selection=chosen)
    paths = [write_matrix(m, fmt, folder / f"matrix.{fmt}") for fmt in MATRIX_FORMATS]
    create_table_artifact(
        key=f"batch-matrix-{slug(batch)}",
        table=artifact_table(m),
        description=f"contractsum batch {batch}: {len(m.rows)} contracts x {len(m.columns)} clause types ({playbook.name} {playbook.version})",
    )
    return paths


# --- the flow ------------------------------------------------------------------------------


@flow(name=FLOW_NAME, flow_run_name="summarize {batch}", validate_parameters=True)
def summarize_batch(
    batch: str,
    paths: list[str] | None = None,
    origin: str = "prefect",
    playbook: str | None = None,
    strict: bool | None = None,
    compare_with: str | None = None,
    tier: str | None = None,
    deadline: str | None = None,
) -> Any:  # a Completed state whose result is BatchOutcome.as_dict()
    """Ingest ``paths`` (if any) into ``batch`` and summarize every unsummarized document in it.

    Rerunning resumes: stored documents, chunks and finished jobs are reused, and only the rest
    goes to the engine. Documents that cannot be read (encrypted, corrupt, need OCR) or whose
    output never validated leave the run Completed, counted and listed with reasons in its state
    message and report artifact; with ``strict`` (default: the ``strict_batches`` setting) they
    fail it. The run fails when the system did not do its job: settings, database, engine.
    ``compare_with`` (a configuration id or prefix): also publish a comparison of the batch's
    results under it with the current configuration's, as a report artifact. ``tier``: run the
    batch on that engine tier from the start (default: ``primary``, falling back in order).
    ``deadline`` (``HH:MM`` in the ``timezone`` setting, the next such time, or an ISO date-time):
    what the first tier cannot finish by then goes to the next tier while it works on the rest
    (docs/operations.md, "Fallback tier"); a run that used a fallback says so in its message.
    """
    logger = get_run_logger()
    settings = run_settings()
    if playbook is not None:  # a run's own playbook (submit --playbook) over the worker's setting
        settings = settings.model_copy(update={"playbook": playbook})
    strict = settings.strict_batches if strict is None else strict
    _add_tags([f"batch:{batch}", f"origin:{origin}"] + ([f"tier:{tier}"] if tier else []))
    try:
        if tier is not None:
            tier_named(settings, tier)  # an unknown tier fails the run, naming the known ones
        when = parse_deadline(deadline, settings.timezone) if deadline else None
        factory = connect(settings)
        ingested = None
        if paths:
            ingested = ingest(settings, factory, batch, paths, origin)
        else:
            with factory() as s:
                if repo.get_batch(s, batch) is None:
                    raise ConfigError(f"no batch named {batch!r} and no files given", hint="pass the files to ingest")
        engine_error = None
        summarized = None
        try:
            summarized = summarize_documents(settings, factory, batch, tier, when)
        except EngineError as exc:
            engine_error = str(exc)
            logger.error("the engine failed: %s", exc)
        outcome = write_batch_report(settings, factory, batch, ingested, summarized, engine_error)
        if compare_with is not None:
            compare_artifact(settings, factory, batch, compare_with)
    finally:
        release_engine_after_deployment_run()
    if engine_error is not None:
        raise BatchFailed(
            f"the engine failed: {engine_error.removeprefix('the engine failed: ')}; {outcome.summarized} of {len(outcome.rows)} documents summarized "
            "(rerun this flow to resume)"
        )
    unfinished = [(src, reason) for src, status, reason in outcome.failures if status == "pending"]
    if unfinished:  # work that was never done is the system's failure, not the documents'
        raise BatchFailed(
            f"{len(unfinished)} documents left unsummarized: {_listing(unfinished)} (rerun this flow to resume)"
        )
    message = outcome.state_message()
    if outcome.failures and strict:
        raise BatchFailed(f"{message} (strict: failed documents fail the run)")
    if outcome.failures:
        logger.warning("%s", message)
    return Completed(message=message, data=outcome.as_dict())


FAILED_COUNT = re.compile(r"documents summarized, (\d+) failed")


def failed_documents(message: str | None) -> int | None:
    """The failed-document count a completed run's state message states (see ``state_message``)."""
    m = FAILED_COUNT.search(message or "")
    return int(m.group(1)) if m else None


def _listing(failures: Sequence[tuple[str, str]], limit: int = 10) -> str:
    shown = "; ".join(f"{src}: {reason}" for src, reason in failures[:limit])
    return shown + (f"; and {len(failures) - limit} more" if len(failures) > limit else "")


def _fig(x: float | None) -> str:
    return "?" if x is None else f"{x:,.1f}" if x >= 10 else f"{x:.2f}"


def release_engine_after_deployment_run() -> None:
    """A deployment's run has its own process, which ends with the run: stop the engine cleanly.
    In-process runs keep the process's engine for the next run."""
    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None and ctx.flow_run.deployment_id is not None:
        from pipeline.engine.engine import release_shared_engine

        release_shared_engine()


def _add_tags(tags: list[str]) -> None:
    """Tags on the running flow run (a deployment's tags are set before the batch is known)."""
    from prefect.client.orchestration import get_client

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    merged = sorted(set(ctx.flow_run.tags) | set(tags))
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(ctx.flow_run.id, tags=merged)
    except Exception as exc:  # tags help people find runs; losing them must not lose the batch
        get_run_logger().warning("could not tag the flow run: %s", exc)
        return
    ctx.flow_run.tags = merged


# --- helpers -------------------------------------------------------------------------------


def _pending_documents(factory: sessionmaker[Session], settings: Settings, batch: str) -> int:
    with factory() as s:
        row = repo.get_batch(s, batch)
        if row is None:
            return 0
        docs = repo.documents(s, batch_id=row.id)
        from pipeline.reports.selection import current_config_id
        from pipeline.review.playbooks import playbook_for

        current = current_config_id(settings, playbook_for(settings))
        return sum(1 for d in docs if current is None or repo.summary_for(s, d.id, current) is None)


class _LazyEngine:
    """The process's shared engine, started on first use: a rerun with nothing left to do starts
    none, and the engine outlives the run for the next in-process run."""

    def __init__(self, settings: Settings, model_dir: Path, logger: Any) -> None:
        self._settings, self._model_dir, self._logger = settings, model_dir, logger
        self._engine: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._engine is None:
            from pipeline.engine.engine import shared_engine

            t0 = time.perf_counter()
            self._engine = shared_engine(self._settings, self._model_dir)
            self._logger.info(
                "engine ready in %.1f s (%s on %s)", time.perf_counter() - t0, self._model_dir.name, self._engine.device
            )
        return getattr(self._engine, name)


class _ProgressArtifact:
    """The batch's progress artifact: share of documents summarized, plus the running wave's share
    of the rest; updated at most once a second from the engine's progress callback."""

    def __init__(self, batch: str, pending: int, *, listener: Any, logger: Any) -> None:
        self.pending, self.listener, self.logger = max(pending, 1), listener, logger
        self.done_docs, self.percent, self.last = 0, 0.0, 0.0
        self.text = "waiting for the engine"
        self.text_full = self.text
        self.id = create_progress_artifact(
            progress=0.0, key=f"batch-progress-{slug(batch)}", description=f"batch {batch}: {self.text}"
        )
        self.batch = batch

    def __call__(self, event: ProgressEvent) -> None:
        kind = event.kind
        if kind == "document_done":
            self.done_docs += 1
        elif kind == "wave_start":
            self.logger.info("wave %s: %s prompts", event.wave, event.prompts)
        wave = (event.done or 0) / event.total if kind == "progress" and event.total else 0.0
        share = (self.done_docs + 0.9 * wave * (self.pending - self.done_docs)) / self.pending
        # Monotone and below 100 until the task ends: a reduce wave can follow a finished map wave.
        self.percent = max(self.percent, min(99.0, 100.0 * share))
        if kind == "progress":
            self.text = event.describe() or self.text
        self.text_full = f"{self.text}; {self.done_docs} of {self.pending} documents summarized"
        if self.listener:
            self.listener(replace(event, percent=self.percent))
        now = time.monotonic()
        if kind in ("document_done", "wave_end") or now - self.last >= PROGRESS_INTERVAL_S:
            self.last = now
            update_progress_artifact(self.id, self.percent, description=f"batch {self.batch}: {self.text_full}")

    def close(self, text: str) -> None:
        self.percent = 100.0
        update_progress_artifact(self.id, 100.0, description=f"batch {self.batch}: {text}")
        if self.listener:
            self.listener(ProgressEvent("finished", percent=100.0, text=text))


@dataclass
class BatchOutcome:
    """What the report artifact shows and the flow returns."""

    batch: str
    rows: list[dict[str, Any]]
    report_path: Path
    tokens_per_second: float | None
    engine_run_id: int | None
    engine_error: str | None = None
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (source, status, reason)
    configuration: str | None = None  # the current configuration: id and label
    results: dict[str, int] = field(default_factory=dict)  # current / stale counts
    by_tier: dict[str, int] = field(default_factory=dict)  # documents each engine tier summarized in this run
    fallback: str | None = None  # why and how a fallback tier was used (None: it was not)
    handed_over_runs: dict[str, list[str]] = field(default_factory=dict)  # tier -> its linked flow runs
    tier_sizing: list[dict[str, Any]] = field(default_factory=list)  # the last `bench --tier` of each tier

    @classmethod
    def from_report(
        cls,
        batch: str,
        report: dict[str, Any],
        ingested: IngestReport | None,
        summarized: SummarizeReport | None,
        report_path: Path,
        engine_error: str | None,
        *,
        tiers: TierSummary | None = None,
    ) -> BatchOutcome:
        rows = []
        for d in report["documents"]:
            clauses = []
            for c in d["clauses"]:
                if c.get("status", "found") != "found":  # not found / not asked: no finding to list
                    continue
                pages = sorted({cit["page"] for cit in c["citations"]})
                clauses.append(f"{c['type']} (p. {', '.join(map(str, pages))})" if pages else c["type"])
            reason = d["error"] or ""
            if d["status"] == "pending":
                reason = "not summarized yet" + (" (the engine failed)" if engine_error else "")
            elif d["status"] == "needs_ocr":
                reason = reason or "no text layer: needs OCR"
            rows.append(
                {
                    "source": d["source"],
                    "status": d["status"],
                    "pages": d["pages"],
                    "clauses": clauses,
                    "reason": reason,
                }
            )
        for p in ingested.problems if ingested else []:
            rows.append({"source": p.source, "status": "failed", "pages": None, "clauses": [], "reason": p.reason})
        failures = [(r["source"], r["status"], r["reason"]) for r in rows if r["status"] != "summarized"]
        tps = summarized.tokens_per_second if summarized is not None and not summarized.nothing_to_do else None
        run_id = summarized.engine_run_id if summarized is not None else None
        sel = report.get("configuration") or {}
        conf = f"{sel['current']} ({sel.get('current_label') or 'no result yet'})" if sel.get("current") else None
        return cls(
            batch,
            rows,
            report_path,
            tps,
            run_id,
            engine_error,
            failures,
            conf,
            dict(report.get("results", {})),
            dict(tiers.by_tier) if tiers is not None else {},
            tiers.message if tiers is not None else None,
            dict(tiers.flow_runs) if tiers is not None else {},
        )

    @property
    def summarized(self) -> int:
        return sum(1 for r in self.rows if r["status"] == "summarized")

    def headline(self) -> str:
        """Counts; :func:`failed_documents` reads the failed count back from a state message."""
        head = f"{self.summarized} of {len(self.rows)} documents summarized, {len(self.failures)} failed"
        kinds: dict[str, int] = {}
        for _, status, _ in self.failures:
            kinds[status] = kinds.get(status, 0) + 1
        if kinds and set(kinds) != {"failed"}:
            head += " (" + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(kinds.items())) + ")"
        return head

    def state_message(self) -> str:
        """The run's state message: the counts, then each failed document with its reason, then
        (when a fallback tier was used) what each tier did and why."""
        listed = _listing([(src, reason) for src, _, reason in self.failures])
        return self.headline() + (f": {listed}" if listed else "") + (f" — {self.fallback}" if self.fallback else "")

    def markdown(self) -> str:
        lines = [
            f"# Batch {_md(self.batch)}",
            "",
            f"**{self.headline()}**",
            "",
            "| Document | Status | Pages | Clauses found (pages) | Failure reason |",
            "|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {_md(r['source'])} | {r['status']} | {r['pages'] if r['pages'] is not None else ''} "
                f"| {'; '.join(_md(c) for c in r['clauses'])} | {_md(r['reason'])} |"
            )
        if not self.rows:
            lines.append("| (no documents) | | | | |")
        tps = (
            f"{self.tokens_per_second:.1f} output tokens/s" if self.tokens_per_second else "no engine work in this run"
        )
        lines += ["", f"- Throughput: {tps}" + (f" (engine run {self.engine_run_id})" if self.engine_run_id else "")]
        if self.engine_error:
            lines.append(f"- Engine failure: {_md(self.engine_error)} — rerun the flow to resume")
        if self.by_tier:
            lines.append(
                "- Documents summarized in this run, by engine tier: "
                + ", ".join(f"{_md(t)}: {n}" for t, n in self.by_tier.items())
            )
        if self.fallback:
            lines.append(f"- **{_md(self.fallback)}**")
        for t, runs in self.handed_over_runs.items():
            lines.append(f"- Handed to tier {_md(t)} as flow run(s): " + ", ".join(f"`{r}`" for r in runs))
        if self.configuration:
            lines.append(
                f"- Configuration: {_md(self.configuration)} — {self.results.get('current', 0)} result(s) current, "
                f"{self.results.get('stale', 0)} stale"
            )
        for m in self.tier_sizing:
            lines.append(
                f"- Tier {_md(m['tier'])} last sized {m['created_at'][:16]} on {_md(m['device'])}: "
                f"decode {_fig(m['decode_ms_per_token_batch1'])} ms/token at batch 1, "
                f"{_fig(m['decode_ms_per_token_batch16'])} at 16; {_fig(m['cap_output_tokens_per_s'])} output tokens/s "
                f"at its admission cap"
            )
        lines.append(f"- Exported report: `{self.report_path}` (and `report.json` beside it)")
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "documents": self.rows,
            "summarized": self.summarized,
            "failed": len(self.failures),
            "failures": [{"source": src, "status": st, "reason": reason} for src, st, reason in self.failures],
            "output_tokens_per_second": round(self.tokens_per_second, 2) if self.tokens_per_second else None,
            "engine_run_id": self.engine_run_id,
            "report": str(self.report_path),
            "configuration": self.configuration,
            "results": self.results,
            "by_tier": self.by_tier,
            "fallback": self.fallback,
            "handed_over_runs": self.handed_over_runs,
        }
