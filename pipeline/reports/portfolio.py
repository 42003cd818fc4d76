"""The portfolio matrix built from storage: one row per contract of a batch, one column per clause
type of a playbook, each cell found / not_found / not_asked / failed with its answer and citations.

Rendering (CSV in CUAD's layout, XLSX, HTML, JSON) is ``pipeline.reports.matrix``; this module only
reads. ``write_matrix`` puts one rendering in a file the way the export does (atomic, owner-only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session

from pipeline.batch import resolve_batch
from pipeline.errors import ConfigError
from pipeline.reports.export import write_private, write_synced
from pipeline.reports.matrix import Matrix, MatrixCell, MatrixCitation, MatrixColumn, MatrixRow
from pipeline.review.playbooks import Playbook
from storage import repo

MatrixFormat = Literal["csv", "xlsx", "html", "json"]
MATRIX_FORMATS: tuple[str, ...] = ("csv", "xlsx", "html", "json")


def build_matrix(
    session: Session, *, batch: str | None, playbook: Playbook, prompt_version: str = "v1", selection=None
) -> Matrix:
    """The matrix of ``batch`` (None: every document) for ``playbook``.

    A document's cells come from the result ``selection`` (reports.selection.Selection) picks: the
    current configuration's, else the newest of this review (marked stale); without a selection,
    the newest made with this playbook, which nothing calls current. A stored ``found`` or
    ``not_found`` row is that; a clause type with no row was ``not_asked``. A document with no such
    summary is ``failed`` in every cell when its review job failed, else ``not_asked`` (never
    reviewed with this playbook, or not yet; a file that needs OCR is never reviewed).
    """
    from pipeline.reports.selection import Selection

    batch_id = resolve_batch(session, batch)
    key = playbook.review_key(prompt_version)
    if selection is None:
        selection = Selection(current=None, review_key=key)
    columns = [
        MatrixColumn(id=c.id, label=c.label, kind=c.kind, cuad_category=c.cuad_category) for c in playbook.clauses
    ]
    rows: list[MatrixRow] = []
    for doc in repo.documents(session, batch_id=batch_id, statuses=("ok", "needs_ocr")):
        summary, state = selection.pick(session, doc.id)
        if summary is None and selection.config_id is None and selection.as_of is None:
            # Made with this playbook in another review mode: still its answers, never current.
            summary = repo.summary_for_playbook(session, doc.id, playbook.name, playbook.version)
            state = "stale" if summary is not None else state
        if summary is None:
            failed = repo.failed_job(session, doc.id, selection.config_id or selection.current, review_key=key)
            status = "failed" if doc.status == "ok" and failed is not None else "not_asked"
            cells = {c.id: MatrixCell(status=status) for c in playbook.clauses}
            rows.append(MatrixRow(document_id=doc.id, source=doc.source, cells=cells))
            continue
        rows.append(
            MatrixRow(
                document_id=doc.id,
                source=doc.source,
                cells=_cells(session, summary, playbook),
                config_id=summary.config_id,
                config_state=state if state in ("current", "fallback") else "stale",
                tier=(conf.tier if (conf := repo.configuration(session, summary.config_id)) else None),
            )
        )
    return Matrix(batch=batch, playbook=playbook.name, playbook_version=playbook.version, columns=columns, rows=rows)


def _cells(session: Session, summary, playbook: Playbook) -> dict[str, MatrixCell]:
    ocr_pages = repo.ocr_pages_of(session, summary.document_id)  # a citation resting on OCR text says so
    cites: dict[int, list[MatrixCitation]] = {}
    for cit in repo.citations_of(session, summary.id):
        cites.setdefault(cit.clause_id, []).append(
            MatrixCitation(
                page=cit.page_number,
                sentence_id=f"S{cit.sentence_ordinal}",
                text=cit.text,
                ocr=cit.page_number in ocr_pages,
            )
        )
    stored = {cl.type: cl for cl in repo.clauses_of(session, summary.id)}
    legacy = summary.playbook is None  # stored before playbooks: only found rows, every default type was asked
    cells: dict[str, MatrixCell] = {}
    for c in playbook.clauses:
        row = stored.get(c.id)
        if row is None:
            cells[c.id] = MatrixCell(status="not_found" if legacy else "not_asked")
        elif (row.status or "found") == "found":
            cells[c.id] = MatrixCell(
                status="found", answer=row.answer, finding=row.finding, citations=cites.get(row.id, [])
            )
        else:
            cells[c.id] = MatrixCell(status="not_found")
    return cells


def artifact_table(m: Matrix) -> list[dict[str, Any]]:
    """The matrix as Prefect table rows: one per contract, one column per clause label, each cell
    its status (and answer, and the pages it cites)."""
    out = []
    for row in m.rows:
        entry: dict[str, Any] = {"contract": row.source}
        for col in m.columns:
            cell = row.cells[col.id]
            text = cell.status.replace("_", " ")
            if cell.answer:
                text += f": {cell.answer}"
            if cell.citations:
                text += " (p. " + ", ".join(str(p) for p in dict.fromkeys(c.page for c in cell.citations)) + ")"
            entry[col.label] = text
        out.append(entry)
    return out


def write_matrix(m: Matrix, fmt: str, out: Path) -> Path:
    """Write the matrix in ``fmt`` to ``out`` (or ``out/matrix.<fmt>`` for a folder), atomically and
    readable by its owner only: it quotes contract text."""
    from pipeline.reports import matrix as render

    if fmt not in MATRIX_FORMATS:
        raise ConfigError(f"unknown matrix format {fmt!r}", hint=f"choose one of {', '.join(MATRIX_FORMATS)}")
    out = Path(out)
    target = out / f"matrix.{fmt}" if out.is_dir() else out
    if fmt == "xlsx":
        return write_private(target, lambda tmp: render.write_xlsx(m, tmp), what="matrix")
    text = {"csv": render.to_csv, "json": render.to_json, "html": render.to_html}[fmt](m)
    return write_private(target, lambda tmp: write_synced(tmp, text), what="matrix")
