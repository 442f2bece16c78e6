"""A user's problem directory, read from an upload or a folder, checked, and reduced to plain,
content-addressed data: what the `problem` table stores and the sandbox receives.

Two layouts are read (an archive whose single top-level directory holds one is read as that
directory):

- OpenEvolve's, as is: `evaluator.py`, the seed `initial_program.*` (the one top-level file of
  that name, any suffix; `initial_program<file_suffix>` when config.yaml sets `file_suffix`),
  optional `config.yaml` (or `config.yml`), optional `requirements.txt`, and every file the
  evaluator reads, subdirectories included (`utils/io.py`, `sort_test/Cargo.toml`).
- native: `evoforge.toml` names the rest (every key is optional; an unknown one is refused):

      [problem]    name, seed (a path), evaluator (a top-level .py), requires (PEP 508 list),
                   language, file_suffix
      [cascade]    stages (evaluator function names, in order), thresholds (one per later stage)
      [features]   metrics (custom feature dimensions), bins (a number, or one per metric)
      [resources]  timeout_s, memory_mb, parallel
      [llm]        system_message, temperature, top_p, max_tokens, timeout, retries,
                   models ([{name, weight}])
      [evolution]  max_iterations, random_seed, islands, migration_interval, diff_based

  It is translated into the same OpenEvolve-shaped `config` dict (`evaluator.timeout`,
  `evaluator.memory_limit_mb`, `database.feature_dimensions`, `prompt.system_message`, ...),
  so one mapping (config.py) serves both.

The upload is refused whole (`PackageError`, one line naming the file; nothing is stored) for:
a path that is absolute, holds `..`, a backslash, a control character or a lone surrogate, or is
deeper than `MAX_DEPTH`; a name twice, or as both a file and a directory; a link, device, FIFO
or directory-with-data member, a file named like a directory (`a/`); an encrypted or
malformed archive, or a zip member neither stored nor deflated (zipfile inflates bzip2 and lzma
without an output limit); a config string that is no UTF-8 (a lone surrogate), a seed that is
the evaluator; more than `MAX_UPLOAD_BYTES` sent, `MAX_FILE_BYTES` in a file,
`MAX_TOTAL_BYTES` or `MAX_FILES` in all (declared sizes are checked before reading and actual
sizes while reading, so a zip or gzip bomb stops at the limit). Left out and reported
(`skipped`), as `evoforge openevolve` does (files.py): hidden files and directories, caches
and build output (`BUILD_DIRS`), names that are not plain (`SAFE_NAME`), secret-looking
names or content, other `config*.yaml`, and non-UTF-8 (binary) files. Secret keys of a config
are dropped unread (`ignored_secrets`, redact.py). The config, `evoforge.toml` and
`requirements.txt` are parsed into `config` / `requirements` and are not among `files`.

`digest` is the SHA-256 of a canonical JSON of everything stored (layout, seed and evaluator
paths, files, config, stages, requirements), so the same content uploaded as a zip, a tar,
JSON or read from a folder is the same version.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import os
import re
import stat
import tarfile
import tomllib
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from evoforge.evaluators.openevolve.files import (
    BUILD_DIRS, MAX_DEPTH, MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES, SAFE_NAME, SECRET_TEXT,
    file_and_directory, matches, path_refusal, refusal, shown, walk)
from evoforge.evaluators.openevolve.redact import drop_secrets

__all__ = ["MAX_UPLOAD_BYTES", "MAX_TOTAL_BYTES", "MAX_FILE_BYTES", "MAX_FILES", "MAX_DEPTH",
           "PackageError", "ProblemPackage", "read_upload", "package_from_files",
           "package_from_dir"]

MAX_UPLOAD_BYTES = 8 << 20
MAX_ENTRIES = 16 * MAX_FILES              # archive members, skipped ones included
MAX_TAR_BYTES = 2 * MAX_TOTAL_BYTES       # a gzip is inflated at most this far
MAX_CONFIG_NODES = 100_000                # a YAML config after its aliases are expanded
MAX_REQUIREMENTS = 200
# libyaml's safe loader: its parser refuses nesting over 1000 levels at once, where the pure
# Python one spends a second unwinding a RecursionError; the constructor is the safe one.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_CONFIG_INT = 1 << 64                  # a larger config int means nothing here
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # inflated within a limit
CONFIG_NAMES = ("config.yaml", "config.yml")
META = ("evoforge.toml", "requirements.txt") + CONFIG_NAMES
SEED_NAME = re.compile(r"initial_program\.[A-Za-z0-9_+-]{1,16}")
REQUIREMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._, -]*\])?\s*"
                         r"([<>=!~;(].*)?")


class PackageError(ValueError):
    """A problem that cannot be stored; the message is one line and says which file and why."""


@dataclass(frozen=True)
class ProblemPackage:
    digest: str                  # sha256 hex of the canonical content
    layout: str                  # "openevolve" | "native"
    name: str                    # from evoforge.toml or the caller, else ""
    seed_path: str
    evaluator_path: str
    files: dict[str, str]        # relative POSIX path -> text; seed and evaluator included
    config: dict                 # OpenEvolve-shaped, secret keys dropped
    stages: list[str] | None     # native [cascade] stages; None: by presence, as OpenEvolve
    requirements: list[str]
    skipped: list[str]           # "path (reason)"
    ignored_secrets: list[str]   # config key paths dropped unread


# -- reading an upload ----------------------------------------------------------------------

def read_upload(body: bytes, content_type: str = "") -> dict[str, bytes]:
    """The files of a zip, tar, tar.gz or JSON `{path: text}` upload (sniffed from its first
    bytes; `content_type` decides only for JSON and old tars). Members under a hidden or
    build-output directory, and hidden files, come back empty and unread: they are skipped."""
    if len(body) > MAX_UPLOAD_BYTES:
        raise PackageError(f"the upload is over {MAX_UPLOAD_BYTES >> 20} MiB")
    ctype = content_type.split(";")[0].strip().lower()
    if body[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _read_zip(body)
    if body[:2] == b"\x1f\x8b":
        return _read_tar(_gunzip(body))
    if body[257:262] == b"ustar" or ctype in ("application/x-tar", "application/tar"):
        return _read_tar(body)
    if ctype.endswith("json") or body.lstrip()[:1] == b"{":
        return _read_json(body)
    raise PackageError("not a zip, tar, tar.gz or JSON {path: text} upload")


class _Members:
    """The files read so far, and the limits they must keep."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.dirs: set[str] = set()
        self.entries = 0
        self.kept = 0
        self.total = 0

    def path(self, raw: str) -> str:
        """`raw` as a checked relative path ("" for the archive's root)."""
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise PackageError(f"more than {MAX_ENTRIES} entries in the archive")
        name = raw.rstrip("/") if raw.endswith("/") and raw.strip("/") else raw
        while name.startswith("./"):
            name = name[2:]
        if name in ("", "."):
            return ""
        why = path_refusal(name)
        if why:
            raise PackageError(f"{shown(raw)}: {why}; nothing was stored")
        return name

    def directory(self, raw: str) -> None:
        path = self.path(raw)
        if path:
            self.dirs.add(path)

    def file(self, raw: str, size: int, read: Callable[[int], bytes]) -> None:
        path = self.path(raw)
        if not path:
            raise PackageError(f"{shown(raw)}: a file with no name")
        if raw.endswith("/"):
            raise PackageError(f"{shown(raw)}: a file named as a directory; nothing was stored")
        if path in self.files:
            raise PackageError(f"{shown(path)}: in the archive twice")
        if _left_out(path):
            self.files[path] = b""
            return
        self.kept += 1
        if self.kept > MAX_FILES:
            raise PackageError(f"more than {MAX_FILES} files")
        if size > MAX_FILE_BYTES:
            raise PackageError(f"{shown(path)}: {size} bytes, over {MAX_FILE_BYTES >> 20} MiB")
        if self.total + size > MAX_TOTAL_BYTES:
            raise PackageError(f"{shown(path)}: over {MAX_TOTAL_BYTES >> 20} MiB in all")
        data = read(size + 1)
        if len(data) != size:
            raise PackageError(f"{shown(path)}: its size differs from the archive's header")
        self.total += size
        self.files[path] = data

    def done(self) -> dict[str, bytes]:
        parents = {"/".join(d.split("/")[:i + 1])
                   for d in self.dirs for i in range(d.count("/") + 1)}
        clash = file_and_directory(self.files) or min(parents & set(self.files), default=None)
        if clash:
            raise PackageError(f"{shown(clash)}: both a file and a directory")
        return self.files


