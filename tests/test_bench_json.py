"""Every benchmark's ``--json`` is exactly one JSON document on stdout, whatever the libraries
log: vLLM is even told to log to stdout, at INFO. The smallest sizes of each part, so these stay
quick; the numbers themselves are the benchmarks' business (docs/performance.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

HOSTILE_LOGGING = {"VLLM_LOGGING_STREAM": "ext://sys.stdout", "VLLM_LOGGING_LEVEL": "INFO"}


def _bench(tmp_path, *args: str, timeout: int = 600) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTRACTSUM_")}
    env.update(HOSTILE_LOGGING, CONTRACTSUM_BENCH_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", *args, "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    try:
        doc = json.loads(proc.stdout)  # fails on anything before or after the one document
    except json.JSONDecodeError as exc:
        pytest.fail(f"{' '.join(args)} --json: stdout is not one JSON document ({exc}):\n{proc.stdout[:2000]}")
    assert doc["rows"] and all({"name", "ours", "baseline"} <= set(r) for r in doc["rows"]), doc
    return doc, proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("bench.ingest", "--repeat", "1"),
        ("bench.ingest", "--chunking", "--repeat", "1"),
        ("bench.scale", "--sizes", "4", "--dbs", "sqlite", "--workers", "1"),
    ],
    ids=["ingest", "chunking", "scale"],
)
def test_quick_benchmark_json_is_one_document_on_stdout(tmp_path, args):
    _bench(tmp_path, *args)


@pytest.mark.engine
@pytest.mark.slow
def test_engine_benchmark_json_is_one_document_on_stdout_while_vllm_logs_at_info(tmp_path):
    doc, stderr = _bench(tmp_path, "bench.engine", "--docs", "1", "--repeat", "1", "--no-prefix-off")
    assert "INFO" in stderr, stderr[-2000:]  # vLLM did log (to stderr, where it was sent)
    assert doc["detail"]["machine"]["cores"] >= 1
