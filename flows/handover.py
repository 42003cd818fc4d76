"""The Prefect hand-over between engine tiers: documents a tier gives up become a flow run of the
next tier's deployment, on that tier's own work pool, linked to the run that gave them.

Routing itself (when to hand over, and the claim in the database that keeps a chunk from being
summarized by two tiers) is ``pipeline/engine/routing.py``. This module adds Prefect's share:

- ``summarize-tier``: a flow that summarizes given documents of a batch on one tier (their jobs
  were already handed to it by ``storage.repo.hand_over`` before the flow run was created);
- its deployments, one per non-primary tier, named by the tier's ``deployment`` (default
  ``summarize-tier/<tier>``), registered by ``contractsum serve`` and ``contractsum deploy``;
- :class:`PrefectHandOver`, routing's ``hand_over_to``: ``run_deployment(as_subflow=True,
  timeout=0)`` when the API answers and the deployment is served, then :meth:`~PrefectHandOver.wait`
  for those runs, and the documents they left undone run here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.states import Completed
from sqlalchemy.orm import Session, sessionmaker

from flows._prefect import progress_listener, run_settings
from flows.batch import (
    BatchFailed,
    _add_tags,
    _LazyEngine,
    _ProgressArtifact,
    _task_options,
    connect,
    release_engine_after_deployment_run,
)
from pipeline.engine.tiers import Tier, parse_deadline, tier, tiers_of
from pipeline.errors import ConfigError
from pipeline.settings import Settings
from storage import repo

if TYPE_CHECKING:
    from pipeline.engine.routing import RoutedReport

FLOW_NAME = "summarize-tier"
# A hand-over whose flow run no worker or `serve` has started by then (all busy: `serve --limit 1`
# runs the giving run itself) is cancelled and its documents are summarized by the giving run.
START_WITHIN_S = 300.0
POLL_S = 2.0
# A deployment counts as served when `serve` or a worker polled it this recently (flows/serve.py).
SERVED_WITHIN = timedelta(seconds=60)


def deployment_name(t: Tier) -> str:
    """The tier's deployment as ``flow/deployment``: its ``deployment`` setting, else
    ``summarize-tier/<tier>``. The flow part must be this module's flow."""
    full = t.deployment or f"{FLOW_NAME}/{t.name}"
    flow_part, sep, name = full.partition("/")
    if not sep or not name or "/" in name or flow_part != FLOW_NAME:
        raise ConfigError(
            f"tier {t.name!r}: deployment {full!r} is not {FLOW_NAME}/<name>",
            hint=f"a tier's hand-over runs the {FLOW_NAME} flow: write deployment = '{FLOW_NAME}/{t.name}' or leave it out",
        )
    return full


def tier_specs(settings: Settings) -> list[tuple[Any, str, dict[str, Any], str]]:
    """(flow, entrypoint, deployment options, work pool) of each non-primary tier's deployment."""
    out = []
    for t in tiers_of(settings):
        if t.is_primary:
            continue
        out.append(
            (
                summarize_tier,
                "flows/handover.py:summarize_tier",
                dict(
                    name=deployment_name(t).partition("/")[2],
                    tags=["contractsum", "hand-over", f"tier:{t.name}"],
                    description=f"Documents handed over to engine tier {t.name} ({t.label()}).",
                    parameters={"tier": t.name},
                ),
                t.work_pool,
            )
        )
    return out


# --- the hand-over ---------------------------------------------------------------------------


@dataclass
class HandOff:
    """Documents given to a tier's own flow run."""

    tier: str
    documents: list[int]
    flow_run_id: UUID
    flow_run_name: str
    state: str | None = None  # the run's final state type, once waited for
    message: str | None = None
    done_here: list[int] = field(default_factory=list)  # left undone by that run: summarized here


def api_answers() -> bool:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return False
    try:
        with get_client(sync_client=True) as client:
            return client.api_healthcheck() is None
    except Exception:
        return False


