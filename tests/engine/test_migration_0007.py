"""Migration 0007 (the listing indexes) on SQLite and PostgreSQL: a database at 0006 with
programs in it goes to head with its rows intact and the indexes as the models define them
(on PostgreSQL compared with `create_all`'s definitions: tests/engine/test_schema_fastpath.py
does it for SQLite), the listing reads them, and the downgrade restores 0006's indexes."""
from __future__ import annotations

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text

from evoforge.db.engine import MIGRATIONS_DIR, get_engine, normalize_url
from evoforge.db.models import Base
from tests.integration.services import postgres_server  # noqa: F401  (a fixture)

EXPECTED = {
    "ix_program_campaign_score": ["campaign_id", "score", "id"],
    "ix_program_campaign_island_score": ["campaign_id", "island", "score", "id"],
    "ix_program_campaign_status_score": ["campaign_id", "status", "score", "id"],
    "ix_program_parent_id": ["parent_id", "id"],
}


def _alembic(url: str, action, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = get_engine(url)
    action(cfg, revision)


def _program_indexes(url: str) -> dict[str, list[str]]:
    eng = create_engine(normalize_url(url))
    try:
        return {i["name"]: i["column_names"] for i in inspect(eng).get_indexes("program")}
    finally:
        eng.dispose()


def _fill(url: str) -> None:
    with get_engine(url).begin() as conn:
        conn.execute(text("INSERT INTO campaign (id, name, task, params, task_key, status, seed, "
                          "parallel, islands, config, seed_program, error, meta_note, created_at, "
                          "iterations_reserved, tokens_reserved, cost_reserved_usd, evaluations, "
                          "sandbox_runs, cache_hits, failures, rejected, novelty_skips, tokens, "
                          "cost_usd, eval_seconds, adhoc) VALUES (1, 'c', 't', '{}', 'k', "
                          "'completed', 0, 1, 2, '{}', '', '', '', CURRENT_TIMESTAMP, 0, 0, 0, 3, "
                          "0, 0, 0, 0, 0, 0, 0, 0, false)"))
        for i, (parent, island, status, score) in enumerate(
                [(None, 0, "ok", 1.0), (1, 1, "error", None), (1, 1, "ok", 2.0)], start=1):
            conn.execute(text(
                "INSERT INTO program (id, campaign_id, iteration, parent_id, island, generation, "
                "code_hash, kind, prompt_tokens, completion_tokens, cost_usd, extra, status, score, "
                "created_at) VALUES (:id, 1, :it, :parent, :island, 0, :h, 'k', 0, 0, 0, '{}', "
                ":status, :score, CURRENT_TIMESTAMP)"),
                dict(id=i, it=i - 1, parent=parent, island=island, h=f"{i:064x}", status=status,
                     score=score))


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return request.getfixturevalue("postgres_server").createdb()


def test_0007_upgrades_a_filled_0006_database_and_downgrades(url):
    _alembic(url, command.upgrade, "0006")
    before = _program_indexes(url)
    assert before["ix_program_campaign_score"] == ["campaign_id", "score"]
    _fill(url)
    _alembic(url, command.upgrade, "0007")
    after = _program_indexes(url)
    for name, cols in EXPECTED.items():
        assert after[name] == cols, name
    with get_engine(url).connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0007"
        assert conn.execute(text("SELECT id FROM program WHERE campaign_id = 1 AND score IS NOT NULL "
                                 "ORDER BY score DESC, id")).scalars().all() == [3, 1]
    _alembic(url, command.downgrade, "0006")
    assert _program_indexes(url) == before
    _alembic(url, command.upgrade, "head")
    assert {k: v for k, v in _program_indexes(url).items() if k in EXPECTED} == EXPECTED


def _pg_indexdefs(url: str) -> dict[str, str]:
    eng = create_engine(normalize_url(url))
    try:
        with eng.connect() as conn:
            return dict(conn.execute(text("SELECT indexname, indexdef FROM pg_indexes "
                                          "WHERE tablename = 'program'")).all())
    finally:
        eng.dispose()


def test_postgresql_indexes_equal_the_models(postgres_server):
    migrated, created = postgres_server.createdb(), postgres_server.createdb()
    _alembic(migrated, command.upgrade, "head")
    eng = create_engine(normalize_url(created))
    Base.metadata.create_all(eng)
    eng.dispose()
    got, want = _pg_indexdefs(migrated), _pg_indexdefs(created)
    assert got == want
    assert "(campaign_id, score DESC, id)" in got["ix_program_campaign_score"]
