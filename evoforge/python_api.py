"""The Python API: `evolve` runs a campaign, `evaluate` scores one program (docs/python.md).

Both run in this process on the embedded engine, the same way as `evoforge openevolve` and
`evoforge run`: a problem directory is stored and mapped by the problem service, as an upload
is (worker/problem_service.py); files and source text are mapped by `load_problem`, as the CLI
maps them; the campaign service stores the campaign (worker/campaign_service.py), the
embedded executor runs it (worker/embedded.py) and candidates run in the sandbox. The caller
is the operator, like the CLI's user: the LLM URL given here (or in the config) gets the API
key from this process's environment (worker/endpoints.py), and it is never stored as trusted.

One exception to the sandbox, for trusted use only: an evaluator given as a Python callable
runs IN THIS PROCESS, UNSANDBOXED (`InProcessRunner`). It is reachable only through these
functions, never from a REST or CLI campaign spec: the stored campaign carries a placeholder
evaluator that refuses to run anywhere else, with a fresh nonce, so no other campaign shares
its evaluation cache.
"""
from __future__ import annotations

import asyncio
import html
import inspect
import os
import re
import tempfile
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Union

__all__ = ["evolve", "evaluate", "Result", "Evaluation", "InProcessRunner"]

PathLike = Union[str, "os.PathLike[str]"]
EvaluatorFn = Callable[[str], Any]
"""`fn(program_path) -> dict | EvaluationResult`: a trusted evaluator, run in this process."""

_MUTATORS = ("llm", "local")
_LLM_KEYS = {"base_url", "endpoint", "models", "temperature", "max_tokens", "ideas"}


# -- results -----------------------------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class Result:
    """What `evolve` returns: the campaign's best program and its counts.

    Attributes:
        best_code: source of the best valid program (None when no program was valid).
        best_score: its score (higher is better), None when none was valid.
        metrics: the best program's metrics, as its evaluator returned them.
        campaign_id: the stored campaign (`evoforge best ID`, the dashboard).
        status: "completed", "failed" (see `error`) or "paused" (interrupted).
        evaluations: programs evaluated, the seed included.
        failures: evaluations that did not succeed.
        cache_hits: evaluations answered from the evaluation cache.
        seed_score: the seed program's score.
        db_url: the database holding the campaign (password hidden).
        error: why the campaign failed, else None.
        problem: the stored problem's id (its content digest) when a problem directory was
            given, else None.
    """

    best_code: str | None
    best_score: float | None
    metrics: dict[str, Any]
    campaign_id: int
    status: str
    evaluations: int
    failures: int
    cache_hits: int
    seed_score: float | None
    db_url: str
    error: str | None = None
    problem: str | None = None

    def __repr__(self) -> str:
        code = ("no valid program" if self.best_code is None
                else f"best_code {len(self.best_code.splitlines())} lines")
        text = (f"Result(campaign {self.campaign_id} {self.status}: best {_num(self.best_score)} "
                f"(seed {_num(self.seed_score)}), {self.evaluations} evaluations, "
                f"{self.failures} failures, {self.cache_hits} cache hits, {code}")
        if self.error:
            text += f", error {_one_line(self.error)!r}"
        return text + ")"


@dataclass(frozen=True, repr=False)
class Evaluation:
    """What `evaluate` returns for one program.

    Attributes:
        status: "ok", or why not: "invalid", "error", "timeout", "memory", "killed".
        score: the fitness (higher is better); None when the program failed.
        metrics: the evaluator's metrics.
        artifacts: what EvoForge captured (`reason`, `stderr`, `stage`) and, under
            "evaluator", the artifacts the evaluator returned.
        duration_s: seconds spent evaluating.
    """

    status: str
    score: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def __repr__(self) -> str:
        text = f"Evaluation({self.status}, score {_num(self.score)}, metrics {self.metrics!r}"
        if not self.ok and self.artifacts.get("reason"):
            text += f", reason {_one_line(self.artifacts['reason'])!r}"
        return text + ")"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit] + "..."


