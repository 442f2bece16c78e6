"""Task plugins: the `evoforge.tasks` entry point group (evaluators/base.py) and `evoforge new-task`.

Unit tests install fake distributions the way pip does (a `*.dist-info` with `entry_points.txt`
in a directory on sys.path) and check that a broken plugin is skipped with a warning that names
it, while the built-ins and the good plugins keep working in the registry, the CLI and the API.
The slow test builds the wheel, installs it into a fresh venv (tests/installed.py), writes a
plugin with the installed `evoforge new-task`, installs it, and lists, runs, serves and tests it.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from tests.installed import ROOT, build_wheel, venv_with_wheel

GOOD = '''
from typing import Any, ClassVar
from pydantic import BaseModel
from evoforge.evaluators.base import FeatureDim, Resources, Stage, StageResult


class Params(BaseModel):
    k: int = 3


class GoodOne:
    name: ClassVar[str] = "good_one"
    version: ClassVar[int] = 1
    Params: ClassVar[type[BaseModel]] = Params
    entrypoint: ClassVar[str] = "f"
    resources: ClassVar[Resources] = Resources(timeout_s=5.0, memory_mb=512)
    driver: ClassVar[str | None] = None

    def seed_program(self, params): return "def f(k):\\n    return k * 2\\n"
    def context(self, params): return "double k"
    def probe(self, params): return [{"k": params.k}]
    def stages(self, params): return [Stage(name="all", inputs=self.probe(params))]
    def feature_dims(self, params): return []
    def score(self, params, stage, outputs):
        ok = outputs == [params.k * 2]
        return StageResult(valid=ok, combined_score=1.0 if ok else 0.0, reason="" if ok else "wrong")


class Impostor(GoodOne):
    name: ClassVar[str] = "circle_packing"


class NoScore:
    name, version, entrypoint, driver = "no_score", 1, "f", None
    resources, Params = Resources(), Params
    def seed_program(self, params): return ""


TASK = GoodOne()
IMPOSTOR = Impostor()
NOT_A_TASK = {"name": "not_a_task"}
NO_SCORE = NoScore()
'''

SNEAKY = '''
from evoforge.evaluators.base import register
from good_one_plugin import GoodOne


class Sneaky(GoodOne):
    name = "sneaky"


class Extra(GoodOne):
    name = "sneaky_extra"


class Copy(GoodOne):
    pass


COPY = Copy()
register(Extra())  # registered on import, unchecked: the loader takes it out again
register(COPY)     # replaces another plugin's task on import: the loader puts that one back
TASK = Sneaky()
'''

HIJACK = '''
from evoforge.evaluators.base import register
from good_one_plugin import IMPOSTOR

register(IMPOSTOR)  # a built-in's name from outside evoforge: refused, so the import fails
TASK = IMPOSTOR
'''

ENTRY_POINTS = {  # the first two distributions come first on sys.path, the last two after them
    "good-one": {"good_one": "good_one_plugin:TASK"},
    "broken-things": {
        "missing_module": "no_such_module_for_evoforge:TASK",
        "not_a_task": "good_one_plugin:NOT_A_TASK",
        "a_class": "good_one_plugin:GoodOne",
        "no_score": "good_one_plugin:NO_SCORE",
        "circle_packing": "good_one_plugin:IMPOSTOR",
        "other_name": "good_one_plugin:TASK",
        "explodes": "explodes_plugin:TASK",
        "hijack": "hijack_plugin:TASK",
        "Bad-Name": "good_one_plugin:TASK",
    },
    "sneaky": {"sneaky": "sneaky_plugin:TASK"},
    "copycat": {"good_one": "sneaky_plugin:COPY"},
}
BROKEN = {  # entry point -> a word of the reason the warning must give
    "missing_module": "import failed", "not_a_task": "not a Task", "a_class": "is a class",
    "no_score": "missing method", "circle_packing": "built-in", "other_name": "'good_one'",
    "explodes": "boom at import", "hijack": "built-in task", "Bad-Name": "not a task name",
}


def install_fake_plugins(where: Path) -> list[Path]:
    """Modules and dist-infos as `pip install` leaves them in site-packages: two directories,
    in the order they go on sys.path (entry points are read in that order)."""
    dirs = [where / "first", where / "second"]
    for d in dirs:
        d.mkdir(parents=True)
    (dirs[0] / "good_one_plugin.py").write_text(GOOD)
    (dirs[1] / "sneaky_plugin.py").write_text(SNEAKY)
    (dirs[0] / "hijack_plugin.py").write_text(HIJACK)
    (dirs[0] / "explodes_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    for i, (dist, eps) in enumerate(ENTRY_POINTS.items()):
        info = dirs[i // 2] / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(
            "[evoforge.tasks]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    return dirs


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """The fake plugins on sys.path, with the registry's plugin state fresh (and restored)."""
    from evoforge.evaluators import base

    before = set(base._REGISTRY)
    monkeypatch.setattr(base, "_plugins_loaded", False)
    monkeypatch.setattr(base, "_PLUGIN_OWNERS", {})
    dirs = install_fake_plugins(tmp_path / "site")
    for d in reversed(dirs):
        monkeypatch.syspath_prepend(str(d))
    yield os.pathsep.join(map(str, dirs))  # for PYTHONPATH
    for name in set(base._REGISTRY) - before - set(base._BUILTINS):
        del base._REGISTRY[name]
    for mod in ("good_one_plugin", "sneaky_plugin", "hijack_plugin", "explodes_plugin"):
        sys.modules.pop(mod, None)


