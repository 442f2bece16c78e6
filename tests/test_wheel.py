"""The installed distribution claims one top-level name: `evoforge`.

The wheel is built from this tree (pip, no network: the build backend is already installed) and
installed with its dependencies taken from the running environment, in a fresh venv; then
`evoforge tasks` and the Python API's `evoforge.evolve` run there."""
from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.installed import build_wheel, venv_with_wheel

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("api", "cli", "db", "evaluators", "evolution", "migrations", "sandbox", "worker")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


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
    venv = venv_with_wheel(wheel, tmp_path)  # dependencies from this environment (tests/installed.py)
    site, env = venv.site, venv.env
    where = subprocess.run([venv.python, "-c", "import evoforge; print(evoforge.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(site)), where  # the installed copy, not the checkout
    out = subprocess.run([venv.bin("evoforge"), "tasks"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for task in ("circle_packing", "matmul", "optimizer", "alpha_factors"):
        assert task in out.stdout
    tops = {p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth"))}
    assert tops == {"evoforge"}


EVOLVE = """
import json, sys
import evoforge
r = evoforge.evolve("curve_fit", iterations=10, mutator="local")
print(json.dumps({"file": evoforge.__file__, "api": sys.modules["evoforge.python_api"].__file__,
                  "status": r.status, "evaluations": r.evaluations, "seed": r.seed_score,
                  "best": r.best_score, "db": r.db_url, "code": r.best_code}))
"""


@pytest.mark.slow
def test_installed_wheel_runs_evoforge_evolve(wheel, tmp_path):
    """`evoforge.evolve` from the installed wheel on a problem in OpenEvolve's layout, in the
    default database (the venv's EVOFORGE_HOME), with the fork-server sandbox."""
    venv = venv_with_wheel(wheel, tmp_path)
    shutil.copytree(ROOT / "examples" / "curve_fit", tmp_path / "curve_fit")
    out = subprocess.run([venv.python, "-c", EVOLVE], cwd=tmp_path, env=venv.env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["file"].startswith(str(venv.site)) and r["api"].startswith(str(venv.site))
    assert r["status"] == "completed" and r["evaluations"] == 11
    assert r["best"] >= r["seed"] > 0 and "def f(x)" in r["code"]
    assert r["db"].startswith(f"sqlite:///{tmp_path / 'home'}")
