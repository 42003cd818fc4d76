"""Nightly scale: N synthetic multi-page contracts through ingest + chunk + queue, on SQLite and PostgreSQL.

Each (database, size) runs in a fresh Python process so its peak RSS is its own. Measured:
wall time, contracts/s, pages/s, CPU of this process and of the extraction workers, peak RSS
during the batch (main, and main + workers, sampled with psutil every 0.2 s), and the main
process's RSS at every tenth of the batch, to show whether memory stays flat as it grows.

Baseline, in the same run: bare pypdf over a sample of the same synthetic files, scaled to the
batch and divided by the cores (the wall time pypdf alone would need with perfect parallelism).

    python -m bench.scale [--sizes 1000,10000] [--dbs sqlite,postgresql] [--workers 2]
                          [--style kerned|plain] [--pg-admin URL] [--compare-workers]

Synthetic files are cached under ``$CONTRACTSUM_BENCH_CACHE`` (default: the temp folder).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench import Row, cache_dir, emit, machine, settings_for, start, tiny_model
from bench.synth import corpus

GOAL_FILES, GOAL_SECONDS = 10_000, 600.0
FLAT_FACTOR = 1.25  # "flat": peak RSS at the largest size within this factor of the smallest
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


class _RssSampler(threading.Thread):
    """Peak RSS of this process and of this process + its children, sampled in the background."""

    def __init__(self, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc, self.every = psutil.Process(), every
        self.peak_main = self.peak_total = self.peak_child = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            try:
                main = self.proc.memory_info().rss
                kids = 0
                for c in self.proc.children(recursive=True):
                    try:
                        rss = c.memory_info().rss
                    except psutil.Error:
                        continue
                    kids += rss
                    self.peak_child = max(self.peak_child, rss)
                self.peak_main = max(self.peak_main, main)
                self.peak_total = max(self.peak_total, main + kids)
            except psutil.Error:
                pass
            self.stop.wait(self.every)


def _mib(n: float) -> float:
    return round(n / 2**20, 1)


def _pg_create(admin_url: str) -> str:
    from sqlalchemy import create_engine, text

    name = f"cs_bench_{uuid.uuid4().hex[:10]}"
    eng = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def _pg_drop(admin_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text

    eng = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    eng.dispose()


def one(db: str, folder: Path, count: int, *, workers: int, pg_admin: str) -> dict[str, Any]:
    """One measured batch in this process (the parent starts a fresh one per batch)."""
    import psutil

    from pipeline.batch import Chunker, ingest_paths
    from storage import repo
    from storage.db import make_engine, open_database, upgrade

    model = tiny_model()
    tmp = Path(tempfile.mkdtemp(prefix="cs-bench-scale-"))
    url = f"sqlite:///{tmp / 'scale.db'}" if db == "sqlite" else _pg_create(pg_admin)
    try:
        settings = settings_for(tmp / "home", model=model, database_url=url)
        upgrade(make_engine(url))
        factory = open_database(url)
        chunker = Chunker.for_model(settings, model)
        me = psutil.Process()
        marks: list[float] = []
        seen = 0

        def on_file(_outcome) -> None:
            nonlocal seen
            seen += 1
            if seen % max(1, count // 10) == 0:
                marks.append(_mib(me.memory_info().rss))

        sampler = _RssSampler()
        sampler.start()
        start_rss = me.memory_info().rss
        w, c = time.perf_counter(), time.process_time()
        report = ingest_paths(
            factory, settings, [folder], batch_name="nightly", chunker=chunker, on_file=on_file, workers=workers
        )
        wall, cpu = time.perf_counter() - w, time.process_time() - c
        sampler.stop.set()
        sampler.join()
        with factory() as s:
            rows = repo.counts(s)
            jobs = sum(repo.job_counts(s).values())
        factory.kw["bind"].dispose()
    finally:
        if db != "sqlite":
            _pg_drop(pg_admin, url)
    counts = report.counts()
    assert counts.get("ok") == count, counts
    pages = rows["pages"]
    return {
        "db": db,
        "files": count,
        "workers": workers,
        "wall_s": round(wall, 2),
        "contracts_per_s": round(count / wall, 2),
        "pages": pages,
        "pages_per_s": round(pages / wall, 1),
        "main_cpu_s": round(cpu, 2),
        # The extracting processes report their own CPU (see pipeline.ingest.extractors.ExtractionStats).
        "workers_cpu_s": round(report.extraction.child_cpu_seconds, 2),
        "rows": rows,
        "jobs": jobs,
        "rss_start_mib": _mib(start_rss),
        "rss_peak_main_mib": _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),  # start-up included
        "rss_peak_main_sampled_mib": _mib(sampler.peak_main),
        "rss_peak_main_plus_workers_mib": _mib(sampler.peak_total),
        # Sampled: ru_maxrss of children counts the parent's pages a child briefly holds between
        # fork and exec, so it would report the parent's size.
        "rss_peak_worker_mib": _mib(sampler.peak_child),
        "rss_main_at_each_tenth_mib": marks,
    }


def pypdf_floor(folder: Path, *, sample: int = 150) -> dict[str, float]:
    """Bare pypdf's CPU cost per file and per page of this corpus, from a sample of its files."""
    from pypdf import PdfReader

    files = sorted(folder.glob("*.pdf"))[:sample]
    pages, c = 0, time.process_time()
    for f in files:
        for page in PdfReader(f).pages:
            page.extract_text()
            pages += 1
    cpu = time.process_time() - c
    return {
        "sample_files": len(files),
        "sample_pages": pages,
        "pages_per_cpu_s": pages / cpu,
        "cpu_s_per_file": cpu / len(files),
    }


