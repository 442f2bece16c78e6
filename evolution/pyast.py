"""`ast.parse` that several threads may call at once.

CPython 3.11 keeps the depth counter of its AST object constructor in interpreter-wide state, set
from the calling thread's stack depth at the start of each parse and checked at the end. A parse
allocates thousands of nodes; an allocation can run the garbage collector, the collector can run
a finalizer, and a finalizer is Python code, where the interpreter may switch threads. If the
other thread parses too, the first one finds its counter changed and raises
`SystemError: AST constructor recursion depth mismatch` for code that parses perfectly well
(python/cpython#106905). EvoForge parses in threads: the Celery worker's thread pool, the
embedded executor's workers, the API's read threads. One such error failed a whole campaign.

So every parse in EvoForge goes through `parse`, which holds one process-wide lock. Parsing runs
under the GIL either way, so the lock costs no parallelism.

The standard library parses too: `traceback` parses each line it formats to place its `^^^`
carets, and EvoForge formats a traceback for every failed mutation or evaluation. Such a parse
would corrupt a locked one in another thread, so `traceback`'s caret parse is wrapped: it parses
only when the lock is free, and otherwise the line is shown without carets. It never waits for the
lock: logging formats tracebacks under its handlers' locks, and SQLAlchemy logs from finalizers.

A parse within a parse on the same thread (a finalizer that parses, while the collector runs in
the middle of a parse) goes ahead without the lock rather than deadlock; it can still raise the
`SystemError` in the outer parse. Nothing in EvoForge parses in a finalizer.
`tests/evolution/test_pyast.py` races threads against the bare `ast.parse`, against this one and
against traceback formatting, and checks that nothing else calls the bare one.
"""
from __future__ import annotations

import ast
import functools
import threading
import traceback

_LOCK = threading.Lock()
_here = threading.local()  # .parsing: this thread holds _LOCK


def parse(source: str | bytes, filename: str = "<unknown>") -> ast.Module:
    """`ast.parse(source, filename)`, one thread at a time; raises what `ast.parse` raises."""
    if getattr(_here, "parsing", False):  # a parse within a parse on this thread: see above
        return ast.parse(source, filename)
    with _LOCK:
        _here.parsing = True
        try:
            return ast.parse(source, filename)
        finally:
            _here.parsing = False


def _when_free(parse_for_carets):
    @functools.wraps(parse_for_carets)
    def carets(*args, **kwargs):
        if getattr(_here, "parsing", False) or not _LOCK.acquire(blocking=False):
            return None  # what traceback does with a line it cannot parse: no carets
        try:
            return parse_for_carets(*args, **kwargs)
        finally:
            _LOCK.release()
    carets.evoforge_guarded = True
    return carets


_CARETS = "_extract_caret_anchors_from_line_segment"  # Python 3.11 to 3.13
if callable(getattr(traceback, _CARETS, None)) and not getattr(
        getattr(traceback, _CARETS), "evoforge_guarded", False):
    setattr(traceback, _CARETS, _when_free(getattr(traceback, _CARETS)))
