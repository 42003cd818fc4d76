"""The golden flow: the FP8-vs-BF16 gate as a Prefect run, its report published as an artifact.

The work is ``pipeline.quality.golden_run.run_golden``; this module adds the run's name, the artifact, and a
failed state when the candidate fails the gate (so automations can stop a rollout on it).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows._prefect import run_settings
from pipeline.errors import ContractsumError
from pipeline.settings import Settings

FLOW_NAME = "golden-check"


class GoldenFailed(ContractsumError):
    """The candidate failed the golden gate; the message lists the checks it missed."""


# No retries: an engine that fails to start or a gate that fails will do so again.
@task(name="golden-run", cache_policy=NO_CACHE)
def golden_run(
    settings: Settings, baseline: str, candidate: str, model: str | None, set_version: str
) -> dict[str, Any]:
    """Baseline, then candidate, on the golden set; stored and reported by ``run_golden``."""
    from pathlib import Path

    from pipeline.engine.engine import release_shared_engine
    from pipeline.quality.golden_run import run_golden
    from storage.db import open_home_database

    logger = get_run_logger()
    factory = open_home_database(settings)
    # One engine at a time: a worker's long-lived engine would otherwise hold memory beside the gate's.
    release_shared_engine()
    outcome = run_golden(
        settings,
        model=Path(model) if model else None,
        baseline=baseline,
        candidate=candidate,
        factory=factory,
        golden_version=set_version,
        on_event=lambda ev: logger.info("golden: %s", ev.describe()),
    )
    result = outcome.as_dict()
    result["markdown"] = outcome.report_path.read_text(encoding="utf-8")
    return result


@flow(name=FLOW_NAME, flow_run_name="golden {candidate} vs {baseline}", validate_parameters=True)
def golden_check(
    baseline: str = "bf16", candidate: str = "fp8", model: str | None = None, set_version: str = "v1"
) -> dict[str, Any]:
    """Judge whether ``candidate`` may replace ``baseline`` (CONFIG strings as in `contractsum golden`).

    The run fails when the verdict is FAIL; the report artifact is published either way.
    """
    settings = run_settings()
    result = golden_run(settings, baseline, candidate, model, set_version)
    markdown = result.pop("markdown")
    create_markdown_artifact(
        key="golden-report",
        markdown=markdown,
        description=f"golden check {result['verdict']} ({result['mode']}), report {result['report']}",
    )
    if result["verdict"] != "PASS":
        missed = ", ".join(
            f"{c['metric']}={c['value']} (needs {c['op']} {c['limit']:g})" for c in result["checks"] if not c["ok"]
        )
        raise GoldenFailed(f"golden check FAIL ({result['mode']}): {missed}; report {result['report']}")
    result.pop("cases", None)
    return result
