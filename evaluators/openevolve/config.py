"""An OpenEvolve problem -> an EvoForge campaign description (plain data).

`map_problem(pkg)` maps an in-memory `ProblemPackage` (package.py: the files, the parsed and
redacted config, the native layout's explicit stages) to a `Problem`; `load_problem(initial_program,
evaluator, config)` is the CLI's thin wrapper that reads a directory first. The evaluator is
parsed with `ast`, never imported here: it executes candidate code, so it only ever runs in the
sandbox. Every config key is mapped to its EvoForge equivalent or reported in
`Problem.unsupported` ("section.key: why"); nothing is silently ignored (docs/openevolve.md has
the table). Secret-looking keys were dropped before anything reads the config (redact.py) and
only their paths are reported (`Problem.ignored_secrets`).

The result is plain data for the caller (the CLI, the problem service) to turn into a
`CampaignSpec`: `task_params` (OpenEvolveParams fields), `mutator`, `archive`, `parallel`,
`seed`, `max_iterations`, `budget` (early stopping, merged into the campaign's budget).
"""
from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from evoforge.evaluators.openevolve.files import ship_files
from evoforge.evaluators.openevolve.redact import drop_secrets
from evoforge.evaluators.openevolve.task import DEFAULT_MEMORY_MB, DIVERSITY
from evoforge.evaluators.textfile import read_text_file
from evoforge.evolution import pyast

OE_CONVERGENCE = 0.001   # OpenEvolve's default convergence_threshold
# llm.<key> -> (mutator field, type, lowest, highest): the LLM client's per-request settings.
LLM_REQUEST: dict[str, tuple[str, Callable[[Any], Any], float, float]] = {
    "top_p": ("top_p", float, 1e-6, 1.0), "timeout": ("timeout_s", float, 1.0, 3600.0),
    "retries": ("max_retries", int, 0, 10), "retry_delay": ("retry_delay_s", float, 0.01, 300.0)}
# As OpenEvolveParams' patterns (task.py): checked here so that an upload is refused, not stored.
SUFFIX = re.compile(r"\.[A-Za-z0-9_+-]{1,16}")
LANGUAGE = re.compile(r"[A-Za-z0-9_+#-]{1,32}")
KEY_SOURCE = "keys come from the environment: EVOFORGE_LLM_API_KEY or OPENAI_API_KEY"
OE_FEATURE_DIMENSIONS = ["complexity", "diversity"]   # OpenEvolve's default
SUFFIX_LANGUAGE = {".py": "python", ".rs": "rust", ".r": "r", ".cpp": "cpp", ".cc": "cpp",
                   ".cxx": "cpp", ".hpp": "cpp", ".c": "c", ".h": "c", ".js": "javascript",
                   ".ts": "typescript", ".go": "go", ".java": "java", ".jl": "julia",
                   ".sh": "bash", ".lua": "lua", ".m": "matlab", ".txt": "text", ".md": "text"}