def _read_zip(body: bytes) -> dict[str, bytes]:
    out = _Members()
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ENTRIES:
                raise PackageError(f"more than {MAX_ENTRIES} entries in the archive")
            for info in infos:
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind == stat.S_IFLNK:
                    raise PackageError(f"{shown(info.filename)}: a link; nothing was stored")
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise PackageError(f"{shown(info.filename)}: a device, FIFO or socket; "
                                       "nothing was stored")
                if info.flag_bits & 0x1:
                    raise PackageError(f"{shown(info.filename)}: encrypted")
                if info.compress_type not in ZIP_METHODS:
                    # zipfile inflates bzip2 and lzma with no output limit: 4 KiB of bzip2
                    # is gigabytes, whatever the header declares
                    raise PackageError(f"{shown(info.filename)}: compressed with method "
                                       f"{info.compress_type}; only stored or deflated members "
                                       "are read (zip -Z deflate)")
                if info.is_dir() or kind == stat.S_IFDIR:
                    if info.file_size or info.compress_size:
                        raise PackageError(f"{shown(info.filename)}: a directory with data")
                    out.directory(info.orig_filename)
                    continue
                with zf.open(info) as member:
                    out.file(info.orig_filename, info.file_size, member.read)
    except PackageError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError,
            ValueError, RuntimeError, zlib.error) as exc:
        raise PackageError(f"not a valid zip archive ({_line(exc)})") from None
    return out.done()


