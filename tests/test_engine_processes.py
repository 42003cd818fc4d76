"""The engine in real subprocesses: tensor parallelism on the CPU, and the watchdog when a
vLLM worker dies (vLLM itself can hang there), and a batch run whose engine dies. Each test starts
its own engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import CORPUS

from storage import repo
from storage.db import open_database

pytestmark = [pytest.mark.engine, pytest.mark.slow]
CLI = [sys.executable, "-m", "pipeline.cli.main"]


def _env(home: Path, model: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTRACTSUM_")}
    env.update(
        CONTRACTSUM_HOME=str(home),
        CONTRACTSUM_MODEL=str(model),
        CONTRACTSUM_DTYPE="float32",
        CONTRACTSUM_MIN_CLAUSES="2",
        CONTRACTSUM_CPU_KVCACHE_SPACE_GIB="2",
        **extra,
    )
    return env


def _ingest(env, files) -> None:
    out = subprocess.run([*CLI, "ingest", *map(str, files), "--batch", "b1", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr


def test_tp2_float32_engine_summarizes_with_citations_that_resolve(tmp_path, tiny_model):
    env = _env(tmp_path / "home", tiny_model, CONTRACTSUM_SUMMARY_MAX_CHARS="60", CONTRACTSUM_FINDING_MAX_CHARS="40", CONTRACTSUM_MAX_OUTPUT_TOKENS="512")
    _ingest(env, [CORPUS / "commonpaper-mutual-nda-v1.pdf", CORPUS / "bonterms-cloud-terms-v1.pdf"])
    out = subprocess.run([*CLI, "summarize", "--tp", "2", "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)  # vLLM's logs must not pollute --json
    assert len(result["summarized"]) == 2 and not result["failed"]
    factory = open_database(f"sqlite:///{tmp_path / 'home' / 'contractsum.db'}")
    with factory() as s:
        run = repo.engine_run(s, result["engine_run_id"])
        assert run.tensor_parallel_size == 2 and run.dtype == "float32" and run.status == "finished"
        pairs = repo.all_citations(s)
        assert pairs
        assert all(page.text[c.char_start : c.char_end] == c.text for c, page in pairs)


def _vllm_worker(root: psutil.Process, name: str) -> psutil.Process | None:
    for p in root.children(recursive=True):
        try:
            if p.name().startswith(name) or name in " ".join(p.cmdline()[:1]):
                return p
        except psutil.Error:
            continue
    return None


def test_killed_vllm_worker_fails_the_run_within_the_watchdog_limit_and_requeues_jobs(tmp_path, tiny_model):
    limit = 60
    # Long answers keep the wave busy long enough to kill a worker in the middle of it.
    env = _env(
        tmp_path / "home", tiny_model, CONTRACTSUM_SUMMARY_MAX_CHARS="4000", CONTRACTSUM_FINDING_MAX_CHARS="2000",
        CONTRACTSUM_MAX_OUTPUT_TOKENS="4096", CONTRACTSUM_ENGINE_STALL_SECONDS=str(limit),
    )
    _ingest(env, sorted(CORPUS.glob("*.pdf")))
    db = f"sqlite:///{tmp_path / 'home' / 'contractsum.db'}"
    proc = subprocess.Popen([*CLI, "summarize", "--tp", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        factory = open_database(db)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # the engine run row appears once the engine is up
            with factory() as s:
                if repo.counts(s)["engine_runs"]:
                    break
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.5)
        time.sleep(3)  # inside the wave
        with factory() as s:
            assert repo.job_counts(s).get("leased", 0) > 0, "the wave must be running when the worker dies"
        worker = _vllm_worker(psutil.Process(proc.pid), "VLLM::Worker_TP1")
        assert worker is not None, "no TP1 worker found"
        worker.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = proc.communicate(timeout=limit + 60)
        elapsed = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"worker killed -> run ended in {elapsed:.1f} s (watchdog limit {limit} s)")
    assert proc.returncode == 1, err[-3000:]
    assert elapsed < limit, f"took {elapsed:.1f} s"
    assert "engine process died" in err or "engine failed" in err
    assert "Traceback" not in err.split("error:")[-1]
    with factory() as s:
        counts = repo.job_counts(s)
        assert counts.get("leased", 0) == 0 and counts.get("queued", 0) > 0, counts
        assert repo.counts(s)["summaries"] == 0
        run = repo.engine_run(s, 1)
        assert run.status == "failed" and run.error
    leftovers = [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("VLLM::") and p.ppid() == proc.pid]
    assert not leftovers


def test_dead_engine_fails_the_batch_run_and_submit_exits_1(tmp_path, tiny_model):
    """Unlike an unreadable file, a dead engine is the system failing: the run ends Failed."""
    import sqlite3
    from contextlib import closing

    home = tmp_path / "home"
    env = _env(
        home, tiny_model, CONTRACTSUM_SUMMARY_MAX_CHARS="4000", CONTRACTSUM_FINDING_MAX_CHARS="2000",
        CONTRACTSUM_MAX_OUTPUT_TOKENS="4096", CONTRACTSUM_ENGINE_STALL_SECONDS="60", PREFECT_HOME=str(tmp_path / "prefect"),
        # vLLM told to log to stdout, at INFO: --json must still be one JSON document there.
        VLLM_LOGGING_STREAM="ext://sys.stdout", VLLM_LOGGING_LEVEL="INFO",
    )
    env.pop("PREFECT_API_URL", None)
    files = [CORPUS / "commonpaper-mutual-nda-v1.pdf", CORPUS / "bonterms-cloud-terms-v1.pdf"]
    proc = subprocess.Popen(
        [*CLI, "submit", *map(str, files), "--name", "dies", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:  # the engine run row appears once the engine is up
            try:
                with closing(sqlite3.connect(f"file:{home / 'contractsum.db'}?mode=ro", uri=True)) as db:  # never creates it
                    if db.execute("select count(*) from engine_runs").fetchone()[0]:
                        break
            except sqlite3.Error:
                pass  # not created or migrated yet
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.5)
        core = _vllm_worker(psutil.Process(proc.pid), "VLLM::EngineCore")
        assert core is not None, "no EngineCore process found"
        core.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-3000:]
    result = json.loads(out)  # fails on any log line before or after the document
    assert "INFO" in err  # vLLM did log, to stderr
    assert result["state"] == "FAILED" and result["exit_code"] == 1, result
    assert "BatchFailed: the engine failed: " in result["message"] and "0 of 2 documents summarized" in result["message"], result["message"]
