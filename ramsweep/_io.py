"""The one atomic file write and the one canonical digest.

`write_atomic` is how every results document, claims file and cache file is written: a
temporary file in the same folder, fsynced, `os.replace`d over the old one, the folder
fsynced, so a crash at any instant leaves the old file or the new one, never a mix.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import orjson

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once, at import, while nothing else runs: umask has no getter
FILE_MODE = 0o666 & ~_UMASK  # what open() would give: results are for the team to read


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace `path` by `data` so that a crash at any instant leaves the old or the new file.
    `durable=False` skips the fsyncs, for files that only inform (readers never see a partial
    file either way; after a power cut such a file may be the old one). Raises OSError (the old
    file intact, no temporary file left)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        if durable:
            fsync_dir(path.parent)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def open_regular(path: str | os.PathLike):
    """`path` opened for binary reading, only if it is a regular file: opened without blocking
    and checked before any read, so a FIFO or a device (a `--data-path /dev/zero`, a results path
    that became a FIFO) is an OSError at once, never a read that does not end or fills memory."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise OSError(errno.EINVAL, "not a regular file (a folder, FIFO, device or socket)", str(path))
    return f


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file durable (POSIX: the folder entry lives in the folder)."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def digest(value: Any, length: int = 16) -> str:
    """The first `length` hex digits of the sha256 of `value`'s canonical JSON (keys sorted)."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:length]
