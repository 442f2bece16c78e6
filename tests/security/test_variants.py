"""Variants of the issue-11 items that the other modules of this suite do not cover, tried
against `evoforge serve` as a process, as a new user would run it.

Most tests here are holes that were found and fixed (the runner-scoped code cache, the
evaluation quota on `POST /evaluations`); the others pin variants that held, through PostgreSQL,
Redis and a real Celery worker.
"""
from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.integration.services import (evoforge_env, pg_url, postgres_server,  # noqa: F401
                                        redis_server, redis_url, start_worker, stop_process,
                                        tail, wait_for)

ROOT = Path(__file__).resolve().parents[2]
SEED = (ROOT / "examples/circle_packing/seed.py").read_text()

# The seed packing with a margin that depends on the runner it finds itself in: the fork-server
# runs candidates from `python -c` (sys.argv[0] == "-c"), the subprocess runner from a harness
# script. A candidate can always tell runners apart; this one scores differently in each.
RUNNER_AWARE = '"""Scores by the runner it is in."""' + SEED.split('"""', 2)[2].replace(
    "    margin = 0.1\n",
    "    import sys\n    margin = 0.25 if sys.argv[0] == '-c' else 0.05\n")
assert "sys.argv" in RUNNER_AWARE


def _wait_done(client: httpx.Client, cid: int, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        c = client.get(f"/campaigns/{cid}").json()
        if c["status"] in ("completed", "failed", "cancelled"):
            return c
        time.sleep(0.5)
    raise AssertionError(f"campaign {cid} did not finish: {c}")


def _evaluate(client: httpx.Client, code: str) -> dict:
    r = client.post("/evaluations", json={"task": "circle_packing", "code": code, "seed": 0})
    assert r.status_code == 200, r.text
    return r.json()


def test_code_cache_never_crosses_sandbox_runners(serve_process):
    """A campaign run in the subprocess runner fills the code cache; a one-off evaluation of the
    same source and seed runs in the fork-server. The candidate can see which runner it is in, so
    a hit across runners would hand it the other runner's score: it must score as it does alone."""
    sp = serve_process()
    with httpx.Client(base_url=sp.url + "/api/v1", timeout=120) as client:
        r = client.post("/campaigns", json={
            "task": "circle_packing", "program": RUNNER_AWARE, "sandbox": "subprocess",
            "seed": 0, "name": "runner", "budget": {"max_evaluations": 1}})
        assert r.status_code == 201, r.text
        campaign = _wait_done(client, r.json()["id"])
        assert campaign["status"] == "completed", campaign
        in_subprocess = campaign["best_score"]

        alone = _evaluate(client, RUNNER_AWARE + "\n# alone\n")  # one byte apart: a fresh run
        assert alone["cache"] == "miss"
        assert alone["score"] != pytest.approx(in_subprocess), "the runners must differ here"

        after = _evaluate(client, RUNNER_AWARE)
        assert after["score"] == pytest.approx(alone["score"]), (
            f"cache {after['cache']!r}: scored {after['score']} in the fork-server after the "
            f"subprocess campaign, {alone['score']} alone")
        assert after["cache"] != "code"   # a functional hit on `alone`'s outputs is sound
        # within one runner the code cache still answers
        assert _evaluate(client, RUNNER_AWARE)["cache"] == "code"


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def test_one_off_evaluations_count_against_the_evaluation_quota(serve_process, database, request):
    """`EVOFORGE_QUOTA_EVALUATIONS` bounds what a project may run. `POST /evaluations` runs a
    sandbox evaluation too: it must not be a way around the quota, also not by parallel requests."""
    from concurrent.futures import ThreadPoolExecutor

    db_url = request.getfixturevalue("pg_url") if database == "postgres" else None
    sp = serve_process(env={"EVOFORGE_QUOTA_EVALUATIONS": "3"}, db_url=db_url)
    with httpx.Client(base_url=sp.url + "/api/v1", timeout=120) as client:
        def one(i: int) -> httpx.Response:
            return client.post("/evaluations", json={
                "task": "circle_packing", "code": f"def pack_circles(n):\n    return {i}\n"})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(8)))
        codes = sorted(r.status_code for r in answers)
        assert codes == [200] * 3 + [403] * 5, [r.text[:200] for r in answers]
        refused = next(r for r in answers if r.status_code == 403).json()["detail"]
        assert "3" in refused and "evaluations" in refused
        assert one(99).status_code == 403                      # still spent afterwards
        r = client.post("/campaigns", json={"task": "circle_packing",
                                             "budget": {"max_evaluations": 1}})
        assert r.status_code == 403, r.text                    # and campaigns see it too


