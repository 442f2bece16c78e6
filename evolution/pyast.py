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
under the GIL either way, so the lock costs no parallelism. It is re-entrant, so a finalizer that
parses on the same thread cannot deadlock. `tests/evolution/test_pyast.py` races threads against
the bare `ast.parse` and against this one, and checks that nothing else calls the bare one.

Left: the standard library's own parses (Python 3.11's `traceback` parses a line to place its
carets) do not take this lock. They parse one line, rarely, when an error is formatted.
"""
from __future__ import annotations

import ast
import threading

_LOCK = threading.RLock()


def parse(source: str | bytes, filename: str = "<unknown>") -> ast.Module:
    """`ast.parse(source, filename)`, one thread at a time; raises what `ast.parse` raises."""
    with _LOCK:
        return ast.parse(source, filename)
