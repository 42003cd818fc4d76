"""Files that never finish: a PDF that keeps pypdf busy for minutes, one that eats memory, an
extracting process killed from outside. Each fails alone, with a reason naming the limit; the
files before and after it are stored as usual."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from functools import partial

import psutil
import pytest
from badfiles import inflating_pdf, slow_pdf, text_pdf
from conftest import CORPUS, make_settings
from sqlalchemy import select

from pipeline.batch import ingest_paths
from pipeline.ingest import ingest
from pipeline.ingest.extractors import extract_all
from storage.models import IngestRecord

GOOD = [CORPUS / "commonpaper-mutual-nda-v1.pdf", CORPUS / "bonterms-cloud-terms-v1.pdf"]


def _extractor_children() -> list[psutil.Process]:
    """Processes reading files for this test: children of our multiprocessing forkserver."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "forkserver" in " ".join(proc.parent().cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_that_reads_too_long_is_stopped_and_the_batch_goes_on(tmp_path, factory, workers):
    slow = slow_pdf(tmp_path, pages=1000)  # ~15 minutes of pypdf if nothing stops it
    after = text_pdf(tmp_path, ["A later contract.\nThe parties agree."], name="after.pdf")
    settings = make_settings(tmp_path / "home", extract_timeout_seconds=3)
    started = time.monotonic()
    report = ingest_paths(factory, settings, [GOOD[0], slow, after, GOOD[1]], batch_name="runaway", workers=workers)
    elapsed = time.monotonic() - started

    by_name = {f.source: f for f in report.files}
    assert by_name["slow.pdf"].status == "failed"
    assert "longer than 3 s" in by_name["slow.pdf"].reason and "extract_timeout_seconds" in by_name["slow.pdf"].reason
    assert by_name["slow.pdf"].sha256 == hashlib.sha256(slow.read_bytes()).hexdigest()
    assert [by_name[p.name].status for p in (GOOD[0], after, GOOD[1])] == ["ok", "ok", "ok"]
    assert elapsed < 60, f"the batch waited {elapsed:.0f} s"
    with factory() as s:
        rows = {r.source.rsplit("/", 1)[-1]: r for r in s.scalars(select(IngestRecord))}
    assert rows["slow.pdf"].status == "failed" and "extract_timeout_seconds" in rows["slow.pdf"].reason
    assert {rows[p.name].status for p in (GOOD[0], after, GOOD[1])} == {"ok"}
    assert not _extractor_children(), "an extracting process outlived the batch"


def test_a_file_that_needs_too_much_memory_fails_and_the_next_file_is_read(tmp_path):
    bomb = inflating_pdf(tmp_path, 300)  # ~300 KB on disk, 300 MiB inflated
    extract = partial(ingest.extract, max_decompressed_bytes=1 << 30)  # past the bomb guard on purpose
    files = [GOOD[0], bomb, GOOD[1]]
    results = dict(extract_all(files, extract, workers=1, timeout=120, memory_bytes=250 << 20))
    assert results[bomb].status == "failed" and "out of memory" in results[bomb].reason, results[bomb].reason
    assert results[GOOD[0]].status == results[GOOD[1]].status == "ok"
    # Without the cap the same file reads as far as the decompression guard: the cap made the difference.
    uncapped = dict(extract_all([bomb], extract, workers=1, timeout=120, memory_bytes=0))
    assert "out of memory" not in uncapped[bomb].reason


def test_an_extractor_killed_mid_file_fails_that_file_only(tmp_path):
    slow = slow_pdf(tmp_path, pages=1000)
    files = [GOOD[0], slow, GOOD[1]]
    killed: list[int] = []

    def kill_the_reader() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for proc in _extractor_children():
                try:
                    # The reader of slow.pdf has been busy for a while: it is the one to kill.
                    if time.time() - proc.create_time() > 1 and proc.cpu_times().user > 1:
                        os.kill(proc.pid, signal.SIGKILL)
                        killed.append(proc.pid)
                except psutil.Error:
                    continue
            time.sleep(0.2)

    killer = threading.Thread(target=kill_the_reader, daemon=True)
    killer.start()
    results = list(extract_all(files, ingest.extract, workers=1, timeout=600, memory_bytes=0))
    killer.join()
    assert killed, "the test never found the extracting process"
    assert [p for p, _ in results] == files
    by_path = dict(results)
    assert by_path[slow].status == "failed" and "killed by SIGKILL" in by_path[slow].reason, by_path[slow].reason
    assert by_path[GOOD[0]].status == by_path[GOOD[1]].status == "ok"
    assert by_path[slow].sha256  # the failure is recorded against the file's bytes, like any other


def test_in_process_and_sandboxed_extraction_agree(tmp_path):
    files = sorted(CORPUS.glob("*.pdf"))[:4] + [tmp_path / "missing.pdf"]
    plain = [
        (p, e.status, e.reason, e.sha256, [x.text for x in e.pages])
        for p, e in extract_all(files, ingest.extract, workers=1, timeout=0, memory_bytes=0)
    ]
    boxed = [
        (p, e.status, e.reason, e.sha256, [x.text for x in e.pages])
        for p, e in extract_all(files, ingest.extract, workers=2, timeout=60, memory_bytes=4 << 30)
    ]
    assert plain == boxed and len(plain) == 5
    assert plain[-1][1] == "failed"
