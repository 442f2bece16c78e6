"""Which files of an OpenEvolve problem directory go into the sandbox (and the database).

The shipped files are stored in the campaign's params, returned by `GET /campaigns/{id}` and
readable by every candidate, so only what an evaluator needs goes: the evaluator, plus the
regular text files beside it with a code or data suffix (`SHIP_SUFFIXES`, or matching an
`--include` glob), minus `--exclude` globs, and never:

- the config file (it may hold `llm.api_key`), nor any `config*.yaml` / `config*.yml`;
- hidden files (`.env`, `.netrc`, `.git/`...), and names that look like secrets
  (`SECRET_NAME`: credential, secret, password, token, api_key, private key files...);
- files whose text looks like a secret (`SECRET_TEXT`: private key blocks, `sk-...` keys, cloud
  and chat tokens; in data files also `api_key: value`-style assignments);
- symlinks (even to a file inside the directory), directories, FIFOs, devices;
- non-UTF-8 files, a file over 1 MiB, more than 4 MiB or 64 files in all.

Every file left out is reported with its reason. The same name and content rules check
`params.files` of an `openevolve` campaign submitted over REST (task.py).
"""
from __future__ import annotations

import fnmatch
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from evoforge.evaluators.textfile import TextFileError, read_text_file

SHIP_SUFFIXES = (".py", ".json", ".yaml", ".yml", ".txt", ".csv", ".tsv", ".cfg", ".ini", ".toml")
SHIP_FILE_BYTES = 1 << 20
SHIP_TOTAL_BYTES = 4 << 20
SHIP_MAX_FILES = 64

# A plain file name: the driver writes files flat into one directory.
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


def refusal(name: str, text: str | None = None) -> str | None:
    """Why a file of this name (and text) must never be shipped, or None."""
    if "/" in name or "\\" in name or name in (".", ".."):
        return "a path, not a plain file name"
    if name.startswith("."):
        return "hidden"
    if not SAFE_NAME.match(name):
        return "not a plain file name"
    if CONFIG_NAME.match(name):
        return "a config file, may hold llm.api_key"
    if SECRET_NAME.search(name):
        return "secret-looking name"
    if text is not None:
        if SECRET_TEXT.search(text):
            return "secret-looking content"
        if not name.endswith(".py") and SECRET_ASSIGNMENT.search(text):
            return "secret-looking content"
    return None


@dataclass
class Shipment:
    files: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)     # "name (reason)"
    total_bytes: int = 0                                  # of `files`, encoded

    def add(self, name: str, text: str) -> None:
        self.files[name] = text
        self.total_bytes += len(text.encode())


def _matches(name: str, globs: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


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
    directory = evaluator.parent
    config_id = _file_id(config) if config is not None else None
    evaluator_id = _file_id(evaluator)
    for name in sorted(os.listdir(directory)):
        if name == "__pycache__" or name == evaluator.name:
            continue
        reason = _skip_reason(directory / name, name, config_id, evaluator_id, include, exclude, out)
        if reason:
            out.skipped.append(f"{name} ({reason})")
    return out


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return None


def _skip_reason(path: Path, name: str, config_id, evaluator_id, include, exclude,
                 out: Shipment) -> str | None:
    """Ship `path` into `out`, or say why not."""
    why = refusal(name)
    if why:
        return why
    try:
        st = os.lstat(path)
    except OSError as exc:
        return exc.strerror or "unreadable"
    if stat.S_ISLNK(st.st_mode):
        return "symlink, never followed"
    if stat.S_ISDIR(st.st_mode):
        return "directory, only the evaluator's own directory is shipped"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if (st.st_dev, st.st_ino) in (config_id, evaluator_id):
        return "the config file" if (st.st_dev, st.st_ino) == config_id else "a link to the evaluator"
    if _matches(name, exclude):
        return "excluded by --exclude"
    if not name.endswith(SHIP_SUFFIXES) and not _matches(name, include):
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
    why = refusal(name, text)
    if why:
        return why
    out.add(name, text)
    return None


def check_files(files: dict[str, str], evaluator: str) -> None:
    """`params.files` as a caller sent it (REST): the same rules, refused with the reasons."""
    if len(files) > SHIP_MAX_FILES:
        raise ValueError(f"at most {SHIP_MAX_FILES} files")
    bad = [f"{name!r} ({why})" for name in files if (why := refusal(name))]
    if bad:  # names first, sizes next: content is scanned only within the limits
        raise ValueError("never shipped into the sandbox: " + ", ".join(bad))
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
