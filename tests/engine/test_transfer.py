"""Export, import and prune (worker/transfer.py, worker/prune.py) on real SQLite and PostgreSQL,
with a campaign run by the embedded engine in the real fork-server sandbox, plus LLM-made
programs committed through the store (prompts and responses through db/blobs.py)."""
from __future__ import annotations

import io
import json

import pytest
import zstandard
from sqlalchemy import func, select

from evoforge.db import blobs
from evoforge.db.campaign_config import CampaignSpec
from evoforge.db.engine import session_factory, upgrade
from evoforge.db.models import Campaign, CodeBlob, EliteCell, Evaluation, Program
from evoforge.db.store import CampaignStore
from evoforge.evolution import hashing
from evoforge.evolution.step import Child
from evoforge.evolution.types import OK, EvalResult, Mutation
from evoforge.worker import prune, transfer
from evoforge.worker.campaign_service import Scope, best_program, create_campaign
from evoforge.worker.embedded import EmbeddedExecutor
from tests.integration.services import pg_url, postgres_server  # noqa: F401

TRICKY = "naïve — 数学 🚀 \t tab \r\n crlf \\ backslash \"quote\" \u2028 ls"


def _llm_children(sessions, cid: int, n: int, start: int) -> None:
    """`n` LLM-style programs (a prompt that quotes the parent, a SEARCH/REPLACE reply with
    unusual characters, a model, tokens, cost), committed through the store like a worker's."""
    store = CampaignStore(sessions, cid)
    with sessions() as s:
        c = s.get(Campaign, cid)
        parent = s.get(Program, c.best_program_id)
        parent_code = blobs.program_texts(s, parent).code
    for k in range(n):
        code = parent_code + f"\n# variant {k} {TRICKY[:8]}\n"
        prompt = (f"Improve this program ({TRICKY}):\n```python\n{parent_code.rstrip()}\n```\n"
                  f"Attempt {k}.")
        response = (f"<<<<<<< SEARCH\n{parent_code[:200]}=======\n{parent_code[:200]}"
                    f">>>>>>> REPLACE\n{TRICKY}\n")
        store.commit(Child(
            iteration=start + k, island=k % 2, parent_id=parent.id,
            generation=parent.generation + 1, code=code, code_hash=hashing.code_hash(code),
            mutation=Mutation(code=code, kind="llm:diff", prompt=prompt, response=response,
                              model=f"model-{k % 2}", prompt_tokens=100 + k,
                              completion_tokens=50, cost_usd=0.001 * k, extra={"idea": TRICKY}),
            result=EvalResult(status=OK, score=(parent.score or 0) - 0.5 - k,
                              metrics={"k": k}, features={}, duration_s=0.01),
            run_hash=hashing.run_hash(code, 0)))


@pytest.fixture
def campaign(sessions, fork_sandbox):
    spec = CampaignSpec(task="circle_packing", seed=3, budget={"max_evaluations": 30},
                        archive={"islands": 2, "novelty_threshold": None})
    cid = create_campaign(sessions, spec).id
    EmbeddedExecutor(sessions, cid, sandbox=fork_sandbox).run()
    _llm_children(sessions, cid, 6, start=30)
    return cid


def export_bytes(sessions, cid: int) -> bytes:
    buf = io.BytesIO()
    transfer.export_campaign(sessions, cid, buf)
    return buf.getvalue()


def records(data: bytes) -> list[dict]:
    text = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read().decode()
    return [json.loads(line) for line in text.split("\n") if line]


def normalized(data: bytes) -> list[dict]:
    """The records with ids replaced by the position of their program in the file, and the
    header's export time and source dropped: two exports of one campaign must be equal so."""
    out, order = [], {}
    for r in records(data):
        r = dict(r)
        if r["type"] == "header":
            r.pop("exported_at"), r.pop("source")
        elif r["type"] == "campaign":
            r.pop("id")
            r["best_program_id"] = ("best", r["best_program_id"])  # resolved below
        elif r["type"] == "program":
            order[r["id"]] = len(order)
            r["id"], r["parent_id"] = order[r["id"]], order.get(r["parent_id"], r["parent_id"])
            if r["evaluation"]:
                sp = r["evaluation"]["source_program_id"]
                r["evaluation"] = {**r["evaluation"], "source_program_id": order.get(sp, sp)}
        elif r["type"] == "elite":
            r["program_id"] = order[r["program_id"]]
        out.append(r)
    for r in out:
        if r["type"] == "campaign" and r["best_program_id"][1] is not None:
            r["best_program_id"] = order[r["best_program_id"][1]]
    return out