class PrefectHandOver:
    """Routing's ``hand_over_to``: start the receiving tier's deployment as a linked flow run."""

    def __init__(self, batch: str, *, deadline: datetime | None, logger: Any, parent: str | None = None) -> None:
        self.batch, self.deadline, self.logger, self.parent = batch, deadline, logger, parent
        self.handoffs: list[HandOff] = []
        self._api: bool | None = None

    def reason_not(self, t: Tier) -> str | None:
        """Why the hand-over to ``t`` cannot go through Prefect (None: it can)."""
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        if self._api is None:
            self._api = api_answers()
        if not self._api:
            return "no Prefect API answers"
        name = deployment_name(t)
        with get_client(sync_client=True) as client:
            try:
                dep = client.read_deployment_by_name(name)
            except ObjectNotFound:
                return f"no {name} deployment (`contractsum serve` / `deploy` registers it)"
        polled = dep.last_polled
        if polled is None or datetime.now(UTC) - polled > SERVED_WITHIN:
            return f"nothing serves {name} (last polled {polled or 'never'})"
        return None

    def __call__(self, t: Tier, documents: list[int]) -> bool:
        from prefect.deployments import run_deployment

        try:
            why = self.reason_not(t)
        except Exception as exc:  # the API went away: the documents are done here instead
            why = f"the Prefect API failed: {exc}"
        if why is not None:
            self.logger.info("%d document(s) for tier %s run here after this tier: %s", len(documents), t.name, why)
            return False
        parameters: dict[str, Any] = {
            "batch": self.batch,
            "tier": t.name,
            "document_ids": list(documents),
            "parent_flow_run_id": self.parent,
            "deadline": self.deadline.isoformat() if self.deadline else None,
        }
        try:
            run = run_deployment(
                deployment_name(t),
                parameters=parameters,
                flow_run_name=f"summarize {self.batch} on {t.name}",
                tags=["contractsum", "hand-over", f"batch:{self.batch}", f"tier:{t.name}"],
                timeout=0,
                as_subflow=True,
            )
        except Exception as exc:
            self.logger.warning("could not start tier %s's flow run (%s): its documents run here", t.name, exc)
            return False
        self.handoffs.append(HandOff(t.name, list(documents), run.id, run.name))
        self.logger.info("%d document(s) handed to tier %s: flow run %s (%s)", len(documents), t.name, run.name, run.id)
        return True

    def wait(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        run_here: Callable[[Tier, list[int]], Any],
        *,
        start_within_s: float = START_WITHIN_S,
    ) -> None:
        """Wait for every handed-over run to end. One never started within ``start_within_s`` is
        cancelled; documents a run left without a result on its tier are given to ``run_here``."""
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelled

        with get_client(sync_client=True) as client:
            for h in self.handoffs:
                asked = time.monotonic()
                while True:
                    run = client.read_flow_run(h.flow_run_id)
                    state = run.state
                    if state is not None and state.is_final():
                        h.state, h.message = state.type.value, state.message
                        break
                    if (
                        state is not None
                        and (state.is_scheduled() or state.is_pending())
                        and run.start_time is None
                        and time.monotonic() - asked > start_within_s
                    ):
                        self.logger.warning(
                            "tier %s's flow run %s did not start within %.0f s: cancelled, its documents run here",
                            h.tier,
                            h.flow_run_name,
                            start_within_s,
                        )
                        client.set_flow_run_state(h.flow_run_id, Cancelled(message="not started in time"), force=True)
                        h.state, h.message = "CANCELLED", "not started in time"
                        break
                    time.sleep(POLL_S)
                left = undone(factory, settings, tier(settings, h.tier), h.documents)
                if left:
                    if h.state == "COMPLETED":
                        self.logger.warning("tier %s's run left %d document(s) undone", h.tier, len(left))
                    run_here(tier(settings, h.tier), left)
                    h.done_here = [d for d in left if d not in undone(factory, settings, tier(settings, h.tier), left)]


