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
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


class OutFileError(ValueError):
    """The path cannot be written as asked (the message says why, in one line)."""


def _mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_new_file(path: str | Path, text: str, *, force: bool = False) -> None:
    with open_new_file(path, force=force) as f:
        f.write(text.encode("utf-8"))


@contextmanager
def open_new_file(path: str | Path, *, force: bool = False) -> Iterator[IO[bytes]]:
    """A binary stream to `path` under this module's rules: written in place when the path is
    new (O_EXCL, O_NOFOLLOW), else, with `force`, to a temporary file renamed over it at the
    end. Nothing is left behind when the block raises."""
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
    try:
        if force:
            fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
        else:
            fd, tmp = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                              | os.O_CLOEXEC, _mode()), None
    except FileExistsError:
        raise OutFileError(f"{path} appeared while writing; nothing was written to it") from None
    except OSError as exc:
        raise OutFileError(f"{path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if tmp is not None:
            os.chmod(tmp, _mode())
            os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp if tmp is not None else path)
        raise OutFileError(f"{path}: {exc.strerror or exc}") from None
    except BaseException:
        _discard(tmp if tmp is not None else path)
        raise


def _discard(path: str | Path) -> None:
    if os.path.lexists(path):
        os.unlink(path)


