"""Prefect's environment for contractsum (offline, loopback only, state under contractsum's home)
and the settings a flow run uses.

Prefect reads its settings once, when it is first imported, so the environment is applied by the
entry point (``contractsum serve`` / ``submit``) before anything imports Prefect.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.settings import Settings, load_settings

if TYPE_CHECKING:
    from pipeline.batch import ProgressEvent

# Every one of these is only a default: a value already in the environment wins.
OFFLINE_DEFAULTS: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    # The temporary server Prefect starts when no API URL is set needs 20+ s on a small CPU box.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_API_HOST": "127.0.0.1",
    "PREFECT_RUNNER_SERVER_HOST": "127.0.0.1",
    "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
}


def prefect_environment(home: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables contractsum adds: each offline default that is unset, and ``PREFECT_HOME``
    under ``home`` unless it is set."""
    env = os.environ if environ is None else environ
    wanted = {**OFFLINE_DEFAULTS, "PREFECT_HOME": str(home / "prefect")}
    return {k: v for k, v in wanted.items() if k not in env}


def apply_prefect_environment(settings: Settings) -> dict[str, str]:
    """Set the defaults in this process (and so in the flow-run processes it starts), and make
    sure Prefect's home exists: Prefect creates only the last folder of the path."""
    added = prefect_environment(settings.home)
    os.environ.update(added)
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True, mode=0o700)
    return added


# --- the settings of a flow run ------------------------------------------------------------


@dataclass(frozen=True)
class LocalRun:
    """What an in-process caller hands the flows: its settings (never flow parameters, which the
    UI shows: the database URL is secret) and an optional progress listener."""

    settings: Settings
    on_progress: Callable[[ProgressEvent], None] | None = None


_local: ContextVar[LocalRun | None] = ContextVar("contractsum_local_run", default=None)


@contextmanager
def local_run(settings: Settings, on_progress: Callable[[ProgressEvent], None] | None = None) -> Iterator[LocalRun]:
    """Flows called inside this block use ``settings`` instead of building their own."""
    run = LocalRun(settings, on_progress)
    token = _local.set(run)
    try:
        yield run
    finally:
        _local.reset(token)


def run_settings() -> Settings:
    """The settings for this flow run: the caller's, else built from the environment and config
    file (a served run inherits ``contractsum serve``'s environment)."""
    run = _local.get()
    if run is not None:
        return run.settings
    settings, _ = load_settings()
    return settings


def progress_listener() -> Callable[[ProgressEvent], None] | None:
    run = _local.get()
    return run.on_progress if run is not None else None


def settings_environment(settings: Settings, sources: Mapping[str, str]) -> dict[str, str]:
    """``CONTRACTSUM_*`` variables for the fields set by CLI flags, so flow runs started in other
    processes (``serve`` runs each in a subprocess) see the same settings."""
    out: dict[str, str] = {}
    for name, source in sources.items():
        if source != "cli":
            continue
        value = getattr(settings, name)
        if value is None:
            continue
        if name == "database_url":
            value = settings.db_url
        out[f"CONTRACTSUM_{name.upper()}"] = str(value)
    return out