# Keys that mean nothing here, with the reason shown to the user.
NO_MEANING = {
    "checkpoint_interval": "not needed: every program is committed to the database as it is evaluated",
    "log_dir": "EvoForge logs to the terminal (-v / -vv) and stores every program in the database",
    "max_tasks_per_child": "the fork-server forks a fresh process per evaluation",
    "evolution_trace": "every program, prompt and reply is stored in the database",
    "diff_pattern": "EvoForge parses SEARCH/REPLACE blocks itself (5 to 9 marker characters)",
    "database.db_path": "the campaign lives in EvoForge's database (--db)",
    "database.in_memory": "the campaign lives in EvoForge's database (--db)",
    "database.log_prompts": "prompts and replies are always stored with each program",
    "database.diversity_metric": "diversity is the MinHash distance to the island's elites",
    "database.diversity_reference_size": "diversity is measured against the island's elites",
    "database.feature_scaling_method": "feature axes have fixed edges ([0, 1] for metrics)",
    "database.artifacts_base_path": "artifacts are stored with each evaluation",
    "database.artifact_size_threshold": "artifacts are stored with each evaluation",
    "database.cleanup_old_artifacts": "artifacts are stored with each evaluation",
    "database.artifact_retention_days": "artifacts are stored with each evaluation",
    "database.similarity_threshold": "embedding novelty is not implemented (archive.novelty_threshold is MinHash's)",
    "database.embedding_model": "embedding novelty is not implemented",
    "database.novelty_llm": "embedding novelty is not implemented",
    "database.migration_rate": "ring migration copies each island's best elite",
    "evaluator.cpu_limit": "OpenEvolve does not implement it either; the sandbox limits CPU time by the timeout",
    "evaluator.distributed": "Celery workers are EvoForge's distribution (docs/service.md)",
    "evaluator.max_artifact_storage": "artifacts are capped per value (prompt.max_artifact_bytes)",
    "evaluator.use_llm_feedback": "LLM feedback on code is not implemented",
    "evaluator.llm_feedback_weight": "LLM feedback on code is not implemented",
    "llm.evaluator_models": "LLM feedback on code is not implemented",
    "llm.evaluator_system_message": "LLM feedback on code is not implemented",
    "prompt.evaluator_system_message": "LLM feedback on code is not implemented",
    "prompt.template_variations": "EvoForge varies its own templates",
    "prompt.use_meta_prompting": "OpenEvolve does not implement it; EvoForge's mutator.meta_interval is the nearest",
    "prompt.meta_prompt_weight": "see prompt.use_meta_prompting",
    "prompt.suggest_simplification_after_chars": "EvoForge's prompt has no such hints",
    "prompt.include_changes_under_chars": "EvoForge's prompt has no such hints",
    "prompt.concise_implementation_max_lines": "EvoForge's prompt has no such hints",
    "prompt.comprehensive_implementation_min_lines": "EvoForge's prompt has no such hints",
    "prompt.code_length_threshold": "EvoForge's prompt has no such hints",
    "prompt.diff_summary_max_line_len": "EvoForge's prompt shows the parent whole",
    "prompt.diff_summary_max_lines": "EvoForge's prompt shows the parent whole",
    "prompt.artifact_security_filter": "artifacts are always cleaned and escaped (evolution/sanitize.py)",
    "prompt.programs_as_changes_description": "programs are always shown as code",
    "prompt.system_message_changes_description": "programs are always shown as code",
    "prompt.initial_changes_description": "programs are always shown as code",
}
@dataclass
class Problem:
    task_params: dict[str, Any]
    seed_program: str
    mutator: dict[str, Any]
    archive: dict[str, Any]
    parallel: int | None = None
    seed: int | None = None
    max_iterations: int | None = None
    budget: dict[str, Any] = field(default_factory=dict)     # early stopping: patience, min_improvement
    unsupported: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files_hash: str = ""
    skipped: list[str] = field(default_factory=list)        # "name (reason)": left out
    ignored_secrets: list[str] = field(default_factory=list)  # config keys dropped unread

    @property
    def shipped(self) -> list[str]:
        """The paths of the files shipped into the sandbox."""
        return list(self.task_params["files"])


def evaluator_functions(source: str) -> set[str]:
    """Top-level callables the evaluator defines (by name), without running it."""
    names: set[str] = set()
    try:
        tree = pyast.parse(source)
    except (RecursionError, MemoryError):  # how CPython's parser refuses very deep nesting
        raise ValueError("the evaluator is nested too deeply to parse") from None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def language_of(language: Any, suffix: str) -> str:
    """The candidates' language: the config's `language`, else guessed from `file_suffix`."""
    if language:
        return str(language).strip().lower()
    return SUFFIX_LANGUAGE.get(suffix.lower(), suffix.lstrip(".").lower() or "python")


class _Reader:
    """The config, read key by key: every key taken is marked seen; the rest is reported."""

    def __init__(self, raw: dict[str, Any]):
        self.raw, self.seen = raw, set()

    def section(self, name: str) -> dict[str, Any]:
        self.seen.add(name)
        val = self.raw.get(name) or {}
        if not isinstance(val, dict):
            raise ValueError(f"config key {name!r} must be a mapping")
        return val

    def take(self, section: dict[str, Any], key: str, prefix: str, default: Any = None) -> Any:
        self.seen.add(prefix + key)
        return section.get(key, default)

    def leftovers(self, sections: dict[str, dict[str, Any]]) -> list[str]:
        out = [k for k in self.raw if k not in self.seen]
        for name, section in sections.items():
            out += [f"{name}.{k}" for k in section if f"{name}.{k}" not in self.seen and k != "name"]
        return out


