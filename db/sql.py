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
