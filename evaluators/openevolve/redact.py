"""Drop the secrets from a parsed OpenEvolve config before anything reads it.

OpenEvolve configs often carry `llm.api_key`, per-model `api_key`s, or headers with a bearer
token. EvoForge takes keys from the environment only (EVOFORGE_LLM_API_KEY / OPENAI_API_KEY,
or the operator's endpoints), so such keys are removed, wherever they are nested, before the
config is mapped: no value of theirs can reach the campaign's stored config, a note or the
terminal. Their paths (never their values) are returned, to tell the user what was ignored.
A `user:password@` or a key-like query parameter in `api_base` is removed the same way.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_KEY = re.compile(
    r"^(key|token|auth|authorization|headers|extra_headers|default_headers|cookies?|"
    r"default_query|extra_query)$|"
    r"(^|_)(api_?key|secret|password|passwd|credentials?|token|access_key|private_key)$", re.I)


def _secret(key: Any) -> bool:
    return SECRET_KEY.search(str(key).strip().replace("-", "_")) is not None


def drop_secrets(value: Any, path: str = "", _seen: set[int] | None = None) -> list[str]:
    """Remove secret-looking keys from `value` (dicts and lists, in place); their paths.
    Each container is visited once (YAML aliases can share or nest them)."""
    dropped: list[str] = []
    seen = set() if _seen is None else _seen
    if isinstance(value, (dict, list)):
        if id(value) in seen:
            return dropped
        seen.add(id(value))
    if isinstance(value, dict):
        for key in list(value):
            where = f"{path}.{key}" if path else str(key)
            if _secret(key):
                del value[key]
                dropped.append(where)
            elif key == "api_base" and isinstance(value[key], str):
                value[key], what = _clean_url(value[key])
                dropped += [f"{where} {w}" for w in what]
            else:
                dropped += drop_secrets(value[key], where, seen)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            dropped += drop_secrets(item, f"{path}[{i}]", seen)
    return dropped


def _clean_url(url: str) -> tuple[str, list[str]]:
    """`url` without user:password and key-like query parameters, and what was removed."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, []
    what, netloc = [], parts.netloc
    if "@" in netloc:
        netloc = netloc.rpartition("@")[2]
        what.append("user:password")
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if not _secret(k) and k.lower() not in ("code", "sig")]
    if len(kept) != len(query):
        what.append("query key")
    if not what:
        return url, []
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(kept), parts.fragment)), what
