"""A program's page never shows another project's code, even through a forged parent link.

`parent_id` is a plain foreign key: an imported file, a hand-edited row or a bug elsewhere could
point a program at a program of another project's campaign. GET /programs/{id} (the diff
against the parent) and /lineage follow the link only within the program's own campaign.
"""
from __future__ import annotations

from sqlalchemy import update

from evoforge.db import apikeys
from evoforge.db.engine import session_factory, upgrade
from evoforge.db.models import Program

SECRET = "def pack_circles(n):\n    raise ValueError('TEAM-B-SECRET-MARKER')\n"
MINE = "def pack_circles(n):\n    raise ValueError('mine')\n"


def test_a_forged_parent_in_another_project_is_never_followed(live_server):
    srv = live_server(execute=False)
    upgrade(srv.db_url)
    sessions = session_factory(srv.db_url)
    a_key, b_key = apikeys.create_key(sessions, "alpha")[0], apikeys.create_key(sessions, "beta")[0]
    with srv.client(a_key) as a, srv.client(b_key) as b:
        theirs = b.post("/evaluations", json={"task": "circle_packing", "code": SECRET}).json()
        mine = a.post("/evaluations", json={"task": "circle_packing", "code": MINE}).json()
        with sessions.begin() as s:
            s.execute(update(Program).where(Program.id == mine["program_id"])
                      .values(parent_id=theirs["program_id"]))
        r = a.get(f"/programs/{mine['program_id']}")
        assert r.status_code == 200, r.text
        assert "TEAM-B-SECRET-MARKER" not in r.text
        assert r.json()["diff"] is None and r.json()["code"] == MINE
        lineage = a.get(f"/programs/{mine['program_id']}/lineage").json()
        assert [e["id"] for e in lineage["ancestors"]] == [mine["program_id"]]
        assert a.get(f"/programs/{theirs['program_id']}").status_code == 404
        # the owner still sees their program whole
        assert "TEAM-B-SECRET-MARKER" in b.get(f"/programs/{theirs['program_id']}").json()["code"]
