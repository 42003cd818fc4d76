"""Playbooks as data: validation that names the file and the field, the schema and prompt they
produce, and found / not found / not asked kept apart through storage, every export and the matrix."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import jsonschema
import pytest
from conftest import result_config

from pipeline.errors import OutputError, PromptError
from pipeline.review.playbooks import KINDS, load_playbook
from pipeline.review.prompts import load_template
from pipeline.review.schema import CLAUSE_TYPES, ContractSummary, OutputLimits, json_schema, parse_output
from pipeline.settings import REPO_ROOT

PROMPTS = REPO_ROOT / "prompts"
# Prompt v1's clause line as it was written before playbooks existed: the default must render it exactly.
V1_CLAUSE_LINE = (
    '- "clauses": for each of these clause types that the excerpt contains: indemnification, limitation_of_liability, '
    "termination, governing_law, confidentiality, assignment, payment_terms; give the type, a one-sentence finding, "
    'and the ids of the sentences that support it in "citations".'
)

GOOD = """name = "{name}"
version = "2"
description = "test"
[[clause]]
id = "cap"
label = "Cap on liability"
kind = "yes_no"
question = "Is liability capped?"
cuad_category = "Cap On Liability"
[[clause]]
id = "law"
label = "Governing law"
kind = "place"
question = "Which law governs?"
"""


def write_playbook(folder: Path, name: str, text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text if text is not None else GOOD.format(name=name))
    return path


def generated_playbook(tmp_path: Path, n: int = 41):
    """A 41-type playbook with every answer kind (the size of CUAD's)."""
    lines = ['name = "big"', 'version = "1"', 'description = "generated"']
    for i in range(n):
        lines += [
            "[[clause]]",
            f'id = "type_{i:02d}"',
            f'label = "Type {i}"',
            f'kind = "{KINDS[i % len(KINDS)]}"',
            f'question = "Question number {i}?"',
            f'cuad_category = "Category {i}"',
        ]
    return load_playbook(write_playbook(tmp_path, "big", "\n".join(lines) + "\n"))


# --- loading and validation --------------------------------------------------------------------


def test_default_playbook_is_todays_seven_types_and_renders_prompt_v1_unchanged():
    book = load_playbook("default")
    assert book.ids == CLAUSE_TYPES and len(book.ids) == 7
    assert book.review_key("v1") == "v1"  # existing jobs and summaries stay valid
    tpl = load_template(PROMPTS, "summarize", "v1", playbook=book)
    assert V1_CLAUSE_LINE in tpl.user and "{clauses}" not in tpl.user
    assert load_template(PROMPTS, "summarize", "v1").user == tpl.user
    # and the answer schema is the one the default always had: no "answer" field
    item = json_schema([1, 2], None, book)["properties"]["clauses"]["items"]
    assert item["required"] == ["type", "finding", "citations"] and item["properties"]["type"]["enum"] == list(
        CLAUSE_TYPES
    )


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (GOOD.replace('kind = "place"', 'kind = "color"'), "clause[1] (law).kind"),
        (GOOD.replace('id = "law"', 'id = "Law!"'), "clause[1] (Law!).id"),
        (GOOD.replace('id = "law"', 'id = "cap"'), "field clause: Value error, clause id 'cap' appears twice"),
        (GOOD.replace('question = "Which law governs?"\n', ""), "clause[1] (law).question"),
        (GOOD.replace('version = "2"\n', ""), "field version"),
        (GOOD.replace('description = "test"', 'description = "test"\ncolour = "red"'), "field colour"),
        (
            GOOD.replace('question = "Is liability capped?"', 'question = "Is liability capped?"\nweight = 3'),
            "clause[0] (cap).weight",
        ),
        (GOOD.replace('name = "{name}"', 'name = "other"'), "field name"),
        ('name = "bad"\nversion = "1"\n', "field clause"),
        ("name = [unclosed", "not valid TOML"),
    ],
)
def test_a_bad_playbook_is_a_clear_error_naming_the_file_and_the_field(tmp_path, text, field):
    path = write_playbook(tmp_path, "bad", text.replace("{name}", "bad"))
    with pytest.raises(PromptError) as err:
        load_playbook(path)
    assert str(path) in str(err.value)
    assert field in str(err.value)


def test_an_unknown_name_lists_the_known_playbooks():
    with pytest.raises(PromptError, match=r"no playbook named 'nosuch'.*default"):
        load_playbook("nosuch")


