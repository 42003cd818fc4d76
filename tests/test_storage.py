"""Storage on SQLite and PostgreSQL: migrations match the models; queries keep their promises."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from storage import repo
from storage.db import current_revision, head_revision, make_engine, open_database, transaction, upgrade
from storage.models import Base


def test_alembic_has_a_single_head():
    from alembic.script import ScriptDirectory

    from storage.db import _alembic_config

    heads = ScriptDirectory.from_config(_alembic_config(None)).get_heads()
    assert len(heads) == 1


def test_upgrade_head_on_empty_database_matches_the_models(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(db_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    engine.dispose()


def test_upgrade_is_idempotent_and_downgrade_empties_the_schema(db_url):
    from storage.db import downgrade

    engine = make_engine(db_url)
    upgrade(engine)
    upgrade(engine)
    downgrade(engine, "base")
    assert not set(Base.metadata.tables) & set(inspect(engine).get_table_names())
    engine.dispose()


def test_sqlite_is_migrated_on_first_use(tmp_path):
    url = f"sqlite:///{tmp_path / 'new' / 'db.sqlite'}"
    factory = open_database(url)
    with factory() as s:
        assert repo.counts(s)["documents"] == 0
    assert (tmp_path / "new" / "db.sqlite").stat().st_mode & 0o077 == 0


def test_unmigrated_postgres_gets_a_clear_error(pg_admin):
    from conftest import drop_pg_database, make_pg_database

    from pipeline.errors import StorageError

    url = make_pg_database(pg_admin)
    try:
        with pytest.raises(StorageError, match="db upgrade"):
            open_database(url)
    finally:
        drop_pg_database(pg_admin, url)


def _doc(s, batch, sha="a" * 64):
    return repo.add_document(
        s,
        batch,
        sha256=sha,
        source="x.pdf",
        source_path="/x.pdf",
        kind="pdf",
        size_bytes=10,
        status="ok",
        pages=[(1, "One. Two.", True)],
        sentences=[(1, 1, 0, 4, "One."), (2, 1, 5, 9, "Two.")],
    )


def test_document_sha256_is_unique(factory):
    with transaction(factory) as s:
        b = repo.get_or_create_batch(s, "b1")
        _doc(s, b)
    with pytest.raises(IntegrityError):
        with transaction(factory) as s:
            _doc(s, repo.get_or_create_batch(s, "b1"))


def test_enqueue_is_idempotent_and_lease_takes_each_job_once(factory):
    with transaction(factory) as s:
        b = repo.get_or_create_batch(s, "b1")
        d = _doc(s, b)
        rows = [
            {
                "key": f"map:{d.id}:{i}",
                "kind": "map",
                "document_id": d.id,
                "batch_id": b.id,
                "prompt_version": "v1",
                "ordinal": i,
            }
            for i in range(3)
        ]
        assert repo.enqueue(s, rows) == 3
        assert repo.enqueue(s, rows) == 0
    with transaction(factory) as s:
        first = repo.lease(s, owner="w1", lease_seconds=60, limit=2)
    with transaction(factory) as s:
        second = repo.lease(s, owner="w2", lease_seconds=60)
    assert len(first) == 2 and len(second) == 1
    assert {j.id for j in first}.isdisjoint({j.id for j in second})
    with transaction(factory) as s:
        assert repo.release(s, [j.id for j in first], owner="w1", error="engine died") == 2
        assert repo.job_counts(s) == {"queued": 2, "leased": 1}


def test_expired_lease_returns_job_to_the_queue(factory):
    with transaction(factory) as s:
        b = repo.get_or_create_batch(s, "b1")
        d = _doc(s, b)
        repo.enqueue(s, [{"key": "k1", "kind": "map", "document_id": d.id, "prompt_version": "v1"}])
    with transaction(factory) as s:
        assert len(repo.lease(s, owner="dead", lease_seconds=-1, count_attempt=True)) == 1
    with transaction(factory) as s:
        again = repo.lease(s, owner="alive", lease_seconds=60, count_attempt=True)
        assert [j.lease_owner for j in again] == ["alive"]
        # the vanished holder's try is an interruption, not an attempt
        assert (again[0].attempts, again[0].interruptions) == (1, 1)
        assert repo.release(s, [again[0].id], owner="alive", error="engine died") == 1
    with factory() as s:
        job = s.scalar(repo.select(repo.Job))
        assert (job.state, job.attempts, job.interruptions, job.last_error) == ("queued", 0, 2, "engine died")


def test_one_summary_per_document_and_configuration(factory):
    with transaction(factory) as s:
        b = repo.get_or_create_batch(s, "b1")
        d = _doc(s, b)
        sents = repo.sentences_of(s, d.id)
        repo.ensure_configuration(s, id="c0ffee00c0ffee00", review_key="v1", tier="primary", label="x", fields={})
        repo.add_summary(
            s,
            document_id=d.id,
            prompt_version="v1",
            config_id="c0ffee00c0ffee00",
            engine_run_id=None,
            output={"summary": "x"},
            chunks=1,
            citations=[(0, "termination", "ends", sents)],
        )
        doc_id = d.id
    with pytest.raises(IntegrityError):
        with transaction(factory) as s:
            repo.add_summary(
                s,
                document_id=doc_id,
                prompt_version="v1",
                config_id="c0ffee00c0ffee00",
                engine_run_id=None,
                output={"summary": "y"},
                chunks=1,
                citations=[],
            )
    with factory() as s:
        pairs = repo.all_citations(s)
        assert len(pairs) == 2
        for c, page in pairs:
            assert page.text[c.char_start : c.char_end] == c.text
