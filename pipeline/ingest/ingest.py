"""Files to pages to sentences: the first step of every batch, and the error taxonomy for files.

``extract`` never raises for bad input. Every problem becomes ``status="failed"`` (or
``"needs_ocr"``) with a reason a person can act on, so one bad file never stops a batch.
Sentences are spans of the cleaned page text: ``page.text[s.start:s.end] == s.text``.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pipeline.ingest import ocr as ocr_engine

SUPPORTED_SUFFIXES = (".pdf", ".txt")

# pypdf reports recoverable damage through logging; at WARNING it floods batch output.
logging.getLogger("pypdf").setLevel(logging.ERROR)


TEXT_LAYER = "text_layer"
OCR = "ocr"


@dataclass(frozen=True, slots=True)
class ExtractedPage:
    number: int  # 1-based physical page
    text: str  # cleaned text
    has_text: bool
    text_source: str = TEXT_LAYER  # "text_layer" | "ocr": where ``text`` came from
    ocr_engine: str | None = None  # set when OCR read (or tried to read) the page
    ocr_engine_version: str | None = None
    ocr_confidence: float | None = None  # 0-100, the engine's own mean word confidence


@dataclass(frozen=True, slots=True)
class ExtractedSentence:
    ordinal: int  # 1-based, document order
    page: int
    start: int  # span into pages[page - 1].text
    end: int
    text: str


@dataclass
class Extraction:
    """What one file turned into; ``status`` is ok, needs_ocr or failed (duplicates are storage's call)."""

    source: str  # file name (Path.name) for people
    path: Path
    sha256: str | None  # of the raw bytes; None only if the file could not be read
    kind: str  # "pdf" | "txt" (the bare suffix for an unsupported file, which always fails)
    size_bytes: int
    status: str  # "ok" | "needs_ocr" | "failed"
    reason: str  # "" for ok, unless OCR read pages: then how many (a document's status says so)
    pages: list[ExtractedPage] = field(default_factory=list)
    sentences: list[ExtractedSentence] = field(default_factory=list)

    @property
    def ocr_pages(self) -> int:
        """Pages whose text OCR read."""
        return sum(1 for p in self.pages if p.text_source == OCR and p.has_text)


# --------------------------------------------------------------------------------------------
# discovery


def _expected() -> str:
    return " or ".join(SUPPORTED_SUFFIXES)


def _supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def _walk(folder: Path) -> list[Path]:
    found: list[Path] = []
    # os.walk does not follow symlinked folders, so a link loop cannot hang discovery.
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root, f) for f in files if not f.startswith(".") and _supported(Path(f)))
    return sorted(found)