def test_broken_plugins_are_skipped_with_a_warning_naming_them(plugins, caplog):
    from evoforge.evaluators import base

    with caplog.at_level(logging.WARNING, logger="evoforge.evaluators.base"):
        tasks = base.all_tasks()
    assert {"circle_packing", "matmul", "optimizer", "alpha_factors", "openevolve", "good_one",
            "sneaky"} == set(tasks)
    assert type(tasks["circle_packing"]).__module__ == "evoforge.evaluators.circle_packing.task"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for ep, why in BROKEN.items():
        [line] = [w for w in warnings if f"plugin {ep} = " in w]
        assert "skipped" in line and why in line, line
    # Two distributions claim good_one: the first one on sys.path wins, the other is skipped,
    # and the later one's import replacing it with register() is undone.
    [dup] = [w for w in warnings if "plugin good_one = " in w]
    assert "good_one = sneaky_plugin:COPY (from copycat) skipped: 'good_one' is already " \
           "registered by good_one = good_one_plugin:TASK (from good-one)" in dup
    assert base.task_source("good_one") == "good_one = good_one_plugin:TASK (from good-one)"
    assert tasks["good_one"] is sys.modules["good_one_plugin"].TASK
    assert base.task_source("circle_packing") == "built-in"
    assert "sneaky_extra" not in tasks  # registered by an import, never checked: taken out


def test_get_task_finds_plugins_and_never_breaks_on_bad_ones(plugins):
    from evoforge.evaluators import base

    assert base.get_task("circle_packing").name == "circle_packing"
    assert base._plugins_loaded is False  # a built-in's name reads no entry point
    good = base.get_task("good_one")
    assert good.name == "good_one" and base._plugins_loaded
    for name in ("missing_module", "not_a_task", "explodes", "sneaky_extra"):
        with pytest.raises(KeyError, match="unknown task"):
            base.get_task(name)


def test_register_refuses_a_builtin_name_from_outside(plugins):
    from evoforge.evaluators import base

    impostor = __import__("good_one_plugin").IMPOSTOR
    with pytest.raises(ValueError, match="built-in"):
        base.register(impostor)
    assert base.get_task("circle_packing") is not impostor