def _num(v: Any, kind: Callable[[Any], Any], key: str) -> Any:
    try:
        return kind(v)
    except (TypeError, ValueError, OverflowError):
        try:
            text = repr(str(v)[:40])
        except ValueError:  # an int past Python's 4300-digit str() limit
            text = "a number too large"
        raise ValueError(f"config key {key}: {text} is not a number") from None


def _list(v: Any, key: str) -> list[Any]:
    """`v` when it is a list (None: empty); a ValueError else."""
    if v is None:
        return []
    if not isinstance(v, list):
        raise ValueError(f"config key {key} must be a list")
    return v


def _stages(fns: set[str], ev: dict[str, Any], r: _Reader, explicit: list[str] | None,
            where: str, has_config: bool, notes: list[str]) -> tuple[list[str], list[float]]:
    cascade = bool(r.take(ev, "cascade_evaluation", "evaluator.", True))
    thresholds = [_num(t, float, "evaluator.cascade_thresholds")
                  for t in _list(r.take(ev, "cascade_thresholds", "evaluator.", [0.5, 0.75, 0.9]),
                                 "evaluator.cascade_thresholds")]
    if explicit is not None:  # the native layout names its cascade: run exactly that
        missing = [fn for fn in explicit if fn not in fns]
        if not explicit or missing:
            raise ValueError(f"{where} does not define the stages {missing or explicit}")
        return list(explicit), thresholds[:len(explicit) - 1]
    if cascade and "evaluate_stage1" in fns:
        stages = ["evaluate_stage1"]
        if "evaluate_stage2" in fns and thresholds:
            stages.append("evaluate_stage2")
            if "evaluate_stage3" in fns and len(thresholds) >= 2:
                stages.append("evaluate_stage3")
        if not thresholds:
            notes.append("evaluator.cascade_thresholds is empty: only evaluate_stage1 runs")
        return stages, thresholds if len(stages) > 1 else []
    if "evaluate" not in fns:
        raise ValueError(f"{where} defines no evaluate(program_path)"
                         + (" (cascade_evaluation is false)" if "evaluate_stage1" in fns else ""))
    if cascade and has_config and "cascade_evaluation" in ev:
        notes.append("cascade_evaluation is true but the evaluator has no evaluate_stage1: "
                     "evaluate() is used (as OpenEvolve does)")
    return ["evaluate"], []


def _models(llm: dict[str, Any], r: _Reader, unsupported: list[str], notes: list[str]
            ) -> tuple[list[dict[str, Any]], list[str], list[int]]:
    """The ensemble, the per-model api_bases and max_tokens."""
    models: list[dict[str, Any]] = []
    bases: list[str] = []
    tokens: list[int] = []
    for key in ("primary_model", "secondary_model"):
        name = r.take(llm, key, "llm.")
        weight = r.take(llm, key + "_weight", "llm.")
        if name:
            models.append({"name": str(name), "weight": _num(weight if weight is not None else 1.0,
                                                             float, f"llm.{key}_weight")})
    for m in _list(r.take(llm, "models", "llm."), "llm.models"):
        if not (isinstance(m, dict) and m.get("name")):
            continue
        weight = _num(m.get("weight", 1.0), float, f"llm.models[{str(m['name'])[:40]}].weight")
        if weight <= 0:
            notes.append(f"llm.models[{m['name']}] has weight {weight:g}: left out")
            continue
        models.append({"name": str(m["name"]), "weight": weight})
        if m.get("api_base"):
            bases.append(str(m["api_base"]))
        if m.get("max_tokens") is not None:
            tokens.append(_num(m["max_tokens"], int, f"llm.models[{m['name']}].max_tokens"))
        extra = sorted(set(m) - {"name", "weight", "api_base", "max_tokens"})
        if extra:
            unsupported.append(f"llm.models[{m['name']}].{','.join(extra)}: per-model settings "
                               "other than api_base and max_tokens (the campaign's apply)")
    seen: set[str] = set()
    unique = []
    for m in models:  # a model named twice (primary and in models): weights add up
        if m["name"] in seen:
            next(u for u in unique if u["name"] == m["name"])["weight"] += m["weight"]
        else:
            seen.add(m["name"])
            unique.append(dict(m))
    return unique, bases, tokens


