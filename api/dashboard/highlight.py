"""Server-side syntax highlighting with Pygments (installed with rich): HTML fragments + CSS."""
from __future__ import annotations

from functools import lru_cache

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer, PythonLexer

CSS_CLASS = "hl"
STYLE = "friendly"
MAX_CHARS = 400_000  # beyond this, plain escaped text (highlighting is linear but not free)


def _formatter(linenos: bool) -> HtmlFormatter:
    return HtmlFormatter(cssclass=CSS_CLASS, linenos="table" if linenos else False,
                         style=STYLE, wrapcode=True)


def _plain(text: str) -> str:
    import html

    return f'<div class="{CSS_CLASS}"><pre><code>{html.escape(text)}</code></pre></div>'


def highlight_python(code: str | None) -> str | None:
    if code is None:
        return None
    if len(code) > MAX_CHARS:
        return _plain(code)
    return highlight(code, PythonLexer(), _formatter(linenos=True))


def highlight_diff(diff: str | None) -> str | None:
    if not diff:
        return None
    if len(diff) > MAX_CHARS:
        return _plain(diff)
    return highlight(diff, DiffLexer(), _formatter(linenos=False))


@lru_cache(maxsize=1)
def stylesheet() -> str:
    return HtmlFormatter(style=STYLE, cssclass=CSS_CLASS).get_style_defs(f".{CSS_CLASS}")
