"""Deployments, serving them, and submitting a batch (to a served deployment or in-process)."""

from __future__ import annotations

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
# Where a run made against the temporary server can be browsed later: `prefect server start`
# with the same PREFECT_HOME reads the same database.
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
    """The deployments `serve` runs itself."""
    return [f.to_deployment(**kw, entrypoint_type=EntrypointType.MODULE_PATH) for f, _, kw in _specs(settings)]


def deploy_to_pool(settings: Settings, pool: str, *, source: Path = REPO_ROOT) -> list[UUID]:
    """Register the same deployments on a process work pool (created if missing), for
    `prefect worker start --pool POOL` on each machine. Workers load the flows from ``source``,
    so every machine needs this checkout at that path, and its own CONTRACTSUM_* environment."""
    from prefect import Flow
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    require_api()
    specs = _specs(settings)
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    ids = []
    for _, entrypoint, kw in specs:
        loaded = Flow.from_source(source=str(source), entrypoint=entrypoint)
        ids.append(loaded.deploy(**kw, work_pool_name=pool, build=False, push=False, print_next_steps=False))
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
        raise ConfigError(f"the Prefect server at {url} does not answer: {problem}", hint="is `prefect server start` running?")
    return url


def serve_deployments(settings: Settings, *, limit: int = 1) -> None:
    """Register the deployments and execute their runs until interrupted. Each run gets its own
    process (and engine), so ``limit`` is how many engines may run at once."""
    require_api()
    serve(*deployments(settings), limit=limit)


# --- submitting ----------------------------------------------------------------------------


@dataclass
class Submission:
    flow_run_id: UUID
    name: str
    batch: str
    mode: str  # "deployment" | "in-process"
    url: str | None
    state: str | None = None  # the state type once known to have ended (COMPLETED, FAILED, ...)
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.state in (None, "COMPLETED")

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow_run_id": str(self.flow_run_id), "flow_run_name": self.name, "batch": self.batch,
            "mode": self.mode, "url": self.url, "state": self.state, "message": self.message,
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

    return url_for("flow-run", obj_id=flow_run_id, default_base_url=DEFAULT_UI) or f"{DEFAULT_UI}/runs/flow-run/{flow_run_id}"


def submit_to_deployment(deployment_id: UUID, batch: str, paths: Sequence[str], playbook: str | None = None) -> Submission:
    from prefect.deployments import run_deployment

    params: dict[str, Any] = {"batch": batch, "paths": list(paths), "origin": "submit"}
    if playbook is not None:  # else the worker's own setting
        params["playbook"] = playbook
    run = run_deployment(
        deployment_id,
        parameters=params,
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
) -> Submission:
    """Run the batch flow here, on this thread (the engine's watchdog needs the main thread).
    ``temporary_server`` ignores a configured API URL that does not answer and records the run
    through Prefect's temporary server instead (same PREFECT_HOME database)."""
    from prefect import tags
    from prefect.settings import temporary_settings

    unset = {PREFECT_API_URL} if temporary_server else set()
    with temporary_settings(restore_defaults=unset), local_run(settings, on_progress), tags("contractsum", "ad-hoc"):
        state = summarize_batch(batch=batch, paths=list(paths), origin="submit", return_state=True)
        run_id = state.state_details.flow_run_id
        with get_client(sync_client=True) as client:
            name = client.read_flow_run(run_id).name
        url = flow_run_url(run_id)
    return Submission(run_id, name, batch, "in-process", url, state.type.value, state.message)


def watch(submission: Submission, on_update: Callable[[str, float | None, str | None], None], *, poll_s: float = 1.0) -> Submission:
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
