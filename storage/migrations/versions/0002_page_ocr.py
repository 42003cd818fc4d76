"""pages: how each page's text was obtained (text layer or OCR), with the OCR engine, its version
and its confidence.

Revision ID: 0002_page_ocr
Revises: 0001
Create Date: 2026-12-02 02:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002_page_ocr'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch_alter_table: SQLite cannot add columns with every constraint in place; it copies the table.
    with op.batch_alter_table('pages') as batch:
        # Pages stored before OCR existed came from the text layer.
        batch.add_column(sa.Column('text_source', sa.String(length=16), nullable=False, server_default='text_layer'))
        batch.add_column(sa.Column('ocr_engine', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('ocr_engine_version', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('ocr_confidence', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('pages') as batch:
        batch.drop_column('ocr_confidence')
        batch.drop_column('ocr_engine_version')
        batch.drop_column('ocr_engine')
        batch.drop_column('text_source')
