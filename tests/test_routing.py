"""Routing a batch over engine tiers (issue 14), in process, with real engines: a primary that
cannot start, a primary killed twice mid-run, a deadline the primary cannot meet; the hand-over
claim under concurrency on PostgreSQL; every result says its tier, nothing lost, nothing done twice.
(The Prefect hand-over as a linked flow run: tests/test_handover.py.)"""

from __future__ import annotations

import shutil
import signal
import threading
from datetime import UTC, datetime, timedelta

from conftest import drop_pg_database, ingested, make_pg_database
from sqlalchemy import select

from pipeline.engine.routing import overflow, summarize_routed
from storage import repo
from storage.db import open_database, transaction
from storage.models import Configuration, Job, Summary

CLAUSES = [
    "This Agreement is governed by the laws of the State of Delaware.",
    "Either party may terminate this Agreement on thirty days written notice.",
    "Each party shall keep the other party's Confidential Information secret.",
    "Fees are payable within thirty days of the invoice date.",
]


def _contracts(folder, n: int = 4) -> list:
    """Short text contracts: one chunk each, so one wave of one prompt finishes one document."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        body = f"Services Agreement number {i + 1}.\n\n" + "\n".join(CLAUSES[j % 4] for j in range(i, i + 3)) + "\n"
        path = folder / f"contract-{i + 1}.txt"
        path.write_text(body)
        paths.append(path)
    return paths


def _setup(tmp_path, primary_model, fallback_model, db_url=None, **overrides):
    tiers = {
        "primary": {"work_pool": "gpu-tp", "model": str(primary_model)},
        "fallback": {"work_pool": "gpu-small", "model": str(fallback_model)},
    }
    files = _contracts(tmp_path / "in")
    # ingest plans chunks with the fallback's tokenizer; both tiny models share it
    overrides = {"tiers": tiers, "max_wave_prompts": 1, **overrides}
    settings, factory, _ = ingested(tmp_path, fallback_model, files, db_url=db_url, batch="night", **overrides)
    return settings, factory


def _results(factory) -> dict[int, list[str]]:
    """Per document, the tiers of its stored results."""
    out: dict[int, list[str]] = {}
    with factory() as s:
        for summary, tier in s.execute(select(Summary, Configuration.tier).join(Configuration)):
            out.setdefault(summary.document_id, []).append(tier)
    return out


def _assert_each_document_once_and_no_chunk_twice(factory, routed) -> dict[int, str]:
    results = _results(factory)
    with factory() as s:
        docs = [d.id for d in repo.documents(s)]
        assert docs and sorted(results) == sorted(docs), "every document of the batch has a result"
        assert all(len(t) == 1 for t in results.values()), results  # exactly once
        done = {}
        for job, tier in s.execute(
            select(Job, Configuration.tier).join(Configuration, Configuration.id == Job.config_id)
        ):
            if job.state == "done":
                done.setdefault((job.document_id, job.chunk_id), set()).add(tier)
        assert all(len(t) == 1 for t in done.values()), done  # no chunk summarized by both tiers
    assert sorted(routed.summarized) == sorted(docs)
    return {d: t[0] for d, t in results.items()}


def test_a_primary_that_cannot_start_hands_the_batch_to_the_fallback_and_says_so(tmp_path, tiny_model, engine):
    from pipeline.reports.report import report_for

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])  # a checkpoint vLLM cannot load
    settings, factory = _setup(tmp_path, broken, tiny_model)
    routed = summarize_routed(
        factory, settings, batch="night", engine_for=lambda t: engine if t.name == "fallback" else None
    )
    first, second = routed.runs
    assert first.tier == "primary" and first.summarized == [] and "could not start" in first.reason
    assert second.tier == "fallback" and sorted(second.summarized) == sorted(first.handed_over)
    tiers = _assert_each_document_once_and_no_chunk_twice(factory, routed)
    assert set(tiers.values()) == {"fallback"}
    assert routed.fallback_used and "handed from primary to fallback" in routed.message()
    report = report_for(factory, settings, batch="night")
    assert {d["configuration"]["state"] for d in report["documents"]} == {"fallback"}
    assert report["results"]["by_tier"] == {"fallback": len(tiers)} and report["results"]["fallback"] == len(tiers)
    from pipeline.reports.export import render
    from pipeline.reports.portfolio import build_matrix
    from pipeline.reports.selection import selection_for
    from pipeline.review.playbooks import playbook_for

    assert "made by the fallback tier fallback" in render(report, "md")
    with factory() as s:
        book = playbook_for(settings)
        m = build_matrix(s, batch="night", playbook=book, selection=selection_for(s, settings, book))
    assert m.by_tier() == {"fallback": len(tiers)} and {r.config_state for r in m.rows} == {"fallback"}


class _Killed:
    """A real engine on the primary's model whose EngineCore is SIGKILLed before wave ``kill_at``."""

    def __init__(self, model, kill_at: int) -> None:
        from pipeline.engine.engine import Engine

        self.engine = Engine(model, max_model_len=2048, dtype="float32", max_num_seqs=8, cpu_kvcache_space_gib=1)
        self.kill_at, self.waves = kill_at, 0

    def generate(self, requests, **kw):
        self.waves += 1
        if self.waves == self.kill_at:
            for p in self.engine.processes:
                p.send_signal(signal.SIGKILL)
        return self.engine.generate(requests, **kw)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def test_a_primary_killed_twice_mid_run_leaves_the_rest_to_the_fallback_nothing_lost_or_done_twice(
    tmp_path, tiny_model, engine
):
    from pipeline.demo_models import build_tiny

    primary_model = build_tiny(tmp_path / "models", seed=1)
    settings, factory = _setup(tmp_path, primary_model, tiny_model, fallback_after_engine_deaths=2)
    started: list[_Killed] = []

    def engine_for(t):
        if t.name == "fallback":
            return engine
        started.append(_Killed(primary_model, kill_at=2 if not started else 1))  # 1st: one wave, then dies
        return started[-1]

    try:
        routed = summarize_routed(factory, settings, batch="night", engine_for=engine_for)
    finally:
        for k in started:
            k.engine.shutdown()
    first, second = routed.runs
    assert len(started) == 2 and first.engine_deaths == 2 and "died 2 times" in first.reason
    assert started[0].waves == 2  # mid-run: the first engine answered a wave before it was killed
    assert second.tier == "fallback" and first.handed_over
    tiers = _assert_each_document_once_and_no_chunk_twice(factory, routed)
    assert sorted(d for d, t in tiers.items() if t == "primary") == first.summarized
    assert (
        sorted(d for d, t in tiers.items() if t == "fallback") == sorted(second.summarized) == sorted(first.handed_over)
    )


