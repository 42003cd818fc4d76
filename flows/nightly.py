"""The nightly flow: new files in the inbox become one dated batch, summarized by
:func:`flows.batch.summarize_batch`."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run as current_run
from prefect.states import Completed
from sqlalchemy.orm import Session, sessionmaker

from flows._prefect import run_settings
from flows.batch import _task_options, connect, release_engine_after_deployment_run, summarize_batch
from pipeline.errors import ConfigError
from pipeline.ingest.ingest import discover
from storage import repo

FLOW_NAME = "nightly"


def nightly_batch_name(scheduled: datetime, timezone: str) -> str:
    """``nightly-YYYY-MM-DD`` of the scheduled time in the schedule's timezone, so a rerun of the
    same night's flow run lands in (and resumes) the same batch."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown timezone {timezone!r}", hint="use an IANA name such as Europe/Berlin") from None
    return f"nightly-{scheduled.astimezone(zone):%Y-%m-%d}"


def new_inbox_files(factory: sessionmaker[Session], inbox: Path) -> list[Path]:
    """Supported files under ``inbox`` whose content is not yet a stored document. Files that
    failed before are offered again (they may have been fixed), so they keep being reported."""
    files, _ = discover([inbox])
    fresh: list[Path] = []
    with factory() as s:
        for path in files:
            digest = _sha256(path)
            if digest is None or repo.document_by_sha(s, digest) is None:
                fresh.append(path)
    return fresh


def _sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None  # ingest will record why it cannot be read
    return h.hexdigest()


@task(name="find-new-files", **_task_options)
def find_new_files(factory: sessionmaker[Session], inbox: Path) -> list[Path]:
    files = new_inbox_files(factory, inbox)
    get_run_logger().info("%d new file(s) in %s", len(files), inbox)
    return files


def _run_name() -> str:
    try:
        return nightly_batch_name(current_run.scheduled_start_time, run_settings().timezone)
    except Exception:  # bad settings fail the run itself, with their message, not its naming
        return FLOW_NAME


@flow(name=FLOW_NAME, flow_run_name=_run_name)
def nightly() -> Any:  # a Completed state whose result is the batch outcome (or nothing new)
    """Pick up new files from the inbox (``CONTRACTSUM_INBOX``) into tonight's batch and summarize
    it. A rerun of the same night resumes that batch; a night with nothing new does nothing."""
    logger = get_run_logger()
    settings = run_settings()
    try:
        if settings.inbox is None:
            raise ConfigError("no inbox folder is configured", hint="set CONTRACTSUM_INBOX (or `inbox` in config.toml)")
        if not settings.inbox.is_dir():
            raise ConfigError(f"the inbox {settings.inbox} is not a folder", hint="create it or fix CONTRACTSUM_INBOX")
        batch = nightly_batch_name(current_run.scheduled_start_time, settings.timezone)
        factory = connect(settings)
        files = find_new_files(factory, settings.inbox)
        with factory() as s:
            exists = repo.get_batch(s, batch) is not None
        if not files and not exists:
            logger.info("nothing new in %s", settings.inbox)
            return {"batch": None, "new_files": 0}
        state = summarize_batch(
            batch=batch,
            paths=[str(p) for p in files] or None,
            origin="nightly",
            deadline=settings.nightly_deadline,  # HH:MM: what the primary cannot finish by then moves on
            return_state=True,
        )
        result = state.result()  # raises when the batch run failed, failing this run with it
        # Completed with failed documents: the night's state message counts and lists them too.
        return Completed(message=state.message, data={**result, "new_files": len(files)})
    finally:
        release_engine_after_deployment_run()
