"""The Prefect flows, run for real against one temporary Prefect API and the session's engine.

Flow modules are imported inside the tests: Prefect reads its settings on first import, and the
``prefect_harness`` fixture sets them first.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import CORPUS, TINY_OVERRIDES, make_settings

NDA = CORPUS / "commonpaper-mutual-nda-v1.pdf"
SHORT_CONTRACT = (
    "MUTUAL NON-DISCLOSURE AGREEMENT\n"
    "This Agreement is made between Acme Corp and Beta LLC.\n"
    "Each party shall keep the other party's Confidential Information secret.\n"
    "This Agreement is governed by the laws of the State of Delaware.\n"
    "Either party may terminate this Agreement on thirty days written notice.\n"
)


@pytest.fixture
def flow_settings(tmp_path, tiny_model, engine, prefect_harness, monkeypatch):
    """Settings for flows on the tiny model, with the session engine as the process's engine."""
    import pipeline.engine.engine

    settings = make_settings(tmp_path / "home", **TINY_OVERRIDES, model=tiny_model, dtype="float32")
    # Restored after the test, so no other test inherits (or shuts down) the session engine.
    monkeypatch.setattr(pipeline.engine.engine, "_shared", None)
    pipeline.engine.engine.adopt_engine(engine, settings, tiny_model)
    return settings


@pytest.fixture
def plain_settings(tmp_path, tiny_model, prefect_harness):
    """Settings for flows that must fail before any engine work."""
    return make_settings(tmp_path / "home", **TINY_OVERRIDES, model=tiny_model, dtype="float32")


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _artifacts(flow_run_id) -> dict[str, object]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with _client() as c:
        found = c.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.type: a for a in found}


def _run(state):
    with _client() as c:
        return c.read_flow_run(state.state_details.flow_run_id)


def _task_runs(flow_run_id) -> dict[str, list]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client() as c:
        runs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    out: dict[str, list] = {}
    for r in runs:
        out.setdefault(r.name.rsplit("-", 1)[0], []).append(r)
    return out


# --- the batch flow ------------------------------------------------------------------------


@pytest.mark.engine
def test_batch_with_a_bad_file_summarizes_the_rest_and_completes_with_the_reason_on_the_run(flow_settings, tmp_path):
    from badfiles import encrypted_pdf

    from flows._prefect import local_run
    from flows.batch import failed_documents, summarize_batch

    bad = encrypted_pdf(tmp_path)
    with local_run(flow_settings):
        state = summarize_batch(batch="Q3 vendors", paths=[str(NDA), str(bad)], return_state=True)
        # The same batch, strict: its failed document now fails the run (nothing is redone).
        strict = summarize_batch(batch="Q3 vendors", strict=True, return_state=True)

    # An unreadable file is the document's problem, not the system's: the run completes, and says so.
    assert state.is_completed(), state.message
    assert state.message.startswith("1 of 2 documents summarized, 1 failed: "), state.message
    assert bad.name in state.message and "password" in state.message.lower(), state.message
    assert failed_documents(state.message) == 1
    result = state.result()
    assert result["summarized"] == 1 and [f["source"] for f in result["failures"]] == [bad.name]
    run = _run(state)
    assert run.name == "summarize Q3 vendors"
    assert {"batch:Q3 vendors", "origin:prefect"} <= set(run.tags)
    assert run.state.type.value == "COMPLETED" and run.state.message == state.message  # what the UI shows

    artifacts = _artifacts(run.id)
    table = artifacts["markdown"].data
    assert "**1 of 2 documents summarized, 1 failed**" in table
    nda_row = next(line for line in table.splitlines() if line.startswith(f"| {NDA.name}"))
    assert "| summarized |" in nda_row and "(p. " in nda_row, nda_row
    bad_row = next(line for line in table.splitlines() if line.startswith(f"| {bad.name}"))
    assert "| failed |" in bad_row and "password" in bad_row.lower(), bad_row
    assert "output tokens/s" in table
    assert artifacts["markdown"].key.startswith("batch-report-q3-vendors")
    assert float(artifacts["progress"].data) == 100.0

    exported = flow_settings.reports_dir / artifacts["markdown"].key.removeprefix("batch-report-") / "report.html"
    assert exported.is_file() and str(exported) in table
    doc_statuses = {
        d["source"]: d["status"] for d in json.loads(exported.with_suffix(".json").read_text())["documents"]
    }
    assert doc_statuses == {NDA.name: "summarized", bad.name: "failed"}
    # the artifact and the result list the clauses found, not every type the playbook asked
    (nda_doc,) = [
        d for d in json.loads(exported.with_suffix(".json").read_text())["documents"] if d["source"] == NDA.name
    ]
    found = [c["type"] for c in nda_doc["clauses"] if c["status"] == "found"]
    (nda_result,) = [r for r in result["documents"] if r["source"] == NDA.name]
    assert found and [c.split(" (")[0] for c in nda_result["clauses"]] == found, (found, nda_result)

    # the contract x clause matrix: files next to the report, and a table artifact (one row per contract)
    for fmt in ("csv", "xlsx", "html", "json"):
        assert (exported.parent / f"matrix.{fmt}").stat().st_size > 0
    matrix = artifacts["table"]
    assert matrix.key.startswith("batch-matrix-q3-vendors")
    rows = json.loads(matrix.data) if isinstance(matrix.data, str) else matrix.data
    (nda,) = rows  # the encrypted file never became a document
    assert nda["contract"] == NDA.name and len(nda) == 1 + 7  # the default playbook's seven types
    assert any(v.startswith("found") for k, v in nda.items() if k != "contract"), nda
    assert strict.is_failed(), strict.message
    assert bad.name in strict.message and "strict" in strict.message, strict.message


