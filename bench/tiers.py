"""Cost per quality of each engine tier: the same CUAD contracts reviewed on every configured tier in
one run, through ``contractsum eval cuad``'s machinery (ingest, review with the ``cuad`` playbook,
matrix from storage, CUAD presence scoring).

Per tier: engine-seconds per contract (the sum of the review's engine waves, start-up excluded),
GPU-seconds per contract (x the tier's TP size: what a TP group costs against replicas of a
smaller model), output tokens/s during the waves, and the quality figure = CUAD presence micro-F1.
Every other tier is compared with the primary: cost ratio, quality ratio, and F1 per GPU-second.

    python -m bench.tiers [--config FILE] [--demo] [--limit N] [--mode gated] [--json]

Tiers come from the settings (``--config`` or the usual CONTRACTSUM_* / <home>/config.toml); with
``--demo`` (or none configured) the CPU demo: primary = SmolLM2-135M-Instruct, fallback = the tiny
random model. Each tier gets its own database, so none inherits another's stored reviews; one
engine at a time. vLLM spawns its engine process, so this must run as a script.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import Row, cache_dir, emit, machine, settings_for, start
from pipeline.settings import REPO_ROOT

CUAD_DIR = REPO_ROOT / "examples" / "cuad"
# The demo's output settings: SmolLM2 loops without a repetition penalty (docs/quality.md).
DEMO_OVERRIDES: dict[str, Any] = dict(repetition_penalty=1.1, cpu_kvcache_space_gib=2, dtype="float32")


def demo_settings(home: Path):
    """Two CPU tiers on the demo models: SmolLM2 primary, the tiny random model as fallback."""
    from pipeline.demo_models import build_smollm2, build_tiny

    models = cache_dir() / "models"
    smol, tiny = build_smollm2(models), build_tiny(models, seed=0)
    tiers = {
        "primary": {"work_pool": "cpu"},
        "fallback": {"model": str(tiny), "max_num_seqs": 16, "work_pool": "cpu-small"},
    }
    return settings_for(home, model=smol, tiers=tiers, **DEMO_OVERRIDES)


class _WaveClock:
    """Sums the seconds and output tokens of an engine's waves (instance attribute shadows the
    method for this engine only)."""

    def __init__(self, engine) -> None:
        self.engine, self.inner = engine, engine.generate
        self.seconds, self.tokens_out, self.waves = 0.0, 0, 0
        engine.generate = self

    def __call__(self, requests, **kw):
        completions, stats = self.inner(requests, **kw)
        self.seconds += stats.seconds
        self.tokens_out += stats.tokens_out
        self.waves += 1
        return completions, stats


def measure_tier(settings, t, root: Path, *, folder: Path, limit: int | None, mode: str | None) -> dict[str, Any]:
    """Review the contracts on tier ``t`` in a database of its own; its cost and quality figures."""
    from pipeline.engine.engine import Engine
    from pipeline.quality.cuad_eval import run_cuad_eval
    from storage.db import open_database

    home = root / t.name
    home.mkdir(parents=True, exist_ok=True)
    base = settings.model_copy(update={"home": home, "database_url": None})
    tiered = t.settings(base)
    config = t.engine_config(base)
    factory = open_database(tiered.db_url)
    engine = Engine.from_config(config)
    clock = _WaveClock(engine)
    try:
        t0 = time.perf_counter()
        result = run_cuad_eval(factory, tiered, folder, limit=limit, engine=engine, mode=mode)
        review_wall = time.perf_counter() - t0
    finally:
        engine.shutdown()
        factory.kw["bind"].dispose()
    contracts = result["contracts"]
    tp = config.tensor_parallel_size
    return {
        "tier": t.name,
        "model": Path(config.model).name,
        "tp": tp,
        "device": engine.device,
        "contracts": contracts,
        "mode": result["mode"],
        "engine_startup_seconds": engine.startup_seconds,
        "review_wall_seconds": review_wall,
        "engine_seconds": clock.seconds,
        "waves": clock.waves,
        "tokens_out": clock.tokens_out,
        "engine_seconds_per_contract": clock.seconds / contracts,
        "gpu_seconds_per_contract": clock.seconds * tp / contracts,
        "output_tokens_per_s": clock.tokens_out / clock.seconds if clock.seconds else 0.0,
        "micro_f1": result["micro"]["f1"],
        "micro": result["micro"],
        "baseline_micro_f1": result["baseline"]["micro"]["f1"],
        "failed_documents": len(result["review"]["failed"]),
    }


def _row(m: dict[str, Any], primary: dict[str, Any], name: str, key: str, unit: str, note: str) -> Row:
    """One figure of tier ``m``, with the primary's beside it (ratio = this tier / the primary)."""
    if m is primary:
        return Row(f"{m['tier']}: {name}", float(m[key]), None, unit, None, note=note)
    base = float(primary[key])
    return Row(
        f"{m['tier']}: {name} (baseline: {primary['tier']})",
        float(m[key]),
        base,
        unit,
        m[key] / base if base else None,
        note=note,
    )


