"""Which model answers the next mutation: a weighted ensemble, rests for failing models, an
optional upper-confidence bandit by improvement per cost, and the price table behind `cost_usd`.

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

@dataclass
class _Arm:
    spec: ModelSpec
    failures: int = 0            # consecutive
    rested_until: float = 0.0
    pulls: int = 0               # outcomes recorded for the bandit
    improvement: float = 0.0
    spend: float = 0.0           # USD, or millions of tokens for free models
    stats: dict[str, int] = field(default_factory=lambda: {"calls": 0, "failures": 0})


class Ensemble:
    """Weighted model choice with rests and an optional UCB bandit.

    - `choose(rng)` picks among models that are not resting; when all rest, the one whose rest
      ends first (a choice never blocks).
    - `report_failure(model)` rests it for `cooldown_s`, doubled per consecutive failure up to
      `max_cooldown_s`; `report_success(model)` clears that.
    - With `bandit=True`, `record_outcome(model, improvement, cost_usd, tokens)` feeds an
      upper-confidence rule on improvement per cost (USD, or tokens when the model is free);
      untried models go first, weights break ties.
    """

    def __init__(self, models: Iterable[ModelSpec | str], *, prices: PriceTable | None = None,
                 cooldown_s: float = 30.0, max_cooldown_s: float = 600.0, bandit: bool = False,
                 exploration: float = 1.0, clock: Callable[[], float] = time.monotonic):
        specs = [parse_model_spec(m) if isinstance(m, str) else m for m in models]
        if not specs:
            raise ValueError("at least one model is needed")
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
        untried = [a for a in ready if a.pulls == 0]
        if untried:
            return _weighted(untried, rng)
        rates = {a.spec.name: a.improvement / max(a.spend, 1e-12) for a in ready}
        scale = max((abs(r) for r in rates.values()), default=0.0) or 1.0
        total = sum(a.pulls for a in ready)
        best, best_val = [], -math.inf
        for a in ready:
            val = rates[a.spec.name] / scale + self.exploration * math.sqrt(
                2 * math.log(total) / a.pulls)
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
                       tokens: int = 0) -> None:
        """Feed the bandit after evaluation: `improvement` = max(0, child - parent score)."""
        with self._lock:
            a = self._arms.get(model)
            if a is None:
                return
            a.pulls += 1
            a.improvement += max(0.0, float(improvement)) if math.isfinite(improvement) else 0.0
            a.spend += cost_usd if cost_usd > 0 else tokens / 1e6

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Per-model counters for run summaries and dashboards."""
        now = self._clock()
        with self._lock:
            return {n: {"weight": a.spec.weight, "calls": a.stats["calls"],
                        "failures": a.stats["failures"], "pulls": a.pulls,
                        "improvement": a.improvement, "spend": a.spend,
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
