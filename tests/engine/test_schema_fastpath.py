"""The SQLite fast path of `db.engine.upgrade` (models' `create_all` + Alembic's head stamped, on a
brand-new database) must give exactly the schema that running every migration gives; a database
at head is left as it is (as Alembic would), any other goes to Alembic.

If a test here fails after adding a migration: check that `create_all` of the models still equals
the migrations (test_fastpath_schema_equals_migrations), then update `SCHEMA_HEAD` and
`SCHEMA_MIGRATIONS` in db/engine.py. Until then the fast path is off and Alembic runs.
"""
from __future__ import annotations

import re
import sqlite3

import pytest
from sqlalchemy import create_engine, inspect

from evoforge.db import engine as dbe


def _url(tmp_path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}"


def _path(url: str) -> str:
    return url.split("///", 1)[1]


def _described(url: str) -> dict:
    """Everything SQLAlchemy's inspector says about the schema, plus what it does not see."""
    eng = create_engine(url)
    try:
        insp = inspect(eng)
        out: dict = {}
        for table in sorted(insp.get_table_names()):
            cols = [{**c, "type": repr(c["type"])} for c in insp.get_columns(table)]
            out[table] = {
                "columns": cols,
                "pk": insp.get_pk_constraint(table),
                "fks": sorted(insp.get_foreign_keys(table), key=repr),
                "indexes": sorted(insp.get_indexes(table), key=lambda i: i["name"]),
                "uniques": sorted(insp.get_unique_constraints(table), key=repr),
                "checks": sorted(insp.get_check_constraints(table), key=repr),
                "table_options": insp.get_table_options(table),
            }
        return out
    finally:
        eng.dispose()


def _sqlite_master(url: str) -> dict:
    """sqlite_master, with each CREATE TABLE's clauses as a set: create_all lists a table's
    UNIQUE and FOREIGN KEY clauses in another order than the migrations (no effect in SQLite:
    the only unique constraint of a table gets the same automatic index either way, and a
    foreign key is enforced the same wherever its clause is)."""
    con = sqlite3.connect(_path(url))
    try:
        rows = con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
        pragmas = {}
        for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            pragmas[name] = (con.execute(f"PRAGMA table_xinfo('{name}')").fetchall(),
                             # without `id`: it numbers the keys in the order of their clauses
                             sorted(r[2:] for r in con.execute(f"PRAGMA foreign_key_list('{name}')")),
                             # without `seq`, the order the indexes were created in
                             sorted(r[1:] for r in con.execute(f"PRAGMA index_list('{name}')")))
        data = {name: sorted(con.execute(f"SELECT * FROM '{name}'").fetchall())
                for name in pragmas}
    finally:
        con.close()
    out = {}
    for kind, name, tbl, sql in rows:
        if sql is not None and kind == "table":
            body = sql[sql.index("(") + 1:sql.rindex(")")]
            # A table rebuilt by a batch migration is renamed into place: SQLite writes the
            # new name quoted (CREATE TABLE "campaign"), the same table.
            sql = (sql[:sql.index("(")].strip().replace(f'"{name}"', name),
                   frozenset(re.sub(r"\s+", " ", c).strip() for c in _clauses(body)))
        elif sql is not None:
            sql = re.sub(r"\s+", " ", sql).strip()
        out[(kind, name)] = (tbl, sql)
    return {"master": out, "pragmas": pragmas, "data": data}


def _clauses(body: str) -> list[str]:
    """Split a CREATE TABLE body at top-level commas."""
    parts, depth, cur = [], 0, []
    for ch in body:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


def _by_migrations(tmp_path, name="migrated.db") -> str:
    url = _url(tmp_path, name)
    dbe.alembic_upgrade(url)
    return url


def _by_fastpath(tmp_path, name="fast.db") -> str:
    url = _url(tmp_path, name)
    assert dbe._sqlite_at_head(dbe.get_engine(url)) is True
    return url


def test_fastpath_schema_equals_migrations(tmp_path):
    migrated, fast = _by_migrations(tmp_path), _by_fastpath(tmp_path)
    a, b = _described(migrated), _described(fast)
    assert "alembic_version" in a and "worker_lease" in a
    assert a == b
    assert _sqlite_master(migrated) == _sqlite_master(fast)