@pytest.mark.engine
def test_rerunning_a_batch_flow_resumes_it_and_redoes_no_finished_work(flow_settings, tmp_path):
    from flows._prefect import local_run
    from flows.batch import summarize_batch
    from pipeline.batch import Chunker, ingest_paths
    from storage import repo
    from storage.db import open_database

    # A run that stopped after ingest: documents stored and queued, nothing summarized.
    contract = tmp_path / "short-nda.txt"
    contract.write_text(SHORT_CONTRACT)
    factory = open_database(flow_settings.db_url)
    ingest_paths(
        factory,
        flow_settings,
        [contract],
        batch_name="resume-me",
        chunker=Chunker.for_model(flow_settings, flow_settings.model),
    )

    with local_run(flow_settings):
        first = summarize_batch(batch="resume-me", return_state=True)
        second = summarize_batch(batch="resume-me", return_state=True)

    assert first.is_completed(), first.message
    assert second.is_completed(), second.message
    assert first.result()["summarized"] == 1
    with factory() as s:
        counts = repo.counts(s)
    assert counts["summaries"] == 1 and counts["engine_runs"] == 1, counts
    assert "no engine work in this run" in _artifacts(_run(second).id)["markdown"].data


def test_batch_flow_without_files_for_an_unknown_batch_fails_with_the_reason(plain_settings):
    from flows._prefect import local_run
    from flows.batch import summarize_batch

    with local_run(plain_settings):
        state = summarize_batch(batch="never-made", return_state=True)
    assert state.is_failed()
    assert "no batch named 'never-made'" in state.message


def test_missing_model_fails_the_run_with_its_reason_and_is_not_retried(plain_settings, tmp_path):
    from flows._prefect import local_run
    from flows.batch import summarize_batch

    settings = plain_settings.model_copy(update={"model": tmp_path / "no-such-model"})
    with local_run(settings):
        state = summarize_batch(batch="b", paths=[str(NDA)], return_state=True)
    assert state.is_failed()
    assert "no-such-model has no config.json" in state.message
    ingest_runs = _task_runs(state.state_details.flow_run_id)["ingest"]
    assert [r.run_count for r in ingest_runs] == [1]


def test_unreachable_database_is_retried_then_fails_the_run_with_the_reason(plain_settings, monkeypatch):
    from flows import batch
    from flows._prefect import local_run

    # Port 9 (discard) refuses at once; the retry delays are cut so the test waits no minutes.
    monkeypatch.setattr(batch.connect, "retry_delay_seconds", [0, 0])
    settings = make_settings(
        plain_settings.home,
        **TINY_OVERRIDES,
        model=plain_settings.model,
        database_url="postgresql+psycopg://nobody:pw@127.0.0.1:9/none",
    )
    with local_run(settings):
        state = batch.summarize_batch(batch="b", paths=[str(NDA)], return_state=True)
    assert state.is_failed()
    assert "cannot reach the database" in state.message
    assert "nobody" not in state.message  # the URL (user, password) never reaches the UI
    connect_runs = _task_runs(state.state_details.flow_run_id)["connect"]
    assert [r.run_count for r in connect_runs] == [1 + batch.RETRIES]


