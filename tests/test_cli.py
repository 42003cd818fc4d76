"""The CLI as a user meets it: ingest's JSON and exit codes on both databases, status, config."""

from __future__ import annotations

import json
import shutil

import badfiles
from conftest import CORPUS
from typer.testing import CliRunner

from pipeline.cli.main import app

runner = CliRunner()


def _run(*args: str, env: dict | None = None):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def test_ingest_of_the_examples_stores_every_contract_with_chunks_and_exits_0(tmp_path, tiny_model, db_url, manifest):
    from storage.db import make_engine, upgrade

    upgrade(make_engine(db_url))
    res = _run(
        "--database-url", db_url, "ingest", str(CORPUS), "--model", str(tiny_model), "--batch", "examples", "--json"
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    docs = data["documents"]
    assert len(docs) == len(manifest["contracts"])
    by_name = {d["source"]: d for d in docs}
    for c in manifest["contracts"]:
        d = by_name[c["pdf_file"]]
        assert d["status"] == "ok" and d["reason"] == ""
        assert d["pages"] == c["page_count"]
        assert len(d["sha256"]) == 64 and d["document_id"] > 0
        assert d["chunks"] >= 1
    assert set(docs[0]) >= {"source", "status", "reason", "pages", "sha256", "document_id"}

    again = _run("--database-url", db_url, "ingest", str(CORPUS), "--model", str(tiny_model), "--json")
    assert again.exit_code == 0
    assert {d["status"] for d in json.loads(again.output)["documents"]} == {"duplicate"}

    status = _run("--database-url", db_url, "status", "--json")
    totals = json.loads(status.output)["totals"]
    assert totals["documents"] == len(manifest["contracts"])
    assert totals["chunks"] >= totals["documents"] and totals["sentences"] > 1000
    assert db_url.split("@")[-1] not in status.output or "postgres" not in db_url


def test_bad_files_are_named_with_reasons_and_the_batch_goes_on_with_exit_1(tmp_path, tiny_model):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(CORPUS / "commonpaper-mutual-nda-v1.pdf", inbox / "good.pdf")
    badfiles.encrypted_pdf(inbox, "secret", name="locked.pdf")
    badfiles.truncated_pdf(inbox)
    badfiles.zip_renamed_pdf(inbox)
    badfiles.empty_file(inbox)
    badfiles.image_only_pdf(inbox)
    shutil.copy(CORPUS / "commonpaper-mutual-nda-v1.pdf", inbox / "z-copy-of-good.pdf")
    res = _run("ingest", str(inbox), "--model", str(tiny_model), "--json")
    assert res.exit_code == 1
    docs = {d["source"]: d for d in json.loads(res.output)["documents"]}
    assert docs["good.pdf"]["status"] == "ok"
    assert docs["z-copy-of-good.pdf"]["status"] == "duplicate" and "good.pdf" in docs["z-copy-of-good.pdf"]["reason"]
    assert docs["locked.pdf"]["status"] == "failed" and "password" in docs["locked.pdf"]["reason"]
    assert docs["truncated.pdf"]["status"] == "failed" and docs["truncated.pdf"]["reason"]
    assert docs["contract.pdf"]["status"] == "failed" and "not a PDF" in docs["contract.pdf"]["reason"]
    assert docs["empty.pdf"]["status"] == "failed" and "empty" in docs["empty.pdf"]["reason"]
    assert docs["scan.pdf"]["status"] == "needs_ocr" and "1" in docs["scan.pdf"]["reason"]

    unlocked = _run("ingest", str(inbox / "locked.pdf"), "--password", "secret", "--json")
    assert unlocked.exit_code == 0
    assert json.loads(unlocked.output)["documents"][0]["status"] == "ok"


def test_ingest_without_a_model_stores_pages_and_says_chunks_come_later(tmp_path):
    res = _run("ingest", str(CORPUS / "commonpaper-mutual-nda-v1.pdf"), "--json")
    assert res.exit_code == 0
    data = json.loads(res.output)
    assert data["documents"][0]["status"] == "ok" and "summarize" in data["chunking"]


def _one_error_line(res) -> str:
    """An expected failure: nothing on stdout, exactly one line on stderr, no traceback."""
    assert res.stdout == "", res.stdout
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def test_expected_failures_print_one_line_and_exit_1_at_run_time_or_2_for_usage():
    # Exit codes as documented (docs/operations.md): 1 when the work failed (here: the database),
    # 2 for usage errors (a setting that does not parse). Exceptions propagate, so a crash is red.
    res = runner.invoke(
        app, ["--database-url", "postgresql+psycopg://nobody:hunter2@127.0.0.1:1/x", "status"], catch_exceptions=False
    )
    assert res.exit_code == 1, res.output
    line = _one_error_line(res)
    assert "cannot reach the database" in line and "database_url" in line
    assert "hunter2" not in res.output and "nobody" not in res.output
    res = runner.invoke(app, ["ingest", "nope.pdf"], env={"CONTRACTSUM_MAX_PAGES": "zero"}, catch_exceptions=False)
    assert res.exit_code == 2, res.output
    line = _one_error_line(res)
    assert "invalid settings" in line and "max_pages" in line


def test_a_missing_file_is_recorded_as_failed_with_its_reason_and_exits_1(tmp_path):
    missing = runner.invoke(app, ["ingest", str(tmp_path / "nope.pdf"), "--json"], catch_exceptions=False)
    assert missing.exit_code == 1 and missing.stderr == "", missing.output
    (doc,) = json.loads(missing.stdout)["documents"]
    assert (doc["source"], doc["status"], doc["reason"]) == (
        str(tmp_path / "nope.pdf"),
        "failed",
        "no such file or folder",
    )


def test_config_masks_the_password_and_says_where_each_value_came_from(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("max_num_seqs = 7\ntensor_parallel_size = 2\n")
    res = runner.invoke(
        app,
        ["--config", str(cfg), "--database-url", "postgresql+psycopg://u:s3cret-pw@db.example/x", "config", "--json"],
        env={"CONTRACTSUM_TENSOR_PARALLEL_SIZE": "4"},
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert "s3cret-pw" not in res.output
    assert data["database_url"]["value"].startswith("postgresql+psycopg://u:***@")
    assert data["database_url"]["source"] == "cli"
    assert data["tensor_parallel_size"] == {"value": "4", "source": "env CONTRACTSUM_TENSOR_PARALLEL_SIZE"}
    assert data["max_num_seqs"]["value"] == "7" and data["max_num_seqs"]["source"].startswith("file")
    assert data["max_model_len"] == {"value": "32768", "source": "default"}


def test_config_file_with_unknown_key_is_a_usage_error(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("max_num_sqes = 7\n")
    res = runner.invoke(app, ["--config", str(cfg), "config"])
    assert res.exit_code == 2 and "max_num_sqes" in res.output


def test_parallel_ingest_gives_the_same_outcomes_as_serial(tmp_path, manifest):
    serial = _run("--home", str(tmp_path / "a"), "ingest", str(CORPUS), "--json")
    parallel = _run("--home", str(tmp_path / "b"), "ingest", str(CORPUS), "--workers", "2", "--json")
    assert serial.exit_code == parallel.exit_code == 0
    strip = lambda out: [(d["source"], d["status"], d["pages"], d["sha256"]) for d in json.loads(out)["documents"]]  # noqa: E731
    assert strip(serial.output) == strip(parallel.output) and len(strip(serial.output)) == len(manifest["contracts"])