def test_a_dropped_in_file_is_found_by_name_and_the_users_folder_wins(tmp_path):
    home = tmp_path / "home"
    write_playbook(home / "playbooks", "mine")
    book = load_playbook("mine", home=home)
    assert (book.name, book.version, book.ids) == ("mine", "2", ("cap", "law"))
    assert book.review_key("v1") == "v1/mine@2"
    shadow = GOOD.format(name="default")
    write_playbook(home / "playbooks", "default", shadow)
    assert load_playbook("default", home=home).ids == ("cap", "law")
    assert load_playbook("default").ids == CLAUSE_TYPES  # no home: the shipped one


def test_the_shipped_cuad_playbook_has_41_categories_each_mapped_to_cuad():
    book = load_playbook("cuad")
    assert len(book.clauses) == 41
    assert all(c.cuad_category for c in book.clauses)
    assert len({c.cuad_category for c in book.clauses}) == 41
    assert book.attribution and "CUAD" in book.attribution
    schema = json_schema([4, 5], OutputLimits(max_clauses=41), book)
    assert schema["properties"]["clauses"]["items"]["properties"]["type"]["enum"] == list(book.ids)
    tpl = load_template(PROMPTS, "summarize", "v1", playbook=book)
    assert all(f"- {c.id}: " in tpl.user for c in book.clauses)


# --- schema and prompt from a playbook ----------------------------------------------------------


