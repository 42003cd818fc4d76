"""configurations: every summary and job is keyed by the configuration that produced it (issue 13).

New tables ``configurations`` (id = hash of the fields, see pipeline/review/configuration.py) and
``completions`` (one prompt's answer, for reuse across configurations). ``summaries.config_id``
replaces ``prompt_version`` in the one-per-document key; jobs and engine runs record it too, and
engine runs their tier.

Existing rows keep everything and get the configuration they were made under *as far as the
engine-run record tells*: the review key and playbook from the summary, model, dtype, quantization,
KV-cache dtype, context and seed from the engine run's config snapshot, the chunk plan from the
summary's jobs, the model fingerprint when the model folder still exists. What was never recorded
(the rest of sampling, output limits) is "unrecorded" and the configuration is marked legacy, so it
is never mistaken for a current one: such results show as stale until a rerun replaces them.

Revision ID: 0004_configurations
Revises: 0003_clause_status
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0004_configurations"
down_revision = "0003_clause_status"
branch_labels = None
depends_on = None

UNRECORDED = "unrecorded"


def upgrade() -> None:
    op.create_table(
        "configurations",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("review_key", sa.String(length=32), nullable=False),
        sa.Column("tier", sa.String(length=40), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_configurations")),
    )
    op.create_table(
        "completions",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("finish_reason", sa.String(length=16), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("engine_run_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["engine_run_id"],
            ["engine_runs.id"],
            name=op.f("fk_completions_engine_run_id_engine_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_completions")),
    )
    with op.batch_alter_table("summaries") as batch_op:
        batch_op.add_column(sa.Column("config_id", sa.String(length=16), nullable=True))
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("config_id", sa.String(length=16), nullable=True))
    with op.batch_alter_table("engine_runs") as batch_op:
        batch_op.add_column(sa.Column("config_id", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("tier", sa.String(length=40), server_default="primary", nullable=False))

    _backfill(op.get_bind())

    with op.batch_alter_table("summaries") as batch_op:
        batch_op.alter_column("config_id", existing_type=sa.String(length=16), nullable=False)
        batch_op.drop_constraint("uq_summaries_document_id_prompt_version", type_="unique")
        batch_op.create_unique_constraint("uq_summaries_document_id_config_id", ["document_id", "config_id"])
        batch_op.create_index(batch_op.f("ix_summaries_config_id"), ["config_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_summaries_config_id_configurations"),
            "configurations",
            ["config_id"],
            ["id"],
            ondelete="RESTRICT",
        )
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_config_id"), ["config_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_jobs_config_id_configurations"), "configurations", ["config_id"], ["id"], ondelete="RESTRICT"
        )
    with op.batch_alter_table("engine_runs") as batch_op:
        batch_op.create_foreign_key(
            batch_op.f("fk_engine_runs_config_id_configurations"),
            "configurations",
            ["config_id"],
            ["id"],
            ondelete="SET NULL",
        )


def _backfill(bind) -> None:
    meta = sa.MetaData()
    summaries = sa.Table("summaries", meta, autoload_with=bind)
    jobs = sa.Table("jobs", meta, autoload_with=bind)
    runs = sa.Table("engine_runs", meta, autoload_with=bind)
    configurations = sa.Table("configurations", meta, autoload_with=bind)
    run_config = {r.id: (r.config or {}, r.model, r.dtype, r.quantization) for r in bind.execute(sa.select(runs))}
    plans: dict[tuple[int, str], str] = {}
    for doc, key, plan in bind.execute(sa.select(jobs.c.document_id, jobs.c.prompt_version, jobs.c.plan)):
        plans.setdefault((doc, key), plan)
    made: dict[str, dict] = {}
    now = datetime.now(UTC)
    for row in bind.execute(sa.select(summaries)).all():
        fields = _legacy_fields(row, run_config.get(row.engine_run_id), plans.get((row.document_id, row.prompt_version)))
        cid = _id(fields)
        if cid not in made:
            made[cid] = fields
            bind.execute(
                sa.insert(configurations).values(
                    id=cid,
                    review_key=row.prompt_version,
                    tier="primary",
                    label=_label(fields),
                    fields=fields,
                    created_at=row.created_at or now,
                )
            )
        bind.execute(sa.update(summaries).where(summaries.c.id == row.id).values(config_id=cid))
        bind.execute(
            sa.update(jobs)
            .where(jobs.c.document_id == row.document_id, jobs.c.prompt_version == row.prompt_version)
            .values(config_id=cid)
        )
        if row.engine_run_id is not None:
            bind.execute(sa.update(runs).where(runs.c.id == row.engine_run_id).values(config_id=cid))


def _legacy_fields(row, run, plan: str | None) -> dict:
    """The configuration of one stored summary, as far as its records tell (see the module doc)."""
    key = row.prompt_version
    prompt_version = key.split("/", 1)[0]
    mode = "whole"
    if "+c" in key:
        suffix = key.rsplit("+c", 1)[1]
        gated = suffix.endswith("g")
        mode = f"candidates k={suffix.rstrip('g')}" + (" gated" if gated else "")
    config, model, dtype, quantization = run if run is not None else ({}, None, None, None)
    model_path = config.get("model") or model
    return {
        "prompt_version": prompt_version,
        "playbook": row.playbook or "default",
        "playbook_version": row.playbook_version or "1",
        "review_mode": mode,
        "review_key": key,
        "templates": {"all": UNRECORDED},
        "model": Path(model_path).name if model_path else UNRECORDED,
        "model_fingerprint": _fingerprint(model_path),
        "dtype": config.get("dtype") or dtype or UNRECORDED,
        "quantization": config.get("quantization", quantization),
        "kv_cache_dtype": config.get("kv_cache_dtype") or UNRECORDED,
        "max_model_len": int(config.get("max_model_len") or 0),
        "plan": plan or UNRECORDED,
        "sampling": {"seed": config.get("seed", UNRECORDED), "other": UNRECORDED},
        "limits": {"all": UNRECORDED},
        "tier": "primary",
        "legacy": True,
    }


def _fingerprint(model_path: str | None) -> str:
    if not model_path or not (Path(model_path) / "config.json").is_file():
        return UNRECORDED
    try:
        from pipeline.review.configuration import model_fingerprint

        return model_fingerprint(Path(model_path))
    except Exception:  # an unreadable folder is not a reason to fail the upgrade
        return UNRECORDED


def _id(fields: dict) -> str:
    identity = {k: v for k, v in fields.items() if k != "model"}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _label(fields: dict) -> str:
    return f"{fields['review_key']} · {fields['model']} [{fields['model_fingerprint'][:8]}] {fields['dtype']} · primary (legacy record)"


def downgrade() -> None:
    # Only one summary per (document, review key) fits the old key: keep the newest.
    bind = op.get_bind()
    meta = sa.MetaData()
    summaries = sa.Table("summaries", meta, autoload_with=bind)
    seen: set[tuple[int, str]] = set()
    for row in bind.execute(sa.select(summaries).order_by(summaries.c.id.desc())).all():
        key = (row.document_id, row.prompt_version)
        if key in seen:
            bind.execute(sa.delete(summaries).where(summaries.c.id == row.id))
        seen.add(key)
    with op.batch_alter_table("engine_runs") as batch_op:
        batch_op.drop_constraint("fk_engine_runs_config_id_configurations", type_="foreignkey")
        batch_op.drop_column("tier")
        batch_op.drop_column("config_id")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_constraint("fk_jobs_config_id_configurations", type_="foreignkey")
        batch_op.drop_index("ix_jobs_config_id")
        batch_op.drop_column("config_id")
    with op.batch_alter_table("summaries") as batch_op:
        batch_op.drop_constraint("fk_summaries_config_id_configurations", type_="foreignkey")
        batch_op.drop_index("ix_summaries_config_id")
        batch_op.drop_constraint("uq_summaries_document_id_config_id", type_="unique")
        batch_op.create_unique_constraint("uq_summaries_document_id_prompt_version", ["document_id", "prompt_version"])
        batch_op.drop_column("config_id")
    op.drop_table("completions")
    op.drop_table("configurations")
