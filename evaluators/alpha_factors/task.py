"""The alpha_factors task: evolve a cross-sectional stock-selection signal on a daily panel."""
from __future__ import annotations

import base64
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

import evoforge.evaluators.alpha_factors.data as data
import evoforge.evaluators.alpha_factors.metrics as metrics
from evoforge.evaluators.base import FINGERPRINT_KEY, FeatureDim, Resources, Stage
from evoforge.evolution.types import StageResult

HERE = Path(__file__).parent
DRIVER_SOURCE = (HERE / "harness.py").read_text()
PERIODS = ("train", "val", "test")
CHECK_FRACTIONS = (0.1, 0.25, 0.4, 0.55, 0.65, 0.72, 0.8, 0.88, 0.95)
CHECK_TAIL = 5        # rows before the cut always compared, even where segments are shorter
PROBE_DATES, PROBE_ASSETS = 320, 8
FP_VALUES = 2048                 # fingerprint budget: about this many (date, asset) ranks
FP_MIN_DATES, FP_MAX_DATES = 8, 64
FP_NAN = 255                     # fingerprint byte for "no rank" (ranks are quantised to 0..254)
ELITE_CORR = "elite_corr"

SEED_PROGRAM = '''"""Alpha factor candidate: alpha(panel) -> dates x assets array (higher = expected to outperform)."""
import numpy as np

# EVOLVE-BLOCK-START
LOOKBACK = 5
VOL_WINDOW = 20


def alpha(panel):
    close = panel["close"]
    factor = np.full(close.shape, np.nan)
    ret = np.full(close.shape, np.nan)
    ret[1:] = close[1:] / close[:-1] - 1.0
    for t in range(VOL_WINDOW, len(close)):
        past = close[t] / close[t - LOOKBACK] - 1.0
        vol = np.nanstd(ret[t - VOL_WINDOW + 1:t + 1], axis=0)
        factor[t] = -past / (vol + 1e-8)  # short-term reversal, volatility-scaled
    return factor
# EVOLVE-BLOCK-END
'''

CONTEXT = """Task: write a daily stock-selection signal (an "alpha factor").

Define alpha(panel) in plain Python with numpy (scipy is also available). `panel` is a dict of
float64 numpy arrays, each dates x assets, oldest date first: {fields}. The data: {data_desc}.
Return a float array of the same shape: row t is your score of every asset at the close of
date t; higher means you expect that asset to do better than the others over the next
{horizon} trading day(s). NaN is allowed (no view); inf is not.

Rules:
  - Row t may use only rows 0..t of the panel. The harness recomputes your factor on the history
    cut after several secret dates and compares the last rows bit for bit with the full run; any
    difference (including NaN where the full run had a number) is lookahead and makes the program
    invalid. No global statistics over the whole sample (full-sample means, ranks, z-scores).
  - Only the cross-sectional ordering on each date matters (scale and shifts per date do not).
  - Deterministic, fast: the full panel must be processed in a few seconds; prefer vectorised numpy.

Score: mean daily cross-sectional {score_metric} on the validation period ({val_desc}); the
train period is shown to you, the test period is held back. Metrics also give IC, rank IC, ICIR,
long-short (top vs bottom {quantile_pct}% of assets) annualised return and Sharpe, and turnover.
For reference: 20-day momentum has validation rank IC {mom_ic:+.4f}, 5-day reversal {rev_ic:+.4f}.
"""


class AlphaParams(BaseModel):
    data: Literal["sp500", "synthetic"] = "sp500"
    horizon_days: int = Field(1, ge=1, le=20, description="forward-return horizon")
    score_metric: Literal["rank_ic", "ic", "icir"] = "rank_ic"
    min_assets: int = Field(5, ge=3, le=1000, description="assets needed for a date to count")
    min_coverage: float = Field(0.5, ge=0.0, le=1.0, description="validation dates that must have an IC")
    quantile: float = Field(0.2, gt=0.0, le=0.5, description="long-short leg size, fraction of assets")
    val_start: str = Field("2010-01-01", description="sp500: first validation date")
    test_start: str = Field("2016-01-01", description="sp500: first test date")
    synth_dates: int = Field(1500, ge=200, le=20000)
    synth_assets: int = Field(50, ge=5, le=1000)
    synth_signal_ic: float = Field(0.05, gt=-1.0, lt=1.0)
    synth_seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _periods_ordered(self) -> "AlphaParams":
        if self.val_start >= self.test_start:
            raise ValueError("val_start must come before test_start")
        return self


