"""Which files of an OpenEvolve problem directory go into the sandbox (and the database).

A problem's files are stored (with the campaign's params, or as a stored problem), returned by
the API and readable by every candidate, so only what an evaluator needs goes. `ship_files`
(`evoforge openevolve`) walks the evaluator's directory, subdirectories included (OpenEvolve's
rust_adaptive_sort builds `sort_test/`, tsp imports `utils/`), and ships the regular text files
with a code or data suffix (`SHIP_SUFFIXES`, or matching an `--include` glob), minus
`--exclude` globs. Keys are relative POSIX paths (`utils/io.py`). It never ships:

- the config file (it may hold `llm.api_key`), nor any `config*.yaml` / `config*.yml`;
- hidden files and directories (`.env`, `.netrc`, `.git/`...), `__pycache__`, build output
  (`BUILD_DIRS`: `target/`, `node_modules/`, `openevolve_output/`...), and names that look
  like secrets (`SECRET_NAME`, in any component: credential, secret, password, token, api_key,
  private key files...);
- files whose text looks like a secret (`SECRET_TEXT`: private key blocks, `sk-...` keys, cloud
  and chat tokens; in data files also `api_key: value`-style assignments);
- symlinks (even to a file inside the directory, never followed), FIFOs, devices;
- non-UTF-8 files or text with a NUL byte (binary), a file over `SHIP_FILE_BYTES`, more than
  `SHIP_TOTAL_BYTES` or `SHIP_MAX_FILES` in all, a path deeper than `MAX_DEPTH` components.

Every file left out is reported with its reason. A path is relative and POSIX: `path_refusal`
refuses outright what no honest directory holds (`..`, an absolute path, a backslash, control
characters, too deep); `refusal` adds the rules above, per component. The same rules check
`params.files` of an `openevolve` campaign submitted over REST (task.py, `check_files`) and an
uploaded problem (package.py).
"""
from __future__ import annotations

import fnmatch
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from evoforge.evaluators.textfile import TextFileError, read_text_file

# The limits of one problem: what is stored, shipped into the sandbox per evaluation.
MAX_FILE_BYTES = 2 << 20
MAX_TOTAL_BYTES = 8 << 20
MAX_FILES = 256
MAX_DEPTH = 8             # path components, the file's name included
MAX_PATH_CHARS = 1024
SHIP_FILE_BYTES = MAX_FILE_BYTES
SHIP_TOTAL_BYTES = MAX_TOTAL_BYTES
SHIP_MAX_FILES = MAX_FILES
MAX_WALK_ENTRIES = 16 * MAX_FILES   # a directory walk stops after this many entries

SHIP_SUFFIXES = (".py", ".json", ".yaml", ".yml", ".txt", ".csv", ".tsv", ".cfg", ".ini", ".toml")
# Never descended into (nor shipped): caches and build output, large and never an input.
BUILD_DIRS = frozenset({"__pycache__", "__MACOSX", "node_modules", "target",
                        "openevolve_output", "venv"})

# One component of a path: no leading dot or dash, no spaces, quotes or shell characters.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}$")
CONFIG_NAME = re.compile(r"^config[^/]*\.ya?ml$", re.I)
SECRET_NAME = re.compile(
    r"credential|secret|passw(or)?d|api[_-]?key|access[_-]?key|private[_-]?key|"
    r"(^|[^a-z])(auth[_-]?)?tokens?([^a-z]|$)|^id_(rsa|dsa|ecdsa|ed25519)|"
    r"\.(pem|key|p12|pfx|jks|keystore|kdbx|gpg|asc)$|^_?(netrc|npmrc|pypirc|git-credentials)$",
    re.I)
SECRET_TEXT = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\bsk-[A-Za-z0-9_-]{16,}|\b(AKIA|ASIA)[0-9A-Z]{16}\b|"
    r"\bgh[pousr]_[A-Za-z0-9]{30,}|\bxox[abprs]-[A-Za-z0-9-]{10,}|\bAIza[0-9A-Za-z_-]{35}\b")
