"""What every command shares: the database, the start-up (GC, sandbox warm-up), input files,
output (JSON lines, readable numbers, escaped text) and error types."""
from __future__ import annotations

import gc
import json
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import click

from evoforge.cli.term import safe

DB_HELP = "Database URL (default: $EVOFORGE_DATABASE_URL, else SQLite under ~/.local/share/evoforge)."


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected k=v, got {pair!r}", param_hint="--param")
        out[key.strip()] = value.strip()
    return out


def open_sessions(db: str | None):
    from evoforge.db.engine import session_factory, upgrade

    try:
        upgrade(db)
    except Exception as exc:
        raise click.ClickException(f"cannot open database {db or '(default)'}: {exc}") from None
    return session_factory(db)


_gc_paused = False


def _pause_gc() -> None:
    """Start-up (SQLAlchemy, pydantic models, the openai package's hundreds of types) creates
    ~200k objects that live as long as the process, and the cyclic GC would traverse them again
    and again while they are being created: ~15% of the start-up. So it is paused until the
    first iteration is committed (resume_gc)."""
    global _gc_paused
    if gc.isenabled():
        gc.disable()
        _gc_paused = True


def resume_gc() -> None:
    """The start-up's objects go to the permanent generation (gc.freeze: no later collection
    traverses them; the few hundred cyclic garbage objects among them stay), then the GC runs
    as usual."""
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        gc.freeze()
        gc.enable()


@contextmanager
def start_up() -> Iterator[Callable[[str], None]]:
    """For run/openevolve: the GC paused (see _pause_gc), and `warm(kind)`, which starts the shared
    sandbox of that kind in the background now, so that its server starts while the command sets
    up the database, the campaign and the mutator (worker.runtime.prestart_sandbox). Every
    sandbox is closed at the end, also when the command fails before its run."""
    _pause_gc()
    try:
        from evoforge.worker.runtime import close_sandboxes, prestart_sandbox

        def warm(kind: str) -> None:
            prestart_sandbox(os.environ.get("EVOFORGE_SANDBOX") or kind)  # as Runtime.for_campaign

        try:
            yield warm
        finally:
            close_sandboxes()
    finally:
        resume_gc()


def emit_json(obj: Any) -> None:
    # ensure_ascii (the default) writes every control character, C1 included, as \uXXXX.
    click.echo(json.dumps(obj, default=str))


class InputError(click.ClickException):
    """A file or value the user gave that cannot be used: one line, exit code 2 (usage)."""
    exit_code = 2


class SafeGroup(click.Group):
    """Error messages can quote a campaign name, a stored URL or a file's path: escaped
    (cli/term.py) before click prints them."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            exc.message = safe(exc.message)
            raise




def read_input(path: str) -> str:
    """A program or problem file the user named: regular, at most 1 MB, UTF-8 (else exit 2)."""
    from evoforge.evaluators.textfile import TextFileError, read_text_file

    try:
        return read_text_file(path)
    except TextFileError as exc:
        raise InputError(str(exc)) from None


def number(value: Any) -> str:
    """A float as a person reads it (6 significant digits); `--json` keeps full precision."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)
