"""The typed campaign config (db/campaign_config.py): one stored document with a schema version,
each fact in one home, and the 0004 migration of rows stored before it. Real SQLite, real
Alembic."""
from __future__ import annotations

import json

import sqlalchemy as sa

from evoforge.db import engine as dbe
from evoforge.db.campaign_config import CampaignConfig, CampaignSpec
from evoforge.db.models import Campaign
from evoforge.db.store import CampaignStore
from evoforge.evolution.types import FeatureDim
from evoforge.worker.campaign_service import create_campaign


def test_stored_document_is_versioned_and_loads_typed(sessions):
    spec = CampaignSpec(task="circle_packing", name="x", seed=3, parallel=2,
                        archive={"islands": 3, "bins": 7}, budget={"max_evaluations": 9},
                        mutator={"meta_interval": 5})
    cid = create_campaign(sessions, spec).id
    with sessions() as s:
        c = s.get(Campaign, cid)
        doc = c.config
        config = CampaignConfig.load(c)
    assert doc["schema_version"] == 1
    assert set(doc) == {"schema_version", "sandbox", "mutator", "archive", "budget", "schedule"}
    assert "islands" not in doc["archive"]  # its home is the column
    assert (config.task, config.name, config.seed, config.parallel) == ("circle_packing", "x", 3, 2)
    assert config.archive.islands == 3 and config.budget.max_evaluations == 9
    assert all(isinstance(d, FeatureDim) for d in config.archive.dims)
    assert config.archive.dims[0].name == "code_size" and config.archive.dims[0].bins == 7
    store = CampaignStore(sessions, cid)
    assert store.dims == config.archive.dims and store.islands == 3 and store.meta_interval == 5
    assert store.wants_failures is False  # the local mutator: one default kind everywhere


OLD = {"task": "circle_packing", "params": {}, "name": "adhoc", "seed": 0, "parallel": 1,
       "sandbox": "fork", "mutator": {"kind": "local"}, "budget": {"max_evaluations": 5},
       "schedule": None, "archive": {"islands": 1, "bins": 10,
                                     "dims": [{"name": "code_size", "lo": 1.0, "hi": 9.0, "bins": 10}]}}


def _alembic(url: str, target: str, down: bool = False) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(dbe.MIGRATIONS_DIR))
    cfg.attributes["engine"] = dbe.get_engine(url)
    (command.downgrade if down else command.upgrade)(cfg, target)


def test_migration_0004_moves_old_rows_to_the_document_and_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _alembic(url, "0003")
    eng = dbe.get_engine(url)
    insert = sa.text("INSERT INTO campaign (id, name, task, params, task_key, status, seed, parallel, "
                     "islands, config, seed_program, error, meta_note, iterations_reserved, "
                     "tokens_reserved, cost_reserved_usd, evaluations, sandbox_runs, cache_hits, "
                     "failures, rejected, novelty_skips, tokens, cost_usd, eval_seconds, created_at) VALUES "
                     "(:id, :name, 'circle_packing', '{}', 'k', :status, 0, 1, 1, :config, '', '', '', "
                     "0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '2026-12-01 00:00:00')")
    with eng.begin() as conn:
        conn.execute(insert, {"id": 1, "name": "adhoc", "status": "completed", "config": json.dumps(OLD)})
        conn.execute(insert, {"id": 2, "name": "adhoc", "status": "running",
                              "config": json.dumps({**OLD, "name": "user's"})})
    _alembic(url, "head")
    with eng.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.text("SELECT id, adhoc, config FROM campaign"))}
    assert bool(rows[1].adhoc) is True and bool(rows[2].adhoc) is False  # a user's is running
    doc = json.loads(rows[1].config)
    assert doc["schema_version"] == 1 and "task" not in doc and "islands" not in doc["archive"]
    with dbe.session_factory(url)() as s:
        config = CampaignConfig.load(s.get(Campaign, 1))
    assert config.archive.dims == [FeatureDim("code_size", 1.0, 9.0, 10)]
    assert config.budget.max_evaluations == 5 and config.archive.islands == 1
    _alembic(url, "0003", down=True)
    with eng.connect() as conn:
        old = json.loads(conn.execute(sa.text("SELECT config FROM campaign WHERE id = 1")).scalar())
    assert old["task"] == "circle_packing" and old["archive"]["islands"] == 1
    assert "schema_version" not in old