class AlphaFactorsTask:
    name: ClassVar[str] = "alpha_factors"
    version: ClassVar[int] = 2   # 2: behaviour fingerprint + elite_corr feature
    Params: ClassVar[type[BaseModel]] = AlphaParams
    entrypoint: ClassVar[str] = "alpha"
    resources: ClassVar[Resources] = Resources(timeout_s=60.0, memory_mb=2048, gpu=False)
    driver: ClassVar[str | None] = DRIVER_SOURCE

    def seed_program(self, params: BaseModel) -> str:
        return SEED_PROGRAM

    def context(self, params: BaseModel) -> str:
        m = market(params)
        b = period_bounds(params)
        ref = reference_scores(params)
        desc = ("20 US large caps (skfolio S&P 500 sample), daily adjusted closes "
                f"{m.dates[0]}..{m.dates[-1]}, {len(m.dates)} dates" if params.data == "sp500" else
                f"synthetic market, {len(m.dates)} dates x {len(m.assets)} assets")
        return CONTEXT.format(
            fields=", ".join(f'"{k}"' for k in m.fields), data_desc=desc, horizon=params.horizon_days,
            score_metric=params.score_metric.replace("_", " "), quantile_pct=round(100 * params.quantile),
            val_desc=f"{m.dates[b['val'][0]]}..{m.dates[b['val'][1] - 1]}",
            mom_ic=ref["momentum"], rev_ic=ref["reversal"])

    def probe(self, params: BaseModel) -> list[dict[str, Any]]:
        return _probe_inputs(params.data)

    def stages(self, params: BaseModel) -> list[Stage]:
        return [
            Stage("probe", self.probe(params), timeout_s=20.0, memory_mb=1024),
            Stage("panel", _panel_inputs(_market_key(params)), timeout_s=self.resources.timeout_s,
                  memory_mb=self.resources.memory_mb),
        ]

    def feature_dims(self, params: BaseModel) -> list[FeatureDim]:
        # The archive bins the first one: correlation to the campaign's elites, filled in by the
        # store through relative_features(); the reference correlations are informational.
        return [FeatureDim(ELITE_CORR, 0.0, 1.0, 10), FeatureDim("corr_momentum", -1.0, 1.0, 10),
                FeatureDim("corr_reversal", -1.0, 1.0, 10)]

    def relative_features(self, params: BaseModel, fingerprint: Any,
                          elite_fingerprints: list[Any]) -> dict[str, float]:
        """elite_corr: the largest |mean daily rank correlation| (on the fingerprint dates) with
        any current elite of the island, in [0, 1]; 0 when there are no elites."""
        mine = decode_fingerprint(fingerprint)
        if mine is None:
            return {}
        return {ELITE_CORR: max_elite_corr(mine, [decode_fingerprint(f) for f in elite_fingerprints],
                                           params.min_assets)}

    def score(self, params: BaseModel, stage: Stage, outputs: list[Any]) -> StageResult:
        try:
            return self._score(params, stage, outputs)
        except Exception as exc:  # malformed outputs of any kind: invalid, never a crash
            return StageResult(valid=False, reason=f"unusable outputs: {type(exc).__name__}: {exc}"[:300])

    def _score(self, params: BaseModel, stage: Stage, outputs: list[Any]) -> StageResult:
        if not isinstance(outputs, (list, tuple)) or len(outputs) != len(stage.inputs):
            return StageResult(valid=False, reason=f"expected {len(stage.inputs)} outputs")
        probe_stage = stage.name == "probe"
        m = probe_market(params.data) if probe_stage else market(params)
        spec = stage.inputs[0]
        factor = checked_factor(outputs[0], m, spec["checks"])
        if isinstance(factor, str):
            return StageResult(valid=False, reason=factor)
        fwd = data.forward_returns(m.fields["close"], params.horizon_days)
        if probe_stage:
            pm = metrics.period_metrics(factor, fwd, min_assets=min(params.min_assets, PROBE_ASSETS),
                                        quantile=params.quantile, horizon=params.horizon_days)
            return StageResult(valid=True, combined_score=pm[params.score_metric],
                               metrics={f"probe_{k}": v for k, v in pm.items()})
        return score_panel(params, m, factor, fwd)


