"""Generators of bad (and small good) input files for tests.

Each generator writes one file into the folder it is given and returns its path. PDFs are either
corpus PDFs altered with pypdf or hand-built with ``build_pdf`` (real, minimal PDF syntax), so
every file is something a reader could meet in an inbox.
"""

from __future__ import annotations

import zipfile
import zlib
from io import BytesIO
from pathlib import Path

from pypdf import PdfReader, PdfWriter

from pipeline.quality.scans import assemble_pdf
from pipeline.settings import REPO_ROOT

CORPUS_DIR = REPO_ROOT / "examples" / "contracts"
# Small (4 pages, ~60 KB) corpus PDF used as the base of altered copies.
SAMPLE_PDF = CORPUS_DIR / "commonpaper-mutual-nda-v1.pdf"
SAMPLE_PAGES = 4


# -- hand-built PDFs ----------------------------------------------------------------------------


def _escape(text: str) -> bytes:
    raw = text.encode("cp1252", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _text_content(text: str) -> bytes:
    lines = b" T* ".join(b"(" + _escape(line) + b") Tj" for line in text.split("\n"))
    return b"BT /F1 11 Tf 14 TL 72 740 Td " + lines + b" ET"


_IMAGE = b"<< /Type /XObject /Subtype /Image /Width 2 /Height 2 /ColorSpace /DeviceGray /BitsPerComponent 8 /Length 4 >>\nstream\n\x00\xff\xff\x00\nendstream"


def build_pdf(pages: list[str | None], *, image_pages: frozenset[int] = frozenset()) -> bytes:
    """A minimal valid PDF: one page per entry, with that text (lines split on "\\n") or none.

    A 0-based index in ``image_pages`` also draws a small image on that page, like a scan.
    """
    objects: list[bytes] = [
        b"",
        b"",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    kids: list[int] = []
    for index, text in enumerate(pages):
        ops = b""
        resources = b"/Font << /F1 3 0 R >>"
        if index in image_pages:
            objects.append(_IMAGE)
            resources += b" /XObject << /Im1 %d 0 R >>" % len(objects)
            ops += b"q 200 0 0 200 100 400 cm /Im1 Do Q\n"
        if text:
            ops += _text_content(text)
        objects.append(b"<< /Length %d >>\nstream\n" % len(ops) + ops + b"\nendstream")
        content = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << %s >> /Contents %d 0 R >>"
            % (resources, content)
        )
        kids.append(len(objects))
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    return _assemble(objects)


_assemble = assemble_pdf  # the same writer the OCR scans use (pipeline/quality/scans.py)


def text_pdf(folder: Path, pages: list[str | None], name: str = "text.pdf") -> Path:
    """A PDF with the given text per page (None: a page with no text)."""
    path = folder / name
    path.write_bytes(build_pdf(pages))
    return path


def image_only_pdf(folder: Path, name: str = "scan.pdf") -> Path:
    """One page holding only an image, as a scanner makes it: no text layer."""
    path = folder / name
    path.write_bytes(build_pdf([None], image_pages=frozenset({0})))
    return path


def deeply_nested_pdf(folder: Path, depth: int = 50_000, name: str = "nested.pdf") -> Path:
    """A page whose content stream nests arrays ``depth`` deep: recursion-heavy for parsers."""
    content = b"BT /F1 11 Tf 72 740 Td " + b"[" * depth + b"(x)" + b"]" * depth + b" TJ ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [5 0 R] /Count 1 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents 4 0 R >>",
    ]
    path = folder / name
    path.write_bytes(_assemble(objects))
    return path


def _one_stream_pdf(content: bytes, pages: int) -> bytes:
    """``pages`` pages that all draw the same Flate-compressed content stream."""
    packed = zlib.compress(content, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream",
    ]
    kids = []
    for _ in range(pages):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents 4 0 R >>"
        )
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    return _assemble(objects)


def slow_pdf(folder: Path, pages: int = 1000, operators: int = 20_000, name: str = "slow.pdf") -> Path:
    """A few kilobytes that keep a text extractor busy for minutes: every page draws one content
    stream of ``operators`` text-showing operators (~1 s per page for pypdf here)."""
    path = folder / name
    path.write_bytes(_one_stream_pdf(b"BT /F1 11 Tf 72 740 Td " + b"0 0 Td (x) Tj " * operators + b"ET", pages))
    return path


