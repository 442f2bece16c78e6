"""Parse and apply LLM edits: SEARCH/REPLACE blocks and full rewrites.

SEARCH/REPLACE blocks use the aider/OpenEvolve format (5 to 9 marker characters accepted):

    <<<<<<< SEARCH
    old lines
    =======
    new lines
    >>>>>>> REPLACE

Rules of `apply_diff` (each block in order, on the result of the previous ones):

1. exact match of the SEARCH text; otherwise a whitespace-tolerant match that ignores trailing
   spaces and a *consistent* indentation shift (every non-blank line shifted by the same
   prefix); the REPLACE text is re-indented by the same shift;
2. when the SEARCH text occurs several times, the first occurrence whose replacement keeps the
   text outside the EVOLVE-BLOCKs unchanged is used;
3. the edit is all or nothing: a block that matches nowhere, a malformed block, or an edit of
   text outside the EVOLVE-BLOCKs fails the whole reply (code=None) with a reason naming the
   block by its first line. Applying half of what the model asked for gives programs nobody
   intended, and the reason is worth more to the next prompt;
4. a Python result must compile (`syntax_check`; other languages are not checked here).

Full rewrites (`extract_rewrite`): the longest block fenced with the candidate's language
(```python, ```rust, ...; else the longest fenced block). When the original has EVOLVE-BLOCKs, only their contents are taken from the rewrite and
the fixed parts of the original are kept:
- the rewrite has the same number of blocks: their contents are spliced into the original;
- the rewrite has no markers and the original has exactly one block: the rewrite minus the
  original's fixed head/tail text (when it repeats them) becomes that block's content;
- otherwise the rewrite is rejected with a reason.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from evoforge.evolution.program import (evolvable_regions, fixed_segments, outside_edit_reason,
                                        replace_regions, syntax_check)

_SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$")
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$")
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class SearchReplace:
    search: str
    replace: str

    @property
    def first_line(self) -> str:
        for line in self.search.splitlines():
            if line.strip():
                return line.strip()
        return ""


@dataclass(frozen=True)
class DiffOutcome:
    """Result of applying an edit. `code` is None when it failed; `error` says why."""

    code: str | None
    applied: int = 0
    error: str = ""
    blocks: int = 0
    kind: str = "diff"            # "diff" or "rewrite"
    failed: list[str] = field(default_factory=list)  # first lines of blocks that did not apply

    @property
    def ok(self) -> bool:
        return self.code is not None


class DiffParseError(ValueError):
    pass


def parse_blocks(reply: str) -> list[SearchReplace]:
    """All SEARCH/REPLACE blocks of a reply. Raises DiffParseError on an unterminated block."""
    blocks: list[SearchReplace] = []
    lines = reply.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        if not _SEARCH.match(lines[i]):
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and not _DIVIDER.match(lines[j]):
            if _SEARCH.match(lines[j]) or _REPLACE.match(lines[j]):
                break
            j += 1
        if j >= len(lines) or not _DIVIDER.match(lines[j]):
            raise DiffParseError(f"SEARCH block at reply line {start + 1} has no '=======' divider")
        k = j + 1
        while k < len(lines) and not _REPLACE.match(lines[k]):
            if _SEARCH.match(lines[k]) or _DIVIDER.match(lines[k]):
                break
            k += 1
        if k >= len(lines) or not _REPLACE.match(lines[k]):
            raise DiffParseError(f"SEARCH block at reply line {start + 1} has no "
                                 "'>>>>>>> REPLACE' end")
        search = "".join(line + "\n" for line in lines[i + 1:j])
        replace = "".join(line + "\n" for line in lines[j + 1:k])
        blocks.append(SearchReplace(search, replace))
        i = k + 1
    return blocks


def has_diff_blocks(reply: str) -> bool:
    return any(_SEARCH.match(line) for line in reply.splitlines())


# ---------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------

def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def _shift(code_line: str, search_line: str) -> tuple[str, str] | None:
    """The indentation change ("add"/"remove", prefix) mapping search_line to code_line."""
    ci, si = _indent(code_line), _indent(search_line)
    if ci.startswith(si):
        return ("add", ci[len(si):])
    if si.startswith(ci):
        return ("remove", si[len(ci):])
    return None


def _tolerant_matches(code_lines: list[str], search_lines: list[str]
                      ) -> list[tuple[int, tuple[str, str]]]:
    """Start indices (and the shift) where search_lines match code_lines up to one consistent
    indentation shift and trailing whitespace (blank lines match blank lines)."""
    n = len(search_lines)
    stripped = [s.rstrip() for s in search_lines]
    out = []
    for start in range(len(code_lines) - n + 1):
        shift: tuple[str, str] | None = None
        for c, s in zip(code_lines[start:start + n], stripped):
            c = c.rstrip()
            if not s.strip():
                if c.strip():
                    break
                continue
            if c.lstrip() != s.lstrip():
                break
            this = _shift(c, s)
            if this is None:
                break
            if not this[1]:
                this = ("add", "")
            if shift is not None and this != shift:
                break
            shift = this
        else:
            out.append((start, shift or ("add", "")))
    return out


def _reindent(lines: list[str], shift: tuple[str, str]) -> list[str]:
    mode, prefix = shift
    if not prefix:
        return lines
    out = []
    for line in lines:
        if not line.strip():
            out.append(line)
        elif mode == "add":
            out.append(prefix + line)
        elif line.startswith(prefix):
            out.append(line[len(prefix):])
        else:  # less indented than the shift: drop what indentation it has, up to the shift
            ind = _indent(line)
            out.append(ind[len(prefix):] + line[len(ind):])
    return out


def _candidates(code: str, block: SearchReplace) -> list[str]:
    """Every way of applying `block` to `code`, best first (exact, then tolerant)."""
    out: list[str] = []
    search, replace = block.search, block.replace
    pos = code.find(search)
    while pos != -1:
        out.append(code[:pos] + replace + code[pos + len(search):])
        pos = code.find(search, pos + 1)
    # whitespace-tolerant, line based; leading/trailing blank lines of SEARCH are not required
    s_lines = search.split("\n")[:-1] if search.endswith("\n") else search.split("\n")
    while s_lines and not s_lines[0].strip():
        s_lines = s_lines[1:]
    while s_lines and not s_lines[-1].strip():
        s_lines = s_lines[:-1]
    if not s_lines:
        return out
    code_lines = code.split("\n")
    r_lines = replace.split("\n")[:-1] if replace.endswith("\n") else replace.split("\n")
    for start, shift in _tolerant_matches(code_lines, s_lines):
        new_lines = code_lines[:start] + _reindent(r_lines, shift) + code_lines[start + len(s_lines):]
        candidate = "\n".join(new_lines)
        if candidate not in out:
            out.append(candidate)
    return out


def apply_blocks(code: str, blocks: list[SearchReplace], language: str = "python") -> DiffOutcome:
    if not blocks:
        return DiffOutcome(None, 0, "no SEARCH/REPLACE blocks in the reply", 0)
    current, applied, failed, reasons = code, 0, [], []
    for n, block in enumerate(blocks, start=1):
        label = f"SEARCH block {n} ({block.first_line!r})"
        if not block.search.strip():
            failed.append(block.first_line)
            reasons.append(f"{label} is empty")
            continue
        candidates = _candidates(current, block)
        if not candidates:
            failed.append(block.first_line)
            reasons.append(f"{label} did not match the program")
            continue
        outside = None
        for cand in candidates:
            outside = outside_edit_reason(code, cand)
            if outside is None:
                current = cand
                applied += 1
                break
        else:
            failed.append(block.first_line)
            reasons.append(f"{label} rejected: {outside}")
    if reasons:
        return DiffOutcome(None, applied, "; ".join(reasons), len(blocks), failed=failed)
    err = syntax_check(current, language)
    if err:
        return DiffOutcome(None, applied, f"edited program does not parse: {err}", len(blocks))
    return DiffOutcome(current, applied, "", len(blocks))


def apply_diff(code: str, reply: str, language: str = "python") -> DiffOutcome:
    """Apply every SEARCH/REPLACE block of `reply` to `code` (see the module doc for the rules)."""
    try:
        blocks = parse_blocks(reply)
    except DiffParseError as exc:
        return DiffOutcome(None, 0, f"malformed edit: {exc}", 0)
    return apply_blocks(code, blocks, language)


# ---------------------------------------------------------------------------------------------
# Full rewrites
# ---------------------------------------------------------------------------------------------

_FENCE_NAMES = {"python": ("python", "py", "python3"), "rust": ("rust", "rs"),
                "cpp": ("cpp", "c++", "cc", "cxx"), "r": ("r",), "javascript": ("javascript", "js"),
                "typescript": ("typescript", "ts"), "bash": ("bash", "sh", "shell")}


def fenced_code(reply: str, language: str = "python") -> str | None:
    """The longest block fenced with `language` (```python, ```py ...); else the longest fenced
    block; else None."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(reply.replace("\r\n", "\n"))]
    if not blocks:
        return None
    lang = (language or "python").lower()
    names = _FENCE_NAMES.get(lang) or next((v for v in _FENCE_NAMES.values() if lang in v), (lang,))
    own = [b for fence, b in blocks if fence in names]
    pool = own or [b for _, b in blocks]
    return max(pool, key=len)


