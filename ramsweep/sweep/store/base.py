"""The results store interface and its contract (DESIGN.md §4; Optuna's BaseStorage is the model).

Contract, kept by every kind and checked by one test suite run on each (tests/test_store.py):

- **Append-only.** A record, once appended, is never changed, reordered or dropped.
  `records()` returns every record, oldest first; `latest()` the record that stands for
  each key (records.latest: its newest ok record, else its newest), and `heads()` a few
  hundred bytes of each of those, which is all that planning and claims read.
- **Safe across processes.** Any number of processes, on one host or sharing a local file
  system, may append to one store at once: appends are serialised by an exclusive lock
  (`<file>.lock`) and none is lost or duplicated. Readers take no lock and always see a
  valid prefix of the appends (the whole file before or after each append).
- **Durable.** `append` returns once the record is on disk (fsync); a crash or power cut at
  any instant leaves every earlier record intact and readable.
- **Never clobbers.** A file that does not parse as this kind is never written: every
  operation raises StoreError naming the file, the record and the field, and leaves it as it was.
- **Claims.** The runners' claims (claims.py) live beside the results in `<file>.claims`,
  read and written under the same lock, so "not done and not claimed" is decided atomically.

Kinds: `JsonDocument` (`{"schema": 1, "results": [...]}`, rewritten atomically on each
append: simple, O(records) per append) and `Journal` (JSON Lines, one record per line,
appended: O(1) per append, for big grids). `open_store(path)` picks by the file's suffix.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path

import orjson
from filelock import FileLock

from ramsweep._io import write_atomic
from ramsweep.errors import StoreError
from ramsweep.sweep.records import BaselineRecord, ExperimentRecord, Head, RecordError, latest, parse_record

SCHEMA = 1
Record = ExperimentRecord | BaselineRecord


def dumps(doc) -> bytes:
    """A JSON document as stored: indented, keys sorted."""
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY) + b"\n"


class Store(ABC):
    """One results file and its claims. Subclasses read and append records; the lock, the
    claims and the clean-up of writers killed mid-write are shared."""

    kind: str  # "document" | "journal"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.claims_path = Path(str(self.path) + ".claims")
        self.lock = FileLock(str(self.path) + ".lock")

    # -- records ---------------------------------------------------------------------------

    @abstractmethod
    def heads(self) -> dict[str, Head]:
        """The Head of the record that stands for each key (records.latest's rule), every record
        of the file validated on the way. Cheap to call again: only what was appended since is
        read. No lock needed."""

    @abstractmethod
    def records(self) -> list[Record]:
        """Every record, oldest first; [] when the file does not exist yet. Read from the file
        on each call (a big file's records are not kept in memory). No lock needed."""

    @abstractmethod
    def load(self, heads: list[Head]) -> list[Record]:
        """The whole records behind these heads (as returned by `heads()`)."""

    def latest(self) -> dict[str, Record]:
        """The record that stands for each key, whole (one pass over the file)."""
        return latest(self.records())

    def append(self, record: Record) -> None:
        """Add one record durably (see the contract above)."""
        with self.locked():
            self.append_locked(record)

    def append_locked(self, record: Record) -> None:
        """`append`, for a caller that holds `locked()` (a claim and a record in one step)."""
        self.extend_locked([record])

    @abstractmethod
    def extend_locked(self, records: list[Record]) -> None:
        """Append several records in one durable write (under `locked()`)."""

    # -- the lock --------------------------------------------------------------------------

    @contextmanager
    def locked(self):
        """The exclusive lock of every write; OS errors become a StoreError."""
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

    def _remove_orphans(self) -> None:
        """Temporary files of writers killed mid-write. Safe only under the lock: a live
        writer holds the lock for as long as its temporary file exists."""
        for name in (self.path.name, self.claims_path.name):
            for tmp in self.path.parent.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)

    # -- claims ----------------------------------------------------------------------------

    def claims(self) -> dict[str, dict]:
        """Claims by experiment key; {} when there are none. A plain read, like records()."""
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
        self.write_locked(self.claims_path, dumps({"schema": SCHEMA, "claims": claims}))

    def write_locked(self, path: Path, data: bytes) -> None:
        try:
            write_atomic(path, data)
        except OSError as e:
            raise StoreError(f"{path}: could not write ({e.strerror}); the previous file is intact") from None

    # -- shared helpers --------------------------------------------------------------------

    def invalid(self, where: str, err: RecordError) -> StoreError:
        return StoreError(f"{self.path}: {where}: {err}; the file was left untouched: repair that record "
                          f"or name another file with --results")

    def read_bytes(self) -> bytes | None:
        """The file's bytes, None when it does not exist."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"{self.path}: cannot read the results file ({e.strerror})") from None


def parse_stored(store: Store, value, where: str) -> Record:
    try:
        return parse_record(value)
    except RecordError as err:
        raise store.invalid(where, err) from None