def test_a_plugin_name_imports_no_builtin_package(plugins, tmp_path):
    code = ("import sys; from evoforge.evaluators.base import get_task; get_task('good_one'); "
            "print(sorted(m for m in sys.modules if m.startswith('evoforge.evaluators.')"
            " and m.count('.') == 2))")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{plugins}"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['evoforge.evaluators.base']"


def test_cli_tasks_lists_plugins_and_warns_about_broken_ones(plugins, tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{plugins}",
           "EVOFORGE_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "evoforge.cli", "tasks"], env=env,
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = {line.split()[0]: line for line in out.stdout.splitlines()}
    assert {"good_one", "sneaky", "circle_packing", "matmul"} <= set(lines)
    assert "[plugin good_one = " in lines["good_one"] and "params: k=3" in lines["good_one"]
    assert "[plugin" not in lines["circle_packing"]
    for ep in BROKEN:
        assert f"task plugin {ep} = " in out.stderr, ep


def test_api_lists_plugins(plugins, tmp_path):
    from tests.api.conftest import start_server

    srv = start_server(f"sqlite:///{tmp_path / 'api.db'}")
    try:
        with httpx.Client(base_url=srv.url + "/api/v1", timeout=60) as c:
            tasks = {t["name"]: t for t in c.get("/tasks").json()}
            assert {"good_one", "sneaky", "circle_packing"} <= set(tasks)
            assert not (set(BROKEN) - {"circle_packing"}) & set(tasks)  # that one is the built-in
            assert tasks["good_one"]["defaults"] == {"k": 3}
            ev = c.post("/evaluations", json={"task": "good_one", "code": "def f(k):\n    return k * 2\n"})
            assert ev.status_code == 200, ev.text
            assert ev.json()["status"] == "ok" and ev.json()["score"] == 1.0
    finally:
        srv.stop()


# -- evoforge new-task ------------------------------------------------------------------------


def new_task(*args: str):
    from evoforge.cli.main import main

    return CliRunner().invoke(main, ["new-task", *args])


@pytest.mark.parametrize("name", ["../evil", "a/b", "class", "circle_packing", "json", "Caps",
                                  "9lives", "", "x" * 65, "evoforge", "with-dash", "tests", "numpy"])
def test_new_task_refuses_bad_names(name, tmp_path):
    result = new_task(name, "--dir", str(tmp_path / "out"))
    assert result.exit_code != 0 and "cannot name a task" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_new_task_writes_a_package_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "pkg"
    result = new_task("my_task", "--dir", str(out))
    assert result.exit_code == 0, result.output
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["README.md", "pyproject.toml", "src/my_task/__init__.py",
                     "src/my_task/seed.py", "src/my_task/task.py", "tests/test_my_task.py"]
    pyproject = (out / "pyproject.toml").read_text()
    assert '[project.entry-points."evoforge.tasks"]\nmy_task = "my_task.task:TASK"' in pyproject
    for py in out.rglob("*.py"):
        compile(py.read_text(), str(py), "exec")
    (out / "README.md").write_text("mine")
    again = new_task("my_task", "--dir", str(out))
    assert again.exit_code != 0 and "not empty" in again.output
    assert (out / "README.md").read_text() == "mine"
    forced = new_task("my_task", "--dir", str(out), "--force")
    assert forced.exit_code == 0 and "my_task" in (out / "README.md").read_text()


def test_new_task_never_follows_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "link").symlink_to(outside, target_is_directory=True)
    result = new_task("my_task", "--dir", str(tmp_path / "link"), "--force")
    assert result.exit_code != 0 and "symbolic link" in result.output
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "README.md").symlink_to(victim)
    result = new_task("my_task", "--dir", str(pkg), "--force")
    assert result.exit_code != 0 and "not a regular file" in result.output
    (pkg / "README.md").unlink()
    (pkg / "src").symlink_to(outside, target_is_directory=True)
    result = new_task("my_task", "--dir", str(pkg), "--force")
    assert result.exit_code != 0 and "not a directory" in result.output
    assert victim.read_text() == "keep" and sorted(os.listdir(outside)) == ["victim.txt"]


