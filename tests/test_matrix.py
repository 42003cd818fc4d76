"""The portfolio matrix renderers: CUAD-layout CSV round trip, XLSX, HTML and JSON, with hostile contract text."""

from __future__ import annotations

import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from openpyxl import load_workbook

from pipeline.quality.cuad import ANSWER_KINDS, load_cuad, read_master_clauses
from pipeline.reports.matrix import (
    FAILED,
    NOT_ASKED,
    Matrix,
    MatrixCell,
    MatrixCitation,
    MatrixColumn,
    MatrixRow,
    from_cuad_csv,
    table_rows,
    to_csv,
    to_html,
    to_json,
    write_matrix,
    write_xlsx,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "cuad"

HOSTILE = 'Notice <script>alert(1)</script> to " onmouseover=alert(2) x=" | [link](http://x) *bold* & co'
FORMULAS = ['=HYPERLINK("http://evil","x")', "+1+1", "-2+3", "@SUM(A1)", "=cmd|' /C calc'!A0"]

COLUMNS = [
    MatrixColumn(id="governing_law", label="Governing Law", kind="place", cuad_category="Governing Law"),
    MatrixColumn(id="cap_on_liability", label="Cap On Liability", kind="yes_no", cuad_category="Cap On Liability"),
    MatrixColumn(id="renewal_term", label="Renewal Term", kind="duration", cuad_category="Renewal Term"),
    MatrixColumn(
        id="notice",
        label="Notice Period To Terminate Renewal",
        kind="duration",
        cuad_category="Notice Period To Terminate Renewal",
    ),
    MatrixColumn(id="audit_rights", label="Audit Rights", kind="yes_no", cuad_category="Audit Rights"),
]


def _cit(page: int, sid: str, text: str, ocr: bool = False) -> MatrixCitation:
    return MatrixCitation(page=page, sentence_id=sid, text=text, ocr=ocr)


def _matrix() -> Matrix:
    rows = [
        MatrixRow(
            document_id=1,
            source="acme-msa.pdf",
            cells={
                "governing_law": MatrixCell(
                    status="found",
                    answer="Delaware",
                    finding="Delaware law governs.",
                    citations=[_cit(7, "S88", "This Agreement is governed by the laws of Delaware.")],
                ),
                "cap_on_liability": MatrixCell(status="not_found"),
                "renewal_term": MatrixCell(
                    status="found",
                    answer="1 year",
                    citations=[
                        _cit(2, "S10", "It renews for successive one (1) year terms."),
                        _cit(2, "S11", "Renewal is automatic."),
                    ],
                ),
                "notice": MatrixCell(status="not_asked"),
                "audit_rights": MatrixCell(status="failed"),
            },
        ),
        MatrixRow(
            document_id=2,
            source="=evil.pdf",
            cells={
                "governing_law": MatrixCell(
                    status="found", answer=FORMULAS[0], citations=[_cit(1, "S1", HOSTILE, ocr=True)]
                ),
                "cap_on_liability": MatrixCell(
                    status="found", finding=HOSTILE, citations=[_cit(3, "S30", f) for f in FORMULAS[1:]]
                ),
                "renewal_term": MatrixCell(status="not_found"),
                # "notice" missing on purpose: a clause type without a cell is not asked
                "audit_rights": MatrixCell(
                    status="found",
                    citations=[
                        _cit(4, "S40", "It's \u201cquoted\u201d, with 'quotes' and \\ backslash\nand a newline.")
                    ],
                ),
            },
        ),
    ]
    return Matrix(batch="nightly", playbook="cuad", playbook_version="1", columns=COLUMNS, rows=rows)


# --- csv ------------------------------------------------------------------------------------


def test_csv_follows_cuads_layout_and_round_trips_through_the_cuad_reader():
    m = _matrix()
    text = to_csv(m)
    header = next(csv.reader(io.StringIO(text)))
    assert header[0] == "Filename"
    assert header[1:5] == ["Governing Law", "Governing Law-Answer", "Cap On Liability", "Cap On Liability-Answer"]
    assert "Notice Period To Terminate Renewal- Answer" in header  # CUAD's own spelling, so it diffs

    rows = read_master_clauses("matrix.csv", text=text)  # the reader load_cuad uses on CUAD itself
    assert [name for name, _ in rows] == ["acme-msa.pdf", "=evil.pdf"]
    back = from_cuad_csv(text, columns=COLUMNS)
    for original, (name, labels), again in zip(m.rows, rows, back.rows, strict=True):
        assert again.source == original.source == name
        for col in COLUMNS:
            want = m.cell(original, col)
            got = again.cells[col.id]
            assert got.status == want.status, (name, col.id)
            assert labels[col.cuad_category].spans == [c.text for c in want.citations]
            assert [c.text for c in got.citations] == [c.text for c in want.citations]
            assert got.answer == (want.answer if col.kind != "yes_no" else None)


def test_csv_markers_keep_found_not_found_not_asked_and_failed_apart():
    rows = list(csv.DictReader(io.StringIO(to_csv(_matrix()))))
    assert rows[0]["Cap On Liability-Answer"] == "No"
    assert rows[0]["Notice Period To Terminate Renewal- Answer"] == NOT_ASKED
    assert rows[1]["Notice Period To Terminate Renewal- Answer"] == NOT_ASKED
    assert rows[0]["Audit Rights-Answer"] == FAILED
    assert rows[1]["Audit Rights-Answer"] == "Yes"
    assert rows[0]["Renewal Term-Answer"] == "1 year"


def test_csv_cells_cannot_run_as_formulas():
    rows = list(csv.reader(io.StringIO(to_csv(_matrix()))))
    cells = [cell for row in rows for cell in row]
    assert cells and not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert "'=evil.pdf" in cells


def test_cuads_own_csv_reads_as_a_matrix_with_cuad_presence():
    text = (EXAMPLES / "master_clauses.csv").read_text(encoding="utf-8")
    m = from_cuad_csv(text)
    contracts = load_cuad(EXAMPLES)
    assert len(m.columns) == 41 and len(m.rows) == len(contracts) == 5
    kinds = {c.cuad_category: c.kind for c in m.columns}
    assert all(kinds[k] == v for k, v in ANSWER_KINDS.items())
    for row, contract in zip(m.rows, contracts, strict=True):
        for col in m.columns:
            label = contract.labels[col.cuad_category]
            assert (row.cells[col.id].status == "found") == label.present, (row.source, col.label)
    # and back out again: the same spans and answers, column by column
    again = dict(read_master_clauses("x.csv", text=to_csv(m)))
    for contract in contracts:
        for cat, label in contract.labels.items():
            if label.present:
                assert again[contract.name][cat].spans == label.spans
                assert again[contract.name][cat].present


# --- json -----------------------------------------------------------------------------------


def test_json_carries_source_status_answer_and_citations_per_clause():
    data = json.loads(to_json(_matrix()))
    assert data["playbook"] == "cuad" and data["playbook_version"] == "1" and data["batch"] == "nightly"
    first, second = data["contracts"]
    assert first["source"] == "acme-msa.pdf"
    gl = first["clauses"]["governing_law"]
    assert gl["status"] == "found" and gl["answer"] == "Delaware"
    assert gl["citations"] == [
        {"page": 7, "sentence_id": "S88", "text": "This Agreement is governed by the laws of Delaware.", "ocr": False}
    ]
    assert first["clauses"]["cap_on_liability"]["status"] == "not_found"
    assert first["clauses"]["notice"]["status"] == "not_asked"
    assert second["clauses"]["notice"]["status"] == "not_asked"
    assert first["clauses"]["audit_rights"]["status"] == "failed"
    assert second["clauses"]["governing_law"]["citations"][0]["text"] == HOSTILE  # data, kept verbatim


# --- xlsx -----------------------------------------------------------------------------------


def test_xlsx_has_matrix_and_citation_sheets_frozen_filtered_and_no_formulas(tmp_path):
    path = write_xlsx(_matrix(), tmp_path / "out" / "matrix.xlsx")
    wb = load_workbook(path)
    assert wb.sheetnames == ["matrix", "citations"]
    ws, cites = wb["matrix"], wb["citations"]
    assert ws.freeze_panes == "B2" and cites.freeze_panes == "A2"
    assert ws.auto_filter.ref and cites.auto_filter.ref
    assert [c.value for c in ws[1]] == ["Contract", *(c.label for c in COLUMNS), "Result Configuration"]
    # (the configuration cell is empty: this matrix was built without results' configurations)
    assert [c.value for c in ws[2]] == ["acme-msa.pdf", "Delaware", "No", "1 year", NOT_ASKED, FAILED, None]
    cite_rows = [[c.value for c in r] for r in cites.iter_rows(min_row=2)]
    assert ["acme-msa.pdf", "Renewal Term", "found", "1 year", 2, "S11", None, "Renewal is automatic."] in cite_rows
    assert any(r[6] == "yes" and r[7] == HOSTILE for r in cite_rows)  # OCR marked
    assert len(cite_rows) == 1 + 2 + 1 + 4 + 1
    for sheet in (ws, cites):
        for row in sheet.iter_rows():
            for cell in row:
                assert cell.data_type != "f"
                if isinstance(cell.value, str):
                    assert not cell.value.startswith(("=", "+", "-", "@")), cell.value


# --- html -----------------------------------------------------------------------------------


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs
        self.scripts += tag == "script"

    def handle_data(self, data):
        self.text.append(data)


def test_html_escapes_contract_text_and_shows_pages_filter_and_ocr():
    page = to_html(_matrix())
    parser = _Collect()
    parser.feed(page)
    assert parser.scripts == 1  # ours; the hostile <script> stayed text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not [a for a, _ in parser.attrs if a.startswith("on")]  # no injected handlers
    text = "".join(parser.text)
    assert HOSTILE in text  # shown, as text
    assert "p. 7 S88" in text and "[OCR]" in text
    assert 'id="f-col"' in page and '<option value="not_found" selected>not found</option>' in page
    # the static per-clause not-found list
    assert "Cap On Liability: not found in 1 of 2" in text and "Renewal Term: not found in 1 of 2" in text
    assert 'data-status="not_asked"' in page and 'data-status="failed"' in page


def test_write_matrix_writes_every_format(tmp_path):
    m = _matrix()
    for fmt in ("csv", "xlsx", "html", "json"):
        out = write_matrix(m, fmt, tmp_path / f"m.{fmt}")
        assert out.stat().st_size > 0
    with pytest.raises(ValueError, match="unknown matrix format"):
        write_matrix(m, "pdf", tmp_path / "m.pdf")  # type: ignore[arg-type]


def test_table_rows_for_the_artifact_keep_statuses_apart():
    rows = table_rows(_matrix())
    assert rows[0]["contract"] == "acme-msa.pdf"
    assert rows[0]["Cap On Liability"] == "No" and rows[0]["Audit Rights"] == FAILED
    assert rows[0]["Notice Period To Terminate Renewal"] == NOT_ASKED
    assert rows[0]["Renewal Term"] == "1 year (2 cited)"
