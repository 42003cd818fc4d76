"""Synthetic multi-page contract PDFs for the scale benchmark.

A minimal PDF writer (no dependency): standard Helvetica, FlateDecode content streams, one text
object per line. Every document is different (parties, amounts, dates, clause order, length), so
each one is a new sha256 and none is ingested as a duplicate.

Two styles:

- ``kerned`` (default): each line is a ``TJ`` array with a kerning adjustment every 1-3 glyphs,
  the way word processors write PDFs. pypdf pays per text operand, so this brings a page near
  the bundled corpus, though measured it still costs pypdf about half a corpus page (less text
  per page, a simple font); docs/performance.md has both rates.
- ``plain``: one ``Tj`` per line; ~7x cheaper for pypdf than ``kerned``, so it flatters.

Files are cached: the folder name carries every parameter and a ``DONE`` marker, so a second run
with the same arguments reuses the files.
"""

from __future__ import annotations

import argparse
import random
import zlib
from pathlib import Path

FORMAT = 1  # bump when the output changes, so cached folders are rebuilt

_COMPANIES = (
    "Acme Analytics",
    "Borealis Systems",
    "Cobalt Freight",
    "Delta Harbor Health",
    "Evergreen Foods",
    "Fulcrum Robotics",
    "Granite Insurance",
    "Helios Energy",
    "Ironwood Capital",
    "Juniper Media",
    "Kestrel Aerospace",
    "Lumen Biotech",
    "Meridian Logistics",
    "Northwind Traders",
    "Orchid Retail",
    "Pioneer Software",
    "Quartz Semiconductors",
    "Riverbend Hospitality",
    "Summit Legal Services",
    "Tidewater Shipping",
    "Umbra Security",
    "Vantage Telecom",
    "Willow Pharmaceuticals",
    "Xenon Labs",
)
_SUFFIXES = ("Inc.", "LLC", "Ltd.", "Corp.", "GmbH", "S.A.")
_STATES = ("Delaware", "New York", "California", "Texas", "Washington", "Illinois", "Massachusetts")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_SERVICES = (
    "cloud hosting services",
    "data analytics services",
    "software maintenance",
    "logistics services",
    "marketing services",
    "consulting services",
    "payroll processing",
    "security monitoring",
)

# (heading, sentences); {a}/{b} are the parties, the rest are filled per document.
_CLAUSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Definitions",
        (
            '"Agreement" means this {kind} together with every order form and exhibit attached to it.',
            '"Confidential Information" means any information disclosed by one party to the other that is marked as confidential or that a reasonable person would understand to be confidential.',
            '"Services" means the {service} described in each order form signed by both parties.',
            '"Fees" means the amounts payable by {b} under Section {n_pay}.',
        ),
    ),
    (
        "Services",
        (
            "{a} will provide the Services to {b} in accordance with this Agreement and the applicable order form.",
            "{a} may use subcontractors to perform the Services, provided that {a} remains responsible for their performance.",
            "{b} will provide reasonable cooperation, information and access that {a} needs to perform the Services.",
            "Any change to the scope of the Services must be agreed in writing by both parties.",
        ),
    ),
    (
        "Payment Terms",
        (
            "{b} will pay {a} the Fees of {amount} per {period}, invoiced in advance.",
            "Invoices are due within {days} days of the invoice date.",
            "Late payments accrue interest at {rate}% per month or the highest rate permitted by law, whichever is lower.",
            "All Fees are exclusive of taxes, which {b} will pay except for taxes on {a}'s net income.",
            "{b} may dispute an invoice in good faith by written notice before its due date.",
        ),
    ),
    (
        "Confidentiality",
        (
            "Each party will protect the other party's Confidential Information with at least reasonable care.",
            "A party may disclose Confidential Information only to its employees and advisers who need to know it and are bound by obligations no less protective than this Section.",
            "These obligations survive for {years} years after the Agreement ends.",
            "A party may disclose Confidential Information when required by law, after giving the other party prompt notice where permitted.",
        ),
    ),
    (
        "Indemnification",
        (
            "{a} will defend and indemnify {b} against any third-party claim alleging that the Services infringe that third party's intellectual property rights.",
            "{b} will defend and indemnify {a} against any third-party claim arising from {b}'s data or its use of the Services in breach of this Agreement.",
            "The indemnified party must give prompt notice of the claim, sole control of its defense and reasonable assistance.",
        ),
    ),
    (
        "Limitation of Liability",
        (
            "Neither party will be liable for any indirect, incidental, special or consequential damages, or for lost profits or revenues.",
            "Each party's total liability under this Agreement will not exceed the Fees paid in the {months} months before the claim arose.",
            "These limits do not apply to a breach of Section {n_conf} or to a party's indemnification obligations.",
        ),
    ),
    (
        "Term and Termination",
        (
            "This Agreement starts on {date} and continues for {years} years unless terminated earlier.",
            "Either party may terminate this Agreement for material breach that is not cured within {days} days of written notice.",
            "Either party may terminate this Agreement for convenience on {notice} days' written notice.",
            "Upon termination, {b} will pay all Fees accrued through the effective date of termination.",
        ),
    ),
    (
        "Assignment",
        (
            "Neither party may assign this Agreement without the other party's prior written consent, which will not be unreasonably withheld.",
            "Either party may assign this Agreement without consent to a successor in a merger or sale of substantially all of its assets.",
        ),
    ),
    (
        "Governing Law",
        (
            "This Agreement is governed by the laws of the State of {state}, without regard to its conflict of laws rules.",
            "The state and federal courts located in {state} have exclusive jurisdiction over any dispute arising from this Agreement.",
        ),
    ),
    (
        "General",
        (
            "This Agreement is the entire agreement between the parties and supersedes all prior agreements on its subject.",
            "Notices must be in writing and are effective when delivered to the address stated in the order form.",
            "If any provision is held unenforceable, the remaining provisions remain in full force and effect.",
            "A waiver of any breach is not a waiver of any other breach.",
            "Neither party is liable for delays caused by events beyond its reasonable control.",
        ),
    ),
)

