"""Clean untrusted strings and numbers before they are stored, and make stored values servable.

Candidate programs, LLM replies and uploaded evaluators produce arbitrary text and numbers.
PostgreSQL rejects NUL in text and NaN/Infinity in JSON, UTF-8 cannot encode a lone surrogate
('\\udcff', what `surrogateescape` makes of a stray byte), JSON readers lose integers beyond 64
bits, and one huge or deeply nested value costs every later reader. So every such value passes a
`Sanitizer` on its way into the database (db/store.py `CampaignStore.commit`, db/campaign_rows.py),
with the same rules on SQLite and PostgreSQL, and every change is written down
("metrics.loss: NaN -> null") so that nothing is cleaned silently.

`servable()` is the output side: rows written before these rules (or by other tools) are
served with lone surrogates escaped and non-finite floats as null, so no stored value can make
a response fail.

Pure logic: standard library only, no DB imports.
"""
from __future__ import annotations

import math
import numbers
import re
from typing import Any

MAX_TEXT_CHARS = 100_000      # one string inside a JSON value (metrics, artifacts, ...)
MAX_KEY_CHARS = 200           # one dict key
MAX_ITEMS = 1_000             # entries of one dict or list
MAX_DEPTH = 16                # nesting of dicts and lists
MAX_VALUES = 20_000           # scalars and containers in all the JSON values of one Sanitizer
MAX_TOTAL_CHARS = 2_000_000   # characters in all the JSON strings of one Sanitizer
MAX_NOTES = 40
INT64_MAX = 2 ** 63 - 1

_SURROGATE = re.compile("[\ud800-\udfff]")
TRUNCATED = "... [{n} more chars truncated]"


def _escape_surrogate(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group()):04x}"  # what errors='backslashreplace' writes


def _safe_repr(value: Any) -> str:
    """repr() of an object that may refuse it (hostile __repr__, endless recursion)."""
    try:
        return repr(value)[:10_000]
    except Exception:  # noqa: BLE001
        return f"<{type(value).__name__}>"


def _float_text(f: float) -> str:
    return "NaN" if math.isnan(f) else ("inf" if f > 0 else "-inf")


