"""Which model answers the next mutation: a weighted ensemble, rests for failing models, an
optional upper-confidence bandit by improvement per cost, and the price table behind `cost_usd`.

What the bandit learns is an `ArmStats` per model. A worker does not keep it: the store's commit
adds each outcome (`ArmStats.of_outcome`) to the campaign's row of that model in the database,
and the mutator `load`s the campaign's rows before every choice, so 1 or N workers (threads or
Celery processes) choose alike. Rests stay in the process: they are about an endpoint's health
right now, which each worker learns with its own next call.

Pure logic: the clock is injected and every random choice takes the caller's `random.Random`,
so a seeded run picks the same models. Thread-safe: parallel workers share one `Ensemble`.
"""
from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping


@dataclass(frozen=True)
class ModelSpec:
    name: str
    weight: float = 1.0


def parse_model_spec(spec: str) -> ModelSpec:
    """`NAME[:WEIGHT]`. The weight is the part after the last colon when it is a number, so
    `llama3:8b` and `meta-llama/llama-3-8b:free` stay whole names; write `qwen:7:1` for a name
    that itself ends in `:<number>`."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty model name")
    name, sep, tail = spec.rpartition(":")
    if sep and name:
        try:
            weight = float(tail)
        except ValueError:
            return ModelSpec(spec, 1.0)
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"model weight must be a positive number: {spec!r}")
        return ModelSpec(name, weight)
    return ModelSpec(spec, 1.0)


def parse_model_specs(specs: Iterable[str]) -> list[ModelSpec]:
    out: dict[str, ModelSpec] = {}
    for s in specs:
        m = parse_model_spec(s)
        if m.name in out:
            raise ValueError(f"model {m.name!r} given twice")
        out[m.name] = m
    if not out:
        raise ValueError("at least one model is needed")
    return list(out.values())


# --------------------------------------------------------------------------- prices

@dataclass(frozen=True)
class Price:
    """USD per one million tokens."""

    prompt_per_m: float
    completion_per_m: float


class PriceTable:
    """Per-model prices. A model not in the table costs `default` (zero: a local server)."""

    def __init__(self, prices: Mapping[str, Price] | None = None, default: Price = Price(0.0, 0.0)):
        self._prices = dict(prices or {})
        self.default = default

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object]) -> "PriceTable":
        """`{"gpt-4o": [2.5, 10]}` or `{"gpt-4o": {"prompt": 2.5, "completion": 10}}`."""
        prices = {}
        for name, v in raw.items():
            if isinstance(v, Mapping):
                p, c = v.get("prompt", v.get("input")), v.get("completion", v.get("output"))
            else:
                p, c = v  # type: ignore[misc]
            prices[name] = _price(float(p), float(c), name)
        return cls(prices)

    @classmethod
    def parse(cls, specs: Iterable[str]) -> "PriceTable":
        """`MODEL=PROMPT/COMPLETION` (USD per 1M tokens), e.g. `gpt-4o-mini=0.15/0.6`."""
        prices = {}
        for s in specs:
            name, sep, rest = s.rpartition("=")
            p, sep2, c = rest.partition("/")
            if not sep or not sep2 or not name:
                raise ValueError(f"price must look like MODEL=PROMPT/COMPLETION: {s!r}")
            prices[name.strip()] = _price(float(p), float(c), name)
        return cls(prices)

    def price(self, model: str) -> Price:
        return self._prices.get(model, self.default)

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        p = self.price(model)
        return (prompt_tokens * p.prompt_per_m + completion_tokens * p.completion_per_m) / 1e6

    def __contains__(self, model: str) -> bool:
        return model in self._prices


def _price(p: float, c: float, name: str) -> Price:
    if not (math.isfinite(p) and math.isfinite(c)) or p < 0 or c < 0:
        raise ValueError(f"price for {name!r} must be finite and >= 0")
    return Price(p, c)


# --------------------------------------------------------------------------- ensemble

@dataclass(frozen=True)
class ArmStats:
    """What the bandit knows of one model: evaluated outcomes (`pulls`), how many of them were
    valid programs, the summed improvement over the parent, and the spend (USD, or millions of
    tokens for a free model)."""

    pulls: int = 0
    valid: int = 0
    improvement: float = 0.0
    spend: float = 0.0

    @classmethod
    def of_outcome(cls, improvement: float, cost_usd: float, tokens: int = 0,
                   valid: bool = True) -> "ArmStats":
        """One outcome as an increment: improvement = max(0, child - parent score)."""
        gain = max(0.0, float(improvement)) if math.isfinite(improvement) else 0.0
        spend = cost_usd if cost_usd > 0 else max(0, tokens) / 1e6
        return cls(pulls=1, valid=int(bool(valid)), improvement=gain, spend=spend)

    def __add__(self, other: "ArmStats") -> "ArmStats":
        return ArmStats(self.pulls + other.pulls, self.valid + other.valid,
                        self.improvement + other.improvement, self.spend + other.spend)


def improvement_of(parent_score: float | None, score: float | None, ok: bool) -> float:
    """The bandit's gain of one outcome: how much a valid child beat its parent (never < 0)."""
    if not ok or score is None or parent_score is None:
        return 0.0
    return max(0.0, score - parent_score)


