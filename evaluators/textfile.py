"""Read a text file someone named on the command line, without surprises.

`Path.read_text()` follows a FIFO and blocks, reads `/dev/zero` until memory runs out, and turns
a binary file into a UnicodeDecodeError traceback. `read_text_file` reads regular files only (the
file is opened non-blocking, then checked with fstat, so a FIFO swapped in after the first check
neither blocks nor passes), at most `max_bytes`, and strict UTF-8; everything else is a
`TextFileError` whose message is one line.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_TEXT_FILE_BYTES = 1_000_000  # the API's limit on a program's code


class TextFileError(ValueError):
    """A file that is not a small regular UTF-8 text file (the message says which)."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a regular file"


def read_text_file(path: str | Path, *, max_bytes: int = MAX_TEXT_FILE_BYTES,
                   follow_symlinks: bool = True) -> str:
    """The UTF-8 text of the regular file at `path` (at most `max_bytes`)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        before = os.stat(path, follow_symlinks=follow_symlinks)
        if not stat.S_ISREG(before.st_mode):
            raise TextFileError(f"{path}: {_kind(before.st_mode)}, not a regular file")
        if before.st_size > max_bytes:
            raise TextFileError(f"{path}: too large ({before.st_size} bytes; the limit is {max_bytes})")
        fd = os.open(path, flags)
    except OSError as exc:
        raise TextFileError(f"{path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        opened = os.fstat(f.fileno())
        if not stat.S_ISREG(opened.st_mode):
            raise TextFileError(f"{path}: {_kind(opened.st_mode)}, not a regular file")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TextFileError(f"{path}: too large (over {max_bytes} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TextFileError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start})") from None
