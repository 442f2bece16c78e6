"""compact storage: code once per hash, prompts and responses encoded (db/blobs.py)

`program.code` moves to `code_blob` (one row per distinct code hash, a zstd frame),
`program.prompt` / `program.response` become `prompt_z` / `response_z` (references to the code
blobs of the parent, of the programs the prompt quotes and of the program itself, then zstd),
and `program.pruned_at` marks programs whose texts prune dropped. `zstd_dict` holds the
dictionaries campaigns train later. Existing rows are rewritten in keyset batches of program ids
(parents first, so a prompt finds the codes it quotes already stored), and every text is
checked by decoding before the old columns go.

On SQLite the columns are added and dropped with ALTER TABLE, never by a batch rebuild: with
foreign keys on, dropping the old `program` table would cascade to every evaluation and elite.
The downgrade decodes the texts back into the restored columns.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

BATCH = 500
_OLD = sa.table("program", sa.column("id", sa.Integer), sa.column("parent_id", sa.Integer),
                sa.column("code", sa.Text), sa.column("code_hash", sa.String),
                sa.column("prompt", sa.Text), sa.column("response", sa.Text),
                sa.column("prompt_z", sa.LargeBinary), sa.column("response_z", sa.LargeBinary))


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _add(name: str, column: sa.Column) -> None:
    if _sqlite():   # ALTER TABLE ADD COLUMN, as create_all would write the column
        op.execute(sa.text(f"ALTER TABLE {name} ADD COLUMN "
                           + str(sa.schema.CreateColumn(column).compile(dialect=op.get_bind().dialect))))
    else:
        op.add_column(name, column)


def _drop(name: str, column: str) -> None:
    if _sqlite():
        op.execute(sa.text(f"ALTER TABLE {name} DROP COLUMN {column}"))
    else:
        op.drop_column(name, column)


def upgrade() -> None:
    op.create_table('code_blob',
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('hash')
    )
    op.create_table('zstd_dict',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('campaign_id', 'kind', name='uq_zstd_dict_campaign_kind')
    )
    _add('program', sa.Column('prompt_z', sa.LargeBinary(), nullable=True))
    _add('program', sa.Column('response_z', sa.LargeBinary(), nullable=True))
    _add('program', sa.Column('pruned_at', sa.DateTime(timezone=True), nullable=True))
    _move_rows_in(op.get_bind())
    for column in ('code', 'prompt', 'response'):
        _drop('program', column)


def _move_rows_in(conn) -> None:
    from evoforge.db import blobs

    last = 0
    while True:
        rows = conn.execute(sa.select(_OLD.c.id, _OLD.c.parent_id, _OLD.c.code, _OLD.c.prompt,
                                      _OLD.c.response).where(_OLD.c.id > last)
                            .order_by(_OLD.c.id).limit(BATCH)).all()
        if not rows:
            return
        last = rows[-1][0]
        parents = {r[1] for r in rows if r[1] is not None}
        parent_code = dict(conn.execute(sa.select(_OLD.c.id, _OLD.c.code)
                                        .where(_OLD.c.id.in_(parents))).all()) if parents else {}
        blobs.put_codes(conn, [r[2] for r in rows if r[2] is not None])
        updates = []
        for pid, parent_id, code, prompt, response in rows:
            parent = parent_code.get(parent_id)
            refs = {blobs.code_hash(parent): parent} if parent else {}
            own = {blobs.code_hash(code): code} if code is not None else {}
            quoted = blobs.get_codes(conn, blobs.quoted_hashes(prompt)) if prompt else {}
            prompt_z = None if prompt is None else blobs.encode_text(prompt, {**refs, **quoted})
            response_z = None if response is None else blobs.encode_text(response, {**refs, **own})
            if blobs.decode_texts(conn, [prompt_z, response_z]) != [prompt, response]:
                raise RuntimeError(f"program {pid}: its texts did not survive encoding")
            updates.append({"b_id": pid, "b_hash": next(iter(own), None),
                            "b_pz": prompt_z, "b_rz": response_z})
        conn.execute(_OLD.update().where(_OLD.c.id == sa.bindparam("b_id"))
                     .values(code_hash=sa.bindparam("b_hash"), prompt_z=sa.bindparam("b_pz"),
                             response_z=sa.bindparam("b_rz")), updates)


def downgrade() -> None:
    _add('program', sa.Column('code', sa.Text(), nullable=True))
    _add('program', sa.Column('prompt', sa.Text(), nullable=True))
    _add('program', sa.Column('response', sa.Text(), nullable=True))
    _move_rows_out(op.get_bind())
    for column in ('prompt_z', 'response_z', 'pruned_at'):
        _drop('program', column)
    op.drop_table('zstd_dict')
    op.drop_table('code_blob')


def _move_rows_out(conn) -> None:
    from evoforge.db import blobs

    last = 0
    while True:
        rows = conn.execute(sa.select(_OLD.c.id, _OLD.c.code_hash, _OLD.c.prompt_z,
                                      _OLD.c.response_z).where(_OLD.c.id > last)
                            .order_by(_OLD.c.id).limit(BATCH)).all()
        if not rows:
            return
        last = rows[-1][0]
        codes = blobs.get_codes(conn, [r[1] for r in rows])
        texts = blobs.decode_texts(conn, [b for r in rows for b in (r[2], r[3])])
        conn.execute(_OLD.update().where(_OLD.c.id == sa.bindparam("b_id"))
                     .values(code=sa.bindparam("b_code"), prompt=sa.bindparam("b_p"),
                             response=sa.bindparam("b_r")),
                     [{"b_id": r[0], "b_code": codes.get(r[1]) if r[1] else None,
                       "b_p": texts[2 * k], "b_r": texts[2 * k + 1]} for k, r in enumerate(rows)])
