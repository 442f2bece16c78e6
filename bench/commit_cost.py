"""CPU of the commit path with the compact storage (db/blobs.py), old against new, in one run.

    .venv/bin/python bench/commit_cost.py [--programs 1000] [--old REV] [--rounds 3]

The soak bench measures CPU per program of a whole campaign, which moves with the machine's load
and mixes the commit with everything else. This one isolates the commit:

1. **Record.** A circle packing campaign with the stand-in LLM (bench/storage_bytes.py's runner:
   ../shared/tools/perturb_llm.py on loopback, 2 parallel, SQLite) runs `--programs` iterations;
   every `Child` that `CampaignStore.commit` received is kept, in commit order.
2. **Replay.** The same commits again, one after another in this thread, through the real
   `CampaignStore` into a fresh SQLite database per path and round: **old** is db/store.py and
   db/blobs.py as committed at `--old` (`git show`, imported from a temp directory), **new** the
   working tree. The paths alternate (old, new, old, new, ...) so that the machine's load falls
   on both alike. Before each commit, untimed, the store is warmed as `select` warms it in a
   campaign (the parent's row and the codes the prompt quotes), so the commit finds them in
   memory as it does there. Timed with `time.thread_time` (this thread's CPU only): the whole
   commit, and its parts that are about the compact storage (`_encode_texts`, `_stored`,
   `blobs.code_row`, and `_hold_codes` where the path has it).
3. **Checks.** Every prompt, reply and code read back from every replay database equals what the
   commit was given, byte for byte; and bytes per program of each (SQLite page_count x
   page_size after VACUUM).
4. **The encoder alone.** `encode_text` of every recorded prompt and reply with the campaign's
   trained text dictionary, old module against new, alternating; the blobs must be identical.

Prints ms per program (median over rounds) and old/new ratios.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sqlalchemy import select  # noqa: E402

import storage_bytes  # noqa: E402
from evoforge.db import blobs as new_blobs  # noqa: E402
from evoforge.db import store as new_store  # noqa: E402
from evoforge.db.campaign_config import CampaignSpec  # noqa: E402
from evoforge.db.engine import session_factory, upgrade  # noqa: E402
from evoforge.db.models import Evaluation, Program  # noqa: E402
from evoforge.worker.campaign_service import create_campaign  # noqa: E402

BLOB_PARTS = ("_encode_texts", "_stored", "_hold_codes")


def load_old(rev: str, tmp: Path) -> tuple[ModuleType, ModuleType]:
    """db/blobs.py and db/store.py at `rev`, as modules of their own; the old store uses the old
    blobs module (everything else it imports is the working tree's)."""
    mods = []
    for name in ("blobs", "store"):
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:db/{name}.py"],
                             capture_output=True, text=True, check=True).stdout
        path = tmp / f"old_{name}.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location(f"_commit_cost_old_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod   # dataclasses look their module up there
        spec.loader.exec_module(mod)
        mods.append(mod)
    old_blobs, old_store = mods
    old_store.blobs = old_blobs
    return old_blobs, old_store


def spec_of(url: str) -> CampaignSpec:
    return CampaignSpec(task="circle_packing", seed=0, parallel=2, budget={"max_evaluations": 10**6},
                        mutator={"kind": "llm", "base_url": url, "models": [{"name": "perturb"}]})


def record(programs: int, db: str) -> tuple[int, list[Any], dict[str, Any]]:
    """Run the stand-in campaign: its id, the children committed in commit order (with their
    program id and evaluation ids), and the store's keyword arguments."""
    cls = new_store.CampaignStore
    children: list[tuple[int, Any]] = []
    kwargs: dict[str, Any] = {}
    commit, init = cls.commit, cls.__init__

    def recording_commit(self, child):
        committed = commit(self, child)
        children.append((committed.program_id, child))
        return committed

    def recording_init(self, sessions, campaign_id, **kw):
        kwargs.update(kw)
        init(self, sessions, campaign_id, **kw)

    cls.commit, cls.__init__ = recording_commit, recording_init
    try:
        cid, _ = storage_bytes.run_campaign(db, programs)
    finally:
        cls.commit, cls.__init__ = commit, init
    # Ids in the recorded database, to map parents and cache sources onto each replay's ids.
    sessions = session_factory(db)
    evals: dict[int, list[int]] = {}
    with sessions() as s:
        for eid, pid in s.execute(select(Evaluation.id, Evaluation.program_id)):
            evals.setdefault(pid, []).append(eid)
    children.sort(key=lambda pc: pc[0])
    return cid, [(pid, child, evals.get(pid, [])) for pid, child in children], kwargs