def _llm(raw_llm: dict[str, Any], r: _Reader, llm_base_url: str | None, unsupported: list[str],
         notes: list[str]) -> dict[str, Any]:
    llm = raw_llm
    models, bases, per_model_tokens = _models(llm, r, unsupported, notes)
    config_base = r.take(llm, "api_base", "llm.")
    if not config_base and bases:
        config_base = bases[0]
    others = sorted({b for b in bases if b != config_base})
    if others:
        unsupported.append(f"llm.models[].api_base {', '.join(others)}: one endpoint per campaign "
                           f"({config_base} is used for every model)")
    base_url = llm_base_url or config_base
    if not base_url:
        notes.append("the config has no llm.api_base: using EvoForge's local AST mutator (no LLM)")
        for key in ("temperature", "max_tokens", *LLM_REQUEST):
            r.take(llm, key, "llm.")
        return {"kind": "local"}
    mutator: dict[str, Any] = {"kind": "llm", "base_url": str(base_url),
                               "models": models or [{"name": "default", "weight": 1.0}]}
    if llm_base_url and config_base:
        notes.append(f"--llm-base-url {llm_base_url} overrides llm.api_base {config_base}")
    if "temperature" in llm:
        mutator["temperature"] = min(2.0, max(0.0, _num(r.take(llm, "temperature", "llm."), float,
                                                        "llm.temperature")))
    for key, (ours, kind, lo, hi) in LLM_REQUEST.items():
        if llm.get(key) is not None:
            mutator[ours] = min(hi, max(lo, _num(r.take(llm, key, "llm."), kind, f"llm.{key}")))
    if "retry_delay_s" in mutator:
        notes.append(f"llm.retry_delay {llm['retry_delay']}: the first wait before a retry, "
                     "doubled for each further one (with jitter)")
    tokens = per_model_tokens + ([_num(r.take(llm, "max_tokens", "llm."), int, "llm.max_tokens")]
                                 if "max_tokens" in llm else [])
    if tokens:
        mutator["max_tokens"] = min(200_000, max(16, max(tokens)))
        if per_model_tokens and len(set(tokens)) > 1:
            notes.append(f"per-model max_tokens {sorted(set(tokens))}: the largest, "
                         f"{mutator['max_tokens']}, is used for every model")
    return mutator


