"""Routing a batch over engine tiers: the night finishes even when the primary cannot do it all.

Rules (docs/operations.md, "Fallback tier"):

- **Primary unavailable.** The tier's engine fails to start (:class:`EngineStartError`), or dies
  ``fallback_after_engine_deaths`` times in one run: the documents it has not finished are handed
  to the next tier, which summarizes them. A tier with no tier after it fails fast instead (the
  engine error ends the run, its jobs re-queued for a rerun).
- **Deadline.** After each wave the run estimates the time its queue still needs from the
  throughput measured on this batch (engine seconds per prompt token so far) and the queued
  tokens; when that runs past the deadline, the overflow — the documents furthest from done (no
  job started), lowest ``priority`` first, then the latest queued — is handed to the next tier while
  this one keeps working on the rest. ``hand_over_to`` (the flow's Prefect hand-over: a linked flow
  run of the tier's deployment on its own work pool) takes it from there; without one, the
  overflow runs on the next tier here once this tier is done.
- **By hand.** ``tier=NAME`` runs the batch on that tier from the start.

A hand-over is a claim in the database (:func:`storage.repo.hand_over`): the giving tier's jobs of
a document become ``handed_over`` in one transaction that checks none has started, so no chunk is
ever summarized by both tiers. Each tier's results are stored under its own configuration (the
tier is part of it), so every result says which tier made it. ``upgrade_fallback`` takes documents
the fallback did back to the primary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pipeline.engine.tiers import Tier, fallback_after, tier, tiers_of
from pipeline.errors import EngineError, EngineStartError
from storage import repo
from storage.db import in_transaction

# Output tokens a queued job is expected to write, as a share of its output budget, for the
# deadline estimate (measured: the tiny model and SmolLM2 use 15-40% of max_output_tokens).
EXPECTED_OUTPUT_SHARE = 0.5


@dataclass
class TierRun:
    """One tier's part of a routed run."""

    tier: str
    config_id: str = ""
    summarized: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    prompts: int = 0
    engine_runs: list[int] = field(default_factory=list)
    engine_deaths: int = 0
    errors: list[str] = field(default_factory=list)
    handed_over: list[int] = field(default_factory=list)  # documents this tier gave to the next
    handed_to: str | None = None
    reason: str | None = None  # why it handed over

    def as_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "config_id": self.config_id,
            "summarized": self.summarized,
            "failed": {str(k): v for k, v in self.failed.items()},
            "prompts": self.prompts,
            "engine_runs": self.engine_runs,
            "engine_deaths": self.engine_deaths,
            "errors": self.errors,
            "handed_over": self.handed_over,
            "handed_to": self.handed_to,
            "reason": self.reason,
        }


