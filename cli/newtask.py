"""`evoforge new-task NAME`: write a complete task plugin package to start from.

The package (templates in cli/newtask_templates.py) installs with pip and registers its task
through the `evoforge.tasks` entry point (evaluators/base.py loads it). The command writes only
new regular files under a directory that is empty or new (or, with --force, over files of the
same names), and never through a symbolic link: a name or directory that could land elsewhere is
refused. See docs/tasks/writing-a-task.md.
"""
from __future__ import annotations

import importlib.util
import keyword
import os
import shlex
import stat
import sys
from importlib.metadata import entry_points
from pathlib import Path

import click

from evoforge.cli.newtask_templates import FILES
from evoforge.cli.term import safe

# Names the new package must not take: they would shadow a module everybody imports.
_RESERVED = {"evoforge", "tests", "test", "src", "setup", "conftest", "site"}


def name_problem(name: str) -> str:
    """Why NAME cannot be a new task and its Python package ("" when it can)."""
    from evoforge.evaluators.base import PLUGIN_GROUP, TASK_NAME, builtin_names

    if not TASK_NAME.fullmatch(name):
        return ("use lowercase letters, digits and _, starting with a letter, at most 64 "
                "characters (it names the task and its Python package)")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return "it is a Python keyword"
    if name in builtin_names():
        return "a built-in task has that name"
    if name in sys.stdlib_module_names or name in sys.builtin_module_names or name in _RESERVED:
        return "a standard or reserved module has that name"
    spec = importlib.util.find_spec(name)  # a plain directory (namespace package) is no module
    if spec is not None and spec.origin is not None and name not in entry_points(group=PLUGIN_GROUP).names:
        return "an installed module that is not this task's plugin has that name"
    return ""


def _title(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _subdir(parent_fd: int, name: str, shown: Path) -> int:
    """Open (making it if needed) the real directory `name` under `parent_fd`, never a link."""
    try:
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    except FileExistsError:
        pass
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError:
        raise click.ClickException(f"{shown} is not a directory (links are not followed)") from None


def _write(dir_fd: int, name: str, text: str, force: bool, shown: Path) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if force else os.O_EXCL)
    try:
        if not stat.S_ISREG(os.lstat(name, dir_fd=dir_fd).st_mode):
            raise click.ClickException(f"{shown} exists and is not a regular file (links are not followed)")
    except FileNotFoundError:
        pass
    try:
        fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
    except OSError as exc:
        raise click.ClickException(f"cannot write {shown}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def write_package(name: str, target: Path, *, force: bool = False) -> list[Path]:
    """Write the plugin package for task `name` into `target`; returns the files written."""
    problem = name_problem(name)
    if problem:
        raise click.ClickException(f"cannot name a task {name!r}: {problem}")
    if target.is_symlink():
        raise click.ClickException(f"{target} is a symbolic link; give a real directory")
    if target.exists():
        if not target.is_dir():
            raise click.ClickException(f"{target} exists and is not a directory")
        if any(target.iterdir()) and not force:
            raise click.ClickException(f"{target} is not empty (--force writes over the package's files)")
    else:
        target.mkdir(parents=True)
    values = {"name": name, "title": _title(name), "dist": "evoforge-" + name.replace("_", "-")}
    try:
        root_fd = os.open(target, _DIR_FLAGS)  # every path below is opened relative to it
    except OSError as exc:
        raise click.ClickException(f"cannot open {target}: {exc.strerror}") from None
    written = []
    try:
        for rel, template in FILES.items():
            *dirs, filename = rel.format(name=name).split("/")
            fds, shown = [root_fd], target
            try:
                for part in dirs:
                    shown = shown / part
                    fds.append(_subdir(fds[-1], part, shown))
                _write(fds[-1], filename, template.substitute(values), force, shown / filename)
            finally:
                for fd in fds[1:]:
                    os.close(fd)
            written.append(shown / filename)
    finally:
        os.close(root_fd)
    return written


@click.command(name="new-task")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the package (default: ./NAME); must be empty or new.")
@click.option("--force", is_flag=True,
              help="Write into a non-empty directory, replacing the package's files.")
def new_task(name: str, directory: Path | None, force: bool) -> None:
    """Write a task plugin package NAME: a Task with a seed program, trusted scoring, a test and
    a README. Then `pip install ./DIR`, and `evoforge tasks` lists it."""
    target = directory if directory is not None else Path(name)
    for path in write_package(name, target, force=force):
        click.echo(safe(f"wrote {path}", one_line=True))
    where = shlex.quote(str(target) if target.is_absolute() else f"./{target}")
    click.echo(safe(f"next: pip install -e {where} && evoforge tasks && "
                    f"evoforge run {name} --iterations 20", one_line=True))
