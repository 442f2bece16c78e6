"""per-model bandit statistics of a campaign, shared by every LLM worker

The LLM ensemble's upper-confidence bandit used to keep its counters in the memory of one
process, and under Celery the evaluation worker (where outcomes are known) is not the LLM worker
(where models are chosen): the bandit never learned. `model_stat` holds them per (campaign,
model), updated in the commit transaction (db/model_stats.py).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('model_stat',
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('pulls', sa.Integer(), nullable=False),
    sa.Column('valid', sa.Integer(), nullable=False),
    sa.Column('improvement', sa.Float(), nullable=False),
    sa.Column('spend', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('campaign_id', 'model')
    )


def downgrade() -> None:
    op.drop_table('model_stat')
