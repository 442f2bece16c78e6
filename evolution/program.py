"""Program text: EVOLVE-BLOCK regions and syntax checks.

A program may mark the parts evolution may change:

    # EVOLVE-BLOCK-START
    ... evolvable code ...
    # EVOLVE-BLOCK-END

A marker is a line whose stripped text starts with a comment leader (`COMMENT_LEADERS`: `#`,
`//`, `--`, `%`, `;`, `/*`, ...: Python, Rust, C++, R, Lua, MATLAB, Lisp candidates alike) and
contains `EVOLVE-BLOCK-START` or `EVOLVE-BLOCK-END`. Only Python candidates get a syntax check
here (`syntax_check(code, language)`); another language's compiler is the evaluator's business. The evolvable region is the text *between* the marker lines; the marker
lines themselves and everything outside are fixed. Unbalanced markers are read leniently: a
START without an END runs to the end of the file, an END without a START is an ordinary line,
a second START inside a region is ignored. A program with no markers is evolvable as a whole.
"""
from __future__ import annotations

from dataclasses import dataclass

START_MARKER = "EVOLVE-BLOCK-START"
END_MARKER = "EVOLVE-BLOCK-END"
COMMENT_LEADERS = ("#", "//", "--", "%", ";", "/*", "(*", "{-", "<!--")
PYTHON = frozenset({"python", "python3", "py"})


def is_python(language: str | None) -> bool:
    """Whether candidates in `language` are Python (None and "" mean Python)."""
    return not language or language.strip().lower() in PYTHON


@dataclass(frozen=True)
class Region:
    """An evolvable region: `code[start:end]`, lines `first_line..last_line` (1-based, inclusive;
    `last_line < first_line` when the region is empty)."""

    start: int
    end: int
    first_line: int
    last_line: int


def _marker(line: str) -> str | None:
    s = line.strip()
    if not s.startswith(COMMENT_LEADERS):
        return None
    if START_MARKER in s:
        return START_MARKER
    if END_MARKER in s:
        return END_MARKER
    return None


def evolvable_regions(code: str) -> list[Region]:
    """The EVOLVE-BLOCK regions of `code`, in order (empty list when there are no markers)."""
    regions: list[Region] = []
    offset = 0
    open_at: tuple[int, int] | None = None  # (char offset, 1-based line) where content starts
    for lineno, line in enumerate(code.splitlines(keepends=True), start=1):
        kind = _marker(line)
        if kind == START_MARKER and open_at is None:
            open_at = (offset + len(line), lineno + 1)
        elif kind == END_MARKER and open_at is not None:
            regions.append(Region(open_at[0], offset, open_at[1], lineno - 1))
            open_at = None
        offset += len(line)
    if open_at is not None:
        last_line = code.count("\n") + (0 if code.endswith("\n") or not code else 1)
        regions.append(Region(open_at[0], len(code), open_at[1], last_line))
    return regions


def has_evolve_blocks(code: str) -> bool:
    return bool(evolvable_regions(code))


def fixed_segments(code: str, regions: list[Region] | None = None) -> list[str]:
    """The text outside the regions: len(regions) + 1 segments (the whole code if none)."""
    regions = evolvable_regions(code) if regions is None else regions
    out, pos = [], 0
    for r in regions:
        out.append(code[pos:r.start])
        pos = r.end
    out.append(code[pos:])
    return out


def region_texts(code: str) -> list[str]:
    return [code[r.start:r.end] for r in evolvable_regions(code)]


def line_in_regions(lineno: int, regions: list[Region]) -> bool:
    return any(r.first_line <= lineno <= r.last_line for r in regions)


def span_in_regions(first_line: int, last_line: int, regions: list[Region]) -> bool:
    """True when lines first_line..last_line lie inside one region (always True without regions)."""
    if not regions:
        return True
    return any(r.first_line <= first_line and last_line <= r.last_line for r in regions)


def outside_edit_reason(original: str, edited: str) -> str | None:
    """Why `edited` changed text outside the EVOLVE-BLOCKs of `original`; None when it did not.

    Without markers in `original` every edit is allowed. Otherwise the edited program must have
    the same number of regions and byte-identical fixed text (markers included) around them.
    """
    regions = evolvable_regions(original)
    if not regions:
        return None
    new_regions = evolvable_regions(edited)
    if len(new_regions) != len(regions):
        return (f"the edit changed the EVOLVE-BLOCK markers ({len(regions)} block(s) before, "
                f"{len(new_regions)} after)")
    old_fixed = fixed_segments(original, regions)
    new_fixed = fixed_segments(edited, new_regions)
    for i, (a, b) in enumerate(zip(old_fixed, new_fixed)):
        if a != b:
            where = ("before the first EVOLVE-BLOCK" if i == 0 else
                     "after the last EVOLVE-BLOCK" if i == len(regions) else
                     f"between EVOLVE-BLOCK {i} and {i + 1}")
            line = _first_diff_line(a, b)
            return f"the edit changed code outside the EVOLVE-BLOCKs ({where}): {line!r}"
    return None


def _first_diff_line(a: str, b: str) -> str:
    la, lb = a.splitlines(), b.splitlines()
    for x, y in zip(la, lb):
        if x != y:
            return x.strip() or y.strip()
    rest = la[len(lb):] or lb[len(la):]
    return rest[0].strip() if rest else ""


def replace_regions(code: str, contents: list[str]) -> str:
    """`code` with its regions' text replaced by `contents` (same count required)."""
    regions = evolvable_regions(code)
    if len(contents) != len(regions):
        raise ValueError(f"{len(regions)} EVOLVE-BLOCK(s) but {len(contents)} replacement(s)")
    fixed = fixed_segments(code, regions)
    parts = [fixed[0]]
    for text, seg in zip(contents, fixed[1:]):
        if text and not text.endswith("\n"):
            text += "\n"
        parts += [text, seg]
    return "".join(parts)


def syntax_check(code: str, language: str | None = "python") -> str | None:
    """None when `code` compiles as a Python module (or is not Python: nothing to check here),
    else a one-line error message."""
    if not is_python(language):
        return None
    try:
        compile(code, "<candidate>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        text = (exc.text or "").strip()
        where = f" (line {exc.lineno})" if exc.lineno else ""
        shown = f": {text[:120]!r}" if text else ""
        return f"{type(exc).__name__}: {exc.msg}{where}{shown}"
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:200] or 'cannot compile'}"
    return None