# -- the trusted in-process runner -------------------------------------------------------------
class InProcessRunner:
    """The sandbox interface (`run(code, entrypoint, inputs, ...) -> RunResult`) for a trusted
    Python callable, with NO isolation: the candidate is written to a temporary file and
    `fn(path)` is called in a thread of this process. The timeout is wall-clock; a call that
    overruns it is reported as a timeout and left running in its (daemon) thread, since
    Python cannot stop a thread. Exceptions become failed runs with their traceback."""

    def __init__(self, fn: EvaluatorFn, *, suffix: str = ".py"):
        if not callable(fn):
            raise TypeError("the evaluator must be callable")
        self.fn, self.suffix = fn, suffix

    def run(self, code: str, entrypoint: str, inputs: list[dict[str, Any]], *, seed: int = 0,
            timeout_s: float = 10.0, memory_mb: int = 1024, driver: str | None = None) -> Any:
        from evoforge.evaluators.openevolve.driver import _unpack
        from evoforge.sandbox import ERROR, OK, TIMEOUT, RunResult

        t0 = time.perf_counter()
        outputs = []
        for call in inputs:
            suffix = call.get("suffix") or call.get("file_suffix") or self.suffix
            with tempfile.TemporaryDirectory(prefix="evoforge-candidate-") as tmp:
                path = os.path.join(tmp, "program" + suffix)
                Path(path).write_text(code, encoding="utf-8")
                left = max(0.0, timeout_s - (time.perf_counter() - t0))
                done, value, error = _call_with_timeout(self.fn, path, left)
            took = time.perf_counter() - t0
            if not done:
                return RunResult(TIMEOUT, duration_s=took,
                                 reason=f"the evaluator ran past its {timeout_s:g} s timeout")
            if error is not None:
                return RunResult(ERROR, duration_s=took, stderr=error[1],
                                 reason=_one_line(f"{type(error[0]).__name__}: {error[0]}", 500))
            try:
                outputs.append(_unpack(value, _name_of(self.fn),
                                       int(call.get("max_artifact_chars", 20480))))
            except Exception as exc:  # a return value that is neither a dict nor a result object
                return RunResult(ERROR, duration_s=took, reason=_one_line(str(exc), 500))
        return RunResult(OK, outputs=outputs, duration_s=time.perf_counter() - t0)

    def close(self) -> None:
        pass


