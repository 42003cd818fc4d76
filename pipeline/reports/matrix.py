"""The portfolio matrix: one row per contract, one column per clause type of a playbook, and its renderers.

Every cell is one of *found* (with the answer for non-yes/no kinds and the cited sentences), *not found*
(asked, and the answer is no), *not asked* or *failed*, so "lacks a liability cap" and "we never looked"
stay different cells in every format. Contract text is hostile input: each renderer neutralises it for
its own format (HTML escaped as in the report, spreadsheet formulas disarmed in CSV and XLSX).

CSV follows CUAD's ``master_clauses.csv`` (a ``Filename`` column, then per clause type a ``<Type>``
column holding the cited texts as a Python-literal list and a ``<Type>-Answer`` column) so it diffs
against CUAD; ``<Type>`` is the column's ``cuad_category`` when it has one, else its label. The answer
cell says ``Yes`` / ``No`` for a yes/no clause found / not found, the answer for other kinds (``Yes``
when found without one, ``No`` when not found), and :data:`NOT_ASKED` / :data:`FAILED` otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from pipeline.quality.cuad import ANSWER_KINDS, read_master_clauses
from pipeline.reports.export import _FORMULA_PREFIXES, _h

CellStatus = Literal["found", "not_found", "not_asked", "failed"]

NOT_ASKED = "[not asked]"
FAILED = "[failed]"
FILENAME = "Filename"
# Last columns: the configuration each row's result was made under, as one more CUAD-style pair
# (the context column holds the id, the -Answer column "current" or "STALE"), so the file stays in
# CUAD's layout and a CUAD reader takes it as one more category.
CONFIGURATION = "Result Configuration"
# CUAD spells this one answer header with a space; kept so the CSV diffs cleanly against CUAD's.
_CUAD_ANSWER_QUIRKS = {"Notice Period To Terminate Renewal": "Notice Period To Terminate Renewal- Answer"}


class MatrixCitation(BaseModel):
    page: int
    sentence_id: str
    text: str
    ocr: bool = False


class MatrixCell(BaseModel):
    status: CellStatus
    answer: str | None = None
    finding: str | None = None
    citations: list[MatrixCitation] = Field(default_factory=list)


class MatrixColumn(BaseModel):
    id: str
    label: str
    kind: str
    cuad_category: str | None = None


class MatrixRow(BaseModel):
    document_id: int
    source: str
    cells: dict[str, MatrixCell]  # key = clause id
    # The configuration of the result the cells come from; "stale": not the current one (shown
    # because the current configuration has no result for this contract yet).
    config_id: str | None = None
    config_state: Literal["current", "fallback", "stale"] | None = None
    tier: str | None = None

    def config_text(self) -> str:
        if self.config_id is None:
            return ""
        if self.config_state == "fallback":
            return f"{self.config_id} (fallback tier {self.tier})"
        return self.config_id + (" (STALE: not the current configuration)" if self.config_state == "stale" else "")


class Matrix(BaseModel):
    batch: str | None
    playbook: str
    playbook_version: str
    columns: list[MatrixColumn]
    rows: list[MatrixRow]

    def by_tier(self) -> dict[str, int]:
        """How many contracts' results each engine tier made (stale results left out)."""
        out: dict[str, int] = {}
        for row in self.rows:
            if row.tier and row.config_state in ("current", "fallback"):
                out[row.tier] = out.get(row.tier, 0) + 1
        return out

    def cell(self, row: MatrixRow, column: MatrixColumn) -> MatrixCell:
        """A row's cell for ``column``; a clause type the row has no cell for was not asked."""
        return row.cells.get(column.id) or MatrixCell(status="not_asked")


# --- shared ---------------------------------------------------------------------------------


def _safe(value: str) -> str:
    """A spreadsheet cell that cannot run as a formula (OWASP CSV injection), like the report's CSV."""
    return "'" + value if value.startswith(_FORMULA_PREFIXES) else value


def _unsafe(value: str) -> str:
    return value[1:] if len(value) > 1 and value[0] == "'" and value[1] in "".join(_FORMULA_PREFIXES) else value


