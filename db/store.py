"""`CampaignStore`: the step's `Store` protocol on SQLAlchemy (SQLite and PostgreSQL).

Every write happens in one short transaction: insert the program and its evaluation (the unique
(campaign, iteration) key makes a redelivered iteration a no-op), record the cache entry, bump
the campaign counters, and offer the program to its MAP-Elites cell with a compare-and-set
UPDATE (`... WHERE score < :new`), so concurrent workers on PostgreSQL never lose a better elite.
Programs are immutable, so the store keeps an in-memory cache of the ones it has loaded.
The prepared statements live in db/store_sql.py; the elite table (placement, migration,
rebuild) in db/elites.py.
"""
from __future__ import annotations

import logging
import random
import threading
from dataclasses import replace
from collections import OrderedDict
from typing import Any, Callable

from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.orm import Session, aliased, sessionmaker

from evoforge.db import blobs
from evoforge.db import elites as elite_table
from evoforge.db import model_stats
from evoforge.db.campaign_config import CampaignConfig
from evoforge.db.campaign_rows import engine_of
from evoforge.db.elites import migrate
from evoforge.db.errors import campaign_not_found
from evoforge.db.models import Campaign, Evaluation, Program, utcnow
from evoforge.db.store_sql import (
    ARTIFACTS, C, CACHE_HIT, COUNTERS, HAS_CODE, INSERT_EVALUATION, INSERT_PROGRAM, LOOKUP,
    META_NOTE, NEWEST_WITH_CODE, RECENT_FAILURES, REFS, STORED_ITERATION, dialect_statements,
    result_of)
from evoforge.evolution import archive as cells
from evoforge.evolution import hashing
from evoforge.evolution.meta import Outcome, build_meta_note
from evoforge.evolution.novelty import MinHasher
from evoforge.evolution.sanitize import Sanitizer, clean_child, unstorable
from evoforge.evolution.selection import SelectionConfig, choose
from evoforge.evolution.step import CACHE_MISS, Child, Committed, Selection
from evoforge.evolution.types import (ERROR, INVALID, OK, REJECTED, EvalResult, FeatureDim,
                                      ProgramRef)

log = logging.getLogger(__name__)
CACHEABLE = (OK, INVALID, ERROR)  # deterministic outcomes; timeouts and kills may be flukes

SHARED_SCOPE = "shared"


def cache_scope(project_id: int | None, shared: bool = False) -> str:
    """Whose evaluation cache a campaign reads and fills: its project's ("project:<id>"), open
    mode's ("open"), or, only on the operator's opt-in, everyone's ("shared")."""
    if shared:
        return SHARED_SCOPE
    return "open" if project_id is None else f"project:{int(project_id)}"


# relative_features(fingerprint, elite_fingerprints) -> {feature: value}: the task's hook
# (evaluators.base.Task.relative_features) with its params bound, passed in by worker/runtime.py.
RelativeFeatures = Callable[[Any, list[Any]], dict[str, float]]


