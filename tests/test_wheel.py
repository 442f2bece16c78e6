"""The installed distribution claims one top-level name: `evoforge`.

The wheel is built from this tree (pip, no network: the build backend is already installed) and
installed with its dependencies taken from the running environment, in a fresh venv; then
`evoforge tasks` runs there."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("api", "cli", "db", "evaluators", "evolution", "migrations", "sandbox", "worker")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    src = out / "src"  # a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "tests", "bench", "docs", "examples"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
                   check=True, timeout=300, cwd=out)
    [whl] = out.glob("evoforge-*.whl")
    return whl


def test_wheel_has_one_top_level_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"evoforge", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for part in PARTS:  # every part of the tree is inside, with its subpackages and data
        assert f"evoforge/{part}/__init__.py" in names
    assert "evoforge/sandbox/forkserver/server.py" in names
    assert "evoforge/api/dashboard/static/common.js" in names
    assert any(n.startswith("evoforge/migrations/versions/0001") for n in names)
    assert "evoforge/evaluators/matmul/best_ranks.json" in names
    assert not any("__pycache__" in n or n.startswith("evoforge/tests") for n in names)


def test_every_package_of_the_tree_is_in_the_wheel(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for part in PARTS:
        for init in (ROOT / part).rglob("__init__.py"):
            rel = init.relative_to(ROOT).as_posix()
            assert f"evoforge/{rel}" in names, rel


@pytest.mark.slow
def test_installed_wheel_runs_evoforge_tasks(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.check_output(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--no-deps", "--no-index", "--disable-pip-version-check", "-q",
                    str(wheel)], check=True, timeout=300)
    # The dependencies come from this environment's site-packages, added as a plain path (its
    # .pth files, e.g. the checkout's editable finder, are not processed).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["EVOFORGE_HOME"] = str(tmp_path / "home")
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import evoforge; print(evoforge.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(site)), where  # the installed copy, not the checkout
    out = subprocess.run([str(venv / "bin" / "evoforge"), "tasks"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for task in ("circle_packing", "matmul", "optimizer", "alpha_factors"):
        assert task in out.stdout
    tops = {p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth"))}
    assert tops == {"evoforge"}