def answer_text(column: MatrixColumn, cell: MatrixCell) -> str:
    """The ``-Answer`` cell of CSV and XLSX (see module doc)."""
    if cell.status == "not_asked":
        return NOT_ASKED
    if cell.status == "failed":
        return FAILED
    if cell.status == "not_found":
        return "No"
    if column.kind == "yes_no" or not cell.answer:
        return "Yes"
    return cell.answer


def header(column: MatrixColumn) -> str:
    return column.cuad_category or column.label


def answer_header(column: MatrixColumn) -> str:
    h = header(column)
    return _CUAD_ANSWER_QUIRKS.get(h, f"{h}-Answer")


# --- csv ------------------------------------------------------------------------------------


def to_csv(m: Matrix) -> str:
    """CUAD's ``master_clauses.csv`` layout (see module doc)."""
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_MINIMAL)
    head = [FILENAME]
    for col in m.columns:
        head += [header(col), answer_header(col)]
    writer.writerow([_safe(h) for h in [*head, CONFIGURATION, f"{CONFIGURATION}-Answer"]])
    for row in m.rows:
        out = [row.source]
        for col in m.columns:
            cell = m.cell(row, col)
            out += [repr([c.text for c in cell.citations]), answer_text(col, cell)]
        state = {"current": "current", "fallback": f"fallback tier {row.tier}", "stale": "STALE"}.get(
            row.config_state or "", ""
        )
        writer.writerow([_safe(v) for v in [*out, row.config_id or "", state]])
    return buf.getvalue()


def _status_from(kind: str, answer: str | None, spans: list[str]) -> tuple[CellStatus, str | None]:
    a = (answer or "").strip()
    if a == NOT_ASKED:
        return "not_asked", None
    if a == FAILED:
        return "failed", None
    if a.casefold() == "yes":
        return "found", None
    if a.casefold() == "no":
        return "not_found", None
    if a or spans:
        return "found", (a or None) if kind != "yes_no" else None
    return "not_found", None


def from_cuad_csv(
    text: str,
    *,
    columns: list[MatrixColumn] | None = None,
    playbook: str = "cuad",
    playbook_version: str = "1",
    batch: str | None = None,
    source: str = "master_clauses.csv",
) -> Matrix:
    """A matrix from a CSV in CUAD's layout: CUAD's own ``master_clauses.csv`` or :func:`to_csv`'s output.

    ``columns`` maps headers to clause ids (by ``cuad_category`` or label); without it each CSV category
    becomes a column whose id is derived from its name and whose kind is CUAD's for that category. Cited
    texts come back without page or sentence id (the layout has no place for them). Headers not in
    ``columns`` are ignored.
    """
    rows = read_master_clauses(source, text=text)
    if columns is None:
        names = list(rows[0][1]) if rows else []
        columns = [
            MatrixColumn(id=_slug(n), label=n, kind=ANSWER_KINDS.get(n, "yes_no"), cuad_category=n) for n in names
        ]
    out_rows: list[MatrixRow] = []
    for i, (filename, labels) in enumerate(rows, start=1):
        cells: dict[str, MatrixCell] = {}
        for col in columns:
            label = labels.get(header(col))
            if label is None:
                continue
            status, answer = _status_from(col.kind, label.answer, label.spans)
            cits = [MatrixCitation(page=0, sentence_id="", text=s) for s in label.spans]
            cells[col.id] = MatrixCell(status=status, answer=answer, citations=cits)
        out_rows.append(MatrixRow(document_id=i, source=filename, cells=cells))
    return Matrix(batch=batch, playbook=playbook, playbook_version=playbook_version, columns=columns, rows=out_rows)


def _slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", name.casefold()).strip("_")
    return s if s and s[0].isalpha() else f"c_{s}"


# --- json -----------------------------------------------------------------------------------


def to_dict(m: Matrix) -> dict:
    """Per contract ``source`` and per clause id its ``status``, ``answer``, ``finding`` and ``citations``."""
    return {
        "batch": m.batch,
        "playbook": m.playbook,
        "playbook_version": m.playbook_version,
        "by_tier": m.by_tier(),
        "columns": [c.model_dump() for c in m.columns],
        "contracts": [
            {
                "document_id": row.document_id,
                "source": row.source,
                "config_id": row.config_id,
                "config_state": row.config_state,
                "tier": row.tier,
                "clauses": {col.id: m.cell(row, col).model_dump() for col in m.columns},
            }
            for row in m.rows
        ],
    }


