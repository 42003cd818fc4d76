"""Every benchmark, one table: name, ours, baseline, ratio, goal, met?

    python -m bench.run                                  # ingest, chunking, ocr, engine, review, scale at 1,000
    python -m bench.run --only ingest,chunking           # the quick ones (no model engine)
    python -m bench.run --scale-sizes 1000,10000         # the nightly-scale goal (long)
    python -m bench.run --json results.json              # also keep every detail

Each part measures against its baseline in the same run; see docs/performance.md for what each
baseline is and for recorded numbers. vLLM spawns processes, hence the ``__main__`` guard.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import Row, format_table, machine, start

PARTS = ("ingest", "chunking", "ocr", "engine", "review", "scale")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per measurement (best is kept)")
    ap.add_argument(
        "--workers", type=int, default=2, help="ingest: also measure ingest_paths(workers=N); scale: workers"
    )
    ap.add_argument("--profile", action="store_true", help="ingest: add a cProfile breakdown to the details")
    ap.add_argument("--no-prefix-off", action="store_true", help="engine: skip the second (prefix caching off) engine")
    ap.add_argument("--scale-sizes", default="1000")
    ap.add_argument("--scale-dbs", default="sqlite,postgresql")
    ap.add_argument("--scale-style", choices=("kerned", "plain"), default="kerned")
    ap.add_argument("--json", type=Path, help="write rows and details here")
    args = ap.parse_args()
    start(False)  # --json here names a file; stdout keeps the table, libraries log to stderr
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown part(s) {unknown}; choose from {PARTS}")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rows: list[Row] = []
    details: dict[str, Any] = {"machine": machine(), "argv": sys.argv[1:]}
    for part in parts:
        t0 = time.perf_counter()
        log(f"== {part} ...")
        if part == "ingest":
            from bench import ingest

            r, d = ingest.run(repeat=args.repeat, workers=args.workers, profile=args.profile)
        elif part == "chunking":
            from bench import ingest

            r, d = ingest.run_chunking(repeat=args.repeat)
        elif part == "ocr":
            from bench import ocr

            r, d = ocr.run(workers=args.workers)
        elif part == "engine":
            from bench import engine

            r, d = engine.run(repeat=args.repeat, prefix_off=not args.no_prefix_off)
        elif part == "review":
            from bench import review

            r, d = review.run(repeat=args.repeat)
        else:
            from bench import scale

            r, d = scale.run(
                sizes=[int(x) for x in args.scale_sizes.split(",")],
                dbs=args.scale_dbs.split(","),
                workers=args.workers,
                style=args.scale_style,
                compare_workers=True,
                log=log,
            )
        rows += r
        details[part] = d
        log(f"== {part} done in {time.perf_counter() - t0:.0f} s")
        log(format_table(r))
    m = details["machine"]
    print(
        f"machine: {m['cpu']}, {m['cores']} cores, load {m['load_avg']}, python {m['python']}, pypdf {m['pypdf']}, {m['date']}"
    )
    print(format_table(rows))
    if args.json:
        args.json.write_text(
            json.dumps({"rows": [r.as_dict() for r in rows], "details": details}, indent=2, default=str)
        )
        print(f"details: {args.json}")


if __name__ == "__main__":
    main()
