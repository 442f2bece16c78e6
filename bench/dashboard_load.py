"""Time to first render of the campaign page with 20,000 programs stored, in headless Chromium.

    .venv/bin/python bench/dashboard_load.py [--programs 20000] [--runs 5]

Populates a SQLite database with bulk inserts (4 islands x 10x10 bins, about 300 elites), starts
a real `evoforge serve`, and loads /campaigns/{id} in Debian's Chromium via Playwright (from
PyPI; never `playwright install`). Per run, a fresh browser context (cold cache), from navigation
start: first contentful paint, the overview data received, the heatmap rendered (cells in the
DOM; performance marks set by campaign.js), and the best-score plot
drawn (plotly loaded on demand). Also the server time of the overview endpoint. Goal: first
render under 1 s.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from evoforge.db.blobs import code_hash, put_codes  # noqa: E402
from evoforge.db.engine import session_factory, upgrade  # noqa: E402
from evoforge.db.models import Campaign, EliteCell, Evaluation, Program  # noqa: E402
from tests.dashboard import browser as B  # noqa: E402
from evoforge.worker.campaign_service import create_campaign  # noqa: E402
from evoforge.db.campaign_config import CampaignSpec  # noqa: E402

ISLANDS, BINS = 4, 10
STATUSES = ["ok"] * 8 + ["error", "invalid"]


def populate(url: str, programs: int) -> int:
    upgrade(url)
    sessions = session_factory(url)
    c = create_campaign(sessions, CampaignSpec(task="circle_packing", name="bench 20k",
                                               archive={"islands": ISLANDS, "bins": BINS},
                                               budget={"max_evaluations": programs}))
    code = c.seed_program
    rng = random.Random(0)
    best = 1.0
    with sessions.begin() as s:
        for start in range(0, programs, 5000):
            rows = []
            for i in range(start, min(programs, start + 5000)):
                status = rng.choice(STATUSES) if i else "ok"
                score = None if status == "error" else (0.0 if status == "invalid" else 1.0 + rng.random() * (1 + i / programs))
                rows.append(dict(id=i + 1, campaign_id=c.id, iteration=i, parent_id=rng.randint(1, i) if i else None,
                                 island=i % ISLANDS, generation=1,
                                 code_hash=code_hash(code + f"\n# variant {i}\n"), kind="bench", status=status, score=score, extra={},
                                 model="bench-model" if i % 2 else None, prompt_tokens=900 * (i % 2),
                                 completion_tokens=300 * (i % 2), cost_usd=0.0004 * (i % 2)))
                best = max(best, score or 0.0)
            put_codes(s, [code + f"\n# variant {i}\n" for i in range(start, start + len(rows))])
            s.execute(insert(Program), rows)
            s.execute(insert(Evaluation), [dict(program_id=r["id"], task_key=c.task_key, status=r["status"],
                                                score=r["score"], metrics={"sum_radii": r["score"] or 0.0},
                                                features={}, artifacts={}, cache="miss") for r in rows])
        cells = rng.sample([(i, x, y) for i in range(ISLANDS) for x in range(BINS) for y in range(BINS)],
                           ISLANDS * BINS * BINS * 3 // 4)
        s.execute(insert(EliteCell), [dict(campaign_id=c.id, island=i, cell=f"{x},{y}",
                                           program_id=rng.randint(1, programs), score=1.0 + rng.random(),
                                           features={"radius_spread": y / BINS}) for i, x, y in cells])
        camp = s.get(Campaign, c.id)
        camp.status, camp.evaluations, camp.best_score = "completed", programs, best
        camp.failures = programs // 5
    return c.id


def measure(url: str, cid: int, runs: int, key: str | None = None) -> list[dict[str, float]]:
    """`runs` cold page loads (after one that warms the server). `key`: an API key the page
    uses (put in its sessionStorage as the key dialog does), for a database with keys."""
    out = []
    with B.chromium() as browser:
        for _ in range(runs + 1):  # the first run warms the server (imports, SQLite page cache)
            ctx = browser.new_context(viewport={"width": 1280, "height": 900})
            if key:
                ctx.add_init_script(f"sessionStorage.setItem('evoforge.apiKey', {key!r})")
            page = ctx.new_page()
            page.goto(f"{url}/campaigns/{cid}")
            page.wait_for_function("() => Number(document.querySelector('#heatmaps').dataset.rendered) > 0")
            page.wait_for_function("() => Number(document.querySelector('#history-plot').dataset.rendered) > 0",
                                   timeout=30_000)
            plot = page.evaluate("performance.now()")
            fcp = page.evaluate("(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime")
            data = page.evaluate("performance.getEntriesByName('ef:overview-loaded')[0].startTime")
            heat = page.evaluate("performance.getEntriesByName('ef:heatmap-rendered')[0].startTime")
            out.append({"fcp_ms": fcp, "data_ms": data, "heatmap_ms": heat, "plot_ms": plot})
            ctx.close()
    return out[1:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--programs", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    reason = B.missing()
    if reason:
        sys.exit(f"cannot run: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/dash.db"
        t0 = time.perf_counter()
        cid = populate(db, a.programs)
        print(f"populated {a.programs} programs in {time.perf_counter() - t0:.1f} s")
        home = Path(tmp) / "home"
        home.mkdir()
        with B.serve(db, home) as url:
            api = []
            for _ in range(11):
                t = time.perf_counter()
                r = httpx.get(f"{url}/dashboard-api/campaigns/{cid}/overview", timeout=30)
                api.append((time.perf_counter() - t) * 1e3)
                r.raise_for_status()
            size_kb = len(r.content) / 1024
            res = measure(url, cid, a.runs)
    print(f"overview endpoint: median {statistics.median(api[1:]):.0f} ms, {size_kb:.0f} KiB")
    print(f"{'run':>4} {'FCP ms':>8} {'data ms':>8} {'heatmap ms':>11} {'plot ms':>8}")
    for i, r in enumerate(res, 1):
        print(f"{i:>4} {r['fcp_ms']:>8.0f} {r['data_ms']:>8.0f} {r['heatmap_ms']:>11.0f} {r['plot_ms']:>8.0f}")
    med = {k: statistics.median(r[k] for r in res) for k in res[0]}
    print(f"median: first contentful paint {med['fcp_ms']:.0f} ms, data {med['data_ms']:.0f} ms, heatmap rendered {med['heatmap_ms']:.0f} ms, "
          f"plot drawn {med['plot_ms']:.0f} ms (goal: first render < 1000 ms)")


if __name__ == "__main__":
    main()