def to_json(m: Matrix) -> str:
    return json.dumps(to_dict(m), indent=2, ensure_ascii=False) + "\n"


def table_rows(m: Matrix) -> list[dict[str, str]]:
    """Flat rows (contract, then one short cell per clause label) for a Prefect table artifact."""
    out = []
    for row in m.rows:
        item = {"contract": row.source}
        for col in m.columns:
            cell = m.cell(row, col)
            item[col.label] = answer_text(col, cell) + (f" ({len(cell.citations)} cited)" if cell.citations else "")
        item[CONFIGURATION] = row.config_text()
        out.append(item)
    return out


# --- xlsx -----------------------------------------------------------------------------------

_XLSX_MAX = 32_767  # Excel's limit on characters in a cell


def _xlsx_text(value: str) -> str:
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    value = ILLEGAL_CHARACTERS_RE.sub("", value)
    if len(value) > _XLSX_MAX:
        value = value[: _XLSX_MAX - 1] + "\u2026"
    return _safe(value)


def write_xlsx(m: Matrix, path: Path) -> Path:
    """A workbook lawyers open: sheet ``matrix`` (one row per contract, one answer column per clause type)
    and sheet ``citations`` (one row per cited sentence with its page). Frozen headers, filters on."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    path = Path(path)
    wb = Workbook()
    ws = wb.active
    ws.title = "matrix"
    ws.append([_xlsx_text(v) for v in ["Contract", *(c.label for c in m.columns), CONFIGURATION]])
    for row in m.rows:
        ws.append(
            [
                _xlsx_text(row.source),
                *(_xlsx_text(answer_text(c, m.cell(row, c))) for c in m.columns),
                _xlsx_text(row.config_text()),
            ]
        )
    cites = wb.create_sheet("citations")
    cites.append(["Contract", "Clause", "Status", "Answer", "Page", "Sentence", "OCR", "Text"])
    for row in m.rows:
        for col in m.columns:
            cell = m.cell(row, col)
            for c in cell.citations:
                cites.append(
                    [
                        _xlsx_text(row.source),
                        _xlsx_text(col.label),
                        cell.status,
                        _xlsx_text(answer_text(col, cell)),
                        c.page,
                        _xlsx_text(c.sentence_id),
                        "yes" if c.ocr else "",
                        _xlsx_text(c.text),
                    ]
                )
    for sheet, freeze in ((ws, "B2"), (cites, "A2")):
        sheet.freeze_panes = freeze
        sheet.auto_filter.ref = sheet.dimensions
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for cell in sheet.iter_rows():
            for c in cell:
                if c.data_type == "f":  # defence in depth: nothing we write is ever a formula
                    c.data_type = "s"
    ws.column_dimensions["A"].width = 48
    cites.column_dimensions["A"].width = 40
    cites.column_dimensions["H"].width = 100
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


# --- html -----------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem;color:#1b1b1b}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}.meta{color:#555;font-size:.9rem}
table{border-collapse:collapse;margin:.8rem 0}th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f5f5;position:sticky;top:0}.found{background:#dff3e3}.not_found{background:#fbe0e0}
.not_asked{background:#f0f0f0;color:#777}.failed{background:#fff3cd}ul.cites{margin:.2rem 0 0;padding-left:1rem;font-size:.85rem}
.page{font-family:ui-monospace,monospace;color:#555;white-space:nowrap}.ocr{color:#a15c00;font-weight:bold}
details{margin:.3rem 0}

.stale{display:inline-block;margin-left:.4rem;padding:0 .4rem;border-radius:.5rem;font-size:.75rem;background:#fff3cd}
""".strip()

_STATUS_WORDS = {"found": "found", "not_found": "not found", "not_asked": "not asked", "failed": "failed"}

# Hides the rows whose cell in the chosen column does not have the chosen status. Data only flows in via
# data-* attributes that _h escaped; the script itself holds no contract text.
_JS = """
(function(){var c=document.getElementById('f-col'),s=document.getElementById('f-status');
function apply(){var rows=document.querySelectorAll('#matrix tbody tr'),n=0;rows.forEach(function(r){
var td=c.value?r.querySelector('td[data-col="'+CSS.escape(c.value)+'"]'):null;
var show=!td||td.getAttribute('data-status')===s.value;r.hidden=!show;if(show)n++;});
document.getElementById('f-count').textContent=n+' of '+rows.length+' contracts';}
c.addEventListener('change',apply);s.addEventListener('change',apply);apply();})();
""".strip()


