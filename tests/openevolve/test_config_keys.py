"""The OpenEvolve keys that needed an EvoForge field are mapped to it and honoured: the LLM
request settings (llm.top_p / timeout / retries / retry_delay), database.archive_size (the global
top pool), early stopping (budget.patience / min_improvement, through the embedded executor),
a second feature axis, and the diversity hook wired only where diversity is an axis."""
from __future__ import annotations

import pytest
import yaml

from evoforge.db.campaign_config import CampaignSpec, MutatorSpec
from evoforge.db.store import CampaignStore
from evoforge.evaluators.openevolve.config import map_problem
from evoforge.evaluators.openevolve.package import package_from_files
from evoforge.worker.campaign_service import Scope, create_campaign, resume
from evoforge.worker.embedded import EmbeddedExecutor
from evoforge.worker.llm import request_limits
from evoforge.worker.runtime import Runtime

SEED = "# EVOLVE-BLOCK-START\nX = 3.0\nY = 2.0\n# EVOLVE-BLOCK-END\n"
CONSTANT = "def evaluate(path):\n    return {'combined_score': 0.5, 'accuracy': 0.5}\n"
# A score that moves with the program's text (so the best does improve, by less than 1).
VARYING = ("def evaluate(path):\n    text = open(path).read()\n"
           "    return {'combined_score': (sum(map(ord, text)) % 101) / 101.0}\n")


def problem(config: dict, evaluator: str = CONSTANT):
    return map_problem(package_from_files({"initial_program.py": SEED.encode(),
                                           "evaluator.py": evaluator.encode(),
                                           "config.yaml": yaml.safe_dump(config).encode()}))


def keys(p) -> set[str]:
    return {line.split(":")[0].split(" ")[0] for line in p.unsupported}


def spec_of(p, *, iterations: int) -> CampaignSpec:
    """As `evoforge openevolve` builds it (cli/openevolve.py)."""
    return CampaignSpec(task="openevolve", params=p.task_params, program=p.seed_program, seed=1,
                        mutator=p.mutator, archive=p.archive,
                        budget={**p.budget, "max_evaluations": iterations + 1})


def test_llm_request_keys_become_mutator_fields():
    p = problem({"llm": {"api_base": "http://127.0.0.1:9/v1", "top_p": 0.95, "timeout": 45,
                         "retries": 2, "retry_delay": 5}})
    m = p.mutator
    assert (m["top_p"], m["timeout_s"], m["max_retries"], m["retry_delay_s"]) == (0.95, 45.0, 2, 5.0)
    assert not keys(p) & {"llm.top_p", "llm.timeout", "llm.retries", "llm.retry_delay"}
    assert any("llm.retry_delay 5" in n for n in p.notes)
    spec = MutatorSpec.model_validate(m)
    assert request_limits(spec) == {"timeout_s": 45.0, "max_retries": 2, "backoff_base_s": 5.0,
                                    "hard_limit_s": 300.0}
    # Out-of-range values are clamped into what the campaign accepts.
    wild = problem({"llm": {"api_base": "http://127.0.0.1:9/v1", "top_p": 7, "timeout": 10**6,
                            "retries": 99, "retry_delay": 0}}).mutator
    assert (wild["top_p"], wild["timeout_s"], wild["max_retries"], wild["retry_delay_s"]) == \
        (1.0, 3600.0, 10, 0.01)
    MutatorSpec.model_validate(wild)
    with pytest.raises(ValueError):
        problem({"llm": {"api_base": "http://127.0.0.1:9/v1", "timeout": "soon"}})


def test_request_limits_leave_room_for_every_attempt():
    assert request_limits(MutatorSpec()) == {}  # the client's defaults: 120 s, 4 retries, 300 s
    long = request_limits(MutatorSpec(timeout_s=600, max_retries=3))
    # 4 attempts of 600 s and backoffs of at most 1, 2 and 4 s between them
    assert long["hard_limit_s"] == 4 * 600 + 1 + 2 + 4
    slow = request_limits(MutatorSpec(timeout_s=10, max_retries=2, retry_delay_s=100))
    assert slow["hard_limit_s"] == 300.0 and slow["backoff_base_s"] == 100
    for bad in ({"top_p": 0}, {"top_p": 1.5}, {"timeout_s": 0.5}, {"max_retries": 11},
                {"timeout_s": float("nan")}):
        with pytest.raises(ValueError):
            MutatorSpec(**bad)


def test_llm_request_keys_without_an_llm_mean_nothing():
    p = problem({"llm": {"top_p": 0.9, "timeout": 30, "retries": 1, "retry_delay": 2}})
    assert p.mutator["kind"] == "local" and "top_p" not in p.mutator
    assert not keys(p) & {"llm.top_p", "llm.timeout", "llm.retries", "llm.retry_delay"}