def test_a_deadline_the_primary_cannot_meet_splits_the_batch_between_the_tiers(tmp_path, tiny_model, engine):
    settings, factory = _setup(tmp_path, tiny_model, tiny_model)
    deadline = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
    checks = []

    def now():  # asked after each wave: an hour left after the first, then the deadline has passed
        checks.append(1)
        return deadline - timedelta(hours=1) if len(checks) == 1 else deadline + timedelta(seconds=1)

    routed = summarize_routed(factory, settings, batch="night", engine_for=lambda t: engine, deadline=deadline, now=now)
    first, second = routed.runs
    assert first.tier == "primary" and "deadline" in first.reason
    # one prompt per wave: the primary did one document in its first wave, the one it had started
    # by the second check stays with it, and the rest (not started) went to the fallback
    assert 1 <= len(first.summarized) <= 2 and len(first.handed_over) == 4 - len(first.summarized)
    tiers = _assert_each_document_once_and_no_chunk_twice(factory, routed)
    assert {t for t in tiers.values()} == {"primary", "fallback"}
    assert sorted(d for d, t in tiers.items() if t == "fallback") == sorted(first.handed_over)


def test_the_overflow_is_just_enough_of_the_documents_furthest_from_done():
    work = {
        1: {"queued": 1, "done": 2, "leased": 0, "tokens": 100},  # started: stays
        2: {"queued": 2, "done": 0, "leased": 0, "tokens": 200},
        3: {"queued": 2, "done": 0, "leased": 0, "tokens": 200},
        4: {"queued": 1, "done": 0, "leased": 1, "tokens": 100},  # in progress: stays
    }
    kw = dict(seconds_per_token=0.01, output_tokens_per_job=50)
    # costs: 1 -> 1.5 s, 2 -> 3 s, 3 -> 3 s, 4 -> 2 s; total 9.5 s
    assert overflow(work, seconds_left=10, **kw) == []
    assert overflow(work, seconds_left=7, **kw) == [3]  # the last queued goes first
    assert overflow(work, seconds_left=4, **kw) == [2, 3]
    assert overflow(work, seconds_left=0, **kw) == [2, 3]  # never what has started
    assert overflow(work, seconds_left=7, priority={2: -1}, **kw) == [2]  # lowest priority first


