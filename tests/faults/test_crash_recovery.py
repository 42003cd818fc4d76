"""SIGKILL at 20+ random points (ingest, mid-engine, between result and commit): after a rerun
every document has exactly one summary; nothing is lost, nothing duplicated."""

from __future__ import annotations

import random
import signal
import time

import pytest
from conftest import CORPUS
from faultkit import SHORT, env_for, run, start, wait_for
from sqlalchemy import func, select

from storage import repo
from storage.db import open_database
from storage.models import Chunk, Document, Page, Summary

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _counts(factory):
    with factory() as s:
        return repo.counts(s), repo.job_counts(s)


def _kill_after(seconds: float, args: list[str], env: dict[str, str], stats: dict[str, int]) -> None:
    """Run ``contractsum ARGS`` and SIGKILL it after ``seconds`` unless it finished first."""
    proc = start(args, env)
    time.sleep(seconds)
    stats["runs"] += 1
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        stats["kills"] += 1
    proc.communicate()


def test_sigkill_at_random_points_then_rerun_loses_and_duplicates_nothing(tmp_path, tiny_model, manifest):
    rng = random.Random(20261127)
    home = tmp_path / "home"
    db = f"sqlite:///{home / 'contractsum.db'}"
    stats = {"runs": 0, "kills": 0}

    # 1. ingest, killed at random moments (cheap: no engine), then finished by a clean run.
    env = env_for(home, tiny_model, **SHORT)
    # An ingest of the corpus takes a few seconds; a kill that comes after it finished is retried
    # (bounded), so the count of kills does not depend on how fast this machine is.
    for _ in range(40):
        if stats["kills"] >= 14:
            break
        _kill_after(rng.uniform(0.3, 4.0), ["ingest", str(CORPUS), "--batch", "crash"], env, stats)
    done = run(["ingest", str(CORPUS), "--batch", "crash", "--json"], env)
    stats["runs"] += 1
    assert done.returncode == 0, done.stderr[-2000:]
    factory = open_database(db)
    n_docs = len(manifest["contracts"])
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Document)) == n_docs
        for c in manifest["contracts"]:
            doc = repo.find_document(s, c["pdf_file"])
            assert doc.page_count == c["page_count"]
            assert s.scalar(select(func.count()).select_from(Page).where(Page.document_id == doc.id)) == c["page_count"]
        dup_chunks = s.execute(
            select(Chunk.document_id, Chunk.plan, Chunk.ordinal).group_by(Chunk.document_id, Chunk.plan, Chunk.ordinal).having(func.count() > 1)
        ).all()
        assert dup_chunks == []

    # 2. summarize, killed mid-engine at random moments and just before a result commits.
    kills_mid_engine = 0
    for i in range(4):
        if i % 2 == 0:
            # dies by its own hand right before the first result's transaction commits
            proc = start(["summarize"], {**env, "CONTRACTSUM_FAULT_INJECTION": "before-commit"})
        else:
            runs_before = _counts(factory)[0]["engine_runs"]
            proc = start(["summarize"], env)
            assert wait_for(lambda before=runs_before: _counts(factory)[0]["engine_runs"] > before, timeout=300, proc=proc), proc.communicate()[1][-2000:]
            time.sleep(rng.uniform(0.3, 3.0))  # a wave of short answers takes a few seconds
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills_mid_engine += 1
        stats["runs"] += 1
        proc.communicate(timeout=600)
        if proc.returncode == -signal.SIGKILL:
            stats["kills"] += 1
    # 3. a few kills at random absolute times (ingest of a new file, queueing, engine start).
    extra = tmp_path / "late"
    extra.mkdir()
    (extra / "late.txt").write_text("This Agreement may be terminated by either party. It is governed by Oregon law.")
    late_target = stats["kills"] + 3
    for _ in range(12):
        if stats["kills"] >= late_target:
            break
        _kill_after(rng.uniform(0.2, 2.0), ["ingest", str(extra), "--batch", "crash"], env, stats)
    assert run(["ingest", str(extra), "--batch", "crash"], env).returncode == 0

    final = run(["summarize", "--json"], env, timeout=1200)
    stats["runs"] += 1
    assert final.returncode == 0, final.stderr[-3000:]
    with factory() as s:
        docs = s.scalar(select(func.count()).select_from(Document))
        summaries = s.scalar(select(func.count()).select_from(Summary))
        distinct = s.scalar(select(func.count(func.distinct(Summary.document_id))))
        lost = docs - distinct
        duplicated = summaries - distinct
        jobs = repo.job_counts(s)
        pairs = repo.all_citations(s)
    print(f"runs={stats['runs']} kills={stats['kills']} (mid-engine {kills_mid_engine}) lost={lost} duplicated={duplicated} jobs={jobs}")
    assert stats["kills"] >= 20
    assert docs == n_docs + 1 and lost == 0 and duplicated == 0
    assert set(jobs) == {"done"}
    assert pairs and all(p.text[c.char_start : c.char_end] == c.text for c, p in pairs)
