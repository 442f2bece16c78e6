"""The meta note: a short summary of what recently improved and what failed, shown in prompts.

Pure and deterministic: it reads plain rows of recent outcomes, so any store can refresh it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    status: str
    score: float | None
    parent_score: float | None
    kind: str
    reason: str = ""


def build_meta_note(outcomes: list[Outcome], *, max_reasons: int = 3) -> str:
    if not outcomes:
        return ""
    n = len(outcomes)
    statuses = Counter(o.status for o in outcomes)
    improved = [o for o in outcomes if o.status == "ok" and o.score is not None
                and o.parent_score is not None and o.score > o.parent_score]
    lines = [f"Over the last {n} attempts: " + ", ".join(f"{k} {v}" for k, v in statuses.most_common()) + "."]
    if improved:
        kinds = Counter(o.kind for o in improved)
        best = max(improved, key=lambda o: o.score - o.parent_score)
        lines.append(f"{len(improved)} improved on their parent (largest gain {best.score - best.parent_score:+.4g}, "
                     f"by {best.kind}); edits that improved: " + ", ".join(f"{k} x{v}" for k, v in kinds.most_common(3)) + ".")
    else:
        lines.append("None improved on its parent: try a different idea rather than small tweaks.")
    reasons = Counter(o.reason.splitlines()[0][:160] for o in outcomes if o.status != "ok" and o.reason)
    if reasons:
        lines.append("Most common failures: " + "; ".join(f"{r} (x{c})" for r, c in reasons.most_common(max_reasons)) + ".")
    return "\n".join(lines)