def undone(factory: sessionmaker[Session], settings: Settings, t: Tier, documents: Sequence[int]) -> list[int]:
    """Of ``documents``, those without a result under tier ``t``'s configuration."""
    from pipeline.engine.routing import tier_config_id, unfinished

    return unfinished(factory, list(documents), tier_config_id(settings, t))


# --- routing as the flows run it ---------------------------------------------------------------


@dataclass
class TierSummary:
    """What a run says about its tiers: documents summarized by each (here and in handed-over
    runs), and why a fallback was used (None: only the first tier worked)."""

    by_tier: dict[str, int]
    message: str | None
    flow_runs: dict[str, list[str]] = field(default_factory=dict)  # tier -> handed-over flow run ids
    first: Any = None  # the first tier's SummarizeReport (throughput, engine run), if it ran

    def as_dict(self) -> dict[str, Any]:
        return {"by_tier": self.by_tier, "fallback": self.message, "flow_runs": self.flow_runs}


def route_documents(
    settings: Settings,
    factory: sessionmaker[Session],
    batch: str,
    *,
    tier_name: str | None,
    document_ids: Sequence[int] | None,
    deadline: datetime | None,
    logger: Any,
    on_progress: Any = None,
    parent: str | None = None,
) -> TierSummary:
    """``summarize_routed`` with the flows' engines (the process's shared one per tier) and the
    Prefect hand-over, then waiting for the handed-over runs."""
    from pipeline.engine.routing import summarize_routed

    def engine_for(t: Tier) -> _LazyEngine:
        ts = t.settings(settings)
        return _LazyEngine(ts, ts.resolved_model(), logger)

    handover = PrefectHandOver(batch, deadline=deadline, logger=logger, parent=parent)
    routed = summarize_routed(
        factory,
        settings,
        batch=batch,
        document_ids=document_ids,
        tier_name=tier_name,
        engine_for=engine_for,
        on_progress=on_progress,
        deadline=deadline,
        hand_over_to=handover,
    )
    here: list[RoutedReport] = []

    def run_here(t: Tier, docs: list[int]) -> None:
        here.append(
            summarize_routed(factory, settings, batch=batch, document_ids=docs, tier_name=t.name, engine_for=engine_for)
        )

    handover.wait(factory, settings, run_here)
    return tier_summary(factory, settings, routed, handover, here)


def tier_summary(
    factory: sessionmaker[Session],
    settings: Settings,
    routed: RoutedReport,
    handover: PrefectHandOver,
    here: Sequence[RoutedReport] = (),
) -> TierSummary:
    by_tier: dict[str, int] = {}
    for r in [routed, *here]:
        for name, n in r.by_tier().items():
            by_tier[name] = by_tier.get(name, 0) + n
    flow_runs: dict[str, list[str]] = {}
    for h in handover.handoffs:
        flow_runs.setdefault(h.tier, []).append(str(h.flow_run_id))
        # done by the tier's own run: those of its documents with a result now, less those done here
        done = set(h.documents) - set(undone(factory, settings, tier(settings, h.tier), h.documents))
        by_tier[h.tier] = by_tier.get(h.tier, 0) + len(done - set(h.done_here))
    parts = [
        f"{len(r.handed_over)} document(s) handed from {r.tier} to {r.handed_to}: {r.reason}"
        for r in routed.runs
        if r.handed_over
    ]
    parts += [f"flow run {h.flow_run_name} ended {h.state}" for h in handover.handoffs if h.state != "COMPLETED"]
    used = routed.fallback_used or bool(handover.handoffs)
    message = None
    if used:
        counts = ", ".join(f"{n} by {name}" for name, n in by_tier.items())
        message = (
            "fallback tier used: "
            + "; ".join(parts or [f"the run started on tier {routed.runs[0].tier}" if routed.runs else "by hand"])
            + (f" ({counts})" if counts else "")
        )
    first = routed.reports[0] if routed.reports else None
    return TierSummary(by_tier, message, flow_runs, first)


