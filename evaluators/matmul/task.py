"""matmul: find low-rank exact decompositions of the matrix multiplication tensor <n,m,p>.

The candidate defines `decompose(n, m, p) -> (U, V, W)`. Verification is exact integer arithmetic
(verify.py). An exact decomposition of rank R scores best_known / R (1.0 = matches the record,
above 1.0 = beats the stored table). An inexact one is INVALID (status `invalid`), but its
StageResult still carries a small partial score, strictly below every exact score, falling with
the number of wrong tensor entries, so an engine that looks at invalid programs can see which
are closer; see docs/tasks/matmul.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from evoforge.evaluators.base import FeatureDim, Resources, Stage
import evoforge.evaluators.matmul.verify as verify
from evoforge.evaluators.matmul.ranks import best_known_rank
from evoforge.evolution.types import StageResult

TIMEOUT_S = 30.0


class MatmulParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(2, ge=1, le=5, description="rows of A (A is n x m), 1..5")
    m: int = Field(2, ge=1, le=5, description="columns of A = rows of B (B is m x p), 1..5")
    p: int = Field(2, ge=1, le=5, description="columns of B, 1..5")
    field: Literal["integer", "half_integer", "complex_half_integer"] = Field(
        "integer", description="coefficient set: integer (Z), half_integer (Z/2) or "
                               "complex_half_integer (Gaussian half-integers)")


def partial_score(best: int, wrong_entries: int) -> float:
    """Guidance for inexact decompositions: below best/MAX_RANK, hence below any exact score."""
    return best / verify.MAX_RANK / (1 + max(1, wrong_entries))


class MatmulTask:
    name: ClassVar[str] = "matmul"
    version: ClassVar[int] = 1
    Params: ClassVar[type[BaseModel]] = MatmulParams
    entrypoint: ClassVar[str] = "decompose"
    resources: ClassVar[Resources] = Resources(timeout_s=TIMEOUT_S, memory_mb=1024, gpu=False)
    driver: ClassVar[str | None] = None

    def seed_program(self, params: BaseModel) -> str:
        return (Path(__file__).parent / "seed.py").read_text()

    def context(self, params: BaseModel) -> str:
        n, m, p, field = params.n, params.m, params.p, params.field
        best = best_known_rank(n, m, p, field)
        grid = {"integer": "integers",
                "half_integer": "multiples of 1/2",
                "complex_half_integer": "complex numbers a+bi with a and b multiples of 1/2"}[field]
        return (
            f"Find an exact rank-R decomposition of the matrix multiplication tensor <{n},{m},{p}> "
            f"(an {n}x{m} matrix times an {m}x{p} matrix) with R as SMALL as possible. "
            f"The schoolbook algorithm has rank {n * m * p}; the best known rank in this field is "
            f"{best}.\n"
            "Define `decompose(n, m, p)` returning numpy arrays (U, V, W) of shapes (n*m, R), "
            "(m*p, R), (p*n, R) such that sum over r of the outer products "
            "U[:,r] (x) V[:,r] (x) W[:,r] equals T, where T[i*m+j, j*p+k, k*n+i] = 1 and all "
            f"other entries are 0. Entries must be exactly {grid} (field {field}); "
            "floating-point values are accepted only if they are exactly on that grid, "
            "|entry| <= 32768, R <= 1000.\n"
            "Verification is exact integer arithmetic, never a tolerance: any wrong tensor entry "
            "makes the program invalid (it keeps a tiny partial score that falls with the number "
            f"of wrong entries). An exact decomposition scores {best}/R.\n"
            "The call is deterministic given np.random's seed, which the harness sets; keep the "
            f"run well under {TIMEOUT_S:.0f} s (numpy only). Ideas: better continuous "
            "optimisation (ALS, Levenberg-Marquardt, Adam with a penalty pulling entries to the "
            "grid), smarter rounding (sparsify first, round the most confident entries, "
            "backtrack), restarts, starting from a known decomposition and removing a rank-one "
            "term, or building larger shapes from smaller ones."
        )

    def probe(self, params: BaseModel) -> list[dict[str, Any]]:
        # The full call: deterministic given the seed, so the probe is the whole evaluation.
        # decompose(n, m, p): the sandbox passes the values positionally, in this order.
        return [{"n": params.n, "m": params.m, "p": params.p}]

    def stages(self, params: BaseModel) -> list[Stage]:
        return [Stage(name="verify", inputs=self.probe(params), timeout_s=TIMEOUT_S,
                      memory_mb=self.resources.memory_mb)]

    def feature_dims(self, params: BaseModel) -> list[FeatureDim]:
        return [FeatureDim(name="sparsity", lo=0.0, hi=1.0, bins=10)]

    def score(self, params: BaseModel, stage: Stage, outputs: list[Any]) -> StageResult:
        try:
            return self._score(params, outputs)
        except Exception as exc:  # never let garbage crash the trusted side
            return StageResult(valid=False, reason=f"could not score output: {type(exc).__name__}")

    def _score(self, params: BaseModel, outputs: list[Any]) -> StageResult:
        n, m, p, field = params.n, params.m, params.p, params.field
        if not isinstance(outputs, (list, tuple)) or len(outputs) != 1:
            got = len(outputs) if isinstance(outputs, (list, tuple)) else type(outputs).__name__
            return StageResult(valid=False, reason=f"expected 1 output, got {got}")
        try:
            factors = verify.parse_factors(outputs[0], n, m, p, field)
        except verify.DecompositionError as exc:
            return StageResult(valid=False, reason=str(exc))
        result = verify.check(factors, n, m, p)
        best = best_known_rank(n, m, p, field)
        rank = factors.rank
        sparse = verify.sparsity(factors)
        metrics: dict[str, Any] = {
            "rank": rank, "exact": result.exact, "errors": result.wrong_entries,
            "abs_error": result.abs_error, "best_known_rank": best, "field": field,
            "shape": [n, m, p], "sparsity": sparse,
        }
        features = {"sparsity": sparse}
        if result.exact:
            return StageResult(valid=True, combined_score=best / rank, metrics=metrics,
                               features=features)
        return StageResult(
            valid=False, combined_score=partial_score(best, result.wrong_entries),
            metrics=metrics, features=features,
            reason=f"not exact: {result.wrong_entries} wrong tensor entries at rank {rank}")


TASK = MatmulTask()