def test_generated_task_satisfies_the_protocol_and_scores(tmp_path, monkeypatch):
    from evoforge.evaluators.base import task_problem

    assert new_task("shape_fit", "--dir", str(tmp_path / "pkg")).exit_code == 0
    monkeypatch.syspath_prepend(str(tmp_path / "pkg" / "src"))
    try:
        from shape_fit.task import TASK, target

        assert task_problem(TASK) == ""
        params = TASK.Params()
        probe, full = TASK.stages(params)
        assert TASK.score(params, probe, [[target(x) for x in probe.inputs[0]["xs"]]]).combined_score == 1.0
        assert not TASK.score(params, full, [[float("inf")] * params.points]).valid
        assert not TASK.score(params, full, [[True] * params.points]).valid
        assert not TASK.score(params, full, ["nope"]).valid
        assert not TASK.score(params, full, [[10**400] * params.points]).valid
        assert not TASK.score(params, full, [[-1e308] * params.points]).valid
        assert not TASK.score(params, full, [{"xs": 1}]).valid
    finally:
        for mod in [m for m in sys.modules if m == "shape_fit" or m.startswith("shape_fit.")]:
            del sys.modules[mod]


# -- the whole path: wheel, venv, new-task, pip install, list, run, serve, its own tests -------


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory):
    where = tmp_path_factory.mktemp("plugin")
    venv = venv_with_wheel(build_wheel(where / "wheel"), where)
    made = subprocess.run([venv.bin("evoforge"), "new-task", "my_task", "--dir", "tmp"], cwd=where,
                          env=venv.env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    venv.pip_install("--no-build-isolation", str(where / "tmp"))
    return venv, where


@pytest.mark.slow
def test_installed_plugin_is_listed_and_runs(plugin_venv):
    venv, where = plugin_venv
    listed = subprocess.run([venv.bin("evoforge"), "tasks"], cwd=where, env=venv.env,
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-3000:]
    [line] = [ln for ln in listed.stdout.splitlines() if ln.startswith("my_task ")]
    assert "[plugin my_task = my_task.task:TASK (from evoforge-my-task)]" in line
    assert "warning" not in listed.stderr.lower(), listed.stderr
    ran = subprocess.run([venv.bin("evoforge"), "run", "my_task", "--iterations", "5", "--json"],
                         cwd=where, env=venv.env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    summary = json.loads(ran.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["task"] == "my_task"
    assert summary["evaluations"] == 6 and summary["failures"] == 0
    assert 0 < summary["seed_score"] <= summary["best_score"] <= 1


@pytest.mark.slow
def test_installed_plugins_own_tests_pass(plugin_venv):
    venv, where = plugin_venv
    out = subprocess.run([venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tmp/tests"],
                         cwd=where, env=venv.env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "4 passed" in out.stdout, out.stdout[-2000:]


@pytest.mark.slow
def test_installed_plugin_is_served(plugin_venv):
    from tests.integration.services import free_port, stop_process, wait_port

    venv, where = plugin_venv
    port, log = free_port(), where / "serve.log"
    proc = subprocess.Popen([venv.bin("evoforge"), "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--db", f"sqlite:///{where / 'serve.db'}", "--log-level", "warning"],
                            cwd=where, env=venv.env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        try:
            wait_port(port, 60, proc)
        except (RuntimeError, TimeoutError):
            raise AssertionError(log.read_text(errors="replace")[-3000:]) from None
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=60) as c:
            tasks = {t["name"]: t for t in c.get("/tasks").json()}
            assert tasks["my_task"]["defaults"] == {"points": 64}
            assert tasks["my_task"]["entrypoint"] == "approximate"
            seed = (where / "tmp" / "src" / "my_task" / "seed.py").read_text()
            ev = c.post("/evaluations", json={"task": "my_task", "code": seed}).json()
            assert ev["status"] == "ok" and 0 < ev["score"] < 1, ev
    finally:
        stop_process(proc)

