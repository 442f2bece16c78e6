"""Malformed and out-of-range requests are 4xx with a clear message, never 5xx."""
from __future__ import annotations

import httpx
import pytest

BASE = {"task": "circle_packing", "budget": {"max_evaluations": 15}}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from tests.api.conftest import start_server

    server = start_server(f"sqlite:///{tmp_path_factory.mktemp('bad') / 'bad.db'}", execute=False)
    yield server
    server.stop()


def detail(r: httpx.Response) -> str:
    return str(r.json()["detail"])


@pytest.mark.parametrize("body, status, words", [
    ({**BASE, "task": "no_such_task"}, 422, "unknown task 'no_such_task'"),
    ({**BASE, "params": {"n": 1}}, 422, "invalid params for task 'circle_packing'"),
    ({**BASE, "params": {"n": "many"}}, 422, "invalid params"),
    ({**BASE, "params": {"n": 10**30}}, 422, "64 bits"),
    ({**BASE, "params": {"m": 3}}, 422, "unknown params for task 'circle_packing': m"),
    ({**BASE, "budget": {"max_evaluations": 0}}, 422, "greater than or equal to 1"),
    ({**BASE, "budget": {"max_evaluations": -5}}, 422, "max_evaluations"),
    ({**BASE, "budget": {"max_evaluations": 2**70}}, 422, "64 bits"),
    ({**BASE, "budget": {"max_evaluations": 10**8}}, 422, "less than or equal"),
    ({**BASE, "budget": {"evaluations": 5}}, 422, "Extra inputs are not permitted"),
    ({**BASE, "budget": {"max_cost_usd": -1}}, 422, "max_cost_usd"),
    ({**BASE, "budget": 7}, 422, "budget"),
    ({**BASE, "seed": "zero"}, 422, "seed"),
    ({**BASE, "seed": 2**40}, 422, "seed"),
    ({**BASE, "parallel": 0}, 422, "parallel"),
    ({**BASE, "colour": "red"}, 422, "Extra inputs are not permitted"),
    ({**BASE, "mutator": {"kind": "llm", "base_url": "ftp://x"}}, 422, "base_url"),
    ({**BASE, "mutator": {"kind": "quantum"}}, 422, "kind"),
    ({**BASE, "archive": {"islands": 0}}, 422, "islands"),
    ({**BASE, "schedule": {"cron": "not a cron at all"}}, 422, "cron"),
    ({**BASE, "program": "   "}, 422, "seed program is empty"),
    ({**BASE, "name": "a\x00b"}, 422, "NUL"),
    ({**BASE, "name": "x" * 1000}, 422, "name"),
    ({"params": {}}, 422, "task"),
    ([], 422, "Input should be"),
    ("circle_packing", 422, "Input should be"),
    (None, 422, ""),
])
def test_malformed_campaigns(srv, body, status, words):
    with srv.client() as c:
        r = c.post("/campaigns", json=body)
    assert r.status_code == status, r.text
    assert words in detail(r)


# Each value has the JSON type the schema gives it, at every depth: pydantic's lax mode read the
# strings and booleans below as numbers and started a campaign with them.
@pytest.mark.parametrize("change, loc, words", [
    ({"seed": "5"}, ["seed"], "valid integer"),
    ({"seed": True}, ["seed"], "valid integer"),
    ({"parallel": "2"}, ["parallel"], "valid integer"),
    ({"budget": {"max_evaluations": "15"}}, ["budget", "max_evaluations"], "valid integer"),
    ({"budget": {"max_evaluations": True}}, ["budget", "max_evaluations"], "valid integer"),
    ({"budget": {"max_evaluations": 15.5}}, ["budget", "max_evaluations"], "valid integer"),
    ({"budget": {"max_seconds": "60"}}, ["budget", "max_seconds"], "valid number"),
    ({"mutator": {"temperature": "0.5"}}, ["mutator", "temperature"], "valid number"),
    ({"mutator": {"diff_mode": "yes"}}, ["mutator", "diff_mode"], "valid boolean"),
    ({"mutator": {"diff_mode": 1}}, ["mutator", "diff_mode"], "valid boolean"),
    ({"mutator": {"models": [{"name": "m", "weight": "2"}]}}, ["mutator", "models", 0, "weight"],
     "valid number"),
    ({"mutator": {"prices": {"m": ["1", 2]}}}, ["mutator", "prices", "m", 0], "valid number"),
    ({"archive": {"islands": "4"}}, ["archive", "islands"], "valid integer"),
    ({"archive": {"selection": {"top_k": False}}}, ["archive", "selection", "top_k"],
     "valid integer"),
    ({"archive": {"code_size_range": ["1", 2]}}, ["archive", "code_size_range", 0], "valid number"),
    ({"name": 5}, ["name"], "valid string"),
    ({"schedule": {"cron": "0 3 * * *", "evaluations_per_run": "7"}},
     ["schedule", "evaluations_per_run"], "valid integer"),
])
def test_campaign_values_of_the_wrong_json_type_are_422(srv, change, loc, words):
    with srv.client() as c:
        r = c.post("/campaigns", json={**BASE, **change})
        listed = c.get("/campaigns").json()["total"]
    assert r.status_code == 422, (change, r.text)
    errors = r.json()["detail"]
    assert [e["loc"] for e in errors] == [["body", *loc]], errors
    assert words in errors[0]["msg"], errors
    assert listed == 0  # nothing was created


