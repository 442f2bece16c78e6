"""A problem's requirements: parsed strictly (nothing to install or fetch), checked in the real
fork-server sandbox by a program that gets the names as data."""
from __future__ import annotations

import os
import time

import pytest

from evoforge.worker import requirements as R
from evoforge.worker.requirements import (MAX_REQUIREMENTS, RequirementError, check_requirements,
                                          parse_requirements)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the fork-server sandbox needs root")


def test_parse_keeps_requirements_and_drops_comments():
    reqs = parse_requirements(["# comment", "", "numpy>=1.26  # why", "  scikit-learn  ",
                               "pyyaml[extra]>=6; python_version >= '3'"])
    assert [str(r) for r in reqs] == ["numpy>=1.26", "scikit-learn",
                                      'pyyaml[extra]>=6; python_version >= "3"']


@pytest.mark.parametrize("line, why", [
    ("numpy; os.system('x')", "not a PEP 508"),
    ("numpy==1; __import__('os').system('x')", "not a PEP 508"),
    ("../x", "URL or a path"),
    ("/etc/passwd", "URL or a path"),
    ("./local_pkg", "URL or a path"),
    ("--index-url http://evil", "pip option"),
    ("-r other.txt", "pip option"),
    ("-e .", "pip option"),
    ("--extra-index-url=https://evil", "pip option"),
    ("git+https://github.com/evil/pkg", "URL or a path"),
    ("pkg @ https://evil.example/pkg.whl", "URL or a path"),
    ("pkg @ file:///tmp/x", "URL or a path"),
    ("x" * 400, "longer than"),
    ("numpy\x00", "not a PEP 508"),
])
def test_hostile_lines_are_refused_with_the_reason(line, why):
    with pytest.raises(RequirementError, match=why) as info:
        parse_requirements(["numpy", line])
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("requirement 2 ")


def test_too_many_requirements_are_refused():
    with pytest.raises(RequirementError, match=f"more than {MAX_REQUIREMENTS}"):
        parse_requirements([f"pkg{i}" for i in range(10_000)])
    with pytest.raises(RequirementError):
        parse_requirements("numpy")  # a string, not a list of lines
    with pytest.raises(RequirementError):
        parse_requirements([1])


@pytest.fixture
def fresh_cache():
    R._cache.clear()
    yield
    R._cache.clear()


@needs_root
def test_check_in_the_fork_sandbox(fresh_cache):
    import numpy

    missing = check_requirements(["numpy>=1.20", "numpy>=9", "made-up-package-q7z",
                                  "pyyaml", "scipy<1", "old-thing; python_version < '3'"], "fork")
    assert missing == [f"numpy>=9 (found {numpy.__version__})",
                       "made-up-package-q7z (not installed)",
                       f"scipy<1 (found {__import__('scipy').__version__})"]
    assert check_requirements(["numpy", "PyYAML", "scikit_learn"], "fork") == []
    assert check_requirements([], "fork") == [] and check_requirements(["# only"], "fork") == []


@needs_root
def test_names_travel_as_data_and_answers_are_cached(fresh_cache, monkeypatch):
    from evoforge.worker import runtime

    calls = []
    real = runtime.shared_sandbox

    def spy(kind="fork"):
        sb = real(kind)

        class Spy:
            def run(self, code, entrypoint, inputs, **kw):
                calls.append((code, inputs))
                return sb.run(code, entrypoint, inputs, **kw)
        return Spy()

    monkeypatch.setattr(runtime, "shared_sandbox", spy)
    assert check_requirements(["numpy>=9", "Made_Up.Pkg"], "fork")[1] == \
        "Made_Up.Pkg (not installed)"
    t0 = time.monotonic()
    again = check_requirements(["Made_Up.Pkg", "numpy>=9"], "fork")  # same set, other order
    assert time.monotonic() - t0 < 0.05 and len(calls) == 1 and len(again) == 2
    code, inputs = calls[0]
    assert code == R.CHECK_PROGRAM  # fixed code; the names are the call's data
    assert inputs == [{"name": "made-up-pkg"}, {"name": "numpy"}]


@needs_root
def test_an_installed_distribution_that_does_not_import_is_reported(fresh_cache, tmp_path):
    # A distribution whose metadata is installed but whose module fails on import, on a path
    # the sandbox's interpreter reads (a site-packages directory of the venv).
    import shutil
    import sysconfig

    purelib = sysconfig.get_paths()["purelib"]
    if not os.access(purelib, os.W_OK):
        pytest.skip("the venv's site-packages is not writable")
    name = f"evoforge_broken_probe_{os.getpid()}"
    dist = os.path.join(purelib, f"{name}-1.0.dist-info")
    mod = os.path.join(purelib, f"{name}.py")
    try:
        os.makedirs(dist)
        with open(os.path.join(dist, "METADATA"), "w") as f:
            f.write(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        with open(os.path.join(dist, "top_level.txt"), "w") as f:
            f.write(name + "\n")
        with open(mod, "w") as f:
            f.write("raise ImportError('needs libfoo.so')\n")
        from evoforge.worker.runtime import close_sandboxes

        close_sandboxes()  # a fresh server sees the new files
        missing = check_requirements([name.replace("_", "-")], "fork")
        assert len(missing) == 1, missing
        assert f"import {name} fails: ImportError: needs libfoo.so" in missing[0]
    finally:
        shutil.rmtree(dist, ignore_errors=True)
        if os.path.exists(mod):
            os.unlink(mod)
