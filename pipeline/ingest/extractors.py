"""Text extraction in child processes that can be stopped: a time limit and a memory cap per file.

pypdf is pure Python. A pathological PDF (millions of content-stream operators, a page tree that
loops through indirections) can keep it busy for hours, and a parser bug or the kernel's OOM killer
can take its process down. So files are read by child processes:

* a file still being read ``timeout`` seconds after it was handed out is stopped (its process is
  killed) and recorded as failed, naming the limit;
* a child that dies while reading a file (killed, crashed) fails that file only;
* either way a fresh child takes the next file, so the rest of the batch goes on;
* each child runs under an address-space cap (``memory_bytes``), so a file that would eat the
  machine fails with "ran out of memory" instead;
* a file with pages to OCR gets ``ocr_seconds_per_page`` more per such page: the child says how many
  pages it is about to OCR before it starts (``pipeline.ingest.ocr.announce``) and the parent moves
  the deadline. The Tesseract process a child runs dies with it (``PR_SET_PDEATHSIG``).

Results come back in input order; a bounded window of files is in flight, so memory stays flat
however long the batch is. Children come from a ``forkserver`` (started once per process, with
pypdf preloaded): cheap to start, and they do not inherit this process's threads or connections.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from pathlib import Path

from pipeline.ingest import ingest, ocr

log = logging.getLogger(__name__)

Extract = Callable[[Path], ingest.Extraction]

# Files handed out ahead of the one the caller waits for, per child.
WINDOW_PER_CHILD = 4
# Children that die before taking any file (something wrong with the machine, not a file).
MAX_LOST_CHILDREN = 8


def _serve(conn: Connection, extract: Extract, memory_bytes: int) -> None:
    """A child's loop: a path in, its Extraction out, until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if memory_bytes:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    ocr.announce = lambda pages: conn.send(("ocr", pages))
    while True:
        try:
            path = conn.recv()
        except (EOFError, OSError):
            return
        if path is None:
            return
        started = _cpu()
        result = extract(path)
        conn.send(("done", result, _cpu() - started))


