"""The results store: one JSON document per sweep, `{"schema": 1, "results": [...]}`, and
beside it the claims of the runners working on it (`<file>.claims`).

Contract (DESIGN.md §4):
- A finished result is never changed or dropped: writers only append records.
- Every write holds an exclusive lock (`<file>.lock`) around its read-modify-write, writes a
  temporary file in the same folder, fsyncs it, `os.replace`s it over the old one and fsyncs
  the folder: a crash at any instant leaves either the old or the new file, both valid.
  So several processes may append to one file and none loses another's record.
- A file that exists but does not parse as a results document is never overwritten: every
  operation raises StoreError naming it and leaves it as it was.
- Claims (see claims.py) live in their own file so the results file holds results only; they
  are read and written under the same lock, so "not done and not claimed" is decided atomically.
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
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once, at import, while nothing else runs: umask has no getter
OK, FAILED, INTERRUPTED = "ok", "failed", "interrupted"


def dumps(doc) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY) + b"\n"


class ResultsStore:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.claims_path = Path(str(self.path) + ".claims")
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
            self.append_locked(record)

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
            self._remove_orphans()
            yield
        finally:
            self.lock.release()

    # The *_locked methods expect the caller to hold `locked()`.

    def append_locked(self, record: dict) -> None:
        results = self._read()
        results.append(record)
        write_atomic(self.path, dumps({"schema": SCHEMA, "results": results}))

    def claims(self) -> dict[str, dict]:
        """Claims by experiment key; {} when there are none. Like records(), a plain read."""
        try:
            doc = orjson.loads(self.claims_path.read_bytes())
            if not isinstance(doc, dict) or not isinstance(doc.get("claims"), dict):
                raise ValueError("not a claims document")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:  # orjson.JSONDecodeError is a ValueError
            raise StoreError(f"{self.claims_path}: unreadable claims file ({e}); when no runner is running "
                             f"on {self.path.name}, delete it: it holds no results") from None
        return doc["claims"]

    def write_claims_locked(self, claims: dict[str, dict]) -> None:
        if not claims and not self.claims_path.exists():
            return
        write_atomic(self.claims_path, dumps({"schema": SCHEMA, "claims": claims}))

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

    def _remove_orphans(self) -> None:
        """Temporary files of writers killed mid-write. Safe only under the lock: a live
        writer holds the lock for as long as its temporary file exists."""
        for name in (self.path.name, self.claims_path.name):
            for tmp in self.path.parent.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` by `data` so that a crash at any instant leaves the old or the new file."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600: results are for the team to read
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as e:
        raise StoreError(f"{path}: could not write ({e.strerror}); the previous file is intact") from None
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