def run(settings, *, folder: Path = CUAD_DIR, limit: int | None = None, mode: str | None = "gated"):
    from pipeline.engine.tiers import tiers_of

    root = Path(tempfile.mkdtemp(prefix="cs-bench-tiers-"))
    per_tier = [measure_tier(settings, t, root, folder=folder, limit=limit, mode=mode) for t in tiers_of(settings)]
    primary = per_tier[0]
    for m in per_tier:
        m["f1_per_gpu_second"] = m["micro_f1"] / m["gpu_seconds_per_contract"] if m["gpu_seconds_per_contract"] else 0.0
    rows: list[Row] = []
    for m in per_tier:

        def row(name: str, key: str, unit: str, note: str = "", m: dict[str, Any] = m) -> Row:
            return _row(m, primary, name, key, unit, note)

        rows += [
            row(
                "engine-s per contract",
                "engine_seconds_per_contract",
                "s",
                f"{m['model']}, TP {m['tp']}, {m['device']}; {m['contracts']} contracts, {m['waves']} waves, "
                f"GPU-s per contract {m['gpu_seconds_per_contract']:.3g}; start-up {m['engine_startup_seconds']:.0f} s "
                "not counted",
            ),
            row("output tokens/s", "output_tokens_per_s", "tokens/s"),
            row(
                "CUAD presence micro-F1",
                "micro_f1",
                "F1",
                f"mode {m['mode']}; keyword baseline on the same contracts {m['baseline_micro_f1']:.3f}",
            ),
            row(
                "F1 per GPU-second per contract",
                "f1_per_gpu_second",
                "F1/s",
                "cost per quality: higher is better; ratio = this tier / the primary",
            ),
        ]
    return rows, {"machine": machine(), "folder": str(folder), "limit": limit, "tiers": per_tier}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=None, help="settings TOML with [tiers.NAME] tables")
    ap.add_argument("--demo", action="store_true", help="SmolLM2 primary, tiny fallback (CPU)")
    ap.add_argument("--folder", type=Path, default=CUAD_DIR, help="contracts in CUAD's layout")
    ap.add_argument("--limit", type=int, default=None, help="only the first N contracts")
    ap.add_argument("--mode", default="gated", help="review mode (whole | candidates | gated)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    start(args.json)
    from pipeline.settings import load_settings

    settings, _ = load_settings(config_file=args.config)
    if args.demo or not settings.tiers:
        settings = demo_settings(Path(tempfile.mkdtemp(prefix="cs-bench-tiers-home-")))
    rows, detail = run(settings, folder=args.folder, limit=args.limit, mode=args.mode)
    emit(rows, detail, as_json=args.json)


if __name__ == "__main__":
    main()