def _archive(db: dict[str, Any], r: _Reader, unsupported: list[str], notes: list[str]
             ) -> tuple[dict[str, Any], dict[str, Any], list[str], list[str], int | None]:
    """(archive, selection, feature axes, feature dimensions, seed)."""
    archive: dict[str, Any] = {}
    selection: dict[str, Any] = {}
    islands = r.take(db, "num_islands", "database.")
    if islands is not None:
        archive["islands"] = min(64, max(1, _num(islands, int, "database.num_islands")))
    mig = r.take(db, "migration_interval", "database.")
    if mig is not None:
        # OpenEvolve counts generations per island; EvoForge counts evaluations campaign-wide.
        archive["migration_interval"] = _num(mig, int, "database.migration_interval") * int(islands or 5)
        notes.append(f"database.migration_interval {mig} generations -> every "
                     f"{archive['migration_interval']} evaluations")
    for key, ours in {"exploitation_ratio": "exploit", "exploration_ratio": "explore",
                      "elite_selection_ratio": "top"}.items():
        if key in db:
            selection[ours] = _num(r.take(db, key, "database."), float, f"database.{key}")
    dims_raw = r.take(db, "feature_dimensions", "database.")
    dims = [str(d) for d in (_list(dims_raw, "database.feature_dimensions")
                             if dims_raw is not None else OE_FEATURE_DIMENSIONS)]
    axes = [d for d in dims if d != "complexity"]  # complexity: EvoForge's code_size axis
    if dims_raw is None:
        axes = []  # OpenEvolve's default diversity axis only when asked for (it costs a lookup per commit)
    if len(axes) > 2:
        unsupported.append(f"database.feature_dimensions {axes[2:]}: at most two axes besides "
                           "code size")
        axes = axes[:2]
    bins = r.take(db, "feature_bins", "database.")
    if isinstance(bins, dict):
        bins = max(_num(b, int, "database.feature_bins") for b in bins.values()) if bins else None
        notes.append("database.feature_bins per dimension: the largest is used for all axes")
    bins = min(100, max(1, _num(bins, int, "database.feature_bins"))) if bins is not None else 10
    population = r.take(db, "population_size", "database.")
    if population is not None:
        # OpenEvolve keeps at most population_size programs to draw parents from; EvoForge draws
        # from the elites, one per cell and island: bins^(axes) cells per island bound them.
        people = min(10 ** 12, _num(population, int, "database.population_size"))
        per_island = people / int(archive.get("islands", 4))
        fit = max(2, int(per_island ** (1.0 / (1 + len(axes))) + 1e-9))
        if fit < bins:
            notes.append(f"database.population_size {population}: {fit} bins per axis "
                         f"({fit ** (1 + len(axes))} cells per island) instead of {bins}")
            bins = fit
    archive["bins"] = bins
    size = r.take(db, "archive_size", "database.")
    if size is not None:  # OpenEvolve's elite archive, which its exploitation parents come from
        selection["global_top_k"] = min(10_000, max(1, _num(size, int, "database.archive_size")))
        notes.append(f"database.archive_size {size}: `top` parents come from the best "
                     f"{selection['global_top_k']} elites of all islands")
    seed = r.take(db, "random_seed", "database.")
    return archive, selection, axes, dims, seed


def _early_stopping(raw: dict[str, Any], r: _Reader, unsupported: list[str], notes: list[str]
                    ) -> dict[str, Any]:
    """OpenEvolve's early stopping -> budget.patience / budget.min_improvement."""
    patience = r.take(raw, "early_stopping_patience", "")
    threshold = r.take(raw, "convergence_threshold", "")
    metric = r.take(raw, "early_stopping_metric", "")
    if patience is None:
        return {}
    patience = _num(patience, int, "early_stopping_patience")
    if patience <= 0:
        unsupported.append(f"early_stopping_patience {patience}: OpenEvolve's event-based stop "
                           "(when the metric equals convergence_threshold) is not implemented")
        return {}
    gain = _num(threshold if threshold is not None else OE_CONVERGENCE, float, "convergence_threshold")
    if metric not in (None, "combined_score"):
        unsupported.append(f"early_stopping_metric {metric!r}: early stopping watches the "
                           "fitness (the best score), as for combined_score")
    budget = {"patience": min(10_000_000, patience), "min_improvement": min(1e12, max(0.0, gain))}
    notes.append(f"early_stopping_patience {patience}: the campaign completes after {patience} "
                 f"evaluations without the best score gaining more than {budget['min_improvement']:g}")
    return budget