def _gunzip(body: bytes) -> bytes:
    """The inflated gzip stream, refused beyond MAX_TAR_BYTES (never inflated further)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, MAX_TAR_BYTES + 1)
    except zlib.error as exc:
        raise PackageError(f"not a valid gzip stream ({_line(exc)})") from None
    if len(data) > MAX_TAR_BYTES or inflater.unconsumed_tail:
        raise PackageError(f"the archive inflates to over {MAX_TAR_BYTES >> 20} MiB")
    return data


def _read_tar(data: bytes) -> dict[str, bytes]:
    out = _Members()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            for m in tf:
                if m.issym() or m.islnk():
                    raise PackageError(f"{shown(m.name)}: a link; nothing was stored")
                if m.ischr() or m.isblk() or m.isfifo():
                    raise PackageError(f"{shown(m.name)}: a device or FIFO; nothing was stored")
                if m.isdir():
                    out.directory(m.name)
                elif m.isfile() and not m.issparse():
                    member = tf.extractfile(m)
                    out.file(m.name, m.size, member.read)
                else:
                    raise PackageError(f"{shown(m.name)}: not a regular file; nothing was stored")
    except PackageError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError) as exc:
        raise PackageError(f"not a valid tar archive ({_line(exc)})") from None
    return out.done()


def _read_json(body: bytes) -> dict[str, bytes]:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                raise PackageError(f"{shown(key)}: in the upload twice")
            seen[key] = value
        return seen

    try:
        obj = json.loads(body, object_pairs_hook=pairs)
    except PackageError:
        raise
    except (ValueError, RecursionError) as exc:
        raise PackageError(f"not valid JSON ({_line(exc)})") from None
    if not isinstance(obj, dict):
        raise PackageError("expected a JSON object {path: text}")
    out = _Members()
    for key, text in obj.items():
        if not isinstance(text, str):
            raise PackageError(f"{shown(key)}: the value must be the file's text")
        data = text.encode("utf-8", "surrogatepass")  # a lone surrogate: skipped as not UTF-8
        out.file(key, len(data), lambda n, d=data: d[:n])
    return out.done()


def _line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


# -- checking the files ---------------------------------------------------------------------

def _left_out(path: str, include: Sequence[str] = ()) -> tuple[str, str] | None:
    """(what, why) when `path` is under a hidden or build-output directory or hidden itself;
    such files are never read."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        what = "/".join(parts[:i + 1])
        last = i == len(parts) - 1
        if part.startswith("."):
            return what, "hidden" if last else "directory, hidden"
        if not last and part in BUILD_DIRS and not matches(what, include):
            return what, "directory, build output or cache"
    return None


