"""The local mutator: small AST-guided edits that keep a program valid, no LLM needed.

Edits are found on the AST but made on the *source text* (by node positions), so comments,
formatting and everything outside the edited node stay byte-identical; in particular the fixed
parts around EVOLVE-BLOCKs never change. When a program has EVOLVE-BLOCKs only nodes lying
entirely inside a block are edited.

Operators (`Mutation.kind`):
- `ast:const`       perturb a numeric literal (floats: gaussian relative change at a random
                    scale plus a small absolute one; ints: +-1);
- `ast:swap-cmp`    `<` `<=` `>` `>=` among themselves, `==` <-> `!=`;
- `ast:swap-arith`  `+` `-` `*` `/` among themselves;
- `ast:dup-stmt`, `ast:del-stmt`, `ast:swap-stmt`  on statements inside function bodies
                    (a body is never left empty);
- `ast:crossover`   replace a function with the same-named function of an inspiration.

A program in another language (`language` is not Python: Rust, C++, R...) cannot be parsed
here: it gets the text-level `text:const` edit of evolution/text_mutator.py instead.

Every candidate is re-parsed; an operator that cannot apply, or yields unchanged or invalid
code, is retried with another draw. Everything random comes from the `rng` passed in, so a seed
fixes the result.

Asking again costs nothing, so given `seen(code) -> bool` (the step passes the store's
`has_code`: does the campaign already hold this exact text?) the mutator draws again, up to
`max_draws` times, until it proposes code the campaign does not have yet; only when every draw is a repeat does it return one
(`extra["repeat"]`). `extra["draws"]` counts the draws made.
"""
from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass, replace
from typing import Callable

from evoforge.evolution import pyast
from evoforge.evolution.hashing import normalize_code
from evoforge.evolution.program import Region, evolvable_regions, is_python, syntax_check
from evoforge.evolution.step import Selection
from evoforge.evolution.text_mutator import perturb_literal
from evoforge.evolution.types import Mutation

_CMP_TEXT = {ast.Lt: r"<(?![<=])", ast.LtE: r"<=", ast.Gt: r"(?<![-=>])>(?![>=])",
             ast.GtE: r">=", ast.Eq: r"==", ast.NotEq: r"!="}
_CMP_SYMBOL = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
               ast.NotEq: "!="}
_CMP_GROUPS = ((ast.Lt, ast.LtE, ast.Gt, ast.GtE), (ast.Eq, ast.NotEq))
_ARITH_TEXT = {ast.Add: r"\+", ast.Sub: r"-", ast.Mult: r"\*(?!\*)", ast.Div: r"/(?!/)"}
_ARITH_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}

Seen = Callable[[str], bool]  # seen(code): the campaign already holds this exact code

OPERATORS = ("const", "swap-cmp", "swap-arith", "dup-stmt", "del-stmt", "swap-stmt", "crossover")
DEFAULT_WEIGHTS = {"const": 6.0, "swap-cmp": 1.0, "swap-arith": 1.0, "dup-stmt": 0.5,
                   "del-stmt": 0.5, "swap-stmt": 0.5, "crossover": 1.5}


class _Source:
    """Source text with (line, utf-8 column) -> character offset conversion."""

    def __init__(self, code: str):
        self.code = code
        self.lines = code.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))

    def offset(self, lineno: int, col_byte: int) -> int:
        if lineno - 1 >= len(self.lines):
            return len(self.code)
        line = self.lines[lineno - 1]
        col = len(line.encode("utf-8")[:col_byte].decode("utf-8", "ignore"))
        return self.starts[lineno - 1] + col

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (self.offset(node.lineno, node.col_offset),
                self.offset(node.end_lineno, node.end_col_offset))

    def line_offset(self, lineno: int) -> int:
        return self.starts[min(lineno - 1, len(self.lines))]

    def splice(self, start: int, end: int, text: str) -> str:
        return self.code[:start] + text + self.code[end:]


def _first_line(node: ast.AST) -> int:
    decorators = getattr(node, "decorator_list", None) or []
    return min([node.lineno] + [d.lineno for d in decorators])


def _inside(node: ast.AST, regions: list[Region]) -> bool:
    if not regions:
        return True
    first, last = _first_line(node), node.end_lineno or node.lineno
    return any(r.first_line <= first and last <= r.last_line for r in regions)


