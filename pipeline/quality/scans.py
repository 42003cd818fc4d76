"""Scans made from real text, for measuring OCR and for tests: pages of a text PDF rendered to
images (any dpi; optionally skewed, noisy or 1-bit like a fax) and rebuilt as image-only PDFs.

The PDFs are written by hand (real, minimal PDF syntax) so the image encoding is the one chosen:
Flate for grayscale, CCITT Group 4 (``/CCITTFaxDecode``, as fax servers and office scanners write)
or JBIG2 (``/JBIG2Decode``, as high-volume scanners write) for 1-bit pages. The JBIG2 stream is
one generic region coded with MMR (JBIG2's T.6 mode, ITU T.88 6.2.6), the encoding a JBIG2 decoder
must accept; the CCITT Group 4 bytes come from libtiff through Pillow.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageFilter


def render_pages(pdf: Path, dpi: int, pages: Sequence[int] | None = None) -> list[Image.Image]:
    """Pages (0-based indices, default all) of ``pdf`` as 8-bit grayscale images at ``dpi``."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    try:
        wanted = range(len(doc)) if pages is None else pages
        out = []
        for i in wanted:
            page = doc[i]
            out.append(page.render(scale=dpi / 72, grayscale=True).to_pil().convert("L"))
            page.close()
        return out
    finally:
        doc.close()


def skewed(image: Image.Image, degrees: float = 2.0) -> Image.Image:
    """The page fed crooked: rotated by ``degrees`` on a canvas grown to hold all of it (nothing cut
    off), white filling the corners."""
    return image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)


def noisy(image: Image.Image, *, seed: int = 0, speckle: float = 0.01, blur: float = 0.8) -> Image.Image:
    """A worn copy: slightly blurred, then ``speckle`` of the pixels flipped to black or white."""
    out = image.filter(ImageFilter.GaussianBlur(blur)) if blur else image.copy()
    rng = random.Random(seed)
    width, height = out.size
    pixels = out.load()
    assert pixels is not None
    for _ in range(int(width * height * speckle)):
        pixels[rng.randrange(width), rng.randrange(height)] = 0 if rng.random() < 0.5 else 255
    return out


def bilevel(image: Image.Image, threshold: int = 160) -> Image.Image:
    """1-bit, as a fax machine or a bilevel scanner keeps a page (no dithering)."""
    return image.point(lambda v: 255 if v >= threshold else 0).convert("1", dither=Image.Dither.NONE)


# -- image-only PDFs --------------------------------------------------------------------------


def _g4(image: Image.Image) -> bytes:
    """CCITT Group 4 (T.6) data of a 1-bit image, 0 bits white (the fax convention), one strip."""
    inverted = image.convert("L").point(lambda v: 255 - v).convert("1", dither=Image.Dither.NONE)
    buf = BytesIO()
    inverted.save(buf, "TIFF", compression="group4", tiffinfo={278: image.height})
    tiff = Image.open(BytesIO(buf.getvalue()))
    tags = tiff.tag_v2  # type: ignore[attr-defined]  # a TIFF's tags (Pillow types Image.open as ImageFile)
    offsets, counts = tags[273], tags[279]
    assert len(offsets) == 1, "expected one strip"
    data = buf.getvalue()
    return data[offsets[0] : offsets[0] + counts[0]]


def _segment(number: int, kind: int, data: bytes) -> bytes:
    # number, flags (type; 1-byte page association), no referred-to segments, page 1, data length.
    return struct.pack(">IBBBI", number, kind, 0, 1, len(data)) + data


def _jbig2(image: Image.Image, dpi: int) -> bytes:
    """An embedded JBIG2 stream (PDF's JBIG2Decode form: no file header): page information, one
    immediate lossless generic region coded with MMR, end of page."""
    width, height = image.size
    ppm = round(dpi / 0.0254)
    page_info = struct.pack(">IIIIBH", width, height, ppm, ppm, 0, 0)
    region = struct.pack(">IIIIB", width, height, 0, 0, 0) + bytes([0x01])  # generic region flags: MMR=1
    return _segment(0, 48, page_info) + _segment(1, 39, region + _g4(image)) + _segment(2, 49, b"")