def fresh_sqlite(tmp_path, name: str):
    url = f"sqlite:///{tmp_path / name}"
    upgrade(url)
    return session_factory(url)


def lineage_of(sessions, cid: int) -> list[tuple]:
    """Every program as (iteration, parent's iteration, generation, score, code, prompt,
    response): ids differ between databases, this does not."""
    with sessions() as s:
        progs = s.scalars(select(Program).where(Program.campaign_id == cid).order_by(Program.id)).all()
        by_id = {p.id: p.iteration for p in progs}
        out = []
        for p in progs:
            t = blobs.program_texts(s, p)
            out.append((p.iteration, by_id.get(p.parent_id), p.generation, p.score, t.code,
                        t.prompt, t.response, p.pruned_at is not None))
        return out


def elites_of(sessions, cid: int) -> list[tuple]:
    with sessions() as s:
        rows = s.execute(select(EliteCell.island, EliteCell.cell, Program.iteration, EliteCell.score)
                         .join(Program, Program.id == EliteCell.program_id)
                         .where(EliteCell.campaign_id == cid)
                         .order_by(EliteCell.island, EliteCell.cell)).all()
        return [tuple(r) for r in rows]


def best_of(sessions, cid: int) -> tuple:
    with sessions() as s:
        c, p = best_program(s, Scope.operator(), cid)
        return c.best_score, p.iteration, blobs.program_texts(s, p).code


def test_round_trip_sqlite_postgres_sqlite(tmp_path, sessions, campaign, pg_url):  # noqa: F811
    first = export_bytes(sessions, campaign)
    recs = records(first)
    assert recs[0]["format"] == "evoforge-campaign" and recs[0]["version"] == 1
    assert [r["type"] for r in recs][-1] == "end"
    assert any(r["type"] == "model_stat" for r in recs)
    assert any(r["type"] == "program" and r["prompt"] and TRICKY in r["prompt"] for r in recs)
    # each distinct code once, by hash
    hashes = [r["hash"] for r in recs if r["type"] == "code"]
    assert hashes == sorted(set(hashes))

    pg = session_factory(pg_url)
    into_pg = transfer.import_campaign(pg, io.BytesIO(first))
    assert into_pg.status == "completed" and into_pg.programs == 36
    second = export_bytes(pg, into_pg.campaign_id)
    back = fresh_sqlite(tmp_path, "back.db")
    into_sqlite = transfer.import_campaign(back, io.BytesIO(second))
    third = export_bytes(back, into_sqlite.campaign_id)

    assert normalized(first) == normalized(second) == normalized(third)
    for target, cid in ((pg, into_pg.campaign_id), (back, into_sqlite.campaign_id)):
        assert best_of(target, cid) == best_of(sessions, campaign)
        assert elites_of(target, cid) == elites_of(sessions, campaign)
        assert lineage_of(target, cid) == lineage_of(sessions, campaign)
    # new ids: the PostgreSQL copy's programs are not numbered as the original's
    with pg() as s:
        assert s.scalar(select(func.count()).select_from(Program)
                        .where(Program.campaign_id == into_pg.campaign_id)) == 36


def test_import_into_the_same_database_gives_new_ids_and_rebuilds_identically(sessions, campaign):
    data = export_bytes(sessions, campaign)
    copy = transfer.import_campaign(sessions, io.BytesIO(data)).campaign_id
    assert copy != campaign
    with sessions() as s:
        old = set(s.scalars(select(Program.id).where(Program.campaign_id == campaign)))
        new = set(s.scalars(select(Program.id).where(Program.campaign_id == copy)))
        assert old.isdisjoint(new) and len(new) == len(old)
        # lineage stays inside the copy
        parents = set(s.scalars(select(Program.parent_id).where(Program.campaign_id == copy,
                                                               Program.parent_id.is_not(None))))
        assert parents <= new
    # the archive the copy holds is the one its programs rebuild to (as the original's)
    assert (CampaignStore(sessions, copy).rebuild_elites().keys()
            == CampaignStore(sessions, campaign).rebuild_elites().keys())
    assert normalized(export_bytes(sessions, copy)) == normalized(data)


