"""Two `summarize` processes on one PostgreSQL database: disjoint work, no duplicates."""

from __future__ import annotations

import pytest
from conftest import CORPUS, drop_pg_database, make_pg_database
from faultkit import env_for, run, start
from sqlalchemy import func, select

from storage import repo
from storage.db import make_engine, open_database, upgrade
from storage.models import EngineRun, Job, Summary

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def test_two_workers_on_postgres_split_the_queue_without_doing_any_job_twice(tmp_path, tiny_model, pg_admin):
    url = make_pg_database(pg_admin)
    try:
        upgrade(make_engine(url))
        # trust authentication ignores the password; it is there to prove it is never printed
        secret_url = url.replace("postgresql+psycopg://postgres@", "postgresql+psycopg://postgres:Sw0rdfish-secret@")
        env = env_for(
            tmp_path / "home",
            tiny_model,
            CONTRACTSUM_DATABASE_URL=secret_url,
            # medium answers and small waves: both workers are still busy when the second arrives
            CONTRACTSUM_SUMMARY_MAX_CHARS="1500",
            CONTRACTSUM_FINDING_MAX_CHARS="600",
            CONTRACTSUM_MAX_OUTPUT_TOKENS="2048",
            CONTRACTSUM_MAX_WAVE_PROMPTS="3",
        )
        assert run(["ingest", str(CORPUS), "--batch", "two"], env).returncode == 0
        a = start(["summarize", "--json"], env)
        b = start(["summarize", "--json"], env)
        out_a, err_a = a.communicate(timeout=1200)
        out_b, err_b = b.communicate(timeout=1200)
        assert a.returncode == 0, err_a[-2000:]
        assert b.returncode == 0, err_b[-2000:]
        assert "Sw0rdfish-secret" not in out_a + err_a + out_b + err_b
        factory = open_database(url)
        with factory() as s:
            jobs = s.scalar(select(func.count()).select_from(Job))
            by_run = dict(s.execute(select(Job.engine_run_id, func.count()).group_by(Job.engine_run_id)).all())
            prompts = dict(s.execute(select(EngineRun.id, EngineRun.prompts)).all())
            summaries = s.scalar(select(func.count()).select_from(Summary))
            docs = len(repo.documents(s))
            states = repo.job_counts(s)
        generated = sum(prompts.values())
        print(
            f"jobs={jobs} done per worker={by_run} prompts generated per worker={prompts} summaries={summaries}/{docs}"
        )
        assert states == {"done": jobs}
        assert summaries == docs
        assert len(prompts) == 2 and all(n > 0 for n in by_run.values()) and len(by_run) == 2, (
            "both workers must get work"
        )
        # Every generated prompt became exactly one finished job (no retries with this schema):
        # a job leased by both would have been generated twice.
        assert generated == jobs
    finally:
        drop_pg_database(pg_admin, url)
