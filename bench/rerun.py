"""Rerun cost after a configuration change: does a change re-ask only what it affects?

One batch of synthetic contracts (chunked small, so every contract has several chunks and a reduce),
the tiny model, in one run:

- (a) full run under prompt version v1: the baseline;
- (b) a reduce-only prompt change (v2: the map template identical, the reduce template reworded):
  map answers come back from stored completions, only reduce prompts go to the engine;
- (c) a model change (the tiny model rebuilt with another seed, its own engine): every prompt again;
- (d) the same configuration once more: nothing to do, no prompt, no engine.

Each prints prompts sent, prompts answered from storage and wall seconds, with its ratio to (a).

    python -m bench.rerun [--docs 50] [--chunk-budget 200] [--json]

vLLM spawns its engine process, so this must run as a script (``__main__`` guard).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import Row, cache_dir, emit, machine, settings_for, start, tiny_model
from pipeline.settings import REPO_ROOT

TINY_OVERRIDES = dict(min_clauses=2, summary_max_chars=60, finding_max_chars=40, max_output_tokens=512)
ENGINE_KW: dict[str, Any] = dict(
    max_model_len=32768, dtype="float32", max_num_seqs=64, stall_seconds=600, cpu_kvcache_space_gib=2
)


def prompt_variant(root: Path, **changed: tuple[str, str]) -> Path:
    """A copy of prompts/ under ``root`` with version v2 of each template: ``changed[kind] = (old,
    new)`` rewords that kind's text; the others are copied unchanged (they render the same prompts)."""
    out = Path(root) / "prompts"
    shutil.copytree(REPO_ROOT / "prompts", out)
    for kind in ("summarize", "reduce", "candidates"):
        body = (out / kind / "v1.toml").read_text().replace('version = "v1"', 'version = "v2"')
        if kind in changed:
            old, new = changed[kind]
            if old not in body:
                raise ValueError(f"prompts/{kind}/v1.toml has no {old!r}")
            body = body.replace(old, new)
        (out / kind / "v2.toml").write_text(body)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=50)
    ap.add_argument("--chunk-budget", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    start(args.json)

    from bench.synth import corpus
    from pipeline.batch import Chunker, ingest_paths
    from pipeline.demo_models import build_tiny
    from pipeline.engine.engine import Engine
    from pipeline.review.summarize import summarize
    from storage.db import open_database

    folder, pages = corpus(cache_dir() / "synth", args.docs, pages_min=2, pages_max=3, style="plain")
    files = sorted(folder.glob("*.pdf"))
    model = tiny_model()
    work = Path(tempfile.mkdtemp(prefix="contractsum-rerun-"))
    prompts = prompt_variant(work, reduce=("Merge them into one JSON answer", "Combine them into one JSON answer"))
    settings = settings_for(
        work / "home", model=model, prompts_dir=prompts, chunk_budget=args.chunk_budget, **TINY_OVERRIDES
    )
    factory = open_database(settings.db_url)
    ingest_paths(factory, settings, files, batch_name="bench", chunker=Chunker.for_model(settings, model))

    runs: dict[str, dict[str, Any]] = {}

    def timed(name: str, s, engine=None, engine_factory=None) -> None:
        t0 = time.perf_counter()
        report = summarize(factory, s, batch="bench", engine=engine, engine_factory=engine_factory)
        runs[name] = {
            "wall_seconds": time.perf_counter() - t0,
            "prompts": report.prompts,
            "reused": report.reused,
            "summarized": len(report.summarized),
            "failed": len(report.failed),
            "engine_started": report.engine_run_id is not None,
            "config_id": report.config_id,
        }

    engine = Engine(model, **ENGINE_KW)
    try:
        timed("full", settings, engine)
        timed("reduce_prompt_change", settings.model_copy(update={"prompt_version": "v2"}), engine)
    finally:
        engine.shutdown()
    other = build_tiny(cache_dir() / "models", seed=1)
    moved = settings.model_copy(update={"model": other, "prompt_version": "v2"})
    engine = Engine(other, **ENGINE_KW)
    try:
        timed("model_change", moved, engine)
    finally:
        engine.shutdown()

    def no_engine():
        raise RuntimeError("nothing changed: no engine may start")

    timed("nothing_changed", moved, engine_factory=no_engine)
    full = runs["full"]
    rows = []
    for name, r in runs.items():
        rows.append(
            Row(
                name=f"rerun {name}: prompts sent",
                ours=r["prompts"],
                baseline=full["prompts"],
                unit="prompts",
                ratio=r["prompts"] / full["prompts"] if full["prompts"] else None,
                note=f"{r['reused']} answered from stored completions, {r['summarized']} documents summarized",
            )
        )
        rows.append(
            Row(
                name=f"rerun {name}: wall",
                ours=r["wall_seconds"],
                baseline=full["wall_seconds"],
                unit="s",
                ratio=r["wall_seconds"] / full["wall_seconds"] if full["wall_seconds"] else None,
                note="engine start not included" if r["engine_started"] else "no engine started",
            )
        )
    emit(rows, {"machine": machine(), "documents": len(files), "pages": pages, "runs": runs}, as_json=args.json)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
