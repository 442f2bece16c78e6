"""Compact storage (db/blobs.py, migration 0006): every prompt, response and program text comes
back byte for byte.

- Through the real path: an LLM campaign on the embedded engine against an OpenAI-compatible
  server on loopback that answers as the stand-in LLM does (tools/perturb_llm.py), then
  `GET /api/v1/programs/{id}` on a live API server compared with what that server received and
  sent. Long enough for the campaign's zstd dictionaries to be trained and used.
- Hostile texts straight through the encoder: a code quoted twice, a code that is a substring
  of another, empty code, NUL, lone surrogates, non-ASCII, a reference ending mid-line.
- The migration of a database with old rows, upgrade then downgrade, on SQLite and PostgreSQL.
- Two projects whose programs share a code blob each read only their own programs.
"""
from __future__ import annotations

import importlib.util
import random
import threading
from pathlib import Path

import pytest
import zstandard as zstd
from sqlalchemy import func, select

from evoforge.db import blobs
from evoforge.db.apikeys import create_key
from evoforge.db.campaign_config import CampaignSpec
from evoforge.db.engine import session_factory, upgrade
from evoforge.db.models import CodeBlob, Program, ZstdDict
from evoforge.evolution import prompts
from evoforge.evolution.hashing import code_hash
from evoforge.worker.campaign_service import create_campaign
from evoforge.worker.embedded import EmbeddedExecutor
from tests.api.conftest import live_server  # noqa: F401
from tests.integration.services import postgres_server  # noqa: F401
from tests.llm.fake_openai import FakeOpenAI, Reply

ROOT = Path(__file__).resolve().parents[2]
STAND_IN = ROOT.parent / "shared/tools/perturb_llm.py"

CODE_A = "".join(f"def f{i}(x):\n    return x * {i} + {i * 7} - 3.25  # line {i}\n" for i in range(40))
CODE_B = CODE_A[200:1500]          # a substring of A, itself longer than MIN_MATCH


def roundtrip(text: str, refs: dict[str, str], dictionary=None) -> bytes:
    blob = blobs.encode_text(text, refs, dictionary=dictionary)
    codes = [refs[h] for h in blobs.ref_hashes(blob)]
    frame = blobs._header(blob)[2]
    d = zstd.ZstdDecompressor(dict_data=dictionary.zdict if dictionary else None)
    raw = d.decompressobj().decompress(frame)
    back = blobs._text(raw) if blob[0] == blobs.PLAIN else blobs._unpack(raw, codes)
    assert back == text
    return blob


# -- the encoder --------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "",
    "short",
    f"```python\n{CODE_A.rstrip()}\n```\nand again\n```python\n{CODE_A.rstrip()}\n```\n",
    f"B first\n{CODE_B}\nthen A\n{CODE_A}\nB inside a line: >>{CODE_B}<<",
    f"NUL \x00 here\n{CODE_A}\x00{CODE_A[:500]}\n",
    f"lone surrogate \udcff and \ud800\n{CODE_A}",
    f"non-ASCII é ✓ 𝔼\n{CODE_A}é✓𝔼{CODE_A[100:900]}",
    CODE_A[:-1],                    # the whole text is a code without its last newline
    CODE_A[5:],                     # a reference that starts mid-line in the code
])
def test_hostile_texts_round_trip(text):
    refs = {code_hash(c): c for c in (CODE_A, CODE_B, "", "x = 1\n")}
    blob = roundtrip(text, refs)
    if text.count(CODE_A[:-1]) >= 1 and len(text) > 1000:
        # References pay: much smaller than zstd of the text alone.
        assert len(blob) < len(zstd.ZstdCompressor(level=blobs.LEVEL).compress(
            text.encode("utf-8", "surrogatepass"))) * 0.6


def test_code_quoted_twice_is_two_references_to_one_hash():
    text = f"x\n{CODE_A}y\n{CODE_A}z\n"
    blob = roundtrip(text, {code_hash(CODE_A): CODE_A})
    assert blobs.ref_hashes(blob) == [code_hash(CODE_A)]
    assert len(blob) < 200


def test_the_encoder_falls_back_to_plain_zstd_when_a_check_fails(monkeypatch):
    monkeypatch.setattr(blobs, "_unpack", lambda payload, codes: "something else")
    blob = blobs.encode_text(CODE_A, {code_hash(CODE_A): CODE_A})
    assert blob[0] == blobs.PLAIN
    assert zstd.ZstdDecompressor().decompressobj().decompress(blob[1:]).decode() == CODE_A