def test_only_database_and_filesystem_faults_count_as_transient():
    from sqlalchemy.exc import OperationalError

    from flows.batch import is_transient
    from pipeline.errors import ConfigError, EngineError, IngestError, StorageError

    def chained(outer: BaseException, inner: BaseException, hide: bool) -> BaseException:
        try:
            try:
                raise inner
            except BaseException:
                if hide:
                    raise outer from None
                raise outer from inner
        except BaseException as exc:
            return exc

    db_down = OperationalError("select 1", {}, ConnectionRefusedError("refused"))
    transient = [
        db_down,
        OSError(28, "No space left on device"),
        chained(StorageError("cannot reach the database"), db_down, hide=True),
    ]
    permanent = [
        IngestError("x.pdf", "encrypted"),
        ConfigError("bad settings"),
        chained(EngineError("vLLM could not start"), OSError("no such file"), hide=False),
        ValueError("a bug"),
    ]
    assert all(is_transient(e) for e in transient)
    assert not any(is_transient(e) for e in permanent)


def test_every_task_retries_only_through_the_transient_check():
    from prefect import Task

    from flows import batch, nightly

    # Every task the flow modules define, found rather than listed, so a new one is checked too.
    tasks = [
        t for m in (batch, nightly) for t in vars(m).values() if isinstance(t, Task) and t.__module__ == m.__name__
    ]
    names = {t.name for t in tasks}
    assert {"connect", "ingest", "summarize", "report", "find-new-files"} <= names, names
    for t in tasks:
        assert t.retries == batch.RETRIES and t.retry_condition_fn is batch.retry_if_transient, t.name
        assert t.cache_policy is batch.NO_CACHE, t.name


def test_report_table_escapes_hostile_file_names_and_text():
    from flows.batch import BatchOutcome

    report = {
        "documents": [
            {
                "source": "evil|<script>x</script>.pdf",
                "status": "failed",
                "pages": None,
                "clauses": [],
                "error": "bad\n| injected | row |",
            },
        ]
    }
    md = BatchOutcome.from_report("b", report, None, None, Path("/r/report.html"), None).markdown()
    row = md.splitlines()[6]
    assert "<script>" not in md
    assert len(re.findall(r"(?<!\\)\|", row)) == 6 and "\\|" in row, row  # 5 cells, nothing injected


# Markdown and HTML metacharacters, entities, strikethrough, links, images and a fake table row.
HOSTILE = "x|<b>bold</b> **s** _e_ `c` ~~gone~~ &lt;i&gt; &amp; #h ![im](http:x) [ln](http:x) <script>alert(1)</script>"
SAFE_TAGS = {"h1", "p", "strong", "table", "thead", "tbody", "tr", "th", "td", "ul", "li", "code"}


def _rendered(markdown: str) -> dict:
    """The artifact as the UI shows it: CommonMark plus GitHub tables and strikethrough, raw HTML
    allowed, then parsed back into its tags, heading, table rows (cell texts) and list items."""
    from html.parser import HTMLParser

    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(markdown)
    out: dict = {"tags": set(), "h1": "", "rows": [], "items": []}

    class Reader(HTMLParser):
        text: list[str] | None = None

        def handle_starttag(self, tag, attrs):
            out["tags"].add(tag)
            if tag == "tr":
                out["rows"].append([])
            if tag in ("h1", "th", "td", "li"):
                self.text = []

        def handle_endtag(self, tag):
            if tag in ("h1", "th", "td", "li") and self.text is not None:
                joined = "".join(self.text).strip()
                if tag == "h1":
                    out["h1"] = joined
                elif tag == "li":
                    out["items"].append(joined)
                else:
                    out["rows"][-1].append(joined)
                self.text = None

        def handle_data(self, data):
            if self.text is not None:
                self.text.append(data)

    Reader(convert_charrefs=True).feed(html)
    return out


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_hostile_batch_and_file_names_show_verbatim_in_the_real_report_artifact(plain_settings, tmp_path):
    from flows._prefect import local_run
    from flows.batch import summarize_batch

    bad = tmp_path / f"{HOSTILE.replace('/', '')}.txt"  # empty: it fails ingest, so no engine is needed
    bad.write_bytes(b"")
    batch = f"Q4 {HOSTILE}"
    with local_run(plain_settings):
        state = summarize_batch(batch=batch, paths=[str(bad)], return_state=True)
    assert state.is_completed() and bad.name in state.message, state.message  # an unreadable file: Completed, named
    artifact = _artifacts(_run(state).id)["markdown"]
    page = _rendered(artifact.data)
    assert page["tags"] <= SAFE_TAGS, page["tags"] - SAFE_TAGS
    assert page["h1"] == f"Batch {batch}"
    header, *rows = page["rows"]
    assert len(header) == 5 and len(rows) == 1, page["rows"]
    (row,) = rows
    assert len(row) == 5 and row[0] == bad.name and row[1] == "failed" and "empty" in row[4], row
    description = _rendered(artifact.description)
    assert description["tags"] <= SAFE_TAGS, description["tags"] - SAFE_TAGS