def _child(db: str, folder: Path, count: int, workers: int, pg_admin: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "bench.scale",
        "--one",
        db,
        str(folder),
        str(count),
        "--workers",
        str(workers),
        "--pg-admin",
        pg_admin,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if out.returncode != 0:
        raise RuntimeError(f"{db} {count}: exit {out.returncode}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table_rows(results: list[dict[str, Any]], floor: dict[str, float], *, workers: int, dbs: list[str]) -> list[Row]:
    """The table from measured batches (also used to re-render saved results)."""
    cores = os.cpu_count() or 1
    rows: list[Row] = []
    for r in results:
        floor_s = floor["cpu_s_per_file"] * r["files"] / min(cores, max(1, r["workers"]))
        cpu_ms = 1000 * (r["main_cpu_s"] + r["workers_cpu_s"]) / r["files"]
        name = f"scale {r['db']} {r['files']:,} files (workers={r['workers']})"
        goal, met = "", None
        if r["files"] >= GOAL_FILES and r["workers"] > 1:
            goal, met = (
                f"{GOAL_FILES:,} in <= {GOAL_SECONDS:.0f} s",
                r["wall_s"] * GOAL_FILES / r["files"] <= GOAL_SECONDS,
            )
        rows.append(
            Row(
                name,
                r["wall_s"],
                floor_s,
                "s",
                floor_s / r["wall_s"],
                goal,
                met,
                note=f"{r['pages']:,} pages, {r['contracts_per_s']} contracts/s; CPU {cpu_ms:.1f} ms/file (main "
                f"{1000 * r['main_cpu_s'] / r['files']:.1f} + workers {1000 * r['workers_cpu_s'] / r['files']:.1f}) vs bare "
                f"pypdf {1000 * floor['cpu_s_per_file']:.1f} ms/file = {1000 * floor['cpu_s_per_file'] / cpu_ms:.2f}; "
                f"peak RSS during the batch: main {r['rss_peak_main_sampled_mib']} MiB, main+workers "
                f"{r['rss_peak_main_plus_workers_mib']} MiB; "
                f"baseline = bare pypdf CPU for these files / cores used",
            )
        )
    for db in dbs:
        mine = sorted((r for r in results if r["db"] == db and r["workers"] == workers), key=lambda r: r["files"])
        if len(mine) >= 2:
            small, big = mine[0], mine[-1]
            # Sampled during the batch: ru_maxrss would also hold start-up peaks (imports).
            ratio = big["rss_peak_main_sampled_mib"] / small["rss_peak_main_sampled_mib"]
            rows.append(
                Row(
                    f"peak RSS {db} {big['files']:,} vs {small['files']:,}",
                    big["rss_peak_main_sampled_mib"],
                    small["rss_peak_main_sampled_mib"],
                    "MiB",
                    ratio,
                    f"flat (<= {FLAT_FACTOR}x)",
                    ratio <= FLAT_FACTOR,
                    note=f"main process; RSS at each tenth of the {big['files']:,} batch: {big['rss_main_at_each_tenth_mib']}",
                )
            )
        if mine and max(r["files"] for r in mine) < GOAL_FILES:
            r = mine[-1]
            proj = r["wall_s"] * GOAL_FILES / r["files"]
            rows.append(
                Row(
                    f"scale {db} {GOAL_FILES:,} projected",
                    proj,
                    None,
                    "s",
                    None,
                    f"<= {GOAL_SECONDS:.0f} s",
                    None,
                    note=f"linear from {r['files']:,} files (not measured at {GOAL_FILES:,})",
                )
            )
    return rows


def run(
    *,
    sizes: list[int],
    dbs: list[str],
    workers: int,
    style: str = "kerned",
    pg_admin: str = PG_ADMIN,
    compare_workers: bool = False,
    pages_min: int = 2,
    pages_max: int = 6,
    skip: set[tuple[str, int]] | None = None,
    log=print,
) -> tuple[list[Row], dict[str, Any]]:
    root = cache_dir() / "synth"
    tiny_model()  # build once here, not inside a timed child
    folders: dict[int, tuple[Path, int]] = {}
    for n in sorted(sizes, reverse=True):  # largest first: smaller corpora link its files
        t0 = time.perf_counter()
        folders[n] = corpus(root, n, pages_min=pages_min, pages_max=pages_max, style=style)
        log(f"corpus {n}: {folders[n][1]} pages, ready in {time.perf_counter() - t0:.0f} s ({folders[n][0]})")
    floor = pypdf_floor(folders[min(sizes)][0])
    results: list[dict[str, Any]] = []
    for db in dbs:
        for n in sorted(sizes):
            if skip and (db, n) in skip:
                continue
            log(f"running {db} {n} (workers={workers}) ...")
            r = _child(db, folders[n][0], n, workers, pg_admin)
            log(
                f"  {r['wall_s']} s, {r['contracts_per_s']} contracts/s, peak RSS main {r['rss_peak_main_sampled_mib']} MiB"
            )
            results.append(r)
        if compare_workers and db == dbs[0] and workers > 1:
            n = min(sizes)
            log(f"running {db} {n} (workers=1) for comparison ...")
            results.append(_child(db, folders[n][0], n, 1, pg_admin))
    rows = table_rows(results, floor, workers=workers, dbs=dbs)
    detail = {
        "machine": machine(),
        "style": style,
        "pages_per_file": [pages_min, pages_max],
        "corpus_pages": {n: p for n, (_, p) in folders.items()},
        "pypdf_sample": floor,
        "results": results,
    }
    return rows, detail


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--dbs", default="sqlite,postgresql")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--style", choices=("kerned", "plain"), default="kerned")
    ap.add_argument("--pages-min", type=int, default=2)
    ap.add_argument("--pages-max", type=int, default=6)
    ap.add_argument("--pg-admin", default=os.environ.get("CONTRACTSUM_TEST_PG", PG_ADMIN))
    ap.add_argument("--compare-workers", action="store_true", help="also run the smallest size with workers=1")
    ap.add_argument("--skip", default="", help="db:size pairs to leave out, e.g. postgresql:10000")
    ap.add_argument("--one", nargs=3, metavar=("DB", "FOLDER", "COUNT"), help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.one:  # a child of run(): its one line of JSON is read back by the parent
        db, folder, count = args.one
        print(json.dumps(one(db, Path(folder), int(count), workers=args.workers, pg_admin=args.pg_admin)))
        return
    start(args.json)
    skip = {(p.split(":")[0], int(p.split(":")[1])) for p in args.skip.split(",") if p}
    rows, detail = run(
        sizes=[int(x) for x in args.sizes.split(",")],
        dbs=args.dbs.split(","),
        workers=args.workers,
        style=args.style,
        pg_admin=args.pg_admin,
        compare_workers=args.compare_workers,
        pages_min=args.pages_min,
        pages_max=args.pages_max,
        skip=skip,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    emit(rows, detail, as_json=args.json)


if __name__ == "__main__":
    main()