PAGE_W, PAGE_H = 612, 792
LINES_PER_PAGE = 56
CHARS_PER_LINE = 100
LEADING = 12


def _party(rng: random.Random) -> str:
    return f"{rng.choice(_COMPANIES)} {rng.choice(_SUFFIXES)}"


def contract_paragraphs(rng: random.Random, number: int, target_lines: int) -> list[str]:
    """Paragraphs of one synthetic contract, about ``target_lines`` wrapped lines long."""
    a, b = _party(rng), _party(rng)
    while b == a:
        b = _party(rng)
    kind = rng.choice(("Master Services Agreement", "Cloud Services Agreement", "Professional Services Agreement"))
    fill = {
        "a": a,
        "b": b,
        "kind": kind,
        "service": rng.choice(_SERVICES),
        "amount": f"${rng.randrange(1_000, 500_000):,}",
        "period": rng.choice(("month", "quarter", "year")),
        "days": rng.choice((15, 30, 45, 60)),
        "rate": rng.choice(("1", "1.5", "2")),
        "years": rng.randrange(1, 6),
        "months": rng.choice((6, 12, 24)),
        "notice": rng.choice((30, 60, 90)),
        "state": rng.choice(_STATES),
        "date": f"{rng.choice(_MONTHS)} {rng.randrange(1, 29)}, {rng.randrange(2018, 2026)}",
        "n_pay": 3,
        "n_conf": 4,
    }
    paragraphs = [
        f"{kind.upper()}",
        f"Contract No. SYN-{number:06d}",
        f'This {kind} is entered into as of {fill["date"]} between {a} ("Provider") and {b} ("Customer").',
    ]
    lines = 4
    section = 0
    clauses = list(_CLAUSES)
    while lines < target_lines:
        # After one full pass the clauses repeat as numbered schedules, so any length is reachable.
        heading, sentences = clauses[section % len(clauses)]
        section += 1
        paragraphs.append(f"{section}. {heading}")
        lines += 2
        chosen = [s for s in sentences if rng.random() < 0.85] or list(sentences[:1])
        for i, sentence in enumerate(chosen, 1):
            text = f"{section}.{i} " + sentence.format(**fill)
            paragraphs.append(text)
            lines += len(text) // CHARS_PER_LINE + 2
            if lines >= target_lines:
                break
    return paragraphs


