"""Wire the LLM mutator to a stored campaign: endpoint, ensemble, prices and a token/cost budget
reserved in the database before every call, so N parallel workers never overshoot it."""
from __future__ import annotations

from functools import partial
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from evoforge.db import model_stats
from evoforge.db.models import Campaign
from evoforge.evolution.ensemble import PriceTable
from evoforge.evolution.llm_mutator import IdeaConfig
from evoforge.worker.endpoints import resolve_target
from evoforge.worker.llm_client import build_llm_mutator
from evoforge.db.campaign_config import CampaignConfig, MutatorSpec


class DbTokenBudget:
    """`reserve_tokens(n)` claims n tokens (and their worst-case cost) with one conditional
    UPDATE; `release_tokens(n)` hands back what a call did not use."""

    def __init__(self, sessions: sessionmaker[Session], campaign_id: int, *,
                 max_tokens: int | None, max_cost_usd: float | None, usd_per_token: float):
        self.sessions, self.campaign_id = sessions, campaign_id
        self.max_tokens, self.max_cost_usd = max_tokens, max_cost_usd
        self.usd_per_token = usd_per_token

    def reserve_tokens(self, n: int) -> bool:
        cost = n * self.usd_per_token
        q = update(Campaign).where(Campaign.id == self.campaign_id)
        if self.max_tokens is not None:
            q = q.where(Campaign.tokens_reserved + n <= self.max_tokens)
        if self.max_cost_usd is not None:
            q = q.where(Campaign.cost_reserved_usd + cost <= self.max_cost_usd)
        with self.sessions.begin() as s:
            res = s.execute(q.values(tokens_reserved=Campaign.tokens_reserved + n,
                                     cost_reserved_usd=Campaign.cost_reserved_usd + cost))
            return bool(res.rowcount)

    def release_tokens(self, n: int) -> None:
        if n <= 0:
            return
        with self.sessions.begin() as s:
            s.execute(update(Campaign).where(Campaign.id == self.campaign_id).values(
                tokens_reserved=Campaign.tokens_reserved - n,
                cost_reserved_usd=Campaign.cost_reserved_usd - n * self.usd_per_token))


# The client's defaults (worker/llm_client.py), where the campaign leaves a field unset.
TIMEOUT_S, RETRIES, RETRY_DELAY_S, HARD_LIMIT_S, BACKOFF_MAX_S = 120.0, 4, 1.0, 300.0, 30.0


def request_limits(m: MutatorSpec) -> dict[str, Any]:
    """The client's per-request wait, retries and backoff; its hard limit per call (all attempts
    and the waits between them) leaves room for every attempt the campaign asks for, and is never
    below the default 300 s."""
    if m.timeout_s is None and m.max_retries is None and m.retry_delay_s is None:
        return {}
    timeout = m.timeout_s if m.timeout_s is not None else TIMEOUT_S
    retries = m.max_retries if m.max_retries is not None else RETRIES
    delay = m.retry_delay_s if m.retry_delay_s is not None else RETRY_DELAY_S
    waits = sum(min(max(BACKOFF_MAX_S, delay), delay * 2 ** n) for n in range(retries))
    return {"timeout_s": timeout, "max_retries": retries, "backoff_base_s": delay,
            "hard_limit_s": max(HARD_LIMIT_S, timeout * (retries + 1) + waits)}


def make_llm_mutator(spec: CampaignConfig, task: Any, params: Any, sessions: sessionmaker[Session],
                     campaign_id: int, *, operator_url: str | None = None) -> Any:
    """The campaign's LLM mutator. Where it calls, with which key and at which prices is decided
    by `worker.endpoints.resolve_target`: an operator endpoint by name gets its key; a stored
    base_url gets none (default deny), unless `operator_url` is that URL: the local CLI says so
    in-process at run time, never through the stored config."""
    m = spec.mutator
    target = resolve_target(m, operator_url=operator_url)
    prices = PriceTable.from_mapping({k: list(v) for k, v in target.prices.items()})
    models = [x.spec() for x in m.models] or ["default"]
    worst = max((max(prices.price(x.name).prompt_per_m, prices.price(x.name).completion_per_m)
                 for x in m.models), default=0.0) / 1e6
    budget = None
    if spec.budget.max_tokens is not None or spec.budget.max_cost_usd is not None:
        budget = DbTokenBudget(sessions, campaign_id, max_tokens=spec.budget.max_tokens,
                               max_cost_usd=spec.budget.max_cost_usd, usd_per_token=worst)
    mutator = build_llm_mutator(
        target.base_url, models, task.context(params), temperature=m.temperature,
        api_key=target.api_key, credentials=target.api_key is not None, guard=target.guard,
        max_tokens=m.max_tokens, diff_mode=m.diff_mode, budget=budget, prices=prices, bandit=m.bandit,
        ideas=IdeaConfig(threshold=m.idea_threshold) if m.ideas else None, seed=spec.seed,
        top_p=m.top_p, language=str(getattr(params, "language", None) or "python"),
        **request_limits(m))
    if m.bandit:  # the statistics live in the database: every worker learns every outcome
        mutator.learn_from(partial(model_stats.read, sessions, campaign_id))
    return mutator
