"""Stored problems over a real HTTP server: upload (zip, tar, tar.gz, JSON), dedupe, reads,
delete, the refusals (nothing stored), tenancy, campaigns that run them (embedded runner; a
PostgreSQL + Redis + Celery worker that loads the files from the database), and the evaluation
cache key that follows the problem's content."""
from __future__ import annotations

import io
import json
import tarfile
import threading
import zipfile

import httpx
import pytest
from sqlalchemy import func, select

from evoforge.db import apikeys
from evoforge.db.engine import session_factory, upgrade
from evoforge.db.models import Campaign, Problem
from tests.api.conftest import start_server, wait_for
from tests.integration.services import postgres_server, redis_server, redis_url  # noqa: F401

SEED = '''"""Fit a line through the target points."""
# EVOLVE-BLOCK-START
def slope():
    return 0.5


def intercept():
    return 0.25
# EVOLVE-BLOCK-END
'''

EVALUATOR = '''import importlib.util
import os

from lib.points import load


def evaluate(program_path):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pts = load(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "points.csv"))
    err = sum((mod.slope() * x + mod.intercept() - y) ** 2 for x, y in pts) / len(pts)
    return {"combined_score": 1.0 / (1.0 + err), "mse": err}
'''

POINTS_LIB = '''def load(path):
    with open(path) as f:
        return [tuple(float(v) for v in line.split(",")) for line in f if line.strip()]
'''

CONFIG = '''max_iterations: 4
llm:
  api_base: "http://127.0.0.1:9/v1"
  api_key: "sk-thisisnotarealkeybutlookslikeone1234"
  primary_model: "some-model"
database:
  num_islands: 1
'''

FILES = {"initial_program.py": SEED, "evaluator.py": EVALUATOR, "lib/__init__.py": "",
         "lib/points.py": POINTS_LIB, "data/points.csv": "0,1\n1,3\n2,5\n3,7\n",
         "config.yaml": CONFIG}


def make_key(db_url: str, project: str) -> str:
    upgrade(db_url)
    return apikeys.create_key(session_factory(db_url), project)[0]


