"""With a broker, the API enqueues a new campaign in its own database (`serve --db URL`), not
in $EVOFORGE_DATABASE_URL's: a server started with --db and a broker but another (or no)
$EVOFORGE_DATABASE_URL left every campaign queued ("no such table: campaign" in its log)."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from evoforge.api.app import create_app
from evoforge.db.engine import session_factory, upgrade
from evoforge.db.models import Campaign
from tests.integration.services import redis_server, redis_url, use_broker  # noqa: F401

pytestmark = pytest.mark.integration


def test_a_campaign_is_enqueued_in_the_servers_own_database(tmp_path, redis_url, monkeypatch):
    other = tmp_path / "other.db"   # what $EVOFORGE_DATABASE_URL names: not the server's
    monkeypatch.setenv("EVOFORGE_DATABASE_URL", f"sqlite:///{other}")
    url = f"sqlite:///{tmp_path / 'server.db'}"
    upgrade(url)
    use_broker(redis_url)
    app = create_app(url, broker_url=redis_url, open_mode=True)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        r = client.post("/api/v1/campaigns", json={"task": "circle_packing",
                                                   "budget": {"max_evaluations": 2}})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
    with session_factory(url)() as s:
        # enqueue_campaign moved it from queued to running in the server's database
        assert s.scalar(select(Campaign.status).where(Campaign.id == cid)) == "running"
