"""PostgreSQL's campaign version read on the event loop (api/version_reader.py), real server.

It must return what the pooled read returns (the tuples are cache keys), answer None for another
project's campaign, and survive its connection being killed: that read falls back to the pool and
the next one reconnects, with no request failing.
"""
from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import text, update

from evoforge.api.auth import Principal
from evoforge.api.caches import body_key
from evoforge.api.services.programs import VERSION, campaign_version
from evoforge.api.version_reader import APPLICATION_NAME, AsyncVersionReader
from evoforge.db import apikeys
from evoforge.db.campaign_config import CampaignSpec
from evoforge.db.engine import get_engine, session_factory
from evoforge.db.models import Campaign
from evoforge.worker.campaign_service import create_campaign
from tests.api.conftest import start_server
from tests.integration.services import pg_url, postgres_server  # noqa: F401

pytestmark = pytest.mark.integration


def _campaign(url: str, project: str) -> tuple[int, int, str]:
    sessions = session_factory(url)
    key, project_id = apikeys.create_key(sessions, project)
    c = create_campaign(sessions, CampaignSpec(task="circle_packing"), project_id=project_id,
                        status="completed")
    return c.id, project_id, key


def _kill_reader_connections(url: str) -> int:
    with get_engine(url).connect() as conn:
        killed = conn.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name = :name"), {"name": APPLICATION_NAME}).scalar()
        conn.commit()
    return killed


def test_the_loop_read_equals_the_pooled_read_and_reconnects(pg_url):
    cid, project_id, _ = _campaign(pg_url, "alpha")
    other, other_project, _ = _campaign(pg_url, "beta")
    reader = AsyncVersionReader(get_engine(pg_url), VERSION)
    sessions = session_factory(pg_url)

    async def scenario():
        with sessions() as s:
            expected = campaign_version(s, Principal(project_id), cid)
        assert await reader.read(cid, project_id) == expected
        assert await reader.read(cid, other_project) is None     # not theirs
        assert await reader.read(other, project_id) is None
        assert await reader.read(cid, None) is None              # open mode: no project
        with sessions.begin() as s:
            s.execute(update(Campaign).where(Campaign.id == cid)
                      .values(evaluations=Campaign.evaluations + 1))
        assert (await reader.read(cid, project_id))[2] == expected[2] + 1
        assert _kill_reader_connections(pg_url) == 1
        with pytest.raises(Exception):
            await reader.read(cid, project_id)                   # the dead connection
        assert (await reader.read(cid, project_id))[2] == expected[2] + 1   # a new one
        await reader.close()
    asyncio.run(scenario())


def test_requests_survive_a_killed_reader_connection(pg_url):
    cid, project_id, key = _campaign(pg_url, "alpha")
    srv = start_server(pg_url)
    try:
        with httpx.Client(base_url=srv.url + "/api/v1", timeout=60,
                          headers={"Authorization": f"Bearer {key}"}) as c:
            assert c.get(f"/campaigns/{cid}/programs").status_code == 200
            assert srv.app.state.evo.caches.async_reader, "the loop reader is not in use"
            assert _kill_reader_connections(pg_url) == 1
            with session_factory(pg_url).begin() as s:   # a write the next read must see
                s.execute(update(Campaign).where(Campaign.id == cid)
                          .values(evaluations=Campaign.evaluations + 5))
            r = c.get(f"/campaigns/{cid}/elites")
            assert r.status_code == 200, r.text
            assert c.get(f"/campaigns/{cid}/programs").status_code == 200
            with session_factory(pg_url)() as s:
                version = campaign_version(s, Principal(project_id), cid)
            # the page was built and cached under the version written after the kill
            assert srv.app.state.evo.caches.body(body_key("programs", version, b"")) is not None
    finally:
        srv.stop()
