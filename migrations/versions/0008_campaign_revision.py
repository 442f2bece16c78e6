"""campaign revision: a counter bumped by every write that changes a campaign's stored programs
outside an iteration's commit

The API's response caches (api/caches.py) key /elites and /programs bodies by the campaign's
version. Until now that was (id, created_at, evaluations): every iteration's commit bumps
`evaluations` in its own transaction, so it named one state of the archive. A prune
(worker/prune.py) changes stored program rows of an existing campaign without a commit (the
listing's `pruned` flag), so it bumps `revision` in the transaction that prunes, and the
version is (id, created_at, evaluations, revision).

NOT NULL DEFAULT 0: existing campaigns start at 0; adding it is a catalogue change on both
databases (PostgreSQL 11+ stores a constant default without rewriting the table).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('campaign', sa.Column('revision', sa.Integer(), nullable=False,
                                        server_default=sa.text('0')))


def downgrade() -> None:
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.drop_column('revision')