def _wrap(paragraph: str, width: int) -> list[str]:
    out: list[str] = []
    line = ""
    for word in paragraph.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        out.append(line)
    return out


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _tj_kerned(line: str, rng: random.Random) -> str:
    # A kerning number every 1-3 glyphs, as word processors emit them.
    parts: list[str] = []
    i = 0
    while i < len(line):
        step = rng.randrange(1, 4)
        parts.append(f"({_escape(line[i : i + step])})")
        i += step
        if i < len(line):
            parts.append(str(rng.choice((-3, -2, -1, 1, 2, 3, 5))))
    return "[" + "".join(parts) + "]TJ"


def _page_stream(lines: list[str], style: str, rng: random.Random) -> bytes:
    ops: list[str] = []
    y = PAGE_H - 60
    for line in lines:
        if line:
            shown = _tj_kerned(line, rng) if style == "kerned" else f"({_escape(line)})Tj"
            ops.append(f"q 0 0 0 rg\nBT\n72 {y} Td /F1 9 Tf {shown}\nET\nQ")
        y -= LEADING
    return "\n".join(ops).encode("latin-1", "replace")


def contract_pdf(number: int, *, seed: int = 0, pages: int = 4, style: str = "kerned") -> bytes:
    """One synthetic contract of exactly ``pages`` pages as PDF bytes."""
    rng = random.Random(f"{seed}:{number}")
    paragraphs = contract_paragraphs(rng, number, target_lines=pages * LINES_PER_PAGE)
    lines: list[str] = []
    for p in paragraphs:
        lines.extend(_wrap(p, CHARS_PER_LINE))
        lines.append("")  # blank line between paragraphs
    page_lines = [lines[i : i + LINES_PER_PAGE] for i in range(0, len(lines), LINES_PER_PAGE)][:pages]
    while len(page_lines) < pages:
        page_lines.append([f"Schedule {len(page_lines) + 1}. Intentionally left blank except for this line."])

    objects: list[bytes] = []  # object n is objects[n - 1]

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in below
    pages_obj = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    kids = []
    for chunk in page_lines:
        data = zlib.compress(_page_stream(chunk, style, rng), 6)
        content = add(b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream")
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %d %d] /Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
                % (pages_obj, PAGE_W, PAGE_H, font, content)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_obj
    objects[pages_obj - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, catalog, xref)
    return bytes(out)


def pages_for(number: int, *, seed: int, pages_min: int, pages_max: int) -> int:
    return random.Random(f"pages:{seed}:{number}").randint(pages_min, pages_max)


def corpus(
    root: Path, count: int, *, seed: int = 0, pages_min: int = 2, pages_max: int = 6, style: str = "kerned"
) -> tuple[Path, int]:
    """A folder of ``count`` synthetic contracts (reused when already built); returns (folder, total pages).

    Smaller corpora are prefixes of larger ones with the same parameters, so 1,000 files are
    linked from a 10,000-file folder when it exists rather than written again.
    """
    name = f"synth-f{FORMAT}-s{seed}-p{pages_min}-{pages_max}-{style}"
    folder = Path(root) / f"{name}-n{count}"
    total = sum(pages_for(i, seed=seed, pages_min=pages_min, pages_max=pages_max) for i in range(count))
    if (folder / "DONE").is_file():
        return folder, total
    folder.mkdir(parents=True, exist_ok=True)
    bigger = sorted(
        (p for p in Path(root).glob(f"{name}-n*") if (p / "DONE").is_file() and int(p.name.rsplit("-n", 1)[1]) > count),
        key=lambda p: int(p.name.rsplit("-n", 1)[1]),
    )
    for i in range(count):
        target = folder / f"contract-{i:06d}.pdf"
        if target.exists():
            continue
        source = bigger[0] / target.name if bigger else None
        if source is not None and source.exists():
            target.hardlink_to(source)
        else:
            pages = pages_for(i, seed=seed, pages_min=pages_min, pages_max=pages_max)
            target.write_bytes(contract_pdf(i, seed=seed, pages=pages, style=style))
    (folder / "DONE").write_text(f"{count} files, {total} pages\n")
    return folder, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pages-min", type=int, default=2)
    ap.add_argument("--pages-max", type=int, default=6)
    ap.add_argument("--style", choices=("kerned", "plain"), default="kerned")
    args = ap.parse_args()
    folder, total = corpus(
        args.out, args.count, seed=args.seed, pages_min=args.pages_min, pages_max=args.pages_max, style=args.style
    )
    print(f"{folder}: {args.count} contracts, {total} pages")


if __name__ == "__main__":
    main()
