"""Whole-contract review vs candidate review vs the keyword baseline, on the same CUAD contracts in one run.

    PYTHONPATH=$PWD .venv/bin/python -m bench.cuad_modes DIR --model MODEL_DIR [--limit N] [--home H] [--json]

One engine serves both modes. Each mode reviews the contracts in its own batch (``eval cuad`` with
``mode="whole"`` and then ``mode="candidates"``), so the stored reviews, the matrix and the scoring
are the product's own; the keyword baseline is scored on the same contracts by each run (identical).
Prints per mode: presence P/R/F1 (micro, macro), evidence recall/precision, answer accuracy, the
review's prompts and tokens, and wall time, with the baseline beside them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _row(part: dict) -> dict:
    keys = ("precision", "recall", "f1", "evidence_recall", "evidence_precision", "answer_accuracy")
    return {k: (None if part.get(k) is None else round(part[k], 3)) for k in keys if k in part}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--home", type=Path, default=Path("/tmp/contractsum-cuad-modes"))
    ap.add_argument("--modes", default="whole,candidates,gated")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from pipeline.engine.engine import Engine
    from pipeline.quality.cuad_eval import run_cuad_eval
    from pipeline.settings import load_settings
    from storage.db import open_database

    overrides = {"home": args.home, "model": args.model, "cpu_kvcache_space_gib": 2, "repetition_penalty": 1.1}
    settings, _ = load_settings(overrides, environ={"CONTRACTSUM_HOME": str(args.home)})
    factory = open_database(settings.db_url)
    t0 = time.perf_counter()
    engine = Engine.from_settings(settings, args.model)
    out: dict = {
        "model": args.model.name,
        "folder": str(args.folder),
        "engine_start_seconds": round(time.perf_counter() - t0, 1),
    }
    try:
        stamp = time.strftime("%Y%m%d%H%M%S")
        for mode in args.modes.split(","):
            r = run_cuad_eval(
                factory,
                settings,
                args.folder,
                limit=args.limit,
                playbook="cuad",
                engine=engine,
                batch_name=f"modes-{mode}-{stamp}",
                mode=mode,
            )
            out["contracts"] = r["contracts"]
            out[mode] = {
                "mode": r["mode"],
                "seconds": r["seconds"],
                "micro": _row(r["micro"]),
                "macro": _row(r["macro"]),
                "review": {
                    k: r["review"][k] for k in ("prompts", "tokens_in", "tokens_out", "waves", "retries", "failed")
                },
                "categories": {k: v["f1"] for k, v in r["categories"].items()},
            }
            out["baseline"] = {
                "micro": _row(r["baseline"]["micro"]),
                "macro": _row(r["baseline"]["macro"]),
                "categories": {k: v["f1"] for k, v in r["baseline"]["categories"].items()},
            }
            print(json.dumps({mode: {k: out[mode][k] for k in ("seconds", "micro", "macro", "review")}}), flush=True)
    finally:
        engine.shutdown()
    print(json.dumps(out, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