def test_texts_and_codes_through_the_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    upgrade(url)
    sessions = session_factory(url)
    texts = [f"quote\n{CODE_A}\n", "plain", "", None, f"{CODE_B}\x00é\udcff"]
    with sessions.begin() as s:
        assert blobs.put_codes(s, [CODE_A, CODE_B, CODE_A, ""]) == {
            code_hash(CODE_A): CODE_A, code_hash(CODE_B): CODE_B, code_hash(""): ""}
        refs = blobs.get_codes(s, [code_hash(CODE_A), code_hash(CODE_B)])
        encoded = [None if t is None else blobs.encode_text(t, refs) for t in texts]
    with sessions() as s:
        assert blobs.decode_texts(s, encoded) == texts
        assert blobs.get_codes(s, [code_hash(""), "0" * 64]) == {code_hash(""): ""}
        assert s.scalar(select(func.count()).select_from(CodeBlob)) == 3
        assert s.scalar(select(CodeBlob.size).where(CodeBlob.hash == code_hash(CODE_A))) == len(CODE_A)
    with sessions.begin() as s:   # a second writer of the same code: no error, still one row
        blobs.put_codes(s, [CODE_A])
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(CodeBlob)) == 3


# -- the real LLM path --------------------------------------------------------------------------

def _stand_in():
    if not STAND_IN.exists():
        pytest.skip("the stand-in LLM (../shared/tools/perturb_llm.py) is not beside the checkout")
    spec = importlib.util.spec_from_file_location("perturb_llm", STAND_IN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Recorder:
    """Answers as the stand-in LLM does and keeps every (prompt as rendered, reply) pair."""

    def __init__(self, full: bool):
        self.perturb = _stand_in()
        self.full = full
        self.lock = threading.Lock()
        self.count = 0
        self.exchanges: list[tuple[str, str]] = []

    def __call__(self, req) -> Reply:
        messages = req.body["messages"]
        with self.lock:
            self.count += 1
            rng = random.Random(self.count)
        text = self.perturb.mutate(self.perturb.pick_program(messages), rng, self.full)
        with self.lock:
            self.exchanges.append((prompts.render(messages), text))
        return Reply(text)


def _run_llm_campaign(sessions, project_id: int, base_url: str, evals: int, *,
                      diff_mode: bool = True) -> int:
    spec = CampaignSpec(task="circle_packing", seed=0, parallel=2, budget={"max_evaluations": evals},
                        mutator={"kind": "llm", "base_url": base_url, "models": [{"name": "perturb"}],
                                 "diff_mode": diff_mode})
    cid = create_campaign(sessions, spec, project_id=project_id).id
    out = EmbeddedExecutor(sessions, cid, parallel=2, operator_url=base_url).run()
    assert out["status"] == "completed", out
    return cid


def test_prompts_and_responses_are_what_the_llm_received_and_sent(live_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-operator-key-0123456789")
    srv = live_server()
    sessions = session_factory(srv.db_url)
    key_a, project_a = create_key(sessions, "a")
    key_b, project_b = create_key(sessions, "b")
    diff, full = Recorder(full=False), Recorder(full=True)
    with FakeOpenAI(models=("perturb",)) as fake_a, FakeOpenAI(models=("perturb",)) as fake_b:
        fake_a.default, fake_b.default = diff, full
        cid_a = _run_llm_campaign(sessions, project_a, fake_a.base_url, blobs.TRAIN_AT + 60)
        cid_b = _run_llm_campaign(sessions, project_b, fake_b.base_url, 30, diff_mode=False)

    for cid, key, recorder in ((cid_a, key_a, diff), (cid_b, key_b, full)):
        with sessions() as s:
            ids = s.scalars(select(Program.id).where(Program.campaign_id == cid)
                            .order_by(Program.id)).all()
        stored: list[tuple[str, str]] = []
        with srv.client(key) as client:
            for pid in ids:
                p = client.get(f"/programs/{pid}").json()
                assert p["code"] is not None or p["status"] == "rejected"
                if p["prompt"] is not None:
                    stored.append((p["prompt"], p["response"]))
        # Every exchange is stored exactly once, byte for byte (the seed has none).
        assert sorted(stored) == sorted(recorder.exchanges)
        assert len(stored) == len(ids) - 1

    with sessions() as s:
        # The long campaign trained its dictionaries and wrote frames with them.
        dicts = {k: i for k, i in s.execute(select(ZstdDict.kind, ZstdDict.id)
                                            .where(ZstdDict.campaign_id == cid_a))}
        assert set(dicts) == {"code", "text"}
        late = s.execute(select(Program.prompt_z, Program.code_hash).where(
            Program.campaign_id == cid_a).order_by(Program.id.desc()).limit(20)).all()
        used = {zstd.get_frame_parameters(blobs._header(pz)[2]).dict_id for pz, _ in late if pz}
        assert dicts["text"] in used
        # Prompts refer to the code they quote: most stored prompts are references, not text.
        assert sum(blobs.ref_hashes(pz) != [] for pz, _ in late if pz) >= 15
        # A full rewrite's reply refers to the program's own code.
        replies = s.execute(select(Program.response_z, Program.code_hash).where(
            Program.campaign_id == cid_b, Program.code_hash.is_not(None),
            Program.response_z.is_not(None))).all()
        assert any(h in blobs.ref_hashes(rz) for rz, h in replies)


def test_two_projects_share_a_code_blob_and_read_only_their_own(live_server, monkeypatch):
    srv = live_server()
    sessions = session_factory(srv.db_url)
    key_a, project_a = create_key(sessions, "a")
    key_b, project_b = create_key(sessions, "b")
    cids = []
    for project in (project_a, project_b):
        spec = CampaignSpec(task="circle_packing", seed=0, budget={"max_evaluations": 3})
        cid = create_campaign(sessions, spec, project_id=project).id
        assert EmbeddedExecutor(sessions, cid).run()["status"] == "completed"
        cids.append(cid)
    with sessions() as s:
        seeds = [s.scalar(select(Program).where(Program.campaign_id == cid, Program.iteration == 0))
                 for cid in cids]
        seed_hash = seeds[0].code_hash
        assert seed_hash and seeds[1].code_hash == seed_hash                # the same text ...
        assert s.scalar(select(func.count()).select_from(CodeBlob)
                        .where(CodeBlob.hash == seed_hash)) == 1            # ... stored once
        seed_code = blobs.get_codes(s, [seed_hash])[seed_hash]
    with srv.client(key_a) as a, srv.client(key_b) as b:
        assert a.get(f"/programs/{seeds[0].id}").json()["code"] == seed_code
        assert b.get(f"/programs/{seeds[1].id}").json()["code"] == seed_code
        assert a.get(f"/programs/{seeds[1].id}").status_code == 404
        assert b.get(f"/programs/{seeds[0].id}").status_code == 404


def test_a_cache_hit_stores_no_code_bytes(tmp_path):
    """Re-running the same programs (the local mutator with the same seed in a second campaign)
    hits the evaluation cache and adds programs, but not one code blob."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    sessions = session_factory(url)
    spec = CampaignSpec(task="circle_packing", seed=0, budget={"max_evaluations": 12})
    first = create_campaign(sessions, spec).id
    EmbeddedExecutor(sessions, first).run()
    with sessions() as s:
        blobs_before = s.scalar(select(func.count()).select_from(CodeBlob))
        bytes_before = s.scalar(select(func.sum(func.length(CodeBlob.data))))
    second = create_campaign(sessions, spec).id
    out = EmbeddedExecutor(sessions, second).run()
    assert out["cache_hits"] > 0
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(CodeBlob)) == blobs_before
        assert s.scalar(select(func.sum(func.length(CodeBlob.data)))) == bytes_before
        hashes = set(s.scalars(select(Program.code_hash).where(Program.campaign_id == second,
                                                               Program.code_hash.is_not(None))))
        assert hashes and len(blobs.get_codes(s, hashes)) == len(hashes)


# -- gc ---------------------------------------------------------------------------------------

def test_gc_keeps_codes_that_kept_texts_refer_to(tmp_path):
    from datetime import datetime, timezone

    url = f"sqlite:///{tmp_path / 'g.db'}"
    upgrade(url)
    sessions = session_factory(url)
    cid = create_campaign(sessions, CampaignSpec(task="circle_packing")).id
    other = CODE_A.replace("line", "row")
    with sessions.begin() as s:
        h_a, h_o = blobs.put_code(s, CODE_A), blobs.put_code(s, other)
        h_gone = blobs.put_code(s, "gone = 1\n" * 20)
        prompt = blobs.encode_text(f"parent:\n{CODE_A}", {h_a: CODE_A})
        assert blobs.ref_hashes(prompt) == [h_a]
        now = datetime.now(timezone.utc)
        s.add_all([Program(campaign_id=cid, iteration=0, code_hash=h_a, pruned_at=now),
                   Program(campaign_id=cid, iteration=1, code_hash=h_gone, pruned_at=now),
                   Program(campaign_id=cid, iteration=2, code_hash=h_o, prompt_z=prompt)])
    with sessions.begin() as s:
        assert blobs.gc_code_blobs(s) == 1
    with sessions() as s:
        assert set(s.scalars(select(CodeBlob.hash))) == {h_a, h_o}
        p = s.scalar(select(Program).where(Program.iteration == 2))
        assert blobs.program_texts(s, p).prompt == f"parent:\n{CODE_A}"


# -- migration ----------------------------------------------------------------------------------

OLD_ROWS = [  # (parent index, code, prompt, response)
    (None, CODE_A, None, None),
    (0, CODE_B, f"[user]\n# Current Program\n\n```python\n{CODE_A.rstrip()}\n```\n"
                f"again:\n```python\n{CODE_A.rstrip()}\n```\n", "rewrite:\n" + CODE_B),
    (1, None, "NUL \x00 and é ✓\n" + CODE_B, "<<<<<<< SEARCH\n" + CODE_B[:300] + "\n=======\n"),
    (0, "", "", ""),
]


def _migrate_old_rows(url: str) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from evoforge.db.engine import MIGRATIONS_DIR, get_engine

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = get_engine(url)
    command.upgrade(cfg, "0005")
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO campaign (name, task, params, task_key, status, seed, parallel, islands,"
            " config, seed_program, error, meta_note, created_at, iterations_reserved,"
            " tokens_reserved, cost_reserved_usd, evaluations, sandbox_runs, cache_hits, failures,"
            " rejected, novelty_skips, tokens, cost_usd, eval_seconds, adhoc) VALUES ('old',"
            " 'circle_packing', '{}', 'k', 'completed', 0, 1, 1, '{}', '', '', '', :t, 0, 0, 0,"
            " 0, 0, 0, 0, 0, 0, 0, 0, 0, false)"), {"t": "2026-01-01T00:00:00+00:00"})
        cid = conn.execute(text("SELECT max(id) FROM campaign")).scalar()
        ids: list[int] = []
        for k, (parent, code, prompt, response) in enumerate(OLD_ROWS):
            if engine.dialect.name == "postgresql" and prompt:
                prompt = prompt.replace("\x00", "")   # PostgreSQL text never held a NUL
            conn.execute(text(
                "INSERT INTO program (campaign_id, iteration, parent_id, island, generation, code,"
                " code_hash, kind, prompt, response, prompt_tokens, completion_tokens, cost_usd,"
                " extra, status, created_at) VALUES (:c, :it, :p, 0, 0, :code, :h, 'old', :pr,"
                " :re, 0, 0, 0, '{}', 'ok', :t)"),
                {"c": cid, "it": k, "p": None if parent is None else ids[parent], "code": code,
                 "h": None if code is None else code_hash(code), "pr": prompt, "re": response,
                 "t": "2026-01-01T00:00:00+00:00"})
            ids.append(conn.execute(text("SELECT max(id) FROM program")).scalar())
    return cfg


def _check_migration(url: str) -> None:
    from alembic import command
    from sqlalchemy import text

    from evoforge.db.engine import get_engine

    cfg = _migrate_old_rows(url)
    pg = get_engine(url).dialect.name == "postgresql"
    expected = [(code, prompt.replace("\x00", "") if pg and prompt else prompt, response)
                for _, code, prompt, response in OLD_ROWS]
    command.upgrade(cfg, "0006")
    sessions = session_factory(url)
    with sessions() as s:
        rows = s.scalars(select(Program).order_by(Program.id)).all()
        got = [tuple(blobs.program_texts(s, p).__dict__.values()) for p in rows]
        assert got == expected
        assert [p.code_hash for p in rows] == [None if c is None else code_hash(c)
                                               for c, _, _ in expected]
        assert blobs.ref_hashes(rows[1].prompt_z) == [code_hash(CODE_A)]  # quoted twice, one ref
        assert s.scalar(select(func.count()).select_from(CodeBlob)) == 3
    command.downgrade(cfg, "0005")
    with get_engine(url).connect() as conn:
        back = conn.execute(text("SELECT code, prompt, response FROM program ORDER BY id")).all()
    assert [tuple(r) for r in back] == expected
    command.upgrade(cfg, "head")


def test_migration_moves_old_rows_on_sqlite(tmp_path):
    _check_migration(f"sqlite:///{tmp_path / 'old.db'}")


def test_migration_moves_old_rows_on_postgres(postgres_server):
    _check_migration(postgres_server.createdb())