def test_campaign_values_of_the_right_json_type_are_read_as_sent(srv):
    # the controls: 5.0 is an integer to JSON Schema, an integer is a number, arrays are tuples
    body = {**BASE, "seed": 5.0, "budget": {"max_evaluations": 15.0, "max_seconds": 60},
            "mutator": {"kind": "local", "temperature": 1, "prices": {"m": [1, 2.5]}},
            "archive": {"code_size_range": [100, 4000.5]}}
    with srv.client() as c:
        r = c.post("/campaigns", json=body)
        assert r.status_code == 201, r.text
        got = c.get(f"/campaigns/{r.json()['id']}").json()
        c.post(f"/campaigns/{got['id']}/cancel")
        assert c.delete(f"/campaigns/{got['id']}").status_code in (200, 204)
    assert got["seed"] == 5 and got["max_evaluations"] == 15, got


@pytest.mark.parametrize("body, loc", [
    ({"cron": "*/15 * * * *", "evaluations_per_run": "7"}, ["body", "evaluations_per_run"]),
    ({"cron": 15, "evaluations_per_run": 7}, ["body", "cron"]),
])
def test_schedule_values_of_the_wrong_json_type_are_422(srv, body, loc):
    with srv.client() as c:
        cid = c.post("/campaigns", json=BASE).json()["id"]
        r = c.put(f"/campaigns/{cid}/schedule", json=body)
        c.post(f"/campaigns/{cid}/cancel")
        c.delete(f"/campaigns/{cid}")
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [loc], r.text


@pytest.mark.parametrize("raw, content_type", [
    (b"{not json", "application/json"),
    (b'{"task": "circle_packing", "seed": NaN}', "application/json"),
    (b'{"task": "circle_packing", "budget": {"max_cost_usd": Infinity}}', "application/json"),
    (b"\xff\xfe\x00garbage", "application/json"),
    (b"task=circle_packing", "application/x-www-form-urlencoded"),
    (b"", "application/json"),
    (b'{"task": "\\ud800"}', "application/json"),
])
def test_non_json_bodies(srv, raw, content_type):
    with srv.client() as c:
        r = c.post("/campaigns", content=raw, headers={"Content-Type": content_type})
    assert r.status_code in (400, 415, 422), r.text
    assert r.json()["detail"]


@pytest.mark.parametrize("path", [
    "/campaigns/0", "/campaigns/-1", f"/campaigns/{2**63}", f"/campaigns/{10**40}", "/campaigns/abc",
    "/campaigns/1.5", f"/programs/{2**63}", "/programs/0/lineage", f"/campaigns/{2**64}/elites",
])
def test_path_ids_out_of_range(srv, path):
    with srv.client() as c:
        r = c.get(path)
    assert r.status_code == 422, r.text
    assert "campaign_id" in r.text or "program_id" in r.text


@pytest.mark.parametrize("path", [f"/campaigns/{2**31 - 1}", "/campaigns/424242/elites",
                                  "/campaigns/5/programs", "/programs/77", "/programs/77/lineage"])
def test_missing_ids_are_404(srv, path):
    with srv.client() as c:
        r = c.get(path)
    assert r.status_code == 404 and "not found" in detail(r)


@pytest.mark.parametrize("path", [f"/campaigns/{2**31}", f"/campaigns/{2**63 - 1}/programs",
                                  f"/campaigns/{2**31}/elites", f"/programs/{2**31}",
                                  f"/programs/{2**31}/lineage"])
def test_ids_past_the_columns_range_are_422(srv, path):
    """The id columns are INTEGER (PostgreSQL: 2**31 - 1 at most): a larger id is refused by
    validation, never sent to the database (where it was a 500)."""
    with srv.client() as c:
        r = c.get(path)
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("params", [
    {"limit": 0}, {"limit": -1}, {"limit": 100000}, {"offset": -1}, {"offset": 10**20},
    {"limit": "ten"}, {"status": "sleeping"}, {"task": "a\x00b"}, {"task": ""},
])
def test_bad_list_queries(srv, params):
    with srv.client() as c:
        r = c.get("/campaigns", params=params)
    assert r.status_code == 422, r.text


def test_bad_program_queries(srv):
    with srv.client() as c:
        cid = c.post("/campaigns", json=BASE).json()["id"]
        for params in ({"sort": "random"}, {"status": "great"}, {"island": -1}, {"limit": 501}):
            assert c.get(f"/campaigns/{cid}/programs", params=params).status_code == 422
        assert c.get(f"/programs/1/lineage", params={"depth": 0}).status_code == 422
        assert c.get(f"/campaigns/{cid}/events", params={"max_seconds": -1}).status_code == 422
        assert c.get(f"/campaigns/{cid}/programs").json()["total"] == 0


def test_bad_evaluations(srv):
    with srv.client() as c:
        for body in ({"task": "circle_packing"}, {"task": "circle_packing", "code": ""},
                     {"task": "circle_packing", "code": "x", "extra": 1},
                     {"task": "circle_packing", "code": 5},
                     {"task": "circle_packing", "code": "x", "params": {"bogus": 1}},
                     {"task": "circle_packing", "code": "x", "params": {"n": 10**6}}):
            r = c.post("/evaluations", json=body)
            assert r.status_code == 422, (body, r.text)


def test_wrong_methods_and_paths(srv):
    with srv.client() as c:
        assert c.put("/campaigns").status_code == 405
        assert c.get("/nowhere").status_code == 404
        assert c.post("/campaigns/1/explode").status_code in (404, 405)


def test_unknown_query_parameters(srv):
    with srv.client() as c:
        r = c.get("/campaigns", params={"limt": 5})
        assert r.status_code == 422 and "unknown query parameter" in r.text and "limit" in r.text
        assert c.get("/campaigns", params={"limit": 5}).status_code == 200
        assert c.get("/tasks", params={"x": 1}).status_code == 422