class Timer:
    """thread_time of some methods of a class (or functions of a module) while installed."""

    def __init__(self) -> None:
        self.acc: dict[str, float] = {}
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, label: str) -> None:
        fn = owner.__dict__.get(name)
        if fn is None:
            return

        @functools.wraps(fn)
        def timed(*a, **kw):
            t = time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                self.acc[label] = self.acc.get(label, 0.0) + time.thread_time() - t

        setattr(owner, name, timed)
        self._undo.append((owner, name, fn))

    def unwrap(self) -> None:
        for owner, name, fn in reversed(self._undo):
            setattr(owner, name, fn)
        self._undo.clear()


def replay(store_mod: ModuleType, blobs_mod: ModuleType, recorded: list[Any], kwargs: dict[str, Any],
           db: str) -> dict[str, Any]:
    upgrade(db)
    sessions = session_factory(db)
    cid = create_campaign(sessions, spec_of("http://127.0.0.1:9/v1"), status="running").id
    store = store_mod.CampaignStore(sessions, cid, **kwargs)
    new_id: dict[int, int] = {}
    new_eval: dict[int, int] = {}
    commit_s = 0.0
    timer = Timer()
    for name in BLOB_PARTS:
        timer.wrap(store_mod.CampaignStore, name, name)
    timer.wrap(blobs_mod, "code_row", "code_row")
    try:
        for old_pid, child, evals in recorded:
            child = replace(child, parent_id=new_id.get(child.parent_id),
                            cache_source_id=new_eval.get(child.cache_source_id))
            with store.engine.connect() as conn:   # what select() has loaded in a campaign
                if child.parent_id is not None:
                    store._refs_for(conn, [child.parent_id])
                if child.mutation.prompt:
                    store._known_codes(conn, blobs_mod.quoted_hashes(child.mutation.prompt))
            t = time.thread_time()
            committed = store.commit(child)
            commit_s += time.thread_time() - t
            new_id[old_pid] = committed.program_id
            with sessions() as s:
                eid = s.scalar(select(Evaluation.id).where(Evaluation.program_id == committed.program_id))
            new_eval.update(dict.fromkeys(evals, eid))
    finally:
        timer.unwrap()
    n = len(recorded)
    out = {"commit": commit_s * 1000 / n}
    out.update({k: v * 1000 / n for k, v in timer.acc.items()})
    out["bad"] = check(sessions, recorded, new_id)
    out["bytes_per_program"] = storage_bytes.sqlite_size(db)[0] / n
    return out


def check(sessions, recorded: list[Any], new_id: dict[int, int]) -> int:
    """Texts read back (through the working tree's decoder) that differ from what was committed."""
    bad = 0
    with sessions() as s:
        rows = {p.id: p for p in s.scalars(select(Program).where(Program.id.in_(list(new_id.values()))))}
        for old_pid, child, _ in recorded:
            texts = new_blobs.program_texts(s, rows[new_id[old_pid]])
            m = child.mutation
            bad += (texts.code, texts.prompt, texts.response) != (child.code, m.prompt, m.response)
    return bad