def test_hostile_clause_names_and_engine_error_show_verbatim_in_the_report_artifact():
    from flows.batch import BatchOutcome

    clause = f"termination {HOSTILE}"
    error = f"CUDA error {HOSTILE}\n| fake | row | injected | here | now |\n"
    report = {
        "documents": [
            {
                "source": "a.pdf",
                "status": "summarized",
                "pages": 3,
                "error": None,
                "clauses": [{"type": clause, "citations": [{"page": 2}]}, {"type": "governing_law", "citations": []}],
            },
            {"source": "b.pdf", "status": "pending", "pages": 1, "error": None, "clauses": []},
        ]
    }
    md = BatchOutcome.from_report("b", report, None, None, Path("/r/report.html"), error).markdown()
    page = _rendered(md)
    assert page["tags"] <= SAFE_TAGS, page["tags"] - SAFE_TAGS
    header, *rows = page["rows"]
    assert [len(r) for r in rows] == [5, 5], page["rows"]  # the fake row stayed inside its cell
    assert rows[0][3] == f"{_flat(clause)} (p. 2); governing_law"
    assert rows[1][4] == "not summarized yet (the engine failed)"
    assert f"Engine failure: {_flat(error)} — rerun the flow to resume" in page["items"], page["items"]


# --- nightly -------------------------------------------------------------------------------


def test_nightly_batch_is_named_for_the_scheduled_night_in_the_schedule_timezone():
    from flows.nightly import nightly_batch_name
    from pipeline.errors import ConfigError

    late = datetime(2025, 3, 1, 23, 30, tzinfo=UTC)
    assert nightly_batch_name(late, "UTC") == "nightly-2025-03-01"
    assert nightly_batch_name(late, "Europe/Berlin") == "nightly-2025-03-02"
    with pytest.raises(ConfigError):
        nightly_batch_name(late, "Mars/Olympus")


def test_inbox_files_whose_content_is_stored_are_not_new(tmp_path):
    from flows.nightly import new_inbox_files
    from pipeline.batch import ingest_paths
    from storage.db import open_database

    settings = make_settings(tmp_path / "home")
    factory = open_database(settings.db_url)
    ingest_paths(factory, settings, [NDA], batch_name="earlier")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(NDA, inbox / "renamed-copy.pdf")
    (inbox / "new.txt").write_text(SHORT_CONTRACT)
    (inbox / "notes.docx").write_bytes(b"not a supported type")

    assert [p.name for p in new_inbox_files(factory, inbox)] == ["new.txt"]


@pytest.mark.engine
def test_nightly_summarizes_new_inbox_files_once_and_a_rerun_resumes_the_same_batch(flow_settings, tmp_path):
    from flows._prefect import local_run
    from flows.nightly import nightly
    from storage import repo
    from storage.db import open_database

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "short-nda.txt").write_text(SHORT_CONTRACT)
    settings = flow_settings.model_copy(update={"inbox": inbox, "timezone": "Europe/Berlin"})

    with local_run(settings):
        first = nightly(return_state=True)
        again = nightly(return_state=True)

    assert first.is_completed(), first.message
    result = first.result()
    assert result["new_files"] == 1 and result["summarized"] == 1
    assert result["batch"].startswith("nightly-20")
    assert _run(first).name == result["batch"]
    assert again.is_completed() and again.result()["new_files"] == 0
    factory = open_database(settings.db_url)
    with factory() as s:
        assert [b["name"] for b in repo.batches_overview(s)] == [result["batch"]]
        assert repo.counts(s)["engine_runs"] == 1