def test_fastpath_is_at_alembic_head(tmp_path):
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(dbe.MIGRATIONS_DIR))
    script = ScriptDirectory.from_config(cfg)
    assert script.get_heads() == [dbe.SCHEMA_HEAD], \
        "a new migration: see this file's docstring, then update db/engine.py SCHEMA_HEAD"
    files = {p.name for p in (dbe.MIGRATIONS_DIR / "versions").glob("*.py")} - {"__init__.py"}
    assert files == dbe.SCHEMA_MIGRATIONS == dbe._migration_files()

    url = _by_fastpath(tmp_path)
    with dbe.get_engine(url).connect() as conn:
        assert MigrationContext.configure(conn).get_current_heads() == (dbe.SCHEMA_HEAD,)
    # Alembic agrees there is nothing to do: the schema does not change
    before = _sqlite_master(url)
    dbe.alembic_upgrade(url)
    assert _sqlite_master(url) == before


def test_fastpath_matches_the_models(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from evoforge.db.models import Base

    url = _by_fastpath(tmp_path)
    with dbe.get_engine(url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def _count_alembic(monkeypatch) -> list:
    calls = []
    real = dbe.alembic_upgrade
    monkeypatch.setattr(dbe, "alembic_upgrade", lambda url=None: (calls.append(url), real(url)))
    return calls


def test_upgrade_skips_alembic_on_a_new_or_up_to_date_sqlite_database(tmp_path, monkeypatch):
    calls = _count_alembic(monkeypatch)
    url = _url(tmp_path, "new.db")
    dbe.upgrade(url)
    assert calls == []  # new: created and stamped without Alembic
    dbe.upgrade(url)
    assert calls == []  # at head: Alembic would do nothing
    migrated = _by_migrations(tmp_path)
    assert calls == [migrated]
    assert _sqlite_master(url) == _sqlite_master(migrated)
    dbe.upgrade(migrated)  # migrated by Alembic, at head
    assert calls == [migrated]


def test_an_older_database_is_migrated(tmp_path, monkeypatch):
    from alembic import command
    from alembic.config import Config

    url = _url(tmp_path, "old.db")
    cfg = Config()
    cfg.set_main_option("script_location", str(dbe.MIGRATIONS_DIR))
    cfg.attributes["engine"] = dbe.get_engine(url)
    command.upgrade(cfg, "0001")
    assert "worker_lease" not in inspect(dbe.get_engine(url)).get_table_names()
    calls = _count_alembic(monkeypatch)
    dbe.upgrade(url)
    assert calls == [url]
    assert _sqlite_master(url) == _sqlite_master(_by_migrations(tmp_path))


def test_an_unknown_version_is_left_to_alembic(tmp_path):
    url = _by_fastpath(tmp_path)
    con = sqlite3.connect(_path(url))
    con.execute("UPDATE alembic_version SET version_num = 'ffff'")
    con.commit()
    con.close()
    assert dbe._sqlite_at_head(dbe.get_engine(url)) is False
    with pytest.raises(Exception, match="ffff"):  # what Alembic says about it
        dbe.upgrade(url)


def test_another_migration_set_turns_the_fastpath_off(tmp_path, monkeypatch):
    migrated = _by_migrations(tmp_path)
    monkeypatch.setattr(dbe, "SCHEMA_MIGRATIONS", dbe.SCHEMA_MIGRATIONS | {"0003_future.py"})
    url = _url(tmp_path, "off.db")
    assert dbe._sqlite_at_head(dbe.get_engine(url)) is False
    assert dbe._sqlite_at_head(dbe.get_engine(migrated)) is False  # its "head" may be old now
    calls = _count_alembic(monkeypatch)
    dbe.upgrade(url)
    assert calls == [url]
    assert _sqlite_master(url) == _sqlite_master(migrated)


def test_a_database_with_anything_in_it_is_left_to_alembic(tmp_path):
    url = _url(tmp_path, "used.db")
    con = sqlite3.connect(_path(url))
    con.execute("CREATE TABLE unrelated (x INTEGER)")
    con.commit()
    con.close()
    assert dbe._sqlite_at_head(dbe.get_engine(url)) is False
    assert inspect(dbe.get_engine(url)).get_table_names() == ["unrelated"]


@pytest.mark.parametrize("url", ["postgresql+psycopg://u@127.0.0.1:1/x"])
def test_postgresql_never_takes_the_fastpath(url):
    assert dbe._sqlite_at_head(create_engine(url)) is False
