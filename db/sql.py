"""The few statements whose spelling differs between SQLite and PostgreSQL."""
from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session


def insert_ignore(s: Session, model: type, **values: Any) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING. True when a row was inserted."""
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    res = s.execute(insert(model).values(**values).on_conflict_do_nothing())
    return bool(res.rowcount)


def upsert_if_greater(s: Session, model: type, keys: tuple[str, ...], column: str,
                      **values: Any) -> bool:
    """INSERT, or on a key conflict UPDATE the row only when `column` grows (one atomic
    statement on both SQLite and PostgreSQL). True when the row was inserted or replaced."""
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(model).values(**values)
    table = model.__table__
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={k: stmt.excluded[k] for k in values if k not in keys},
        where=table.c[column] < stmt.excluded[column])
    return bool(s.execute(stmt).rowcount)
