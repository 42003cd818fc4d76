"""Deployments, serving them, and submitting a batch (to a served deployment or in-process)."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect import serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType
from prefect.client.schemas.objects import FlowRun
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron
from prefect.settings import PREFECT_API_URL

from flows._prefect import local_run
from flows.batch import FLOW_NAME as BATCH_FLOW
from flows.batch import summarize_batch
from flows.nightly import FLOW_NAME as NIGHTLY_FLOW
from flows.nightly import nightly
from pipeline.errors import ConfigError
from pipeline.settings import REPO_ROOT, Settings

if TYPE_CHECKING:
    from pipeline.batch import ProgressEvent

BATCH_DEPLOYMENT = f"{BATCH_FLOW}/summarize-batch"
NIGHTLY_DEPLOYMENT = f"{NIGHTLY_FLOW}/nightly"
# A runner polls every PREFECT_RUNNER_POLL_FREQUENCY (10 s); Prefect marks a deployment not
# ready after 60 s without a poll. Within this window `serve` counts as running.
SERVED_WITHIN = timedelta(seconds=60)
# The UI address when PREFECT_UI_URL cannot be derived from the API URL.
DEFAULT_UI = "http://127.0.0.1:4200"


def _specs(settings: Settings) -> list[tuple[Any, str, dict[str, Any]]]:
    """(flow, entrypoint, deployment options) of the nightly schedule (cron and timezone from the
    settings) and the ad-hoc batch deployment."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:  # Cron() accepts anything; the schedule model checks the cron string and the timezone
        CronSchedule(cron=settings.nightly_cron, timezone=settings.timezone)
    except ValidationError as exc:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ConfigError(
            f"invalid nightly schedule {settings.nightly_cron!r} in {settings.timezone!r}: {problems}",
            hint="set nightly_cron to a 5-field cron and timezone to an IANA name",
        ) from None
    return [
        (
            nightly,
            "flows/nightly.py:nightly",
            dict(
                name="nightly",
                schedules=[Cron(settings.nightly_cron, timezone=settings.timezone)],
                paused=False,
                tags=["contractsum", "nightly"],
                description="New files from the inbox become tonight's batch, summarized with citations.",
            ),
        ),
        (
            summarize_batch,
            "flows/batch.py:summarize_batch",
            dict(
                name="summarize-batch",
                tags=["contractsum", "ad-hoc"],
                description="Ingest the given files into a batch and summarize it (`contractsum submit`).",
            ),
        ),
    ]


def deployments(settings: Settings) -> list[RunnerDeployment]:
    """The deployments `serve` runs itself: nightly, the ad-hoc batch, and one `summarize-tier`
    deployment per non-primary engine tier (the hand-over's; served here, its work pool applies
    to `deploy`)."""
    from flows.handover import tier_specs

    own = [f.to_deployment(**kw, entrypoint_type=EntrypointType.MODULE_PATH) for f, _, kw in _specs(settings)]
    tiers = [f.to_deployment(**kw, entrypoint_type=EntrypointType.MODULE_PATH) for f, _, kw, _ in tier_specs(settings)]
    return own + tiers


def deploy_to_pool(settings: Settings, pool: str, *, source: Path = REPO_ROOT) -> list[UUID]:
    """Register the same deployments on a process work pool (created if missing), for
    `prefect worker start --pool POOL` on each machine. Workers load the flows from ``source``,
    so every machine needs this checkout at that path, and its own CONTRACTSUM_* environment."""
    from prefect import Flow
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    from flows.handover import tier_specs

    require_api()
    specs = [(entrypoint, kw, pool) for _, entrypoint, kw in _specs(settings)]
    # each fallback tier's hand-over deployment goes to that tier's own pool
    specs += [(entrypoint, kw, tier_pool) for _, entrypoint, kw, tier_pool in tier_specs(settings)]
    with get_client(sync_client=True) as client:
        for name in dict.fromkeys(p for _, _, p in specs):
            try:
                client.read_work_pool(name)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    ids = []
    for entrypoint, kw, work_pool in specs:
        loaded = Flow.from_source(source=str(source), entrypoint=entrypoint)
        ids.append(loaded.deploy(**kw, work_pool_name=work_pool, build=False, push=False, print_next_steps=False))
    return ids