def _image_object(image: Image.Image, encoding: str, dpi: int) -> tuple[bytes, bytes]:
    """(image dictionary entries, stream data)."""
    width, height = image.size
    if encoding == "flate":
        gray = image.convert("L")
        head = f"/Width {width} /Height {height} /ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode"
        return head.encode(), zlib.compress(gray.tobytes(), 6)
    one = bilevel(image) if image.mode != "1" else image
    if encoding == "ccitt":
        head = (
            f"/Width {width} /Height {height} /ColorSpace /DeviceGray /BitsPerComponent 1 /Filter /CCITTFaxDecode "
            f"/DecodeParms << /K -1 /Columns {width} /Rows {height} /BlackIs1 false >>"
        )
        return head.encode(), _g4(one)
    if encoding == "jbig2":
        # JBIG2 1 bits are black; the JBIG2Decode filter already delivers them as DeviceGray 0 (PDF 32000 7.4.7).
        head = f"/Width {width} /Height {height} /ColorSpace /DeviceGray /BitsPerComponent 1 /Filter /JBIG2Decode"
        return head.encode(), _jbig2(one, dpi)
    raise ValueError(f"unknown image encoding {encoding!r}")


def image_pdf(images: Sequence[Image.Image], path: Path, *, dpi: int, encoding: str = "flate") -> Path:
    """An image-only PDF, one page per image, each page the image's size at ``dpi`` (no text layer)."""
    objects: list[bytes] = [b"", b""]  # 1: catalog, 2: pages (filled in below)
    kids = []
    for image in images:
        head, data = _image_object(image, encoding, dpi)
        image_ref = len(objects) + 1
        objects.append(
            b"<< /Type /XObject /Subtype /Image "
            + head
            + b" /Length %d >>\nstream\n" % len(data)
            + data
            + b"\nendstream"
        )
        w, h = image.width * 72 / dpi, image.height * 72 / dpi
        content = f"q {w:.3f} 0 0 {h:.3f} 0 0 cm /Im0 Do Q".encode()
        content_ref = len(objects) + 1
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
        page_ref = len(objects) + 1
        kids.append(page_ref)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w:.3f} {h:.3f}] /Contents {content_ref} 0 R "
            f"/Resources << /XObject << /Im0 {image_ref} 0 R >> >> >>".encode()
        )
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>".encode()
    path = Path(path)
    path.write_bytes(assemble_pdf(objects, version="1.5"))
    return path


def assemble_pdf(objects: list[bytes], *, version: str = "1.4") -> bytes:
    """A PDF file of numbered ``objects`` (object 1 the catalog), with a correct xref table."""
    out = bytearray(b"%%PDF-%s\n%%\xe2\xe3\xcf\xd3\n" % version.encode())
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def scanned_copy(
    pdf: Path, path: Path, *, dpi: int, pages: Sequence[int] | None = None, encoding: str = "flate"
) -> Path:
    """An image-only copy of ``pdf`` (or of some of its pages), as a scanner would make it."""
    return image_pdf(render_pages(pdf, dpi, pages), path, dpi=dpi, encoding=encoding)


def mixed_copy(pdf: Path, path: Path, *, scanned: Sequence[int], dpi: int) -> Path:
    """``pdf`` with the pages at 0-based indices ``scanned`` replaced by image-only scans of themselves."""
    from pypdf import PdfReader, PdfWriter

    scan = PdfReader(BytesIO(image_pdf(render_pages(pdf, dpi, scanned), path, dpi=dpi).read_bytes()))
    original = PdfReader(pdf)
    writer = PdfWriter()
    replaced = dict(zip(scanned, scan.pages, strict=True))
    for i, page in enumerate(original.pages):
        writer.add_page(replaced.get(i, page))
    with Path(path).open("wb") as fh:
        writer.write(fh)
    return Path(path)