class CampaignStore:
    def __init__(self, sessions: sessionmaker[Session], campaign_id: int, *, cache_size: int = 4096,
                 relative_features: RelativeFeatures | None = None,
                 fingerprint_key: str = "behaviour_fingerprint", shared_cache: bool = False,
                 runner: str = ""):
        """`shared_cache`: the operator's opt-in (worker/cache_policy.py) to share evaluation
        cache entries across projects; otherwise they are the campaign's project's alone.
        `runner`: the sandbox runner's identity (cache_policy.runner_id), part of code keys."""
        self.sessions = sessions
        self.runner = runner
        self.engine = engine_of(sessions)
        self.campaign_id = campaign_id
        with sessions() as s:
            c = s.get(Campaign, campaign_id)
            if c is None:
                raise campaign_not_found(campaign_id)
            self.task_key = c.task_key
            self.cache_scope = cache_scope(c.project_id, shared_cache)
            self.islands = c.islands
            config = CampaignConfig.load(c)
        archive = config.archive
        self.dims: list[FeatureDim] = archive.dims
        self.migration_interval = archive.migration_interval
        self.selection_config = SelectionConfig(**archive.selection.model_dump())
        self.novelty_threshold = archive.novelty_threshold
        self.meta_interval = config.mutator.meta_interval
        # The children's failure reasons ("edit_errors") are read by LLM prompts only.
        self.wants_failures = config.mutator.kind != "local"
        self._stmts = dialect_statements(self.engine.dialect.name)
        self._hasher = MinHasher()
        self._signatures: dict[int, Any] = {}
        self._refs: OrderedDict[int, ProgramRef] = OrderedDict()
        self._refs_lock = threading.Lock()
        self._cache_size = cache_size
        # Behaviour features relative to the island's elites (see _relative_features). The
        # fingerprints live in the evaluations' artifacts; they are kept out of ProgramRefs
        # (prompts) and cached here per program id, like the MinHash signatures.
        self._relative = relative_features
        self._fp_key = fingerprint_key
        self._fingerprints: OrderedDict[int, Any] = OrderedDict()
        # Code by hash, of the programs loaded (prompts quote them) and committed here.
        self._codes: OrderedDict[str, str] = OrderedDict()
        # The campaign's trained zstd dictionaries (db/blobs.py), looked for every TRAIN_AT
        # iterations until both exist.
        with self.engine.connect() as conn:
            self._dicts = blobs.campaign_dictionaries(conn, campaign_id)
        self._next_dict_check = blobs.TRAIN_AT

    # -- select ---------------------------------------------------------------------------
    def _refs_for(self, s: Session | Connection, ids: list[int]) -> dict[int, ProgramRef]:
        """Programs (and their evaluations) are immutable: loaded once, then kept in an LRU."""
        with self._refs_lock:
            found = {i: self._refs[i] for i in ids if i in self._refs}
        missing = [i for i in ids if i not in found]
        if missing:
            rows = s.execute(REFS, {"ids": missing}).all()
            codes = [blobs.decode_code(s, r[1]) for r in rows]
            with self._refs_lock:
                for (pid, _, score, status, island, generation, metrics, features, artifacts,
                     h), code in zip(rows, codes):
                    if code is not None:
                        self._remember_code(h, code)
                    if self._relative is not None and artifacts and self._fp_key in artifacts:
                        artifacts = dict(artifacts)
                        self._remember_fingerprint(pid, artifacts.pop(self._fp_key))
                    ref = ProgramRef(id=pid, code=code or "", score=score, status=status, island=island,
                                     generation=generation, metrics=metrics or {},
                                     features=features or {}, artifacts=artifacts or {})
                    found[pid] = ref
                    self._refs[pid] = ref
                while len(self._refs) > self._cache_size:
                    self._refs.popitem(last=False)
        return found

    def _remember_code(self, h: str, code: str) -> None:
        """Call with _refs_lock held."""
        self._codes[h] = code
        self._codes.move_to_end(h)
        while len(self._codes) > self._cache_size:
            self._codes.popitem(last=False)

    def _remember_fingerprint(self, pid: int, fp: Any) -> None:
        """Call with _refs_lock held."""
        self._fingerprints[pid] = fp
        self._fingerprints.move_to_end(pid)
        while len(self._fingerprints) > self._cache_size:
            self._fingerprints.popitem(last=False)

    def _elite_fingerprints(self, conn: Connection, ids: list[int]) -> list[Any]:
        with self._refs_lock:
            found = {i: self._fingerprints[i] for i in ids if i in self._fingerprints}
        missing = [i for i in ids if i not in found]
        if missing:
            rows = conn.execute(ARTIFACTS, {"ids": missing}).all()
            with self._refs_lock:
                for pid, artifacts in rows:
                    found[pid] = (artifacts or {}).get(self._fp_key)
                    self._remember_fingerprint(pid, found[pid])
        return [found[i] for i in ids if found.get(i) is not None]

    def _relative_features(self, conn: Connection, child: Child) -> dict[str, Any]:
        """The task's relative features of a valid child against the current elites of the
        island(s) it is offered to. Called after the campaign row is written, so on PostgreSQL
        (row lock) and SQLite (write lock) commits see each other's elites in commit order."""
        elites = self.elites(conn)
        islands = cells.target_islands(child.parent_id, child.island, self.islands)
        ids = list(dict.fromkeys(pid for i in islands for pid, _, _ in elites.get(i, [])))
        others = self._elite_fingerprints(conn, ids) if ids else []
        try:
            return dict(self._relative(child.result.artifacts.get(self._fp_key), others))
        except Exception:  # a task bug must not lose the commit: the feature is left out (bin 0)
            log.exception("relative_features failed for campaign %s", self.campaign_id)
            return {}

    def elites(self, s: Session | Connection) -> elite_table.ElitesByIsland:
        """Read fresh every time: other workers (threads or processes) replace elites."""
        return elite_table.read(s, self.campaign_id, self.islands)

    def select(self, island: int, rng: random.Random) -> Selection:
        with self.engine.connect() as conn:
            elites = self.elites(conn)
            ids = list(dict.fromkeys(pid for rows in elites.values() for pid, _, _ in rows))
            refs = self._refs_for(conn, ids)
            if not refs:  # no valid program yet: repair the newest program (the seed at first)
                pid = conn.execute(NEWEST_WITH_CODE, {"cid": self.campaign_id}).scalar()
                if pid is None:
                    return Selection(island=island, parent=None)
                return Selection(island=island, parent=self._refs_for(conn, [pid])[pid])
            # Only _refresh_meta_note writes the note, and only when meta_interval is set.
            note = (conn.execute(META_NOTE, {"cid": self.campaign_id}).scalar() or ""
                    if self.meta_interval else "")
            island_elites = [refs[pid] for pid, _, _ in elites.get(island, []) if pid in refs]
            chosen = choose(island, island_elites, list(refs.values()), rng, self.selection_config,
                            meta_note=note)
            if chosen.parent is None or not self.wants_failures:
                return chosen
            errors = self._recent_failures(conn, chosen.parent.id)
        if not errors:
            return chosen
        parent = replace(chosen.parent, artifacts={**chosen.parent.artifacts, "edit_errors": errors})
        return replace(chosen, parent=parent)

    @staticmethod
    def _recent_failures(conn: Connection, parent_id: int, limit: int = 3) -> list[str]:
        """Why the parent's latest children failed, so the next prompt can avoid repeating it."""
        rows = conn.execute(RECENT_FAILURES, {"pid": parent_id, "limit": limit}).all()
        return [f"{status}: {str((art or {}).get('reason', ''))[:300]}" for status, art in rows]

    def rebuild_elites(self) -> dict[tuple[int, str], tuple[int, float]]:
        """Every elite cell recomputed from the stored programs alone (db/elites.py `rebuild`)."""
        with self.sessions() as s:
            return elite_table.rebuild(s, self.campaign_id, self.islands, self.dims,
                                       self.migration_interval)

    def near_duplicate(self, island: int, code: str) -> str | None:
        """The novelty gate: MinHash similarity against the island's elites (cost O(elites))."""
        if not self.novelty_threshold:
            return None
        with self.engine.connect() as conn:
            ids = [pid for pid, _, _ in self.elites(conn).get(island, [])]
            refs = self._refs_for(conn, ids)
        if not refs:
            return None
        sig = self._hasher.signature(code)
        best, best_id = 0.0, None
        for pid, ref in refs.items():
            other = self._signatures.get(pid)
            if other is None:
                other = self._signatures[pid] = self._hasher.signature(ref.code)
            sim = MinHasher.similarity(sig, other)
            if sim > best:
                best, best_id = sim, pid
        if best >= self.novelty_threshold:
            return f"novelty gate: {best:.3f} similar to program {best_id} on island {island}"
        return None

    # -- lookup ---------------------------------------------------------------------------
    def has_code(self, code: str) -> bool:
        """Whether this campaign already stored this exact program text: the local mutator's
        `seen` (evolution/step.py `mutate_unseen`), one lookup on the indexed code hash."""
        with self.engine.connect() as conn:
            return conn.execute(HAS_CODE, {"cid": self.campaign_id,
                                            "h": hashing.code_hash(code)}).first() is not None

    def _cache_key(self, kind: str, raw_hash: str) -> str:
        return hashing.cache_key(self.cache_scope, kind, raw_hash, self.runner)

    def lookup(self, *, run_hash: str | None = None,
               functional_hash: str | None = None) -> tuple[int | None, EvalResult] | None:
        """The evaluation cached for this hash in this campaign's scope. In the shared scope
        the source evaluation may be another project's: its id is not handed out."""
        kind, h = ("code", run_hash) if run_hash else ("functional", functional_hash)
        if not h:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(LOOKUP, {"tk": self.task_key, "kind": kind,
                                         "h": self._cache_key(kind, h)}).first()
        if row is None:
            return None
        return (None if self.cache_scope == SHARED_SCOPE else row[0]), result_of(row)

    # -- commit ---------------------------------------------------------------------------
    def commit(self, child: Child) -> Committed:
        """Store one iteration. Every candidate-, LLM- and evaluator-supplied value is cleaned
        first (evolution/sanitize.py: the same rules on SQLite and PostgreSQL, each change noted
        in the artifacts' `sanitized`), so one bad value costs at most this evaluation. Should the
        database still refuse the row (a DataError, a value it cannot encode), the iteration is
        stored as a failed evaluation that says why, and the campaign goes on."""
        clean = clean_child(child)
        notes = clean.result.artifacts.get("sanitized")
        if notes:
            log.warning("campaign %s iteration %s: values cleaned before storage: %s",
                        self.campaign_id, child.iteration, "; ".join(notes[:5]))
        try:
            return self._write(clean)
        except (StatementError, ValueError, TypeError) as exc:
            if isinstance(exc, DBAPIError) and not isinstance(exc, DataError):
                raise  # connection, lock or schema faults are not this row's fault
            log.error("campaign %s iteration %s: the database refused the row (%s); storing it "
                      "as a failed evaluation", self.campaign_id, child.iteration,
                      type(getattr(exc, "orig", None) or exc).__name__)
            return self._write(unstorable(clean, exc))

    # -- compact texts (db/blobs.py) ----------------------------------------------------------
    def _known_codes(self, conn: Connection, hashes: list[str]) -> dict[str, str]:
        with self._refs_lock:
            found = {h: self._codes[h] for h in hashes if h in self._codes}
        missing = [h for h in hashes if h not in found]
        if missing:
            stored = blobs.get_codes(conn, missing)
            with self._refs_lock:
                for h, code in stored.items():
                    self._remember_code(h, code)
            found.update(stored)
        return found

    def _encode_texts(self, child: Child) -> tuple[bytes | None, bytes | None]:
        """The prompt with the parent's and the quoted programs' code as references, the reply
        with the parent's and its own (a full rewrite quotes it). Only stored codes are referred
        to: the parent's and quoted ones are read from code_blob, the child's is put with it."""
        m = child.mutation
        if m.prompt is None and m.response is None:
            return None, None
        pairs = blobs.quoted_hashes(m.prompt) if m.prompt else []
        with self._refs_lock:   # select() has loaded the parent and the quoted programs
            ref = self._refs.get(child.parent_id) if child.parent_id is not None else None
            quoted = {h: self._codes[h] for h in pairs if h in self._codes}
        # Each block gives (with, without) a trailing newline: ask only for unknown ones.
        wanted = [h for a, b in zip(pairs[::2], pairs[1::2]) if a not in quoted
                  and b not in quoted for h in (a, b)]
        if wanted or (ref is None and child.parent_id is not None):
            with self.engine.connect() as conn:   # only for what this process has not seen
                if ref is None and child.parent_id is not None:
                    ref = self._refs_for(conn, [child.parent_id]).get(child.parent_id)
                if wanted:
                    quoted.update(self._known_codes(conn, wanted))
        parent = {hashing.code_hash(ref.code): ref.code} if ref is not None and ref.code else {}
        own = {hashing.code_hash(child.code): child.code} if child.code is not None else {}
        text_dict = self._dicts.get(blobs.TEXT)
        prompt = (None if m.prompt is None else
                  blobs.encode_text(m.prompt, {**parent, **quoted}, dictionary=text_dict))
        response = (None if m.response is None else
                    blobs.encode_text(m.response, {**parent, **own}, dictionary=text_dict))
        return prompt, response

    def _hold_codes(self, conn: Connection, program_id: int, child: Child, stored_hash: str | None,
                    prompt_z: bytes | None, response_z: bytes | None) -> None:
        """The code blobs this program refers to (its code, its texts' references) are stored
        when this transaction commits, whatever a concurrent gc (a prune) did since `_stored`
        or `_encode_texts` saw them (db/blobs.py `hold_codes`). A reference whose code this
        process no longer has (gone from the LRU meanwhile) and the database lost: the texts are
        stored plain instead."""
        codes = dict.fromkeys(blobs.ref_hashes(prompt_z) + blobs.ref_hashes(response_z))
        with self._refs_lock:
            codes = {h: self._codes.get(h) for h in codes}
        if stored_hash is not None:
            codes[stored_hash] = child.code
        if blobs.hold_codes(conn, codes):
            m = child.mutation
            conn.execute(update(Program).where(Program.id == program_id).values(
                prompt_z=None if m.prompt is None else blobs.encode_text(m.prompt, {}),
                response_z=None if m.response is None else blobs.encode_text(m.response, {})))

    def _stored(self, h: str) -> bool:
        """Whether this process knows code_blob has `h` (it loaded or committed that code): then
        the code is not even compressed. Otherwise it is compressed (~5 us) and inserted with ON
        CONFLICT DO NOTHING, which adds no bytes when the blob is there: cheaper than asking the
        database first (a connection and a read: 0.3-0.5 ms a commit on SQLite, measured by
        bench/commit_cost.py)."""
        with self._refs_lock:
            return h in self._codes

    def _dictionaries_due(self, iteration: int) -> None:
        """Once the campaign has TRAIN_AT programs: find (or train) its dictionaries."""
        if len(self._dicts) == 2 or iteration < self._next_dict_check:
            return
        self._next_dict_check = iteration + blobs.TRAIN_AT
        try:
            self._dicts = blobs.train_campaign_dictionaries(self.sessions, self.campaign_id)
        except Exception:  # compression is an optimisation: never lose a commit over it
            log.exception("campaign %s: training zstd dictionaries failed", self.campaign_id)

    def _write(self, child: Child) -> Committed:
        """One transaction of Core statements: program, the campaign row (counters and best),
        evaluation, cache entries, then the elite cells (lock order: campaign row first)."""
        r, m = child.result, child.mutation
        artifacts = dict(r.artifacts)
        if m.error and r.status == REJECTED:
            artifacts.setdefault("reason", m.error)
        prompt_z, response_z = self._encode_texts(child)   # CPU work, before the transaction
        # The row's hash addresses its code blob: the stored (cleaned) text's, which differs from
        # `child.code_hash` (the evaluated text's, kept on the evaluation) only if cleaning changed it.
        stored_hash = hashing.code_hash(child.code) if child.code is not None else None
        code_row = (None if child.code is None or self._stored(stored_hash) else
                    blobs.code_row(child.code, self._dicts.get(blobs.CODE)))
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                # The unique (campaign, iteration) key makes a redelivered iteration fail here.
                program_id = conn.execute(INSERT_PROGRAM, dict(
                    campaign_id=self.campaign_id, iteration=child.iteration, parent_id=child.parent_id,
                    island=child.island, generation=child.generation,
                    code_hash=stored_hash, kind=m.kind, model=m.model, prompt_z=prompt_z,
                    response_z=response_z, prompt_tokens=m.prompt_tokens,
                    completion_tokens=m.completion_tokens, cost_usd=m.cost_usd, extra=m.extra or {},
                    status=r.status, score=r.score, created_at=now)).scalar_one()
                if code_row is not None:   # once per distinct text: a cache hit adds no bytes
                    blobs.insert_code_rows(conn, [code_row])
                self._hold_codes(conn, program_id, child, stored_hash, prompt_z, response_z)
                placed = r.status == OK and r.score is not None and child.code is not None
                new_best = self._count(conn, child, program_id, placed)
                model_stats.record(conn, self.campaign_id, child)  # the LLM bandit's row
                if placed and self._relative is not None:
                    # Stored as features (dashboard, rebuild_elites) before the cell is computed.
                    r = replace(r, features={**r.features, **self._relative_features(conn, child)})
                evaluation_id = conn.execute(INSERT_EVALUATION, dict(
                    program_id=program_id, task_key=self.task_key, status=r.status, score=r.score,
                    metrics=r.metrics, features=r.features, artifacts=artifacts,
                    duration_s=r.duration_s, code_hash=child.code_hash,
                    functional_hash=r.functional_hash, cache=child.cache,
                    source_evaluation_id=child.cache_source_id, created_at=now)).scalar_one()
                self._record_cache(conn, child, evaluation_id)
                improved = self._place(conn, program_id, child, r.features) if placed else False
                if cells.migration_due(child.iteration, self.migration_interval):
                    migrate(conn, self.campaign_id, self.islands)
                if self.meta_interval and child.iteration and child.iteration % self.meta_interval == 0:
                    self._refresh_meta_note(conn)
                committed = Committed(program_id=program_id, improved_cell=improved,
                                      new_best=new_best, result=r, cache=child.cache)
            if stored_hash is not None:
                with self._refs_lock:
                    self._remember_code(stored_hash, child.code)
            self._dictionaries_due(child.iteration)
            return committed
        except IntegrityError:
            # This iteration was committed before (a redelivered task): report the stored one.
            with self.engine.connect() as conn:
                row = conn.execute(STORED_ITERATION, {"cid": self.campaign_id,
                                                       "it": child.iteration}).first()
            if row is None:
                with self.engine.connect() as conn:
                    if conn.execute(select(C.c.id).where(C.c.id == self.campaign_id)).first() is None:
                        raise campaign_not_found(self.campaign_id) from None  # deleted meanwhile
                raise
            return Committed(program_id=row[0], improved_cell=False, new_best=False,
                             result=result_of((None, *row[2:])), cache=row[1])

    def _refresh_meta_note(self, s: Session | Connection) -> None:
        parent = aliased(Program)
        rows = s.execute(select(Program.status, Program.score, parent.score, Program.kind,
                                Evaluation.artifacts)
                         .join(Evaluation, Evaluation.program_id == Program.id)
                         .join(parent, parent.id == Program.parent_id)
                         .where(Program.campaign_id == self.campaign_id)
                         .order_by(Program.iteration.desc()).limit(self.meta_interval)).all()
        note = build_meta_note([Outcome(st, sc, ps, kind, str((art or {}).get("reason", "")))
                                for st, sc, ps, kind, art in rows])
        note = Sanitizer().text(note, "meta_note", max_chars=20_000)  # quotes stored reasons
        s.execute(update(C).where(C.c.id == self.campaign_id).values(meta_note=note))

    def _record_cache(self, conn: Connection, child: Child, evaluation_id: int) -> None:
        """Keys: the run hash (exact source + seed) always; the functional hash only where it
        determines the score (`child.functional_reuse`); both within this store's scope."""
        r = child.result
        code_key = child.run_hash  # None when the text was not kept: no entry
        functional_key = r.functional_hash if child.functional_reuse else None
        if child.cache != CACHE_MISS:
            hit = code_key if child.cache == "code" else r.functional_hash
            if hit:
                conn.execute(CACHE_HIT, {"b_tk": self.task_key, "b_kind": child.cache,
                                          "b_h": self._cache_key(child.cache, hit)})
        if r.status not in CACHEABLE:
            return
        rows = [{"task_key": self.task_key, "kind": kind, "hash": self._cache_key(kind, h),
                 "evaluation_id": evaluation_id, "hits": 0}
                for kind, h in (("code", code_key), ("functional", functional_key)) if h]
        if rows:  # INSERT .. ON CONFLICT DO NOTHING: the first evaluation of a hash answers it
            conn.execute(self._stmts["insert_cache"], rows)

    def cell_of(self, code: str, features: dict[str, Any]) -> str:
        return cells.cell_key(cells.program_cell(code, features, self.dims))

    def _place(self, conn: Connection, program_id: int, child: Child, features: dict[str, Any]) -> bool:
        """evolution/archive.py's placement on the elite table: the program's cell, on its
        target islands, each through `offer` (replace-if-strictly-better in one statement)."""
        return elite_table.place(conn, self.campaign_id, self.islands,
                                 cell=self.cell_of(child.code, features), program_id=program_id,
                                 parent_id=child.parent_id, island=child.island,
                                 score=child.result.score, features=features)

    def _count(self, conn: Connection, child: Child, program_id: int, placed: bool) -> bool:
        """Counters (and the best program, when `placed`) in one UPDATE. True on a new best."""
        r, m = child.result, child.mutation
        seed = child.parent_id is None and m.kind == "seed"
        params: dict[str, Any] = dict(
            cid=self.campaign_id,
            d_hits=int(child.cache != CACHE_MISS),
            d_failures=int(r.status != OK),
            d_rejected=int(r.status == REJECTED),
            d_novelty=int(bool(r.artifacts.get("novelty"))),
            d_sandbox=int(child.cache == CACHE_MISS and r.status != REJECTED),
            d_tokens=m.prompt_tokens + m.completion_tokens,
            d_cost=m.cost_usd,
            d_eval_s=r.duration_s if child.cache == CACHE_MISS else 0.0,
        )
        if seed:
            params["b_seed_score"] = r.score
        if placed:
            params.update(score=r.score, pid=program_id)
        res = conn.execute(COUNTERS[seed, placed], params)
        return placed and res.scalar() == program_id

