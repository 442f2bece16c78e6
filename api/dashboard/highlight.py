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


def highlight_file(path: str, text: str) -> tuple[str, str]:
    """A problem's file, highlighted by the lexer its name implies (plain text when none does):
    (HTML, the language's name). The name picks the lexer, never the content."""
    from pygments.lexers import TextLexer, get_lexer_for_filename
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_for_filename(path.rsplit("/", 1)[-1], stripnl=False)
    except ClassNotFound:
        lexer = TextLexer(stripnl=False)
    if len(text) > MAX_CHARS:
        return _plain(text), lexer.name
    return highlight(text, lexer, _formatter(linenos=True)), lexer.name


def highlight_config(config: dict) -> dict[str, str]:
    """A problem's config as highlighted YAML and JSON."""
    import json

    import yaml
    from pygments.lexers import JsonLexer, YamlLexer

    as_yaml = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100) if config else "{}\n"
    as_json = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    out = {}
    for key, text, lexer in (("yaml", as_yaml, YamlLexer), ("json", as_json, JsonLexer)):
        out[key] = _plain(text) if len(text) > MAX_CHARS else highlight(text, lexer(), _formatter(linenos=False))
    return out


@lru_cache(maxsize=1)
def stylesheet() -> str:
    return HtmlFormatter(style=STYLE, cssclass=CSS_CLASS).get_style_defs(f".{CSS_CLASS}")
