"""SQLAlchemy 2.0 models: the database of every program ever tried.

Counters on `Campaign` are updated in the same transaction as the rows they count, so they are
never out of step. `Program.iteration` is unique per campaign: a redelivered task that redoes an
iteration cannot insert it twice.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer,
                        LargeBinary, String, Text, UniqueConstraint, false, func, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Project(Base):
    __tablename__ = "project"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_key"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)       # shown in listings
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)   # sha256 of the full key
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Campaign(Base):
    __tablename__ = "campaign"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"),
                                                   index=True, nullable=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    task: Mapped[str] = mapped_column(String(100), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    task_key: Mapped[str] = mapped_column(String(120), index=True)
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    parallel: Mapped[int] = mapped_column(Integer, default=1)
    islands: Mapped[int] = mapped_column(Integer, default=4)
    # One JSON document (schema_version, sandbox, mutator, archive, budget, schedule); read it
    # as db.campaign_config.CampaignConfig.load(row), never as a raw dict.
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seed_program: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")
    meta_note: Mapped[str] = mapped_column(Text, default="")  # refreshed every K evaluations
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Budget accounting. `iterations_reserved` is advanced atomically before an iteration starts.
    # `max_evaluations` is the run's limit: where the current run stops. It is the budget's
    # total (config budget.max_evaluations, the one home of the total) unless a schedule's
    # trigger (worker/schedule.py) set it to the end of the slice it opened, or a resume with
    # more evaluations raised both (worker/campaign_service.py).
    max_evaluations: Mapped[int | None] = mapped_column(Integer, nullable=True)
    iterations_reserved: Mapped[int] = mapped_column(Integer, default=0)
    tokens_reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_reserved_usd: Mapped[float] = mapped_column(Float, default=0.0)
    # Counters, updated with each committed iteration.
    evaluations: Mapped[int] = mapped_column(Integer, default=0)
    sandbox_runs: Mapped[int] = mapped_column(Integer, default=0)
    cache_hits: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    novelty_skips: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    eval_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    best_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    best_program_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    seed_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The bookkeeping campaign of ad-hoc evaluations (worker/evaluate.py): never listed.
    adhoc: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The stored problem it runs (its files are loaded from there by the worker); a problem in
    # use cannot be deleted.
    problem_id: Mapped[int | None] = mapped_column(
        ForeignKey("problem.id", ondelete="RESTRICT", name="fk_campaign_problem_id"),
        nullable=True, index=True)
    # Bumped by every write that changes the campaign's stored programs outside an iteration's
    # commit (a prune, worker/prune.py), in that write's transaction: part of the version that
    # keys the API's response caches (api/services/programs.py `_version`). Migration 0008.
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class Problem(Base):
    """A user's problem directory, content-addressed (evaluators/openevolve/package.py): one row
    per (project, digest), so uploading the same content again finds the same row. `files` holds
    what the sandbox gets (never a config or a secret-looking file); `config` the OpenEvolve-shaped
    config with secret keys dropped; `report` what was left out and why."""

    __tablename__ = "problem"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"),
                                                   index=True, nullable=True)
    digest: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    layout: Mapped[str] = mapped_column(String(20))
    seed_path: Mapped[str] = mapped_column(String(500))
    evaluator_path: Mapped[str] = mapped_column(String(500))
    files: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    stages: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    requirements: Mapped[list[Any]] = mapped_column(JSON, default=list)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# One row per content and project (open mode's problems have no project: 0 stands for it).
Index("uq_problem_project_digest", func.coalesce(Problem.project_id, 0), Problem.digest,
      unique=True)


class Program(Base):
    __tablename__ = "program"
    # The listing and lineage indexes are defined below the class (they name columns in order).
    __table_args__ = (UniqueConstraint("campaign_id", "iteration", name="uq_program_iteration"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    iteration: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("program.id", ondelete="SET NULL"),
                                                  nullable=True)
    island: Mapped[int] = mapped_column(Integer, default=0)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    # The code is in code_blob under this hash (db/blobs.py), set whenever the program has code.
    code_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(40), default="")        # how it was made
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Denormalised from the evaluation for fast sorting and listing.
    status: Mapped[str] = mapped_column(String(20), default="")
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The prompt and reply, encoded by db/blobs.py (references to code blobs, then zstd): read
    # them only through db.blobs.program_texts / decode_texts.
    prompt_z: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    response_z: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Set by prune (worker/prune.py): code, prompt and response dropped, hashes kept.
    pruned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    evaluation: Mapped["Evaluation"] = relationship(back_populates="program", uselist=False,
                                                    cascade="all, delete-orphan")


# Listing by score (api/services/programs.py): one index per filter the API offers, each in the
# order of the `score` sort (best first, ties oldest first), so every page, and every keyset page
# deep in the list, is an index range scan. No NULLS clause (SQLite has none in an index): the
# listing reads scored and unscored programs as separate segments, so the index's place for
# NULLs never matters. Children of a parent newest first (the store's recent failures of a
# parent): (parent_id, id). Migration 0007.
Index("ix_program_campaign_score", Program.campaign_id, Program.score.desc(), Program.id)
Index("ix_program_campaign_island_score", Program.campaign_id, Program.island, Program.score.desc(),
      Program.id)
Index("ix_program_campaign_status_score", Program.campaign_id, Program.status, Program.score.desc(),
      Program.id)
# Both filters on the score sort, and each filter on the iteration sort (which the unique
# (campaign_id, iteration) serves unfiltered): migration 0009.
Index("ix_program_campaign_island_status_score", Program.campaign_id, Program.island,
      Program.status, Program.score.desc(), Program.id)
Index("ix_program_campaign_status_iteration", Program.campaign_id, Program.status,
      Program.iteration)
Index("ix_program_campaign_island_iteration", Program.campaign_id, Program.island,
      Program.iteration)
Index("ix_program_campaign_island_status_iteration", Program.campaign_id, Program.island,
      Program.status, Program.iteration)
Index("ix_program_parent_id", Program.parent_id, Program.id)


class CodeBlob(Base):
    """Each distinct program text once (db/blobs.py): `hash` is evolution.hashing.code_hash,
    `data` a zstd frame (possibly with a campaign's dictionary, named in its header), `size` the
    text's UTF-8 bytes. Shared by every program, campaign and project with this text; read only
    through a program row of the reader's scope. No foreign keys: gc_code_blobs collects."""

    __tablename__ = "code_blob"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)


