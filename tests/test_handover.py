"""The Prefect hand-over between engine tiers, for real: the session's Prefect API, `contractsum
serve` in a subprocess serving the fallback tier's deployment, PostgreSQL shared by both
processes. The batch runs in-process on the primary tier (the session engine); its overflow
becomes a linked flow run of `summarize-tier/fallback`, which starts its own engine in the
served run's process (the one engine start this module adds).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import (
    REPO,
    TINY_OVERRIDES,
    drop_pg_database,
    make_pg_database,
    make_settings,
    start_session,
    stop_session,
)

BIN = Path(sys.executable).parent
TIERS = {"primary": {"work_pool": "primary-pool"}, "fallback": {"work_pool": "fallback-pool"}}
CONTRACTS = [
    (
        f"contract-{i}.txt",
        f"MASTER SERVICES AGREEMENT {i}\n"
        f"This Agreement is made between Vendor {i} Inc. and Buyer {i} LLC.\n"
        "Either party may terminate this Agreement on thirty days written notice.\n"
        "This Agreement is governed by the laws of the State of New York.\n"
        f"Fees are payable within {30 + i} days of invoice.\n",
    )
    for i in range(4)
]


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


# --- cheap: names, pools, deadlines, CLI validation ------------------------------------------


def test_each_fallback_tier_gets_a_deployment_served_and_deployed_on_its_own_pool(tmp_path, prefect_harness):
    from flows.serve import BATCH_DEPLOYMENT, NIGHTLY_DEPLOYMENT, deploy_to_pool, deployments

    tiers = {**TIERS, "spare": {"work_pool": "spare-pool", "deployment": "summarize-tier/spare-night"}}
    settings = make_settings(tmp_path / "home", tiers=tiers)
    by_name = {f"{d.flow_name}/{d.name}": d for d in deployments(settings)}
    assert set(by_name) == {
        BATCH_DEPLOYMENT,
        NIGHTLY_DEPLOYMENT,
        "summarize-tier/fallback",
        "summarize-tier/spare-night",
    }
    assert by_name["summarize-tier/fallback"].entrypoint == "flows.handover.summarize_tier"
    assert by_name["summarize-tier/fallback"].parameters == {"tier": "fallback"}

    ids = deploy_to_pool(settings, "batch-nodes")
    with _client() as c:
        try:
            pools = {
                name: c.read_deployment_by_name(name).work_pool_name
                for name in (BATCH_DEPLOYMENT, "summarize-tier/fallback", "summarize-tier/spare-night")
            }
            assert c.read_work_pool("fallback-pool").type == "process"
        finally:
            for dep_id in ids:  # later tests of the session must not find them
                c.delete_deployment(dep_id)
    assert pools == {
        BATCH_DEPLOYMENT: "batch-nodes",
        "summarize-tier/fallback": "fallback-pool",
        "summarize-tier/spare-night": "spare-pool",
    }


def test_a_tier_deployment_of_another_flow_is_refused_naming_the_tier(tmp_path):
    from flows.serve import deployments
    from pipeline.errors import ConfigError

    settings = make_settings(
        tmp_path / "home", tiers={**TIERS, "fallback": {"work_pool": "p", "deployment": "summarize-batch/fallback"}}
    )
    with pytest.raises(
        ConfigError, match=r"tier 'fallback': deployment 'summarize-batch/fallback' is not summarize-tier/"
    ):
        deployments(settings)


def test_deadlines_read_as_the_next_time_of_day_or_an_iso_moment_in_the_timezone():
    from zoneinfo import ZoneInfo

    from pipeline.engine.tiers import parse_deadline
    from pipeline.errors import ConfigError

    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 12, 2, 23, 30, tzinfo=berlin)
    assert parse_deadline("06:00", "Europe/Berlin", now) == datetime(2026, 12, 3, 6, 0, tzinfo=berlin)
    assert parse_deadline("2026-12-03T05:00", "Europe/Berlin") == datetime(2026, 12, 3, 5, 0, tzinfo=berlin)
    assert parse_deadline("2026-12-03T05:00+00:00", "Europe/Berlin").utcoffset() == timedelta(0)
    for bad in ("25:00", "6am", "2026-12-03"):
        with pytest.raises(ConfigError, match="deadline"):
            parse_deadline(bad, "Europe/Berlin")


def test_submit_refuses_an_unknown_tier_and_a_bad_deadline_as_usage_errors(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pipeline.cli.main import app

    monkeypatch.setenv("CONTRACTSUM_TIERS", json.dumps(TIERS))
    contract = tmp_path / "c.txt"
    contract.write_text(CONTRACTS[0][1])
    runner = CliRunner()
    unknown = runner.invoke(app, ["submit", str(contract), "--tier", "huge"])
    assert unknown.exit_code == 2, unknown.output
    text = " ".join(unknown.output.split())
    assert "no tier named 'huge'" in text and "primary, fallback" in text, text
    bad = runner.invoke(app, ["submit", str(contract), "--deadline", "6 in the morning"])
    assert bad.exit_code == 2, bad.output
    assert "deadline '6 in the morning'" in " ".join(bad.output.split()), bad.output


# --- for real: the overflow as a linked flow run of the fallback's deployment ------------------


@pytest.fixture
def pg_url(pg_admin):
    from sqlalchemy.orm import close_all_sessions

    from storage.db import make_engine, upgrade

    url = make_pg_database(pg_admin)
    upgrade(make_engine(url))
    try:
        yield url
    finally:
        close_all_sessions()
        drop_pg_database(pg_admin, url)


@pytest.fixture
def served_fallback(tmp_path, tiny_model, pg_url, prefect_harness):
    """`contractsum serve` in its own process, against the session's Prefect API and the shared
    PostgreSQL database, with the same settings as the test's in-process batch run."""
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    assert api, "the Prefect test harness sets an API URL"
    settings_env = {
        "CONTRACTSUM_MODEL": str(tiny_model),
        "CONTRACTSUM_DTYPE": "float32",
        "CONTRACTSUM_DATABASE_URL": pg_url,
        "CONTRACTSUM_TIERS": json.dumps(TIERS),
        "CONTRACTSUM_MAX_WAVE_PROMPTS": "1",
        "CONTRACTSUM_CPU_KVCACHE_SPACE_GIB": "2",
        **{f"CONTRACTSUM_{k.upper()}": str(v) for k, v in TINY_OVERRIDES.items()},
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTRACTSUM_", "PREFECT_"))}
    env.update(
        settings_env,
        CONTRACTSUM_HOME=str(tmp_path / "serve-home"),
        PREFECT_API_URL=api,
        PREFECT_HOME=str(tmp_path / "serve-prefect"),
        PREFECT_RUNNER_POLL_FREQUENCY="2",  # the handed-over run is picked up within 2 s
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PYTHONPATH=str(REPO),
        VLLM_NO_USAGE_STATS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    log = tmp_path / "serve.log"
    proc = start_session([str(BIN / "contractsum"), "serve"], env, log, cwd=REPO)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            with _client() as c:
                try:
                    dep = c.read_deployment_by_name("summarize-tier/fallback")
                    if dep.last_polled and datetime.now(UTC) - dep.last_polled < timedelta(seconds=30):
                        break
                except Exception:
                    pass
            assert time.monotonic() < deadline, f"serve never polled its deployments:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        yield log
    finally:
        stop_session(proc)
        with _client() as c:  # the session's other flow tests must not see a served batch deployment
            for name in ("summarize-batch/summarize-batch", "nightly/nightly", "summarize-tier/fallback"):
                try:
                    c.delete_deployment(c.read_deployment_by_name(name).id)
                except Exception:
                    pass


@pytest.mark.engine
@pytest.mark.slow
def test_a_deadline_the_primary_cannot_meet_hands_the_overflow_to_a_linked_run_of_the_fallback_deployment(
    tmp_path, tiny_model, engine, pg_url, served_fallback, monkeypatch
):
    import pipeline.engine.engine
    from flows._prefect import local_run
    from flows.batch import failed_documents, summarize_batch
    from pipeline.engine.routing import tier_config_id
    from pipeline.engine.tiers import tier
    from storage import repo
    from storage.db import open_database
    from storage.models import Configuration, Job, Summary

    settings = make_settings(
        tmp_path / "home",
        **TINY_OVERRIDES,
        model=tiny_model,
        dtype="float32",
        database_url=pg_url,
        tiers=TIERS,
        max_wave_prompts=1,  # one document per wave: the deadline is checked between them
        cpu_kvcache_space_gib=2,
    )
    monkeypatch.setattr(pipeline.engine.engine, "_shared", None)
    pipeline.engine.engine.adopt_engine(engine, settings, tiny_model)  # the primary: the session engine
    files = []
    for name, text in CONTRACTS:
        (tmp_path / name).write_text(text)
        files.append(str(tmp_path / name))
    # Already due: after the first wave no queue can finish in time, so every document not yet
    # started is handed over, while the primary finishes the one it has.
    due = datetime.now(UTC).isoformat()
    with local_run(settings):
        state = summarize_batch(batch="handed", paths=files, deadline=due, return_state=True)
    log = served_fallback.read_text()[-4000:]
    assert state.is_completed(), f"{state.message}\nserve log:\n{log}"
    out = state.result()
    assert out["by_tier"].get("primary", 0) >= 1 and out["by_tier"].get("fallback", 0) >= 1, out
    assert sum(out["by_tier"].values()) == len(CONTRACTS) and out["summarized"] == len(CONTRACTS), out
    # Completed, and saying so: the counts first (as failed_documents reads them), then the fallback.
    assert state.message.startswith(f"{len(CONTRACTS)} of {len(CONTRACTS)} documents summarized, 0 failed"), state
    assert failed_documents(state.message) == 0
    assert "fallback tier used: " in state.message and "handed from primary to fallback" in state.message
    assert f"{out['by_tier']['fallback']} by fallback" in state.message, state.message

    # The overflow was a flow run of the fallback deployment, linked to the batch's run, and completed.
    (child_id,) = out["handed_over_runs"]["fallback"]
    with _client() as c:
        parent = c.read_flow_run(state.state_details.flow_run_id)
        child = c.read_flow_run(child_id)
        dep = c.read_deployment_by_name("summarize-tier/fallback")
        link = c.read_task_run(child.parent_task_run_id) if child.parent_task_run_id else None
    assert child.deployment_id == dep.id and child.state.is_completed(), (child.state, log)
    assert link is not None and link.flow_run_id == parent.id, "the fallback's run is not a subflow of the batch's"
    assert child.parameters["tier"] == "fallback" and child.parameters["parent_flow_run_id"] == str(parent.id)
    assert child.state.message.startswith(f"{out['by_tier']['fallback']} of {out['by_tier']['fallback']} documents")

    # Every document: exactly one result, made by one tier; no document worked by both tiers.
    primary_cid = tier_config_id(settings, tier(settings, "primary"))
    fallback_cid = tier_config_id(settings, tier(settings, "fallback"))
    factory = open_database(pg_url)
    with factory() as s:
        batch = repo.get_batch(s, "handed")
        assert batch is not None
        docs = [d.id for d in repo.documents(s, batch_id=batch.id)]
        summaries = s.query(Summary).filter(Summary.document_id.in_(docs)).all()
        tiers_of_config = {c.id: c.tier for c in s.query(Configuration).all()}
        done = {
            (j.document_id, j.config_id)
            for j in s.query(Job).filter(Job.document_id.in_(docs), Job.state == "done").all()
        }
    assert len(docs) == len(CONTRACTS)
    assert sorted(x.document_id for x in summaries) == sorted(docs), "each document exactly one result"
    by = {x.document_id: tiers_of_config[x.config_id] for x in summaries}
    assert {t: list(by.values()).count(t) for t in ("primary", "fallback")} == {
        "primary": out["by_tier"]["primary"],
        "fallback": out["by_tier"]["fallback"],
    }
    assert tiers_of_config[primary_cid] == "primary" and tiers_of_config[fallback_cid] == "fallback"
    both = {d for d, cid in done if cid == primary_cid} & {d for d, cid in done if cid == fallback_cid}
    assert not both, f"documents with work done under both tiers: {both}"
    assert {d for d, _ in done} == set(docs)