def as_zip(files: dict[str, str], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for path, text in files.items():
            z.writestr(path, text)
    return buf.getvalue()


def as_tar(files: dict[str, str], mode: str = "w", links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for path, target in (links or {}).items():
            info = tarfile.TarInfo(path)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            t.addfile(info)
    return buf.getvalue()


def upload(client: httpx.Client, body: bytes | dict, content_type: str = "application/zip",
           **params) -> httpx.Response:
    if isinstance(body, dict):
        body, content_type = json.dumps(body).encode(), "application/json"
    return client.post("/problems", content=body, params=params,
                       headers={"Content-Type": content_type})


def problem_rows(db_url: str) -> int:
    with session_factory(db_url)() as s:
        return s.scalar(select(func.count()).select_from(Problem))


@pytest.fixture
def server(live_server):
    return live_server(execute=False)


def test_upload_dedupe_and_reads(server):
    with server.client() as c:
        r = upload(c, FILES)
        assert r.status_code == 201, r.text
        p = r.json()
        pid = p["id"]
        assert len(pid) == 64 and r.headers["location"] == f"/api/v1/problems/{pid}"
        assert p["layout"] == "openevolve" and p["seed"] == "initial_program.py"
        assert p["evaluator"] == "evaluator.py" and p["campaigns"] == 0
        paths = {f["path"]: f["bytes"] for f in p["files"]}
        # subdirectories are kept; the config is not a file, and its key was dropped unread
        assert {"lib/points.py", "data/points.csv", "evaluator.py"} <= set(paths)
        assert "config.yaml" not in paths and paths["evaluator.py"] == len(EVALUATOR.encode())
        assert "sk-thisis" not in r.text and "api_key" not in json.dumps(p["config"])
        assert p["config"]["max_iterations"] == 4
        assert any("api_key" in k for k in p["report"]["ignored_secrets"])

        # the same content, as zip, tar and tar.gz: the same problem (200), one row
        for body, ctype in ((as_zip(FILES), "application/zip"), (as_tar(FILES), "application/x-tar"),
                            (as_tar(FILES, "w:gz"), "application/gzip")):
            again = upload(c, body, ctype)
            assert again.status_code == 200, (ctype, again.text)
            assert again.json()["id"] == pid
        assert problem_rows(server.db_url) == 1

        page = c.get("/problems").json()
        assert page["total"] == 1 and [i["id"] for i in page["items"]] == [pid]
        assert c.get(f"/problems/{pid}").json()["files"] == p["files"]
        assert {f["path"] for f in c.get(f"/problems/{pid}/files").json()} == set(paths)
        f = c.get(f"/problems/{pid}/files/lib/points.py").json()
        assert f == {"path": "lib/points.py", "text": POINTS_LIB, "bytes": len(POINTS_LIB)}
        for missing in ("config.yaml", "nope.py", "lib", "LIB/points.py", "lib/points.py/x"):
            assert c.get(f"/problems/{pid}/files/{missing}").status_code == 404, missing
        assert c.get(f"/problems/{'0' * 64}").status_code == 404
        assert c.get("/problems/not-a-digest").status_code == 422

        # another content (the evaluator changed): another problem, named by the query
        other = upload(c, {**FILES, "evaluator.py": EVALUATOR + "\n# v2\n"}, name="line v2")
        assert other.status_code == 201 and other.json()["id"] != pid
        assert other.json()["name"] == "line v2"
        assert c.get("/problems").json()["total"] == 2

        assert c.delete(f"/problems/{pid}").status_code == 204
        assert c.get(f"/problems/{pid}").status_code == 404
        assert c.delete(f"/problems/{pid}").status_code == 404
        assert problem_rows(server.db_url) == 1


def test_concurrent_uploads_of_one_content_store_one_row(server):
    results: list[httpx.Response] = []

    def send() -> None:
        with server.client() as c:
            results.append(upload(c, as_zip(FILES)))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [200] * 5 + [201], [r.text for r in results]
    assert len({r.json()["id"] for r in results}) == 1
    assert problem_rows(server.db_url) == 1


def test_refusals_store_nothing(server):
    big = "x = 1\n" * ((9 << 20) // 6)
    with server.client() as c:
        cases = [
            ("traversal", as_zip({**FILES, "../escape.py": "x = 1\n"}), "application/zip", 422),
            ("absolute", as_tar({**FILES, "/etc/evil.py": "x = 1\n"}), "application/x-tar", 422),
            ("dotdot inside", as_zip({**FILES, "lib/../../x.py": "x = 1\n"}), "application/zip", 422),
            ("backslash", json.dumps({**FILES, "lib\\x.py": "x = 1\n"}).encode(),
             "application/json", 422),
            ("symlink", as_tar(FILES, links={"lib/passwd.txt": "/etc/passwd"}), "application/x-tar", 422),
            ("no evaluator", as_zip({"initial_program.py": SEED}), "application/zip", 422),
            ("not an archive", b"PK\x03\x04 garbage", "application/zip", 422),
            ("missing dependency", as_zip({**FILES, "requirements.txt":
                                           "numpy\nno-such-module-evoforge-xyz>=1.0\n"}),
             "application/zip", 422),
            ("oversized file, compressed small", as_zip({**FILES, "data/big.txt": big},
                                                        zipfile.ZIP_DEFLATED), "application/zip", 422),
            ("over the upload limit", as_zip({**FILES, "data/big.txt": big}), "application/zip", 413),
            ("unknown type", as_zip(FILES), "text/plain", 415),
        ]
        for what, body, ctype, expected in cases:
            r = upload(c, body, ctype)
            assert r.status_code == expected, (what, r.status_code, r.text)
            detail = r.json()["detail"]
            assert isinstance(detail, str) and detail and "\n" not in detail, (what, detail)
            if what == "missing dependency":
                assert "no-such-module-evoforge-xyz" in detail and "numpy" not in detail
                assert "fork sandbox" in detail and "install it" in detail
            if what == "symlink":
                assert "passwd" in detail
        assert problem_rows(server.db_url) == 0
        # the raised limit is the upload's alone: every other route keeps 4 MiB
        r = c.post("/campaigns", content=b"{" + b" " * (5 << 20) + b"}",
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        # a body between the edge's 4 MiB and the upload's 8 MiB gets through the edge
        data = {f"data/part{i}.csv": "1,2\n" * ((3 << 19) // 4) for i in range(3)}
        body = as_tar({**FILES, **data})
        assert 4 << 20 < len(body) < 8 << 20
        r = upload(c, body, "application/x-tar")
        assert r.status_code == 201, r.text


def test_projects_see_only_their_own_problems(server):
    key_a, key_b = make_key(server.db_url, "alpha"), make_key(server.db_url, "beta")
    with server.client(key_a) as a, server.client(key_b) as b:
        pid = upload(a, FILES).json()["id"]
        for path in (f"/problems/{pid}", f"/problems/{pid}/files",
                     f"/problems/{pid}/files/evaluator.py"):
            r = b.get(path)
            assert r.status_code == 404, path
            assert "evaluate" not in r.text
        assert b.get("/problems").json() == {"items": [], "total": 0, "limit": 50, "offset": 0}
        assert b.delete(f"/problems/{pid}").status_code == 404
        r = b.post("/campaigns", json={"problem": pid})
        assert r.status_code in (404, 422) and "not found" in r.text
        assert a.get(f"/problems/{pid}").status_code == 200   # still there
        # the same content in project B is B's own row
        r = upload(b, FILES)
        assert r.status_code == 201 and r.json()["id"] == pid
        assert problem_rows(server.db_url) == 2
        assert b.delete(f"/problems/{pid}").status_code == 204
        assert a.get(f"/problems/{pid}").status_code == 200


def test_campaign_spec_checks(server):
    with server.client() as c:
        pid = upload(c, FILES).json()["id"]
        bad = [{"problem": pid, "task": "openevolve"}, {"problem": pid, "program": "x = 1"},
               {"problem": pid.upper()}, {"problem": pid, "params": {"files": {"a.py": "x"}}},
               {"task": "openevolve", "params": {"problem": pid}}, {}]
        for body in bad:
            r = c.post("/campaigns", json=body)
            assert r.status_code == 422, (body, r.text)
        assert c.get("/campaigns").json()["total"] == 0


def test_cache_key_follows_the_content(server):
    with server.client() as c:
        one = upload(c, FILES).json()["id"]
        two = upload(c, {**FILES, "data/points.csv": "0,1\n1,2\n"}).json()["id"]
        ids = [c.post("/campaigns", json={"problem": p}).json()["id"] for p in (one, one, two)]
    with session_factory(server.db_url)() as s:
        keys = [s.get(Campaign, i).task_key for i in ids]
        rows = [s.get(Campaign, i) for i in ids]
        assert all(r.params["files"] == {} for r in rows)   # the files stay in the problem row
    assert keys[0] == keys[1] != keys[2]


def test_campaign_on_a_problem_runs_to_completion(live_server):
    srv = live_server()   # the embedded runner
    with srv.client() as c:
        pid = upload(c, FILES).json()["id"]
        r = c.post("/campaigns", json={"problem": pid, "budget": {"max_evaluations": 6}})
        assert r.status_code == 201, r.text
        camp = r.json()
        assert camp["problem"] == pid and camp["task"] == "openevolve"
        assert camp["params"]["files"] == {} and camp["params"]["problem"] == pid
        # config.yaml's llm.api_base is not the operator's: the local mutator runs
        assert camp["mutator"]["kind"] == "local" and not camp["mutator"].get("base_url")
        assert camp["islands"] == 1    # database.num_islands
        done = wait_for(lambda: (x := c.get(f"/campaigns/{camp['id']}").json())["status"]
                        in ("completed", "failed") and x, 120)
        assert done["status"] == "completed", done["error"]
        assert done["evaluations"] == 6 and done["problem"] == pid
        assert done["seed_score"] is not None and done["best_score"] >= done["seed_score"]
        best = c.get(f"/campaigns/{camp['id']}/programs", params={"limit": 1}).json()["items"][0]
        assert best["status"] == "ok"
        assert c.get(f"/problems/{pid}").json()["campaigns"] == 1
        r = c.delete(f"/problems/{pid}")
        assert r.status_code == 409 and "campaign" in r.json()["detail"]
        assert c.delete(f"/campaigns/{camp['id']}").status_code == 204
        assert c.delete(f"/problems/{pid}").status_code == 204


def test_campaign_requirements_are_rechecked_for_its_sandbox(server, monkeypatch):
    with server.client() as c:
        pid = upload(c, {**FILES, "requirements.txt": "numpy\n"}).json()["id"]
        assert c.get(f"/problems/{pid}").json()["requirements"] == ["numpy"]
        seen = []

        def fake(reqs, sandbox):   # the campaign's sandbox is the one asked about
            seen.append((tuple(reqs), sandbox))
            return ["numpy (not importable)"]

        import evoforge.worker.requirements as requirements
        monkeypatch.setattr(requirements, "check_requirements", fake)
        r = c.post("/campaigns", json={"problem": pid, "sandbox": "subprocess"})
        assert r.status_code == 422 and "numpy" in r.json()["detail"]
        assert seen == [(("numpy",), "subprocess")]
        assert c.get("/campaigns").json()["total"] == 0


@pytest.mark.integration
@pytest.mark.slow
def test_celery_worker_loads_the_files_from_the_database(tmp_path, postgres_server, redis_url):
    from tests.integration.services import evoforge_env, start_worker, stop_process, tail, use_broker

    db_url = postgres_server.createdb()
    upgrade(db_url)
    use_broker(redis_url)
    srv = start_server(db_url, broker_url=redis_url)
    log = tmp_path / "worker.log"
    worker = start_worker(evoforge_env(db_url, redis_url), log, queues="llm,eval", concurrency=2)
    try:
        with srv.client() as c:
            r = upload(c, as_tar(FILES, "w:gz"), "application/gzip")
            assert r.status_code == 201, r.text
            pid = r.json()["id"]
            assert upload(c, FILES).status_code == 200   # dedupe on PostgreSQL too
            r = c.post("/campaigns", json={"problem": pid, "budget": {"max_evaluations": 5}})
            assert r.status_code == 201, r.text
            cid = r.json()["id"]
            done = wait_for(lambda: (x := c.get(f"/campaigns/{cid}").json())["status"]
                            in ("completed", "failed") and x, 180)
            assert done["status"] == "completed", (done["error"], tail(log))
            assert done["evaluations"] == 5 and done["best_score"] >= done["seed_score"] > 0
            assert done["problem"] == pid and c.delete(f"/problems/{pid}").status_code == 409
        with session_factory(db_url)() as s:
            assert s.get(Campaign, cid).params["files"] == {}
    finally:
        stop_process(worker)
        srv.stop()


def test_migration_0005_keeps_campaigns_and_goes_back(tmp_path):
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from evoforge.db import engine as dbe

    url = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(dbe.MIGRATIONS_DIR))
    cfg.attributes["engine"] = dbe.get_engine(url)
    command.upgrade(cfg, "0004")
    with session_factory(url).begin() as s:   # a campaign stored before problems existed
        s.execute(sa.text(
            "INSERT INTO campaign (id, name, task, params, task_key, status, seed, parallel, islands, "
            "config, seed_program, error, meta_note, iterations_reserved, tokens_reserved, "
            "cost_reserved_usd, evaluations, sandbox_runs, cache_hits, failures, rejected, "
            "novelty_skips, tokens, cost_usd, eval_seconds, created_at, adhoc) VALUES (7, 'old', "
            "'circle_packing', '{}', 'k', 'completed', 0, 1, 1, '{}', 'x', '', '', 0, 0, 0, 0, 0, 0, "
            "0, 0, 0, 0, 0, 0, '2026-12-01 00:00:00', 0)"))
    command.upgrade(cfg, "head")
    with session_factory(url)() as s:
        c = s.get(Campaign, 7)
        assert c.name == "old" and c.problem_id is None
    command.downgrade(cfg, "0004")
    assert "problem" not in sa.inspect(dbe.get_engine(url)).get_table_names()
    with dbe.get_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM campaign WHERE id = 7")).scalar() == "old"
