"""The evaluation cache is sound and tenant-scoped (real server over HTTP, real CLI, real sandbox).

- A cache hit never changes a program's score from what it scores alone: two programs share a
  code-cache entry only when their source is identical (a program can read its own docstring,
  comments and line numbers), and the functional cache is used only where the probe's outputs are
  everything that is scored, hashed exactly (no rounding).
- Entries, `source_evaluation_id` and cache answers belong to one project: another project's
  identical program is a fresh evaluation and never learns the first project's evaluation id.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evoforge.db import apikeys
from evoforge.db.engine import session_factory, upgrade

ROOT = Path(__file__).resolve().parents[2]
SEED = (ROOT / "examples/circle_packing/seed.py").read_text()
_BODY = SEED.split('"""', 2)[2].replace(
    "    margin = 0.1\n", '    margin = 0.05 if "wide" in __doc__ else 0.25\n')
assert "wide" in _BODY
# Identical code, different module docstrings: the program reads its own __doc__.
DOC_WIDE = '"""Variant: wide."""' + _BODY
DOC_NARROW = '"""Variant: narrow."""' + _BODY

# A tight packing (circle 0 touches the left side exactly) and a copy whose radius is 1e-12 too
# large: the same outputs to 10 significant digits, but the second is invalid (zero tolerance).
TIGHT = '''import numpy as np

R0 = 0.1


def pack_circles(n):
    centers = np.array([[0.1, 0.5]] + [[0.3 + 0.1 * i, 0.5] for i in range(n - 1)])
    radii = np.array([R0] + [0.01] * (n - 1))
    return centers, radii
'''
LOOSE = TIGHT.replace("R0 = 0.1\n", "R0 = 0.1 * (1 + 1e-12)\n")

# alpha_factors: the probe is a small synthetic panel (8 assets), the scored stage the real
# panel. The hostile copy is the seed on the probe and the opposite signal everywhere else.
ALPHA_PARAMS = {"data": "synthetic", "synth_dates": 400, "synth_assets": 20, "synth_signal_ic": 0.2}


def _alpha_seed() -> str:
    from evoforge.evaluators.alpha_factors.task import SEED_PROGRAM
    return SEED_PROGRAM


def _alpha_hostile() -> str:
    return _alpha_seed().replace(
        "    return factor\n",
        "    return factor if close.shape[1] == 8 else -factor  # honest on the probe only\n")


def make_key(db_url: str, project: str) -> str:
    upgrade(db_url)
    return apikeys.create_key(session_factory(db_url), project)[0]


def evaluate(client, code: str, task: str = "circle_packing", params: dict | None = None) -> dict:
    r = client.post("/evaluations", json={"task": task, "params": params or {}, "code": code})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def server(live_server):
    return live_server(execute=False)


# -- code hash: docstrings are observable ------------------------------------------------------


def test_docstring_variants_get_their_own_scores_over_rest(server):
    solo_key, a_key = make_key(server.db_url, "solo"), make_key(server.db_url, "alpha")
    with server.client(solo_key) as solo, server.client(a_key) as a:
        narrow_alone = evaluate(solo, DOC_NARROW)
        assert narrow_alone["status"] == "ok" and narrow_alone["cache"] == "miss"
        wide = evaluate(a, DOC_WIDE)
        narrow = evaluate(a, DOC_NARROW)
    assert wide["status"] == "ok" and wide["score"] != narrow_alone["score"]  # they really differ
    assert narrow["cache"] == "miss", narrow
    assert narrow["score"] == narrow_alone["score"]
    assert narrow["code_hash"] != wide["code_hash"]