def _call_with_timeout(fn: EvaluatorFn, path: str, timeout_s: float
                       ) -> tuple[bool, Any, tuple[BaseException, str] | None]:
    """(finished, value, (exception, traceback) or None); `async def` evaluators are awaited."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            value = fn(path)
            if inspect.isawaitable(value):
                value = asyncio.run(_awaited(value))
            box["value"] = value
        except BaseException as exc:  # noqa: BLE001 -- SystemExit too: a failed evaluation
            box["error"] = (exc, traceback.format_exc()[-4000:])

    thread = threading.Thread(target=target, daemon=True, name="evoforge-evaluator")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return False, None, None
    return True, box.get("value"), box.get("error")


async def _awaited(value: Any) -> Any:
    return await value


def _name_of(fn: Any) -> str:
    name = f"{getattr(fn, '__module__', '') or ''}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    return re.sub(r"[^\w.<>]", "_", name.strip("."))[:200]


_PLACEHOLDER = '''"""Placeholder: this campaign's evaluator was the Python callable {name}, given to
evoforge.evolve() or evoforge.evaluate(). It ran in that process, unsandboxed, and runs nowhere
else (run {nonce})."""


def evaluate(program_path):
    raise RuntimeError("this campaign's evaluator was a Python callable given to "
                       "evoforge.evolve(); it cannot run outside that call")
'''


# -- problems ----------------------------------------------------------------------------------
def _is_source(value: Any) -> bool:
    return isinstance(value, str) and "\n" in value


def _file(value: Any, what: str, tmp: Path, name: str) -> Path:
    """A path the caller gave, or source text written to `tmp/name`."""
    if _is_source(value):
        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / name
        path.write_text(value, encoding="utf-8")
        return path
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{what}: expected a path or source text, got {type(value).__name__}")
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file: {path} (source text must contain a newline)")
    return path


def _load(program: Any, evaluator: Any, config: Any, llm_url: str | None, tmp: Path
          ) -> tuple[Any, EvaluatorFn | None, str]:
    """The mapped OpenEvolve `Problem`, the trusted callable (or None) and a campaign name."""
    import yaml

    from evoforge.evaluators.openevolve import load_problem

    name = "python api"
    folder = _problem_dir(program)
    if folder is not None:  # with an evaluator or a config given: read as the CLI reads it
        name = folder.resolve().name
        program = folder / "initial_program.py"
        if evaluator is None:
            evaluator = folder / "evaluator.py"
        if config is None and (folder / "config.yaml").is_file():
            config = folder / "config.yaml"
    if evaluator is None:
        raise TypeError("an evaluator is needed (a path, source text or a callable), unless the "
                        "first argument is an OpenEvolve problem directory")
    program_path = _file(program, "initial_program", tmp / "program", "initial_program.py")
    fn = None
    if callable(evaluator):
        fn = evaluator
        evaluator = _PLACEHOLDER.format(name=_name_of(fn), nonce=uuid.uuid4().hex)
    evaluator_path = _file(evaluator, "evaluator", tmp / "evaluator", "evaluator.py")
    config_path = None
    if isinstance(config, Mapping):
        (tmp / "config").mkdir()
        config_path = tmp / "config" / "config.yaml"
        config_path.write_text(yaml.safe_dump(dict(config)), encoding="utf-8")
    elif config is not None:
        config_path = _file(config, "config", tmp / "config", "config.yaml")
    problem = load_problem(program_path, evaluator_path, config_path, llm_base_url=llm_url)
    return problem, fn, name


def _llm_options(llm: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if llm is None:
        return {}
    if isinstance(llm, str):
        return {"base_url": llm}
    if not isinstance(llm, Mapping):
        raise TypeError("llm: expected a base URL or a dict (base_url or endpoint, models, ...)")
    unknown = set(llm) - _LLM_KEYS
    if unknown:
        raise TypeError(f"llm: unknown keys {sorted(unknown)} (known: {sorted(_LLM_KEYS)})")
    if bool(llm.get("base_url")) == bool(llm.get("endpoint")):
        raise ValueError("llm: give base_url or endpoint (one of $EVOFORGE_LLM_ENDPOINTS), not both")
    return dict(llm)


def _models(models: str | list[Any]) -> list[dict[str, Any]]:
    """["name[:weight]" or {"name", "weight"}, ...] as the mutator spec's models."""
    from evoforge.db.campaign_config import ModelChoice

    models = [models] if isinstance(models, str) else list(models)
    return [dict(m) if isinstance(m, Mapping) else ModelChoice.parse(m).model_dump() for m in models]


def _mutator(problem_mutator: dict[str, Any], opts: dict[str, Any], mutator: str | None
             ) -> dict[str, Any]:
    if mutator not in (None, *_MUTATORS):
        raise ValueError(f"mutator: expected 'llm', 'local' or None, got {mutator!r}")
    if mutator == "local":
        return {"kind": "local"}
    spec = dict(problem_mutator)
    if opts.get("endpoint"):  # the operator's endpoint: its URL, key and prices, the config's models
        if spec.get("kind") != "llm":
            spec = {"kind": "llm", "models": [{"name": "default", "weight": 1.0}]}
        spec = {k: v for k, v in spec.items() if k not in ("base_url", "prices")}
        spec["endpoint"] = opts["endpoint"]
    if spec.get("kind") != "llm":
        if mutator == "llm":
            raise ValueError("mutator='llm' needs llm= (a base URL or an endpoint) or llm.api_base "
                             "in the config")
        return {"kind": "local"}
    if opts.get("models"):
        spec["models"] = _models(opts["models"])
    for key in ("temperature", "max_tokens", "ideas"):
        if opts.get(key) is not None:
            spec[key] = opts[key]
    if spec.get("endpoint"):
        _check_endpoint(spec["endpoint"], [m["name"] for m in spec["models"]])
    return spec


# -- database and sandbox ----------------------------------------------------------------------
def _db_url(db: PathLike | None) -> str:
    from evoforge.db.engine import default_url, normalize_url

    if db is None:
        return default_url()
    text = os.fspath(db)
    if "://" in text:
        return normalize_url(text)
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _sessions(url: str) -> Any:
    from evoforge.db.engine import session_factory, upgrade

    upgrade(url)
    return session_factory(url)


