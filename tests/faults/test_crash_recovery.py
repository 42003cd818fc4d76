"""SIGKILL at 20+ random points (ingest, mid-engine, between result and commit): after a rerun
every document has exactly one summary; nothing is lost, nothing duplicated."""

from __future__ import annotations

import random
import signal
import threading
import time

import psutil
import pytest
from conftest import CORPUS
from faultkit import SHORT, env_for, run, start, wait_for
from sqlalchemy import func, select

from pipeline.review.schema import CLAUSE_TYPES
from storage import repo
from storage.db import open_database
from storage.models import Chunk, Citation, Clause, Document, Page, Summary

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def _counts(factory):
    with factory() as s:
        return repo.counts(s), repo.job_counts(s)


def _tree(proc) -> list[psutil.Process]:
    """The process and everything below it now (vLLM's EngineCore, its workers, extractors)."""
    try:
        root = psutil.Process(proc.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _sigkill(proc, stats: dict[str, int]) -> None:
    """SIGKILL the CLI alone, as the OOM killer would; afterwards no process it had started may
    be left (the reaper's job: vLLM's engine processes outlive their parent otherwise)."""
    tree = _tree(proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    _assert_gone(tree, stats)


def _assert_gone(tree: list[psutil.Process], stats: dict[str, int]) -> None:
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, f"left running after the kill: {[(p.pid, p.name()) for p in alive]}"
    stats["trees"] += len(tree)


def _kill_after(seconds: float, args: list[str], env: dict[str, str], stats: dict[str, int]) -> None:
    """Run ``contractsum ARGS`` and SIGKILL it after ``seconds`` unless it finished first."""
    proc = start(args, env)
    time.sleep(seconds)
    stats["runs"] += 1
    if proc.poll() is None:
        _sigkill(proc, stats)
        stats["kills"] += 1
    proc.communicate()


def test_sigkill_at_random_points_then_rerun_loses_and_duplicates_nothing(tmp_path, tiny_model, manifest):
    rng = random.Random(20261127)
    home = tmp_path / "home"
    db = f"sqlite:///{home / 'contractsum.db'}"
    stats = {"runs": 0, "kills": 0, "trees": 0}

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
            select(Chunk.document_id, Chunk.plan, Chunk.ordinal)
            .group_by(Chunk.document_id, Chunk.plan, Chunk.ordinal)
            .having(func.count() > 1)
        ).all()
        assert dup_chunks == []

    # 2. summarize, killed mid-engine at random moments and just before a result commits.
    kills_mid_engine = 0
    for i in range(4):
        if i % 2 == 0:
            # dies by its own hand right before the first result's transaction commits
            proc = start(["summarize"], {**env, "CONTRACTSUM_FAULT_INJECTION": "before-commit"})
            # Read its pipes meanwhile so they never fill; orphans would hold them open for ever.
            reader = threading.Thread(target=proc.communicate, daemon=True)
            reader.start()
            seen: set[psutil.Process] = set()
            while proc.poll() is None:  # every process it starts, up to the moment it kills itself
                seen.update(_tree(proc))
                time.sleep(0.2)
            _assert_gone(list(seen), stats)
            reader.join(timeout=60)
        else:
            runs_before = _counts(factory)[0]["engine_runs"]
            # Answers stored by an earlier run would let this one finish without its engine (every
            # document here is one chunk): without reuse, the kill lands while the engine works.
            proc = start(["summarize"], {**env, "CONTRACTSUM_REUSE_COMPLETIONS": "false"})
            assert wait_for(
                lambda before=runs_before: _counts(factory)[0]["engine_runs"] > before, timeout=600, proc=proc
            ), proc.communicate()[1][-2000:]
            time.sleep(rng.uniform(0.3, 3.0))  # a wave of short answers takes a few seconds
            if proc.poll() is None:
                engine_procs = len(_tree(proc)) - 1
                _sigkill(proc, stats)
                kills_mid_engine += 1
                assert engine_procs >= 1, "the kill must land while the engine's processes run"
        stats["runs"] += 1
        if i % 2:
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
        # Clauses and citations have no unique constraint: each summary's rows must be its stored
        # output, each clause and each cited sentence exactly once (a replayed insert adds rows).
        expected_clauses = expected_citations = 0
        for summary in s.scalars(select(Summary)):
            want = [(c["type"], c["finding"]) for c in summary.output["clauses"]]
            rows = repo.clauses_of(s, summary.id)
            clauses = [c for c in rows if c.status == "found"]
            assert [(c.type, c.finding) for c in clauses] == want, summary.document_id
            # every other type the playbook asked is one not_found row (asked, absent), once
            absent = sorted(c.type for c in rows if c.status == "not_found")
            assert absent == sorted(set(CLAUSE_TYPES) - {t for t, _ in want}), (summary.document_id, absent)
            cites = repo.citations_of(s, summary.id)
            for c, out in zip(clauses, summary.output["clauses"], strict=True):
                ordinals = [int(sid[1:]) for sid in dict.fromkeys(out["citations"])]
                assert [x.sentence_ordinal for x in cites if x.clause_id == c.id] == ordinals, (
                    summary.document_id,
                    c.type,
                )
            assert {x.clause_id for x in cites} <= {c.id for c in clauses}
            expected_clauses += len(rows)
            assert len(rows) == len(CLAUSE_TYPES), summary.document_id
            expected_citations += len(cites)
        clause_rows = s.scalar(select(func.count()).select_from(Clause))
        citation_rows = s.scalar(select(func.count()).select_from(Citation))
    print(
        f"runs={stats['runs']} kills={stats['kills']} (mid-engine {kills_mid_engine}) lost={lost} duplicated={duplicated} "
        f"jobs={jobs} clauses={clause_rows} citations={citation_rows} processes checked after kills={stats['trees']}"
    )
    assert stats["kills"] >= 20
    assert docs == n_docs + 1 and lost == 0 and duplicated == 0
    assert set(jobs) == {"done"}
    assert expected_citations > 0 and clause_rows == expected_clauses and citation_rows == expected_citations
    assert pairs and all(p.text[c.char_start : c.char_end] == c.text for c, p in pairs)
