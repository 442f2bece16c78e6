"""A problem's declared Python requirements, checked inside the sandbox that will run it.

A problem (OpenEvolve's `requirements.txt`, a native `requires`) names what its evaluator and
candidates import. They must already be installed where candidates run: the fork-server's
interpreter, or the container image for `sandbox: docker`. Nothing is ever installed or fetched
for a problem, so pip options (`-r`, `--index-url`, ...), URLs and paths are refused, not
ignored. The check runs as a sandboxed program that gets the distribution names as data (the
call's inputs, never spliced into code): `importlib.metadata` finds the distribution and its
version, and the distribution's top-level module is imported, because an installed
distribution can still fail to import. Versions are compared here, on the trusted side, with
`packaging`. Answers are cached in-process per (sandbox, requirement set).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion

MAX_REQUIREMENTS = 200
MAX_LINE_CHARS = 300
CHECK_TIMEOUT_S = 120.0
CHECK_MEMORY_MB = 4096
_CACHE_SIZE = 256

_cache: OrderedDict[tuple[str, tuple[str, ...]], list[str]] = OrderedDict()
_cache_lock = threading.Lock()


class RequirementError(ValueError):
    """A requirement line that is refused; the message is one line and says which and why."""


def parse_requirements(lines: list[str]) -> list[Requirement]:
    """PEP 508 requirements from requirements.txt-style lines. Blank lines and comments are
    dropped; options, URLs, paths and anything `packaging` cannot parse are refused."""
    if not isinstance(lines, (list, tuple)):
        raise RequirementError("requirements must be a list of strings")
    out: list[Requirement] = []
    for n, raw in enumerate(lines, 1):
        if not isinstance(raw, str):
            raise RequirementError(f"requirement {n} is not a string")
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        shown = line[:80].encode("ascii", "backslashreplace").decode()
        if len(line) > MAX_LINE_CHARS:
            raise RequirementError(f"requirement {n} is longer than {MAX_LINE_CHARS} characters")
        if line.startswith("-"):
            raise RequirementError(f"requirement {n} ({shown!r}) is a pip option: a problem "
                                   "names packages only, the server never installs or fetches "
                                   "anything")
        if "://" in line or line.startswith((".", "/", "~")) or "\\" in line:
            raise RequirementError(f"requirement {n} ({shown!r}) is a URL or a path: a problem "
                                   "names packages only, the server never installs or fetches "
                                   "anything")
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            why = str(exc).splitlines()[0][:120]
            raise RequirementError(f"requirement {n} ({shown!r}) is not a PEP 508 requirement "
                                   f"(a name with an optional version, e.g. numpy>=1.26): "
                                   f"{why}") from None
        if req.url:
            raise RequirementError(f"requirement {n} ({shown!r}) is a URL: a problem names "
                                   "packages only, the server never installs or fetches anything")
        out.append(req)
        if len(out) > MAX_REQUIREMENTS:
            raise RequirementError(f"more than {MAX_REQUIREMENTS} requirements")
    return out


# Runs in the sandbox, once per requirement: `name` arrives as the call's data.
CHECK_PROGRAM = '''
import importlib
import importlib.metadata as md
import re


def _canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def check(name):
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        dist = None
    if dist is None:  # not a distribution name: maybe a module that imports anyway
        try:
            importlib.import_module(name.replace("-", "_"))
        except Exception:
            return {"found": False, "version": None, "error": ""}
        return {"found": True, "version": None, "error": ""}
    tops = (dist.read_text("top_level.txt") or "").split()
    if not tops:
        want = _canon(dist.metadata["Name"] or name)
        tops = sorted(m for m, ds in md.packages_distributions().items()
                      if any(_canon(d) == want for d in ds))
    tops = [m for m in tops if m.isidentifier() and not m.startswith("_")]
    error = ""
    if tops:
        try:
            importlib.import_module(tops[0])
        except BaseException as exc:
            error = "import %s fails: %s: %s" % (tops[0], type(exc).__name__,
                                               str(exc).splitlines()[0][:200] if str(exc) else "")
    return {"found": True, "version": dist.version, "error": error}
'''


def check_requirements(requirements: list[str], sandbox: str = "fork") -> list[str]:
    """The requirements that the `sandbox` kind's interpreter lacks, as "name (why)":
    "scikit-learn (not installed)", "numpy>=9 (found 1.26.4)". Refused lines raise
    RequirementError; a sandbox that cannot run raises SandboxUnavailable. A requirement whose
    marker does not apply (`; python_version < "3.8"`) is skipped."""
    reqs = [r for r in parse_requirements(list(requirements))
            if r.marker is None or r.marker.evaluate()]
    if not reqs:
        return []
    key = (sandbox, tuple(sorted(str(r) for r in reqs)))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return list(_cache[key])
    missing = _run_check(reqs, sandbox)
    with _cache_lock:
        _cache[key] = missing
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return list(missing)


def _run_check(reqs: list[Requirement], sandbox: str) -> list[str]:
    from evoforge.worker.runtime import shared_sandbox

    names = sorted({canonicalize_name(r.name) for r in reqs})
    run = shared_sandbox(sandbox).run(CHECK_PROGRAM, "check", [{"name": n} for n in names],
                                      timeout_s=CHECK_TIMEOUT_S, memory_mb=CHECK_MEMORY_MB)
    if not run.ok or len(run.outputs) != len(names):
        raise RuntimeError(f"the requirements check did not run in the {sandbox} sandbox: "
                           f"{run.reason or run.status}")
    found = dict(zip(names, run.outputs))
    return [why for r in reqs if (why := _verdict(r, found[canonicalize_name(r.name)]))]


def _verdict(req: Requirement, got: Any) -> str:
    shown = f"{req.name}{req.specifier}"
    if not isinstance(got, dict) or not got.get("found"):
        return f"{shown} (not installed)"
    version = got.get("version")
    if req.specifier:
        if not isinstance(version, str):
            return f"{shown} (found, but its version is unknown)"
        try:
            fits = req.specifier.contains(version, prereleases=True)
        except InvalidVersion:
            fits = False
        if not fits:
            return f"{shown} (found {version[:40]})"
    if got.get("error"):
        return f"{shown} (installed, but {str(got['error'])[:240]})"
    return ""