def test_nightly_without_an_inbox_fails_with_the_reason(plain_settings):
    from flows._prefect import local_run
    from flows.nightly import nightly

    with local_run(plain_settings):
        state = nightly(return_state=True)
    assert state.is_failed() and "no inbox folder is configured" in state.message


# --- deployments, environment, CLI ---------------------------------------------------------


def test_deployments_schedule_nightly_in_the_configured_cron_and_timezone(tmp_path):
    from flows.serve import BATCH_DEPLOYMENT, NIGHTLY_DEPLOYMENT, deployments
    from pipeline.errors import ConfigError

    settings = make_settings(tmp_path / "home", nightly_cron="30 1 * * 1-5", timezone="Europe/Berlin")
    by_name = {f"{d.flow_name}/{d.name}": d for d in deployments(settings)}
    assert set(by_name) == {BATCH_DEPLOYMENT, NIGHTLY_DEPLOYMENT}
    (sched,) = by_name[NIGHTLY_DEPLOYMENT].schedules
    assert (sched.schedule.cron, sched.schedule.timezone) == ("30 1 * * 1-5", "Europe/Berlin")
    assert not by_name[BATCH_DEPLOYMENT].schedules
    assert by_name[BATCH_DEPLOYMENT].entrypoint == "flows.batch.summarize_batch"

    with pytest.raises(ConfigError, match="invalid nightly schedule"):
        deployments(make_settings(tmp_path / "home", timezone="Nowhere/Special"))


def test_deploy_registers_both_deployments_on_a_work_pool_for_workers(plain_settings):
    from flows.serve import BATCH_DEPLOYMENT, NIGHTLY_DEPLOYMENT, deploy_to_pool
    from pipeline.settings import REPO_ROOT

    settings = plain_settings.model_copy(update={"timezone": "America/New_York"})
    deploy_to_pool(settings, "gpu-nodes")
    with _client() as c:
        assert c.read_work_pool("gpu-nodes").type == "process"
        batch_dep = c.read_deployment_by_name(BATCH_DEPLOYMENT)
        nightly_dep = c.read_deployment_by_name(NIGHTLY_DEPLOYMENT)
    assert batch_dep.work_pool_name == nightly_dep.work_pool_name == "gpu-nodes"
    assert nightly_dep.schedules[0].schedule.timezone == "America/New_York"
    assert batch_dep.entrypoint == "flows/batch.py:summarize_batch"
    assert str(REPO_ROOT) in json.dumps(batch_dep.pull_steps)  # where workers load the code from


def test_prefect_environment_is_offline_loopback_and_under_contractsum_home(tmp_path):
    from flows._prefect import prefect_environment

    env = prefect_environment(tmp_path, environ={})
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["DO_NOT_TRACK"] == "1"
    assert int(env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]) >= 120
    assert env["PREFECT_SERVER_API_HOST"] == "127.0.0.1"
    assert env["PREFECT_HOME"] == str(tmp_path / "prefect")
    kept = prefect_environment(tmp_path, environ={"PREFECT_HOME": "/elsewhere", "DO_NOT_TRACK": "1"})
    assert "PREFECT_HOME" not in kept and "DO_NOT_TRACK" not in kept


