"""stored problems: the `problem` table and `campaign.problem_id`

A user's problem directory (OpenEvolve's layout or the native one) is stored once per project
and content digest (evaluators/openevolve/package.py), so that campaigns can run it by id and
Celery workers read its files from the database. The unique index is on
(coalesce(project_id, 0), digest): open mode's problems (no project) are deduplicated too.
`campaign.problem_id` refers to the problem a campaign runs; a problem in use cannot be deleted.

On SQLite the campaign table is rebuilt (batch mode) so that its foreign key is a table
constraint, exactly as `create_all` of the models makes it (db/engine.py's fast path).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('problem',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=True),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('layout', sa.String(length=20), nullable=False),
    sa.Column('seed_path', sa.String(length=500), nullable=False),
    sa.Column('evaluator_path', sa.String(length=500), nullable=False),
    sa.Column('files', sa.JSON(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('stages', sa.JSON(), nullable=True),
    sa.Column('requirements', sa.JSON(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('file_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_problem_project_id', 'problem', ['project_id'], unique=False)
    op.create_index('uq_problem_project_digest', 'problem',
                    [sa.text('coalesce(project_id, 0)'), 'digest'], unique=True)
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.add_column(sa.Column('problem_id', sa.Integer(), nullable=True))
        batch_op.create_index('ix_campaign_problem_id', ['problem_id'], unique=False)
        batch_op.create_foreign_key('fk_campaign_problem_id', 'problem', ['problem_id'], ['id'],
                                    ondelete='RESTRICT')


def downgrade() -> None:
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.drop_constraint('fk_campaign_problem_id', type_='foreignkey')
        batch_op.drop_index('ix_campaign_problem_id')
        batch_op.drop_column('problem_id')
    op.drop_index('uq_problem_project_digest', table_name='problem')
    op.drop_index('ix_problem_project_id', table_name='problem')
    op.drop_table('problem')
