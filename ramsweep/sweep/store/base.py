"""The results store interface and its contract (docs/design.md §4; Optuna's BaseStorage is the model).

Contract, kept by every kind and checked by one test suite run on each (tests/test_store.py):

- **Append-only.** A record, once appended, is never changed, reordered or dropped.
  `records()` returns every record, oldest first; `latest()` the record that stands for
  each key (records.latest: its newest ok record, else its newest), and `summaries()` a
  Summary of each of those (~1.5 KB, where a whole record is ~20 KB in memory), which is all
  that planning, claims, status and the dashboard read.
- **Safe across processes.** Any number of processes, on one host or sharing a local file
  system, may append to one store at once: appends are serialised by an exclusive lock on
  the file's folder (lock.py: it survives the deletion of any file) and none is lost or
  duplicated. Readers take no lock and always see a valid prefix of the appends (the whole
  file before or after each append).
- **Files only.** A symbolic link is followed (lock, claims and writes go with its target);
  a path that is not a regular file (a folder, FIFO, device or socket) is refused up front.
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

import errno
import os
import stat
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path

import orjson

from ramsweep._io import open_regular, write_atomic
from ramsweep.errors import StoreError
from ramsweep.sweep.records import (
    Claim,
    Record,
    RecordError,
    Runner,
    Summary,
    latest,
    parse_claims,
    parse_record,
    parse_runners,
)
from ramsweep.sweep.store.lock import INFO_NAME, folder_lock

SCHEMA = 1


def dumps(doc) -> bytes:
    """A JSON document as stored: indented, keys sorted."""
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY) + b"\n"


class Store(ABC):
    """One results file and its claims. Subclasses read and append records; the lock, the
    claims and the clean-up of writers killed mid-write are shared."""

    kind: str  # "document" | "journal"

    def __init__(self, path: str | os.PathLike):
        self.path = regular_file(Path(path))
        self.claims_path = Path(str(self.path) + ".claims")
        self._shared: dict = {}  # one DataInfo per data group, shared by the summaries (records.Summary.of)

    # -- records ---------------------------------------------------------------------------

    @abstractmethod
    def summaries(self) -> dict[str, Summary]:
        """The Summary of the record that stands for each key (records.latest's rule), every record
        of the file validated on the way. Cheap to call again: only what was appended since is
        read. No lock needed."""

    @abstractmethod
    def records(self) -> list[Record]:
        """Every record, oldest first; [] when the file does not exist yet. Read from the file
        on each call (a big file's records are not kept in memory). No lock needed."""

    @abstractmethod
    def follow(self, mark, most: int | None = None) -> tuple[list[tuple[Record, int]], object, bool]:
        """For a reader that follows the file (serve): the records added since `mark` (None: from
        the start), each with where it lies in the file (for `record_at`), the mark to pass next
        time, and whether the file was replaced since `mark` (then the records are all of them).
        A journal gives at most `most` records a call (call again until none come), a document
        all of them. No lock."""

    @abstractmethod
    def record_at(self, where: int) -> Record:
        """The record `follow` placed at `where`, read again whole (StoreError if the file changed
        under it: follow it again)."""

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
        """The exclusive lock of every write (lock.py); a one-line StoreError when it cannot be had."""
        with folder_lock(self.path.parent, self.path):
            self._remove_orphans()
            yield

    def _remove_orphans(self) -> None:
        """Temporary files of writers killed mid-write. Safe only under the lock: a live
        writer holds the lock for as long as its temporary file exists."""
        for name in (self.path.name, self.claims_path.name, INFO_NAME):
            for tmp in self.path.parent.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)

    # -- claims ----------------------------------------------------------------------------

    def claims(self) -> dict[str, Claim]:
        """Claims by key; {} when there are none. A plain read, like records()."""
        doc = self._claims_doc()
        try:
            return parse_claims(doc["claims"])
        except RecordError as err:
            raise StoreError(f"{self.claims_path}: claim {err}; {self._claims_fix}") from None

    def runners(self) -> dict[str, Runner]:
        """The runners that announced themselves (claims.py), by owner id; {} when none did. A
        runner killed outright stays until the next runner's heartbeat prunes it: readers judge
        liveness themselves (claims.looks_live)."""
        doc = self._claims_doc()
        try:
            return parse_runners(doc.get("runners", {}))
        except RecordError as err:
            raise StoreError(f"{self.claims_path}: runner {err}; {self._claims_fix}") from None

    @property
    def _claims_fix(self) -> str:
        return f"when no runner is running on {self.path.name}, delete it: it holds no results"

    def _claims_doc(self) -> dict:
        raw = read_file(self.claims_path)
        if raw is None:
            return {"claims": {}}
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise StoreError(f"{self.claims_path}: not valid JSON ({e}); {self._claims_fix}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("claims"), dict):
            raise StoreError(f"{self.claims_path}: not a claims file (expected {{\"claims\": {{...}}}}); "
                             f"{self._claims_fix}")
        return doc

    def write_claims_locked(self, claims: dict[str, Claim], runners: dict[str, Runner] | None = None) -> None:
        """Replace the claims (and the runners, when given; else they are kept as they are)."""
        if runners is None:
            runners = self.runners()
        if not claims and not runners and not self.claims_path.exists():
            return
        doc = {"schema": SCHEMA, "claims": {k: c.model_dump(exclude_none=True) for k, c in claims.items()},
               "runners": {k: r.model_dump() for k, r in runners.items()}}
        self.write_locked(self.claims_path, dumps(doc))

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
        return read_file(self.path)


# A results file's name leaves room for the names made from it, which must fit the file system's
# limit on one name too: the longest is the claims file's temporary `.NAME.claims.XXXXXXXX.tmp`.
NAME_ROOM = len(".") + len(".claims") + len(".XXXXXXXX.tmp")


def regular_file(path: Path) -> Path:
    """The results path with symbolic links followed; refused in one line unless it is a regular
    file or does not exist yet in a folder that can hold it (reading a FIFO or device would
    never end; a loop of links, a file in place of a folder, a missing permission or a name
    too long would surface later as a traceback)."""
    resolved = Path(os.path.realpath(path))
    fix = "name a results file instead (.json or .jsonl)"
    try:
        limit = os.pathconf(resolved.parent, "PC_NAME_MAX")
    except OSError:  # no such folder yet, or not one: the usual limit; stat_of says what is wrong
        limit = 255
    if len(os.fsencode(resolved.name)) > limit - NAME_ROOM:
        raise StoreError(f"{path}: its name is {len(os.fsencode(resolved.name))} bytes long; results files need names "
                         f"of at most {limit - NAME_ROOM} (the files beside them add to it): {fix}")
    st = stat_of(resolved, path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, device or socket)"
        raise StoreError(f"{path}: is {what}; {fix}")
    return path if resolved == path.absolute() else resolved  # a link followed; else the path as given


def stat_of(path: Path, named: Path | None = None) -> os.stat_result | None:
    """os.stat, None when the file does not exist (its folders do); any other failure is one
    StoreError naming `named` (the path as the user gave it) and why."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreError(f"{named or path}: {_why(e)}; name a results file instead (.json or .jsonl)") from None


@contextmanager
def reading(path: Path):
    """`path` open for reading (_io.open_regular: a path that became a FIFO or a device since, as
    a dashboard reading all night may meet, is refused, never read), None when it does not exist;
    any failure is one StoreError."""
    try:
        f = open_regular(path)
    except FileNotFoundError:
        yield None
        return
    except OSError as e:
        raise StoreError(f"{path}: cannot read it ({_why(e)}); put the results file back or name another") from None
    with f:
        try:
            yield f
        except OSError as e:
            raise StoreError(f"{path}: cannot read it ({_why(e)})") from None


def read_file(path: Path, offset: int = 0) -> bytes | None:
    """The bytes of `path` from `offset` on (open_regular's rules), None when it does not exist."""
    with reading(path) as f:
        if f is None:
            return None
        f.seek(offset)
        return f.read()


def _why(e: OSError) -> str:
    return {errno.ELOOP: "a loop of symbolic links", errno.ENOTDIR: "a part of the path is a file, not a folder",
            errno.EACCES: "no permission to reach or read it", errno.ENAMETOOLONG: "a name in it is too long",
            }.get(e.errno, e.strerror or str(e))


def parse_stored(store: Store, value, where: str) -> Record:
    try:
        return parse_record(value)
    except RecordError as err:
        raise store.invalid(where, err) from None