@dataclass
class _Ctx:
    code: str
    tree: ast.Module
    src: _Source
    regions: list[Region]
    selection: Selection
    rng: random.Random

    def nodes(self, kind) -> list:
        return [n for n in ast.walk(self.tree) if isinstance(n, kind) and _inside(n, self.regions)]


@dataclass
class _TextCtx:
    """A program the AST cannot read (another language): edited as text."""
    code: str
    rng: random.Random


class LocalASTMutator:
    """`Mutator` that edits the parent program locally (see the module doc)."""

    # The step passes `seen` only to mutators that say they take it (evolution/step.py).
    takes_seen = True

    def __init__(self, weights: dict[str, float] | None = None, max_attempts: int = 24,
                 int_step: int = 1, scales: tuple[float, ...] = (0.001, 0.01, 0.1),
                 max_draws: int = 8, language: str = "python"):
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        unknown = set(self.weights) - set(OPERATORS)
        if unknown:
            raise ValueError(f"unknown operators: {sorted(unknown)}")
        self.max_attempts = max_attempts
        self.max_draws = max(1, max_draws)
        self.int_step = int_step
        self.scales = scales
        self.language = language

    def mutate(self, selection: Selection, rng: random.Random, seen: Seen | None = None) -> Mutation:
        """One edit of the parent; with `seen`, the first of up to `max_draws` edits whose code
        is not `seen` (else the last draw, marked `repeat`)."""
        ctx = self._context(selection, rng)
        if isinstance(ctx, Mutation):
            return ctx
        if seen is None:
            return self._draw(ctx)
        tried: set[str] = set()
        for draw in range(1, self.max_draws + 1):
            mutation = self._draw(ctx)
            if mutation.code is None:
                return mutation
            if mutation.code in tried or seen(mutation.code):
                tried.add(mutation.code)
                continue
            return replace(mutation, extra={**mutation.extra, "draws": draw})
        return replace(mutation, extra={**mutation.extra, "draws": self.max_draws, "repeat": True})

    def _context(self, selection: Selection, rng: random.Random) -> "_Ctx | Mutation":
        parent = selection.parent
        if parent is None:
            return Mutation(code=None, kind="error", error="no parent")
        code = parent.code
        if not is_python(self.language):
            return _TextCtx(code, rng)
        try:
            tree = pyast.parse(code)
        except (SyntaxError, ValueError, RecursionError) as exc:
            return Mutation(code=None, kind="error", error=f"parent does not parse: {exc}")
        return _Ctx(code, tree, _Source(code), evolvable_regions(code), selection, rng)

    def _draw(self, ctx: "_Ctx | _TextCtx") -> Mutation:
        """One valid edit that changes the normalised code, within `max_attempts` operator
        draws, or an error Mutation."""
        if isinstance(ctx, _TextCtx):
            return self._text_draw(ctx)
        rng = ctx.rng
        same = normalize_code(ctx.code)
        ops = [op for op in OPERATORS if self.weights.get(op, 0) > 0]
        weights = [self.weights[op] for op in ops]
        for _ in range(self.max_attempts):
            op = rng.choices(ops, weights)[0]
            result = getattr(self, "_" + op.replace("-", "_"))(ctx)
            if result is None:
                continue
            new_code, detail = result
            if syntax_check(new_code) is not None or normalize_code(new_code) == same:
                continue
            return Mutation(code=new_code, kind=f"ast:{op}", extra={"detail": detail})
        return Mutation(code=None, kind="error",
                        error=f"no applicable AST mutation after {self.max_attempts} attempts")

    def _text_draw(self, ctx: "_TextCtx") -> Mutation:
        for _ in range(self.max_attempts):
            result = perturb_literal(ctx.code, ctx.rng, scales=self.scales, int_step=self.int_step)
            if result is None:
                continue
            return Mutation(code=result[0], kind="text:const", extra={"detail": result[1]})
        return Mutation(code=None, kind="error",
                        error=f"no numeric literal to change in this {self.language} program's "
                              "EVOLVE-BLOCK (the local mutator edits only numbers outside Python)")

    # -- operators: each returns (new code, detail) or None --------------------------------

    def _const(self, ctx: _Ctx):
        in_fstrings = {id(sub) for js in ast.walk(ctx.tree) if isinstance(js, ast.JoinedStr)
                       for sub in ast.walk(js)}  # no reliable positions there before 3.12
        consts = [n for n in ctx.nodes(ast.Constant)
                  if type(n.value) in (int, float) and id(n) not in in_fstrings]
        if not consts:
            return None
        node = ctx.rng.choice(consts)
        old = node.value
        if isinstance(old, int):
            step = ctx.rng.randint(1, max(1, self.int_step))
            new = old + (step if ctx.rng.random() < 0.5 else -step)
            text = str(new)
        else:
            scale = ctx.rng.choice(self.scales)
            new = old * (1.0 + ctx.rng.gauss(0.0, scale)) + ctx.rng.gauss(0.0, scale * 0.1)
            new = float(f"{new:.8g}")
            if new == old:
                return None
            text = repr(new)
        if text.startswith("-"):
            text = f"({text})"
        start, end = ctx.src.span(node)
        return ctx.src.splice(start, end, text), f"line {node.lineno}: {old!r} -> {new!r}"

    def _swap_cmp(self, ctx: _Ctx):
        sites = []
        for node in ctx.nodes(ast.Compare):
            operands = [node.left] + node.comparators
            for i, op in enumerate(node.ops):
                if type(op) in _CMP_TEXT:
                    sites.append((operands[i], operands[i + 1], type(op)))
        if not sites:
            return None
        left, right, op = ctx.rng.choice(sites)
        group = next(g for g in _CMP_GROUPS if op in g)
        new = ctx.rng.choice([o for o in group if o is not op])
        return self._replace_between(ctx, left, right, _CMP_TEXT[op], _CMP_SYMBOL[new],
                                     f"{_CMP_SYMBOL[op]} -> {_CMP_SYMBOL[new]}")

    def _swap_arith(self, ctx: _Ctx):
        sites = [n for n in ctx.nodes(ast.BinOp) if type(n.op) in _ARITH_TEXT]
        if not sites:
            return None
        node = ctx.rng.choice(sites)
        op = type(node.op)
        new = ctx.rng.choice([o for o in _ARITH_TEXT if o is not op])
        return self._replace_between(ctx, node.left, node.right, _ARITH_TEXT[op],
                                     _ARITH_SYMBOL[new], f"{_ARITH_SYMBOL[op]} -> {_ARITH_SYMBOL[new]}")

    @staticmethod
    def _replace_between(ctx: _Ctx, left: ast.AST, right: ast.AST, pattern: str, symbol: str,
                         detail: str):
        gap_start = ctx.src.span(left)[1]
        gap_end = ctx.src.span(right)[0]
        gap = ctx.code[gap_start:gap_end]
        # only whitespace, brackets, the operator and comments lie between two operands
        code_part = re.sub(r"#[^\n]*", lambda m: " " * len(m.group()), gap)
        m = re.search(pattern, code_part)
        if m is None:
            return None
        start = gap_start + m.start()
        return ctx.src.splice(start, gap_start + m.end(), symbol), f"line {left.lineno}: {detail}"

    def _bodies(self, ctx: _Ctx) -> list[list[ast.stmt]]:
        """Statement lists inside function bodies (nested blocks included), evolvable only."""
        out = []
        for fn in ctx.nodes((ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):  # nested blocks, except handlers, match cases, ...
                for name in ("body", "orelse", "finalbody"):
                    body = getattr(node, name, None)
                    if (isinstance(body, list) and body and isinstance(body[0], ast.stmt)
                            and all(_inside(s, ctx.regions) for s in body)):
                        out.append(body)
        # nested functions are reached from their own def and from the outer one: dedupe
        seen, unique = set(), []
        for body in out:
            if id(body) not in seen:
                seen.add(id(body))
                unique.append(body)
        return unique

    def _stmt_lines(self, ctx: _Ctx, stmt: ast.stmt) -> tuple[int, int] | None:
        """(first, last) 1-based lines of a statement that owns its lines alone, else None."""
        if (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)):
            return None  # docstrings and bare strings: editing them changes nothing
        first, last = _first_line(stmt), stmt.end_lineno
        lines = ctx.src.lines
        head = lines[first - 1]
        start_node = stmt.decorator_list[0] if getattr(stmt, "decorator_list", None) else stmt
        col = len(head.encode("utf-8")[:start_node.col_offset].decode("utf-8", "ignore"))
        if head[:col].strip() not in ("", "@"):
            return None
        tail = lines[last - 1]
        end_col = len(tail.encode("utf-8")[:stmt.end_col_offset].decode("utf-8", "ignore"))
        rest = tail[end_col:].strip()
        if rest and not rest.startswith("#"):
            return None
        return first, last

    def _stmt_text(self, ctx: _Ctx, first: int, last: int) -> tuple[int, int, str]:
        """(start, end, text) of whole lines first..last; text always ends with a newline."""
        start, end = ctx.src.line_offset(first), ctx.src.line_offset(last + 1)
        text = ctx.code[start:end]
        return start, end, text if text.endswith("\n") else text + "\n"

    def _dup_stmt(self, ctx: _Ctx):
        sites = [(b, i) for b in self._bodies(ctx) for i in range(len(b))]
        if not sites:
            return None
        body, i = ctx.rng.choice(sites)
        span = self._stmt_lines(ctx, body[i])
        if span is None:
            return None
        start, end, text = self._stmt_text(ctx, *span)
        head = ctx.code[:end] if ctx.code[:end].endswith("\n") else ctx.code[:end] + "\n"
        return head + text + ctx.code[end:], f"duplicated line {span[0]}"

    def _del_stmt(self, ctx: _Ctx):
        sites = [(b, i) for b in self._bodies(ctx) if len(b) > 1 for i in range(len(b))]
        if not sites:
            return None
        body, i = ctx.rng.choice(sites)
        span = self._stmt_lines(ctx, body[i])
        if span is None:
            return None
        start, end, _ = self._stmt_text(ctx, *span)
        return ctx.code[:start] + ctx.code[end:], f"deleted line {span[0]}"

    def _swap_stmt(self, ctx: _Ctx):
        sites = [(b, i) for b in self._bodies(ctx) if len(b) > 1 for i in range(len(b) - 1)]
        if not sites:
            return None
        body, i = ctx.rng.choice(sites)
        a, b = self._stmt_lines(ctx, body[i]), self._stmt_lines(ctx, body[i + 1])
        if a is None or b is None:
            return None
        a_start, a_end, a_text = self._stmt_text(ctx, *a)
        b_start, b_end, b_text = self._stmt_text(ctx, *b)
        between = ctx.code[a_end:b_start]
        tail = ctx.code[b_end:]
        return (ctx.code[:a_start] + b_text + between + a_text + tail,
                f"swapped lines {a[0]} and {b[0]}")

    def _crossover(self, ctx: _Ctx):
        parent = ctx.selection.parent
        donors, seen = [], {parent.id if parent else None}
        for ref in list(ctx.selection.inspirations) + list(ctx.selection.top):
            if ref.id not in seen and ref.code != ctx.code:
                seen.add(ref.id)
                donors.append(ref)
        if not donors:
            return None
        mine = {}
        for fn in ctx.nodes((ast.FunctionDef, ast.AsyncFunctionDef)):
            mine.setdefault(fn.name, fn)
        sites = []
        for donor in donors:
            try:
                dtree = pyast.parse(donor.code)
            except (SyntaxError, ValueError, RecursionError):
                continue
            dregions = evolvable_regions(donor.code)
            dsrc = _Source(donor.code)
            for fn in ast.walk(dtree):
                if (isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.name in mine
                        and _inside(fn, dregions)
                        and ast.dump(fn) != ast.dump(mine[fn.name])):
                    sites.append((donor, dsrc, fn))
        if not sites:
            return None
        donor, dsrc, dfn = ctx.rng.choice(sites)
        target = mine[dfn.name]
        span = self._stmt_lines(ctx, target)
        if span is None:
            return None
        d_first, d_last = _first_line(dfn), dfn.end_lineno
        d_text = "".join(dsrc.lines[d_first - 1:d_last])
        d_indent = _leading(dsrc.lines[d_first - 1])
        t_indent = _leading(ctx.src.lines[span[0] - 1])
        lines = []
        for line in d_text.splitlines(keepends=True):
            if line.startswith(d_indent):
                line = line[len(d_indent):]
            lines.append(t_indent + line if line.strip() else line)
        text = "".join(lines)
        if not text.endswith("\n"):
            text += "\n"
        start, end, _ = self._stmt_text(ctx, *span)
        return ctx.code[:start] + text + ctx.code[end:], f"{dfn.name} from program {donor.id}"


def _leading(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]
