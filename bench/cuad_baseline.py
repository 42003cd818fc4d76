"""The non-LLM baseline (and the every-category-present floor) scored against CUAD, no model involved.

    PYTHONPATH=$PWD .venv/bin/python -m bench.cuad_baseline DIR [--limit N] [--json]

DIR is a folder in CUAD's layout (``master_clauses.csv`` + ``full_contract_pdf/``): a full CUAD v1
download, a slice of it, or ``examples/cuad``. Each PDF goes through the project's own ingest
(extract -> pages -> sentences), the keyword rules of ``pipeline.quality.baseline`` run over the
sentences, and ``pipeline.quality.cuad.score`` scores them. Also printed: *findability*, the share of
CUAD's spans that overlap at least one of our sentences (the ceiling on evidence recall set by
extraction and sentence splitting, not by any reviewer).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipeline.ingest import ingest
from pipeline.quality.baseline import baseline_predictions
from pipeline.quality.cuad import (
    all_present,
    load_cuad,
    normalize_tokens,
    overlaps_tokens,
    score,
)


def _sentences(contracts) -> tuple[dict[str, list[str]], list[str]]:
    out: dict[str, list[str]] = {}
    problems: list[str] = []
    for c in contracts:
        if not c.pdf_paths:
            problems.append(f"{c.name}: no PDF found")
            continue
        texts: list[str] = []
        for path in c.pdf_paths:
            ex = ingest.extract(path)
            if ex.status != "ok":
                problems.append(f"{path.name}: {ex.status}: {ex.reason}")
            texts += [s.text for s in ex.sentences]
        out[c.name] = texts
    return out, problems


def _findability(contracts, sentences) -> float:
    total = hit = 0
    for c in contracts:
        ours = [normalize_tokens(s) for s in sentences.get(c.name, [])]
        for label in c.labels.values():
            if not label.present:
                continue
            for span in label.spans:
                total += 1
                toks = normalize_tokens(span)
                hit += any(overlaps_tokens(toks, s) for s in ours)
    return round(hit / total, 4) if total else 0.0


def _fmt(v) -> str:
    return "  n/a" if v is None else f"{v:5.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    contracts = load_cuad(args.dir, limit=args.limit)
    sentences, problems = _sentences(contracts)
    t_ingest = time.perf_counter() - t0
    t1 = time.perf_counter()
    base = score(contracts, baseline_predictions(contracts, sentences)).to_json_dict()
    t_base = time.perf_counter() - t1
    floor = score(contracts, all_present(contracts)).to_json_dict()
    result = {
        "dir": str(args.dir),
        "contracts": len(contracts),
        "problems": problems,
        "sentences": sum(len(v) for v in sentences.values()),
        "findability": _findability(contracts, sentences),
        "seconds": {"ingest": round(t_ingest, 2), "baseline_and_score": round(t_base, 2)},
        "baseline": base,
        "all_present": {"micro": floor["micro"], "macro": floor["macro"]},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{len(contracts)} contracts, {result['sentences']} sentences, findability {result['findability']:.3f}, "
        f"ingest {t_ingest:.1f}s, baseline+score {t_base:.2f}s"
    )
    for p in problems:
        print("problem:", p)
    print(f"\n{'category':36} {'sup':>4} {'P':>5} {'R':>5} {'F1':>5} {'evR':>5} {'evP':>5} {'ans':>5}")
    for name, c in base["categories"].items():
        print(
            f"{name[:36]:36} {c['support']:4d} {_fmt(c['precision'])} {_fmt(c['recall'])} {_fmt(c['f1'])} "
            f"{_fmt(c['evidence_recall'])} {_fmt(c['evidence_precision'])} {_fmt(c.get('answer_accuracy'))}"
        )
    for label, s in (("baseline", base), ("all present", floor)):
        for avg in ("micro", "macro"):
            a = s[avg]
            print(
                f"{label + ' ' + avg:36} {a['support']:4d} {_fmt(a['precision'])} {_fmt(a['recall'])} {_fmt(a['f1'])} "
                f"{_fmt(a['evidence_recall'])} {_fmt(a['evidence_precision'])} {_fmt(a.get('answer_accuracy'))}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
