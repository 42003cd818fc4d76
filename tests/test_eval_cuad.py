"""`eval cuad` end to end with the tiny model (mechanics): two shipped CUAD contracts ingested, reviewed
with the 41-type cuad playbook on the session's one engine, the matrix built from storage, scored
against CUAD's labels beside the keyword baseline; and the matrix command over the same batch."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, TINY_OVERRIDES, make_settings

pytestmark = pytest.mark.engine

CUAD_EXAMPLES = REPO / "examples" / "cuad"
SCORE_KEYS = {"precision", "recall", "f1", "support", "evidence_recall", "evidence_precision"}


def assert_matrix_citations_are_stored_sentences(factory, matrix) -> int:
    """Every cited sentence is verbatim a stored sentence of that document, on the page it names."""
    from storage import repo

    n = 0
    with factory() as s:
        for row in matrix.rows:
            pages = {
                p.number: p.text
                for p in s.scalars(repo.select(repo.Page).where(repo.Page.document_id == row.document_id))
            }
            sentences = {f"S{x.ordinal}": x for x in repo.sentences_of(s, row.document_id)}
            for cell in row.cells.values():
                if cell.status != "found":
                    assert not cell.citations
                for c in cell.citations:
                    x = sentences[c.sentence_id]
                    assert (x.text, x.page_number) == (c.text, c.page)
                    assert pages[c.page][x.char_start : x.char_end] == c.text
                    n += 1
    return n


def test_eval_cuad_on_two_short_contracts_with_the_tiny_model(tmp_path, tiny_model, engine):
    from pipeline.quality.cuad_eval import run_cuad_eval
    from pipeline.reports.portfolio import build_matrix
    from pipeline.review.playbooks import load_playbook
    from storage.db import open_database

    # min_clauses forces the random model to claim (and cite) something, so the checks see citations.
    settings = make_settings(tmp_path / "home", model=tiny_model, **{**TINY_OVERRIDES, "max_output_tokens": 1024})
    factory = open_database(settings.db_url)
    result = run_cuad_eval(
        factory, settings, CUAD_EXAMPLES, limit=2, playbook="cuad", engine=engine, batch_name="cuad-e2e", mode="whole"
    )

    assert (
        result["mode"] == "whole"
        and result["contracts"] == 2
        and result["playbook"] == "cuad@1"
        and result["model"] == tiny_model.name
    )
    assert result["files"]["ingested"] == 2 and not result["files"]["failed"]
    assert not result["review"]["failed"], result["review"]["failed"]
    assert len(result["categories"]) == 41
    for scores in (result["categories"], result["baseline"]["categories"]):
        assert all(SCORE_KEYS <= set(v) for v in scores.values())
    for part in ("micro", "macro"):
        assert {"precision", "recall", "f1"} <= set(result[part]) and {"precision", "recall", "f1"} <= set(
            result["baseline"][part]
        )
    assert result["seconds"] > 0
    json.dumps(result)  # one JSON object, as --json prints

    cuad = load_playbook("cuad").with_mode("whole")
    with factory() as s:
        m = build_matrix(s, batch="cuad-e2e", playbook=cuad)
    assert len(m.rows) == 2 and [c.id for c in m.columns] == list(cuad.ids)
    statuses = {c.status for r in m.rows for c in r.cells.values()}
    assert statuses <= {"found", "not_found"} and "found" in statuses  # every type was asked; min_clauses found some
    assert assert_matrix_citations_are_stored_sentences(factory, m) >= 2

    # a rerun finds everything reviewed: no engine work, the same scores
    again = run_cuad_eval(
        factory, settings, CUAD_EXAMPLES, limit=2, playbook="cuad", engine=engine, batch_name="cuad-e2e", mode="whole"
    )
    assert again["review"]["nothing_to_do"] and again["categories"] == result["categories"]

    # the matrix command over the same batch, without an engine
    from typer.testing import CliRunner

    from pipeline.cli.main import app

    out = tmp_path / "m.json"
    ran = CliRunner().invoke(
        app,
        [
            "--home",
            str(settings.home),
            "matrix",
            "--batch",
            "cuad-e2e",
            "--playbook",
            "cuad",
            "--format",
            "json",
            "--out",
            str(out),
        ],
        env={"CONTRACTSUM_MODEL": str(tiny_model)},
    )
    assert ran.exit_code == 0, ran.output
    data = json.loads(out.read_text())
    assert "cuad-e2e" in json.dumps(data) and len(json.dumps(data)) > 1000


def test_eval_cuad_in_candidates_mode_cites_only_what_retrieval_proposed(tmp_path, tiny_model, engine):
    """The candidate review end to end: one short prompt per clause type (fewer where retrieval found nothing),
    stored as found / not found like the whole-contract review, scored beside the baseline; every citation is a
    stored sentence on its page and one of the candidates retrieval proposed for that clause type."""
    from pipeline.quality.cuad_eval import run_cuad_eval
    from pipeline.reports.portfolio import build_matrix
    from pipeline.review.candidates import propose
    from pipeline.review.playbooks import load_playbook
    from storage import repo
    from storage.db import open_database

    settings = make_settings(tmp_path / "home", model=tiny_model, **TINY_OVERRIDES)
    factory = open_database(settings.db_url)
    result = run_cuad_eval(
        factory, settings, CUAD_EXAMPLES, limit=2, playbook="cuad", engine=engine, batch_name="cand", mode="candidates"
    )
    assert result["mode"] == "candidates (k=5)" and result["contracts"] == 2 and len(result["categories"]) == 41
    assert not result["review"]["failed"], result["review"]["failed"]
    # at most one prompt per clause type and contract; a retry asks its contract's types again
    assert 2 <= result["review"]["prompts"] <= 41 * (2 + result["review"]["retries"])
    assert SCORE_KEYS - {"support"} <= set(result["micro"]) and "f1" in result["baseline"]["micro"]

    book = load_playbook("cuad").with_mode("candidates")
    with factory() as s:
        m = build_matrix(s, batch="cand", playbook=book)
        assert {c.status for r in m.rows for c in r.cells.values()} <= {"found", "not_found"}
        cited = 0
        for row in m.rows:
            stored = repo.sentences_of(s, row.document_id)
            for cid, cell in row.cells.items():
                proposed = {f"S{stored[i].ordinal}" for i in propose(book.clause(cid), [x.text for x in stored], 5)}
                assert {c.sentence_id for c in cell.citations} <= proposed, cid
                cited += len(cell.citations)
    assert cited >= 1 and assert_matrix_citations_are_stored_sentences(factory, m) == cited
    # the candidate review is stored under its own key: a whole-contract review of the playbook is another one
    with factory() as s:
        for row in m.rows:
            keys = s.scalars(
                repo.select(repo.Summary.prompt_version).where(repo.Summary.document_id == row.document_id)
            )
            assert list(keys) == ["v1/cuad@1+c5"]
