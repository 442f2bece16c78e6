"""filtered listing indexes: every filter of a program listing, on both sorts, an index range

The listing (api/services/programs.py) offers two filters, status and island, on two sorts,
score and iteration. 0007 gave the score sort an index per single filter. A page under both
filters on the score sort, or under any filter on the iteration sort, walked an index of the
campaign and checked each row in the table: one heap fetch per row skipped or passed over, 10 to
200 ms for a page deep in a million-program campaign (docs/benchmarks.md). With these an
`offset` page skips its rows in the index alone (the deferred join of api/services/listing.py)
and a keyset page starts where its cursor is:

- (campaign_id, island, status, score DESC, id): both filters, score sorts;
- (campaign_id, status, iteration), (campaign_id, island, iteration) and
  (campaign_id, island, status, iteration): the iteration sorts.

About 35 bytes per program each on PostgreSQL. Building them takes a SHARE lock on `program`
(writes wait, reads go on): about a second each per million programs here.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

INDEXES = {
    'ix_program_campaign_island_status_score': ['campaign_id', 'island', 'status',
                                                sa.text('score DESC'), 'id'],
    'ix_program_campaign_status_iteration': ['campaign_id', 'status', 'iteration'],
    'ix_program_campaign_island_iteration': ['campaign_id', 'island', 'iteration'],
    'ix_program_campaign_island_status_iteration': ['campaign_id', 'island', 'status',
                                                    'iteration'],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, 'program', columns, unique=False)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name='program')
