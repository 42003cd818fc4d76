"""Benchmarks: each part measures contractsum against a baseline in the same run.

``python -m bench.run`` runs them all and prints one table; see docs/performance.md.
Shared here: the result row, the table, machine facts, throw-away settings and the demo model.
"""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.settings import REPO_ROOT

CORPUS = REPO_ROOT / "examples" / "contracts"


@dataclass
class Row:
    """One line of the table: ``ours`` against ``baseline`` (same run), and the goal if there is one."""

    name: str
    ours: float
    baseline: float | None = None
    unit: str = ""
    ratio: float | None = None  # ours / baseline unless the part says otherwise
    goal: str = ""
    met: bool | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def format_table(rows: list[Row]) -> str:
    head = ("name", "ours", "baseline", "unit", "ratio", "goal", "met?")
    body = [
        (
            r.name,
            _fmt(r.ours),
            _fmt(r.baseline),
            r.unit,
            "-" if r.ratio is None else f"{r.ratio:.3f}",
            r.goal or "-",
            "-" if r.met is None else ("yes" if r.met else "NO"),
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    out = [line(head), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    notes = [f"  {r.name}: {r.note}" for r in rows if r.note]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)


def machine() -> dict[str, Any]:
    """Where the numbers come from: CPU model, cores, load, versions, date."""
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    import pypdf

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "pypdf": pypdf.__version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def cache_dir() -> Path:
    """Where synthetic corpora and the demo model are kept between runs."""
    root = Path(os.environ.get("CONTRACTSUM_BENCH_CACHE", Path(tempfile.gettempdir()) / "contractsum-bench"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def tiny_model() -> Path:
    """The tiny random-weight demo Llama (built once into the cache)."""
    from pipeline.demo_models import build_tiny

    return build_tiny(cache_dir() / "models", seed=0)


def settings_for(home: Path, **overrides: Any):
    """Settings isolated from the caller's CONTRACTSUM_* environment and config file."""
    from pipeline.settings import load_settings

    home.mkdir(parents=True, exist_ok=True)
    settings, _ = load_settings({"home": home, **overrides}, environ={"CONTRACTSUM_HOME": str(home)})
    return settings


def corpus_pdfs() -> list[Path]:
    files = sorted(CORPUS.glob("*.pdf"))
    if not files:
        raise SystemExit(f"no PDFs in {CORPUS}")
    return files


def start(as_json: bool) -> None:
    """First thing in a part's main(): library logging to stderr, and with ``--json`` everything
    but the one JSON document too (vLLM's engine process included)."""
    from pipeline.output import quiet_libraries, reserve_stdout

    quiet_libraries()
    if as_json:
        reserve_stdout()


def emit(rows: list[Row], detail: Any, *, as_json: bool) -> None:
    """A part's result on stdout: the table and its details, or one JSON object."""
    import json

    from pipeline.output import write_json

    if as_json:
        write_json({"rows": [r.as_dict() for r in rows], "detail": detail})
    else:
        print(format_table(rows))
        print(json.dumps(detail, indent=2, default=str))
