"""Job keys and job state changes, all in storage/repo.py: keys name the configuration the work is
for (the same work for the same configuration is never queued twice), and a job completes only
under the lease that took it."""

from __future__ import annotations

from storage import repo
from storage.db import transaction
from storage.models import Job


def _doc(s, batch):
    repo.ensure_configuration(s, id=CONFIG, review_key="v1", tier="primary", label="test", fields={})
    return repo.add_document(
        s,
        batch,
        sha256="b" * 64,
        source="x.pdf",
        source_path="/x.pdf",
        kind="pdf",
        size_bytes=10,
        status="ok",
        pages=[(1, "One. Two.", True)],
        sentences=[(1, 1, 0, 4, "One."), (2, 1, 5, 9, "Two.")],
    )


CONFIG = "0123456789abcdef"


def _row(kind: str, doc_id: int, level: int, ordinal: int) -> dict:
    return {
        "kind": kind,
        "document_id": doc_id,
        "prompt_version": "v1",
        "config_id": CONFIG,
        "plan": "p1",
        "level": level,
        "ordinal": ordinal,
        "inputs": [0, 1] if kind == "reduce" else None,
    }


def test_enqueue_builds_the_keys_stored_databases_hold_and_never_queues_twice(factory):
    with transaction(factory) as s:
        d = _doc(s, repo.get_or_create_batch(s, "b1"))
        rows = [_row("map", d.id, 0, 0), _row("map", d.id, 0, 1), _row("reduce", d.id, 1, 0)]
        assert repo.enqueue(s, rows) == 3
        keys = sorted(s.scalars(Job.__table__.select().with_only_columns(Job.key)))
        assert keys == [f"map:{d.id}:{CONFIG}:p1:0", f"map:{d.id}:{CONFIG}:p1:1", f"reduce:{d.id}:{CONFIG}:p1:1:0"]
        assert repo.enqueue(s, rows) == 0
        assert repo.enqueue(s, [_row("reduce", d.id, 2, 0)]) == 1  # another level is other work


def test_complete_job_only_under_the_lease_that_took_it(factory):
    with transaction(factory) as s:
        d = _doc(s, repo.get_or_create_batch(s, "b1"))
        repo.enqueue(s, [_row("map", d.id, 0, 0)])
    with transaction(factory) as s:
        (job,) = repo.lease(s, owner="w1", lease_seconds=60, count_attempt=True)
    with transaction(factory) as s:
        assert repo.complete_job(s, job.id, owner="w2", result={"x": 1}, raw_output="{}", engine_run_id=None) is None
        done = repo.complete_job(s, job.id, owner="w1", result={"x": 1}, raw_output="{}", engine_run_id=None)
        assert done is not None and (done.state, done.result, done.lease_owner) == ("done", {"x": 1}, None)
    with transaction(factory) as s:
        # done is final: a late second completion by the same owner changes nothing
        assert repo.complete_job(s, job.id, owner="w1", result={"x": 2}, raw_output="{}", engine_run_id=None) is None
        assert s.get(Job, job.id).result == {"x": 1}
