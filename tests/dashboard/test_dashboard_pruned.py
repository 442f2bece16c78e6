"""A pruned program says so on the dashboard (issue 14), in real Chromium against `evoforge serve`.

A campaign run with the CLI, pruned to its elites (`--keep elites`: their ancestors lose their
code, prompts and replies), then served: a pruned program's page says what was removed and
when, instead of code and diff, and its ancestor list tags which of them were pruned.
"""
from __future__ import annotations

import json
import os
import subprocess

import httpx
import pytest

from tests.dashboard import browser as B

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _cli(*args: str, env: dict) -> dict:
    p = subprocess.run([*B.evoforge_bin(), *args, "--json"], cwd=B.ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_pruned_programs_say_so_on_their_pages(tmp_path, browser):
    home = tmp_path / "home"
    home.mkdir()
    db = f"sqlite:///{tmp_path / 'pruned.db'}"
    env = dict(os.environ, EVOFORGE_HOME=str(home))
    env.pop("EVOFORGE_BROKER_URL", None)
    run = _cli("run", "circle_packing", "--iterations", "24", "--seed", "1", "--db", db, env=env)
    cid = run["campaign_id"]
    pruned = _cli("prune", str(cid), "--keep", "elites", "--db", db, env=env)
    assert pruned["pruned"] > 0, pruned
    with B.serve(db, home) as url:
        items = httpx.get(f"{url}/api/v1/campaigns/{cid}/programs?limit=200").json()["items"]
        gone = next(p["id"] for p in items if p["pruned"] and p["parent_id"] is not None)
        kept = next(p["id"] for p in items if not p["pruned"])
        lineage = httpx.get(f"{url}/api/v1/programs/{gone}/lineage").json()["ancestors"]
        assert lineage[0]["pruned"] and not all(a["pruned"] for a in lineage)

        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        watch = B.ConsoleWatch(page)
        page.goto(f"{url}/programs/{gone}")
        page.get_by_text("pruned: code/prompt removed on").first.wait_for()
        assert "def pack_circles" not in page.inner_text("#code")
        page.wait_for_selector("#lineage .tag.pruned")   # its ancestor list tags the pruned
        assert (page.locator("#lineage li:has(.tag.pruned)").count()
                == sum(a["pruned"] for a in lineage) < len(lineage))
        B.shot(page, "program_pruned_1280")

        page.goto(f"{url}/programs/{kept}")
        page.wait_for_selector("#code .hl")                # a kept program shows its code
        assert "def pack_circles" in page.inner_text("#code")
        assert watch.errors == []
        ctx.close()
