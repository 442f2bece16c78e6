"""The dashboard's pages, assets and data endpoints, in-process (no browser needed)."""
from __future__ import annotations

import random

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from evoforge.db.blobs import code_hash, put_code, put_codes
from evoforge.db.models import EliteCell, Evaluation, Program

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def populate(sessions, programs: int = 40, islands: int = 2):
    """A campaign with a chain of programs (each the child of the previous), some failures, elites."""
    from evoforge.worker.campaign_service import create_campaign
    from evoforge.db.campaign_config import CampaignSpec

    c = create_campaign(sessions, CampaignSpec(task="circle_packing", archive={"islands": islands}))
    rng = random.Random(0)
    rows = []
    for i in range(programs):
        status = "error" if i % 7 == 3 else "ok"
        rows.append(dict(id=i + 1, campaign_id=c.id, iteration=i, parent_id=i if i else None,
                         island=i % islands, generation=i,
                         code_hash=code_hash(c.seed_program + f"\n# v{i}\n"), kind="test" if i else "seed", status=status,
                         score=None if status == "error" else 1.0 + rng.random(), extra={},
                         model="m1" if i % 2 else None, prompt_tokens=10 * (i % 2),
                         completion_tokens=5 * (i % 2), cost_usd=0.001 * (i % 2)))
    with sessions.begin() as s:
        put_codes(s, [c.seed_program + f"\n# v{i}\n" for i in range(programs)])
        s.execute(insert(Program), rows)
        s.execute(insert(Evaluation), [dict(program_id=r["id"], task_key=c.task_key, status=r["status"],
                                            score=r["score"], metrics={"sum_radii": r["score"] or 0.0},
                                            features={}, cache="miss",
                                            artifacts={"stderr": "Traceback: boom"} if r["status"] == "error" else {})
                                       for r in rows])
        ok = [r for r in rows if r["status"] == "ok"]
        s.execute(insert(EliteCell), [dict(campaign_id=c.id, island=r["island"], cell=f"{k},{k % 3}",
                                           program_id=r["id"], score=r["score"], features={})
                                      for k, r in enumerate(ok[:8])])
    return c.id, rows


