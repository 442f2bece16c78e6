"""listing indexes: programs by score per campaign, island and status; children by parent

What a campaign of a million programs needs to answer a page of its programs, deep pages
included, with an index range scan instead of a sort (api/services/programs.py):

- `ix_program_campaign_score` becomes (campaign_id, score DESC, id): the order of the `score`
  sort (best first, ties oldest first), read forwards, and of `-score` read backwards;
- (campaign_id, island, score DESC, id) and (campaign_id, status, score DESC, id): the same
  for the two filters the API offers;
- `ix_program_parent_id` becomes (parent_id, id): a parent's newest children first (the store's
  recent failures of a parent, read at each LLM selection) without sorting all its children;
- PostgreSQL's `ix_program_campaign_best` (0002: score DESC NULLS LAST, id) goes: the first
  index serves that order on both databases now, so the schema equals the models' on both.

No NULLS clause: SQLite has none in an index, and the listing reads scored and unscored
programs as separate segments, so where an index keeps NULLs never matters. Building them on
PostgreSQL takes a SHARE lock on `program` (writes wait, reads go on) while they are built:
about a minute per index at a million programs (docs/benchmarks.md).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-20
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

SCORE_DESC = sa.text('score DESC')


def _replace(name: str, columns: list) -> None:
    op.drop_index(name, table_name='program')
    op.create_index(name, 'program', columns, unique=False)


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if _postgresql():
        op.execute("DROP INDEX IF EXISTS ix_program_campaign_best")
    _replace('ix_program_campaign_score', ['campaign_id', SCORE_DESC, 'id'])
    op.create_index('ix_program_campaign_island_score', 'program',
                    ['campaign_id', 'island', SCORE_DESC, 'id'], unique=False)
    op.create_index('ix_program_campaign_status_score', 'program',
                    ['campaign_id', 'status', SCORE_DESC, 'id'], unique=False)
    _replace('ix_program_parent_id', ['parent_id', 'id'])


def downgrade() -> None:
    _replace('ix_program_parent_id', ['parent_id'])
    op.drop_index('ix_program_campaign_status_score', table_name='program')
    op.drop_index('ix_program_campaign_island_score', table_name='program')
    _replace('ix_program_campaign_score', ['campaign_id', 'score'])
    if _postgresql():
        op.execute("CREATE INDEX ix_program_campaign_best ON program "
                   "(campaign_id, score DESC NULLS LAST, id)")