def _normalized(raw: dict[str, bytes]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, data in raw.items():
        path = key
        while isinstance(path, str) and path.startswith("./"):
            path = path[2:]
        why = path_refusal(path)
        if why:
            raise PackageError(f"{shown(str(key))}: {why}; nothing was stored")
        if path in out:
            raise PackageError(f"{shown(path)}: given twice")
        if not isinstance(data, (bytes, bytearray)):
            raise PackageError(f"{shown(path)}: not bytes")
        out[path] = bytes(data)
    clash = file_and_directory(out)
    if clash:
        raise PackageError(f"{shown(clash)}: both a file and a directory")
    return out


def _strip_top(raw: dict[str, bytes]) -> dict[str, bytes]:
    """Read an archive of `problem/...` as the directory `problem`."""
    paths = [p for p in raw if not _left_out(p.split("/", 1)[0] + "/x")]
    tops = {p.split("/", 1)[0] for p in paths}
    if len(tops) != 1 or any("/" not in p for p in paths):
        return raw
    prefix = tops.pop() + "/"
    out = {p.removeprefix(prefix): d for p, d in raw.items()}
    if len(out) != len(raw):
        raise PackageError(f"{shown(prefix)}: its files clash with the top level's")
    return out


def _check_limits(files: dict[str, bytes]) -> None:
    if len(files) > MAX_FILES:
        raise PackageError(f"more than {MAX_FILES} files")
    for path, data in files.items():
        if len(data) > MAX_FILE_BYTES:
            raise PackageError(f"{shown(path)}: {len(data)} bytes, over {MAX_FILE_BYTES >> 20} MiB")
    if sum(map(len, files.values())) > MAX_TOTAL_BYTES:
        raise PackageError(f"over {MAX_TOTAL_BYTES >> 20} MiB in all")


def _text(path: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackageError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start})") from None


# -- the package ----------------------------------------------------------------------------

def package_from_files(raw: dict[str, bytes], *, name: str = "") -> ProblemPackage:
    """The package of these files (relative path -> bytes, as `read_upload` returns them);
    `name` overrides evoforge.toml's. Raises PackageError."""
    return _package(raw, name=name)


def _package(raw: dict[str, bytes], *, name: str = "", include: Sequence[str] = (),
             skipped: Sequence[str] = ()) -> ProblemPackage:
    raw = _strip_top(_normalized(raw))
    report: list[str] = list(skipped)
    reasons: dict[str, str] = {}
    kept: dict[str, bytes] = {}
    for path in sorted(raw):
        left = _left_out(path, include)
        if left:
            line = f"{shown(left[0])} ({left[1]})"
            if line not in report:
                report.append(line)
            reasons[path] = left[1]
        else:
            kept[path] = raw[path]
    _check_limits(kept)
    meta = {p: _text(p, kept.pop(p)) for p in META if p in kept}
    files: dict[str, str] = {}
    for path, data in kept.items():
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            why = "not UTF-8 text"
        else:
            why = refusal(path, text)
        if why:
            report.append(f"{shown(path)} ({why})")
            reasons[path] = why
        else:
            files[path] = text

    configs = [p for p in CONFIG_NAMES if p in meta]
    if len(name) > 200 or not name.isprintable():
        raise PackageError("the name must be one printable line, at most 200 characters")
    if len(configs) == 2 or (configs and "evoforge.toml" in meta):
        raise PackageError(f"{' and '.join(configs + [p for p in ('evoforge.toml',) if p in meta])}"
                           ": more than one config, keep one")
    requirements = _requirements(meta.get("requirements.txt", ""), report)
    if "evoforge.toml" in meta:
        native = _native(meta["evoforge.toml"])
        layout, config, stages = "native", native.config, native.stages
        ignored, seed_path, evaluator_path = native.ignored, native.seed, native.evaluator
        name = name or native.name
        requirements = list(dict.fromkeys(native.requires + requirements))
    else:
        layout, stages, seed_path, evaluator_path = "openevolve", None, "", "evaluator.py"
        config, ignored = _yaml_config(configs[0], meta[configs[0]]) if configs else ({}, [])
    ignored = ignored + _drop_secret_values(config)
    if not seed_path:
        suffix = config.get("file_suffix")
        seed_path = _pick_seed(files, reasons, suffix if isinstance(suffix, str) else None)
    if seed_path == evaluator_path:
        raise PackageError(f"{shown(seed_path)}: the seed cannot be the evaluator")
    for role, path in (("seed", seed_path), ("evaluator", evaluator_path)):
        if path not in files:
            why = reasons.get(path)
            raise PackageError(f"{shown(path)}: " + (f"{why}; the {role} cannot be left out"
                                                     if why else f"no such file (the {role})"))
    content = {"layout": layout, "seed": seed_path, "evaluator": evaluator_path, "files": files,
               "config": config, "stages": stages, "requirements": requirements}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"),
                                       ensure_ascii=False).encode()).hexdigest()
    return ProblemPackage(digest=digest, layout=layout, name=name, seed_path=seed_path,
                          evaluator_path=evaluator_path, files=files, config=config,
                          stages=stages, requirements=requirements, skipped=sorted(report),
                          ignored_secrets=ignored)


