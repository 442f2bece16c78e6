"""worker leases (liveness of running iterations); PostgreSQL index for best-first listings

`GET /campaigns/{id}/programs?sort=score` orders by `score DESC NULLS LAST, id`. PostgreSQL can
walk an index in that exact order instead of sorting every program of the campaign; SQLite
cannot declare NULLS LAST in an index (and sorts the small remainder fast enough), so the index
is PostgreSQL only.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('worker_lease',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('worker_id', sa.String(length=200), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('iteration', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('worker_lease', schema=None) as batch_op:
        batch_op.create_index('ix_worker_lease_campaign_iteration', ['campaign_id', 'iteration'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_worker_lease_heartbeat_at'), ['heartbeat_at'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_worker_lease_worker_id'), ['worker_id'], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_program_campaign_best ON program "
                   "(campaign_id, score DESC NULLS LAST, id)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_program_campaign_best")
    with op.batch_alter_table('worker_lease', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_worker_lease_worker_id'))
        batch_op.drop_index(batch_op.f('ix_worker_lease_heartbeat_at'))
        batch_op.drop_index('ix_worker_lease_campaign_iteration')
    op.drop_table('worker_lease')