@pytest.mark.engine
def test_submit_exits_3_listing_failed_documents_1_with_strict_and_its_timing_matches_status(
    flow_settings, tmp_path, monkeypatch
):
    from badfiles import encrypted_pdf
    from typer.testing import CliRunner

    import pipeline.engine.engine
    from flows._prefect import OFFLINE_DEFAULTS
    from pipeline.cli.main import app

    for key, value in OFFLINE_DEFAULTS.items():  # set here so the command's defaults leave no trace
        monkeypatch.setenv(key, value)
    # The command stops the process's engine when it ends; here that is the session's engine.
    monkeypatch.setattr(pipeline.engine.engine, "release_shared_engine", lambda: None)
    env = {
        "CONTRACTSUM_HOME": str(flow_settings.home),
        "CONTRACTSUM_MODEL": str(flow_settings.model),
        "CONTRACTSUM_DTYPE": "float32",
    }
    env.update({f"CONTRACTSUM_{k.upper()}": str(v) for k, v in TINY_OVERRIDES.items()})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    good = tmp_path / "short-nda.txt"
    good.write_text(SHORT_CONTRACT)
    bad = encrypted_pdf(tmp_path)
    runner = CliRunner()

    result = runner.invoke(app, ["submit", str(good), str(bad), "--name", "cli-batch", "--json"])
    assert result.exit_code == 3, result.output
    out = json.loads(result.stdout)
    assert out["mode"] == "in-process" and out["batch"] == "cli-batch" and out["flow_run_name"] == "summarize cli-batch"
    assert out["state"] == "COMPLETED" and out["exit_code"] == 3 and out["failed_documents"] == 1
    assert bad.name in out["message"] and [f["source"] for f in out["failures"]] == [bad.name]
    assert out["url"].endswith(f"/runs/flow-run/{out['flow_run_id']}")  # the test's Prefect API answers

    # The timing line's numbers are the run's stored records, as `status` shows them.
    timing = out["timing"]
    status = json.loads(runner.invoke(app, ["status", "--batch", "cli-batch", "--json"]).stdout)
    (batch,) = status["batches"]
    assert (timing["contracts"], timing["pages"]) == (batch["documents"], batch["pages"]) == (1, 1)
    (engine_run,) = [r for r in status["engine_runs"] if r["id"] == timing["engine_run"]["id"]]
    assert (
        timing["engine_run"] == engine_run and engine_run["prompts"] >= 1 and engine_run["output_tokens_per_second"] > 0
    )
    assert timing["wall_seconds"] >= engine_run["wall_seconds"]
    from pipeline.cli.flows import timing_line

    line = timing_line(timing)
    assert line.startswith("timing: 1 contracts, 1 pages, ") and f"{engine_run['prompts']} prompts, " in line, line

    strict = runner.invoke(app, ["submit", str(good), str(bad), "--name", "cli-batch", "--strict"])
    assert strict.exit_code == 1, strict.output
    assert "failed" in strict.stdout and bad.name in strict.stdout and "strict" in strict.stdout, strict.stdout
    assert "timing:" not in strict.stdout


def test_submit_of_only_unreadable_files_completes_with_exit_3_and_needs_no_engine(
    plain_settings, tmp_path, monkeypatch
):
    from badfiles import empty_file
    from typer.testing import CliRunner

    import pipeline.engine.engine
    from flows._prefect import OFFLINE_DEFAULTS
    from pipeline.cli.main import app

    for key, value in OFFLINE_DEFAULTS.items():  # set here so the command's defaults leave no trace
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(pipeline.engine.engine, "_shared", None)  # the command releases the process's engine
    monkeypatch.setenv("CONTRACTSUM_MODEL", str(plain_settings.model))
    bad = empty_file(tmp_path)
    result = CliRunner().invoke(app, ["submit", str(bad), "--name", "cli-batch"])

    assert result.exit_code == 3, result.output
    assert "completed with 1 failed document(s)" in result.stdout and bad.name in result.stdout
    assert "no engine work" in result.stdout


def test_compare_with_publishes_what_a_configuration_change_moved(flow_settings, tmp_path):
    """`submit --compare-with ID`: after a configuration change the batch flow redoes the batch and
    publishes the comparison with the old configuration as a report artifact (and beside the report)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows._prefect import local_run
    from flows.batch import slug, summarize_batch
    from pipeline.reports.selection import current_config_id
    from pipeline.review.playbooks import playbook_for

    contract = tmp_path / "short-nda.txt"
    contract.write_text(SHORT_CONTRACT)
    with local_run(flow_settings):
        first = summarize_batch(batch="cmp", paths=[str(contract)], return_state=True)
    assert first.is_completed(), first.message
    old = current_config_id(flow_settings, playbook_for(flow_settings))
    changed = flow_settings.model_copy(update={"summary_max_chars": 61})  # another output schema
    new = current_config_id(changed, playbook_for(changed))
    assert old and new and old != new
    with local_run(changed):
        second = summarize_batch(batch="cmp", compare_with=old[:8], return_state=True)
    assert second.is_completed(), second.message
    assert second.result()["summarized"] == 1
    with _client() as c:
        found = c.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[_run(second).id]))
        )
    (art,) = [a for a in found if a.key == f"batch-compare-{slug('cmp')}"]
    assert f"# Compare {old} (A) with {new} (B)" in art.data and "1 document(s) compared" in art.data
    assert "limits.summary\\_max\\_chars: 60 \u2192 61" in art.data
    written = changed.reports_dir / slug("cmp") / "compare.md"
    assert written.read_text() == art.data
