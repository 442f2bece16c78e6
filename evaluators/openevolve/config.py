"""OpenEvolve problem files -> an EvoForge campaign description (plain data).

`load_problem(initial_program, evaluator, config)` reads the three files (the evaluator is parsed
with `ast`, never imported here: it executes candidate code, so it only ever runs in the
sandbox) and maps the config's keys. Every key that is not mapped is reported in
`Problem.unsupported` ("section.key: why"); nothing is silently ignored. Secret-looking keys
(`llm.api_key`, headers, ...) are dropped before anything reads the config (redact.py) and only
their paths are reported (`Problem.ignored_secrets`); which files go into the sandbox is
files.py's rule (`Problem.shipped`, `Problem.skipped`).

The result is plain data for the caller (the CLI) to turn into a `CampaignSpec`:
`task_params` (OpenEvolveParams fields), `mutator`, `archive`, `parallel`, `seed`,
`max_iterations`.
"""
from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from evoforge.evaluators.openevolve.files import ship_files
from evoforge.evaluators.openevolve.redact import drop_secrets
from evoforge.evaluators.textfile import read_text_file

KEY_SOURCE = "keys come from the environment: EVOFORGE_LLM_API_KEY or OPENAI_API_KEY"


@dataclass
class Problem:
    task_params: dict[str, Any]
    seed_program: str
    mutator: dict[str, Any]
    archive: dict[str, Any]
    parallel: int | None = None
    seed: int | None = None
    max_iterations: int | None = None
    unsupported: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files_hash: str = ""
    skipped: list[str] = field(default_factory=list)        # "name (reason)": left out
    ignored_secrets: list[str] = field(default_factory=list)  # config keys dropped unread

    @property
    def shipped(self) -> list[str]:
        """The names of the files shipped into the sandbox."""
        return list(self.task_params["files"])