# ---------------------------------------------------------------------- trusted helpers
def checked_factor(out: Any, m: data.Market, check_rows: list[list[int]]) -> np.ndarray | str:
    """The full-run factor as a float array, or the reason it is unusable (shape, inf, lookahead)."""
    shape = m.fields["close"].shape
    if not isinstance(out, dict) or "factor" not in out or "checks" not in out:
        return "output is not a harness result"
    factor = np.asarray(out["factor"], dtype=np.float64)
    if factor.shape != shape:
        return f"factor has shape {factor.shape}, expected {shape}"
    if np.isinf(factor).any():
        return f"factor contains inf at {int(np.isinf(factor).any(axis=1).sum())} dates (NaN is allowed, inf is not)"
    checks = out["checks"]
    if not isinstance(checks, (list, tuple)) or len(checks) != len(check_rows):
        return "lookahead check rows missing"
    for (start, end), rows in zip(check_rows, checks):
        got = np.asarray(rows, dtype=np.float64)
        want = factor[start:end + 1]
        if got.shape != want.shape:
            return f"lookahead check rows have shape {got.shape}, expected {want.shape}"
        same = (got == want) | (np.isnan(got) & np.isnan(want))
        if not same.all():
            bad = start + int(np.argwhere(~same)[0][0])
            return (f"lookahead: the factor at {m.dates[bad]} changes when data after {m.dates[end]} "
                    "is removed, so it uses the future (or is not deterministic)")
    return factor


def score_panel(params: BaseModel, m: data.Market, factor: np.ndarray, fwd: np.ndarray) -> StageResult:
    bounds = period_bounds(params)
    out: dict[str, Any] = {}
    for period in PERIODS:
        a, b = bounds[period]
        pm = metrics.period_metrics(factor[a:b], fwd[a:b], min_assets=params.min_assets,
                                    quantile=params.quantile, horizon=params.horizon_days)
        out.update({f"{period}_{k}": v for k, v in pm.items()})
        out[f"{period}_dates"] = f"{m.dates[a]}..{m.dates[b - 1]}"
    va, vb = bounds["val"]
    if out["val_coverage"] < params.min_coverage:
        return StageResult(valid=False, metrics=out, reason=(
            f"factor has an IC on only {out['val_coverage']:.0%} of validation dates "
            f"(needs {params.min_coverage:.0%} with >= {params.min_assets} finite assets)"))
    refs = reference_factors(_market_key(params))
    features = {f"corr_{name}": metrics.mean_rank_corr(factor[va:vb], ref[va:vb], params.min_assets)
                for name, ref in refs.items()}
    out.update(features)
    fingerprint = factor_fingerprint(factor, bounds["val"], params.min_assets)
    out["ic"], out["rank_ic"] = out["val_ic"], out["val_rank_ic"]
    combined = out[f"val_{params.score_metric}"]
    if not math.isfinite(combined):
        return StageResult(valid=False, metrics=out, reason="validation score is not finite")
    return StageResult(valid=True, combined_score=combined, metrics=out, features=features,
                       artifacts={FINGERPRINT_KEY: fingerprint})


