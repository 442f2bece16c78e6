"""files.py: relative POSIX paths, per component, for `evoforge openevolve` (ship_files) and
REST `params.files` (check_files)."""
from __future__ import annotations

import os

import pytest

from evoforge.evaluators.openevolve.files import (
    MAX_DEPTH, MAX_WALK_ENTRIES, check_files, path_refusal, refusal, ship_files)

EVALUATOR = "def evaluate(p):\n    return {'combined_score': 1.0}\n"


@pytest.mark.parametrize("path", ["utils/io.py", "sort_test/src/lib.rs", "a/b/c.csv",
                                  "/".join(["d"] * (MAX_DEPTH - 1)) + "/x.py"])
def test_relative_paths_are_accepted(path):
    assert refusal(path) is None and refusal(path, "x = 1\n") is None


@pytest.mark.parametrize("path,why", [
    ("../x.py", "'..' is not a plain file name"), ("a/../x.py", "'..' is not a plain file name"),
    ("./x.py", "'.' is not a plain file name"), ("a//x.py", "'' is not a plain file name"),
    ("a/", "'' is not a plain file name"), ("/etc/passwd", "an absolute path"),
    ("a\\x.py", "a backslash"), ("a\x00.py", "control character"), ("x.py\n", "control character"),
    ("\ud800.py", "lone surrogate"), ("", "an empty path"),
    ("/".join(["d"] * MAX_DEPTH) + "/x.py", "deeper than"),
])
def test_forbidden_paths(path, why):
    assert why in (path_refusal(path) or "")
    assert why in (refusal(path) or "")


@pytest.mark.parametrize("path,why", [
    ("utils/.env", "hidden"), (".git/config", "hidden"), ("secrets/data.csv", "secret-looking"),
    ("sub/config.yaml", "a config file"), ("sub/id_rsa", "secret-looking"),
    ("my dir/x.py", "not a plain file name"), ("-rf/x.py", "not a plain file name"),
])
def test_components_are_checked_one_by_one(path, why):
    assert refusal(path).startswith(why)


def test_text_rules_apply_in_subdirectories():
    assert refusal("data/settings.json", '{"api_key": "abcd1234"}') == "secret-looking content"
    assert refusal("utils/tok.py", "token = tokenizer(x)\n") is None
    assert refusal("data/blob.txt", "a\x00b") == "binary (a NUL byte)"


def test_ship_files_walks_subdirectories(tmp_path):
    ev = tmp_path / "evaluator.py"
    ev.write_text(EVALUATOR)
    (tmp_path / "utils" / "deep").mkdir(parents=True)
    (tmp_path / "utils" / "io.py").write_text("def load():\n    pass\n")
    (tmp_path / "utils" / "deep" / "table.csv").write_text("1,2\n")
    (tmp_path / "utils" / "lib.rs").write_text("fn f() {}\n")
    (tmp_path / "utils" / ".env").write_text("K=1\n")
    (tmp_path / "target" / "debug").mkdir(parents=True)
    (tmp_path / "target" / "debug" / "out.txt").write_text("x\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref\n")
    (tmp_path / "link").symlink_to(tmp_path / "utils")
    got = ship_files(ev, EVALUATOR)
    assert sorted(got.files) == ["evaluator.py", "utils/deep/table.csv", "utils/io.py"]
    reasons = dict(s.split(" (", 1) for s in got.skipped)
    assert reasons["utils/lib.rs"].startswith("not a code or data suffix")
    assert reasons["utils/.env"].startswith("hidden")
    assert reasons["target"].startswith("directory, build output")
    assert reasons[".git"].startswith("directory, hidden")
    assert reasons["link"].startswith("symlink, never followed")
    more = ship_files(ev, EVALUATOR, include=["*.rs", "target"], exclude=["deep"])
    assert sorted(more.files) == ["evaluator.py", "target/debug/out.txt", "utils/io.py",
                                  "utils/lib.rs"]


def test_the_walk_is_bounded(tmp_path):
    ev = tmp_path / "evaluator.py"
    ev.write_text(EVALUATOR)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(MAX_WALK_ENTRIES + 10):
        os.close(os.open(many / f"f{i:05d}.md", os.O_CREAT | os.O_WRONLY))
    got = ship_files(ev, EVALUATOR)
    assert any("not visited" in s for s in got.skipped)
    assert len(got.skipped) <= MAX_WALK_ENTRIES + 1


def test_check_files_takes_relative_paths_and_refuses_the_rest():
    ok = {"evaluator.py": EVALUATOR, "utils/io.py": "x = 1\n",
          "sort_test/Cargo.toml": "[package]\n"}
    check_files(ok, "evaluator.py")
    for bad, why in (("../x.py", "'..' is not a plain file name"), ("/etc/passwd", "absolute"),
                     ("utils/.env", "hidden"), ("a\nb.py", "control character")):
        with pytest.raises(ValueError, match=why) as err:
            check_files({**ok, bad: "x"}, "evaluator.py")
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="both a file and a directory"):
        check_files({**ok, "utils": "x"}, "evaluator.py")