def test_the_schema_of_a_41_type_playbook_accepts_only_its_ids_and_this_prompts_sentences(tmp_path):
    book = generated_playbook(tmp_path)
    schema = json_schema([3, 7, 9], OutputLimits(max_clauses=41, min_clauses=1), book)
    items = schema["properties"]["clauses"]
    assert items["maxItems"] == 41 and items["items"]["properties"]["type"]["enum"] == list(book.ids)
    assert items["items"]["required"] == ["type", "finding", "answer", "citations"]

    def answer(ctype: str, cites: list[str]) -> dict:
        return {
            "summary": "s",
            "parties": [],
            "dates": [],
            "clauses": [{"type": ctype, "finding": "f", "answer": "30 days", "citations": cites}],
        }

    jsonschema.validate(answer("type_40", ["S3", "S9"]), schema)
    for bad in (
        answer("indemnification", ["S3"]),
        answer("type_41", ["S3"]),
        answer("type_01", ["S4"]),
        answer("type_01", []),
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    # parse_output applies the same rules to what the engine returns
    ok = parse_output(json.dumps(answer("type_05", ["S7"])), {3, 7, 9}, clause_ids=book.ids)
    assert ok.clauses[0].type == "type_05" and ok.clauses[0].answer == "30 days"
    with pytest.raises(OutputError, match="not in the playbook"):
        parse_output(json.dumps(answer("indemnification", ["S7"])), {3, 7, 9}, clause_ids=book.ids)
    with pytest.raises(OutputError, match="not in the prompt"):
        parse_output(json.dumps(answer("type_05", ["S8"])), {3, 7, 9}, clause_ids=book.ids)


def test_a_questions_playbook_lists_every_type_with_its_question_before_the_contract(tmp_path):
    book = generated_playbook(tmp_path)
    tpl = load_template(PROMPTS, "summarize", "v1", playbook=book)
    head, _, tail = tpl.user.partition("{contract}")
    for c in book.clauses:
        assert f"- {c.id}: {c.question}" in head  # in the shared prefix, not after the contract
    assert "(answer: the date as written)" in head and '"answer"' in head
    assert "type_00" not in tail


# --- storage, exports and the matrix -----------------------------------------------------------


def _store_document(s, name: str = "a.pdf"):
    from storage import repo

    batch = repo.get_or_create_batch(s, "b1")
    doc = repo.add_document(
        s,
        batch,
        sha256=(name * 64)[:64],
        source=name,
        source_path=f"/x/{name}",
        kind="pdf",
        size_bytes=10,
        status="ok",
        pages=[(1, "Liability is capped at fees paid. Delaware law governs.", True)],
        sentences=[(1, 1, 0, 33, "Liability is capped at fees paid."), (2, 1, 34, 55, "Delaware law governs.")],
    )
    repo.record_file(s, batch, source=f"/x/{name}", status="ok", sha256=doc.sha256, pages=1, document_id=doc.id)
    return doc


def _reviewed_by_asked_seen_through_wider(tmp_path, factory):
    """A document reviewed by playbook ``asked`` (cap, law: law found), and playbook ``wider`` =
    asked + audit, which never asked it: found, not found and not asked in one document."""
    from pipeline.review.summarize import store_summary

    asked = load_playbook(write_playbook(tmp_path / "a", "asked"))  # cap (yes_no), law (place)
    wider = load_playbook(
        write_playbook(
            tmp_path / "w",
            "asked",
            GOOD.format(name="asked")
            + ('[[clause]]\nid = "audit"\nlabel = "Audit rights"\nkind = "yes_no"\nquestion = "Audit?"\n'),
        )
    )
    result = ContractSummary.model_validate(
        {
            "summary": "s",
            "parties": [],
            "dates": [],
            "clauses": [{"type": "law", "finding": "Delaware law.", "answer": "Delaware", "citations": ["S2"]}],
        }
    )
    with factory.begin() as s:
        doc = _store_document(s)
        store_summary(s, doc.id, result_config(asked), result, engine_run_id=None, chunks=1, playbook=asked)
    return asked, wider, doc


def test_found_not_found_and_not_asked_stay_apart_through_storage_exports_and_the_matrix(tmp_path, factory):
    from pipeline.reports.export import render
    from pipeline.reports.portfolio import build_matrix
    from pipeline.reports.report import build_report
    from storage import repo

    asked, wider, doc = _reviewed_by_asked_seen_through_wider(tmp_path, factory)
    with factory() as s:
        rows = {c.type: c for c in repo.clauses_of(s, repo.summary_for(s, doc.id, result_config(asked).id).id)}
        assert {t: (r.status, r.answer, r.playbook, r.playbook_version) for t, r in rows.items()} == {
            "law": ("found", "Delaware", "asked", "2"),
            "cap": ("not_found", None, "asked", "2"),
        }
        assert "audit" not in rows  # never asked: no row
        m = build_matrix(s, batch="b1", playbook=wider)
    (row,) = m.rows
    assert {k: c.status for k, c in row.cells.items()} == {"cap": "not_found", "law": "found", "audit": "not_asked"}
    law = row.cells["law"]
    assert law.answer == "Delaware" and [(c.page, c.sentence_id, c.text) for c in law.citations] == [
        (1, "S2", "Delaware law governs.")
    ]

    report = build_report(factory, prompt_version="v1", batch="b1", playbook=wider)
    (entry,) = report["documents"]
    assert [(c["type"], c["status"]) for c in entry["clauses"]] == [
        ("cap", "not_found"),
        ("law", "found"),
        ("audit", "not_asked"),
    ]
    assert entry["playbook"] == "asked" and entry["playbook_version"] == "2"
    data = json.loads(render(report, "json"))["documents"][0]["clauses"]
    assert [(c["type"], c["status"], c["answer"]) for c in data] == [
        ("cap", "not_found", None),
        ("law", "found", "Delaware"),
        ("audit", "not_asked", None),
    ]
    rows_csv = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert [(r["clause_type"], r["clause_status"], r["answer"], r["sentence_id"]) for r in rows_csv] == [
        ("cap", "not_found", "", ""),
        ("law", "found", "Delaware", "S2"),
        ("audit", "not_asked", "", ""),
    ]
    md = render(report, "md")
    assert "| cap | *not found* |" in md and "| audit | *not asked* |" in md and "(answer: Delaware)" in md
    html = render(report, "html")
    assert '<tr class="clause-not_found"><td>cap</td>' in html and '<tr class="clause-not_asked"><td>audit</td>' in html
    assert '<tr class="clause-found"><td>law</td>' in html


def test_a_failed_review_is_failed_in_every_cell_and_an_unreviewed_one_not_asked(tmp_path, factory):
    from pipeline.reports.portfolio import build_matrix
    from storage import repo

    book = load_playbook(write_playbook(tmp_path, "asked"))
    with factory.begin() as s:
        bad = _store_document(s, "bad.pdf")
        _store_document(s, "new.pdf")
        repo.enqueue(
            s,
            [
                {
                    "key": "k1",
                    "kind": "map",
                    "document_id": bad.id,
                    "prompt_version": book.review_key("v1"),
                    "state": "failed",
                }
            ],
        )
        repo.fail_job(s, s.scalar(repo.select(repo.Job.id).where(repo.Job.key == "k1")), error="schema")
    with factory() as s:
        m = build_matrix(s, batch="b1", playbook=book)
    cells = {r.source: {c.status for c in r.cells.values()} for r in m.rows}
    assert cells == {"bad.pdf": {"failed"}, "new.pdf": {"not_asked"}}
    assert [c.id for c in m.columns] == ["cap", "law"] and m.playbook_version == "2"


def test_a_summary_stored_before_playbooks_reads_as_default_with_absent_types_not_found(tmp_path):
    """Upgrade a 0001 database holding a pre-playbook summary (only found clauses were stored)."""
    from alembic import command
    from sqlalchemy import text

    from pipeline.reports.portfolio import build_matrix
    from storage.db import _alembic_config, make_engine, open_database, upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    command.upgrade(_alembic_config(engine), "0001")
    with engine.begin() as c:
        c.execute(text("insert into batches (id, name, origin, created_at) values (1, 'b1', 'cli', '2026-01-01')"))
        c.execute(
            text(
                "insert into documents (id, sha256, source, source_path, kind, size_bytes, page_count, status, batch_id, created_at)"
                " values (1, 'x', 'old.pdf', '/old.pdf', 'pdf', 1, 1, 'ok', 1, '2026-01-01')"
            )
        )
        c.execute(
            text(
                "insert into ingest_records (batch_id, source, status, reason, document_id, created_at)"
                " values (1, '/old.pdf', 'ok', '', 1, '2026-01-01')"
            )
        )
        c.execute(
            text(
                "insert into summaries (id, document_id, prompt_version, summary, parties, dates, output, chunks, created_at)"
                " values (1, 1, 'v1', 's', '[]', '[]', '{}', 1, '2026-01-01')"
            )
        )
        c.execute(
            text("insert into clauses (id, summary_id, type, finding) values (1, 1, 'termination', 'On notice.')")
        )
    upgrade(engine)
    with open_database(url)() as s:
        m = build_matrix(s, batch="b1", playbook=load_playbook("default"))
    cells = m.rows[0].cells
    assert cells["termination"].status == "found" and cells["termination"].finding == "On notice."
    assert {cells[t].status for t in CLAUSE_TYPES if t != "termination"} == {"not_found"}


def test_the_matrix_renderings_keep_found_not_found_and_not_asked_apart(tmp_path, factory):
    """The same three states through the matrix files (renderers: pipeline/reports/matrix.py)."""
    from pipeline.reports.matrix import to_csv, to_html, to_json
    from pipeline.reports.portfolio import build_matrix, write_matrix

    asked, wider, doc = _reviewed_by_asked_seen_through_wider(tmp_path, factory)
    with factory() as s:
        m = build_matrix(s, batch="b1", playbook=wider)
    (row,) = csv.DictReader(io.StringIO(to_csv(m)))
    assert (row["Cap On Liability-Answer"], row["Governing law-Answer"], row["Audit rights-Answer"]) == (
        "No",
        "Delaware",
        "[not asked]",
    )
    assert row["Governing law"] == repr(["Delaware law governs."]) and row["Cap On Liability"] == "[]"
    data = json.dumps(json.loads(to_json(m)))
    assert '"not_found"' in data and '"not_asked"' in data and '"found"' in data
    html = to_html(m)
    assert "not found" in html and "not asked" in html
    for fmt in ("csv", "json", "html", "xlsx"):
        path = write_matrix(m, fmt, tmp_path / f"m.{fmt}")
        assert path.stat().st_size > 0 and (path.stat().st_mode & 0o777) == 0o600


def test_a_bad_playbook_flag_stops_summarize_before_any_engine_with_the_file_and_field(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli.main import app

    bad = write_playbook(tmp_path, "bad", GOOD.format(name="bad").replace('kind = "place"', 'kind = "colour"'))
    ran = CliRunner().invoke(app, ["--home", str(tmp_path / "home"), "summarize", "--playbook", str(bad)])
    assert ran.exit_code == 1
    assert str(bad) in ran.output and "clause[1] (law).kind" in ran.output
    shown = CliRunner().invoke(
        app, ["--home", str(tmp_path / "home"), "config", "--json"], env={"CONTRACTSUM_PLAYBOOK": "mine"}
    )
    assert shown.exit_code == 0
    assert json.loads(shown.output)["playbook"] == {"value": "mine", "source": "env CONTRACTSUM_PLAYBOOK"}


def test_a_bad_playbook_flag_on_submit_is_a_usage_error_exit_2_and_starts_no_run(tmp_path):
    """submit's exit 1 means "the run failed"; a playbook that does not load never starts one."""
    from typer.testing import CliRunner

    from pipeline.cli.main import app

    bad = write_playbook(tmp_path, "bad", GOOD.format(name="bad").replace('kind = "place"', 'kind = "colour"'))
    contract = tmp_path / "c.txt"
    contract.write_text("This Agreement is governed by the laws of Delaware.")
    home = tmp_path / "home"
    for flag in (str(bad), "no-such-playbook"):
        ran = CliRunner().invoke(app, ["--home", str(home), "submit", "--playbook", flag, str(contract)])
        assert ran.exit_code == 2, ran.output
        assert (str(bad) if flag.endswith(".toml") else flag) in ran.output
    assert not (home / "reports").exists()  # no run wrote a report