def discover(paths: Sequence[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files, folders (recursive) and glob patterns into supported files.

    Returns ``(files, problems)``; a problem is ``(path as given, reason)``. Folders and globs
    pick up only .pdf/.txt files (any case) and skip hidden ones; a file named directly must have
    a supported suffix. Repeated paths are returned once, in first-seen order.
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)

    for given in paths:
        text = str(given)
        path = Path(text).expanduser()
        if path.is_dir():
            found = _walk(path)
            if not found:
                problems.append((text, f"folder has no {_expected()} files"))
            root = path.resolve()
            for f in found:
                # An inbox is a trust boundary: a link inside it must not pull in files from elsewhere.
                if f.is_symlink() and not f.resolve().is_relative_to(root):
                    problems.append((str(f), f"symlink points outside {path}: refused"))
                else:
                    add(f)
        elif path.exists():
            if _supported(path):
                add(path)
            else:
                suffix = path.suffix or "(no extension)"
                problems.append((text, f"unsupported file type {suffix} (expected {_expected()})"))
        elif glob.has_magic(text):
            matched: list[Path] = []
            for hit in sorted(glob.glob(os.path.expanduser(text), recursive=True)):
                p = Path(hit)
                if p.is_dir():
                    matched.extend(_walk(p))
                elif p.is_file() and _supported(p):
                    matched.append(p)
            if not matched:
                problems.append((text, f"no {_expected()} files match this pattern"))
            for f in matched:
                add(f)
        else:
            problems.append((text, "no such file or folder"))
    return files, problems


# --------------------------------------------------------------------------------------------
# cleaning

# Paragraph-level separators become blank lines; other line separators become newlines.
_CHAR_MAP: dict[int, str | None] = {
    0x0C: "\n\n",
    0x2029: "\n\n",
    0x0B: "\n",
    0x85: "\n",
    0x2028: "\n",
    0x09: " ",
    0xAD: None,  # soft hyphen: an invisible hyphenation point
    0x200B: None,
    0x200C: None,
    0x200D: None,
    0x2060: None,
    0xFEFF: None,
    0xFB00: "ff",
    0xFB01: "fi",
    0xFB02: "fl",
    0xFB03: "ffi",
    0xFB04: "ffl",
    0xFB05: "st",
    0xFB06: "st",
    # Symbol/Wingdings bullets that Word PDFs leave in the private use area.
    0xF0B7: "•",
    0xF0A7: "•",
    0xF0D8: "•",
    0xF076: "•",
    0xF0FC: "•",
}
for _c in [*range(0x00, 0x09), *range(0x0E, 0x20), *range(0x7F, 0x85), *range(0x86, 0xA0)]:
    _CHAR_MAP[_c] = None
_CHAR_MAP[0x0D] = "\n"  # after \r\n has been folded

# Runs of whitespace other than newline, and single odd spaces (tab, no-break...); a lone " " is
# left alone because replacing it with itself is most of the cost on ordinary text.
_HSPACE = re.compile(r"[^\S\n]{2,}|[^\S\n ]")
_WORD = re.compile(r"[^\W\d_]+")
# A line that starts a list item or numbered section: "1.", "2.3", "12.3.", "(a)", "a)", "A.", "(iv)", "•".
_MARKER_FORMS = r"(?:\(?\d{1,3}[.)]|[A-Z]\d{1,3}-\d{1,3}\.|\d{1,3}(?:\.\d{1,3})+\.?|\([0-9A-Za-z]{1,4}\)|[A-Za-z][.)]|[ivxlcIVXLC]{1,6}\.|[•▪◦●■□\-–—*§])"
_MARKER = re.compile(_MARKER_FORMS + r"(?:\s|$)")
_LONE_MARKER = re.compile(_MARKER_FORMS)  # fullmatch: a bullet alone on its line belongs to the next
# Finished text before a list item: terminal punctuation, or "...; and" / "..., or".
_TERMINAL = re.compile(r"(?:[.!?:;][\"'”’)\]]*|[;,] (?:and|or))$")
_HYPHEN_END = re.compile(r"([^\W\d_]+)-$")
# Starts only at a word's first letter, so a page-long run of letters is scanned once, not n times.
_BROKEN_FRAGMENT = re.compile(r"(?<![^\W\d_])[^\W\d_]++-[^\S\n]*\n[^\S\n]*[^\W\d_]*")
# A line-end hyphen after one of these is part of a compound ("non-refundable"), not a break.
_PREFIXES = frozenset(
    "non sub pre re co de self anti multi cross post inter intra over under semi quasi ex pro counter "
    "mid on off out up well e".split()
)
# ... and a line-end hyphen before one of these is a compound's too ("royalty-free").
_COMPOUND_HEADS = frozenset("free based related specific owned wide like level party term time made".split())
# Line lengths as shares of the page's typical width: shorter lines end a paragraph or are headings,
# and a line that stopped with room left for the next word was ended on purpose.
_SHORT_LINE = 0.6
_FITS = 0.8
_NO_CAPITALS = dict.fromkeys(range(ord("A"), ord("Z") + 1))


def _keeps_hyphen(left: str, right: str, page_words: set[str]) -> bool:
    """Whether ``left-`` + newline + ``right`` is a compound's hyphen rather than a word broken in two.

    The page is the dictionary: the joined word seen elsewhere means a break ("indemni-fication");
    either part seen as a word elsewhere ("royalty-free"), a capital ("Provider-procured") or a
    common prefix ("non-refundable") means a compound.
    """
    lowered, right = left.lower(), right.lower()
    if lowered + right in page_words:
        return False
    return (
        left[0].isupper()
        or lowered in _PREFIXES
        or right in _COMPOUND_HEADS
        or lowered in page_words
        or right in page_words
    )


def _breaks_paragraph(prev: str, line: str, width: int) -> bool:
    """Whether the line break between ``prev`` and ``line`` ends a paragraph or heading."""
    marker = _MARKER.match(line)
    if line[0].islower() and not marker:  # "a. if the other party..." is a list item, not a run-on
        return False
    if _LONE_MARKER.fullmatch(prev):
        return False
    if len(prev) < width * _SHORT_LINE or (marker and _TERMINAL.search(prev)):
        return True
    # The line stopped although the next word would have fitted: its writer ended it there. Not
    # for ALL-CAPS lines, whose wide letters fill a line with fewer characters.
    capitals = len(prev) - len(prev.translate(_NO_CAPITALS))
    return capitals * 2 < len(prev) and len(prev) + 1 + len(line.split(" ", 1)[0]) <= width * _FITS


def clean_page_text(raw: str) -> str:
    """Normalize one page of extracted text: NFC, no control chars, paragraphs separated by "\\n\\n".

    Lines of a paragraph are joined with a space; a line-end hyphen before a lowercase letter is
    dropped unless it looks like a compound's hyphen. A line break becomes a paragraph break after
    a blank line; and, when the next line does not run on in lowercase, after a short line (a
    heading, a paragraph's last line), before a list/section marker that follows finished text, and
    wherever the next word would have fitted on the line (so its writer ended the line).
    """
    # Translate before NFC: dropping a soft hyphen can bring a letter and its accent together.
    text = unicodedata.normalize("NFC", raw.replace("\r\n", "\n").translate(_CHAR_MAP))
    lines = [_HSPACE.sub(" ", line).strip() for line in text.split("\n")]
    lengths = sorted(len(line) for line in lines if line)
    if not lengths:
        return ""
    # A high percentile, not the max, so one overlong line does not make every line look short.
    width = lengths[min(len(lengths) - 1, int(len(lengths) * 0.8))]
    page_words: set[str] | None = None

    paragraphs: list[str] = []
    current: list[str] = []
    prev = ""
    for line in lines:
        if not line:
            if current:
                paragraphs.append("".join(current))
                current = []
            prev = ""
            continue
        if not current:
            current.append(line)
            prev = line
            continue
        lower_next = line[0].islower()
        if _breaks_paragraph(prev, line, width):
            paragraphs.append("".join(current))
            current = [line]
        else:
            hyphen = _HYPHEN_END.search(prev) if lower_next and prev[-1] == "-" else None
            if hyphen:
                if page_words is None:
                    # Words elsewhere on the page, minus both halves of every line-end hyphenation.
                    page_words = {w.lower() for w in _WORD.findall(_BROKEN_FRAGMENT.sub(" ", text))}
                right = _WORD.match(line)
                if not _keeps_hyphen(hyphen.group(1), right.group() if right else "", page_words):
                    current[-1] = current[-1][:-1]
                current.append(line)
            else:
                current.append(" ")
                current.append(line)
        prev = line
    if current:
        paragraphs.append("".join(current))
    # Joining lines can also compose (Hangul jamo); NFC of NFC text is a fast no-op.
    return unicodedata.normalize("NFC", "\n\n".join(paragraphs))


# --------------------------------------------------------------------------------------------
# sentences

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_TRIM = re.compile(r"\S(?:.*\S)?", re.DOTALL)
# Terminal punctuation (plus closing quotes/brackets) followed by whitespace and a next char.
# Starts only at the first mark of a run ("...", "?!"), which keeps a line of dot leaders linear.
_CANDIDATE = re.compile(r"(?<![.!?])[.!?][.!?\"'”’)\]]*+(?=(\s+)(\S))")
_OPENERS = "\"'“‘([§•"
_ABBREVIATIONS = frozenset(
    """inc. ltd. co. corp. llc. l.l.c. plc. u.s. u.s.a. u.k. e.g. i.e. etc. no. nos. sec. secs. art. arts.
    vs. v. mr. ms. mrs. dr. st. jr. sr. para. paras. p. pp. ch. cl. fig. approx. dept. ex. exh. cf. al.
    viz. seq. ref. cal. calif. n.a. s.a. a.m. p.m. jan. feb. mar. apr. jun. jul. aug. sep. sept. oct.
    nov. dec. mfg. bros. assn. int'l. gov't. govt.""".split()
)
_INITIALS = re.compile(r"(?:[^\W\d_]\.)+")  # "J.", "U.S.", "e.g."
_ENUMERATOR = re.compile(
    r"(?:\d{1,3}(?:\.\d{1,3})*|[A-Z]\d{1,3}-\d{1,3}|[ivxlcdm]{1,6}|[IVXLCDM]{1,6})\."
)  # "1.", "2.3.", "iv."
_LOOKBACK = 40  # longest token considered when vetoing a split


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    m = _TRIM.search(text, start, end)
    return (m.start(), m.end()) if m else None


def _paragraph_sentences(text: str, start: int, end: int, out: list[tuple[int, int]]) -> None:
    sentence_start = start
    for m in _CANDIDATE.finditer(text, start, end):
        nxt = m.group(2)
        if not (nxt.isupper() or nxt.isdigit() or nxt in _OPENERS):
            continue
        if text[m.start()] == ".":
            window = text[max(sentence_start, m.start() - _LOOKBACK) : m.start() + 1].split()
            if not window:
                continue
            token = window[-1].lstrip("\"'“‘([")
            if token.lower() in _ABBREVIATIONS or _INITIALS.fullmatch(token):
                continue
            if (
                _ENUMERATOR.fullmatch(token)
                and len(window) == 1
                and _trimmed(text, sentence_start, m.start() + 1 - len(window[-1])) is None
            ):
                # "1. Services." / "12.3. Notices": the number labels the sentence, it does not end one.
                continue
        span = _trimmed(text, sentence_start, m.end())
        if span:
            out.append(span)
        sentence_start = m.end()
    span = _trimmed(text, sentence_start, end)
    if span:
        out.append(span)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Split cleaned text into sentence spans ``(start, end)``: stripped, non-empty, in order.

    Splits at paragraph breaks (so a heading on its own line is its own sentence) and after
    . ! ? followed by whitespace and a capital, digit, quote or bracket, except after common
    abbreviations, initials and a leading section number. A single newline does not split:
    ``clean_page_text`` has already decided which line breaks end paragraphs. Text without such
    punctuation stays one sentence however long it is.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        _paragraph_sentences(text, start, m.start(), spans)
        start = m.end()
    _paragraph_sentences(text, start, len(text), spans)
    return spans


# --------------------------------------------------------------------------------------------
# extraction

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP archive (e.g. .docx, .xlsx)"),
    (b"\xd0\xcf\x11\xe0", "an old Office document (.doc/.xls)"),
    (b"{\\rtf", "an RTF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"%PDF-", "a PDF"),
)
_PDF_HEADER_WINDOW = 1024  # readers accept junk before %PDF- within the first KB


def _looks_like(data: bytes) -> str | None:
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    return None


def _human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{n} bytes"  # unreachable


def _short_error(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    if len(message) > 160:
        message = message[:157] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _failed(base: Extraction, reason: str) -> Extraction:
    base.status = "failed"
    base.reason = reason
    base.pages = []
    base.sentences = []
    return base


def _stream_caps(limit: int):
    """pypdf's per-stream decompression limits, set to ``limit`` for this file (a small PDF can
    inflate to gigabytes: a decompression bomb)."""
    from pypdf._configuration import apply_configuration

    return apply_configuration(
        maximum_declared_stream_length=limit,
        array_based_stream_maximum_output_length=limit,
        zlib_maximum_output_length=limit,
        lzw_maximum_output_length=limit,
        run_length_maximum_output_length=limit,
        jbig2_maximum_output_length=limit,
        image_maximum_buffer_size=limit,
    )


def _limit_reason(limit: int) -> str:
    return f"a compressed stream inflates past the {_human_bytes(limit)} cap (max_decompressed_bytes)"


def _pdf_pages(data: bytes, *, password: str | None, max_pages: int) -> list[str] | str:
    """The raw text of every page, or a failure reason."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    offset = data.find(b"%PDF-", 0, _PDF_HEADER_WINDOW)
    if offset < 0:
        like = _looks_like(data)
        return f"not a PDF: it looks like {like}" if like else "not a PDF: it has no %PDF- header"
    from pypdf.errors import LimitReachedError

    try:
        reader = PdfReader(BytesIO(data))
    except LimitReachedError:
        raise
    except Exception as exc:
        return f"corrupt or truncated PDF ({_short_error(exc)})"
    if reader.is_encrypted:
        try:
            opened = bool(reader.decrypt(""))  # owner-only protection opens with an empty password
            if not opened and password:
                if not reader.decrypt(password):
                    return "encrypted; the password given is wrong"
                opened = True
        except DependencyError as exc:
            return f"encrypted with a method this install cannot open ({_short_error(exc)})"
        except Exception as exc:
            return f"encrypted and could not be decrypted ({_short_error(exc)})"
        if not opened:
            return "encrypted; pass --password"
    try:
        count = len(reader.pages)
    except Exception as exc:
        return f"corrupt PDF: cannot read its page list ({_short_error(exc)})"
    if count == 0:
        return "PDF has no pages"
    if count > max_pages:
        return f"file has {count} pages, over the {max_pages}-page cap (max_pages)"
    texts: list[str] = []
    for index in range(count):
        try:
            texts.append(reader.pages[index].extract_text() or "")
        except LimitReachedError:
            raise
        except RecursionError:
            return f"corrupt PDF: page {index + 1} is nested too deeply to read"
        except MemoryError:
            return f"ran out of memory reading page {index + 1}"
        except Exception as exc:
            return f"corrupt PDF: text of page {index + 1} cannot be read ({_short_error(exc)})"
    return texts


def _decode_text(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")  # maps every byte, so this is the no-crash floor


def _txt_pages(data: bytes, *, max_pages: int) -> list[str] | str:
    if b"\x00" in data[:4096] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        like = _looks_like(data)
        return f"not a text file: it looks like {like or 'binary data'}"
    if data.startswith(b"%PDF-"):
        return "not a text file: it looks like a PDF (rename it to .pdf)"
    text = _decode_text(data)
    pages = text.split("\f")
    # A form feed ends a page, so a file ending in one does not start an empty extra page.
    if len(pages) > 1 and not pages[-1].strip():
        pages.pop()
    if len(pages) > max_pages:
        return f"file has {len(pages)} pages, over the {max_pages}-page cap (max_pages)"
    if not any(page.strip() for page in pages):
        return "text file has no text (only whitespace)"
    return pages


def display_name(name: str) -> str:
    """A file name safe to store and print: bytes that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def stopped(path: Path, reason: str) -> Extraction:
    """A failed Extraction for a file whose reading was stopped from outside (a time limit, the
    extracting process dying). The bytes are hashed here so the failure is recorded like any other."""
    path = Path(path)
    result = Extraction(
        source=path.name,
        path=path,
        sha256=None,
        kind=path.suffix.lower().lstrip("."),
        size_bytes=0,
        status="failed",
        reason=reason,
    )
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
                result.size_bytes += len(block)
        result.sha256 = digest.hexdigest()
    except OSError:
        pass
    return result


def _no_text_reason(pages: list[int]) -> str:
    listed = ", ".join(str(p) for p in pages)
    noun = "page" if len(pages) == 1 else "pages"
    return f"no text layer on {noun} {listed} (needs OCR)"


def extract(
    path: Path,
    *,
    password: str | None = None,
    max_pages: int = 2000,
    max_bytes: int = 200 * 1024 * 1024,
    max_decompressed_bytes: int = 75_000_000,
    ocr: ocr_engine.OcrConfig | None = None,
) -> Extraction:
    """Read one .pdf or .txt file into cleaned pages and sentences. Never raises for bad input.

    With ``ocr`` (mode auto or force) PDF pages without a text layer (force: every page) are
    rendered and read by OCR (``pipeline.ingest.ocr``); the default is no OCR. A PDF page still
    without text makes the file ``needs_ocr`` with the reason (its other pages are still returned);
    an empty page between form feeds in a .txt file is just an empty page.
    """
    from pypdf.errors import LimitReachedError

    path = Path(path)
    suffix = path.suffix.lower()
    result = Extraction(
        source=path.name, path=path, sha256=None, kind=suffix.lstrip("."), size_bytes=0, status="ok", reason=""
    )
    if suffix not in SUPPORTED_SUFFIXES:
        return _failed(result, f"unsupported file type {path.suffix or '(no extension)'} (expected {_expected()})")
    try:
        if path.is_dir():
            return _failed(result, "is a folder, not a file")
        result.size_bytes = path.stat().st_size
    except FileNotFoundError:
        return _failed(result, "no such file")
    except OSError as exc:
        return _failed(result, f"cannot read file ({exc.strerror or _short_error(exc)})")
    # Checked before reading so a huge file costs nothing.
    if result.size_bytes > max_bytes:
        return _failed(
            result,
            f"file is {_human_bytes(result.size_bytes)}, over the {_human_bytes(max_bytes)} cap (max_file_bytes)",
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _failed(result, f"cannot read file ({exc.strerror or _short_error(exc)})")
    result.size_bytes = len(data)
    result.sha256 = hashlib.sha256(data).hexdigest()
    if not data:
        return _failed(result, "empty file (0 bytes)")
    if len(data) > max_bytes:  # grew between stat and read
        return _failed(
            result, f"file is {_human_bytes(len(data))}, over the {_human_bytes(max_bytes)} cap (max_file_bytes)"
        )

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if suffix == ".pdf":
                with _stream_caps(max_decompressed_bytes):
                    raw_pages = _pdf_pages(data, password=password, max_pages=max_pages)
            else:
                raw_pages = _txt_pages(data, max_pages=max_pages)
    except LimitReachedError:
        return _failed(result, _limit_reason(max_decompressed_bytes))
    except RecursionError:
        return _failed(result, "corrupt PDF: structure nested too deeply to read")
    except MemoryError:
        return _failed(result, "ran out of memory reading the file")
    except Exception as exc:  # a parser bug on hostile input must not stop the batch
        return _failed(result, f"could not read the file ({_short_error(exc)})")
    if isinstance(raw_pages, str):
        return _failed(result, raw_pages)

    pages = [
        ExtractedPage(number=number, text=text, has_text=bool(text))
        for number, text in enumerate((clean_page_text(raw) for raw in raw_pages), start=1)
    ]
    ocr = ocr if ocr is not None else ocr_engine.OcrConfig()
    ocr_failures: dict[int, str] = {}
    if suffix == ".pdf" and ocr.mode != "off":
        try:
            ocr_failures = _ocr_pages(pages, data, password=password, config=ocr)
        except MemoryError:
            return _failed(result, "ran out of memory while OCR'ing the file")
        except Exception as exc:  # a renderer bug on hostile input must not stop the batch
            return _failed(result, f"could not OCR the file ({_short_error(exc)})")
    result.pages = pages
    ordinal = 0
    for page in pages:
        for start, end in split_sentences(page.text):
            ordinal += 1
            result.sentences.append(
                ExtractedSentence(ordinal=ordinal, page=page.number, start=start, end=end, text=page.text[start:end])
            )
    empty = [page.number for page in result.pages if not page.has_text]
    if empty and suffix == ".pdf":
        result.status = "needs_ocr"
        result.reason = _no_text_reason(empty)
        if ocr.mode != "off":
            result.reason += ": " + _ocr_failure_reason(empty, ocr_failures, ocr)
    elif result.ocr_pages:
        result.reason = ocr_summary(result.pages, low_confidence=ocr.low_confidence)
    return result


def ocr_summary(pages: Sequence[ExtractedPage], *, low_confidence: float) -> str:
    """ "2 of 5 pages read by OCR (tesseract 5.3.0); low confidence on page 4 (61)": what a document's status shows."""
    read = [p for p in pages if p.text_source == OCR and p.has_text]
    if not read:
        return ""
    engine = f"{read[0].ocr_engine} {read[0].ocr_engine_version}".strip()
    text = f"{len(read)} of {len(pages)} page{'s' if len(pages) != 1 else ''} read by OCR ({engine})"
    low = [p for p in read if p.ocr_confidence is not None and p.ocr_confidence < low_confidence]
    if low:
        listed = ", ".join(f"{p.number} ({p.ocr_confidence:.0f})" for p in low)
        text += f"; low OCR confidence on page{'s' if len(low) != 1 else ''} {listed}"
    return text


def _ocr_failure_reason(empty: list[int], failures: dict[int, str], config: ocr_engine.OcrConfig) -> str:
    if config.unavailable:
        return config.unavailable
    parts = []
    silent = [n for n in empty if n not in failures]
    if silent:
        listed = ", ".join(str(n) for n in silent)
        parts.append(f"OCR found no words on page{'s' if len(silent) != 1 else ''} {listed}")
    parts += [f"page {n}: {why}" for n, why in sorted(failures.items())]
    return "; ".join(parts)


def _ocr_pages(
    pages: list[ExtractedPage], data: bytes, *, password: str | None, config: ocr_engine.OcrConfig
) -> dict[int, str]:
    """OCR the pages that need it, replacing them in ``pages``; returns {page number: why OCR failed}.

    auto: pages without text; force: every page (a page OCR cannot read keeps its text layer).
    """
    targets = [i for i, p in enumerate(pages) if config.mode == "force" or not p.has_text]
    if not targets or config.unavailable:
        return {}
    version = ocr_engine.engine_version()
    if version is None:
        return {pages[i].number: "the OCR engine is not installed (tesseract not found on PATH)" for i in targets}
    if ocr_engine.announce is not None:
        ocr_engine.announce(len(targets))  # the extraction parent extends this file's deadline
    pdf = ocr_engine.open_pdf(data[data.find(b"%PDF-") :], password)
    if isinstance(pdf, str):
        return {pages[i].number: pdf for i in targets}
    failures: dict[int, str] = {}
    try:
        if len(pdf) != len(pages):
            why = f"the page renderer sees {len(pdf)} pages where the text reader saw {len(pages)}"
            return {pages[i].number: why for i in targets}
        for i in targets:
            page = pages[i]
            try:
                image = ocr_engine.render(pdf, i, config.dpi)
            except MemoryError:
                raise
            except Exception as exc:
                failures[page.number] = f"the page cannot be rendered ({_short_error(exc)})"
                continue
            read = ocr_engine.read_image(image, languages=config.languages, dpi=config.dpi)
            del image
            if isinstance(read, str):
                failures[page.number] = read
                continue
            text = clean_page_text(read.text)
            if not text and page.has_text:  # force mode, OCR saw nothing: the text layer stays
                continue
            pages[i] = ExtractedPage(
                number=page.number,
                text=text,
                has_text=bool(text),
                text_source=OCR,
                ocr_engine=ocr_engine.ENGINE,
                ocr_engine_version=version,
                ocr_confidence=read.confidence,
            )
    finally:
        pdf.close()
    return failures