# --- the flow --------------------------------------------------------------------------------


@task(name="summarize-on-tier", **_task_options)
def summarize_on_tier(
    settings: Settings,
    factory: sessionmaker[Session],
    batch: str,
    tier_name: str,
    document_ids: list[int],
    deadline: datetime | None,
    parent: str | None,
) -> TierSummary:
    logger = get_run_logger()
    tracker = _ProgressArtifact(f"{batch}-{tier_name}", len(document_ids), listener=progress_listener(), logger=logger)
    summary = route_documents(
        settings,
        factory,
        batch,
        tier_name=tier_name,
        document_ids=document_ids,
        deadline=deadline,
        logger=logger,
        on_progress=tracker,
        parent=parent,
    )
    tracker.close(", ".join(f"{n} by {t}" for t, n in summary.by_tier.items()) or "nothing to do")
    return summary


@flow(name=FLOW_NAME, flow_run_name="summarize {batch} on {tier}", validate_parameters=True)
def summarize_tier(
    batch: str,
    tier: str,
    document_ids: list[int],
    parent_flow_run_id: str | None = None,
    deadline: str | None = None,
) -> Any:  # a Completed state whose result is TierSummary.as_dict()
    """Summarize ``document_ids`` of ``batch`` on engine tier ``tier``: the documents another
    tier's run handed over (``parent_flow_run_id``) when it could not do them in time or at all.
    Their jobs on the giving tier were claimed for this tier before this run was created, so no
    chunk is summarized by both."""
    from pipeline.engine.tiers import tier as tier_named

    settings = run_settings()
    _add_tags([f"batch:{batch}", f"tier:{tier}"])
    try:
        tier_named(settings, tier)  # an unknown tier fails the run with the known ones named
        if not document_ids:
            raise ConfigError("no documents to summarize", hint="a hand-over names the documents it hands over")
        when = parse_deadline(deadline, settings.timezone) if deadline else None
        factory = connect(settings)
        summary = summarize_on_tier(settings, factory, batch, tier, list(document_ids), when, parent_flow_run_id)
    finally:
        release_engine_after_deployment_run()
    return _finish(settings, factory, batch, tier, list(document_ids), summary)


def _finish(
    settings: Settings,
    factory: sessionmaker[Session],
    batch: str,
    tier_name: str,
    document_ids: list[int],
    summary: TierSummary,
) -> Any:
    """Completed with the counts when every document has a result on this tier or a later one;
    failed documents are counted, not fatal; work left undone fails the run."""
    order = tiers_of(settings)
    names = [t.name for t in order]
    later = order[names.index(tier_name) :]
    remaining = list(document_ids)
    for t in later:
        remaining = undone(factory, settings, t, remaining)
    failed = _failed(factory, settings, later, remaining)
    pending = [d for d in remaining if d not in failed]
    done = len(document_ids) - len(remaining)
    message = f"{done} of {len(document_ids)} documents summarized, {len(failed)} failed (tier {tier_name})"
    if summary.message:
        message += f"; {summary.message}"
    if pending:
        raise BatchFailed(f"{message}; {len(pending)} left unsummarized: documents {pending[:20]}")
    return Completed(message=message, data={**summary.as_dict(), "batch": batch, "tier": tier_name})


def _failed(factory: sessionmaker[Session], settings: Settings, tiers: Sequence[Tier], docs: Sequence[int]) -> set[int]:
    from pipeline.engine.routing import tier_config_id

    out: set[int] = set()
    with factory() as s:
        for t in tiers:
            cid = tier_config_id(settings, t)
            out |= {d for d in docs if repo.failed_job(s, d, cid) is not None}
    return out
