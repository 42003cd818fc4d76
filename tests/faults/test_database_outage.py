"""PostgreSQL stopped for ~20 s in the middle of a run: tenacity retries carry it through."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import CORPUS, drop_pg_database, make_pg_database
from faultkit import env_for, run, start, wait_for

from storage import repo
from storage.db import make_engine, open_database, upgrade

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _cluster() -> list[str]:
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[0]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]


def _pg(action: str) -> None:
    subprocess.run([*_cluster(), action, *(["-m", "fast"] if action == "stop" else [])], check=True, timeout=60)


def test_postgres_outage_mid_run_is_retried_and_the_run_completes(tmp_path, tiny_model, pg_admin):
    url = make_pg_database(pg_admin)
    try:
        upgrade(make_engine(url))
        env = env_for(
            tmp_path / "home", tiny_model, CONTRACTSUM_DATABASE_URL=url, CONTRACTSUM_DB_RETRY_SECONDS="120",
            CONTRACTSUM_SUMMARY_MAX_CHARS="1500", CONTRACTSUM_FINDING_MAX_CHARS="600", CONTRACTSUM_MAX_OUTPUT_TOKENS="2048",
            CONTRACTSUM_MAX_WAVE_PROMPTS="4",
        )
        assert run(["ingest", str(CORPUS), "--batch", "outage"], env).returncode == 0
        factory = open_database(url)

        def engine_running() -> bool:
            with factory() as s:
                return repo.counts(s)["engine_runs"] > 0

        proc = start(["summarize", "--json"], env)
        assert wait_for(engine_running, timeout=300, proc=proc), proc.communicate()[1][-2000:]
        factory.kw["bind"].dispose()
        time.sleep(2)
        stopped = time.monotonic()
        _pg("stop")
        try:
            time.sleep(20)
        finally:
            _pg("start")
        assert wait_for(lambda: subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode == 0, timeout=60)
        outage = time.monotonic() - stopped
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        with factory() as s:
            docs = len(repo.documents(s))
            summaries = repo.counts(s)["summaries"]
            states = repo.job_counts(s)
        print(f"outage {outage:.0f} s; summaries {summaries}/{docs}; jobs {states}")
        assert summaries == docs and set(states) == {"done"}
    finally:
        _pg("start") if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode else None
        drop_pg_database(pg_admin, url)