def test_running_campaign_arrives_paused(tmp_path, sessions, campaign):
    with sessions.begin() as s:
        s.get(Campaign, campaign).status = "running"
    target = fresh_sqlite(tmp_path, "t.db")
    out = transfer.import_campaign(target, io.BytesIO(export_bytes(sessions, campaign)))
    with target() as s:
        assert s.get(Campaign, out.campaign_id).status == "paused"


# -- a hostile or broken file -------------------------------------------------------------------

def _rewrite(data: bytes, edit) -> bytes:
    lines = [json.dumps(r) for r in edit(records(data))]
    return zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode())


def _nothing_made(sessions) -> None:
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Campaign)) == 0
        assert s.scalar(select(func.count()).select_from(Program)) == 0
        assert s.scalar(select(func.count()).select_from(Evaluation)) == 0


def _set(kind, **values):
    def edit(recs):
        for r in recs:
            if r["type"] == kind:
                r.update(values)
                break
        return recs
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda recs: recs[:1] + [{"type": "surprise"}] + recs[1:], "line 2: unknown record type"),
    (_set("header", version=2), "newer EvoForge"),
    (_set("header", format="other"), "is not 'evoforge-campaign'"),
    (_set("code", code="print('not the hashed text')\n"), "does not hash to its hash"),
    (_set("program", parent_id=999_999), "parent"),
    (_set("program", evaluation={"surprise": 1}), "invalid program record"),
    (_set("program", island=7), "island 7"),
    (_set("campaign", task="no_such_task"), "no_such_task"),
    (_set("elite", program_id=123_456_789), "not in the file"),
    (_set("end", records={"code": 1, "program": 1, "elite": 1, "model_stat": 1}), "end record counts"),
    (lambda recs: recs[:-1], "without its end record"),
    (lambda recs: [dict(r, records={**r["records"], "code": 0}) if r["type"] == "end" else r
                   for r in recs if r["type"] != "code"], "missing from the file"),
    (lambda recs: recs + [{"type": "end", "records": {}}], "out of order"),
    (lambda recs: [recs[0], *[r for r in recs if r["type"] == "program"][:1], *recs[1:]],
     "no campaign record after the header"),
    (lambda recs: recs[:-1] + [r for r in recs if r["type"] == "code"][-1:] + recs[-1:],
     "a code record after a model_stat record"),
])
def test_refused_files_leave_nothing(tmp_path, sessions, campaign, edit, message):
    bad = _rewrite(export_bytes(sessions, campaign), edit)
    target = fresh_sqlite(tmp_path, "target.db")
    with pytest.raises(transfer.TransferError, match=message):
        transfer.import_campaign(target, io.BytesIO(bad))
    _nothing_made(target)


def test_bounds_on_size(tmp_path, sessions, campaign, monkeypatch):
    target = fresh_sqlite(tmp_path, "target.db")
    bomb = zstandard.ZstdCompressor().compress(b" " * (50 << 20))
    with pytest.raises(transfer.TransferError, match="expands to more than"):
        transfer.import_campaign(target, io.BytesIO(bomb), max_bytes=10 << 20)
    monkeypatch.setattr(transfer, "MAX_LINE_BYTES", 1000)
    with pytest.raises(transfer.TransferError, match="longer than"):
        transfer.import_campaign(target, io.BytesIO(export_bytes(sessions, campaign)))
    with pytest.raises(transfer.TransferError, match="zstd"):
        transfer.import_campaign(target, io.BytesIO(b"{\"type\": \"header\"}\n"))
    _nothing_made(target)