def require_api() -> str:
    """The configured Prefect API URL; serving needs a real server that outlives this process."""
    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError(
            "no Prefect server configured",
            hint="run `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api",
        )
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise ConfigError(
            f"the Prefect server at {url} does not answer: {problem}", hint="is `prefect server start` running?"
        )
    return url


def serve_deployments(settings: Settings, *, limit: int = 1) -> None:
    """Register the deployments and execute their runs until interrupted. Each run gets its own
    process (and engine), so ``limit`` is how many engines may run at once."""
    require_api()
    serve(*deployments(settings), limit=limit)


# --- submitting ----------------------------------------------------------------------------


# `submit`'s exit codes (usage errors exit 2, as every command's do).
EXIT_SUMMARIZED, EXIT_RUN_FAILED, EXIT_DOCUMENTS_FAILED = 0, 1, 3


@dataclass
class Submission:
    flow_run_id: UUID
    name: str
    batch: str
    mode: str  # "deployment" | "in-process"
    url: str | None  # only where a server that outlives this command answers
    state: str | None = None  # the state type once known to have ended (COMPLETED, FAILED, ...)
    message: str | None = None
    browse: str | None = None  # how to see an in-process run recorded by Prefect's temporary server
    outcome: dict[str, Any] | None = None  # the flow's result (in-process runs that completed)
    wall_seconds: float | None = None  # the flow run's start to end, from Prefect's record

    @property
    def failed_documents(self) -> int | None:
        if self.state != "COMPLETED":
            return None
        if self.outcome is not None:
            return int(self.outcome["failed"])
        from flows.batch import failed_documents

        return failed_documents(self.message)

    @property
    def exit_code(self) -> int:
        if self.state is None:  # submitted, not followed
            return EXIT_SUMMARIZED
        if self.state != "COMPLETED":
            return EXIT_RUN_FAILED
        return EXIT_DOCUMENTS_FAILED if self.failed_documents else EXIT_SUMMARIZED

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow_run_id": str(self.flow_run_id),
            "flow_run_name": self.name,
            "batch": self.batch,
            "mode": self.mode,
            "url": self.url,
            "browse": self.browse,
            "state": self.state,
            "message": self.message,
            "failed_documents": self.failed_documents,
            "failures": self.outcome["failures"] if self.outcome is not None else None,
            "exit_code": self.exit_code,
        }


@dataclass
class Route:
    """Where ``submit`` sends a batch: the served deployment's id, or None to run in-process."""

    deployment_id: UUID | None
    reason: str
    api_answers: bool


def route() -> Route:
    """The ad-hoc deployment when a server answers and a `serve` process is polling it."""
    url = PREFECT_API_URL.value()
    if not url:
        return Route(None, "no Prefect server configured (PREFECT_API_URL)", False)
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        if client.api_healthcheck() is not None:
            return Route(None, f"the Prefect server at {url} does not answer", False)
        try:
            dep = client.read_deployment_by_name(BATCH_DEPLOYMENT)
        except ObjectNotFound:
            return Route(None, f"no {BATCH_DEPLOYMENT} deployment: `contractsum serve` has not run against {url}", True)
    polled = dep.last_polled
    if polled is None or datetime.now(UTC) - polled > SERVED_WITHIN:
        return Route(None, f"`contractsum serve` is not running (deployment last polled {polled or 'never'})", True)
    return Route(dep.id, f"served deployment {BATCH_DEPLOYMENT}", True)


def flow_run_url(flow_run_id: UUID) -> str:
    from prefect.utilities.urls import url_for

    return (
        url_for("flow-run", obj_id=flow_run_id, default_base_url=DEFAULT_UI)
        or f"{DEFAULT_UI}/runs/flow-run/{flow_run_id}"
    )


def submit_to_deployment(
    deployment_id: UUID,
    batch: str,
    paths: Sequence[str],
    playbook: str | None = None,
    *,
    strict: bool | None = None,
    compare_with: str | None = None,
    tier: str | None = None,
    deadline: str | None = None,
) -> Submission:
    from prefect.deployments import run_deployment

    parameters: dict[str, Any] = {"batch": batch, "paths": list(paths), "origin": "submit"}
    if compare_with is not None:
        parameters["compare_with"] = compare_with
    if tier is not None:
        parameters["tier"] = tier
    if deadline is not None:  # an ISO date-time, resolved when submitted
        parameters["deadline"] = deadline
    if playbook is not None:  # else the worker's own setting
        parameters["playbook"] = playbook
    if strict is not None:  # otherwise the served process's strict_batches setting decides
        parameters["strict"] = strict
    run = run_deployment(
        deployment_id,
        parameters=parameters,
        flow_run_name=f"summarize {batch}",
        tags=["contractsum", f"batch:{batch}"],
        timeout=0,
        as_subflow=False,
    )
    return Submission(run.id, run.name, batch, "deployment", flow_run_url(run.id))