def map_problem(pkg: Any, *, llm_base_url: str | None = None) -> Problem:
    """Map an in-memory problem package (package.ProblemPackage) to a `Problem`.
    Raises ValueError (or SyntaxError for an evaluator that does not parse)."""
    raw: dict[str, Any] = dict(pkg.config or {})
    r = _Reader(raw)
    notes: list[str] = []
    unsupported: list[str] = []
    llm, prompt, db, ev = r.section("llm"), r.section("prompt"), r.section("database"), r.section("evaluator")
    files: dict[str, str] = dict(pkg.files)
    if pkg.evaluator_path not in files:
        raise ValueError(f"the evaluator {pkg.evaluator_path} is not among the problem's files")
    if pkg.seed_path not in files:
        raise ValueError(f"the initial program {pkg.seed_path} is not among the problem's files")
    seed_program = files[pkg.seed_path]

    # -- evaluator ------------------------------------------------------------------------------
    fns = evaluator_functions(files[pkg.evaluator_path])
    stages, thresholds = _stages(fns, ev, r, pkg.stages, pkg.evaluator_path, bool(raw), notes)
    timeout_s = _num(r.take(ev, "timeout", "evaluator.", 300), float, "evaluator.timeout")
    mem = r.take(ev, "memory_limit_mb", "evaluator.")
    memory_mb = _num(mem, int, "evaluator.memory_limit_mb") if mem else DEFAULT_MEMORY_MB
    parallel = r.take(ev, "parallel_evaluations", "evaluator.")
    top_parallel = r.take(raw, "parallel_evaluations", "")
    parallel = parallel if parallel is not None else top_parallel
    retries = _num(r.take(ev, "max_retries", "evaluator.", 0), int, "evaluator.max_retries")
    if not ev.get("use_llm_feedback"):  # off (OpenEvolve's default): it and its weight mean nothing
        r.take(ev, "use_llm_feedback", "evaluator.")
        r.take(ev, "llm_feedback_weight", "evaluator.")
    if r.take(ev, "enable_artifacts", "evaluator.", True) is False:
        unsupported.append("evaluator.enable_artifacts=false: artifacts are always kept")

    # -- prompt ---------------------------------------------------------------------------------
    context = r.take(prompt, "system_message", "prompt.") or r.take(llm, "system_message", "llm.") or ""
    if context in ("system_message",):  # OpenEvolve's placeholder default
        context = ""
    template_dir = r.take(prompt, "template_dir", "prompt.")
    if template_dir:
        base = str(template_dir).strip("/")
        own = f"{base}/system_message.txt"
        if not context and own in files:
            context = files[own]
            notes.append(f"prompt.template_dir: {own} is the system message")
        unsupported.append(f"prompt.template_dir {template_dir!r}: OpenEvolve's user templates are "
                           "not used (EvoForge builds its own prompt; system_message.txt is)")
    selection: dict[str, Any] = {}
    for key, ours in {"num_top_programs": "top_k", "num_diverse_programs": "diverse"}.items():
        if key in prompt:
            n = _num(r.take(prompt, key, "prompt."), int, f"prompt.{key}")
            selection[ours] = min(20, max(0, n))
    if r.take(prompt, "include_artifacts", "prompt.", True) is False:
        unsupported.append("prompt.include_artifacts=false: the parent's artifacts are always shown")
    if "use_template_stochasticity" in prompt:
        r.take(prompt, "use_template_stochasticity", "prompt.")
        notes.append("prompt.use_template_stochasticity: EvoForge always varies its templates")
    artifact_chars = r.take(prompt, "max_artifact_bytes", "prompt.")

    # -- database -------------------------------------------------------------------------------
    archive, db_selection, axes, dims, seed = _archive(db, r, unsupported, notes)
    selection.update(db_selection)
    if selection:
        archive["selection"] = selection
    if DIVERSITY in axes:
        notes.append("database.feature_dimensions 'diversity': 1 - the mean MinHash similarity "
                     "to the island's elites")

    # -- llm ------------------------------------------------------------------------------------
    mutator = _llm(llm, r, llm_base_url, unsupported, notes)
    mutator["diff_mode"] = bool(r.take(raw, "diff_based_evolution", "", True))
    if "allow_full_rewrites" in raw:
        r.take(raw, "allow_full_rewrites", "")
        notes.append("allow_full_rewrites: a reply without SEARCH/REPLACE blocks is always read "
                     "as a full rewrite (kept inside the EVOLVE-BLOCKs)")
    top_seed = r.take(raw, "random_seed", "")
    seed = seed if seed is not None else top_seed

    # -- top level ------------------------------------------------------------------------------
    max_iterations = r.take(raw, "max_iterations", "")
    suffix = str(r.take(raw, "file_suffix", "", None) or Path(pkg.seed_path).suffix or ".py")
    language = language_of(r.take(raw, "language", ""), suffix)
    if not SUFFIX.fullmatch(suffix):  # the candidate's file name in the sandbox: no path
        raise ValueError(f"config key file_suffix: {suffix[:40]!r} is not a file suffix "
                         "(a dot and 1 to 16 letters, digits, _ + -)")
    if not LANGUAGE.fullmatch(language):
        raise ValueError(f"config key language: {language[:40]!r} is not a language name "
                         "(1 to 32 letters, digits, _ + # -)")
    if r.take(raw, "log_level", "") is not None:
        notes.append("log_level: use evoforge -v / -vv")
    if r.take(raw, "enforce_evolve_blocks", "", None) is False:
        notes.append("enforce_evolve_blocks=false: EvoForge always keeps edits inside the "
                     "EVOLVE-BLOCKs")
    max_code_length = r.take(raw, "max_code_length", "")
    budget = _early_stopping(raw, r, unsupported, notes)

    # -- everything else is reported ------------------------------------------------------------
    for key in r.leftovers({"llm": llm, "prompt": prompt, "database": db, "evaluator": ev}):
        unsupported.append(f"{key}: {NO_MEANING.get(key) or 'not supported'}")
    if mem is not None:
        notes.append(f"evaluator.memory_limit_mb {mem} -> sandbox memory limit")

    params: dict[str, Any] = {
        "evaluator": pkg.evaluator_path, "files": files, "stages": stages,
        "thresholds": thresholds, "timeout_s": timeout_s, "context": str(context),
        "feature_metrics": axes, "feature_dimensions": dims, "feature_bins": archive["bins"],
        "memory_mb": memory_mb, "language": language, "file_suffix": suffix,
        "retries": min(10, max(0, retries))}
    if max_code_length is not None:
        params["max_code_length"] = _num(max_code_length, int, "max_code_length")
    if artifact_chars is not None:
        params["max_artifact_chars"] = _num(artifact_chars, int, "prompt.max_artifact_bytes")
    digest = getattr(pkg, "digest", "") or hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()
    return Problem(task_params=params, seed_program=seed_program, mutator=mutator, archive=archive,
                   parallel=_num(parallel, int, "parallel_evaluations") if parallel is not None else None,
                   seed=_num(seed, int, "random_seed") if seed is not None else None,
                   max_iterations=(_num(max_iterations, int, "max_iterations")
                                   if max_iterations is not None else None),
                   budget=budget, unsupported=unsupported, notes=notes, files_hash=digest[:12],
                   skipped=list(getattr(pkg, "skipped", []) or []),
                   ignored_secrets=list(getattr(pkg, "ignored_secrets", []) or []))