def test_concurrent_tiers_on_postgresql_never_claim_the_same_job(tmp_path, pg_admin):
    """A worker leasing the primary's jobs while the routing hands documents over: each document
    ends with exactly one owner."""
    from conftest import result_config

    url = make_pg_database(pg_admin)
    try:
        from storage.db import make_engine, upgrade

        upgrade(make_engine(url))
        factory = open_database(url)
        primary = result_config()
        with transaction(factory) as s:
            repo.ensure_configuration(s, id=primary.id, review_key="v1", tier="primary", label="p", fields={})
            batch = repo.get_or_create_batch(s, "night")
            ids = []
            for i in range(40):
                doc = repo.add_document(
                    s,
                    batch,
                    sha256=f"{i:064d}",
                    source=f"c{i}.txt",
                    source_path=f"/c{i}.txt",
                    kind="txt",
                    size_bytes=1,
                    status="ok",
                    pages=[(1, "x.", True)],
                    sentences=[(1, 1, 0, 2, "x.")],
                )
                ids.append(doc.id)
            repo.enqueue(
                s,
                [
                    {
                        "kind": "map",
                        "document_id": d,
                        "plan": "p",
                        "level": 0,
                        "ordinal": o,
                        "prompt_version": "v1",
                        "config_id": primary.id,
                    }
                    for d in ids
                    for o in range(2)
                ],
            )
        leased: list[int] = []
        handed: list[int] = []
        go = threading.Barrier(2)

        def worker():
            go.wait()
            while True:
                with transaction(factory) as s:
                    jobs = repo.lease(s, owner="primary-worker", lease_seconds=600, config_id=primary.id, limit=1)
                    if not jobs:
                        return
                    leased.append(jobs[0].document_id)

        def router():
            go.wait()
            for i in range(0, 40, 4):
                with transaction(factory) as s:
                    handed.extend(repo.hand_over(s, ids[i : i + 4], config_id=primary.id, to_tier="fallback"))

        threads = [threading.Thread(target=worker), threading.Thread(target=router)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert handed and set(leased), "both sides must have claimed something for the check to mean anything"
        assert not set(handed) & set(leased)  # no document both leased and handed over
        with factory() as s:
            for d in ids:
                states = {j.state for j in s.scalars(select(Job).where(Job.document_id == d))}
                assert not ({"handed_over", "leased"} <= states), (d, states)  # one owner per document
        factory.kw["bind"].dispose()
    finally:
        drop_pg_database(pg_admin, url)


def test_upgrade_fallback_gives_the_fallbacks_documents_back_to_the_primary(tmp_path, tiny_model, engine):
    settings, factory = _setup(tmp_path, tiny_model, tiny_model)
    routed = summarize_routed(factory, settings, batch="night", tier_name="fallback", engine_for=lambda t: engine)
    assert [r.tier for r in routed.runs] == ["fallback"] and len(routed.summarized) == 4
    again = summarize_routed(factory, settings, batch="night", engine_for=lambda t: engine)
    assert again.summarized == []  # done for the night by the fallback: the primary has nothing to do
    up = summarize_routed(factory, settings, batch="night", engine_for=lambda t: engine, upgrade_fallback=True)
    assert len(up.summarized) == 4 and [r.tier for r in up.runs] == ["primary"]
    from pipeline.reports.report import report_for

    report = report_for(factory, settings, batch="night")
    assert {d["configuration"]["state"] for d in report["documents"]} == {"current"}
    assert sorted(t for ts in _results(factory).values() for t in ts) == ["fallback"] * 4 + ["primary"] * 4


def test_documents_handed_over_that_no_tier_finished_go_back_to_the_primary_on_a_rerun(tmp_path, tiny_model, engine):
    """A hand-over whose receiving run never ran (its flow run failed before starting): the rerun
    of the batch finishes those documents instead of leaving them handed over for good."""
    from pipeline.engine.routing import tier_config_id
    from pipeline.engine.tiers import tier

    settings, factory = _setup(tmp_path, tiny_model, tiny_model)
    first = summarize_routed(factory, settings, batch="night", engine_for=lambda t: engine, document_ids=[1])
    assert first.summarized == [1]
    from pipeline.batch import Chunker
    from pipeline.review.summarize import Summarizer

    cid = tier_config_id(settings, tier(settings, "primary"))
    runner = Summarizer(factory, settings, chunker=Chunker.for_model(settings, tiny_model, tier="primary"))
    runner.queue(batch="night")  # the primary's jobs for the other three, as a run queues them
    with transaction(factory) as s:
        assert sorted(repo.hand_over(s, [2, 3, 4], config_id=cid, to_tier="fallback")) == [2, 3, 4]
    again = summarize_routed(factory, settings, batch="night", engine_for=lambda t: engine)
    assert sorted(again.summarized) == [2, 3, 4] and [r.tier for r in again.runs] == ["primary"]
    assert _results(factory) == {d: ["primary"] for d in (1, 2, 3, 4)}
