"""Alembic environment: the metadata is db.models.Base.metadata.

`evoforge db upgrade` passes its engine in `config.attributes["engine"]`; plain `alembic` uses
EVOFORGE_DATABASE_URL or the embedded default.
"""
from alembic import context

from evoforge.db.engine import get_engine
from evoforge.db.models import Base

target_metadata = Base.metadata
config = context.config


def run_migrations_online() -> None:
    engine = config.attributes.get("engine") or get_engine(None)
    with engine.connect().execution_options(sqlite_begin_immediate=True) as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
