"""OCR for pages without a text layer: render with PDFium, read with Tesseract.

* Rendering: ``pypdfium2`` (PDFium, the engine Chrome uses, as a wheel with no system libraries).
  It decodes every image filter scanners and fax servers write (CCITT G3/G4, JBIG2, JPEG, JPX,
  Flate) and honours ``/Rotate``; pypdf cannot render pages at all.
* Reading: the ``tesseract`` command (Debian ``tesseract-ocr`` + a language package), run as a
  subprocess with TSV output, which gives words with their layout (block / paragraph / line) and a
  confidence per word. The subprocess is started with ``PR_SET_PDEATHSIG`` so that when the
  extraction process is killed for running past its time limit, Tesseract dies with it; it also
  inherits that process's address-space cap. ``OMP_THREAD_LIMIT=1``: one core per extraction
  process, so ``ingest_workers`` is what scales OCR.

The text Tesseract returns is laid out as lines and paragraphs and then goes through the same
``clean_page_text`` and sentence cutting as a text layer, so ``page.text[start:end] == sentence``
holds for OCR text too. Nothing here raises for a bad page: every problem is a reason string.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO

ENGINE = "tesseract"
# Tesseract page segmentation mode 3 (fully automatic, its default). Mode 4 ("one column of text")
# keeps a hanging section number ("5.2.") with its line on straight pages, but on a page fed 2
# degrees crooked it lost up to 60% of the characters where mode 3 lost 2% (bench/ocr.py, docs/performance.md).
PAGE_SEGMENTATION = "3"
# ... except that mode 3 splits a column of hanging section numbers off into blocks of their own
# (read out of place, narrow ones dropped): a page where that happened is read again in mode 4 and
# that reading kept when it has at least 99% of mode 3's characters (``read_image``).
RETRY_SEGMENTATION = "4"
RETRY_KEEPS = 0.99
# Mode 4 assumes level lines: on a page 2 degrees crooked it keeps the characters but joins pieces
# of neighbouring lines (57-75% CER on such pages), so it is not tried past ~0.5 degrees of slope.
MAX_RETRY_SLOPE = 0.009
_ENUMERATOR = re.compile(r"\(?\d{1,3}(?:\.\d{1,3})*[.)]?")
MODES = ("auto", "off", "force")
_LANGUAGES = re.compile(r"^[A-Za-z0-9_]+(?:\+[A-Za-z0-9_]+)*$")

# Set by the extraction child process (``pipeline.ingest.extractors``): called with the number of
# pages about to be OCR'd, so the parent can extend the file's deadline before the slow part starts.
announce: Callable[[int], None] | None = None


@dataclass(frozen=True, slots=True)
class OcrConfig:
    """How ``ingest.extract`` treats pages: ``mode`` auto (pages without text), force (every page), off."""

    mode: str = "off"
    languages: str = "eng"
    dpi: int = 300
    low_confidence: float = 80.0  # pages whose confidence is below this are flagged
    # Set by the parent when it already knows OCR cannot run (engine or language missing): the
    # reason every file gets, without each child finding out again.
    unavailable: str | None = None


@dataclass(frozen=True, slots=True)
class OcrPage:
    text: str  # as Tesseract laid it out (lines, blank lines between paragraphs); not yet cleaned
    confidence: float | None  # 0-100, mean of word confidences weighted by word length; None: no words
    words: int


@functools.cache
def engine_version(binary: str = ENGINE) -> str | None:
    """Tesseract's version ("5.3.0"), or None when it is not on PATH or does not run."""
    path = shutil.which(binary)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, env=_env())
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"tesseract\s+v?(\S+)", out.stdout + out.stderr, re.IGNORECASE)
    return match.group(1) if match else None


@functools.cache
def installed_languages(binary: str = ENGINE) -> frozenset[str]:
    path = shutil.which(binary)
    if path is None:
        return frozenset()
    try:
        out = subprocess.run([path, "--list-langs"], capture_output=True, text=True, timeout=30, env=_env())
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    lines = (out.stdout or "").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("List of"))


def problem(languages: str) -> str | None:
    """Why OCR cannot run on this machine with these languages, or None when it can."""
    if engine_version() is None:
        return "the OCR engine is not installed (tesseract not found on PATH; apt-get install tesseract-ocr tesseract-ocr-eng)"
    if not _LANGUAGES.fullmatch(languages):
        return f"ocr_languages {languages!r} is not a Tesseract language list (e.g. 'eng' or 'eng+deu')"
    have = installed_languages()
    missing = [lang for lang in languages.split("+") if lang not in have]
    if missing:
        packages = " ".join(f"tesseract-ocr-{m.lower()}" for m in missing)
        return f"OCR language data {'+'.join(missing)} is not installed (apt-get install {packages})"
    return None


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TESSDATA_PREFIX")}
    env["OMP_THREAD_LIMIT"] = "1"
    return env


def _die_with_parent() -> None:  # runs in the forked child before exec
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def open_pdf(data: bytes, password: str | None):
    """A PDFium document, or a reason string."""
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(data, password=password or None)
    except Exception as exc:
        return f"the page renderer cannot open this PDF ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"


def render(pdf, index: int, dpi: int):
    """Page ``index`` (0-based) as an 8-bit grayscale PIL image at ``dpi``."""
    page = pdf[index]
    try:
        bitmap = page.render(scale=dpi / 72, grayscale=True)
        return bitmap.to_pil()
    finally:
        page.close()