# In data files (not Python, where `token = tokenizer(...)` is ordinary code).
# Unanchored, so no prefix before the key word: a `[\w.-]*` there would be retried from every
# start position of a long word run (quadratic: days for a 1 MB data file).
SECRET_ASSIGNMENT = re.compile(
    r"""(api[_-]?key|secret|password|passwd|access[_-]?token|auth[_-]?token|"""
    r"""authorization)["']?\s*[:=]\s*["']?[^\s"',}{\[\]]{4,}""", re.I)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def shown(path: str) -> str:
    """`path` as it may be printed: escaped when it holds anything but plain printable text."""
    return path if path.isprintable() and path.isascii() else ascii(path)


def path_refusal(path: str) -> str | None:
    """Why `path` is no relative POSIX path within the limits (an upload holding one is
    refused whole), or None."""
    if not isinstance(path, str):
        return "not a path"
    if not path:
        return "an empty path"
    if _CONTROL.search(path):
        return "a control character in the path"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "not UTF-8 (a lone surrogate)"
    if "\\" in path:
        return "a backslash in the path"
    if path.startswith("/"):
        return "an absolute path"
    if len(path) > MAX_PATH_CHARS:
        return f"a path longer than {MAX_PATH_CHARS} characters"
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            return f"{part!r} is not a plain file name"
    if len(parts) > MAX_DEPTH:
        return f"deeper than {MAX_DEPTH} levels"
    return None


def refusal(name: str, text: str | None = None) -> str | None:
    """Why a file at this relative path (and with this text) must never be shipped, or None."""
    why = path_refusal(name)
    if why:
        return why
    parts = name.split("/")
    for part in parts:
        if part.startswith("."):
            return "hidden"
        if not SAFE_NAME.fullmatch(part):
            return "not a plain file name"
    if CONFIG_NAME.match(parts[-1]):
        return "a config file, may hold llm.api_key"
    if any(SECRET_NAME.search(part) for part in parts):
        return "secret-looking name"
    if text is not None:
        if "\x00" in text:
            return "binary (a NUL byte)"
        if SECRET_TEXT.search(text):
            return "secret-looking content"
        if not name.endswith(".py") and SECRET_ASSIGNMENT.search(text):
            return "secret-looking content"
    return None


@dataclass
class Shipment:
    files: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)     # "path (reason)"
    total_bytes: int = 0                                  # of `files`, encoded

    def add(self, name: str, text: str) -> None:
        self.files[name] = text
        self.total_bytes += len(text.encode())


def matches(path: str, globs: Sequence[str]) -> bool:
    """Whether a glob matches the relative path or its last component."""
    base = path.rpartition("/")[2]
    return any(fnmatch.fnmatchcase(path, g) or fnmatch.fnmatchcase(base, g) for g in globs)


def walk(root: Path, *, include: Sequence[str] = (), exclude: Sequence[str] = ()
         ) -> Iterator[tuple[str, os.stat_result | None, str | None]]:
    """(relative path, lstat, why it is left out or None) for each file under `root`, sorted,
    depth first. Never follows a symlink; does not descend into a hidden, secret-looking,
    excluded or too-deep directory, nor into `BUILD_DIRS` (unless an `include` glob names
    it), and reports each such directory once ("directory, why"), an empty one too."""
    budget = [MAX_WALK_ENTRIES]
    yield from _walk(Path(root), "", include, exclude, budget)


def _walk(directory: Path, prefix: str, include, exclude, budget: list[int]):
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        yield prefix or ".", None, exc.strerror or "unreadable"
        return
    if not names and prefix:
        yield prefix.rstrip("/"), None, "directory, empty"
    for name in names:
        rel = prefix + name
        if budget[0] <= 0:
            yield rel, None, f"not visited: over {MAX_WALK_ENTRIES} entries in the directory"
            return
        budget[0] -= 1
        try:
            st = os.lstat(directory / name)
        except OSError as exc:
            yield rel, None, exc.strerror or "unreadable"
            continue
        if stat.S_ISLNK(st.st_mode):
            yield rel, st, "symlink, never followed"
        elif stat.S_ISDIR(st.st_mode):
            if name == "__pycache__":
                continue
            why = _dir_refusal(rel, name, include, exclude)
            if why:
                yield rel, st, f"directory, {why}"
            else:
                yield from _walk(directory / name, rel + "/", include, exclude, budget)
        elif not stat.S_ISREG(st.st_mode):
            yield rel, st, "not a regular file"
        else:
            why = path_refusal(rel)
            if not why and matches(rel, exclude):
                why = "excluded by --exclude"
            yield rel, st, why