def _cpu() -> float:
    """CPU seconds of this process and of the processes it ran and waited for (Tesseract)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@dataclass
class ExtractionStats:
    """CPU seconds the child processes spent reading files (not in this process's own CPU time;
    forkserver children are not ours to reap, so ``RUSAGE_CHILDREN`` never sees them either)."""

    child_cpu_seconds: float = 0.0


@dataclass
class _Job:
    index: int
    path: Path
    deadline: float | None
    ocr_pages: int = 0  # pages the child said it is OCR'ing


class _Child:
    def __init__(self, ctx, extract: Extract, memory_bytes: int) -> None:
        self.conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(theirs, extract, memory_bytes), name="contractsum-extract")
        self.proc.start()
        theirs.close()
        self.job: _Job | None = None

    def give(self, job: _Job) -> None:
        self.job = job
        self.conn.send(job.path)

    def close(self) -> None:
        """Stop the child: politely when idle, with SIGKILL when it is busy or does not exit."""
        if self.job is None and self.proc.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(timeout=2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (the system may have run out of memory)" if name == "SIGKILL" else ""
        return f"the text extractor died reading this file: killed by {name}{hint}"
    return f"the text extractor died reading this file (exit code {exitcode})"


def _timeout_reason(timeout: float, ocr_pages: int = 0, per_page: float = 0) -> str:
    if ocr_pages:
        allowed = timeout + ocr_pages * per_page
        noun = "page" if ocr_pages == 1 else "pages"
        return (
            f"reading its text with OCR of {ocr_pages} {noun} took longer than {allowed:g} s; stopped"
            f" (extract_timeout_seconds + {ocr_pages} x ocr_timeout_seconds_per_page)"
        )
    return f"reading its text took longer than {timeout:g} s; stopped (extract_timeout_seconds)"


def extract_all(
    files: Sequence[Path],
    extract: Extract,
    *,
    workers: int = 1,
    timeout: float = 0,
    memory_bytes: int = 0,
    ocr_seconds_per_page: float = 0,
    stats: ExtractionStats | None = None,
) -> Iterator[tuple[Path, ingest.Extraction]]:
    """``(path, extraction)`` for every file, in order. Never raises for a bad file.

    With ``workers <= 1`` and neither a ``timeout`` nor a ``memory_bytes`` cap, files are read in
    this process (nothing can stop a runaway file then); otherwise in ``workers`` child processes.
    ``stats``, if given, is filled in as files come back.
    """
    if not files:
        return
    if workers <= 1 and not timeout and not memory_bytes:
        for path in files:
            yield path, extract(path)
        return
    stats = stats if stats is not None else ExtractionStats()
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(
        ["pipeline.ingest.ingest", "pypdf"]
    )  # applies when the server starts; pypdfium2 loads on a first OCR page
    size = max(1, min(workers, len(files)))
    window = size * WINDOW_PER_CHILD
    children: list[_Child] = []
    ready: dict[int, ingest.Extraction] = {}
    handed = 0  # files[:handed] have been given to a child
    emitted = 0  # files[:emitted] have been yielded
    lost_children = 0
    try:
        while emitted < len(files):
            # Hand files to idle children, keeping at most `window` between emitted and handed.
            while handed < len(files) and handed - emitted < window:
                idle = next((c for c in children if c.job is None), None)
                if idle is None:
                    if len(children) >= size:
                        break
                    idle = _Child(ctx, extract, memory_bytes)
                    children.append(idle)
                deadline = time.monotonic() + timeout if timeout else None
                try:
                    idle.give(_Job(handed, files[handed], deadline))
                except OSError:  # the child died before it took the file: replace it, try again
                    children.remove(idle)
                    idle.close()
                    lost_children += 1
                    if lost_children > MAX_LOST_CHILDREN:
                        raise RuntimeError("text-extraction processes keep dying before they take a file") from None
                    continue
                handed += 1
            if emitted in ready:
                path = files[emitted]
                yield path, ready.pop(emitted)
                emitted += 1
                continue
            _collect(children, ready, timeout, stats, ocr_seconds_per_page)
    finally:
        for child in children:
            child.close()


def _collect(
    children: list[_Child],
    ready: dict[int, ingest.Extraction],
    timeout: float,
    stats: ExtractionStats,
    ocr_seconds_per_page: float = 0,
) -> None:
    """Wait until some busy child finishes, dies or runs out of time; record what happened."""
    busy = [c for c in children if c.job is not None]
    deadlines = [job.deadline for c in busy if (job := c.job) is not None and job.deadline is not None]
    wait_for = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
    wait([x for c in busy for x in (c.conn, c.proc.sentinel)], timeout=wait_for)
    now = time.monotonic()
    for child in busy:
        job = child.job
        assert job is not None
        finished = False
        try:
            while child.conn.poll():  # a finished file wins over its deadline
                message = child.conn.recv()
                if message[0] == "ocr":  # OCR of message[1] pages starts: more time for this file
                    job.ocr_pages += message[1]
                    if job.deadline is not None:
                        job.deadline += message[1] * ocr_seconds_per_page
                    continue
                _, ready[job.index], cpu = message
                stats.child_cpu_seconds += cpu
                child.job = None
                finished = True
                break
        except (EOFError, OSError):  # the pipe closed: the child is exiting or gone
            child.proc.join(timeout=5)
            if child.proc.is_alive():
                child.proc.kill()
                child.proc.join()
        if finished:
            continue
        if not child.proc.is_alive():
            reason = _death_reason(child.proc.exitcode)
        elif job.deadline is not None and now >= job.deadline:
            reason = _timeout_reason(timeout, job.ocr_pages, ocr_seconds_per_page)
        else:
            continue
        log.warning("%s: %s", ingest.display_name(str(job.path)), reason)
        ready[job.index] = ingest.stopped(job.path, reason)
        children.remove(child)
        child.close()
