"""The results store: one JSON document per sweep, `{"schema": 1, "results": [...]}`.

Contract (DESIGN.md §4):
- A finished result is never changed or dropped: writers only append records.
- Every write holds an exclusive lock (`<file>.lock`) around its read-modify-write, writes a
  temporary file in the same folder, fsyncs it, `os.replace`s it over the old one and fsyncs
  the folder: a crash at any instant leaves either the old or the new file, both valid.
  So several processes may append to one file and none loses another's record.
- A file that exists but does not parse as a results document is never overwritten: every
  operation raises StoreError naming it and leaves it as it was.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import orjson
from filelock import FileLock

from ramsweep.errors import StoreError

SCHEMA = 1
OK, FAILED, INTERRUPTED = "ok", "failed", "interrupted"


def dumps(doc) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY) + b"\n"


class ResultsStore:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.lock = FileLock(str(self.path) + ".lock")

    def records(self) -> list[dict]:
        """All records, oldest first; [] when the file does not exist yet. No lock needed:
        writers replace the file atomically, so a reader sees the old or the new one."""
        return self._read()

    def completed_keys(self) -> set[str]:
        return {r["key"] for r in self.records() if r.get("status") == OK}

    def append(self, record: dict) -> None:
        """Add one record durably (see the contract above)."""
        with self.locked():
            results = self._read()
            results.append(record)
            self._write({"schema": SCHEMA, "results": results})

    @contextmanager
    def locked(self):
        """The exclusive lock of every read-modify-write; OS errors become a StoreError."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        except OSError as e:
            raise StoreError(f"{self.path}: cannot lock the results file ({e.strerror}); "
                             f"check that its folder exists and is writable") from None
        try:
            yield
        finally:
            self.lock.release()

    def _read(self) -> list[dict]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StoreError(f"{self.path}: cannot read the results file ({e.strerror})") from None
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise StoreError(
                f"{self.path}: not valid JSON ({e}); it was left untouched: repair it, or move it "
                f"aside and run again to start a new results file"
            ) from None
        if not (isinstance(doc, dict) and doc.get("schema") == SCHEMA and isinstance(doc.get("results"), list)):
            raise StoreError(
                f"{self.path}: not a ramsweep results file (expected {{\"schema\": {SCHEMA}, \"results\": [...]}}); "
                f"it was left untouched: name another file with --results"
            )
        return doc["results"]

    def _write(self, doc: dict) -> None:
        folder = self.path.parent
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
            with os.fdopen(fd, "wb") as f:
                f.write(dumps(doc))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = None
            fsync_dir(folder)
        except OSError as e:
            raise StoreError(f"{self.path}: could not write results ({e.strerror}); the previous file is intact") from None
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX: the folder entry lives in the folder)."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