def _strip_repeated(text: str, fixed: str, at_start: bool) -> str:
    """Drop the fixed head (or tail) of the original from `text` if the rewrite repeats it
    (compared line by line, ignoring trailing whitespace and marker lines)."""
    fixed_lines = [line.rstrip() for line in fixed.split("\n") if line.strip()
                   and "EVOLVE-BLOCK" not in line]
    if not fixed_lines:
        return text
    lines = text.split("\n")
    content = [i for i, line in enumerate(lines) if line.strip()]
    if len(content) < len(fixed_lines):
        return text
    idx = content[:len(fixed_lines)] if at_start else content[-len(fixed_lines):]
    if [lines[i].rstrip() for i in idx] != fixed_lines:
        return text
    return "\n".join(lines[idx[-1] + 1:]) if at_start else "\n".join(lines[:idx[0]])


def extract_rewrite(reply: str, original: str, language: str = "python") -> DiffOutcome:
    """A full-program rewrite from a reply, keeping the original's fixed parts (module doc)."""
    body = fenced_code(reply, language)
    if body is None:
        return DiffOutcome(None, 0, "no fenced code block in the reply", 0, kind="rewrite")
    regions = evolvable_regions(original)
    if regions:
        new_regions = evolvable_regions(body)
        if len(new_regions) == len(regions):
            body = replace_regions(original, [body[r.start:r.end] for r in new_regions])
        elif not new_regions and len(regions) == 1:
            head, tail = fixed_segments(original, regions)
            content = _strip_repeated(_strip_repeated(body, head, True), tail, False)
            body = replace_regions(original, [content.strip("\n") + "\n"])
        else:
            return DiffOutcome(None, 0, f"rewrite has {len(new_regions)} EVOLVE-BLOCK(s), the "
                               f"program has {len(regions)}", 0, kind="rewrite")
    err = syntax_check(body, language)
    if err:
        return DiffOutcome(None, 0, f"rewritten program does not parse: {err}", 0, kind="rewrite")
    return DiffOutcome(body, 1, "", 0, kind="rewrite")


def apply_reply(code: str, reply: str, language: str = "python") -> DiffOutcome:
    """SEARCH/REPLACE blocks when the reply has any, else a full rewrite; `language` is the
    candidate's (only Python is syntax-checked)."""
    if has_diff_blocks(reply):
        return apply_diff(code, reply, language)
    return extract_rewrite(reply, code, language)