class ZstdDict(Base):
    """A zstd dictionary trained on one campaign's code or texts (db/blobs.py). `id` is the id
    written in the frames compressed with it. Kept after its campaign is deleted: shared code
    blobs may need it."""

    __tablename__ = "zstd_dict"
    __table_args__ = (UniqueConstraint("campaign_id", "kind", name="uq_zstd_dict_campaign_kind"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    campaign_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kind: Mapped[str] = mapped_column(String(8))          # code, text
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Evaluation(Base):
    __tablename__ = "evaluation"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("program.id", ondelete="CASCADE"), unique=True)
    task_key: Mapped[str] = mapped_column(String(120), index=True)
    status: Mapped[str] = mapped_column(String(20))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    features: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    artifacts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    code_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    functional_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cache: Mapped[str] = mapped_column(String(12), default="miss")   # miss, code, functional
    source_evaluation_id: Mapped[int | None] = mapped_column(
        ForeignKey("evaluation.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    program: Mapped[Program] = relationship(back_populates="evaluation")


class EliteCell(Base):
    """The best program of one MAP-Elites cell of one island. Replaced only by a better one."""

    __tablename__ = "elite_cell"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"),
                                             primary_key=True)
    island: Mapped[int] = mapped_column(Integer, primary_key=True)
    cell: Mapped[str] = mapped_column(String(64), primary_key=True)   # "3,7"
    program_id: Mapped[int] = mapped_column(ForeignKey("program.id", ondelete="CASCADE"))
    score: Mapped[float] = mapped_column(Float)
    features: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EvalCache(Base):
    """(task key, kind, scoped hash) -> the evaluation that answered it first.

    `hash` is `evolution.hashing.cache_key(scope, kind, raw)`: the run hash (exact source + seed)
    or the functional hash, within one tenant scope (a project, open mode, or the operator's
    shared scope: db/store.py `cache_scope`). A lookup in one project can never match another's
    rows, and rows keyed before v2 (normalised code, one global scope) never match at all."""

    __tablename__ = "eval_cache"
    task_key: Mapped[str] = mapped_column(String(120), primary_key=True)
    kind: Mapped[str] = mapped_column(String(12), primary_key=True)     # code, functional
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluation.id", ondelete="CASCADE"))
    hits: Mapped[int] = mapped_column(Integer, default=0)


class ModelStat(Base):
    """What a campaign's LLM bandit has learned about one model (evolution.ensemble.ArmStats):
    evaluated outcomes, valid programs among them, summed improvement over the parent, spend
    (USD, or millions of tokens for a free model). Added to by the store's commit, in the same
    transaction as the program it counts; read by every LLM worker before it chooses a model."""

    __tablename__ = "model_stat"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"),
                                             primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    pulls: Mapped[int] = mapped_column(Integer, default=0)
    valid: Mapped[int] = mapped_column(Integer, default=0)
    improvement: Mapped[float] = mapped_column(Float, default=0.0)
    spend: Mapped[float] = mapped_column(Float, default=0.0)


class WorkerLease(Base):
    """An iteration that a worker process is running now, and that process' last heartbeat.

    A Celery task inserts its row when it starts and deletes it when it ends (after the commit);
    a background thread in the worker refreshes `heartbeat_at` on all of the process' rows every
    few seconds. A reserved but uncommitted iteration whose only leases are stale was being run
    by a dead worker (SIGKILL, OOM, power): the sweeper re-sends it at once instead of waiting for
    the broker's visibility timeout. Times come from the workers' and sweeper's clocks (UTC).
    No foreign key: a lease may outlive its campaign for a moment; the sweeper collects leftovers.
    """

    __tablename__ = "worker_lease"
    __table_args__ = (Index("ix_worker_lease_campaign_iteration", "campaign_id", "iteration"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(200), index=True)   # host:pid:random
    campaign_id: Mapped[int] = mapped_column(Integer)
    iteration: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                   index=True)
