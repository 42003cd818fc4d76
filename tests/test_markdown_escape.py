"""The one Markdown escaper, on hostile contract text, in both places it is used: the exported
Markdown report and the Prefect report artifact. Each output is rendered by a real CommonMark + GFM
renderer (markdown-it, what rich uses) and the rendered HTML is checked: the hostile text comes back
as exactly its text, in its own cell, with no element it asked for."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from pipeline.reports.markdown import md_inline

# Markup of every kind a contract (or a file name) could carry, a fake table row, and newlines
# that would start a heading, a list and a new row.
HOSTILE = (
    "Fees & <b>taxes</b> &amp; &#60;script&#62; ![img](http://x/i.png) ~~void~~ **bold** _it_ `code` "
    "[link](http://x) <script>alert(1)</script> \\*not\\* # not a heading | a | b |"
    "\n# Injected heading\n- injected item\n| c | d |"
)
FLAT = " ".join(HOSTILE.split())  # what a reader must see: the text, on one line


def _render(md: str) -> str:
    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(md)


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _parse(md: str) -> _Html:
    p = _Html()
    p.feed(_render(md))
    p.close()
    return p


# Elements the hostile text asks for (emphasis, strikethrough, links, images, raw HTML, code spans).
ASKED_FOR = {"script", "b", "img", "a", "s", "del", "em", "code"}


def test_escaped_text_renders_back_as_exactly_the_text():
    parsed = _parse(md_inline(HOSTILE))
    assert parsed.tags == ["p"]
    assert "".join(parsed.text).strip() == FLAT
    assert md_inline(None) == md_inline("") == ""


def test_every_markup_character_is_escaped_once():
    assert md_inline("a & b ! c ~ d") == r"a \& b \! c \~ d"
    assert md_inline("\\|") == r"\\\|"
    assert md_inline("x\n\n| y |") == r"x \| y \|"


def test_export_keeps_hostile_text_inert_in_every_field():
    from test_export import _hostile_everywhere

    import pipeline.reports.export as export

    report = _hostile_everywhere()
    for doc in report["documents"]:
        doc["source"] = doc["summary"] = HOSTILE
        doc["parties"] = [HOSTILE]
        doc["dates"] = [{"label": HOSTILE, "date": HOSTILE}]
        doc["error"] = HOSTILE
        for clause in doc["clauses"]:
            clause["type"] = clause["finding"] = HOSTILE
            for cit in clause["citations"]:
                cit["text"] = HOSTILE
    report["batch"] = HOSTILE
    parsed = _parse(export.render(report, "md"))
    assert not ASKED_FOR & set(parsed.tags)
    # The report's own markup only: a title, a heading per document, bold labels, fact lists, one table.
    assert parsed.tags.count("h1") == 1 and parsed.tags.count("h2") == len(report["documents"])
    assert parsed.tags.count("table") == 1
    # The clause table keeps its three columns; type, finding and each quoted citation are the text.
    assert parsed.cells[:3] == ["Clause", "Finding", "Evidence"] and len(parsed.cells) % 3 == 0
    body = parsed.cells[3:]
    assert body and all(body[i] == body[i + 1] == FLAT for i in range(0, len(body), 3))
    assert all(f"\u201c{FLAT}\u201d" in body[i] for i in range(2, len(body), 3))
    # Elsewhere (title, headings, facts, summary) the text appears whole and as text.
    assert "".join(parsed.text).count(FLAT) >= 10


def test_prefect_artifact_keeps_hostile_text_inert():
    pytest.importorskip("prefect")
    from flows.batch import BatchOutcome

    report = {
        "documents": [
            {"source": HOSTILE, "status": "failed", "pages": None, "clauses": [], "error": HOSTILE},
            {
                "source": "ok.pdf",
                "status": "summarized",
                "pages": 3,
                "error": None,
                "clauses": [{"type": HOSTILE, "citations": [{"page": 2}]}],
            },
        ]
    }
    md = BatchOutcome.from_report(HOSTILE, report, None, None, Path("/r/report.html"), HOSTILE).markdown()
    parsed = _parse(md)
    assert not (ASKED_FOR - {"code"}) & set(parsed.tags)
    # The artifact's own markup only: a title, one table (header + the two documents), one list
    # whose last item names the exported files as code.
    assert parsed.tags.count("h1") == 1 and parsed.tags.count("tr") == 3
    assert parsed.tags.count("ul") == 1 and parsed.tags.count("code") == 2
    header, first, second = parsed.cells[:5], parsed.cells[5:10], parsed.cells[10:15]
    assert len(parsed.cells) == 15, parsed.cells
    assert header[0] == "Document"
    assert first[0] == FLAT and first[4] == FLAT
    assert second[3] == f"{FLAT} (p. 2)"
    text = "".join(parsed.text)
    assert f"Batch {FLAT}" in text and f"Engine failure: {FLAT}" in text