def _pick_seed(files: dict[str, str], reasons: dict[str, str], suffix: str | None) -> str:
    if suffix and f"initial_program{suffix}" in files:
        return f"initial_program{suffix}"
    found = sorted(p for p in files if SEED_NAME.fullmatch(p))
    if len(found) == 1:
        return found[0]
    if found:
        raise PackageError(f"several seeds ({', '.join(found)}): set file_suffix in the config")
    left = sorted(p for p in reasons if SEED_NAME.fullmatch(p))
    if left:
        raise PackageError(f"{shown(left[0])}: {reasons[left[0]]}; the seed cannot be left out")
    folder = " (initial_program/ is a directory)" if any(
        p.startswith("initial_program/") for p in (*files, *reasons)) else ""
    raise PackageError(f"no initial_program.* file at the top of the problem (the seed){folder}")


def _requirements(text: str, report: list[str]) -> list[str]:
    """requirements.txt's requirement lines; options (`-r`, `--index-url`, which may carry a
    token), URLs and anything else are reported and dropped."""
    out: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not line:
            continue
        if line.startswith("-"):
            why = "a pip option, not read"
        elif "://" in line or "@" in line or SECRET_TEXT.search(line):
            why = "a URL, not read"
        elif len(line) > 200 or not REQUIREMENT.fullmatch(line):
            why = "not a requirement"
        elif len(out) >= MAX_REQUIREMENTS:
            why = f"over {MAX_REQUIREMENTS} requirements"
        else:
            out.append(line)
            continue
        report.append(f"requirements.txt line {number} ({why})")
    return list(dict.fromkeys(out))


def _yaml_config(path: str, text: str) -> tuple[dict, list[str]]:
    try:
        cfg = yaml.load(text, Loader=SAFE_LOADER)  # noqa: S506 - a safe loader
    except (yaml.YAMLError, RecursionError, ValueError) as exc:  # ValueError: a 5000-digit int
        raise PackageError(f"{path}: not valid YAML ({_line(exc)})") from None
    if cfg is None:
        return {}, []
    if not isinstance(cfg, dict):
        raise PackageError(f"{path}: expected a mapping at the top level")
    ignored = drop_secrets(cfg)
    return _plain(cfg, path, [MAX_CONFIG_NODES], ""), ignored