def test_hostile_values_are_cleaned_like_a_commit(tmp_path, sessions, campaign):
    def edit(recs):
        for r in recs:
            if r["type"] == "program" and r["prompt"]:
                r["prompt"] = "a\x00b \U0001f680 c"
                r["evaluation"]["metrics"] = {"x": "y" * 200_000, "deep": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}
                return recs
        raise AssertionError("no LLM program")
    target = fresh_sqlite(tmp_path, "target.db")
    out = transfer.import_campaign(target, io.BytesIO(_rewrite(export_bytes(sessions, campaign),
                                                               edit)))
    with target() as s:
        p = s.scalars(select(Program).where(Program.campaign_id == out.campaign_id,
                                            Program.prompt_z.is_not(None))).first()
        assert blobs.program_texts(s, p).prompt == "ab \U0001f680 c"
        ev = s.scalar(select(Evaluation).where(Evaluation.program_id == p.id))
        assert len(ev.metrics["x"]) < 200_000 and ev.artifacts["sanitized"]
    # a lone surrogate is no JSON a strict reader takes: the record is refused
    def surrogate(recs):
        return [dict(r, prompt="\ud800") if r["type"] == "program" else r for r in recs]
    other = fresh_sqlite(tmp_path, "other.db")
    with pytest.raises(transfer.TransferError, match="invalid program record"):
        transfer.import_campaign(other, io.BytesIO(_rewrite(export_bytes(sessions, campaign),
                                                            surrogate)))
    _nothing_made(other)


def _bulk_campaign(sessions, n: int) -> int:
    cid = create_campaign(sessions, CampaignSpec(task="circle_packing"), status="completed").id
    with sessions() as s:
        seed = s.get(Campaign, cid).seed_program
    pad = "#" * 400
    for lo in range(0, n, 5000):
        with sessions.begin() as s:
            codes = [f"{seed}\n# {i} {pad}\n" for i in range(lo, min(n, lo + 5000))]
            blobs.put_codes(s, codes)
            s.execute(Program.__table__.insert(), [dict(
                campaign_id=cid, iteration=lo + k, parent_id=None, island=0, generation=0,
                code_hash=hashing.code_hash(code), kind="x", status=OK, score=float(lo + k),
                extra={}, prompt_z=blobs.encode_text(f"prompt {lo + k} {pad}", {}))
                for k, code in enumerate(codes)])
    return cid


def _peaks(tmp_path, n: int) -> tuple[int, int]:
    """Peak traced Python memory of exporting and of importing an n-program campaign."""
    import tracemalloc

    sessions = fresh_sqlite(tmp_path, f"big{n}.db")
    cid = _bulk_campaign(sessions, n)
    path = tmp_path / f"big{n}.evo"
    target = fresh_sqlite(tmp_path, f"into{n}.db")
    tracemalloc.start()
    try:
        with open(path, "wb") as f:
            assert transfer.export_campaign(sessions, cid, f).programs == n
        export_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        with open(path, "rb") as f:
            assert transfer.import_campaign(target, f).programs == n
        return export_peak, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_large_campaign_streams_in_bounded_memory(tmp_path):
    """Export and import hold batches, not the campaign: at 4 times the programs (~1.5 KB of
    text each) the peak of traced Python memory does not grow with them."""
    small, large = _peaks(tmp_path, 2_000), _peaks(tmp_path, 8_000)
    for kind, a, b in zip(("export", "import"), small, large):
        assert b < 1.3 * a + (2 << 20), (kind, a, b)


# -- problem campaigns ----------------------------------------------------------------------------

def test_problem_campaign_round_trip(tmp_path, sessions):
    from evoforge.evaluators.openevolve.package import package_from_files
    from evoforge.worker.problem_service import store_problem

    files = {"initial_program.py": b"# EVOLVE-BLOCK-START\ndef f():\n    return 1\n# EVOLVE-BLOCK-END\n",
             "evaluator.py": b"def evaluate(path):\n    return {'combined_score': 1.0}\n",
             "data.txt": b"some data\n"}
    row = store_problem(sessions, package_from_files(files), sandbox=None).problem
    cid = create_campaign(sessions, CampaignSpec(problem=row.digest)).id
    data = export_bytes(sessions, cid)
    assert any(r["type"] == "problem" and r["digest"] == row.digest for r in records(data))
    target = fresh_sqlite(tmp_path, "target.db")
    out = transfer.import_campaign(target, io.BytesIO(data))
    assert out.problem == row.digest and out.status == "paused"   # it was queued
    data = _rewrite(data, _set("campaign", status="paused"))
    assert normalized(export_bytes(target, out.campaign_id)) == normalized(data)
    # tampered files no longer hash to the digest: refused
    bad = _rewrite(data, lambda recs: [dict(r, files={**r["files"], "data.txt": "other"})
                                       if r["type"] == "problem" else r for r in recs])
    other = fresh_sqlite(tmp_path, "other.db")
    with pytest.raises(transfer.TransferError, match="do not hash to its digest"):
        transfer.import_campaign(other, io.BytesIO(bad))
    escape = _rewrite(data, lambda recs: [dict(r, files={**r["files"], "../x.py": "x"})
                                          if r["type"] == "problem" else r for r in recs])
    with pytest.raises(transfer.TransferError, match="problem file"):
        transfer.import_campaign(other, io.BytesIO(escape))
    no_problem = _rewrite(data, lambda recs: [r for r in recs if r["type"] != "problem"])
    with pytest.raises(transfer.TransferError, match="does not hold"):
        transfer.import_campaign(other, io.BytesIO(no_problem))
    _nothing_made(other)