def _html_cell(col: MatrixColumn, cell: MatrixCell) -> str:
    words = _STATUS_WORDS[cell.status]
    parts = [f'<td class="{cell.status}" data-col="{_h(col.id)}" data-status="{cell.status}">']
    parts.append(f"<strong>{_h(words)}</strong>")
    if cell.answer and col.kind != "yes_no":
        parts.append(f": {_h(cell.answer)}")
    if cell.finding:
        parts.append(f"<div>{_h(cell.finding)}</div>")
    if cell.citations:
        parts.append('<ul class="cites">')
        for c in cell.citations:
            ocr = ' <span class="ocr" title="text from OCR">[OCR]</span>' if c.ocr else ""
            parts.append(f'<li><span class="page">p. {c.page} {_h(c.sentence_id)}</span>{ocr} {_h(c.text)}</li>')
        parts.append("</ul>")
    parts.append("</td>")
    return "".join(parts)


def to_html(m: Matrix) -> str:
    """A self-contained page: the matrix with a filter ("contracts where X is not found") and, for pages
    without scripts, a static list per clause type of the contracts where it was not found."""
    title = f"Contract matrix — playbook {m.playbook} v{m.playbook_version}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{_h(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_h(title)}</h1>",
        f'<p class="meta">Batch: {_h(m.batch or "all")} · {len(m.rows)} contracts · {len(m.columns)} clause types'
        + "".join(f" · {_h(t)}: {n}" for t, n in sorted(m.by_tier().items()))
        + "</p>",
        ('<form class="filter"><label>Contracts where <select id="f-col"><option value="">(any clause)</option>'),
    ]
    out += [f'<option value="{_h(c.id)}">{_h(c.label)}</option>' for c in m.columns]
    out.append('</select></label> is <select id="f-status">')
    out += [
        f'<option value="{k}"{" selected" if k == "not_found" else ""}>{v}</option>' for k, v in _STATUS_WORDS.items()
    ]
    out.append('</select> <output id="f-count"></output></form>')
    out.append('<table id="matrix"><thead><tr><th>Contract</th>')
    out += [f'<th title="{_h(c.cuad_category or c.kind)}">{_h(c.label)}</th>' for c in m.columns]
    out.append("</tr></thead><tbody>")
    for row in m.rows:
        stale = {
            "stale": ' <span class="stale">stale result</span>',
            "fallback": f' <span class="stale">fallback tier {_h(row.tier or "")}</span>',
        }.get(row.config_state or "", "")
        out.append(
            f'<tr data-document="{row.document_id}" data-config="{_h(row.config_id or "")}">'
            f"<th>{_h(row.source)}{stale}</th>"
        )
        out += [_html_cell(c, m.cell(row, c)) for c in m.columns]
        out.append("</tr>")
    out.append("</tbody></table>")
    out.append("<h2>Not found, by clause type</h2>")
    for col in m.columns:
        missing = [r.source for r in m.rows if m.cell(r, col).status == "not_found"]
        out.append(f"<details><summary>{_h(col.label)}: not found in {len(missing)} of {len(m.rows)}</summary><ul>")
        out += [f"<li>{_h(s)}</li>" for s in missing]
        out.append("</ul></details>")
    out += [f"<script>{_JS}</script>", "</body>", "</html>", ""]
    return "\n".join(out)


# --- files ----------------------------------------------------------------------------------

MatrixFormat = Literal["csv", "xlsx", "html", "json"]
MATRIX_FORMATS: tuple[MatrixFormat, ...] = ("csv", "xlsx", "html", "json")


def write_matrix(m: Matrix, fmt: MatrixFormat, out: Path) -> Path:
    """Write ``m`` as ``fmt`` to ``out`` (parents created)."""
    out = Path(out)
    if fmt == "xlsx":
        return write_xlsx(m, out)
    render = {"csv": to_csv, "html": to_html, "json": to_json}.get(fmt)
    if render is None:
        raise ValueError(f"unknown matrix format {fmt!r} (expected one of {', '.join(MATRIX_FORMATS)})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(m), encoding="utf-8", newline="")
    return out
