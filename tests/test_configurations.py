"""Results keyed by the configuration that made them (issue 13): a change of model, prompt or
playbook re-runs exactly what it affects (prompts sent to the engine are counted), nothing changed
sends none and starts no engine, the migration gives old rows their configuration, reports never
show a stale result as current, ``compare`` reports exactly a known difference, and two
configurations' runs on PostgreSQL neither block nor duplicate each other."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
from conftest import (
    CORPUS,
    TINY_OVERRIDES,
    drop_pg_database,
    ingested,
    make_pg_database,
    make_settings,
    result_config,
)
from sqlalchemy import select, text

from bench.rerun import prompt_variant
from pipeline.batch import Chunker
from pipeline.review.configuration import ResultConfig, model_fingerprint
from pipeline.review.schema import ContractSummary
from pipeline.review.summarize import Summarizer, store_summary, summarize
from storage import repo
from storage.db import open_database, transaction
from storage.models import Job, Summary

TWO = [CORPUS / "commonpaper-mutual-nda-v1.pdf", CORPUS / "bonterms-cloud-terms-v1.pdf"]  # the two shortest


class Recorder:
    """The real engine, with every request it is sent recorded (and, for two threads, one wave at a time)."""

    def __init__(self, engine) -> None:
        self.engine, self.sent, self.lock = engine, [], threading.Lock()

    def generate(self, requests, **kw):
        with self.lock:
            self.sent.extend(requests)
            return self.engine.generate(requests, **kw)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def _setup(tmp_path, model, files=TWO, db_url=None, **overrides):
    settings, factory, _ = ingested(tmp_path, model, files, db_url=db_url, **overrides)
    return settings, factory


def _jobs(factory, config_id: str) -> list[Job]:
    with factory() as s:
        return list(s.scalars(select(Job).where(Job.config_id == config_id)))


def _summaries(factory) -> dict[tuple[int, str], Summary]:
    with factory() as s:
        return {(x.document_id, x.config_id): x for x in s.scalars(select(Summary))}


# --- identity ----------------------------------------------------------------------------------


def test_the_fingerprint_is_of_the_weights_not_the_path(tmp_path, tiny_model):
    from pipeline.demo_models import build_tiny

    moved = tmp_path / "elsewhere"
    shutil.copytree(tiny_model, moved)
    assert model_fingerprint(moved) == model_fingerprint(tiny_model)
    other = build_tiny(tmp_path / "m", seed=1)
    assert model_fingerprint(other) != model_fingerprint(tiny_model)
    a = result_config(model="x")
    assert result_config(model="y").id == a.id  # the folder's name is shown, not identity
    for change in ({"dtype": "bfloat16"}, {"quantization": "fp8"}, {"kv_cache_dtype": "fp8"}, {"tier": "fallback"}):
        assert result_config(**change).id != a.id, change
    assert set(result_config(sampling={"seed": 1}).differences(result_config())) == {"sampling.seed"}


# --- reruns do only what changed ---------------------------------------------------------------


def test_nothing_changed_sends_no_prompt_and_starts_no_engine(tmp_path, tiny_model, engine):
    settings, factory = _setup(tmp_path, tiny_model, files=TWO[:1])
    first = summarize(factory, settings, engine=Recorder(engine))
    assert first.summarized and first.prompts > 0 and first.engine_run_id is not None

    def no_engine():
        raise AssertionError("no engine may start when nothing changed")

    again = summarize(factory, settings, engine_factory=no_engine)
    assert again.nothing_to_do and again.prompts == 0 and again.engine_run_id is None
    with factory() as s:
        assert len(repo.engine_runs(s)) == 1


def test_a_reduce_only_prompt_change_re_asks_only_the_reduce_prompts(tmp_path, tiny_model, engine):
    prompts = prompt_variant(tmp_path, reduce=("Merge them into one JSON answer", "Combine them into one JSON answer"))
    settings, factory = _setup(tmp_path, tiny_model, chunk_budget=200, prompts_dir=prompts)
    rec = Recorder(engine)
    v1 = summarize(factory, settings, engine=rec)
    assert len(v1.summarized) == 2 and not v1.failed
    v1_jobs = _jobs(factory, v1.config_id)
    assert any(j.kind == "reduce" for j in v1_jobs), "the check needs documents with more than one chunk"
    sent_before = len(rec.sent)

    v2_settings = settings.model_copy(update={"prompt_version": "v2"})
    v2 = summarize(factory, v2_settings, engine=rec)
    assert v2.config_id != v1.config_id and sorted(v2.summarized) == sorted(v1.summarized)
    v2_jobs = _jobs(factory, v2.config_id)
    maps = [j for j in v2_jobs if j.kind == "map"]
    reduces = [j for j in v2_jobs if j.kind == "reduce"]
    # every map answer came from the first run; every reduce prompt (each try) went to the engine
    assert v2.reused == sum(j.attempts for j in maps) > 0
    assert v2.prompts == len(rec.sent) - sent_before == sum(j.attempts for j in reduces) > 0
    old_maps = {(j.document_id, j.ordinal): j.raw_output for j in v1_jobs if j.kind == "map"}
    assert {(j.document_id, j.ordinal): j.raw_output for j in maps} == old_maps
    # the v1 results are kept, and are now stale
    summaries = _summaries(factory)
    assert {cid for _, cid in summaries} == {v1.config_id, v2.config_id} and len(summaries) == 4

    # a change to the map prompt re-asks every prompt: nothing below the result is still valid
    v3_prompts = prompt_variant(
        tmp_path / "v3",
        summarize=("You are a careful", "You are a meticulous"),
        reduce=("Merge them into one JSON answer", "Unite them into one JSON answer"),
    )
    v3_settings = settings.model_copy(update={"prompt_version": "v2", "prompts_dir": v3_prompts})
    v3 = summarize(factory, v3_settings, engine=rec)
    assert v3.reused == 0 and v3.prompts == sum(j.attempts for j in _jobs(factory, v3.config_id)) > 0


def test_a_playbook_that_adds_a_clause_type_asks_only_the_new_type(tmp_path, tiny_model, engine):
    from pipeline.review.candidates import BM25, propose
    from pipeline.review.playbooks import load_playbook

    clauses = (
        '[[clause]]\nid = "law"\nlabel = "Governing law"\nkind = "yes_no"\nquestion = "Which law governs?"\n'
        'cuad_category = "Governing Law"\n'
        '[[clause]]\nid = "term"\nlabel = "Term"\nkind = "yes_no"\nquestion = "Does it say how long it lasts?"\n'
    )
    new = '[[clause]]\nid = "notice"\nlabel = "Notices"\nkind = "yes_no"\nquestion = "Where must notices be sent?"\n'
    head = 'name = "grow"\nversion = "{v}"\ndescription = "test"\nreview_mode = "candidates"\n'
    v1, v2 = tmp_path / "v1" / "grow.toml", tmp_path / "v2" / "grow.toml"
    for path, body in ((v1, head.format(v="1") + clauses), (v2, head.format(v="2") + clauses + new)):
        path.parent.mkdir()
        path.write_text(body)
    settings, factory = _setup(tmp_path, tiny_model, playbook=str(v1))
    rec = Recorder(engine)
    one = summarize(factory, settings, engine=rec)
    assert len(one.summarized) == 2 and one.prompts > 0
    sent_before = len(rec.sent)
    two_settings = settings.model_copy(update={"playbook": str(v2)})
    two = summarize(factory, two_settings, engine=rec)
    assert len(two.summarized) == 2 and two.config_id != one.config_id
    assert one.retries == two.retries == 0  # (yes/no answers are short: no try runs out of tokens)
    first_tries = [r for r in rec.sent[sent_before:] if r.temperature == 0.0]
    assert not {tuple(r.prompt_token_ids) for r in first_tries} & {
        tuple(r.prompt_token_ids) for r in rec.sent[:sent_before]
    }
    # exactly one prompt per chunk in which retrieval proposes a candidate for the new type
    book = load_playbook(str(v2))
    chunker = Chunker.for_model(two_settings, tiny_model, book)
    expected = 0
    with factory() as s:
        for d in repo.documents(s):
            rows = repo.sentences_of(s, d.id)
            texts = [x.text for x in rows]
            hits = {rows[i].ordinal for i in propose(book.clause("notice"), texts, book.candidates_k, bm25=BM25(texts))}
            for ch in repo.chunks_of(s, d.id, chunker.plan):
                expected += any(ch.first_sentence <= o <= ch.last_sentence for o in hits)
    assert len(first_tries) == expected > 0
    # the old types' answers were reused, and the new result has a row for every type asked
    assert two.reused == one.prompts and two.prompts == len(first_tries)
    with factory() as s:
        for d in repo.documents(s):
            types = {c.type for c in repo.clauses_of(s, repo.summary_for(s, d.id, two.config_id).id)}
            assert types == {"law", "term", "notice"}


def test_a_model_change_re_asks_everything_and_compare_says_what_moved(tmp_path, tiny_model, engine):
    from typer.testing import CliRunner

    from pipeline.cli.main import build_app
    from pipeline.demo_models import build_tiny
    from pipeline.engine.engine import Engine

    settings, factory = _setup(tmp_path, tiny_model, files=TWO[:1])
    first = summarize(factory, settings, engine=engine)
    assert first.summarized
    other = build_tiny(tmp_path / "models", seed=1)
    moved = settings.model_copy(update={"model": other})
    # the session engine runs the old model: it is refused, not used
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="does not match the configuration"):
        summarize(factory, moved, engine=engine)
    second_engine = Engine(other, max_model_len=32768, dtype="float32", max_num_seqs=64, cpu_kvcache_space_gib=1)
    try:
        second = summarize(factory, moved, engine=second_engine)
    finally:
        second_engine.shutdown()
    assert second.summarized == first.summarized and second.reused == 0
    assert second.prompts == sum(j.attempts for j in _jobs(factory, second.config_id)) > 0
    with factory() as s:
        conf = ResultConfig.model_validate(repo.configuration(s, second.config_id).fields)
        assert conf.model_fingerprint == model_fingerprint(other) and conf.model == other.name
    env = {"CONTRACTSUM_HOME": str(settings.home), "CONTRACTSUM_MODEL": str(other)}
    for key, value in TINY_OVERRIDES.items():
        env[f"CONTRACTSUM_{key.upper()}"] = str(value)
    result = CliRunner().invoke(
        build_app(), ["compare", first.config_id[:8], "current", "--batch", "b1", "--format", "json"], env=env
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["a"]["id"] == first.config_id and data["b"]["id"] == second.config_id
    assert set(data["configuration_differences"]) == {"model", "model_fingerprint"}
    assert data["documents_compared"] == 1


# --- which result is shown -----------------------------------------------------------------------


def _two_configs_stored(tmp_path, factory, doc_ids):
    """Results under configuration A for ``doc_ids``, under B (another model) for the first only."""
    a, b = result_config(), result_config(model_fingerprint="1" * 32)
    result = ContractSummary.model_validate(
        {
            "summary": "s",
            "parties": [],
            "dates": [],
            "clauses": [{"type": "termination", "finding": "f", "citations": ["S1"]}],
        }
    )
    with transaction(factory) as s:
        for d in doc_ids:
            store_summary(s, d, a, result, engine_run_id=None, chunks=1)
        store_summary(s, doc_ids[0], b, result, engine_run_id=None, chunks=1)
    return a, b


def _docs(factory, names=("a.txt", "b.txt")) -> list[int]:
    ids = []
    with transaction(factory) as s:
        batch = repo.get_or_create_batch(s, "b1")
        for i, name in enumerate(names):
            doc = repo.add_document(
                s,
                batch,
                sha256=f"{i:064d}",
                source=name,
                source_path=f"/{name}",
                kind="txt",
                size_bytes=10,
                status="ok",
                pages=[(1, "One ends. Two pays. Three governs. Four notices.", True)],
                sentences=[
                    (1, 1, 0, 9, "One ends."),
                    (2, 1, 10, 19, "Two pays."),
                    (3, 1, 20, 33, "Three governs."),
                    (4, 1, 34, 47, "Four notices."),
                ],
            )
            repo.record_file(s, batch, source=f"/{name}", status="ok", document_id=doc.id)
            ids.append(doc.id)
    return ids


def test_reports_show_the_current_result_and_mark_a_stale_one(tmp_path, factory):
    from pipeline.reports.export import render
    from pipeline.reports.portfolio import build_matrix
    from pipeline.reports.report import build_report
    from pipeline.reports.selection import Selection
    from pipeline.review.playbooks import load_playbook

    d1, d2 = _docs(factory)
    a, b = _two_configs_stored(tmp_path, factory, [d1, d2])
    current_b = Selection(current=b.id, review_key="v1")
    report = build_report(factory, prompt_version="v1", batch="b1", selection=current_b)
    states = {e["document_id"]: e["configuration"]["state"] for e in report["documents"]}
    ids = {e["document_id"]: e["configuration"]["id"] for e in report["documents"]}
    assert states == {d1: "current", d2: "stale"} and ids == {d1: b.id, d2: a.id}
    assert report["results"] == {"current": 1, "fallback": 0, "stale": 1, "by_tier": {"primary": 1}}
    md, html, rows = render(report, "md"), render(report, "html"), render(report, "csv").splitlines()
    assert md.count("STALE") == 1 and f"made under {a.id}" in md and 'class="config config-stale"' in html
    assert sum(1 for r in rows if r.endswith(f"{a.id},stale")) >= 1 and not any(
        r.endswith(f"{a.id},current") for r in rows
    )
    # --config-id shows A everywhere, never as current
    picked = Selection(current=b.id, review_key="v1", config_id=a.id)
    report = build_report(factory, prompt_version="v1", batch="b1", selection=picked)
    assert {e["configuration"]["state"] for e in report["documents"]} == {"stale"}
    with factory() as s:
        m = build_matrix(s, batch="b1", playbook=load_playbook("default"), selection=current_b)
    assert {r.document_id: r.config_state for r in m.rows} == {d1: "current", d2: "stale"}
    # --as-of before B existed: A's results
    with factory() as s:
        b_time = repo.summary_for(s, d1, b.id).created_at
        a_time = max(repo.summary_for(s, d, a.id).created_at for d in (d1, d2))
    assert a_time < b_time
    old = Selection(current=b.id, review_key="v1", as_of=a_time)
    report = build_report(factory, prompt_version="v1", batch="b1", selection=old)
    assert {e["configuration"]["id"] for e in report["documents"]} == {a.id}


def test_compare_reports_exactly_a_known_difference(tmp_path, factory):
    from pipeline.quality.compare import compare, render

    d1, d2, d3 = _docs(factory, ("changed.txt", "same.txt", "new.txt"))
    a, b = result_config(), result_config(model_fingerprint="2" * 32)
    base = {
        "summary": "The agreement ends on notice and is governed by Delaware law.",
        "parties": [],
        "dates": [],
        "clauses": [
            {"type": "termination", "finding": "ends", "citations": ["S1"]},
            {"type": "payment_terms", "finding": "pays", "citations": ["S2"]},
            {"type": "governing_law", "finding": "Delaware", "citations": ["S3"]},
        ],
    }
    changed = {
        "summary": "The agreement ends on notice.",
        "parties": [],
        "dates": [],
        "clauses": [
            {"type": "termination", "finding": "ends", "citations": ["S1", "S4"]},  # a citation added
            {"type": "governing_law", "finding": "Delaware", "citations": ["S3"]},
            {"type": "confidentiality", "finding": "secret", "citations": ["S4"]},  # found only under B
        ],  # payment: found only under A
    }
    from pipeline.review.playbooks import load_playbook

    book = load_playbook("default")
    with transaction(factory) as s:
        for doc, res_a, res_b in ((d1, base, changed), (d2, base, base)):
            store_summary(s, doc, a, ContractSummary.model_validate(res_a), engine_run_id=None, chunks=1, playbook=book)
            store_summary(s, doc, b, ContractSummary.model_validate(res_b), engine_run_id=None, chunks=1, playbook=book)
        store_summary(s, d3, b, ContractSummary.model_validate(base), engine_run_id=None, chunks=1, playbook=book)
    with factory() as s:
        c = compare(s, a.id, b.id, batch="b1")
    assert [d.document_id for d in c.documents] == [d3, d1, d2]  # most changed first
    new, ch, same = c.documents
    assert new.presence == "only_b"
    assert (ch.found_only_a, ch.found_only_b, ch.answers_differ) == (["payment_terms"], ["confidentiality"], [])
    assert (ch.citations_added, ch.citations_removed) == (2, 1)  # S4 to termination, S4 for confidentiality; S2
    assert ch.summary_similarity is not None and 0 < ch.summary_similarity < 1
    assert same.changed is False and same.summary_similarity == 1.0 and same.clauses
    totals = {t.type: t for t in c.totals}
    assert (totals["payment_terms"].found_only_a, totals["confidentiality"].found_only_b) == (1, 1)
    assert (totals["termination"].citations_added, totals["termination"].found_a, totals["termination"].found_b) == (
        1,
        2,
        3,
    )
    assert set(c.differences) == {"model_fingerprint"}
    data = json.loads(render(c, "json"))
    assert data["documents_changed"] == 2 and data["summary_similarity_metric"] == "ROUGE-L F1 over words"
    md = render(c, "md")
    assert "found only under A: payment\\_terms" in md and "found only under B: confidentiality" in md
    assert "termination: cites +S4" in md
    assert "<td>payment_terms</td><td>2</td><td>2</td><td>1</td><td>0</td>" in render(c, "html")


# --- migration --------------------------------------------------------------------------------


def test_the_migration_keeps_every_row_and_gives_it_its_configuration(tmp_path, tiny_model, db_url):
    """A database made by the previous release (schema 0003), with a summary, its clauses and
    citations, jobs and the engine run that made them, upgraded to head."""
    from alembic import command

    from storage.db import _alembic_config, make_engine, upgrade

    engine = make_engine(db_url)
    command.upgrade(_alembic_config(engine), "0003_clause_status")
    run_config = {
        "model": str(tiny_model),
        "dtype": "float32",
        "quantization": None,
        "kv_cache_dtype": "auto",
        "max_model_len": 2048,
        "seed": 7,
    }
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
                "insert into ingest_records (batch_id, source, status, reason, document_id, created_at) values (1, '/old.pdf', 'ok', '', 1, '2026-01-01')"
            )
        )
        c.execute(
            text(
                "insert into pages (id, document_id, number, text, has_text, text_source) values (1, 1, 1, 'It ends.', true, 'text_layer')"
            )
        )
        c.execute(
            text(
                "insert into sentences (id, document_id, ordinal, page_number, char_start, char_end, text) values (1, 1, 1, 1, 0, 8, 'It ends.')"
            )
        )
        c.execute(
            text(
                "insert into chunks (id, document_id, plan, ordinal, token_count, first_page, last_page, first_sentence, last_sentence) values (1, 1, 'v1:tok:900', 0, 5, 1, 1, 1, 1)"
            )
        )
        c.execute(
            text(
                "insert into engine_runs (id, model, dtype, quantization, tensor_parallel_size, vllm_version, prompt_version, device, config, started_at, status, prompts, tokens_in, tokens_out, wall_seconds, tokens_per_second)"
                f" values (1, :m, 'float32', null, 1, '0.32.0', 'v1', 'cpu', '{json.dumps(run_config)}', '2026-01-01', 'finished', 1, 10, 5, 1.0, 5.0)"
            ),
            {"m": str(tiny_model)},
        )
        c.execute(
            text(
                "insert into jobs (id, key, kind, document_id, chunk_id, plan, level, ordinal, prompt_version, state, attempts, interruptions, result, engine_run_id, created_at, updated_at)"
                " values (1, 'map:1:v1:v1:tok:900:0', 'map', 1, 1, 'v1:tok:900', 0, 0, 'v1', 'done', 1, 0, '{}', 1, '2026-01-01', '2026-01-01')"
            )
        )
        c.execute(
            text(
                "insert into summaries (id, document_id, prompt_version, engine_run_id, summary, parties, dates, output, chunks, playbook, playbook_version, created_at)"
                " values (1, 1, 'v1', 1, 's', '[]', '[]', '{}', 1, 'default', '1', '2026-01-01')"
            )
        )
        c.execute(
            text(
                "insert into clauses (id, summary_id, type, finding, status) values (1, 1, 'termination', 'ends', 'found'), (2, 1, 'payment', '', 'not_found')"
            )
        )
        c.execute(
            text(
                "insert into citations (id, summary_id, clause_id, sentence_id, sentence_ordinal, page_number, char_start, char_end, text) values (1, 1, 1, 1, 1, 1, 0, 8, 'It ends.')"
            )
        )
        before = {
            t: c.execute(text(f"select count(*) from {t}")).scalar()
            for t in ("summaries", "clauses", "citations", "jobs", "engine_runs", "chunks")
        }
        if c.dialect.name == "postgresql":  # rows inserted with explicit ids: move the sequences past them
            for t in (
                "batches",
                "documents",
                "pages",
                "sentences",
                "chunks",
                "engine_runs",
                "jobs",
                "summaries",
                "clauses",
                "citations",
                "ingest_records",
            ):
                c.execute(text(f"select setval(pg_get_serial_sequence('{t}', 'id'), (select max(id) from {t}))"))
    upgrade(engine)
    factory = open_database(db_url)
    with factory() as s:
        after = {t: s.execute(text(f"select count(*) from {t}")).scalar() for t in before}
        assert after == before
        summary = s.get(Summary, 1)
        conf = repo.configuration(s, summary.config_id)
        fields = ResultConfig.model_validate(conf.fields)
        assert fields.id == summary.config_id  # the id is the hash of what was recorded
        assert fields.legacy and fields.model_fingerprint == model_fingerprint(tiny_model)
        assert (fields.dtype, fields.kv_cache_dtype, fields.max_model_len, fields.sampling["seed"]) == (
            "float32",
            "auto",
            2048,
            7,
        )
        assert (fields.plan, fields.playbook, fields.review_key) == ("v1:tok:900", "default", "v1")
        assert s.get(Job, 1).config_id == summary.config_id and summary.engine_run_id == 1
        assert repo.engine_run(s, 1).config_id == summary.config_id
        assert [c.type for c in repo.clauses_of(s, 1)] == ["termination", "payment"]
        assert [c.text for c in repo.citations_of(s, 1)] == ["It ends."]
    # under the current configuration the old result is stale, and a rerun queues it
    settings = make_settings(tmp_path / "home", model=tiny_model, database_url=db_url, **TINY_OVERRIDES)
    chunker = Chunker.for_model(settings, tiny_model)
    assert chunker.config_id != summary.config_id
    runner = Summarizer(factory, settings, chunker=chunker)
    from pipeline.review.summarize import SummarizeReport

    report = SummarizeReport()
    assert runner.queue(report=report) == [1] and report.stale_queued == 1
    factory.kw["bind"].dispose()
    engine.dispose()


# --- budget ----------------------------------------------------------------------------------


def test_max_documents_takes_new_contracts_before_stale_ones_unless_told(tmp_path, factory, tiny_model):
    from pipeline.review.summarize import SummarizeReport

    d1, d2 = _docs(factory)
    old = result_config(model_fingerprint="3" * 32)
    result = ContractSummary.model_validate({"summary": "s", "parties": [], "dates": [], "clauses": []})
    with transaction(factory) as s:
        store_summary(s, d1, old, result, engine_run_id=None, chunks=1)  # d1 stale, d2 new
    url = str(factory.kw["bind"].url.render_as_string(hide_password=False))
    settings = make_settings(tmp_path / "home", database_url=url, **TINY_OVERRIDES)
    model = tiny_model
    chunker = Chunker.for_model(settings, model)
    report = SummarizeReport()
    assert Summarizer(factory, settings, chunker=chunker).queue(max_documents=1, report=report) == [d2]
    assert report.deferred == 1 and report.stale_queued == 0
    # the one now in progress goes first, even when stale ones are asked for first
    assert Summarizer(factory, settings, chunker=chunker).queue(max_documents=1, stale_first=True) == [d2]
    report = SummarizeReport()
    got = Summarizer(factory, settings, chunker=chunker).queue(max_documents=2, stale_first=True, report=report)
    assert got == [d2, d1] and report.stale_queued == 1 and report.deferred == 0


# --- concurrency on PostgreSQL -----------------------------------------------------------------


def test_two_configurations_on_postgresql_neither_block_nor_duplicate(tmp_path, tiny_model, engine, pg_admin):
    url = make_pg_database(pg_admin)
    try:
        settings, factory = _setup(tmp_path, tiny_model, db_url=url)
        other = settings.model_copy(update={"summary_max_chars": 61})  # another schema: another configuration
        rec = Recorder(engine)
        reports, errors = {}, []

        def run(name, s):
            try:
                reports[name] = summarize(factory, s, engine=rec, owner=f"worker-{name}")
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n, s)) for n, s in (("a", settings), ("b", other))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=900)
        assert not errors and set(reports) == {"a", "b"}
        a, b = reports["a"], reports["b"]
        assert a.config_id != b.config_id and len(a.summarized) == len(b.summarized) == 2
        summaries = _summaries(factory)
        assert len(summaries) == 4 and {cid for _, cid in summaries} == {a.config_id, b.config_id}
        for cid, owner_run in ((a.config_id, a.engine_run_id), (b.config_id, b.engine_run_id)):
            jobs = _jobs(factory, cid)
            assert jobs and all(j.state == "done" and j.engine_run_id == owner_run for j in jobs)
        # a lease held under one configuration does not stop the other's: no waiting on locks
        with transaction(factory) as s:
            for cid in (a.config_id, b.config_id):
                row = {"kind": "map", "document_id": 1, "chunk_id": None, "plan": "p", "level": 0, "ordinal": 9}
                repo.enqueue(s, [{**row, "prompt_version": "x", "config_id": cid}])
        held = factory()
        held.begin()
        try:
            mine = repo.lease(held, owner="one", lease_seconds=60, config_id=a.config_id)
            with factory() as s2:
                s2.execute(text("set lock_timeout = '2s'"))
                theirs = repo.lease(s2, owner="two", lease_seconds=60, config_id=b.config_id)
                none = repo.lease(s2, owner="two", lease_seconds=60, config_id=a.config_id)  # skipped, not waited on
                s2.commit()
            assert len(mine) == len(theirs) == 1 and none == [] and mine[0].id != theirs[0].id
        finally:
            held.rollback()
            held.close()
        factory.kw["bind"].dispose()
    finally:
        drop_pg_database(pg_admin, url)


def test_status_configs_and_export_name_the_configurations_from_the_command_line(tmp_path, tiny_model):
    """Through the CLI, on results stored under an older configuration: status counts them stale
    and names it, `configs` lists it beside the current one, `export --config-id PREFIX` shows them."""
    from typer.testing import CliRunner

    from pipeline.cli.main import build_app

    home = tmp_path / "home"
    env = {"CONTRACTSUM_HOME": str(home), "CONTRACTSUM_MODEL": str(tiny_model)}
    settings = make_settings(home, model=tiny_model)
    factory = open_database(settings.db_url)
    d1, d2 = _docs(factory)
    old = result_config(model_fingerprint="4" * 32)
    result = ContractSummary.model_validate({"summary": "s", "parties": [], "dates": [], "clauses": []})
    with transaction(factory) as s:
        store_summary(s, d1, old, result, engine_run_id=None, chunks=1)
    run = CliRunner().invoke
    status = run(build_app(), ["status", "--json"], env=env)
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout)
    (batch,) = data["batches"]
    assert (batch["results"]["current"], batch["results"]["stale"], batch["results"]["missing"]) == (0, 1, 1)
    assert [c["id"] for c in batch["results"]["by_configuration"]] == [old.id]
    current = data["configuration"]["current"]
    assert current and current != old.id
    listed = json.loads(run(build_app(), ["configs", "--json"], env=env).stdout)
    assert listed["current"] == current and {c["id"]: c["results"] for c in listed["configurations"]} == {old.id: 1}
    out = tmp_path / "r.json"
    exported = run(
        build_app(), ["export", "--batch", "b1", "--format", "json", "-o", str(out), "--config-id", old.id[:6]], env=env
    )
    assert exported.exit_code == 0, exported.output
    docs = {d["document_id"]: d for d in json.loads(out.read_text())["documents"]}
    assert docs[d1]["configuration"]["state"] == "stale" and docs[d2]["status"] == "pending"
    bad = run(build_app(), ["export", "--config-id", "zzzz"], env=env)
    assert bad.exit_code == 2 and "no configuration 'zzzz'" in bad.output