def _plain(value: Any, source: str, budget: list[int], where: str, depth: int = 0) -> Any:
    """`value` as plain JSON data (YAML aliases expanded, within a budget)."""
    budget[0] -= 1
    if budget[0] < 0 or depth > 64:
        raise PackageError(f"{source}: too large or too deeply nested once its aliases are "
                           "expanded")
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            k = _utf8(str(key), source, where)
            if k in out:
                raise PackageError(f"{source}: {shown(where + k)} given twice")
            out[k] = _plain(item, source, budget, f"{where}{k}.", depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [_plain(v, source, budget, where, depth + 1) for v in items]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_CONFIG_INT:
        raise PackageError(f"{source}: {shown(where.rstrip('.'))} is out of range")
    if isinstance(value, float) and not math.isfinite(value):
        raise PackageError(f"{source}: {shown(where.rstrip('.'))} is not a finite number")
    if isinstance(value, str):
        return _utf8(value, source, where)
    if value is None or isinstance(value, (int, float, bool)):
        return value
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    raise PackageError(f"{source}: {shown(where.rstrip('.'))} holds a {type(value).__name__}")


def _utf8(text: str, source: str, where: str) -> str:
    """`text`, unless it holds a lone surrogate (a YAML `"\\ud800"` escape): no UTF-8 text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PackageError(f"{source}: {shown(where.rstrip('.')) or 'a key'} is not UTF-8 text "
                           "(a lone surrogate)") from None
    return text


def _drop_secret_values(value: Any, where: str = "") -> list[str]:
    """Remove string values that look like a key (`sk-...`, a private key block), whatever
    their key is called; their paths."""
    if isinstance(value, dict):
        items = [(k, f"{where}.{k}" if where else k) for k in value]
    elif isinstance(value, list):
        items = [(i, f"{where}[{i}]") for i in range(len(value))]
    else:
        return []
    dropped: list[str] = []
    for key, path in reversed(items):  # from the end: list indices stay valid
        if isinstance(value[key], str) and SECRET_TEXT.search(value[key]):
            del value[key]
            dropped.append(path)
        else:
            dropped += _drop_secret_values(value[key], path)
    return sorted(dropped)


# -- the native layout ----------------------------------------------------------------------

@dataclass
class _Native:
    config: dict
    stages: list[str] | None
    seed: str
    evaluator: str
    name: str
    requires: list[str]
    ignored: list[str]


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _strs(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) and len(s) <= 200 for s in v)


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str) and len(v) <= 100_000, "a string"),
    "strs": (_strs, "a list of strings"),
    "num": (_is_num, "a number"),
    "pos": (lambda v: _is_num(v) and v > 0, "a positive number"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "posint": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
               "a positive integer"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "nums": (lambda v: isinstance(v, list) and all(_is_num(x) for x in v), "a list of numbers"),
    "bins": (lambda v: (isinstance(v, int) and not isinstance(v, bool) and v >= 1) or
             (isinstance(v, dict) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1
                                          for x in v.values())),
             "a positive integer or a table of them"),
    "models": (lambda v: isinstance(v, list) and all(
        isinstance(m, dict) and set(m) <= {"name", "weight"} and isinstance(m.get("name"), str)
        and _is_num(m.get("weight", 1.0)) and m.get("weight", 1.0) >= 0 for m in v),
        "a list of {name, weight} tables"),
}
# evoforge.toml key -> (check, OpenEvolve config path; "" when it is not a config key)
NATIVE_KEYS: dict[str, tuple[str, str]] = {
    "problem.name": ("str", ""), "problem.seed": ("str", ""), "problem.evaluator": ("str", ""),
    "problem.requires": ("strs", ""), "problem.language": ("str", "language"),
    "problem.file_suffix": ("str", "file_suffix"),
    "cascade.stages": ("strs", ""), "cascade.thresholds": ("nums", "evaluator.cascade_thresholds"),
    "features.metrics": ("strs", "database.feature_dimensions"),
    "features.bins": ("bins", "database.feature_bins"),
    "resources.timeout_s": ("pos", "evaluator.timeout"),
    "resources.memory_mb": ("posint", "evaluator.memory_limit_mb"),
    "resources.parallel": ("posint", "evaluator.parallel_evaluations"),
    "llm.system_message": ("str", "prompt.system_message"),
    "llm.temperature": ("num", "llm.temperature"), "llm.top_p": ("num", "llm.top_p"),
    "llm.max_tokens": ("posint", "llm.max_tokens"), "llm.timeout": ("pos", "llm.timeout"),
    "llm.retries": ("int", "llm.retries"), "llm.models": ("models", "llm.models"),
    "evolution.max_iterations": ("posint", "max_iterations"),
    "evolution.random_seed": ("int", "random_seed"),
    "evolution.islands": ("posint", "database.num_islands"),
    "evolution.migration_interval": ("posint", "database.migration_interval"),
    "evolution.diff_based": ("bool", "diff_based_evolution"),
}


def _native(text: str) -> _Native:
    try:
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:  # a 5000-digit int
        raise PackageError(f"evoforge.toml: not valid TOML ({_line(exc)})") from None
    ignored = drop_secrets(raw)
    flat: dict[str, Any] = {}
    unknown: list[str] = []
    for section, table in raw.items():
        if not isinstance(table, dict):
            unknown.append(section)
            continue
        for key, value in table.items():
            if f"{section}.{key}" in NATIVE_KEYS:
                flat[f"{section}.{key}"] = value
            else:
                unknown.append(f"{section}.{key}")
    if unknown:
        shown_keys = ", ".join(shown(k) for k in sorted(unknown)[:10])
        raise PackageError(f"evoforge.toml: unknown key(s) {shown_keys} (known: [problem], "
                           "[cascade], [features], [resources], [llm], [evolution]: "
                           "see docs/openevolve.md)")
    config: dict[str, Any] = {}
    for key, value in flat.items():
        check, target = NATIVE_KEYS[key]
        ok, what = _CHECKS[check]
        if not ok(value):
            raise PackageError(f"evoforge.toml: {key} must be {what}")
        if target:
            section, _, leaf = target.rpartition(".")
            (config.setdefault(section, {}) if section else config)[leaf] = value
    stages = flat.get("cascade.stages")
    if stages is not None:
        bad = [s for s in stages if not s.isidentifier()]
        if not stages or bad:
            raise PackageError("evoforge.toml: cascade.stages must name evaluator functions"
                               + (f" ({shown(bad[0])} is not a name)" if bad else ""))
        thresholds = flat.get("cascade.thresholds", [])
        if len(thresholds) < len(stages) - 1:
            raise PackageError("evoforge.toml: cascade.thresholds needs one threshold per stage "
                               "after the first")
        config.setdefault("evaluator", {})["cascade_evaluation"] = len(stages) > 1
    seed = flat.get("problem.seed", "")
    if seed and path_refusal(seed):
        raise PackageError(f"evoforge.toml: problem.seed {shown(seed)}: {path_refusal(seed)}")
    evaluator = flat.get("problem.evaluator", "evaluator.py")
    if not (SAFE_NAME.fullmatch(evaluator) and evaluator.endswith(".py")):
        raise PackageError("evoforge.toml: problem.evaluator must be a .py file at the top "
                           "of the problem")
    requires: list[str] = []
    for req in flat.get("problem.requires", []):
        if not REQUIREMENT.fullmatch(req.strip()) or "@" in req:
            raise PackageError(f"evoforge.toml: problem.requires: {shown(req)} is not a "
                               "requirement")
        requires.append(req.strip())
    name = flat.get("problem.name", "")
    if len(name) > 200 or not name.isprintable():
        raise PackageError("evoforge.toml: problem.name must be one printable line, at most "
                           "200 characters")
    config = _plain(config, "evoforge.toml", [MAX_CONFIG_NODES], "")  # ints in range
    return _Native(config=config, stages=list(stages) if stages is not None else None,
                   seed=seed, evaluator=evaluator, name=name, requires=requires,
                   ignored=ignored)


# -- a folder -------------------------------------------------------------------------------

def package_from_dir(path: str | Path, *, include: Sequence[str] = (),
                     exclude: Sequence[str] = ()) -> ProblemPackage:
    """The package of a problem folder (or of an archive file). Walks subdirectories, never
    follows a symlink; what an upload would be refused for (a link, a file over the limits, a
    binary) is skipped and reported here instead. `exclude` globs leave files or directories
    out; `include` globs let a build-output directory in (`BUILD_DIRS`: target/, ...)."""
    root = Path(path)
    try:
        st = os.stat(root)
    except OSError as exc:
        raise PackageError(f"{root}: {exc.strerror or exc}") from None
    if stat.S_ISREG(st.st_mode):
        return package_from_files(read_upload(_read_bytes(root, MAX_UPLOAD_BYTES)))
    if not stat.S_ISDIR(st.st_mode):
        raise PackageError(f"{root}: not a directory or an archive")
    raw: dict[str, bytes] = {}
    skipped: list[str] = []
    total = 0
    for rel, lst, why in walk(root, include=include, exclude=exclude):
        if why is None and rel not in META:
            why = refusal(rel)
        if why is None:
            if len(raw) >= MAX_FILES:
                why = f"over {MAX_FILES} files"
            elif lst.st_size > MAX_FILE_BYTES:
                why = f"larger than {MAX_FILE_BYTES >> 20} MiB"
            elif total + lst.st_size > MAX_TOTAL_BYTES:
                why = f"over {MAX_TOTAL_BYTES >> 20} MiB in all"
        if why is None:
            try:
                data = _read_bytes(root / rel, MAX_FILE_BYTES)
                data.decode("utf-8")
            except PackageError as exc:
                why = str(exc).rpartition(": ")[2]
            except UnicodeDecodeError:
                why = "not UTF-8 text"
            else:
                raw[rel] = data
                total += len(data)
        if why:
            skipped.append(f"{shown(rel)} ({why})")
    return _package(raw, include=include, skipped=skipped)


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file `path` (never a link, FIFO or device), at most max_bytes."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise PackageError(f"{path}: {exc.strerror or 'unreadable'}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise PackageError(f"{path}: not a regular file")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PackageError(f"{path}: larger than {max_bytes >> 20} MiB")
    return data
