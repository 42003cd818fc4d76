"""Export renderers: every format from a realistic report, and hostile contract text kept inert."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import stat
from html.parser import HTMLParser
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.errors import ConfigError
from pipeline.reports.export import FORMATS, Report, render, write_report

HOSTILE = 'Notice <script>alert(1)</script> to " onmouseover=alert(2) x=" | [link](http://x) *bold* _it_ `code`'


def _report() -> dict:
    return {
        "generated_at": "2026-11-27T10:00:00+00:00",
        "batch": "nightly-2026-11-27",
        "documents": [
            {
                "document_id": 3,
                "source": "nda.pdf",
                "sha256": "a" * 64,
                "pages": 4,
                "status": "summarized",
                "error": None,
                "summary": "Mutual NDA between Acme Inc. and Müller GmbH; two-year term.",
                "parties": ["Acme Inc.", "Müller GmbH"],
                "dates": [{"label": "effective date", "date": "2024-01-01"}],
                "clauses": [
                    {
                        "type": "governing_law",
                        "finding": "Governed by the laws of Delaware.",
                        "citations": [
                            {
                                "sentence_id": "S12",
                                "page": 3,
                                "text": "This Agreement is governed by the laws of the State of Delaware.",
                                "char_start": 10,
                                "char_end": 75,
                            }
                        ],
                    },
                    {
                        "type": "termination",
                        "finding": "Either party may terminate on 30 days' notice.",
                        "citations": [
                            {
                                "sentence_id": "S20",
                                "page": 4,
                                "text": HOSTILE,
                                "char_start": 0,
                                "char_end": len(HOSTILE),
                            },
                            {
                                "sentence_id": "S21",
                                "page": 4,
                                "text": "Termination does not affect accrued rights.",
                                "char_start": 120,
                                "char_end": 163,
                            },
                        ],
                    },
                ],
                "provenance": {
                    "model": "demo/tiny-llama",
                    "dtype": "float32",
                    "quantization": None,
                    "tensor_parallel_size": 1,
                    "vllm_version": "0.32.0",
                    "prompt_version": "v1",
                    "engine_run_id": 1,
                },
            },
            {
                "document_id": 4,
                "source": "lease.pdf",
                "sha256": "b" * 64,
                "pages": 2,
                "status": "failed",
                "error": "model output did not match the schema after 3 attempts",
                "summary": None,
                "parties": [],
                "dates": [],
                "clauses": [],
                "provenance": None,
            },
        ],
    }


def _citations(doc_list: list[dict]) -> list[dict]:
    return [c for d in doc_list for cl in d["clauses"] for c in cl["citations"]]


def test_json_round_trips_and_every_citation_has_page_sentence_and_text() -> None:
    text = render(_report(), "json")

    assert Report.model_validate_json(text) == Report.model_validate(_report())
    assert "Müller GmbH" in text  # ensure_ascii=False keeps names readable
    citations = _citations(json.loads(text)["documents"])
    assert len(citations) == 3
    for cit in citations:
        assert isinstance(cit["page"], int) and cit["page"] >= 1
        assert re.fullmatch(r"S\d+", cit["sentence_id"])
        assert cit["text"]


def test_render_accepts_a_validated_report_or_a_dict_alike() -> None:
    assert render(Report.model_validate(_report()), "md") == render(_report(), "md")


def test_csv_has_one_row_per_citation_plus_one_per_document_without_clauses() -> None:
    rows = list(csv.DictReader(io.StringIO(render(_report(), "csv"))))

    assert len(rows) == 3 + 1
    assert [r["sentence_id"] for r in rows] == ["S12", "S20", "S21", ""]
    assert rows[1]["text"] == HOSTILE  # quotes, commas and pipes survive csv quoting
    assert rows[0]["page"] == "3" and rows[0]["clause_type"] == "governing_law"
    failed = rows[-1]
    assert (failed["source"], failed["status"], failed["clause_type"], failed["page"]) == (
        "lease.pdf",
        "failed",
        "",
        "",
    )


def test_csv_cells_that_look_like_formulas_are_defused() -> None:
    report = _report()
    doc = report["documents"][0]
    doc["source"] = "=cmd|' /C calc'!A0.pdf"
    doc["clauses"][0]["finding"] = "+SUM(A1:A9)"
    cits = doc["clauses"][1]["citations"]
    cits[0]["text"] = "-2+3"
    cits[1]["text"] = '@HYPERLINK("http://evil","x")'

    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))

    assert rows[0]["source"] == "'=cmd|' /C calc'!A0.pdf"
    assert rows[0]["finding"] == "'+SUM(A1:A9)"
    assert rows[1]["text"] == "'-2+3"
    assert rows[2]["text"] == '\'@HYPERLINK("http://evil","x")'
    assert rows[0]["text"].startswith("This Agreement")  # ordinary cells untouched
    assert rows[0]["document_id"] == "3"


class _TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()
        self.data: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.data.append(data)


def _hostile_everywhere() -> dict:
    report = _report()
    doc = report["documents"][0]
    doc["source"] = HOSTILE
    doc["summary"] = HOSTILE
    doc["parties"] = [HOSTILE]
    doc["dates"] = [{"label": HOSTILE, "date": HOSTILE}]
    doc["clauses"][0]["type"] = HOSTILE
    doc["clauses"][0]["finding"] = HOSTILE
    doc["provenance"]["model"] = HOSTILE
    report["documents"][1]["error"] = HOSTILE
    report["batch"] = HOSTILE
    return report


def test_html_escapes_hostile_contract_text_in_every_field() -> None:
    page = render(_hostile_everywhere(), "html")

    assert "<script" not in page.lower()
    assert '" onmouseover=' not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot; onmouseover=alert(2) x=&quot;" in page
    parser = _TagCollector()
    parser.feed(page)
    assert parser.tags  # the check below is over a non-empty set
    assert "script" not in parser.tags
    assert not {a for a in parser.attrs if a.startswith("on")}
    # The hostile text is shown to the reader verbatim, as text.
    assert sum(HOSTILE in chunk for chunk in parser.data) >= 9


def test_html_is_self_contained_with_contents_citations_and_provenance() -> None:
    page = render(_report(), "html")

    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert not re.search(r"<(script|link|img|iframe)\b|\bsrc=|@import|url\(", page, re.IGNORECASE)
    assert 'href="#doc-1"' in page and 'id="doc-1"' in page and 'href="#doc-2"' in page
    assert "p. 3, S12" in page and "p. 4, S20" in page and "p. 4, S21" in page
    assert "2026-11-27T10:00:00+00:00" in page
    for shown in ("demo/tiny-llama", "float32", "0.32.0", "Tensor parallel", "Quantization", "Prompt version"):
        assert shown in page
    assert "model output did not match the schema after 3 attempts" in page
    assert "Mutual NDA between Acme Inc." in page


def _md_table_rows(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("|---")]


def test_markdown_lists_documents_and_citations_with_page_and_sentence() -> None:
    md = render(_report(), "md")

    assert "## nda.pdf \u2014 summarized" in md and "## lease.pdf \u2014 failed" in md
    assert "p. 3, S12: \u201cThis Agreement is governed by the laws of the State of Delaware.\u201d" in md
    assert "**Parties:** Acme Inc.; Müller GmbH" in md
    assert "effective date: 2024-01-01" in md
    assert "**Error:** model output did not match the schema after 3 attempts" in md


def test_markdown_escapes_contract_text_so_tables_and_markup_stay_intact() -> None:
    report = _hostile_everywhere()
    report["documents"][0]["summary"] = HOSTILE + "\n# injected heading\n- injected item"
    md = render(report, "md")

    rows = _md_table_rows(md)
    assert len(rows) == 1 + 2  # header + two clauses
    for row in rows:
        cells = re.split(r"(?<!\\)\|", row)
        assert len(cells) == 3 + 2, row  # three columns plus the empty edges
    assert "<script>" not in md
    assert r"\<script\>alert(1)\</script\>" in md
    assert r"\[link\](http://x) \*bold\* \_it\_ \`code\`" in md
    assert not re.search(r"^#+ injected", md, re.MULTILINE)
    assert not re.search(r"^- injected", md, re.MULTILINE)


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_report_is_private_and_replaces_an_existing_file(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "nested" / "deeper" / f"out.{fmt}"
    out.parent.mkdir(parents=True)
    out.write_text("old")
    out.chmod(0o644)

    written = write_report(_report(), fmt, out)

    assert written == out
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_bytes() == render(_report(), fmt).encode("utf-8")
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp file left behind


def test_write_report_creates_missing_parent_directories(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "report.json"

    assert write_report(_report(), "json", out) == out
    assert json.loads(out.read_text())["batch"] == "nightly-2026-11-27"


def test_write_report_into_a_directory_names_the_file_by_format(tmp_path: Path) -> None:
    written = write_report(_report(), "html", tmp_path)

    assert written == tmp_path / "report.html"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert written.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_csv_written_to_disk_keeps_its_line_endings_and_parses(tmp_path: Path) -> None:
    written = write_report(_report(), "csv", tmp_path)

    with written.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == 1 + 4


@pytest.mark.parametrize(
    "path",
    [
        (),
        ("documents", 0),
        ("documents", 0, "clauses", 0),
        ("documents", 0, "clauses", 0, "citations", 0),
        ("documents", 0, "dates", 0),
        ("documents", 0, "provenance"),
    ],
)
def test_unknown_fields_are_rejected_at_every_level(path: tuple) -> None:
    report = copy.deepcopy(_report())
    node = report
    for key in path:
        node = node[key]
    node["surprise"] = "x"

    with pytest.raises(ValidationError, match="surprise"):
        render(report, "json")


@pytest.mark.parametrize(
    ("field", "value"),
    [("page", 0), ("sentence_id", "12"), ("sentence_id", "S0")],
)
def test_citations_must_have_a_one_based_page_and_an_s_sentence_id(field: str, value: object) -> None:
    report = _report()
    report["documents"][0]["clauses"][0]["citations"][0][field] = value

    with pytest.raises(ValidationError):
        render(report, "csv")


def test_unknown_status_and_naive_timestamp_are_rejected() -> None:
    bad_status = _report()
    bad_status["documents"][0]["status"] = "done"
    naive = _report()
    naive["generated_at"] = "2026-11-27T10:00:00"

    for report in (bad_status, naive):
        with pytest.raises(ValidationError):
            render(report, "json")


def test_unknown_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="pdf"):
        render(_report(), "pdf")  # type: ignore[arg-type]