def _dir_refusal(rel: str, name: str, include, exclude) -> str | None:
    why = refusal(rel + "/x")
    if why:
        return why
    if matches(rel, exclude):
        return "excluded by --exclude"
    if name in BUILD_DIRS and not matches(rel, include):
        return "build output or cache, add it with --include"
    return None


def ship_files(evaluator: Path, evaluator_text: str, *, config: Path | None = None,
               include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Shipment:
    """The evaluator plus what its directory may ship (module docstring); `evaluator_text` is
    the evaluator's source, already read."""
    why = refusal(evaluator.name, evaluator_text)
    if why:
        raise ValueError(f"{evaluator.name}: {why}; it would be stored and readable by every "
                         "candidate")
    out = Shipment()
    out.add(evaluator.name, evaluator_text)
    config_id = _file_id(config) if config is not None else None
    evaluator_id = _file_id(evaluator)
    for rel, st, why in walk(evaluator.parent, include=include, exclude=exclude):
        if rel == evaluator.name:
            continue
        if why is None:
            why = _ship(evaluator.parent / rel, rel, st, config_id, evaluator_id, include, out)
        if why:
            out.skipped.append(f"{shown(rel)} ({why})")
    return out


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return None


def _ship(path: Path, rel: str, st: os.stat_result, config_id, evaluator_id, include,
          out: Shipment) -> str | None:
    """Ship the regular file `path` into `out` as `rel`, or say why not."""
    why = refusal(rel)
    if why:
        return why
    if (st.st_dev, st.st_ino) in (config_id, evaluator_id):
        return "the config file" if (st.st_dev, st.st_ino) == config_id else "a link to the evaluator"
    if not rel.endswith(SHIP_SUFFIXES) and not matches(rel, include):
        return "not a code or data suffix, add it with --include"
    if len(out.files) >= SHIP_MAX_FILES:
        return f"over {SHIP_MAX_FILES} files"
    if st.st_size > SHIP_FILE_BYTES:
        return f"larger than {SHIP_FILE_BYTES >> 20} MiB"
    if out.total_bytes + st.st_size > SHIP_TOTAL_BYTES:
        return f"over {SHIP_TOTAL_BYTES >> 20} MiB in all"
    try:
        text = read_text_file(path, max_bytes=SHIP_FILE_BYTES, follow_symlinks=False)
    except TextFileError as exc:
        return str(exc).removeprefix(f"{path}: ")
    why = refusal(rel, text)
    if why:
        return why
    out.add(rel, text)
    return None


def check_files(files: dict[str, str], evaluator: str) -> None:
    """`params.files` as a caller sent it (REST): the same rules, refused with the reasons.
    Keys are relative POSIX paths (`utils/io.py`)."""
    if len(files) > SHIP_MAX_FILES:
        raise ValueError(f"at most {SHIP_MAX_FILES} files")
    bad = [f"{shown(name)} ({why})" for name in files if (why := refusal(name))]
    if bad:  # names first, sizes next: content is scanned only within the limits
        raise ValueError("never shipped into the sandbox: " + ", ".join(bad))
    clash = file_and_directory(files)
    if clash:
        raise ValueError(f"{clash!r} is both a file and a directory")
    sizes = {n: len(t.encode()) for n, t in files.items()}
    too_big = [n for n, size in sizes.items() if size > SHIP_FILE_BYTES]
    if too_big:
        raise ValueError(f"larger than {SHIP_FILE_BYTES >> 20} MiB: {', '.join(map(repr, too_big))}")
    if sum(sizes.values()) > SHIP_TOTAL_BYTES:
        raise ValueError(f"more than {SHIP_TOTAL_BYTES >> 20} MiB in all")
    bad = [f"{name!r} ({why})" for name, text in files.items() if (why := refusal(name, text))]
    if bad:
        raise ValueError("never shipped into the sandbox: " + ", ".join(bad))
    if files and evaluator not in files:
        raise ValueError(f"the evaluator {evaluator!r} is not one of the files")


def file_and_directory(paths) -> str | None:
    """A path that is also a directory of another path (`a` and `a/b`), or None."""
    paths = set(paths)
    for path in paths:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in paths:
                return "/".join(parts[:i])
    return None
