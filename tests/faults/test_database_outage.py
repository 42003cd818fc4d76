"""PostgreSQL stopped for ~20 s in the middle of a run: tenacity retries carry it through."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import CORPUS, drop_pg_database, make_pg_database
from faultkit import env_for, run, start, wait_for
from sqlalchemy import select

from storage import repo
from storage.db import make_engine, open_database, upgrade
from storage.models import EngineRun, Job, Summary

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
            tmp_path / "home",
            tiny_model,
            CONTRACTSUM_DATABASE_URL=url,
            CONTRACTSUM_DB_RETRY_SECONDS="300",
            CONTRACTSUM_SUMMARY_MAX_CHARS="1500",
            CONTRACTSUM_FINDING_MAX_CHARS="600",
            CONTRACTSUM_MAX_OUTPUT_TOKENS="2048",
            CONTRACTSUM_MAX_WAVE_PROMPTS="4",
        )
        assert run(["ingest", str(CORPUS), "--batch", "outage"], env).returncode == 0
        factory = open_database(url)

        def engine_running() -> bool:
            with factory() as s:
                return repo.counts(s)["engine_runs"] > 0

        proc = start(["summarize", "--json"], env)
        assert wait_for(engine_running, timeout=600, proc=proc), proc.communicate()[1][-2000:]
        time.sleep(2)
        # The outage must land inside the run: the process alive and work still queued or leased.
        with factory() as s:
            at_stop = repo.job_counts(s)
        factory.kw["bind"].dispose()
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert at_stop.get("queued", 0) + at_stop.get("leased", 0) > 0, at_stop
        # Read stderr while it runs: the outage lasts until the run has had to retry (a wave that
        # generates through 20 s of outage touches no database), at most 150 s.
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        retry = re.compile(r"^database unreachable \((\w+)\): retrying, attempt (\d+)$")
        stopped = time.monotonic()
        _pg("stop")
        try:
            time.sleep(20)
            wait_for(lambda: any(retry.match(line) for line in list(lines)), timeout=130, proc=proc)
            alive_through_outage = proc.poll() is None
        finally:
            _pg("start")
        assert wait_for(lambda: subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode == 0, timeout=60)
        outage = time.monotonic() - stopped
        proc.wait(timeout=900)
        reader.join(timeout=60)
        out, err = proc.stdout.read(), "".join(lines)
        assert alive_through_outage, err[-3000:]
        assert proc.returncode == 0, err[-3000:]
        retries = [m.groups() for line in lines if (m := retry.match(line))]
        result = json.loads(out)
        with factory() as s:
            docs = len(repo.documents(s))
            summaries = repo.counts(s)["summaries"]
            states = repo.job_counts(s)
            runs = s.scalars(select(EngineRun)).all()
            job_runs = set(s.scalars(select(Job.engine_run_id)))
            summary_runs = set(s.scalars(select(Summary.engine_run_id)))
        print(
            f"outage {outage:.0f} s; at the stop {at_stop}; {len(retries)} retries; summaries {summaries}/{docs}; jobs {states}"
        )
        assert summaries == docs and set(states) == {"done"}
        # One engine run did it all: the outage restarted nothing.
        assert [r.id for r in runs] == [result["engine_run_id"]] and runs[0].status == "finished"
        assert job_runs == summary_runs == {result["engine_run_id"]}
        assert retries, f"no unit of work was retried: {err[-3000:]}"
    finally:
        _pg("start") if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode else None
        drop_pg_database(pg_admin, url)