def _hidden(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def _shared_sandbox(kind: str) -> Iterator[None]:
    """As the CLI: the shared sandbox starts in the background now and is closed at the end."""
    from evoforge.worker.runtime import close_sandboxes, prestart_sandbox

    prestart_sandbox(os.environ.get("EVOFORGE_SANDBOX") or kind)
    try:
        yield
    finally:
        close_sandboxes()


# -- progress ----------------------------------------------------------------------------------
class _Progress:
    """Counts the commits; shows them as a rich bar in a terminal, as one updated line in
    Jupyter (IPython's display handles: no ipywidgets needed), or not at all."""

    def __init__(self, campaign_id: int, total: int, done: int, view: Any):
        self.campaign_id, self.total, self.done = campaign_id, total, done
        self.best: float | None = None
        self.hits = self.fail = 0
        self.view = view
        self._lock = threading.Lock()

    def commit(self, _iteration: int, committed: Any) -> None:
        r = committed.result
        with self._lock:
            self.done += 1
            if r.ok and r.score is not None and (self.best is None or r.score > self.best):
                self.best = r.score
            self.hits += committed.cache != "miss"
            self.fail += not r.ok
            if self.view is not None:
                self.view.show(self)

    def line(self) -> str:
        return (f"campaign {self.campaign_id}  {self.done}/{self.total}  best {_num(self.best)}  "
                f"cache {self.hits}  fail {self.fail}")


class _RichView:
    def __init__(self, console: Any, p: _Progress):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("[bold]campaign {task.fields[cid]}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("best {task.fields[best]}"),
                            TextColumn("cache {task.fields[hits]}"), TextColumn("fail {task.fields[fail]}"),
                            TimeElapsedColumn(), console=console)
        self.task = self.bar.add_task("evolve", total=p.total, completed=p.done, cid=p.campaign_id,
                                      best="-", hits=0, fail=0)

    def __enter__(self) -> "_RichView":
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def show(self, p: _Progress) -> None:
        self.bar.update(self.task, completed=p.done, best=_num(p.best), hits=p.hits, fail=p.fail)


class _Line:
    """One progress line for a notebook: text/plain and an HTML <progress> bar."""

    def __init__(self, p: _Progress, elapsed_s: float):
        self.text = f"{p.line()}  {elapsed_s:.0f} s"
        self.done, self.total = p.done, max(1, p.total)

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return (f'<progress value="{self.done}" max="{self.total}" style="width:16em"></progress> '
                f"<code>{html.escape(self.text)}</code>")


class _NotebookView:
    EVERY_S = 0.2

    def __init__(self, p: _Progress):
        from IPython.display import display

        self.t0 = self.shown = time.monotonic()
        self.handle = display(_Line(p, 0.0), display_id=True)

    def __enter__(self) -> "_NotebookView":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def show(self, p: _Progress, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self.shown >= self.EVERY_S or p.done >= p.total:
            self.shown = now
            self.handle.update(_Line(p, now - self.t0))


def _view(enabled: bool, p: _Progress, console: Any = None) -> Any:
    if not enabled:
        return None
    from rich.console import Console

    console = console or Console(stderr=True)
    if console.is_jupyter:
        try:
            return _NotebookView(p)
        except ImportError:
            return None
    if console.is_terminal and not console.is_dumb_terminal:
        return _RichView(console, p)
    return None


# -- evolve ------------------------------------------------------------------------------------
def evolve(initial_program: PathLike, evaluator: PathLike | EvaluatorFn | None = None, *,
           config: PathLike | Mapping[str, Any] | None = None, iterations: int | None = None,
           mutator: str | None = None, llm: str | Mapping[str, Any] | None = None,
           parallel: int | None = None, seed: int | None = None, db: PathLike | None = None,
           sandbox: str = "fork", name: str | None = None, progress: bool = True) -> Result:
    """Evolve a program against an evaluator, OpenEvolve style, and return the best program.

    Runs a campaign in this process on the embedded engine (as `evoforge openevolve`); the
    seed program is evaluated first, then `iterations` mutations. Candidates run in the
    sandbox, except under a callable evaluator (see `evaluator`).

    Args:
        initial_program: the seed program: a file path, source text (a string containing a
            newline is source), or a problem directory in OpenEvolve's layout (or the native
            evoforge.toml one) with `evaluator` omitted: it is stored as a problem, as an upload
            to a server would be (content-addressed, requirements checked; `Result.problem`).
        evaluator: OpenEvolve's `evaluate(program_path)` as a file path or source text: runs in
            the sandbox, with the files beside it (a path's directory). Or a Python callable
            `fn(program_path) -> dict | EvaluationResult` for TRUSTED code only: it runs in this
            process, unsandboxed, with full access to your files and network.
        config: an OpenEvolve config.yaml path, or the same keys as a dict.
        iterations: mutations to evaluate (default: the config's max_iterations, else 100).
        mutator: "llm", "local" (EvoForge's AST mutator, no model calls) or None: "llm" when an
            LLM is given (`llm` or llm.api_base in the config), else "local".
        llm: an OpenAI-compatible base URL, or a dict with `base_url` or `endpoint` (a name
            from $EVOFORGE_LLM_ENDPOINTS) and optional `models` (["name[:weight]", ...]),
            `temperature`, `max_tokens`, `ideas`. A base URL gets the key from
            $EVOFORGE_LLM_API_KEY or $OPENAI_API_KEY, as with the CLI.
        parallel: evaluations in flight (default: the config's, else 1).
        seed: campaign seed (default: the config's random_seed, else 0).
        db: SQLAlchemy URL or SQLite file path (default: $EVOFORGE_DATABASE_URL, else the
            CLI's SQLite file under ~/.local/share/evoforge, so `evoforge best ID` and the
            dashboard see the campaign).
        sandbox: "fork" (default), "subprocess" or "docker" (not used by a callable evaluator).
        name: campaign name (default: the problem directory's name).
        progress: show a progress bar in a terminal or a Jupyter notebook.

    Returns:
        A `Result`: best_code, best_score, metrics, campaign_id, status, evaluations,
        failures, cache_hits, seed_score, db_url, error, problem. Ctrl-C stops early: the evaluations
        in flight finish, and the result says "paused".

    Raises:
        ValueError, TypeError, FileNotFoundError: arguments or a problem that cannot be used
        (one line saying why). A failing evaluator is not an exception: see `Result.error`.

    Example:
        >>> import evoforge
        >>> r = evoforge.evolve("examples/curve_fit", iterations=20, mutator="local")
        >>> r.best_score >= r.seed_score
        True
        >>> print(r.best_code)
    """
    if iterations is not None and not (isinstance(iterations, int) and 0 <= iterations <= 10_000_000):
        raise ValueError("iterations: expected an int from 0 to 10000000")
    from evoforge.worker.campaign_service import create_campaign

    opts = _llm_options(llm)
    url = _db_url(db)
    folder = _problem_dir(initial_program) if evaluator is None and config is None else None
    fn, problem_id, digest = None, None, None
    if folder is not None:  # a stored problem, as an upload to the server would be
        sessions = _sessions(url)
        spec, problem_id, digest = _problem_spec(
            sessions, folder, opts, mutator, name=name, iterations=iterations,
            parallel=parallel, seed=seed, sandbox=sandbox)
    else:  # files or source text, read as `evoforge openevolve` reads them
        with tempfile.TemporaryDirectory(prefix="evoforge-api-") as tmp:
            problem, fn, default_name = _load(initial_program, evaluator, config,
                                              opts.get("base_url"), Path(tmp))
        iterations = iterations if iterations is not None else (problem.max_iterations or 100)
        seed = seed if seed is not None else (problem.seed or 0)
        spec = _spec({"task": "openevolve", "params": problem.task_params,
                      "program": problem.seed_program, "name": name or f"{default_name} #{seed}",
                      "seed": seed, "parallel": parallel or problem.parallel or 1,
                      "sandbox": sandbox, "mutator": _mutator(problem.mutator, opts, mutator),
                      "archive": problem.archive,
                      "budget": {**problem.budget, "max_evaluations": iterations + 1}})
        sessions = _sessions(url)
    campaign_id = create_campaign(sessions, spec, problem_id=problem_id).id  # SpecError: ValueError
    operator_url = spec.mutator.base_url if spec.mutator.kind == "llm" else None
    if fn is not None:
        _run(sessions, campaign_id, spec.parallel, InProcessRunner(fn), operator_url, progress)
    else:
        with _shared_sandbox(spec.sandbox):
            _run(sessions, campaign_id, spec.parallel, None, operator_url, progress)
    return _result(sessions, campaign_id, url, digest)


def _problem_dir(value: Any) -> Path | None:
    if _is_source(value) or not isinstance(value, (str, os.PathLike)):
        return None
    path = Path(value).expanduser()
    return path if path.is_dir() else None


def _spec(raw: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from evoforge.db.campaign_config import CampaignSpec

    try:
        return CampaignSpec.model_validate(raw)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                           for e in exc.errors(include_url=False, include_input=False))
        raise ValueError(f"invalid campaign: {errors}") from None


def _problem_spec(sessions: Any, folder: Path, opts: dict[str, Any], mutator: str | None, *,
                  name: str | None, iterations: int | None, parallel: int | None,
                  seed: int | None, sandbox: str) -> tuple[Any, int, str]:
    """Store the directory as a problem (worker/problem_service.py: the same package, content
    digest, requirements check and config mapping as `POST /problems`), then the campaign's spec
    on it: the config's defaults, what the caller set overriding them. The caller is the
    operator, so the config's llm.api_base is used (`config_url`)."""
    from evoforge.db.campaign_config import MutatorSpec
    from evoforge.evaluators.openevolve.package import package_from_dir
    from evoforge.worker import problem_service
    from evoforge.worker.campaign_service import Scope

    if mutator not in (None, *_MUTATORS):
        raise ValueError(f"mutator: expected 'llm', 'local' or None, got {mutator!r}")
    pkg = package_from_dir(folder)  # PackageError: a ValueError saying which file and why
    stored = problem_service.store_problem(sessions, pkg, name=pkg.name or folder.resolve().name,
                                           sandbox=sandbox)
    over: dict[str, Any] = {"problem": pkg.digest, "sandbox": sandbox}
    if name:
        over["name"] = name
    if iterations is not None:
        over["budget"] = {"max_evaluations": iterations + 1}
    if parallel is not None:
        over["parallel"] = parallel
    if seed is not None:
        over["seed"] = seed
    if opts.get("endpoint"):
        over["mutator"] = {"kind": "llm", "endpoint": opts["endpoint"]}
    if mutator != "local":
        asked = {k: opts[k] for k in ("temperature", "max_tokens", "ideas") if opts.get(k) is not None}
        if opts.get("models"):
            asked["models"] = _models(opts["models"])
        if asked:
            over["mutator"] = {**over.get("mutator", {}), **asked}
    resolved = problem_service.spec_for_campaign(
        sessions, Scope.operator(), _spec(over), llm_base_url=opts.get("base_url"), config_url=True)
    spec = resolved.spec
    if mutator == "local":
        spec = spec.model_copy(update={"mutator": MutatorSpec(kind="local")})
    elif mutator == "llm" and spec.mutator.kind != "llm":
        raise ValueError("mutator='llm' needs llm= (a base URL or an endpoint) or llm.api_base "
                         "in the config")
    if spec.mutator.endpoint:
        _check_endpoint(spec.mutator.endpoint, [m.name for m in spec.mutator.models])
    return spec, stored.problem.id, pkg.digest


def _check_endpoint(name: str, models: list[str]) -> None:
    from evoforge.worker.endpoints import check_models, load_endpoints

    check_models(name, load_endpoints().endpoint(name), models)


def _run(sessions: Any, campaign_id: int, parallel: int, runner: Any, operator_url: str | None,
         show: bool) -> None:
    from evoforge.db.models import Campaign
    from evoforge.worker.embedded import EmbeddedExecutor

    with sessions() as s:
        c = s.get(Campaign, campaign_id)
        total, done = c.max_evaluations, c.evaluations
    p = _Progress(campaign_id, total, done, None)
    p.view = _view(show, p)
    # You are the operator here: the URL you gave (or your config's) gets the key from your
    # environment, in-process, never through the stored config (worker/endpoints.py).
    executor = EmbeddedExecutor(sessions, campaign_id, parallel=parallel, sandbox=runner,
                                on_commit=p.commit, operator_url=operator_url)
    if p.view is None:
        executor.run()
        return
    with p.view:
        executor.run()
        if isinstance(p.view, _NotebookView):
            p.view.show(p, final=True)


def _result(sessions: Any, campaign_id: int, url: str, problem: str | None = None) -> Result:
    from evoforge.db.blobs import program_texts
    from evoforge.db.models import Campaign
    from evoforge.worker.campaign_service import Scope, best_program

    with sessions() as s:
        c = s.get(Campaign, campaign_id)
        code, metrics = None, {}
        try:
            _, best = best_program(s, Scope.operator(), campaign_id)
            code = program_texts(s, best).code
            metrics = dict(best.evaluation.metrics or {}) if best.evaluation is not None else {}
        except LookupError:
            pass
        return Result(best_code=code, best_score=c.best_score, metrics=metrics,
                      campaign_id=c.id, status=c.status, evaluations=c.evaluations,
                      failures=c.failures, cache_hits=c.cache_hits, seed_score=c.seed_score,
                      db_url=_hidden(url), error=c.error or None, problem=problem)


# -- evaluate ----------------------------------------------------------------------------------
def evaluate(program: PathLike, evaluator: PathLike | EvaluatorFn | None = None, *,
             task: str | None = None, params: Mapping[str, Any] | None = None,
             config: PathLike | Mapping[str, Any] | None = None, seed: int = 0,
             sandbox: str = "fork") -> Evaluation:
    """Evaluate one program, with no campaign and nothing stored.

    Args:
        program: the program: a file path, source text (a string containing a newline), or an
            OpenEvolve problem directory (its initial_program.py is evaluated).
        evaluator: OpenEvolve's `evaluate(program_path)` as a path or source text (runs in the
            sandbox), or a trusted Python callable (runs in this process, UNSANDBOXED).
        task: instead of an evaluator, a registered task by name (`evoforge tasks`), e.g.
            "circle_packing"; `params` are its parameters.
        params: the task's parameters (with `task` only).
        config: an OpenEvolve config.yaml path or dict (its evaluator keys: timeout, cascade).
        seed: the seed passed to the program's run.
        sandbox: "fork" (default), "subprocess" or "docker".

    Returns:
        An `Evaluation`: status, score, metrics, artifacts, duration_s (and `.ok`).

    Example:
        >>> import evoforge
        >>> e = evoforge.evaluate("examples/curve_fit")
        >>> e.ok, e.metrics["mse"] > 0
        (True, True)
    """
    from evoforge.evaluators.pipeline import CascadeEvaluator
    from evoforge.evaluators.textfile import read_text_file
    from evoforge.worker.campaign_service import resolve_task

    if task is not None:
        if evaluator is not None or config is not None:
            raise TypeError("give an evaluator (and config) or a task, not both")
        the_task, the_params = resolve_task(task, dict(params or {}))  # SpecError: ValueError
        code = program if _is_source(program) else read_text_file(_file(program, "program", Path(), ""))
        fn = None
    else:
        if params is not None:
            raise TypeError("params go with task=; an OpenEvolve evaluator takes config=")
        with tempfile.TemporaryDirectory(prefix="evoforge-api-") as tmp:
            problem, fn, _ = _load(program, evaluator, config, None, Path(tmp))
        the_task, the_params = resolve_task("openevolve", problem.task_params)
        code = problem.seed_program
    if fn is not None:
        return _evaluate(CascadeEvaluator(the_task, the_params, InProcessRunner(fn)), code, seed)
    from evoforge.worker.runtime import shared_sandbox

    with _shared_sandbox(sandbox):
        runner = shared_sandbox(os.environ.get("EVOFORGE_SANDBOX") or sandbox)
        if hasattr(runner, "for_task"):  # containers: the task's image, as Runtime.for_campaign
            runner = runner.for_task(the_task.name, gpu=the_task.resources.gpu)
        return _evaluate(CascadeEvaluator(the_task, the_params, runner), code, seed)


def _evaluate(evaluator: Any, code: str, seed: int) -> Evaluation:
    probe = evaluator.probe(code, seed)
    r = probe.failure if probe.failure is not None else evaluator.evaluate(code, seed, probe)
    return Evaluation(status=r.status, score=r.score, metrics=dict(r.metrics),
                      artifacts=dict(r.artifacts), duration_s=r.duration_s)