def encoder_alone(old_blobs: ModuleType, recorded: list[Any], db: str, cid: int, rounds: int
                  ) -> dict[str, Any]:
    """encode_text over the recorded texts with the same references a commit gives them."""
    sessions = session_factory(db)
    with sessions() as s:
        hash_of = dict(s.execute(select(Program.id, Program.code_hash)).all())
        codes = new_blobs.get_codes(s, list(hash_of.values()))
        text_dict = new_blobs.campaign_dictionaries(s, cid).get(new_blobs.TEXT)
    cases = []
    for _, child, _ in recorded:
        m = child.mutation
        parent = {}
        if child.parent_id is not None and hash_of.get(child.parent_id) in codes:
            parent = {hash_of[child.parent_id]: codes[hash_of[child.parent_id]]}
        quoted = {h: codes[h] for h in new_blobs.quoted_hashes(m.prompt or "") if h in codes}
        own = {new_blobs.code_hash(child.code): child.code} if child.code else {}
        for text, refs in ((m.prompt, {**parent, **quoted}), (m.response, {**parent, **own})):
            if text is not None:
                cases.append((text, refs))
    times: dict[str, list[float]] = {"old": [], "new": []}
    same = True
    for _ in range(rounds):
        outs = {}
        for label, mod in (("old", old_blobs), ("new", new_blobs)):
            d = mod.Dictionary(text_dict.id, text_dict.data) if text_dict else None
            t = time.thread_time()
            outs[label] = [mod.encode_text(text, refs, dictionary=d) for text, refs in cases]
            times[label].append((time.thread_time() - t) * 1000 / len(recorded))
        same = same and outs["old"] == outs["new"]
    return {"old": statistics.median(times["old"]), "new": statistics.median(times["new"]),
            "identical": same, "texts": len(cases)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=1000)
    ap.add_argument("--old", default="HEAD", help="the commit whose db/store.py and db/blobs.py are 'old'")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", a.old],
                         capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        old_blobs, old_store = load_old(a.old, tmp_path)
        recorded_db = f"sqlite:///{tmp_path / 'recorded.db'}"
        t = time.perf_counter()
        cid, recorded, kwargs = record(a.programs, recorded_db)
        print(f"recorded {len(recorded)} commits in {time.perf_counter() - t:.0f} s; "
              f"old = {rev} (db/store.py, db/blobs.py), new = working tree")
        paths = {"old": (old_store, old_blobs), "new": (new_store, new_blobs)}
        runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
        for r in range(a.rounds):
            for label, (store_mod, blobs_mod) in paths.items():
                runs[label].append(replay(store_mod, blobs_mod, recorded, kwargs,
                                          f"sqlite:///{tmp_path / f'{label}{r}.db'}"))
        enc = encoder_alone(old_blobs, recorded, recorded_db, cid, a.rounds)
    keys = ["commit", *BLOB_PARTS, "code_row"]
    med = {label: {k: statistics.median(x.get(k, 0.0) for x in rs) for k in keys}
           for label, rs in runs.items()}
    print(f"\nCPU ms per program (thread_time, median of {a.rounds} rounds of {len(recorded)} commits)")
    print(f"{'part':<16} {'old':>8} {'new':>8} {'old/new':>8}")
    for k in keys:
        o, n = med["old"][k], med["new"][k]
        print(f"{k:<16} {o:>8.3f} {n:>8.3f} {o / n if n else float('nan'):>8.2f}")
    blob_o = sum(med["old"][k] for k in keys[1:])
    blob_n = sum(med["new"][k] for k in keys[1:])
    print(f"{'compact storage':<16} {blob_o:>8.3f} {blob_n:>8.3f} {blob_o / blob_n:>8.2f}")
    for label, rs in runs.items():
        print(f"{label}: texts read back unequal: {sum(x['bad'] for x in rs)}; bytes/program "
              f"(SQLite, after VACUUM): {', '.join(str(round(x['bytes_per_program'])) for x in rs)}")
    print(f"\nencode_text alone ({enc['texts']} texts, trained dictionary): old {enc['old']:.3f} "
          f"new {enc['new']:.3f} ms per program, old/new {enc['old'] / enc['new']:.2f}, "
          f"blobs identical: {enc['identical']}")


if __name__ == "__main__":
    main()
