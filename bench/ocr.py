"""OCR accuracy and speed on scans made from real text: the bundled contracts' pages rendered to
images, rebuilt as image-only PDFs, read back through the real ingest path and compared with the
contracts' own text layer.

Variants: clean renders at 300 and at 150 dpi, a 300 dpi page fed 2 degrees crooked, a 300 dpi
page blurred and speckled (a worn copy), and a 1-bit 200 dpi fax page (CCITT Group 4). Every
image-only PDF goes through ``extract_all`` + ``ingest.extract`` with OCR on, in the killable
extraction processes, exactly as ``contractsum ingest`` reads a scan (pages rendered at
``--ocr-dpi`` whatever the scan's resolution).

Accuracy: character error rate (CER) and word error rate (WER) = Levenshtein distance / reference
length, per page and overall (summed distances over summed lengths), after folding what a reader
would not call an error: Unicode compatibility forms (NFKC), curly vs straight quotes, dash
variants, and whitespace runs. The reference is the text layer of the same page cleaned by the
same code, so a difference in reading order (a two-column cover-page table read row by row in
one, column by column in the other) counts as errors, too.

Speed: OCR pages per CPU second (one core: Tesseract runs single-threaded in each extraction
process; the CPU is the extraction processes' own plus Tesseract's) against the text-layer
extraction of the same files in the same run.

    python -m bench.ocr [--pages-per-doc 1] [--docs 11] [--workers 2] [--json]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import Row, corpus_pdfs, emit, machine, start

GOAL_CER_CLEAN_300 = 0.02

_QUOTES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2033": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u2010": "-",
        "\u2011": "-",
        "\u00ad": None,
    }
)
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).translate(_QUOTES)).strip()


def error_counts(reference: str, hypothesis: str) -> dict[str, int]:
    """Edit distances in characters and in words, with the reference lengths; ``flex_char_errors``
    does not count reading order (see ``flexible_char_errors``)."""
    from rapidfuzz.distance import Levenshtein

    ref, hyp = normalize(reference), normalize(hypothesis)
    ref_words, hyp_words = ref.split(), hyp.split()
    return {
        "char_errors": Levenshtein.distance(ref, hyp),
        "flex_char_errors": flexible_char_errors(reference, hypothesis),
        "chars": len(ref),
        "word_errors": Levenshtein.distance(ref_words, hyp_words),
        "words": len(ref_words),
    }


def flexible_char_errors(reference: str, hypothesis: str) -> int:
    """Character errors that do not depend on reading order (after Clausner, Pletschacher and
    Antonacopoulos, "Flexible character accuracy measure for reading-order-independent evaluation",
    Pattern Recognition Letters 131, 2020, simplified): every reference line (a paragraph or a list
    item: ``clean_page_text`` has already joined wrapped lines) is aligned with its best-matching
    stretch of the OCR text wherever it is; errors are the edit distances of those alignments plus
    every OCR character no line claimed (text OCR invented)."""
    from rapidfuzz import fuzz
    from rapidfuzz.distance import Levenshtein

    hyp = normalize(hypothesis)
    claimed = bytearray(len(hyp))
    errors = 0
    paragraphs = [normalize(p) for p in reference.split("\n")]
    for para in sorted((p for p in paragraphs if p), key=len, reverse=True):  # long ones first: least ambiguous
        if not hyp:
            errors += len(para)
            continue
        if len(para) >= len(hyp):
            errors += Levenshtein.distance(para, hyp)
            claimed[:] = b"\x01" * len(hyp)
            continue
        hit = fuzz.partial_ratio_alignment(para, hyp)
        assert hit is not None  # both strings are non-empty here
        start, end = hit.dest_start, hit.dest_end
        # Let the window grow or shrink at its ends by what the OCR added or lost inside it.
        best = (Levenshtein.distance(para, hyp[start:end]), start, end)
        slack = max(2, len(para) // 20)
        for a in (start - slack, start, start + slack):
            for b in (end - slack, end, end + slack):
                if 0 <= a < b <= len(hyp):
                    d = Levenshtein.distance(para, hyp[a:b])
                    if d < best[0]:
                        best = (d, a, b)
        errors += best[0]
        claimed[best[1] : best[2]] = b"\x01" * (best[2] - best[1])
    return errors + sum(1 for i, ch in enumerate(hyp) if not claimed[i] and ch != " ")


def _variants() -> list[tuple[str, int, Callable, str]]:
    from pipeline.quality import scans

    same = lambda im: im  # noqa: E731
    return [
        ("clean 300 dpi", 300, same, "flate"),
        ("clean 150 dpi", 150, same, "flate"),
        ("skewed 2 deg 300 dpi", 300, lambda im: scans.skewed(im, 2.0), "flate"),
        ("noisy 300 dpi", 300, lambda im: scans.noisy(im, seed=1), "flate"),
        ("fax 1-bit 200 dpi CCITT G4", 200, scans.bilevel, "ccitt"),
    ]


def run(
    *, pages_per_doc: int = 1, docs: int = 0, workers: int = 2, ocr_dpi: int = 300
) -> tuple[list[Row], dict[str, Any]]:
    from pipeline.ingest import ingest
    from pipeline.ingest.extractors import ExtractionStats, extract_all
    from pipeline.ingest.ocr import OcrConfig, engine_version, problem
    from pipeline.quality import scans

    if (why := problem("eng")) is not None:
        raise SystemExit(f"bench.ocr: {why}")
    originals = corpus_pdfs()[: docs or None]
    # Reference text and the text-layer baseline, through the same extraction processes.
    text_stats = ExtractionStats()
    w = time.perf_counter()
    reference = dict(extract_all(originals, ingest.extract, workers=workers, timeout=600, stats=text_stats))
    text_wall = time.perf_counter() - w
    text_pages = sum(len(ex.pages) for ex in reference.values())
    chosen = {f: list(range(min(pages_per_doc, len(reference[f].pages)))) for f in originals}

    per_page: list[dict[str, Any]] = []
    summary: dict[str, dict[str, Any]] = {}
    config = OcrConfig(mode="auto", languages="eng", dpi=ocr_dpi)
    extract = _extract_with(config)
    with tempfile.TemporaryDirectory(prefix="cs-bench-ocr-") as tmp:
        for name, dpi, transform, encoding in _variants():
            print(f"bench.ocr: {name} ...", file=sys.stderr, flush=True)
            scanned: dict[Path, Path] = {}
            for f in originals:
                images = [transform(im) for im in scans.render_pages(f, dpi, chosen[f])]
                out = Path(tmp) / f"{f.stem}.{dpi}.{encoding}.{len(scanned)}.pdf"
                scanned[f] = scans.image_pdf(images, out, dpi=dpi, encoding=encoding)
            stats = ExtractionStats()
            w = time.perf_counter()
            results = dict(extract_all(list(scanned.values()), extract, workers=workers, timeout=600, stats=stats))
            wall = time.perf_counter() - w
            totals = {"char_errors": 0, "flex_char_errors": 0, "chars": 0, "word_errors": 0, "words": 0}
            pages = 0
            for f in originals:
                ex = results[scanned[f]]
                for i in chosen[f]:
                    ref = reference[f].pages[i].text
                    page = ex.pages[i] if i < len(ex.pages) else None
                    hyp = page.text if page is not None else ""
                    counts = error_counts(ref, hyp)
                    for k in totals:
                        totals[k] += counts[k]
                    pages += 1
                    per_page.append(
                        {
                            "variant": name,
                            "file": f.name,
                            "page": i + 1,
                            "status": ex.status,
                            "cer": round(counts["char_errors"] / max(1, counts["chars"]), 4),
                            "flex_cer": round(counts["flex_char_errors"] / max(1, counts["chars"]), 4),
                            "wer": round(counts["word_errors"] / max(1, counts["words"]), 4),
                            "confidence": page.ocr_confidence if page is not None else None,
                            "text_source": page.text_source if page is not None else None,
                        }
                    )
            summary[name] = {
                "pages": pages,
                "scan_dpi": dpi,
                "encoding": encoding,
                "cer": totals["char_errors"] / max(1, totals["chars"]),
                "flex_cer": totals["flex_char_errors"] / max(1, totals["chars"]),
                "wer": totals["word_errors"] / max(1, totals["words"]),
                **totals,
                "cpu_s": stats.child_cpu_seconds,
                "wall_s": wall,
                "pages_per_cpu_s": pages / stats.child_cpu_seconds if stats.child_cpu_seconds else None,
                "pages_per_wall_s": pages / wall,
                "median_page_cer": sorted(p["cer"] for p in per_page if p["variant"] == name)[pages // 2]
                if pages
                else None,
            }

    text_core = text_pages / text_stats.child_cpu_seconds if text_stats.child_cpu_seconds else float("nan")
    rows: list[Row] = []
    for name, s in summary.items():
        goal = f"CER <= {GOAL_CER_CLEAN_300:.0%}" if name == "clean 300 dpi" else ""
        rows.append(
            Row(
                f"OCR CER {name}",
                100 * s["flex_cer"],
                100 * s["cer"],
                "%",
                None,
                goal,
                (s["flex_cer"] <= GOAL_CER_CLEAN_300) if goal else None,
                note=f"ours = reading-order-independent CER, baseline column = plain CER (reading order counts); "
                f"WER {100 * s['wer']:.2f}%, median page CER {100 * (s['median_page_cer'] or 0):.2f}%, "
                f"{s['pages']} pages, {s['chars']:,} reference chars",
            )
        )
    clean = summary["clean 300 dpi"]
    rows.append(
        Row(
            "OCR pages/s per core (clean 300 dpi)",
            clean["pages_per_cpu_s"],
            text_core,
            "pages/s",
            clean["pages_per_cpu_s"] / text_core,
            note=f"CPU of the extraction processes + Tesseract; baseline = text-layer extraction of the same "
            f"{len(originals)} files ({text_pages} pages) in the same processes; OCR at {ocr_dpi} dpi, "
            f"wall {clean['pages_per_wall_s']:.2f} pages/s with {workers} workers",
        )
    )
    detail = {
        "machine": {**machine(), "tesseract": engine_version()},
        "ocr_dpi": ocr_dpi,
        "workers": workers,
        "files": len(originals),
        "pages_per_doc": pages_per_doc,
        "text_layer_baseline": {
            "pages": text_pages,
            "cpu_s": text_stats.child_cpu_seconds,
            "wall_s": text_wall,
            "pages_per_cpu_s": text_core,
        },
        "variants": summary,
        "pages": per_page,
    }
    return rows, detail


def _extract_with(config):
    from functools import partial

    from pipeline.ingest import ingest

    return partial(ingest.extract, ocr=config)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages-per-doc", type=int, default=1, help="first N pages of each bundled contract")
    ap.add_argument("--docs", type=int, default=0, help="only the first N contracts (0: all)")
    ap.add_argument("--workers", type=int, default=2, help="extraction processes")
    ap.add_argument("--ocr-dpi", type=int, default=300, help="the ocr_dpi pages are rendered at for OCR")
    ap.add_argument("--json", action="store_true", help="print exactly one JSON document on stdout")
    args = ap.parse_args()
    start(args.json)
    rows, detail = run(pages_per_doc=args.pages_per_doc, docs=args.docs, workers=args.workers, ocr_dpi=args.ocr_dpi)
    emit(rows, detail, as_json=args.json)


if __name__ == "__main__":
    main()