def run_in_process(
    settings: Settings,
    batch: str,
    paths: Sequence[str],
    on_progress: Callable[[ProgressEvent], None] | None = None,
    *,
    temporary_server: bool = False,
    strict: bool | None = None,
    compare_with: str | None = None,
    tier: str | None = None,
    deadline: str | None = None,
) -> Submission:
    """Run the batch flow here, on this thread (the engine's watchdog needs the main thread).
    ``temporary_server`` ignores a configured API URL that does not answer and records the run
    through Prefect's temporary server instead, which ends with this process: no URL then, but
    how to browse the run later (its database outlives the temporary server)."""
    from prefect import tags
    from prefect.settings import temporary_settings

    unset = {PREFECT_API_URL} if temporary_server else set()
    logging.getLogger("prefect").addFilter(_temporary_server_notice)
    with temporary_settings(restore_defaults=unset), local_run(settings, on_progress), tags("contractsum", "ad-hoc"):
        state = summarize_batch(
            batch=batch,
            paths=list(paths),
            origin="submit",
            strict=strict,
            compare_with=compare_with,
            tier=tier,
            deadline=deadline,
            return_state=True,
        )
        run_id = state.state_details.flow_run_id
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
        answering = not temporary_server and PREFECT_API_URL.value() is not None
        url = flow_run_url(run_id) if answering else None
        browse = None if answering else browse_later_hint()
        outcome = state.result(raise_on_failure=False) if state.is_completed() else None
    wall = (run.end_time - run.start_time).total_seconds() if run.start_time and run.end_time else None
    return Submission(
        run_id,
        run.name,
        batch,
        "in-process",
        url,
        state.type.value,
        state.message,
        browse,
        outcome if isinstance(outcome, dict) else None,
        wall,
    )


def _temporary_server_notice(record: logging.LogRecord) -> bool:
    """Drops Prefect's "Starting temporary server on http://127.0.0.1:PORT" notice: that address is
    gone when this command ends, and `submit` says instead how to see the run later."""
    return not str(record.msg).startswith(("Starting temporary server on", "Stopping temporary server on"))


def browse_later_hint() -> str:
    """How to see runs recorded by Prefect's temporary server: `prefect server start` on the same
    database (PREFECT_API_DATABASE_CONNECTION_URL, else prefect.db under PREFECT_HOME), offline."""
    from prefect.settings import get_current_settings

    exe = Path(sys.executable).with_name("prefect")
    start = f"{shlex.quote(str(exe)) if exe.exists() else 'prefect'} server start --host 127.0.0.1"
    env = "PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1"
    if os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL"):
        return f"to see this run in the Prefect UI: {env} {start} (with this PREFECT_API_DATABASE_CONNECTION_URL)"
    home = get_current_settings().home
    return f"to see this run in the Prefect UI: PREFECT_HOME={shlex.quote(str(home))} {env} {start}"


def watch(
    submission: Submission, on_update: Callable[[str, float | None, str | None], None], *, poll_s: float = 1.0
) -> Submission:
    """Follow a deployment's run until it ends, reporting (state name, progress %, progress text)."""
    with get_client(sync_client=True) as client:
        while True:
            run: FlowRun = client.read_flow_run(submission.flow_run_id)
            percent, text = _progress(client, run.id)
            state = run.state
            on_update(state.name if state else "Unknown", percent, text)
            if state is not None and state.is_final():
                submission.state, submission.message = state.type.value, state.message
                return submission
            time.sleep(poll_s)


def _progress(client: Any, flow_run_id: UUID) -> tuple[float | None, str | None]:
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(
            type=ArtifactFilterType(any_=["progress"]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
        )
    )
    if not artifacts:
        return None, None
    latest = max(artifacts, key=lambda a: a.updated or a.created)
    try:
        return float(latest.data), latest.description
    except (TypeError, ValueError):
        return None, latest.description