@dataclass
class _Arm:
    spec: ModelSpec
    failures: int = 0            # consecutive
    rested_until: float = 0.0
    learned: ArmStats = ArmStats()
    stats: dict[str, int] = field(default_factory=lambda: {"calls": 0, "failures": 0})


class Ensemble:
    """Weighted model choice with rests and an optional UCB bandit.

    - `choose(rng)` picks among models that are not resting; when all rest, the one whose rest
      ends first (a choice never blocks).
    - `report_failure(model)` rests it for `cooldown_s`, doubled per consecutive failure up to
      `max_cooldown_s`; `report_success(model)` clears that.
    - With `bandit=True`, an upper-confidence rule on the models' `ArmStats` (`load` them from
      the database, or `record_outcome` one by one): the share of valid programs plus the
      improvement per cost (USD, or tokens when the model is free), scaled to the best model's,
      plus the exploration bonus. Untried models go first, weights break ties. A model whose
      replies never make a valid program falls behind one whose replies do, even before any
      model has improved on its parent.
    """

    def __init__(self, models: Iterable[ModelSpec | str], *, prices: PriceTable | None = None,
                 cooldown_s: float = 30.0, max_cooldown_s: float = 600.0, bandit: bool = False,
                 exploration: float = 1.0, clock: Callable[[], float] = time.monotonic):
        specs = [parse_model_spec(m) if isinstance(m, str) else m for m in models]
        if not specs:
            raise ValueError("at least one model is needed")
        if len({s.name for s in specs}) != len(specs):
            raise ValueError("a model is given twice")
        self._arms = {s.name: _Arm(s) for s in specs}
        self.prices = prices or PriceTable()
        self.cooldown_s, self.max_cooldown_s = cooldown_s, max_cooldown_s
        self.bandit, self.exploration = bandit, exploration
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def models(self) -> list[str]:
        return list(self._arms)

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        return self.prices.cost_usd(model, prompt_tokens, completion_tokens)

    def resting(self) -> list[str]:
        now = self._clock()
        with self._lock:
            return [n for n, a in self._arms.items() if a.rested_until > now]

    def choose(self, rng: random.Random) -> str:
        now = self._clock()
        with self._lock:
            ready = [a for a in self._arms.values() if a.rested_until <= now]
            if not ready:
                return min(self._arms.values(), key=lambda a: a.rested_until).spec.name
            if self.bandit:
                return self._ucb(ready, rng)
            return _weighted(ready, rng)

    def _ucb(self, ready: list[_Arm], rng: random.Random) -> str:
        untried = [a for a in ready if a.learned.pulls == 0]
        if untried:
            return _weighted(untried, rng)
        rates = {a.spec.name: a.learned.improvement / max(a.learned.spend, 1e-12) for a in ready}
        scale = max((abs(r) for r in rates.values()), default=0.0) or 1.0
        total = sum(a.learned.pulls for a in ready)
        best, best_val = [], -math.inf
        for a in ready:
            s = a.learned
            val = s.valid / s.pulls + rates[a.spec.name] / scale + self.exploration * math.sqrt(
                2 * math.log(total) / s.pulls)
            if val > best_val + 1e-12:
                best, best_val = [a], val
            elif abs(val - best_val) <= 1e-12:
                best.append(a)
        return _weighted(best, rng)

    def report_success(self, model: str) -> None:
        with self._lock:
            a = self._arms.get(model)
            if a is not None:
                a.failures, a.rested_until = 0, 0.0
                a.stats["calls"] += 1

    def report_failure(self, model: str) -> float:
        """Rest `model`; returns the rest length in seconds."""
        with self._lock:
            a = self._arms.get(model)
            if a is None:
                return 0.0
            a.failures += 1
            a.stats["calls"] += 1
            a.stats["failures"] += 1
            rest = min(self.max_cooldown_s, self.cooldown_s * 2 ** (a.failures - 1))
            a.rested_until = self._clock() + rest
            return rest

    def record_outcome(self, model: str, improvement: float, cost_usd: float,
                       tokens: int = 0, valid: bool = True) -> None:
        """Feed the bandit one evaluated outcome: `improvement` = max(0, child - parent score)."""
        with self._lock:
            a = self._arms.get(model)
            if a is not None:
                a.learned = a.learned + ArmStats.of_outcome(improvement, cost_usd, tokens, valid)

    def load(self, learned: Mapping[str, ArmStats]) -> None:
        """Replace what the bandit knows with `learned` (the campaign's rows in the database);
        a model without a row is untried."""
        with self._lock:
            for name, a in self._arms.items():
                a.learned = learned.get(name, ArmStats())

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Per-model counters for run summaries and dashboards."""
        now = self._clock()
        with self._lock:
            return {n: {"weight": a.spec.weight, "calls": a.stats["calls"],
                        "failures": a.stats["failures"], "pulls": a.learned.pulls,
                        "valid": a.learned.valid, "improvement": a.learned.improvement,
                        "spend": a.learned.spend,
                        "resting_s": max(0.0, a.rested_until - now)}
                    for n, a in self._arms.items()}


def _weighted(arms: list[_Arm], rng: random.Random) -> str:
    if len(arms) == 1:
        return arms[0].spec.name
    total = sum(a.spec.weight for a in arms)
    x = rng.random() * total
    for a in arms:
        x -= a.spec.weight
        if x < 0:
            return a.spec.name
    return arms[-1].spec.name