def inflating_pdf(folder: Path, megabytes: int, name: str = "bomb.pdf") -> Path:
    """One text page whose content stream is small on disk and inflates to ``megabytes`` MiB."""
    path = folder / name
    path.write_bytes(_one_stream_pdf(b"BT /F1 12 Tf (Hello) Tj ET " + b" " * (megabytes << 20), 1))
    return path


# -- corpus PDFs, altered --------------------------------------------------------------------------


def _write(writer: PdfWriter, path: Path) -> Path:
    buffer = BytesIO()
    writer.write(buffer)
    path.write_bytes(buffer.getvalue())
    return path


def encrypted_pdf(
    folder: Path,
    user_password: str = "s3cret",
    *,
    owner_password: str | None = "owner-pw",
    algorithm: str = "AES-128",
    source: Path = SAMPLE_PDF,
    name: str = "encrypted.pdf",
) -> Path:
    """A corpus PDF encrypted with ``user_password`` ("" = owner-only protection, opens without one)."""
    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password, owner_password=owner_password, algorithm=algorithm)
    return _write(writer, folder / name)


def owner_only_encrypted_pdf(folder: Path, name: str = "owner-only.pdf") -> Path:
    """Encrypted with an empty user password: restrictions only, readable by anyone."""
    return encrypted_pdf(folder, "", owner_password="owner-pw", algorithm="AES-256", name=name)


def pdf_with_blank_pages(
    folder: Path, blank_at: tuple[int, ...], *, source: Path = SAMPLE_PDF, name: str = "mixed.pdf"
) -> Path:
    """A corpus PDF with blank pages inserted so they land at the given 1-based page numbers."""
    writer = PdfWriter(clone_from=PdfReader(source))
    for number in sorted(blank_at):
        writer.insert_blank_page(index=number - 1)
    return _write(writer, folder / name)


def blank_page_pdf(folder: Path, pages: int = 1, name: str = "blank.pdf") -> Path:
    """Only blank pages (pypdf's add_blank_page)."""
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=612, height=792)
    return _write(writer, folder / name)


def zero_page_pdf(folder: Path, name: str = "zero-pages.pdf") -> Path:
    """A well-formed PDF whose page tree is empty."""
    return _write(PdfWriter(), folder / name)


def truncated_pdf(
    folder: Path, fraction: float = 0.5, *, source: Path = SAMPLE_PDF, name: str = "truncated.pdf"
) -> Path:
    """The first ``fraction`` of a corpus PDF's bytes, as an interrupted download leaves it."""
    data = source.read_bytes()
    path = folder / name
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def garbage_after_header_pdf(folder: Path, name: str = "garbage.pdf") -> Path:
    """Starts like a PDF, then is noise."""
    path = folder / name
    path.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 40)
    return path


# -- not PDFs at all ----------------------------------------------------------------------------


def zip_renamed_pdf(folder: Path, name: str = "contract.pdf") -> Path:
    """A .docx-like ZIP archive saved under a .pdf name."""
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document>This Agreement ...</w:document>")
    return path


def empty_file(folder: Path, name: str = "empty.pdf") -> Path:
    """Zero bytes."""
    path = folder / name
    path.write_bytes(b"")
    return path


def oversized_file(folder: Path, size: int, name: str = "huge.pdf") -> Path:
    """A sparse file of ``size`` bytes that starts like a PDF; takes no real disk space."""
    path = folder / name
    with path.open("wb") as handle:
        handle.write(b"%PDF-1.7\n")
        handle.truncate(size)
    return path


# -- text files -------------------------------------------------------------------------------------


def latin1_txt(folder: Path, name: str = "latin1.txt") -> Path:
    """Three form-feed-separated pages in Latin-1 (not UTF-8) with accented words."""
    text = "Café Agreement.\nThe señor pays 5 €.\fSecond page: naïve façade.\fThird page.\f"
    path = folder / name
    path.write_bytes(text.replace("€", "EUR").encode("latin-1"))
    return path


def utf8_bom_txt(folder: Path, text: str, name: str = "bom.txt") -> Path:
    """UTF-8 with a byte order mark, as Windows Notepad saves it."""
    path = folder / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    return path