class Sanitizer:
    """Cleans the values of one record (a program and its evaluation) and keeps the notes.

    `text()` for a column, `json()` for a JSON document, `score()` for the fitness. `notes`
    lists what was changed, each as "where: what", in the order met."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self._values = 0
        self._chars = 0
        self._dropped = 0

    def note(self, where: str, what: str) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append(f"{where}: {what}")
        elif len(self.notes) == MAX_NOTES:
            self.notes.append("... more values cleaned")

    # -- strings ------------------------------------------------------------------------------
    def text(self, value: Any, where: str, *, max_chars: int = MAX_TEXT_CHARS) -> str:
        """A string PostgreSQL and UTF-8 accept: NUL removed, lone surrogates escaped as
        '\\udcff', cut at `max_chars` with a marker saying how much was left out."""
        if not isinstance(value, str):
            value = str(value) if isinstance(value, (int, float)) else _safe_repr(value)
        if "\x00" in value:
            n = value.count("\x00")
            value = value.replace("\x00", "")
            self.note(where, f"{n} NUL removed")
        if not value.isascii():
            value, n = _SURROGATE.subn(_escape_surrogate, value)
            if n:
                self.note(where, f"{n} lone surrogate{'s' if n > 1 else ''} escaped")
        if len(value) > max_chars:
            cut = len(value) - max_chars
            value = value[:max_chars] + TRUNCATED.format(n=cut)
            self.note(where, f"truncated to {max_chars} chars ({cut} cut)")
        return value

    def optional_text(self, value: Any, where: str, *, max_chars: int = MAX_TEXT_CHARS) -> str | None:
        return None if value is None else self.text(value, where, max_chars=max_chars)

    # -- numbers ------------------------------------------------------------------------------
    def integer(self, value: Any, where: str) -> int | float | None:
        """A JSON integer within 64 bits; beyond, the nearest float (or null if none)."""
        v = int(value)
        if -INT64_MAX - 1 <= v <= INT64_MAX:
            return v
        try:
            f = float(v)
        except OverflowError:
            self.note(where, "integer beyond 64 bits -> null")
            return None
        self.note(where, f"integer beyond 64 bits -> {f!r}")
        return f

    def real(self, value: Any, where: str) -> float | None:
        """A finite float, or None (noted) for NaN and +-Infinity."""
        try:
            f = float(value)
        except (TypeError, ValueError, OverflowError):
            self.note(where, f"not a number ({type(value).__name__}) -> null")
            return None
        if math.isfinite(f):
            return f
        self.note(where, f"{_float_text(f)} -> null")
        return None

    def score(self, value: Any, where: str = "score") -> tuple[float | None, str]:
        """(finite score or None, why it is unusable ('' when fine)). A non-finite score is
        never stored: the caller turns the evaluation into a failure with this reason."""
        if value is None:
            return None, ""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self.note(where, f"not a number ({type(value).__name__}) -> null")
            return None, f"the score is not a number ({type(value).__name__})"
        try:
            f = float(value)
        except OverflowError:
            self.note(where, "out of float range -> null")
            return None, "the score is out of float range"
        if not math.isfinite(f):
            self.note(where, f"{_float_text(f)} -> null")
            return None, f"non-finite score {_float_text(f)}"
        return f, ""

    # -- JSON documents -----------------------------------------------------------------------
    def json(self, value: Any, where: str) -> Any:
        """A JSON document every database accepts and every reader can afford: finite numbers,
        64-bit integers, clean strings, string keys, bounded size and depth."""
        return self._json(value, where, 0)

    def _json(self, value: Any, where: str, depth: int) -> Any:
        self._values += 1
        if self._values > MAX_VALUES:
            self._dropped += 1
            if self._dropped == 1:
                self.note(where, f"dropped: more than {MAX_VALUES} values in this record")
            return None
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return self._leaf_text(value, where)
        if isinstance(value, numbers.Integral):
            return self.integer(value, where)
        if isinstance(value, numbers.Real):
            return self.real(value, where)
        if isinstance(value, (bytes, bytearray)):
            self.note(where, "bytes decoded as UTF-8")
            return self._leaf_text(bytes(value).decode("utf-8", errors="replace"), where)
        if isinstance(value, (dict, list, tuple)) and depth >= MAX_DEPTH:
            self.note(where, f"nested deeper than {MAX_DEPTH} levels -> text")
            return f"[a {type(value).__name__} of {len(value)} nested deeper than {MAX_DEPTH} levels]"
        if isinstance(value, dict):
            return self._dict(value, where, depth)
        if isinstance(value, (list, tuple)):
            if len(value) > MAX_ITEMS:
                self.note(where, f"{len(value) - MAX_ITEMS} of {len(value)} items dropped")
            return [self._json(v, f"{where}[{i}]", depth + 1)
                    for i, v in enumerate(value[:MAX_ITEMS])]
        tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
        if callable(tolist):
            try:
                return self._json(tolist(), where, depth)
            except Exception:  # noqa: BLE001 - an odd object is shown as text below
                pass
        self.note(where, f"{type(value).__name__} -> text")
        return self._leaf_text(_safe_repr(value), where, cap=1000)

    def _dict(self, value: dict[Any, Any], where: str, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        items = list(value.items())
        if len(items) > MAX_ITEMS:
            self.note(where, f"{len(items) - MAX_ITEMS} of {len(items)} keys dropped")
            items = items[:MAX_ITEMS]
        for k, v in items:
            if not isinstance(k, str):
                key = self.text(k if isinstance(k, (int, float)) else _safe_repr(k), f"{where} key",
                                max_chars=MAX_KEY_CHARS)
                self.note(where, f"{type(k).__name__} key {key!r} -> string")
            else:
                key = self.text(k, f"{where} key", max_chars=MAX_KEY_CHARS)
            if key in out:
                self.note(where, f"duplicate key {key!r} dropped")
                continue
            out[key] = self._json(v, f"{where}.{key}" if where else key, depth + 1)
        return out

    def _leaf_text(self, value: str, where: str, cap: int = MAX_TEXT_CHARS) -> str:
        room = max(0, MAX_TOTAL_CHARS - self._chars)
        text = self.text(value, where, max_chars=min(cap, room))
        self._chars += len(text)
        return text


# -- output -------------------------------------------------------------------------------------

_UNCHANGED = frozenset({int, bool, type(None)})   # types servable returns as they are


def servable(value: Any) -> Any:
    """`value` with every string encodable as UTF-8 (lone surrogates escaped) and non-finite
    floats as None, so a JSON encoder cannot fail on it. Returns the very object when nothing
    needs to change (the common case costs one walk, no copies). The exact types that are
    returned as they are (ints, ASCII keys) are told apart by `type` before any `isinstance`:
    a listing page is a thousand values, and this walk was a third of its CPU."""
    t = type(value)
    if t in _UNCHANGED:
        return value
    if t is str or isinstance(value, str):
        if value.isascii():
            return value
        return _SURROGATE.sub(_escape_surrogate, value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        out = None
        for k, v in value.items():
            k2 = k if type(k) is str and k.isascii() else servable(k)
            v2 = v if type(v) in _UNCHANGED else servable(v)
            if out is None and (k2 is not k or v2 is not v):
                out = {}
                for k0, v0 in value.items():  # copy what came before unchanged
                    if k0 is k:
                        break
                    out[k0] = v0
            if out is not None:
                out[k2] = v2
        return value if out is None else out
    if isinstance(value, (list, tuple)):
        items = [servable(v) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return items
    return value


# -- one iteration's record ----------------------------------------------------------------------

MAX_PROGRAM_CHARS = 1_000_000  # code, prompt, response (Text columns)
MAX_NAME_CHARS = {"kind": 40, "model": 200}  # the String(n) columns they go to
MAX_DB_INT = 2 ** 31 - 1       # Integer columns (token counts) on PostgreSQL
CLEANED_CODE = ("the program text had to be cleaned before storage (see `sanitized`), so the "
                "stored program is not the one evaluated")


def _count(s: Sanitizer, value: Any, where: str) -> int:
    """A token count for an Integer column: an int in [0, 2**31 - 1]."""
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        s.note(where, f"not a count ({type(value).__name__}) -> 0")
        return 0
    if 0 <= n <= MAX_DB_INT:
        return n
    clamped = min(max(n, 0), MAX_DB_INT)
    s.note(where, f"out of range -> {clamped}")
    return clamped


def _mapping(s: Sanitizer, value: Any, where: str) -> dict[str, Any]:
    out = s.json(value if value is not None else {}, where)
    if isinstance(out, dict):
        return out
    s.note(where, "not a mapping -> {'value': ...}")
    return {"value": out}


def clean_child(child: Any) -> Any:
    """The `Child` (evolution/step.py) of one iteration, ready to store on any database.

    Cleans the program text and the LLM exchange (Mutation) and the evaluation (EvalResult).
    What changed is listed in `result.artifacts["sanitized"]`. A score that is not a finite
    number, or a program whose text had to change, can never be an elite: an `ok` evaluation
    becomes `invalid` with the reason."""
    from dataclasses import replace

    from evoforge.evolution.types import INVALID, OK

    s = Sanitizer()
    m, r = child.mutation, child.result
    code = s.optional_text(child.code, "code", max_chars=MAX_PROGRAM_CHARS)
    mutation = replace(
        m, kind=s.text(m.kind, "kind", max_chars=MAX_NAME_CHARS["kind"]),
        error=s.text(m.error or "", "error", max_chars=2000),
        prompt=s.optional_text(m.prompt, "prompt", max_chars=MAX_PROGRAM_CHARS),
        response=s.optional_text(m.response, "response", max_chars=MAX_PROGRAM_CHARS),
        model=s.optional_text(m.model, "model", max_chars=MAX_NAME_CHARS["model"]),
        prompt_tokens=_count(s, m.prompt_tokens, "prompt_tokens"),
        completion_tokens=_count(s, m.completion_tokens, "completion_tokens"),
        cost_usd=max(0.0, s.real(m.cost_usd, "cost_usd") or 0.0),
        extra=_mapping(s, m.extra, "extra"))
    score, bad_score = s.score(r.score)
    metrics = _mapping(s, r.metrics, "metrics")
    features = _mapping(s, r.features, "features")
    artifacts = _mapping(s, r.artifacts, "artifacts")
    duration_s = max(0.0, s.real(r.duration_s, "duration_s") or 0.0)
    status, reason = r.status, ""
    if r.status == OK and (bad_score or code != child.code):
        status, reason = INVALID, bad_score or CLEANED_CODE
    if s.notes:
        artifacts["sanitized"] = list(s.notes)
    if reason:
        artifacts["reason"] = reason
    result = replace(r, status=status, score=score if status == r.status else None, metrics=metrics,
                     features=features, artifacts=artifacts, duration_s=duration_s)
    return replace(child, code=code, mutation=mutation, result=result)


def unstorable(child: Any, error: BaseException) -> Any:
    """What is stored when the database refuses an iteration's row even after cleaning: the
    iteration as a failed evaluation saying why, without the values that may have caused it
    (program text, LLM exchange, metrics). No cache entry: no hash is kept."""
    from dataclasses import replace

    from evoforge.evolution.types import ERROR, EvalResult

    s = Sanitizer()
    cause = getattr(error, "orig", None) or error  # SQLAlchemy's text repeats the parameters
    why = s.text(f"{type(cause).__name__}: {cause}", "reason", max_chars=300)
    notes = child.result.artifacts.get("sanitized") or []
    artifacts = {"stage": "commit", "reason": f"the result could not be stored ({why})",
                 "sanitized": [*notes, "code, prompt, response, metrics: dropped (unstorable)"]}
    mutation = replace(child.mutation, prompt=None, response=None, extra={}, error="")
    result = EvalResult(status=ERROR, score=None, artifacts=artifacts,
                        duration_s=child.result.duration_s)
    return replace(child, code=None, code_hash=None, run_hash=None, mutation=mutation,
                   result=result)
