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
    out = subprocess.run(
        [*CLI, "ingest", *map(str, files), "--batch", "b1", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr


def test_tp2_float32_engine_summarizes_with_citations_that_resolve(tmp_path, tiny_model):
    env = _env(
        tmp_path / "home",
        tiny_model,
        CONTRACTSUM_SUMMARY_MAX_CHARS="60",
        CONTRACTSUM_FINDING_MAX_CHARS="40",
        CONTRACTSUM_MAX_OUTPUT_TOKENS="512",
    )
    _ingest(env, [CORPUS / "commonpaper-mutual-nda-v1.pdf", CORPUS / "bonterms-cloud-terms-v1.pdf"])
    out = subprocess.run(
        [*CLI, "summarize", "--tp", "2", "--json"], env=env, capture_output=True, text=True, timeout=600
    )
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


def _tree(proc: subprocess.Popen) -> list[psutil.Process]:
    """The CLI and every process below it now: EngineCore, its TP workers, the reaper, helpers."""
    root = psutil.Process(proc.pid)
    return [root, *root.children(recursive=True)]


def _assert_none_left(tree: list[psutil.Process]) -> None:
    """None of the processes recorded before the fault may outlive the run (orphans are
    re-parented, so they are looked up by identity, not by parent)."""
    _, alive = psutil.wait_procs(tree, timeout=15)
    assert not alive, f"still running after the run ended: {[(p.pid, p.name()) for p in alive]}"


def _start_wave(env: dict[str, str], db: str, *args: str) -> subprocess.Popen:
    """``contractsum summarize ARGS``, returned once its first wave is running (jobs leased)."""
    proc = subprocess.Popen(
        [*CLI, "summarize", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    factory = open_database(db)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # the engine run row appears once the engine is up
        with factory() as s:
            if repo.counts(s)["engine_runs"]:
                break
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.5)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # jobs are leased once the wave's prompts are built
        with factory() as s:
            if repo.job_counts(s).get("leased", 0) > 0:
                break
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.5)
    else:
        pytest.fail("the wave must be running when the fault lands")
    time.sleep(3)  # inside the wave
    return proc


def _assert_jobs_given_back(db: str, reason: str) -> None:
    with open_database(db)() as s:
        counts = repo.job_counts(s)
        assert counts.get("leased", 0) == 0 and counts.get("queued", 0) > 0, counts
        assert repo.counts(s)["summaries"] == 0
        run = repo.engine_run(s, 1)
        assert run.status == "failed" and run.error and reason in run.error, run.error


def test_killed_vllm_worker_fails_the_run_within_the_watchdog_limit_and_requeues_jobs(tmp_path, tiny_model):
    limit = 60
    # Long answers keep the wave busy long enough to kill a worker in the middle of it.
    env = _env(
        tmp_path / "home",
        tiny_model,
        CONTRACTSUM_SUMMARY_MAX_CHARS="4000",
        CONTRACTSUM_FINDING_MAX_CHARS="2000",
        CONTRACTSUM_MAX_OUTPUT_TOKENS="4096",
        CONTRACTSUM_ENGINE_STALL_SECONDS=str(limit),
    )
    _ingest(env, sorted(CORPUS.glob("*.pdf")))
    db = f"sqlite:///{tmp_path / 'home' / 'contractsum.db'}"
    proc = _start_wave(env, db, "--tp", "2")
    tree: list[psutil.Process] = []
    try:
        tree = _tree(proc)
        worker = _vllm_worker(psutil.Process(proc.pid), "VLLM::Worker_TP1")
        assert worker is not None, "no TP1 worker found"
        assert sum(p.name().startswith("VLLM::") for p in tree) >= 3, [p.name() for p in tree]  # EngineCore, 2 workers
        worker.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = proc.communicate(timeout=limit + 60)
        elapsed = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"worker killed -> run ended in {elapsed:.1f} s (watchdog limit {limit} s); {len(tree)} processes checked")
    assert proc.returncode == 1, err[-3000:]
    assert elapsed < limit, f"took {elapsed:.1f} s"
    assert "engine process died" in err or "engine failed" in err
    assert "Traceback" not in err.split("error:")[-1]
    _assert_jobs_given_back(db, "engine")
    _assert_none_left(tree)


def test_dead_engine_fails_the_batch_run_and_submit_exits_1(tmp_path, tiny_model):
    """Unlike an unreadable file, a dead engine is the system failing: the run ends Failed."""
    import sqlite3
    from contextlib import closing

    home = tmp_path / "home"
    env = _env(
        home,
        tiny_model,
        CONTRACTSUM_SUMMARY_MAX_CHARS="4000",
        CONTRACTSUM_FINDING_MAX_CHARS="2000",
        CONTRACTSUM_MAX_OUTPUT_TOKENS="4096",
        CONTRACTSUM_ENGINE_STALL_SECONDS="60",
        PREFECT_HOME=str(tmp_path / "prefect"),
        # vLLM told to log to stdout, at INFO: --json must still be one JSON document there.
        VLLM_LOGGING_STREAM="ext://sys.stdout",
        VLLM_LOGGING_LEVEL="INFO",
    )
    env.pop("PREFECT_API_URL", None)
    files = [CORPUS / "commonpaper-mutual-nda-v1.pdf", CORPUS / "bonterms-cloud-terms-v1.pdf"]
    proc = subprocess.Popen(
        [*CLI, "submit", *map(str, files), "--name", "dies", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:  # the engine run row appears once the engine is up
            try:
                with closing(
                    sqlite3.connect(f"file:{home / 'contractsum.db'}?mode=ro", uri=True)
                ) as db:  # never creates it
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
    assert (
        "BatchFailed: the engine failed: " in result["message"] and "0 of 2 documents summarized" in result["message"]
    ), result["message"]


def test_stalled_engine_fails_the_run_after_the_stall_limit_and_requeues_jobs(tmp_path, tiny_model):
    """The other branch of the watchdog: every engine process alive, but no engine step for
    ``engine_stall_seconds`` (SIGSTOP freezes EngineCore, as a hung kernel or driver would)."""
    limit = 20
    env = _env(
        tmp_path / "home",
        tiny_model,
        CONTRACTSUM_SUMMARY_MAX_CHARS="4000",
        CONTRACTSUM_FINDING_MAX_CHARS="2000",
        CONTRACTSUM_MAX_OUTPUT_TOKENS="4096",
        CONTRACTSUM_ENGINE_STALL_SECONDS=str(limit),
    )
    _ingest(env, sorted(CORPUS.glob("*.pdf"))[:4])
    db = f"sqlite:///{tmp_path / 'home' / 'contractsum.db'}"
    proc = _start_wave(env, db)
    tree: list[psutil.Process] = []
    try:
        tree = _tree(proc)
        frozen = [p for p in tree if p.name().startswith("VLLM::")]
        assert frozen, [p.name() for p in tree]
        for p in frozen:
            p.suspend()
        stopped_at = time.monotonic()
        _, err = proc.communicate(timeout=limit + 90)
        elapsed = time.monotonic() - stopped_at
        print(f"engine frozen -> run ended in {elapsed:.1f} s (stall limit {limit} s)")
        assert proc.returncode == 1, err[-3000:]
        last = err.split("error:")[-1]
        assert "made no progress" in last and "died" not in last, err[-3000:]
        assert "Traceback" not in last
        assert limit - 1 <= elapsed < limit + 60, f"took {elapsed:.1f} s"
        _assert_jobs_given_back(db, "made no progress")
        _assert_none_left(tree)
    finally:  # never leave a frozen engine behind when something above failed
        if proc.poll() is None:
            proc.kill()
        for p in tree[1:]:
            try:
                p.kill()
            except psutil.Error:
                pass
