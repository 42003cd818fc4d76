"""tier benchmarks: `contractsum bench --tier` stores what each engine tier measured (prefill,
decode at batch 1 and 16, throughput at the admission cap, peak memory) beside plan's estimate,
so `status` can show the last sizing of every tier and a re-run after a model change is compared.

Revision ID: 0005_tier_benchmarks
Revises: 0004_configurations
"""
from alembic import op
import sqlalchemy as sa


revision = '0005_tier_benchmarks'
down_revision = '0004_configurations'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'tier_benchmarks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('tier', sa.String(length=64), nullable=False),
        sa.Column('fingerprint', sa.String(length=64), nullable=False),
        sa.Column('model', sa.Text(), nullable=False),
        sa.Column('device', sa.String(length=32), nullable=False),
        sa.Column('vllm_version', sa.String(length=64), nullable=False),
        sa.Column('config', sa.JSON(), nullable=False),
        sa.Column('figures', sa.JSON(), nullable=False),
        sa.Column('estimate', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_tier_benchmarks')),
    )
    with op.batch_alter_table('tier_benchmarks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tier_benchmarks_tier'), ['tier'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tier_benchmarks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tier_benchmarks_tier'))
    op.drop_table('tier_benchmarks')
