"""Sandbox-side driver for OpenEvolve evaluators (its source is the task's `driver`).

Runs INSIDE the sandbox, next to the candidate module (standard library only). One call
({"call": "evaluate_stage1", "evaluator": "evaluator.py", "files": {...}, "suffix": ".rs"})
does what OpenEvolve does for one stage: write the candidate to `program<suffix>` (any
language: the harness hands its source over uncompiled), write the problem's files (relative
paths, subdirectories included) into a private scratch directory, import the evaluator from
there and call `fn(program_path)`, awaiting it when it is `async def`. A call that raises is
retried `retries` times (evaluator.max_retries). The result (a dict, or an object with
`metrics` and `artifacts`) goes back as plain data: {"metrics": {...}, "artifacts": {...}}.
Exceptions propagate: the harness records them as a failed run with the traceback.

`openevolve.evaluation_result.EvaluationResult` is provided as a small shim module, so
evaluators that import it run without OpenEvolve installed in the sandbox.
"""
import asyncio
import importlib.util
import inspect
import linecache
import math
import os
import sys
import types

# The harness hands drive() the candidate unexecuted: the evaluator imports it from a file, so
# its top-level code runs once, as under OpenEvolve.
CANDIDATE = "source"


class EvaluationResult:
    """openevolve.evaluation_result.EvaluationResult, for evaluators that import it."""

    def __init__(self, metrics, artifacts=None):
        self.metrics = metrics
        self.artifacts = {} if artifacts is None else artifacts

    def __repr__(self):
        return f"EvaluationResult(metrics={self.metrics!r}, artifacts={self.artifacts!r})"

    def __eq__(self, other):
        return (type(other) is type(self) and other.metrics == self.metrics
                and other.artifacts == self.artifacts)

    @classmethod
    def from_dict(cls, metrics):
        return cls(metrics=metrics)

    def to_dict(self):
        return self.metrics

    def has_artifacts(self):
        return bool(self.artifacts)

    def get_artifact_keys(self):
        return list(self.artifacts.keys())


def _install_shim():
    if "openevolve.evaluation_result" in sys.modules:
        return
    pkg = types.ModuleType("openevolve")
    pkg.__path__ = []
    mod = types.ModuleType("openevolve.evaluation_result")
    EvaluationResult.__module__ = mod.__name__
    mod.EvaluationResult = EvaluationResult
    sys.modules["openevolve"] = pkg
    sys.modules["openevolve.evaluation_result"] = mod
    pkg.evaluation_result = mod


MAX_KEYS = 200
MAX_STR = 4096


def _plain_metric(v):
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, str):
        return v[:MAX_STR]
    if isinstance(v, int):
        return int(v) if abs(v) < 2 ** 63 else float(v)
    try:  # float, numpy scalars, 0-d arrays
        f = float(v)
    except Exception:  # noqa: BLE001
        return str(v)[:MAX_STR]
    if isinstance(v, (float, int)) or hasattr(v, "dtype"):
        if hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iu" and math.isfinite(f):
            return int(f)
        if hasattr(v, "dtype") and getattr(v.dtype, "kind", "") == "b":
            return bool(f)
        return f
    return str(v)[:MAX_STR]


def _plain_artifact(v, cap):
    if isinstance(v, bytes):
        v = v.decode("utf-8", errors="replace")
    elif not isinstance(v, str):
        v = repr(v) if not isinstance(v, (int, float, bool)) else str(v)
    return v if len(v) <= cap else v[:cap] + f"... [{len(v) - cap} more chars]"


def _unpack(result, fn_name, cap):
    if isinstance(result, dict):
        metrics, artifacts = result, {}
    elif isinstance(getattr(result, "metrics", None), dict):
        metrics = result.metrics
        artifacts = getattr(result, "artifacts", None) or {}
        if not isinstance(artifacts, dict):
            artifacts = {"artifacts": artifacts}
    else:
        raise TypeError(f"{fn_name}() returned {type(result).__name__}; expected a dict of "
                        "metrics or an EvaluationResult (metrics, artifacts)")
    m = {str(k): _plain_metric(v) for k, v in list(metrics.items())[:MAX_KEYS]}
    a = {str(k): _plain_artifact(v, cap) for k, v in list(artifacts.items())[:MAX_KEYS]}
    return {"metrics": m, "artifacts": a}


def _candidate_source(module):
    lines = linecache.getlines(getattr(module, "__file__", None) or "candidate.py")
    if not lines:
        raise RuntimeError("the candidate's source is not available to the OpenEvolve driver")
    return "".join(lines)


def _fresh_dir(prefix):
    """A new directory in the run's private scratch (tempfile costs ~10 ms to import here)."""
    base = os.environ.get("TMPDIR") or "/tmp"
    for i in range(1000):
        path = os.path.join(base, f"{prefix}{os.getpid()}-{i}")
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise RuntimeError("cannot create a scratch directory")


def _safe_parts(path):
    """The components of a relative POSIX path, or None for an absolute, hidden or `..` one
    (the trusted side refuses them already: this is the second lock)."""
    parts = path.split("/")
    if not path or "\\" in path or "\x00" in path or len(parts) > 8:
        return None
    if any(not p or p.startswith(".") for p in parts):
        return None
    return parts


def _write_files(eval_dir, files):
    for name, text in files.items():
        parts = _safe_parts(name)
        if parts is None:
            continue
        path = os.path.join(eval_dir, *parts)
        if len(parts) > 1:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def _call(fn, program_path, retries):
    for attempt in range(retries + 1):
        try:
            result = fn(program_path)
            if inspect.iscoroutine(result):
                result = asyncio.run(result)
            return result
        except Exception:  # noqa: BLE001 - OpenEvolve retries any exception, then gives up
            if attempt >= retries:
                raise


def drive(module, inputs, seed):
    _install_shim()
    source = _candidate_source(module)
    outputs = []
    for call in inputs:
        fn_name = call["call"]
        cap = int(call.get("max_artifact_chars", 20480))
        limit = call.get("max_code_length")
        if limit is not None and len(source) > int(limit):
            raise ValueError(f"the program is {len(source)} characters, over max_code_length "
                             f"{int(limit)}")
        suffix = str(call.get("suffix", ".py"))
        if "/" in suffix or "\\" in suffix or not suffix.startswith("."):
            raise ValueError(f"bad file suffix {suffix!r}")
        eval_dir = _fresh_dir("evaluator-")
        _write_files(eval_dir, call.get("files", {}))
        program_path = os.path.join(_fresh_dir("program-"), "program" + suffix)
        with open(program_path, "w", encoding="utf-8") as f:
            f.write(source)
        parts = _safe_parts(call["evaluator"])
        if parts is None:
            raise ValueError(f"bad evaluator path {call['evaluator']!r}")
        path = os.path.join(eval_dir, *parts)
        home = os.path.dirname(path)  # the evaluator's own directory, as under OpenEvolve
        if home not in sys.path:
            sys.path.insert(0, home)
        os.chdir(home)
        spec = importlib.util.spec_from_file_location("evaluation_module", path)
        evaluator = importlib.util.module_from_spec(spec)
        sys.modules["evaluation_module"] = evaluator
        spec.loader.exec_module(evaluator)
        fn = getattr(evaluator, fn_name, None)
        if not callable(fn):
            raise AttributeError(f"the evaluator does not define {fn_name}(program_path)")
        outputs.append(_unpack(_call(fn, program_path, int(call.get("retries", 0))), fn_name, cap))
    return outputs