# -- PostgreSQL + Redis + a real Celery worker ---------------------------------------------------

SECRETS = ("sk-worker-env-secret", "sk-llm-env-secret", "sk-operator-endpoint")


@pytest.mark.integration
def test_celery_path_keys_and_runner_scoped_cache(pg_url, redis_url, listener_factory,
                                                  serve_process, tmp_path):
    """As a team would run it: `evoforge serve` on PostgreSQL with a Redis broker and a Celery
    worker whose environment holds keys. A caller's URL (allowed, private ranges too) gets no
    key from the worker, the operator's endpoint gets its own key and no other, a mutator naming
    both is refused, and the code cache does not cross sandbox runners there either."""
    caller, operator = listener_factory(), listener_factory()
    endpoints = tmp_path / "endpoints.toml"
    endpoints.write_text(f'[endpoints.op]\nbase_url = "{operator.url}"\nkey_env = "OP_KEY"\n'
                         'models = ["m"]\n\n[caller_urls]\nopen_mode = true\nallow_private = true\n')
    keys = {"OPENAI_API_KEY": SECRETS[0], "EVOFORGE_LLM_API_KEY": SECRETS[1], "OP_KEY": SECRETS[2],
            "EVOFORGE_LLM_ENDPOINTS": str(endpoints)}
    env = evoforge_env(pg_url, redis_url, **keys)
    sp = serve_process(env={k: v for k, v in env.items()
                            if k.startswith(("EVOFORGE_", "OPENAI_", "OP_KEY"))}, db_url=pg_url)
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        with httpx.Client(base_url=sp.url + "/api/v1", timeout=120) as client:
            both = {"kind": "llm", "endpoint": "op", "base_url": caller.url,
                    "models": [{"name": "m"}]}
            r = client.post("/campaigns", json={"task": "circle_packing", "mutator": both})
            assert r.status_code == 422 and "not both" in r.text, r.text
            ids = []
            for mutator in ({"kind": "llm", "base_url": caller.url, "models": [{"name": "m"}]},
                            {"kind": "llm", "endpoint": "op", "models": [{"name": "m"}]}):
                r = client.post("/campaigns", json={"task": "circle_packing", "mutator": mutator,
                                                    "budget": {"max_evaluations": 3}})
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            r = client.post("/campaigns", json={
                "task": "circle_packing", "program": RUNNER_AWARE, "sandbox": "subprocess",
                "seed": 0, "budget": {"max_evaluations": 1}})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
            try:
                done = [wait_for(lambda cid=cid: (lambda c: c if c["status"] in (
                    "completed", "failed") else None)(client.get(f"/campaigns/{cid}").json()),
                    180, 0.5, f"campaign {cid}") for cid in ids]
            except TimeoutError:
                raise AssertionError(tail(tmp_path / "worker.log")) from None
            assert [c["status"] for c in done] == ["completed"] * 3, done

            assert caller.requests, "the caller's URL was never called: nothing was tested"
            assert operator.requests, "the operator's endpoint was never called"
            for rec in caller.requests:
                seen = repr(rec.headers) + rec.body.decode(errors="replace")
                assert "authorization" not in rec.headers
                assert not any(secret in seen for secret in SECRETS), seen
            assert all(r.headers.get("authorization") == f"Bearer {SECRETS[2]}"
                       for r in operator.requests)

            alone = _evaluate(client, RUNNER_AWARE + "\n# alone\n")
            assert alone["score"] != pytest.approx(done[2]["best_score"])
            after = _evaluate(client, RUNNER_AWARE)
            assert after["score"] == pytest.approx(alone["score"]), after
    finally:
        stop_process(worker)