def read_config(config: str | Path) -> tuple[dict[str, Any], list[str]]:
    """A config.yaml parsed, its secret-looking keys dropped (their paths returned)."""
    try:
        raw = yaml.safe_load(read_text_file(config)) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{config}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{config}: expected a mapping at the top level")
    return raw, drop_secrets(raw)


def load_problem(initial_program: str | Path, evaluator: str | Path,
                 config: str | Path | None = None, *, llm_base_url: str | None = None,
                 include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Problem:
    """The CLI's reading, then `map_problem`: the evaluator plus what its directory ships
    (files.py's rule, subdirectories included; `include`/`exclude` globs; a non-Python seed's
    suffix is included, so `sort_test/src/*.rs` goes with `initial_program.rs`), the initial
    program and the config as given. Raises TextFileError, ValueError, SyntaxError."""
    from evoforge.evaluators.openevolve.package import ProblemPackage

    initial_program, evaluator = Path(initial_program), Path(evaluator)
    seed_text = read_text_file(initial_program)
    source = read_text_file(evaluator)
    raw, ignored = read_config(config) if config is not None else ({}, [])
    suffix = str(raw.get("file_suffix") or initial_program.suffix or ".py")
    if suffix != ".py" and "/" not in suffix:
        include = (*include, f"*{suffix}")
    shipment = ship_files(evaluator, source, config=Path(config) if config is not None else None,
                          include=include, exclude=exclude)
    files = dict(shipment.files)
    files[initial_program.name] = seed_text  # what the user named, even from elsewhere
    content = {"layout": "openevolve", "seed": initial_program.name, "evaluator": evaluator.name,
               "files": files, "config": raw}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
    pkg = ProblemPackage(digest=digest, layout="openevolve", name="", seed_path=initial_program.name,
                         evaluator_path=evaluator.name, files=files, config=raw, stages=None,
                         requirements=[], skipped=shipment.skipped, ignored_secrets=ignored)
    return map_problem(pkg, llm_base_url=llm_base_url)
