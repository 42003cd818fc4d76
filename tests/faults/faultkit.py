"""Running contractsum as real processes for fault injection."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-m", "pipeline.cli.main"]

# Long answers keep waves busy for tens of seconds, so a kill or an outage lands inside one.
LONG = dict(
    CONTRACTSUM_SUMMARY_MAX_CHARS="3000", CONTRACTSUM_FINDING_MAX_CHARS="1500", CONTRACTSUM_MAX_OUTPUT_TOKENS="4096"
)
SHORT = dict(
    CONTRACTSUM_SUMMARY_MAX_CHARS="60", CONTRACTSUM_FINDING_MAX_CHARS="40", CONTRACTSUM_MAX_OUTPUT_TOKENS="512"
)


def env_for(home: Path, model: Path, **extra: str) -> dict[str, str]:
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


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(args: list[str], env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, *, timeout: float, proc: subprocess.Popen | None = None, every: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(every)
    return False