def test_code_cache_key_names_the_runner_functional_key_does_not():
    from evoforge.evolution.hashing import cache_key

    h = "ab" * 32
    assert cache_key("open", "code", h, "ForkServerSandbox") != cache_key("open", "code", h,
                                                                          "SubprocessSandbox")
    assert cache_key("open", "functional", h, "A") == cache_key("open", "functional", h, "B")


HOSTILE_SEED = r'''import sys
def pack_circles(n):
    sys.stdout.buffer.write(b"\xff\xfe\x00\xed\xb3\xbf\x1b]52;c;aGk=\x07" * 2000)
    sys.stdout.flush()
    sys.stderr.buffer.write(b"\x00\xed\xa0\x80\xff" * 2000)
    sys.stderr.flush()
    raise ValueError("\udcff\x00\x1b[2J" * 500 + str(10 ** 4000)[:3000])
'''


@pytest.mark.integration
def test_hostile_output_on_postgres_with_celery_breaks_no_response(pg_url, redis_url,
                                                                   serve_process, tmp_path):
    """A seed that writes invalid UTF-8, NUL and escapes to stdout/stderr and raises with lone
    surrogates, run by a Celery worker into PostgreSQL: the campaign fails at once (a failing
    seed ends it) with that output cleaned into its error, and every GET of everything it
    stored (API and dashboard) answers 200."""
    env = evoforge_env(pg_url, redis_url)
    sp = serve_process(env={k: v for k, v in env.items() if k.startswith("EVOFORGE_")},
                       db_url=pg_url)
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        with httpx.Client(base_url=sp.url, timeout=120) as client:
            r = client.post("/api/v1/campaigns", json={
                "task": "circle_packing", "program": HOSTILE_SEED, "name": "\x1b]0;x\x07\u202e",
                "budget": {"max_evaluations": 4}})
            assert r.status_code == 201, r.text
            cid = r.json()["id"]
            try:
                c = wait_for(lambda: (lambda c: c if c["status"] in ("completed", "failed")
                                      else None)(client.get(f"/api/v1/campaigns/{cid}").json()),
                             180, 0.5, "the campaign")
            except TimeoutError:
                raise AssertionError(tail(tmp_path / "worker.log")) from None
            assert c["status"] == "failed", c
            assert c["error"].startswith("the seed program failed"), c["error"]
            assert "\x00" not in c["error"] and "\udcff" not in c["error"], c["error"]
            programs = client.get(f"/api/v1/campaigns/{cid}/programs").json()["items"]
            assert programs
            paths = [f"/api/v1/campaigns/{cid}", f"/api/v1/campaigns/{cid}/elites",
                     f"/api/v1/campaigns/{cid}/programs", "/api/v1/campaigns", f"/campaigns/{cid}",
                     f"/dashboard-api/campaigns/{cid}/overview", "/"]
            for p in programs:
                paths += [f"/api/v1/programs/{p['id']}", f"/api/v1/programs/{p['id']}/lineage",
                          f"/programs/{p['id']}", f"/dashboard-api/programs/{p['id']}"]
            for path in paths:
                assert client.get(path).status_code == 200, path
    finally:
        stop_process(worker)


def test_a_campaign_named_adhoc_is_not_the_bookkeeping_one(serve_process):
    """The bookkeeping campaign of `POST /evaluations` is left out of the running-campaign quota.
    A caller's own campaign named "adhoc" must not be mistaken for it (and so escape the quota),
    nor become where one-off evaluations are filed."""
    sp = serve_process(env={"EVOFORGE_QUOTA_RUNNING_CAMPAIGNS": "2"})
    body = {"task": "circle_packing", "name": "adhoc", "budget": {"max_evaluations": 5},
            "schedule": {"cron": "0 0 1 1 *", "evaluations_per_run": 1}}   # stays queued
    with httpx.Client(base_url=sp.url + "/api/v1", timeout=120) as client:
        codes = [client.post("/campaigns", json=body).status_code for _ in range(4)]
        assert codes == [201, 201, 429, 429], codes
        ev = _evaluate(client, "def pack_circles(n):\n    return 1\n")
        mine = {c["id"] for c in client.get("/campaigns").json()["items"] if c["status"] == "queued"}
        program = client.get(f"/programs/{ev['program_id']}").json()
        assert program["campaign_id"] not in mine, program