def evaluator_functions(source: str) -> set[str]:
    """Top-level callables the evaluator defines (by name), without running it."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in cfg.items()}


def load_problem(initial_program: str | Path, evaluator: str | Path,
                 config: str | Path | None = None, *, llm_base_url: str | None = None,
                 include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Problem:
    """Read and map the problem; `include`/`exclude` are globs that add files to (or remove
    them from) what is shipped (files.py). Raises TextFileError, ValueError, SyntaxError."""
    initial_program, evaluator = Path(initial_program), Path(evaluator)
    seed_program = read_text_file(initial_program)
    source = read_text_file(evaluator)
    raw: dict[str, Any] = {}
    if config is not None:
        try:
            raw = yaml.safe_load(read_text_file(config)) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{config}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{config}: expected a mapping at the top level")
    ignored_secrets = drop_secrets(raw)
    notes: list[str] = []
    unsupported: list[str] = []
    seen: set[str] = set()

    def take(section: dict[str, Any], key: str, prefix: str, default: Any = None) -> Any:
        seen.add(prefix + key)
        return section.get(key, default)

    def sub(name: str) -> dict[str, Any]:
        seen.add(name)
        val = raw.get(name) or {}
        if not isinstance(val, dict):
            raise ValueError(f"config key {name!r} must be a mapping")
        return val

    llm, prompt, db, ev = sub("llm"), sub("prompt"), sub("database"), sub("evaluator")

    # -- evaluator ------------------------------------------------------------------------------
    defined = evaluator_functions(source)
    cascade = bool(take(ev, "cascade_evaluation", "evaluator.", True))
    thresholds = take(ev, "cascade_thresholds", "evaluator.", [0.5, 0.75, 0.9])
    thresholds = [float(t) for t in (thresholds or [])]
    if cascade and "evaluate_stage1" in defined:
        stages = ["evaluate_stage1"]
        if "evaluate_stage2" in defined and thresholds:
            stages.append("evaluate_stage2")
            if "evaluate_stage3" in defined and len(thresholds) >= 2:
                stages.append("evaluate_stage3")
        if not thresholds:
            notes.append("evaluator.cascade_thresholds is empty: only evaluate_stage1 runs")
    else:
        if "evaluate" not in defined:
            raise ValueError(f"{evaluator} defines no evaluate(program_path)"
                             + (" (cascade_evaluation is false)" if "evaluate_stage1" in defined else ""))
        stages = ["evaluate"]
        if cascade and config is not None and "cascade_evaluation" in ev:
            notes.append("cascade_evaluation is true but the evaluator has no evaluate_stage1: "
                         "evaluate() is used (as OpenEvolve does)")
    timeout_s = float(take(ev, "timeout", "evaluator.", 300))
    mem = take(ev, "memory_limit_mb", "evaluator.")
    parallel = take(ev, "parallel_evaluations", "evaluator.")
    if take(ev, "use_llm_feedback", "evaluator.", False):
        unsupported.append("evaluator.use_llm_feedback: LLM feedback on code is not implemented")
    if take(ev, "enable_artifacts", "evaluator.", True) is False:
        unsupported.append("evaluator.enable_artifacts=false: artifacts are always kept")
    shipment = ship_files(evaluator, source, config=Path(config) if config is not None else None,
                          include=include, exclude=exclude)
    files = shipment.files

    # -- prompt ---------------------------------------------------------------------------------
    context = take(prompt, "system_message", "prompt.") or take(llm, "system_message", "llm.") or ""
    if context in ("system_message",):  # OpenEvolve's placeholder default
        context = ""
    selection: dict[str, Any] = {}
    if "num_top_programs" in prompt:
        selection["top_k"] = int(take(prompt, "num_top_programs", "prompt."))
    if "num_diverse_programs" in prompt:
        selection["diverse"] = int(take(prompt, "num_diverse_programs", "prompt."))
    if take(prompt, "include_artifacts", "prompt.", True) is False:
        unsupported.append("prompt.include_artifacts=false: the parent's artifacts are always shown")
    if "use_template_stochasticity" in prompt:
        take(prompt, "use_template_stochasticity", "prompt.")
        notes.append("prompt.use_template_stochasticity: EvoForge always varies its templates")

    # -- database -------------------------------------------------------------------------------
    archive: dict[str, Any] = {}
    islands = take(db, "num_islands", "database.")
    if islands is not None:
        archive["islands"] = int(islands)
    mig = take(db, "migration_interval", "database.")
    if mig is not None:
        # OpenEvolve counts generations per island; EvoForge counts evaluations campaign-wide.
        archive["migration_interval"] = int(mig) * int(islands or 5)
        notes.append(f"database.migration_interval {mig} generations -> every "
                     f"{archive['migration_interval']} evaluations")
    ratios = {"exploitation_ratio": "exploit", "exploration_ratio": "explore",
              "elite_selection_ratio": "top"}
    for key, ours in ratios.items():
        if key in db:
            selection[ours] = float(take(db, key, "database."))
    if selection:
        archive["selection"] = selection
    feature_metrics: list[str] = []
    dims = take(db, "feature_dimensions", "database.")
    for d in dims or []:
        if d == "complexity":
            continue  # EvoForge's code_size axis
        if d == "diversity":
            unsupported.append("database.feature_dimensions 'diversity': no diversity axis "
                               "(EvoForge uses code size + MinHash novelty instead)")
            continue
        feature_metrics.append(str(d))
    if len(feature_metrics) > 1:
        unsupported.append(f"database.feature_dimensions {feature_metrics[1:]}: one custom "
                           "feature axis is supported")
    bins = take(db, "feature_bins", "database.")
    if isinstance(bins, dict):
        bins = max(bins.values()) if bins else None
        notes.append("database.feature_bins per dimension: the largest is used for all axes")
    if bins is not None:
        archive["bins"] = int(bins)
    for key in ("population_size", "archive_size"):
        if key in db:
            take(db, key, "database.")
            unsupported.append(f"database.{key}: no population cap (MAP-Elites keeps one elite "
                               "per cell and island; every program stays in the database)")
    seed = take(db, "random_seed", "database.")

    # -- llm ------------------------------------------------------------------------------------
    models: list[dict[str, Any]] = []
    for key in ("primary_model", "secondary_model"):
        name = take(llm, key, "llm.")
        weight = take(llm, key + "_weight", "llm.")
        if name:
            models.append({"name": str(name), "weight": float(weight if weight is not None else 1.0)})
    for m in take(llm, "models", "llm.") or []:
        if isinstance(m, dict) and m.get("name"):
            models.append({"name": str(m["name"]), "weight": float(m.get("weight", 1.0))})
            extra = sorted(set(m) - {"name", "weight"})
            if extra:
                unsupported.append(f"llm.models[{m['name']}].{','.join(extra)}: per-model settings")
    for key in ("evaluator_models",):
        if llm.get(key):
            take(llm, key, "llm.")
            unsupported.append("llm.evaluator_models: LLM feedback on code is not implemented")
    config_base = take(llm, "api_base", "llm.")
    base_url = llm_base_url or config_base
    mutator: dict[str, Any]
    if base_url:
        mutator = {"kind": "llm", "base_url": str(base_url), "models": models or [{"name": "default", "weight": 1.0}]}
        if llm_base_url and llm.get("api_base"):
            notes.append(f"--llm-base-url {llm_base_url} overrides llm.api_base {llm['api_base']}")
        if "temperature" in llm:
            mutator["temperature"] = float(take(llm, "temperature", "llm."))
        if "max_tokens" in llm:
            mutator["max_tokens"] = int(take(llm, "max_tokens", "llm."))
    else:
        mutator = {"kind": "local"}
        notes.append("the config has no llm.api_base: using EvoForge's local AST mutator (no LLM)")
    diff = take(raw, "diff_based_evolution", "", True)
    mutator["diff_mode"] = bool(diff)
    if seed is None:
        seed = take(raw, "random_seed", "", None)
    else:
        take(raw, "random_seed", "")

    # -- top level ------------------------------------------------------------------------------
    max_iterations = take(raw, "max_iterations", "")
    lang = take(raw, "language", "")
    if lang not in (None, "python"):
        unsupported.append(f"language: {lang!r} (only Python candidates run)")
    suffix = take(raw, "file_suffix", "", ".py")
    if suffix != ".py":
        unsupported.append(f"file_suffix: {suffix!r} (only .py)")
    if take(raw, "log_level", "") is not None:
        notes.append("log_level: use evoforge -v / -vv")
    if take(raw, "enforce_evolve_blocks", "", None) is False:
        unsupported.append("enforce_evolve_blocks=false: EvoForge always enforces EVOLVE-BLOCKs")

    # -- everything else is reported ------------------------------------------------------------
    sections = {"llm": llm, "prompt": prompt, "database": db, "evaluator": ev}
    reasons = {
        "checkpoint_interval": "not needed: every program is committed to the database as it is evaluated",
        "llm.top_p": "not sent", "llm.timeout": "EvoForge's LLM client has its own hard limit (300 s)",
        "llm.retries": "EvoForge retries transient errors itself", "llm.retry_delay": "see llm.retries",
        "evaluator.max_retries": "an evaluation that fails is a recorded failure, not retried",
        "database.similarity_threshold": "embedding novelty is not implemented",
        "database.embedding_model": "embedding novelty is not implemented",
    }
    for key, val in raw.items():
        if key not in seen:
            unsupported.append(f"{key}: {reasons.get(key, 'not supported')}")
    for name, section in sections.items():
        for key in section:
            full = f"{name}.{key}"
            if full not in seen and key not in ("name",):
                unsupported.append(f"{full}: {reasons.get(full, 'not supported')}")
    if mem is not None:
        notes.append(f"evaluator.memory_limit_mb {mem} -> sandbox memory limit")

    params = {"evaluator": evaluator.name, "files": files, "stages": stages,
              "thresholds": thresholds if len(stages) > 1 else [], "timeout_s": timeout_s, "context": str(context),
              "feature_metrics": feature_metrics[:1], "feature_bins": int(bins or 10),
              "memory_mb": int(mem) if mem else 2048}
    digest = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()[:12]
    return Problem(task_params=params, seed_program=seed_program,
                   mutator=mutator, archive=archive,
                   parallel=int(parallel) if parallel is not None else None,
                   seed=int(seed) if seed is not None else None,
                   max_iterations=int(max_iterations) if max_iterations is not None else None,
                   unsupported=unsupported, notes=notes, files_hash=digest,
                   skipped=shipment.skipped, ignored_secrets=ignored_secrets)