@pytest.fixture
def client(db_url):
    from evoforge.api.app import create_app
    from evoforge.db.engine import session_factory

    app = create_app(db_url, broker_url="", open_mode=True, execute=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:  # a Host the server serves
        c.sessions = session_factory(db_url)
        yield c


def test_pages_are_html_shells_without_data(client):
    for path, marker in (("/", 'id="new-campaign"'), ("/campaigns/7", 'data-campaign-id="7"'),
                         ("/programs/9", 'data-program-id="9"')):
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/html")
        assert marker in r.text
        assert "http://" not in r.text and "https://" not in r.text  # no CDN, nothing remote
    r = client.get("/campaigns/not-a-number")
    assert r.status_code == 404 and "Not found" in r.text


def test_problem_pages_and_navigation(client):
    digest = "ab" * 32
    r = client.get("/problems")
    assert r.status_code == 200 and 'id="upload"' in r.text and "webkitdirectory" in r.text
    assert '/dashboard/static/problems.js?v=' in r.text
    r = client.get(f"/problems/{digest}")
    assert r.status_code == 200 and f'data-problem-id="{digest}"' in r.text
    assert "/dashboard/pygments.css" in r.text and "/dashboard/static/form.js?v=" in r.text
    for bad in ("xyz", "AB" * 32, "ab" * 31, "ab" * 33, "%3Cscript%3E"):
        r = client.get(f"/problems/{bad}")
        assert r.status_code == 404 and "not a problem id" in r.text, bad
        assert "<script>" not in r.text.split("</head>", 1)[1]      # the id is echoed escaped
    # Every page links Problems in its navigation, and marks its own section as current.
    for path, current in (("/", "/"), ("/campaigns/7", "/"), ("/programs/9", "/"),
                          ("/problems", "/problems"), (f"/problems/{digest}", "/problems"),
                          ("/campaigns/x", "/")):
        nav = client.get(path).text.split('<nav aria-label="Main">', 1)[1].split("</nav>", 1)[0]
        assert '<a href="/problems"' in nav and '<a href="/"' in nav, path
        assert f'<a href="{current}" aria-current="page">' in nav, path


def test_assets_are_served_from_the_repository_and_installed_packages(client):
    page = client.get("/").text
    for name in ("common.js", "form.js", "campaigns.js", "dashboard.css", "favicon.svg"):
        assert f"/dashboard/static/{name}?v=" in page
        assert client.get(f"/dashboard/static/{name}").status_code == 200
    for name in ("problems.js", "problem.js", "campaign.js", "program.js"):
        assert client.get(f"/dashboard/static/{name}").status_code == 200
    plotly = client.get("/dashboard/vendor/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
    assert b"plotly.js" in plotly.content[:2000]
    css = client.get("/dashboard/pygments.css")
    assert css.status_code == 200 and ".hl .k" in css.text


def test_overview_aggregates(client):
    cid, rows = populate(client.sessions, programs=40, islands=2)
    r = client.get(f"/dashboard-api/campaigns/{cid}/overview")
    assert r.status_code == 200
    o = r.json()
    assert o["campaign"]["id"] == cid
    assert sum(o["statuses"].values()) == 40
    assert o["statuses"]["error"] == sum(1 for x in rows if x["status"] == "error")
    assert [i["programs"] for i in o["islands"]] == [20, 20]
    assert sum(i["elites"] for i in o["islands"]) == 8
    scored = [(x["iteration"], x["score"]) for x in rows if x["score"] is not None]
    best = max(s for _, s in scored)
    assert o["history"]["best"]["y"][-1] == best
    assert o["history"]["best"]["y"] == sorted(o["history"]["best"]["y"])   # running best never drops
    assert o["history"]["best"]["x"][-1] == 40                              # flat tail to the latest
    assert o["history"]["scores"]["total"] == len(scored)
    m1 = next(m for m in o["models"] if m["model"] == "m1")
    assert m1["programs"] == 20 and m1["prompt_tokens"] == 200 and m1["completion_tokens"] == 100
    assert client.get("/dashboard-api/campaigns/999/overview").status_code == 404

    # Later calls extend the cached totals with only the new rows.
    with client.sessions.begin() as s:
        s.execute(insert(Program), [dict(id=41, campaign_id=cid, iteration=40, parent_id=40, island=1,
                                         code_hash=put_code(s, "x"), kind="test", status="timeout", score=None, extra={}),
                                    dict(id=42, campaign_id=cid, iteration=41, parent_id=40, island=0,
                                         code_hash=put_code(s, "y"), kind="test", status="ok", score=best + 1, extra={})])
    o2 = client.get(f"/dashboard-api/campaigns/{cid}/overview").json()
    assert sum(o2["statuses"].values()) == 42 and o2["statuses"]["timeout"] == 1
    assert [i["programs"] for i in o2["islands"]] == [21, 21]
    assert o2["history"]["best"]["x"][-1] == 42 and o2["history"]["best"]["y"][-1] == best + 1


def test_program_endpoint_highlights_code_and_diff(client):
    cid, rows = populate(client.sessions, programs=5, islands=1)
    d = client.get("/dashboard-api/programs/4").json()
    assert d["program"]["id"] == 4 and d["campaign"]["id"] == cid
    assert 'class="hl' in d["code_html"] and "pack_circles" in d["code_html"]
    assert "program 3" in d["diff_html"] and "+# v3" in d["program"]["diff"]
    assert [a["id"] for a in d["lineage"]["ancestors"]] == [4, 3, 2, 1]
    assert d["program"]["evaluation"]["artifacts"]["stderr"].startswith("Traceback")
    seed = client.get("/dashboard-api/programs/1").json()
    assert seed["diff_html"] is None and seed["program"]["parent_id"] is None
    assert client.get("/dashboard-api/programs/999").status_code == 404


def test_data_endpoints_use_the_api_keys(db_url):
    from evoforge.api.app import create_app
    from evoforge.db.apikeys import create_key
    from evoforge.db.engine import session_factory

    sessions = session_factory(db_url)
    key_a, _ = create_key(sessions, "a")
    key_b, _ = create_key(sessions, "b")
    app = create_app(db_url, broker_url="", execute=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:  # a Host the server serves
        assert c.get("/").status_code == 200                       # pages hold no data: no key
        created = c.post("/api/v1/campaigns", json={"task": "circle_packing", "budget": {"max_evaluations": 5}},
                         headers={"Authorization": f"Bearer {key_a}"})
        assert created.status_code == 201, created.text
        cid = created.json()["id"]
        url = f"/dashboard-api/campaigns/{cid}/overview"
        assert c.get(url).status_code == 401
        assert c.get(url, headers={"Authorization": f"Bearer {key_b}"}).status_code == 404
        assert c.get(url, headers={"Authorization": f"Bearer {key_a}"}).status_code == 200


PROBLEM = {"initial_program.py": "# EVOLVE-BLOCK-START\ndef f():\n    return 1\n# EVOLVE-BLOCK-END\n",
           "evaluator.py": "def evaluate(path):\n    return {'combined_score': 1.0}\n",
           "utils/io.py": "X = '<script>alert(1)</script>'\n",
           "data/Cargo.toml": '[package]\nname = "<b>x</b>"\n',
           "config.yaml": "max_iterations: 3\nllm:\n  api_key: sk-never-stored-0123456789\n"}


def test_problem_endpoints_highlight_files_and_config(client):
    r = client.post("/api/v1/problems", json=PROBLEM)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    d = client.get(f"/dashboard-api/problems/{pid}").json()
    assert d["problem"]["id"] == pid and d["problem"]["config"]["max_iterations"] == 3
    assert 'class="hl' in d["config_html"]["yaml"] and "max_iterations" in d["config_html"]["yaml"]
    assert '"max_iterations"' in d["config_html"]["json"]
    assert "sk-never-stored" not in r.text + str(d)
    f = client.get(f"/dashboard-api/problems/{pid}/files/utils/io.py").json()
    assert f["path"] == "utils/io.py" and f["language"] == "Python" and f["lines"] == 1
    assert "<script>" not in f["html"] and "&lt;script&gt;" in f["html"]
    assert "text" not in f                                                  # the HTML only
    toml = client.get(f"/dashboard-api/problems/{pid}/files/data/Cargo.toml").json()
    assert toml["language"] == "TOML" and "<b>" not in toml["html"]
    # Unknown problem, unknown or traversing path, malformed id: 404/422, never another file.
    assert client.get(f"/dashboard-api/problems/{'0' * 64}").status_code == 404
    assert client.get(f"/dashboard-api/problems/{pid}/files/nope.py").status_code == 404
    assert client.get(f"/dashboard-api/problems/{pid}/files/..%2Fevaluator.py").status_code == 404
    assert client.get("/dashboard-api/problems/not-a-digest").status_code == 422


def test_problem_endpoints_are_scoped_to_the_key(db_url):
    from evoforge.api.app import create_app
    from evoforge.db.apikeys import create_key
    from evoforge.db.engine import session_factory

    sessions = session_factory(db_url)
    key_a, _ = create_key(sessions, "a")
    key_b, _ = create_key(sessions, "b")
    app = create_app(db_url, broker_url="", execute=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.post("/api/v1/problems", json=PROBLEM, headers={"Authorization": f"Bearer {key_a}"})
        assert r.status_code == 201, r.text
        for url in (f"/dashboard-api/problems/{r.json()['id']}",
                    f"/dashboard-api/problems/{r.json()['id']}/files/evaluator.py"):
            assert c.get(url).status_code == 401
            assert c.get(url, headers={"Authorization": f"Bearer {key_b}"}).status_code == 404
            assert c.get(url, headers={"Authorization": f"Bearer {key_a}"}).status_code == 200