def test_archive_size_is_the_global_top_pool(sessions):
    p = problem({"database": {"archive_size": 40, "elite_selection_ratio": 0.3}})
    assert p.archive["selection"] == {"top": 0.3, "global_top_k": 40}
    assert "database.archive_size" not in keys(p)
    cid = create_campaign(sessions, spec_of(p, iterations=3)).id
    store = CampaignStore(sessions, cid)
    assert store.selection_config.global_top_k == 40 and store.selection_config.top == 0.3
    assert problem({"database": {"archive_size": 10**9}}).archive["selection"]["global_top_k"] == 10_000


def test_early_stopping_keys_become_the_budget():
    p = problem({"early_stopping_patience": 5, "convergence_threshold": 0.01})
    assert p.budget == {"patience": 5, "min_improvement": 0.01}
    assert not keys(p) & {"early_stopping_patience", "convergence_threshold", "early_stopping_metric"}
    assert problem({"early_stopping_patience": 5}).budget["min_improvement"] == 0.001  # OpenEvolve's
    off = problem({"early_stopping_patience": None, "convergence_threshold": 0.1})
    assert off.budget == {} and not keys(off)
    event = problem({"early_stopping_patience": -1, "convergence_threshold": 1.0})
    assert event.budget == {} and "early_stopping_patience" in keys(event)
    other = problem({"early_stopping_patience": 3, "early_stopping_metric": "accuracy"})
    assert other.budget["patience"] == 3 and "early_stopping_metric" in keys(other)
    assert spec_of(p, iterations=9).budget.patience == 5


def test_a_campaign_whose_best_cannot_improve_stops_after_patience(sessions, fork_sandbox):
    p = problem({"early_stopping_patience": 3, "convergence_threshold": 0})
    cid = create_campaign(sessions, spec_of(p, iterations=30)).id
    out = EmbeddedExecutor(sessions, cid, sandbox=fork_sandbox).run()
    assert out["status"] == "completed" and out["evaluations"] == 4  # the seed + 3
    assert out["stop_reason"] == "patience" and out["best_score"] == 0.5 and not out["error"]
    # Asking for more evaluations gives it its patience again, counted from here.
    resume(sessions, Scope.operator(), cid, more_evaluations=10)
    out = EmbeddedExecutor(sessions, cid, sandbox=fork_sandbox).run()
    assert out["status"] == "completed" and out["evaluations"] == 7
    assert out["budget"]["patience"] == 6 and out["stop_reason"] == "patience"


def test_gains_below_min_improvement_do_not_count(sessions, fork_sandbox):
    # Scores lie in [0, 1): no gain can exceed 1, so the campaign stops after patience + 1
    # evaluations even where the best score does move.
    p = problem({"early_stopping_patience": 4, "convergence_threshold": 1.0}, VARYING)
    cid = create_campaign(sessions, spec_of(p, iterations=30)).id
    out = EmbeddedExecutor(sessions, cid, sandbox=fork_sandbox, parallel=2).run()
    assert out["status"] == "completed" and out["stop_reason"] == "patience"
    assert 5 <= out["evaluations"] <= 6  # the seed + 4 (+1 in flight when it stopped)
    # A patience the campaign never reaches: it ends on its evaluation budget.
    p = problem({"early_stopping_patience": 50}, VARYING)
    cid = create_campaign(sessions, spec_of(p, iterations=3)).id
    out = EmbeddedExecutor(sessions, cid, sandbox=fork_sandbox).run()
    assert out["evaluations"] == 4 and out["stop_reason"] == "max_evaluations"


def test_two_feature_axes_and_the_diversity_hook_only_where_it_is_an_axis(sessions, fork_sandbox):
    both = problem({"database": {"feature_dimensions": ["complexity", "diversity", "accuracy"]}})
    cid = create_campaign(sessions, spec_of(both, iterations=3)).id
    with sessions() as s:
        from evoforge.db.models import Campaign
        dims = [d["name"] for d in s.get(Campaign, cid).config["archive"]["dims"]]
    assert dims == ["code_size", "diversity", "accuracy"]
    assert Runtime.for_campaign(sessions, cid, sandbox=fork_sandbox).store._relative is not None

    plain = problem({"database": {"feature_dimensions": ["accuracy"]}})
    cid = create_campaign(sessions, spec_of(plain, iterations=3)).id
    assert Runtime.for_campaign(sessions, cid, sandbox=fork_sandbox).store._relative is None
    out = EmbeddedExecutor(sessions, cid, sandbox=fork_sandbox).run()
    assert out["status"] == "completed" and out["evaluations"] == 4
