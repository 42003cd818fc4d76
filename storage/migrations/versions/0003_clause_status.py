"""clause status: every asked clause type is stored as found or not_found (an absent type was not
asked), with the answer for non-yes/no kinds and the playbook (name, version) that asked it.

Rows written before playbooks existed were all findings of the default playbook: they become
status 'found' (server default) with no playbook recorded, which readers take as default@1.

Revision ID: 0003_clause_status
Revises: 0002_page_ocr
"""
from alembic import op
import sqlalchemy as sa


revision = '0003_clause_status'
down_revision = '0002_page_ocr'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('summaries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('playbook', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('playbook_version', sa.String(length=12), nullable=True))
    with op.batch_alter_table('clauses', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), server_default='found', nullable=False))
        batch_op.add_column(sa.Column('answer', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('playbook', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('playbook_version', sa.String(length=12), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('clauses', schema=None) as batch_op:
        batch_op.drop_column('playbook_version')
        batch_op.drop_column('playbook')
        batch_op.drop_column('answer')
        batch_op.drop_column('status')
    with op.batch_alter_table('summaries', schema=None) as batch_op:
        batch_op.drop_column('playbook_version')
        batch_op.drop_column('playbook')
