"""Code and functional hashing: when may two evaluations share a cached result?

A cache hit must never change a program's score from what it scores alone, so both hashes are
exact where "close" would be unsound:

- `code_hash`: sha256 of the exact source. A program can observe its own text at run time
  (`__doc__`, `inspect.getsource`, reading its file, tracebacks, line numbers), so docstrings,
  comments and formatting are part of its identity. `run_hash` adds the seed that the sandbox
  gives the candidate's RNGs: the code cache's key.
- `functional_hash`: the exact outputs on a task's probe inputs (`canonicalize(..., exact=True)`:
  floats bit for bit, array dtypes, dict order), hashed with the task key. It determines the
  score only when the probe's outputs are everything that is scored; the evaluator decides that
  (evaluators/pipeline.py `functional_reuse`).
- `cache_key`: the key a cache row is stored under: one of the two hashes, its kind and the
  tenant scope (a project, open mode, or the operator's shared scope), so one project's entries
  never answer another's lookups.
- `normalize_code` / `normalized_hash` (no comments, docstrings or formatting) are for similarity
  only: the novelty gate, the AST mutator's "did anything change", the code-size feature,
  inspiration dedupe. Never for cache identity.

`canonicalize` is injective on purpose: every non-JSON-native value is wrapped in a one-key
tag object (`{"__float__": "NaN"}`, `{"__ndarray__": {...}}`, `{"__dict__": [[k, v], ...]}`), and
plain dicts are always wrapped too, so a candidate cannot return a dict that imitates another
program's array and borrow its cached score.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import math
import sys
from typing import TYPE_CHECKING, Any

from evoforge.evolution import pyast

if TYPE_CHECKING:
    import numpy as np


class _NoNumpy:
    """Stands for numpy while nothing has imported it: no value can be an instance of numpy's
    types then, and importing numpy (0.3-0.5 s) is not worth paying in commands that only read
    the database (`evoforge campaigns`, `best`), which reach this module through the archive."""
    class bool_: ...
    class integer: ...
    class floating: ...
    class complexfloating: ...
    class ndarray: ...
    class generic: ...


def _numpy():
    return sys.modules.get("numpy") or _NoNumpy

SIGNIFICANT_DIGITS = 10


# ---------------------------------------------------------------------------------------------
# Normalised code
# ---------------------------------------------------------------------------------------------

def _is_docstring(stmt: ast.stmt) -> bool:
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str))


_DOC_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


# Statements (so docstring owners) only ever sit in these list fields: walking them alone
# finds every docstring while skipping the expression nodes, most of a tree.
_STMT_LISTS = ("body", "orelse", "finalbody", "handlers", "cases")


def _drop_docstrings(tree: ast.Module) -> ast.Module:
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, _DOC_OWNERS) and node.body and _is_docstring(node.body[0]):
            node.body = node.body[1:] or ([] if isinstance(node, ast.Module) else [ast.Pass()])
        for name in _STMT_LISTS:
            children = getattr(node, name, None)
            if children and isinstance(children, list):
                todo.extend(children)
    return tree


def _whitespace_normalised(code: str) -> str:
    lines = code.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines if line.strip())


UNPARSABLE = "# unparsable\n"


@functools.lru_cache(maxsize=512)
def normalize_code(code: str) -> str:
    """Canonical text of a program: no comments, no docstrings, `ast.unparse` formatting (for
    similarity only: a program can read what this drops, so it never decides a cache hit).

    Code that does not parse is returned whitespace-normalised (trailing spaces and blank lines
    dropped, line endings unified), prefixed with a marker so it never equals parsable code.
    Results are cached (parsing and unparsing dominate the cost).
    """
    try:
        tree = pyast.parse(code)
        tree = _drop_docstrings(tree)
        return ast.unparse(tree)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return UNPARSABLE + _whitespace_normalised(code)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@functools.lru_cache(maxsize=2048)
def code_hash(code: str) -> str:
    """sha256 hex of the exact source: everything a program can read about itself counts."""
    return _sha256(code)


@functools.lru_cache(maxsize=2048)
def normalized_hash(code: str) -> str:
    """sha256 hex of `normalize_code`: programs that read the same to a person (e.g. inspirations
    shown once in a prompt). Never a cache key: the programs may still behave differently."""
    return _sha256(normalize_code(code))


def run_hash(code: str, seed: int) -> str:
    """sha256 hex of the exact source and the seed of the candidate's RNGs (the code cache's key:
    the same source under another seed is another run)."""
    return _sha256(f"seed={int(seed)}\n{code}")


CACHE_KEY_VERSION = "evoforge-cache-v2"  # v1 rows (normalised code, one global scope) never match


def cache_key(scope: str, kind: str, raw_hash: str, runner: str = "") -> str:
    """The hash a cache row is stored under: `raw_hash` (a run or functional hash) within one
    tenant scope (e.g. "project:7", "open", "shared") and kind ("code", "functional").
    `runner` (worker/cache_policy.py `runner_id`) is part of a code entry's key: a candidate can
    tell sandbox runners apart (its argv, its pid, its files), so the same source and seed are
    another run in another runner. Functional entries need no runner: the trusted scorer sees
    the same outputs wherever they were made."""
    parts = [CACHE_KEY_VERSION, scope, kind, raw_hash]
    if kind == "code" and runner:
        parts.append(f"runner={runner}")
    return _sha256(_json(parts))


# ---------------------------------------------------------------------------------------------
# Canonical outputs
# ---------------------------------------------------------------------------------------------

def _canon_float(x: float) -> Any:
    if math.isnan(x):
        return {"__float__": "NaN"}
    if math.isinf(x):
        return {"__float__": "Infinity" if x > 0 else "-Infinity"}
    r = float(f"{x:.{SIGNIFICANT_DIGITS - 1}e}")
    if math.isinf(r):  # rounding up near the largest float must not create an infinity
        r = x
    return 0.0 if r == 0.0 else r  # -0.0 -> 0.0


def _canon_array(arr: np.ndarray) -> dict:
    kind = arr.dtype.kind
    if kind == "u":  # unsigned and signed integers with equal values are the same data
        kind = "i"
    if kind in "biufc":
        values = [canonicalize(v) for v in arr.ravel().tolist()]
    else:  # strings, objects, ...: element by element
        values = [canonicalize(v) for v in arr.ravel()]
    return {"__ndarray__": {"kind": kind, "shape": list(arr.shape), "values": values}}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def canonicalize(value: Any) -> Any:
    """A canonical, JSON-serialisable form of plain output data, rounded: for comparing
    behaviour approximately, never for cache identity (that is `exact_form`'s job).

    - bools stay bools and ints stay ints (numpy scalars become Python ones); ints and floats
      are different types (`2` and `2.0` differ), which can only cost a cache hit, never fake one;
    - floats are rounded to 10 significant digits, -0.0 becomes 0.0, NaN/inf become tagged strings;
    - complex numbers: `{"__complex__": [re, im]}`; bytes: `{"__bytes__": hex}`;
    - lists and tuples both become lists (the sandbox channel does not keep the difference);
    - numpy arrays: `{"__ndarray__": {"kind", "shape", "values"}}` (kind "u" is merged into "i");
    - dicts: `{"__dict__": [[key, value], ...]}` sorted by the key's canonical JSON.

    Raises TypeError for anything else (sets, objects): outputs must be plain data.
    """
    if value is None or isinstance(value, str):
        return value
    np = _numpy()
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _canon_float(float(value))
    if isinstance(value, (complex, np.complexfloating)):
        c = complex(value)
        return {"__complex__": [_canon_float(c.real), _canon_float(c.imag)]}
    if isinstance(value, (bytes, bytearray)):
        return {"__bytes__": bytes(value).hex()}
    if isinstance(value, np.ndarray):
        return _canon_array(value)
    if isinstance(value, (list, tuple)):
        return [canonicalize(v) for v in value]
    if isinstance(value, dict):
        items = [(canonicalize(k), canonicalize(v)) for k, v in value.items()]
        items.sort(key=lambda kv: _json(kv[0]))
        return {"__dict__": [[k, v] for k, v in items]}
    raise TypeError(f"cannot canonicalise output of type {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """Compact, key-sorted JSON of `canonicalize(value)`."""
    return _json(canonicalize(value))


def exact_form(value: Any) -> Any:
    """A JSON-serialisable form of plain output data that merges nothing a scorer could tell
    apart (unlike `canonicalize`): floats bit for bit (`float.hex`, so -0.0 != 0.0 and 1e-12
    matters), numpy scalar and array dtypes, dict insertion order. Tags as in `canonicalize`.
    Lists and tuples both become lists (the sandbox channel does not keep the difference)."""
    if value is None or isinstance(value, str):
        return value
    np = _numpy()
    if isinstance(value, np.generic):  # before float/int: np.float64 is a float subclass
        return {"__np__": [value.dtype.str, exact_form(value.item())]}
    if isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return {"__float__": value.hex()}
    if isinstance(value, complex):
        return {"__complex__": [value.real.hex(), value.imag.hex()]}
    if isinstance(value, (bytes, bytearray)):
        return {"__bytes__": bytes(value).hex()}
    if isinstance(value, np.ndarray):
        flat = value.ravel().tolist() if value.dtype.kind in "biufc" else list(value.ravel())
        return {"__ndarray__": {"dtype": value.dtype.str, "shape": list(value.shape),
                                "values": [exact_form(v) for v in flat]}}
    if isinstance(value, (list, tuple)):
        return [exact_form(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[exact_form(k), exact_form(v)] for k, v in value.items()]}
    raise TypeError(f"cannot canonicalise output of type {type(value).__name__}")


def functional_hash(task_key: str, outputs: list) -> str:
    """sha256 hex of the task key and the exact outputs on the probe inputs (`exact_form`):
    equal hashes mean equal data, so a trusted scorer gives both programs the same result."""
    return _sha256(_json({"task": task_key, "outputs": exact_form(list(outputs))}))