def read_image(image, *, languages: str, dpi: int, binary: str = ENGINE) -> OcrPage | str:
    """Tesseract's text and confidence for one PIL image, or a reason string.

    Read with ``PAGE_SEGMENTATION`` (3); when that reading shows hanging section numbers split off
    their lines (``detached_enumerators``), the page is read again with ``RETRY_SEGMENTATION`` (4,
    one column) and the second reading is kept unless it lost text (``choose_reading``)."""
    path = shutil.which(binary)
    if path is None:
        return "the OCR engine is not installed (tesseract not found on PATH)"
    buf = BytesIO()
    image.convert("L").save(buf, "PPM")  # raw PGM: no compression cost on either side of the pipe
    pgm = buf.getvalue()
    first = _tesseract(path, pgm, languages=languages, dpi=dpi, psm=PAGE_SEGMENTATION)
    if not first.startswith("level\t") or detached_enumerators(first) == 0 or abs(line_slope(first)) > MAX_RETRY_SLOPE:
        return parse_tsv(first) if first.startswith("level\t") else first
    second = _tesseract(path, pgm, languages=languages, dpi=dpi, psm=RETRY_SEGMENTATION)
    return choose_reading(first, second if second.startswith("level\t") else None)


def _tesseract(path: str, pgm: bytes, *, languages: str, dpi: int, psm: str) -> str:
    """Tesseract's TSV (starts with its ``level`` header) or a reason string."""
    try:
        proc = subprocess.run(
            [path, "stdin", "stdout", "-l", languages, "--dpi", str(dpi), "--psm", psm, "tsv"],
            input=pgm,
            capture_output=True,
            env=_env(),
            preexec_fn=_die_with_parent,
        )
    except OSError as exc:
        return f"the OCR engine could not be started ({exc.strerror or exc})"
    if proc.returncode != 0:
        detail = " ".join(proc.stderr.decode("utf-8", "replace").split())[-200:]
        if proc.returncode < 0:
            detail = f"killed by signal {-proc.returncode}" + (" (out of memory?)" if -proc.returncode == 9 else "")
        return f"the OCR engine failed ({detail or f'exit code {proc.returncode}'})"
    out = proc.stdout.decode("utf-8", "replace")
    return out if out.startswith("level\t") else "level\t" + out  # an empty page: header only, or nothing


def detached_enumerators(tsv: str) -> int:
    """Blocks of Tesseract's layout that hold nothing but one section number ("2.10.", "3)", "(4)").

    In automatic mode Tesseract takes a column of hanging section numbers for a layout column of
    its own: each number becomes a block, read before or after all the text (and narrow ones like
    "2.1." are often dropped), so numbers leave the lines they belong to."""
    blocks: dict[tuple[str, str], list[str]] = {}
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5" or not (word := "\t".join(cols[11:]).strip()):
            continue
        blocks.setdefault((cols[1], cols[2]), []).append(word)
    return sum(1 for words in blocks.values() if len(words) == 1 and _ENUMERATOR.fullmatch(words[0]))


def line_slope(tsv: str) -> float:
    """The page's text-line slope (rise over run, median over lines of 3+ words): the bottom edge of
    a line's last word against its first word's. 0.0 when no line is long enough to tell."""
    lines: dict[tuple[str, str, str, str], list[tuple[int, int]]] = {}
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5" or not "\t".join(cols[11:]).strip():
            continue
        try:
            left, bottom = int(cols[6]), int(cols[7]) + int(cols[9])
        except ValueError:
            continue
        lines.setdefault((cols[1], cols[2], cols[3], cols[4]), []).append((left, bottom))
    slopes = sorted(
        (ws[-1][1] - ws[0][1]) / (ws[-1][0] - ws[0][0])
        for ws in lines.values()
        if len(ws) >= 3 and ws[-1][0] - ws[0][0] >= 200
    )
    return slopes[len(slopes) // 2] if slopes else 0.0


def choose_reading(first: str, second: str | None) -> OcrPage:
    """The retry (one-column) reading when it kept at least ``RETRY_KEEPS`` of the first one's
    characters, else the first: on a crooked page one-column mode loses whole stretches of text."""
    a = parse_tsv(first)
    if second is None:
        return a
    b = parse_tsv(second)
    if _chars(b.text) >= RETRY_KEEPS * _chars(a.text):
        return b
    return a


def _chars(text: str) -> int:
    return sum(1 for ch in text if not ch.isspace())


def parse_tsv(tsv: str) -> OcrPage:
    """Words of Tesseract's TSV output back into lines and paragraphs, with a page confidence."""
    paragraphs: list[list[str]] = []
    lines: dict[tuple[int, int, int], list[str]] = {}
    order: list[tuple[int, int, int]] = []
    weighted = chars = 0.0
    words = 0
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5":
            continue
        text = "\t".join(cols[11:]).strip()
        if not text:
            continue
        try:
            key = (int(cols[2]), int(cols[3]), int(cols[4]))
            conf = float(cols[10])
        except ValueError:
            continue
        if key not in lines:
            lines[key] = []
            order.append(key)
        lines[key].append(text)
        words += 1
        if conf >= 0:
            weighted += conf * len(text)
            chars += len(text)
    current: tuple[int, int] | None = None
    for key in order:
        if key[:2] != current:
            paragraphs.append([])
            current = key[:2]
        paragraphs[-1].append(" ".join(lines[key]))
    text = "\n\n".join("\n".join(p) for p in paragraphs)
    return OcrPage(text=text, confidence=round(weighted / chars, 1) if chars else None, words=words)
