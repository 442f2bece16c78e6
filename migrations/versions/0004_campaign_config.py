"""campaign config as one typed document with a schema version; ad-hoc campaigns by a column

The `config` column becomes `db.campaign_config.CampaignConfig.document()`: `schema_version` 1,
`sandbox`, `mutator`, `archive` (with its dims), `budget` and `schedule`. The keys that repeat a
column (task, params, name, seed, parallel, archive.islands) are dropped from it. The
bookkeeping campaigns of ad-hoc evaluations, so far recognised by their name "adhoc" (always
created completed, with one island), get `adhoc = true`; a user's campaign called "adhoc" is
an ordinary campaign from then on.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_COLUMNS = ("task", "params", "name", "seed", "parallel")
_DOCUMENT_KEYS = ("sandbox", "mutator", "archive", "budget", "schedule")
_campaign = sa.table("campaign", sa.column("id", sa.Integer), sa.column("config", sa.JSON),
                     sa.column("adhoc", sa.Boolean), sa.column("name", sa.String),
                     sa.column("status", sa.String), sa.column("islands", sa.Integer),
                     sa.column("task", sa.String), sa.column("params", sa.JSON),
                     sa.column("seed", sa.Integer), sa.column("parallel", sa.Integer))


def _document(config: dict | None) -> dict:
    config = config or {}
    doc = {k: config[k] for k in _DOCUMENT_KEYS if k in config}
    doc["archive"] = {k: v for k, v in (config.get("archive") or {}).items() if k != "islands"}
    doc["schema_version"] = 1
    return doc


def upgrade() -> None:
    # A plain ADD COLUMN (SQLite keeps the table as created: the same schema as create_all's)
    op.add_column('campaign', sa.Column('adhoc', sa.Boolean(), nullable=False,
                                        server_default=sa.false()))
    conn = op.get_bind()
    rows = conn.execute(sa.select(_campaign.c.id, _campaign.c.config, _campaign.c.name,
                                  _campaign.c.status, _campaign.c.islands)).all()
    for cid, config, name, status, islands in rows:
        adhoc = name == "adhoc" and status == "completed" and islands == 1
        conn.execute(_campaign.update().where(_campaign.c.id == cid)
                     .values(config=_document(config), adhoc=adhoc))


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(_campaign.c.id, _campaign.c.config, _campaign.c.islands,
                                  _campaign.c.task, _campaign.c.params, _campaign.c.name,
                                  _campaign.c.seed, _campaign.c.parallel)).all()
    for cid, config, islands, *columns in rows:
        old = {k: v for k, v in (config or {}).items() if k != "schema_version"}
        old.update(zip(_COLUMNS, columns))
        old["archive"] = {**(old.get("archive") or {}), "islands": islands}
        conn.execute(_campaign.update().where(_campaign.c.id == cid).values(config=old))
    with op.batch_alter_table('campaign', schema=None) as batch_op:
        batch_op.drop_column('adhoc')