def _cli(*args: str, home: Path) -> dict:
    env = {"EVOFORGE_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "evoforge.cli", *args, "--json"], cwd=ROOT, env=env,
                       capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def test_docstring_variants_get_their_own_scores_with_the_cli(tmp_path):
    (tmp_path / "wide.py").write_text(DOC_WIDE)
    (tmp_path / "narrow.py").write_text(DOC_NARROW)
    alone = _cli("eval", "circle_packing", str(tmp_path / "narrow.py"), home=tmp_path / "alone")
    wide = _cli("eval", "circle_packing", str(tmp_path / "wide.py"), home=tmp_path / "shared")
    narrow = _cli("eval", "circle_packing", str(tmp_path / "narrow.py"), home=tmp_path / "shared")
    assert wide["score"] != alone["score"]
    assert narrow["cache"] == "miss" and narrow["score"] == alone["score"]
    again = _cli("eval", "circle_packing", str(tmp_path / "narrow.py"), home=tmp_path / "shared")
    assert again["cache"] == "code" and again["score"] == alone["score"]


# -- functional hash: only where the probe is what is scored, and exact -----------------------


def test_functional_cache_does_not_round_away_an_invalid_packing(server):
    solo_key, a_key = make_key(server.db_url, "solo"), make_key(server.db_url, "alpha")
    params = {"n": 6}
    with server.client(solo_key) as solo, server.client(a_key) as a:
        loose_alone = evaluate(solo, LOOSE, params=params)
        tight = evaluate(a, TIGHT, params=params)
        loose = evaluate(a, LOOSE, params=params)
    assert tight["status"] == "ok" and loose_alone["status"] == "invalid", loose_alone
    assert "left side" in loose_alone["reason"]
    assert loose["cache"] == "miss" and loose["status"] == "invalid", loose
    assert loose["functional_hash"] != tight["functional_hash"]


def test_hostile_candidate_honest_only_on_the_probe_gets_its_own_score(server):
    solo_key, a_key = make_key(server.db_url, "solo"), make_key(server.db_url, "alpha")
    with server.client(solo_key) as solo, server.client(a_key) as a:
        hostile_alone = evaluate(solo, _alpha_hostile(), "alpha_factors", ALPHA_PARAMS)
        honest = evaluate(a, _alpha_seed(), "alpha_factors", ALPHA_PARAMS)
        hostile = evaluate(a, _alpha_hostile(), "alpha_factors", ALPHA_PARAMS)
    assert honest["status"] == hostile_alone["status"] == "ok"
    assert hostile_alone["score"] != honest["score"]          # the two programs really differ
    assert hostile["functional_hash"] == honest["functional_hash"]  # ... and agree on the probe
    assert hostile["cache"] == "miss", hostile
    assert hostile["score"] == hostile_alone["score"]


def test_functional_cache_still_reuses_where_the_probe_is_everything_scored(server):
    a_key = make_key(server.db_url, "alpha")
    renamed = re.sub(r"\bradii\b", "rr", SEED)
    with server.client(a_key) as a:
        first = evaluate(a, SEED)
        hit = evaluate(a, renamed)
    assert hit["cache"] == "functional" and hit["score"] == first["score"]


# -- tenant scope -----------------------------------------------------------------------------


def _evaluation_of(client, program_id: int) -> dict:
    r = client.get(f"/programs/{program_id}")
    assert r.status_code == 200, r.text
    return r.json()["evaluation"]


def test_another_projects_identical_program_is_a_fresh_evaluation(server):
    a_key, b_key = make_key(server.db_url, "alpha"), make_key(server.db_url, "beta")
    with server.client(a_key) as a, server.client(b_key) as b:
        first = evaluate(a, SEED)
        a_eval = _evaluation_of(a, first["program_id"])
        other = evaluate(b, SEED)
        b_eval = _evaluation_of(b, other["program_id"])
        # Within one project an identical program still hits the cache.
        again = evaluate(a, SEED)
        again_eval = _evaluation_of(a, again["program_id"])
        b_again = evaluate(b, SEED)
        b_again_eval = _evaluation_of(b, b_again["program_id"])
        b_text = b.get(f"/programs/{other['program_id']}").text
    assert first["cache"] == "miss" and other["cache"] == "miss", other
    assert b_eval["cache"] == "miss" and b_eval["source_evaluation_id"] is None
    assert other["score"] == first["score"]                 # evaluated again, the same result
    assert again["cache"] == "code" and again_eval["source_evaluation_id"] == a_eval["id"]
    assert b_again["cache"] == "code" and b_again_eval["source_evaluation_id"] == b_eval["id"]
    assert a_eval["id"] not in (b_again_eval["source_evaluation_id"], b_eval["source_evaluation_id"])
    assert f'"source_evaluation_id":{a_eval["id"]}' not in b_text.replace(" ", "")


def test_functionally_equal_program_of_another_project_is_a_miss(server):
    a_key, b_key = make_key(server.db_url, "alpha"), make_key(server.db_url, "beta")
    renamed = re.sub(r"\bradii\b", "rr", SEED)
    with server.client(a_key) as a, server.client(b_key) as b:
        evaluate(a, SEED)
        other = evaluate(b, renamed)
    assert other["cache"] == "miss"


def test_shared_cache_is_an_operator_opt_in_without_source_ids(server, monkeypatch):
    monkeypatch.setenv("EVOFORGE_SHARED_CACHE", "1")
    a_key, b_key = make_key(server.db_url, "alpha"), make_key(server.db_url, "beta")
    with server.client(a_key) as a, server.client(b_key) as b:
        first = evaluate(a, SEED)
        shared = evaluate(b, SEED)
        shared_eval = _evaluation_of(b, shared["program_id"])
    assert first["cache"] == "miss" and shared["cache"] == "code"
    assert shared["score"] == first["score"]
    assert shared_eval["source_evaluation_id"] is None      # never another project's id


def test_shared_cache_never_covers_uploaded_or_plugin_evaluators(monkeypatch):
    from evoforge.evaluators.base import get_task
    from evoforge.worker.cache_policy import shares_cache

    circle = get_task("circle_packing")
    monkeypatch.delenv("EVOFORGE_SHARED_CACHE", raising=False)
    assert not shares_cache(circle)
    monkeypatch.setenv("EVOFORGE_SHARED_CACHE", "1")
    assert shares_cache(circle)
    assert not shares_cache(get_task("openevolve"))

    class Plugin:  # a plugin that takes a built-in's name is still not built in
        name = "circle_packing"
    assert not shares_cache(Plugin())
    monkeypatch.setenv("EVOFORGE_SHARED_CACHE", "yes please")
    assert not shares_cache(circle)
