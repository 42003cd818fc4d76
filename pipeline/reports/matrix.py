"""The portfolio matrix read model (one row per contract, one column per clause type).

PLACEHOLDER for the merge of issue 12: helper H6 owns this module (the classes below plus the
renderers to_csv / to_json / to_html / write_xlsx); this copy holds only the agreed classes so the
builder in pipeline/reports/portfolio.py can be written and tested. Take H6's version on merge.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class MatrixCitation(BaseModel):
    page: int
    sentence_id: str
    text: str
    ocr: bool = False


class MatrixCell(BaseModel):
    status: Literal["found", "not_found", "not_asked", "failed"]
    answer: str | None = None
    finding: str | None = None
    citations: list[MatrixCitation] = []


class MatrixColumn(BaseModel):
    id: str
    label: str
    kind: str
    cuad_category: str | None = None


class MatrixRow(BaseModel):
    document_id: int
    source: str
    cells: dict[str, MatrixCell]  # key = clause id


class Matrix(BaseModel):
    batch: str | None
    playbook: str
    playbook_version: str
    columns: list[MatrixColumn]
    rows: list[MatrixRow]