@dataclass
class RoutedReport:
    runs: list[TierRun] = field(default_factory=list)
    reports: list[Any] = field(default_factory=list)  # the tiers' SummarizeReports, in order
    remote: dict[str, list[int]] = field(default_factory=dict)  # tier -> documents handed to its own flow run

    @property
    def fallback_used(self) -> bool:
        return any(r.handed_over for r in self.runs) or any(not _is_primary(r.tier) for r in self.runs)

    @property
    def summarized(self) -> list[int]:
        return [d for r in self.runs for d in r.summarized]

    @property
    def failed(self) -> dict[int, str]:
        return {d: e for r in self.runs for d, e in r.failed.items()}

    def by_tier(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.runs:
            out[r.tier] = out.get(r.tier, 0) + len(r.summarized)
        return out

    def message(self) -> str | None:
        """What a run that used a fallback says (None when only the primary worked)."""
        if not self.fallback_used:
            return None
        parts = []
        for r in self.runs:
            if r.handed_over:
                parts.append(f"{len(r.handed_over)} document(s) handed from {r.tier} to {r.handed_to}: {r.reason}")
        done = ", ".join(f"{n} by {t}" for t, n in self.by_tier().items())
        return "fallback tier used: " + "; ".join(parts) + (f" ({done})" if done else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": [r.as_dict() for r in self.runs],
            "by_tier": self.by_tier(),
            "fallback_used": self.fallback_used,
            "message": self.message(),
            "handed_to_flow_runs": self.remote,
        }


def _is_primary(name: str) -> bool:
    from pipeline.engine.tiers import PRIMARY

    return name == PRIMARY


def tier_config_id(settings: Any, t: Tier, playbook: Any = None) -> str:
    """The configuration id results of tier ``t`` are stored under."""
    from pipeline.batch import config_id_for
    from pipeline.review.playbooks import playbook_for

    return config_id_for(settings, playbook_for(settings, playbook), tier=t.name)


def summarize_routed(
    factory: sessionmaker[Session],
    settings: Any,
    *,
    batch: str | None = None,
    document_ids: Sequence[int] | None = None,
    tier_name: str | None = None,
    engine_for: Callable[[Tier], Any] | None = None,
    on_progress: Callable[[Any], None] | None = None,
    owner: str | None = None,
    playbook: Any = None,
    max_documents: int | None = None,
    stale_first: bool = False,
    upgrade_fallback: bool = False,
    deadline: datetime | None = None,
    hand_over_to: Callable[[Tier, list[int]], bool] | None = None,
    now: Callable[[], datetime] | None = None,
) -> RoutedReport:
    """Summarize ``batch`` on its tiers (see the module doc). ``engine_for(tier)`` gives a tier's
    engine (an engine, or None to start one per run); ``hand_over_to(tier, documents)`` starts the
    next tier's own run on handed-over documents and returns True, or False to leave them for this
    call to run after the current tier."""
    from pipeline.review.summarize import summarize

    clock = now or (lambda: datetime.now(UTC))
    first = tier(settings, tier_name) if tier_name else tiers_of(settings)[0]
    out = RoutedReport()
    scope: Sequence[int] | None = document_ids
    current: Tier | None = first
    fallback_done: set[int] = set()
    if upgrade_fallback:
        scope = _take_back_from_fallbacks(factory, settings, first, batch, scope, playbook)
    else:
        fallback_done = _done_by_other_tiers(factory, settings, first, batch, playbook)
        _reclaim_abandoned(factory, settings, first, batch, scope, playbook, fallback_done)
    while current is not None:
        t = current
        run = TierRun(tier=t.name, config_id=tier_config_id(settings, t, playbook))
        out.runs.append(run)
        ts = t.settings(settings)
        docs = None if scope is None else [d for d in scope if d not in fallback_done]
        if docs is None and fallback_done:
            docs = [d for d in _batch_documents(factory, batch) if d not in fallback_done]
        pending_remote: list[tuple[Tier, list[int]]] = []

        def check_deadline(report, t=t, ts=ts, run=run, pending=pending_remote) -> None:
            if deadline is None:
                return
            nxt = fallback_after(settings, t.name)
            if nxt is None:
                return
            overflow = _deadline_overflow(factory, ts, run.config_id, report, deadline, clock(), settings)
            if not overflow:
                return
            moved = _tx(
                settings, factory, lambda s: repo.hand_over(s, overflow, config_id=run.config_id, to_tier=nxt.name)
            )
            if not moved:
                return
            run.handed_over += moved
            run.handed_to = nxt.name
            run.reason = f"the queue would finish after the deadline {deadline.isoformat(timespec='minutes')}"
            if hand_over_to is not None and hand_over_to(nxt, moved):
                out.remote.setdefault(nxt.name, []).extend(moved)
            else:
                pending.append((nxt, moved))

        while True:
            try:
                report = summarize(
                    factory,
                    ts,
                    batch=batch,
                    document_ids=docs,
                    engine=engine_for(t) if engine_for else None,
                    owner=owner,
                    on_progress=on_progress,
                    playbook=playbook,
                    max_documents=max_documents if t is first else None,
                    stale_first=stale_first,
                    tier=t.name,
                    on_wave=check_deadline,
                )
            except EngineError as exc:
                run.errors.append(str(exc))
                # what the run finished before its engine failed is stored: count it
                ids = _scope(factory, batch, docs)
                left = unfinished(factory, ids, run.config_id)
                run.summarized += [d for d in ids if d not in left and d not in run.summarized]
                started = not isinstance(exc, EngineStartError)
                run.engine_deaths += started
                nxt = fallback_after(settings, t.name)
                if nxt is None:
                    raise  # no tier to fall back to: fail fast, as the runbook asks of a dead TP group
                if started and run.engine_deaths < settings.fallback_after_engine_deaths:
                    _release_engine()
                    continue  # a fresh engine on the same tier
                moved = _tx(
                    settings,
                    factory,
                    lambda s, left=left, nxt=nxt, cid=run.config_id: repo.hand_over(
                        s, left, config_id=cid, to_tier=nxt.name, started_too=True
                    ),
                )
                run.handed_over += moved
                run.handed_to = nxt.name
                run.reason = (
                    f"its engine could not start ({exc})"
                    if not started
                    else f"its engine died {run.engine_deaths} times ({exc})"
                )
                _release_engine()
                scope, current = moved, nxt
                fallback_done = set()
                break
            out.reports.append(report)
            run.summarized += report.summarized
            run.failed.update(report.failed)
            run.prompts += report.prompts
            if report.engine_run_id is not None:
                run.engine_runs.append(report.engine_run_id)
            current = None
            if pending_remote:  # no one else took the overflow: run it on the next tier, here
                nxt, moved = pending_remote[0][0], [d for _, ds in pending_remote for d in ds]
                scope, current, fallback_done = moved, nxt, set()
            break
    return out


def _tx(settings: Any, factory: sessionmaker[Session], fn):
    return in_transaction(factory, fn, retry_seconds=settings.db_retry_seconds)


def _release_engine() -> None:
    """A dead engine is not reused: the next start makes a new one."""
    from pipeline.engine.engine import release_shared_engine

    release_shared_engine()


def _batch_documents(factory: sessionmaker[Session], batch: str | None) -> list[int]:
    from pipeline.batch import resolve_batch

    with factory() as s:
        return [d.id for d in repo.documents(s, batch_id=resolve_batch(s, batch))]


def _scope(factory: sessionmaker[Session], batch: str | None, docs: Sequence[int] | None) -> list[int]:
    return list(docs) if docs is not None else _batch_documents(factory, batch)


def unfinished(factory: sessionmaker[Session], documents: Sequence[int], config_id: str) -> list[int]:
    """Of ``documents``, those without a result under configuration ``config_id``, in order."""
    with factory() as s:
        done = repo.documents_with_results(s, documents, config_id=config_id)
    return [d for d in documents if d not in done]


def _done_by_other_tiers(
    factory: sessionmaker[Session], settings: Any, first: Tier, batch: str | None, playbook: Any
) -> set[int]:
    """Documents of the batch with a result under another tier's current configuration: done for
    the night (``upgrade_fallback`` gives them back to ``first``)."""
    others = [t for t in tiers_of(settings) if t.name != first.name]
    if not others:
        return set()
    ids = _batch_documents(factory, batch)
    out: set[int] = set()
    with factory() as s:
        for t in others:
            try:
                cid = tier_config_id(settings, t, playbook)
            except Exception:  # a tier whose model is not here cannot have made results here
                continue
            out |= repo.documents_with_results(s, ids, config_id=cid)
    return out


def _reclaim_abandoned(
    factory: sessionmaker[Session],
    settings: Any,
    first: Tier,
    batch: str | None,
    scope: Sequence[int] | None,
    playbook: Any,
    done: set[int],
) -> list[int]:
    """Documents ``first`` handed over earlier that no tier finished (``done``: those another tier
    did) and none is working on (the receiving run failed or never ran) go back to ``first``'s
    queue, so a rerun finishes them."""
    cid = tier_config_id(settings, first, playbook)
    ids = _scope(factory, batch, scope)

    def work(s: Session) -> list[int]:
        handed = repo.handed_over_documents(s, ids, config_id=cid)
        lost = sorted(handed - done - repo.active_elsewhere(s, list(handed), config_id=cid))
        repo.take_back(s, lost, config_id=cid)
        return lost

    return _tx(settings, factory, work)


def _take_back_from_fallbacks(
    factory: sessionmaker[Session],
    settings: Any,
    first: Tier,
    batch: str | None,
    scope: Sequence[int] | None,
    playbook: Any,
) -> Sequence[int] | None:
    """``--upgrade-fallback``: documents a fallback did go back to ``first``'s queue."""
    cid = tier_config_id(settings, first, playbook)
    ids = _scope(factory, batch, scope)
    _tx(settings, factory, lambda s: repo.take_back(s, ids, config_id=cid))
    return scope


def _deadline_overflow(
    factory: sessionmaker[Session],
    settings: Any,
    config_id: str,
    report: Any,
    deadline: datetime,
    now: datetime,
    base_settings: Any,
) -> list[int]:
    """The documents to hand over so the rest finishes by ``deadline`` at the measured rate."""
    processed = report.tokens_in + report.tokens_out
    if not report.engine_seconds or not processed:
        return []
    rate = report.engine_seconds / processed  # engine seconds per token, measured on this batch
    with factory() as s:
        work = repo.queued_work(s, report.documents, config_id=config_id)
    return overflow(
        work,
        seconds_per_token=rate,
        output_tokens_per_job=int(settings.max_output_tokens * EXPECTED_OUTPUT_SHARE),
        seconds_left=(deadline - now).total_seconds(),
    )


def estimate_seconds(entry: dict[str, int], *, seconds_per_token: float, output_tokens_per_job: int) -> float:
    """Engine seconds one document's queued work needs: its queued prompt tokens and expected output."""
    jobs = entry.get("queued", 0) + entry.get("leased", 0)
    return seconds_per_token * (entry.get("tokens", 0) + jobs * output_tokens_per_job)


def overflow(
    work: dict[int, dict[str, int]],
    *,
    seconds_per_token: float,
    output_tokens_per_job: int,
    seconds_left: float,
    priority: dict[int, int] | None = None,
) -> list[int]:
    """Which documents to hand over: none when the queue fits in ``seconds_left``; else, from the
    documents with no job started (furthest from done), lowest ``priority`` first, then the last
    queued first, as many as it takes for the rest to fit."""
    cost = {
        d: estimate_seconds(e, seconds_per_token=seconds_per_token, output_tokens_per_job=output_tokens_per_job)
        for d, e in work.items()
    }
    total = sum(cost.values())
    if total <= seconds_left:
        return []
    movable = [d for d, e in work.items() if not e.get("done") and not e.get("leased")]
    prio = priority or {}
    movable.sort(key=lambda d: (prio.get(d, 0), -d))
    out = []
    for d in movable:
        if total <= seconds_left:
            break
        out.append(d)
        total -= cost[d]
    return sorted(out)
