"""The journal store: JSON Lines, one complete record per line, only ever appended.

An append writes one line at the end and fsyncs it, under the lock: it costs the same at 10
records or 100,000. Readers keep what they parsed and read only the bytes added since, so a
runner that polls the store all night never parses a record twice. `jq . results.jsonl` and
`pandas.read_json("results.jsonl", lines=True)` read it as it is.

A torn last line (a power cut mid-append: bytes with no closing newline that are not a
complete record) is not a record: readers skip it, and the next append first moves those
bytes to `<file>.torn` (kept for inspection) and cuts the file back to its last complete
line, so nothing before it is lost and nothing after it is glued to it. A last line that
is a complete record but lacks its newline is kept and given one. Any other line that does
not parse is damage, not a torn append: the store refuses to read or append, naming the line.
"""

from __future__ import annotations

import logging
import os

from ramsweep._io import FILE_MODE, fsync_dir
from ramsweep.errors import StoreError
from ramsweep.sweep.records import RecordError, add, dumps_line, parse_record
from ramsweep.sweep.store.base import Record, Store, parse_stored

log = logging.getLogger(__name__)
_CHUNK = 1 << 16


class Journal(Store):
    kind = "journal"

    def __init__(self, path):
        super().__init__(path)
        self._reset(None)

    def _reset(self, inode: int | None) -> None:
        self._inode, self._offset, self._lines = inode, 0, 0
        self._records: list[Record] = []
        self._latest: dict[str, Record] = {}
        self._torn_seen: int | None = None
        self._unterminated = False  # the last record read had no newline (yet)

    def records(self) -> list[Record]:
        self._catch_up()
        return list(self._records)

    def latest(self) -> dict[str, Record]:
        self._catch_up()
        return dict(self._latest)

    def extend_locked(self, records: list[Record]) -> None:
        self._catch_up()  # also refuses a damaged file before anything is written
        line = b"".join(dumps_line(r) for r in records)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
        except OSError as e:
            raise StoreError(f"{self.path}: cannot open the results file ({e.strerror})") from None
        try:
            size = os.fstat(fd).st_size
            size = self._mend_tail(fd, size)
            try:
                _write_all(fd, line)
                os.fsync(fd)
            except OSError as e:
                os.ftruncate(fd, size)  # no half line stays behind: the file is as it was
                raise StoreError(f"{self.path}: could not append ({e.strerror}); the earlier records "
                                 "are intact") from None
            if size == 0:
                fsync_dir(self.path.parent)  # a new file: make its name durable too
        finally:
            os.close(fd)

    # -- reading ---------------------------------------------------------------------------

    def _catch_up(self) -> None:
        """Parse the lines appended since the last call (all of them if the file was replaced)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._reset(None)
            return
        except OSError as e:
            raise StoreError(f"{self.path}: cannot read the results file ({e.strerror})") from None
        if st.st_ino != self._inode or st.st_size < self._offset:
            self._reset(st.st_ino)
        if st.st_size == self._offset:
            return
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                new = f.read()
        except OSError as e:
            raise StoreError(f"{self.path}: cannot read the results file ({e.strerror})") from None
        if self._unterminated and new.startswith(b"\n"):  # the newline a writer added since
            new, self._offset = new[1:], self._offset + 1
        self._unterminated = False
        end = new.rfind(b"\n") + 1
        for line in new[:end].split(b"\n")[:-1]:
            self._lines += 1
            if line.strip():
                self._keep(parse_stored(self, line, f"line {self._lines}"))
        self._offset += end
        tail = new[end:]
        if tail.strip():
            complete = _complete(tail)
            if complete is not None:  # whole record, newline lost: it counts
                self._lines += 1
                self._keep(complete)
                self._offset += len(tail)
                self._unterminated = True
            elif self._torn_seen != self._offset:
                self._torn_seen = self._offset
                log.warning("%s: its last line (%d bytes) is a torn append, not a record; it is skipped, and "
                            "the next append moves it to %s.torn", self.path, len(tail), self.path.name)

    def _keep(self, record: Record) -> None:
        self._records.append(record)
        add(self._latest, record)

    # -- writing ---------------------------------------------------------------------------

    def _mend_tail(self, fd: int, size: int) -> int:
        """Make the file end with a complete line before appending; returns its new size."""
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return size
        start = _last_line_start(fd, size)
        tail = os.pread(fd, size - start, start)
        if _complete(tail) is not None:
            _write_all(fd, b"\n")
            return size + 1
        with open(str(self.path) + ".torn", "ab") as kept:
            kept.write(tail + b"\n")
            kept.flush()
            os.fsync(kept.fileno())
        os.ftruncate(fd, start)
        os.fsync(fd)
        log.warning("%s: moved a torn last line (%d bytes) to %s.torn; every record before it is intact",
                    self.path, len(tail), self.path.name)
        return start


def _complete(tail: bytes) -> Record | None:
    try:
        return parse_record(tail)
    except RecordError:
        return None


def _last_line_start(fd: int, size: int) -> int:
    """Offset just after the last newline before `size` (0 if none)."""
    pos = size
    while pos > 0:
        lo = max(0, pos - _CHUNK)
        found = os.pread(fd, pos - lo, lo).rfind(b"\n")
        if found >= 0:
            return lo + found + 1
        pos = lo
    return 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