def fingerprint_rows(val: tuple[int, int], n_assets: int) -> np.ndarray:
    """The fixed validation rows a fingerprint samples: evenly spaced, about FP_VALUES values."""
    a, b = val
    n = int(np.clip(FP_VALUES // max(1, n_assets), FP_MIN_DATES, FP_MAX_DATES))
    return np.unique(np.linspace(a, b - 1, min(n, b - a)).round().astype(int))


def factor_fingerprint(factor: np.ndarray, val: tuple[int, int], min_assets: int) -> str:
    """A compact behaviour sketch: the factor's cross-sectional percentile ranks on fixed
    validation dates, quantised to one byte (FP_NAN = no rank; dates with fewer than
    `min_assets` finite values have none), as "DxA:base64"."""
    f = factor[fingerprint_rows(val, factor.shape[1])]
    n = np.isfinite(f).sum(axis=1, keepdims=True)
    with np.errstate(all="ignore"):
        pct = (metrics.rank_rows(f) - 1.0) / (n - 1.0)
    q = np.where(np.isfinite(pct) & (n >= max(2, min_assets)), np.rint(pct * (FP_NAN - 1)), FP_NAN)
    return f"{f.shape[0]}x{f.shape[1]}:" + base64.b64encode(q.astype(np.uint8).tobytes()).decode()


@lru_cache(maxsize=4096)
def _decode(fp: str) -> np.ndarray | None:
    try:
        shape, blob = fp.split(":", 1)
        d, a = (int(x) for x in shape.split("x"))
        q = np.frombuffer(base64.b64decode(blob, validate=True), dtype=np.uint8)
        if q.size != d * a:
            return None
    except (ValueError, TypeError):
        return None
    out = np.where(q == FP_NAN, np.nan, q.astype(np.float64)).reshape(d, a)
    out.flags.writeable = False
    return out


def decode_fingerprint(fp: Any) -> np.ndarray | None:
    """The ranks of a fingerprint as a dates x assets float array (NaN = no rank), or None."""
    return _decode(fp) if isinstance(fp, str) else None


def max_elite_corr(mine: np.ndarray, elites: list[np.ndarray | None], min_assets: int) -> float:
    """max over elites of |mean over dates of the rank correlation| (dates where fewer than
    `min_assets` assets have both ranks are skipped; an elite with none contributes 0)."""
    others = [e for e in elites if e is not None and e.shape == mine.shape]
    if not others:
        return 0.0
    stack = np.stack(others)                                    # elites x dates x assets
    a = np.broadcast_to(mine, stack.shape).reshape(-1, mine.shape[1])
    b = stack.reshape(-1, mine.shape[1])
    both = np.isfinite(a) & np.isfinite(b)
    c = metrics.row_corr(np.where(both, a, np.nan), b)
    c[both.sum(axis=1) < max(2, min_assets)] = np.nan
    c = c.reshape(len(others), mine.shape[0])
    ok = np.isfinite(c)
    with np.errstate(all="ignore"):
        mean = np.where(ok.any(axis=1), np.where(ok, c, 0.0).sum(axis=1) / ok.sum(axis=1), 0.0)
    return round(float(np.clip(np.abs(mean).max(), 0.0, 1.0)), 6)


def _market_key(params: BaseModel) -> tuple:
    if params.data == "sp500":
        return ("sp500",)
    return ("synthetic", params.synth_dates, params.synth_assets, params.synth_signal_ic, params.synth_seed)


def market(params: BaseModel) -> data.Market:
    return _market(_market_key(params))


def _market(key: tuple) -> data.Market:
    if key[0] == "sp500":
        return data.sp500_panel()
    _, n_dates, n_assets, ic, seed = key
    return data.synthetic_market(n_dates, n_assets, signal_ic=ic, seed=seed)


def probe_market(kind: str) -> data.Market:
    """A small fixed synthetic panel with the same fields as the real data of `kind`."""
    m = data.synthetic_market(PROBE_DATES, PROBE_ASSETS, signal_ic=0.1, seed=12345)
    if kind == "sp500":
        return data.Market(m.dates, m.assets, {"close": m.fields["close"]})
    return m


def check_rows(n_dates: int) -> list[list[int]]:
    """[start, end] row ranges compared after cutting the history at `end`: consecutive
    segments that cover every row, each reaching back at least CHECK_TAIL rows."""
    ends = sorted(e for e in {int(f * n_dates) for f in CHECK_FRACTIONS} | {n_dates - 2} if 0 <= e < n_dates - 1)
    out, prev = [], -1
    for end in ends:
        out.append([max(0, min(prev + 1, end + 1 - CHECK_TAIL)), end])
        prev = end
    return out


def _inputs_for(m: data.Market) -> list[dict[str, Any]]:
    return [{"panel": {k: v.tolist() for k, v in m.fields.items()}, "checks": check_rows(len(m.dates))}]


@lru_cache(maxsize=4)
def _probe_inputs(kind: str) -> list[dict[str, Any]]:
    return _inputs_for(probe_market(kind))


@lru_cache(maxsize=4)
def _panel_inputs(key: tuple) -> list[dict[str, Any]]:
    return _inputs_for(_market(key))


def period_bounds(params: BaseModel) -> dict[str, tuple[int, int]]:
    """Row ranges [a, b) of the train, validation and test periods."""
    m = market(params)
    n = len(m.dates)
    if params.data == "sp500":
        v = int(np.searchsorted(np.array(m.dates), params.val_start))
        t = int(np.searchsorted(np.array(m.dates), params.test_start))
    else:
        v, t = int(0.6 * n), int(0.8 * n)
    if not 0 < v < t < n:
        raise ValueError(f"empty period: validation starts at row {v}, test at {t}, {n} rows")
    return {"train": (0, v), "val": (v, t), "test": (t, n)}


@lru_cache(maxsize=4)
def reference_factors(key: tuple) -> dict[str, np.ndarray]:
    return metrics.reference_factors(_market(key).fields["close"])


def reference_scores(params: BaseModel) -> dict[str, float]:
    """Validation score of each reference factor under these params (for the LLM context)."""
    m, refs = market(params), reference_factors(_market_key(params))
    fwd = data.forward_returns(m.fields["close"], params.horizon_days)
    a, b = period_bounds(params)["val"]
    return {name: metrics.period_metrics(ref[a:b], fwd[a:b], min_assets=params.min_assets,
                                         quantile=params.quantile,
                                         horizon=params.horizon_days)[params.score_metric]
            for name, ref in refs.items()}
