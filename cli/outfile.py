"""Write a file the user named (`evoforge best --out`), never clobbering or following a link.

- An existing file is replaced only with `force`; otherwise `OutFileError`.
- A symlink at the path is refused, with or without `force`: writing "through" it would change
  whatever file it points at, and silently replacing it would surprise whoever made it.
- Without `force` the file is created with O_CREAT|O_EXCL|O_NOFOLLOW, so a file or link that
  appears between the check and the write makes it fail instead of being overwritten/followed.
- With `force` the text goes to a temporary file in the same directory (O_EXCL), which then
  `rename`s over the target: rename replaces a path and never follows a link there, and a
  reader sees the old or the new file, never half of one.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


class OutFileError(ValueError):
    """The path cannot be written as asked (the message says why, in one line)."""


def _mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_new_file(path: str | Path, text: str, *, force: bool = False) -> None:
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutFileError(f"{path}: {exc.strerror}") from None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise OutFileError(f"{path} is a symlink; it is never followed (remove it, or choose "
                               "another path)")
        if not stat.S_ISREG(st.st_mode):
            raise OutFileError(f"{path} exists and is not a regular file")
        if not force:
            raise OutFileError(f"{path} exists; pass --force to replace it")
    data = text.encode("utf-8")
    try:
        if force:
            _replace(path, data)
        else:
            _create(path, data)
    except FileExistsError:
        raise OutFileError(f"{path} appeared while writing; nothing was written to it") from None
    except OSError as exc:
        raise OutFileError(f"{path}: {exc.strerror or exc}") from None


def _create(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _mode())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        os.unlink(path)
        raise


def _replace(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