# -- prune ----------------------------------------------------------------------------------------

class CountingSandbox:
    """The real sandbox, counting the candidate runs it is asked for."""

    def __init__(self, inner):
        self.inner, self.runs = inner, 0

    def run(self, *args, **kw):
        self.runs += 1
        return self.inner.run(*args, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_prune_keeps_elites_and_lineage_and_the_cache_still_dedupes(sessions, campaign,
                                                                    fork_sandbox):
    from evoforge.evaluators.base import get_task, parse_params
    from evoforge.evaluators.pipeline import CascadeEvaluator
    from evoforge.evolution.step import Proposal, complete
    from evoforge.worker.cache_policy import runner_id

    with sessions() as s:
        c = s.get(Campaign, campaign)
        elites = set(s.scalars(select(EliteCell.program_id).where(EliteCell.campaign_id == campaign)))
        progs = s.scalars(select(Program).where(Program.campaign_id == campaign)).all()
        parent = {p.id: p.parent_id for p in progs}
        texts = {p.id: blobs.program_texts(s, p) for p in progs}
        blobs_before = s.scalar(select(func.count()).select_from(CodeBlob))
    ancestors = set()
    for e in elites:
        while e is not None:
            ancestors.add(e)
            e = parent[e]
    victim = next(p for p in progs if p.id not in ancestors and p.status == OK
                  and texts[p.id].code is not None)

    result = prune.prune_campaign(sessions, campaign, keep=prune.parse_keep("elites,lineage"))
    assert result.pruned == len(progs) - len(ancestors) and result.kept == len(ancestors)
    assert result.code_blobs_deleted > 0
    with sessions() as s:
        for p in s.scalars(select(Program).where(Program.campaign_id == campaign)):
            t = blobs.program_texts(s, p)
            if p.id in ancestors:   # kept in full
                assert p.pruned_at is None and t == texts[p.id]
            else:                   # dropped, hashes and evaluation kept
                assert p.pruned_at is not None and t.prompt is None and t.response is None
                assert p.code_hash == progs[[q.id for q in progs].index(p.id)].code_hash
        assert s.scalar(select(func.count()).select_from(CodeBlob)) < blobs_before
        assert s.scalar(select(func.count()).select_from(Evaluation).join(Program)
                        .where(Program.campaign_id == campaign)) == len(progs)
    # a second prune finds nothing more to do
    assert prune.prune_campaign(sessions, campaign, keep=prune.parse_keep("lineage")).pruned == 0

    # The pruned program's code proposed again: a cache hit, no sandbox run.
    task = get_task(c.task)
    params = parse_params(task, c.params)
    counting = CountingSandbox(fork_sandbox)
    store = CampaignStore(sessions, campaign, runner=runner_id(fork_sandbox))
    with sessions() as s:
        next_it = s.scalar(select(func.max(Program.iteration)).where(Program.campaign_id == campaign)) + 1
    committed = complete(Proposal(iteration=next_it, island=victim.island, parent_id=victim.parent_id,
                                  parent_generation=0, parent_score=None,
                                  mutation=Mutation(code=texts[victim.id].code, kind="llm:diff")),
                         store=store, evaluator=CascadeEvaluator(task, params, counting), seed=c.seed)
    assert committed.cache == "code" and counting.runs == 0
    assert committed.result.score == victim.score
    # and a never-seen program does run (the counter counts)
    fresh = texts[victim.id].code + "\n# never seen\n"
    complete(Proposal(iteration=next_it + 1, island=0, parent_id=None, parent_generation=0,
                      parent_score=None, mutation=Mutation(code=fresh, kind="llm:diff")),
             store=store, evaluator=CascadeEvaluator(task, params, counting), seed=c.seed)
    assert counting.runs > 0


def test_prune_older_than_and_elites_only(sessions, campaign):
    from datetime import datetime, timedelta, timezone

    # nothing is older than a week: nothing pruned
    assert prune.prune_campaign(sessions, campaign, keep=prune.parse_keep("elites"),
                                older_than=prune.parse_age("7d")).pruned == 0
    later = datetime.now(timezone.utc) + timedelta(days=8)
    out = prune.prune_campaign(sessions, campaign, keep=prune.parse_keep("elites"),
                               older_than=prune.parse_age("7d"), now=later)
    with sessions() as s:
        elites = set(s.scalars(select(EliteCell.program_id).where(EliteCell.campaign_id == campaign)))
        best = s.get(Campaign, campaign).best_program_id
        kept = set(s.scalars(select(Program.id).where(Program.campaign_id == campaign,
                                                      Program.pruned_at.is_(None))))
    assert kept == elites | {best} and out.kept == len(kept)
    # the pruned campaign still exports and imports (pruned programs without their code)
    data = export_bytes(sessions, campaign)
    copy = transfer.import_campaign(sessions, io.BytesIO(data)).campaign_id
    assert normalized(export_bytes(sessions, copy)) == normalized(data)


def test_parse_keep_and_age():
    assert prune.parse_keep("lineage") == {"elites", "lineage"}
    assert prune.parse_age("12h").total_seconds() == 43200
    for bad in ("forever", "7 days", "-1d", "1y"):
        with pytest.raises(ValueError):
            prune.parse_age(bad)
    with pytest.raises(ValueError, match="unknown --keep"):
        prune.parse_keep("elites,code")


def test_vacuum_shrinks_sqlite(sessions, campaign):
    from evoforge.db.campaign_rows import engine_of

    prune.prune_campaign(sessions, campaign)
    before, after = prune.vacuum_sqlite(engine_of(sessions))
    assert 0 < after <= before


# -- the commands -----------------------------------------------------------------------------------

def test_cli_export_import_prune(tmp_path, db_url, sessions, campaign):
    from click.testing import CliRunner

    from evoforge.cli.main import main

    run = CliRunner().invoke
    out = tmp_path / "c.evo"
    r = run(main, ["export", str(campaign), "--out", str(out), "--db", db_url])
    assert r.exit_code == 0, r.output
    first = out.read_bytes()
    r = run(main, ["export", str(campaign), "--out", str(out), "--db", db_url])
    assert r.exit_code == 2 and "--force" in r.output and out.read_bytes() == first
    link = tmp_path / "link.evo"
    link.symlink_to(tmp_path / "elsewhere.evo")
    r = run(main, ["export", str(campaign), "--out", str(link), "--force", "--db", db_url])
    assert r.exit_code == 2 and "symlink" in r.output and not (tmp_path / "elsewhere.evo").exists()
    r = run(main, ["export", str(campaign), "--out", str(out), "--force", "--db", db_url])
    assert r.exit_code == 0 and normalized(out.read_bytes()) == normalized(first)
    r = CliRunner().invoke(main, ["export", str(campaign), "--out", "-",
                                                  "--db", db_url])
    assert r.exit_code == 0 and normalized(r.stdout_bytes) == normalized(first)
    assert run(main, ["export", "999", "--out", str(tmp_path / "x"), "--db", db_url]).exit_code == 1

    target = f"sqlite:///{tmp_path / 'target.db'}"
    r = CliRunner().invoke(main, ["import", str(out), "--db", target, "--json"])
    assert r.exit_code == 0, r.output
    new_id = json.loads(r.stdout)["campaign_id"]
    broken = tmp_path / "broken.evo"
    broken.write_bytes(first[: len(first) // 2])
    r = run(main, ["import", str(broken), "--db", target])
    assert r.exit_code == 2 and "line" in r.output
    r = run(main, ["import", str(out), "--db", target, "--project", "nobody"])
    assert r.exit_code == 2 and "no project named" in r.output

    r = CliRunner().invoke(main, ["prune", str(new_id), "--keep", "elites,lineage",
                                                  "--vacuum", "--db", target, "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["pruned"] > 0 and res["reclaim"] == "done (VACUUM)"
    assert res["bytes_after"] <= res["bytes_before"]
    r = run(main, ["prune", str(new_id), "--older-than", "soon", "--db", target])
    assert r.exit_code == 2
