"""stdout belongs to our own output: libraries (vLLM, Prefect, pypdf, transformers) log to stderr,
and a ``--json`` run writes exactly one JSON document to stdout. Used by the CLI and ``bench/``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

# Only defaults: a value already in the environment wins. vLLM logs to stdout unless told.
LIBRARY_DEFAULTS: dict[str, str] = {
    "VLLM_LOGGING_STREAM": "ext://sys.stderr",
    "VLLM_LOGGING_LEVEL": "WARNING",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

# multiprocessing's resource tracker warns at exit ("There appear to be N leaked shared_memory /
# semaphore objects to clean up at shutdown") about what vLLM's engine processes had not released
# when they were stopped, and releases it itself right then: noise for a user, never a leak.
# Engine.shutdown stops the engine cleanly first; this covers runs where that cannot happen (a dead
# engine, a process killed past its grace). Only warnings whose text starts "resource_tracker".
RESOURCE_TRACKER_NOISE = "ignore:resource_tracker:UserWarning"

_document: TextIO | None = None


def quiet_libraries() -> None:
    """Offline, private, and library logging on stderr; call before vLLM is imported."""
    for key, value in LIBRARY_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # The tracker is a separate process started later: it reads this from the environment.
    filters = [f for f in os.environ.get("PYTHONWARNINGS", "").split(",") if f]
    if RESOURCE_TRACKER_NOISE not in filters:
        os.environ["PYTHONWARNINGS"] = ",".join([*filters, RESOURCE_TRACKER_NOISE])


def reserve_stdout() -> None:
    """From now on everything anyone writes to stdout goes to stderr — Python's ``sys.stdout``,
    file descriptor 1 (C code) and every child process started later (vLLM's engine) — except
    :func:`write_json`, which writes to the real stdout. For ``--json`` runs."""
    global _document
    if _document is not None:
        return
    sys.stdout.flush()
    try:
        real_fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test runner's buffer)
        _document = sys.stdout
        sys.stdout = sys.stderr
        return
    _document = os.fdopen(os.dup(real_fd), "w", encoding="utf-8", closefd=True)
    sys.stderr.flush()
    os.dup2(sys.stderr.fileno(), real_fd)
    sys.stdout = sys.stderr


def write_json(obj: Any) -> None:
    """``obj`` as one JSON document on stdout (the real one when :func:`reserve_stdout` ran)."""
    out = _document if _document is not None else sys.stdout
    out.write(json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n")
    out.flush()


def json_requested(argv: list[str]) -> bool:
    """``--json`` among the options (before a ``--`` that ends them)."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in options
