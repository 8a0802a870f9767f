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
from ramsweep.sweep.records import Head, RecordError, add, dumps_line, gc_paused, parse_record
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
        self._heads: dict[str, Head] = {}
        self._torn_seen: int | None = None
        self._unterminated = False  # the last record read had no newline (yet)

    def heads(self) -> dict[str, Head]:
        self._catch_up()
        return dict(self._heads)

    def records(self) -> list[Record]:
        lines, _, tail = _split(self._read_from(0) or b"", 0, 0)
        with gc_paused():
            found = [parse_stored(self, line, f"line {number}") for number, _, line in lines]
        last = _complete(tail) if tail.strip() else None  # a whole last record that lost its newline
        return found + ([last] if last else [])

    def follow(self, mark, most: int | None = None) -> tuple[list[tuple[Record, int]], object, bool]:
        """Only the complete lines after `mark` (inode, offset) are read, at most `most` of them:
        a line being appended is read once its newline is there."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return [], None, mark is not None
        inode, offset = mark if mark is not None else (None, 0)
        replaced = inode != st.st_ino or st.st_size < offset
        if replaced:
            offset = 0
        new = self._read_from(offset) or b""
        end = new.rfind(b"\n") + 1
        if most is not None:
            cut = -1
            for _ in range(most):
                cut = new.find(b"\n", cut + 1)
                if cut < 0:
                    break
            end = min(end, cut + 1) if cut >= 0 else end
        complete = new[:end]
        lines, _, _ = _split(complete, offset, 0)
        with gc_paused():
            found = [(parse_stored(self, line, f"the line at byte {at}"), at) for _, at, line in lines]
        return found, (st.st_ino, offset + len(complete)), replaced

    def record_at(self, where: int) -> Record:
        try:
            with open(self.path, "rb") as f:
                f.seek(where)
                line = f.readline()
        except OSError as e:
            raise StoreError(f"{self.path}: cannot read the results file ({e.strerror})") from None
        return parse_stored(self, line, f"the line at byte {where}")

    def extend_locked(self, records: list[Record]) -> None:
        self._catch_up()  # also refuses a damaged file before anything is written
        line = b"".join(dumps_line(r) for r in records)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
        except OSError as e:
            raise StoreError(f"{self.path}: cannot open the results file ({e.strerror})") from None
        try:
            try:
                size = self._mend_tail(fd, os.fstat(fd).st_size)
            except OSError as e:
                raise StoreError(f"{self.path}: could not set its torn last line aside ({e.strerror}); the "
                                 "records before it are intact") from None
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

    def _read_from(self, offset: int) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"{self.path}: cannot read the results file ({e.strerror})") from None

    def _catch_up(self) -> None:
        """Validate and index the lines appended since the last call (all of them if the file
        was replaced)."""
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
        new = self._read_from(self._offset) or b""
        start = self._offset
        if self._unterminated and new.startswith(b"\n"):  # the newline a writer added since
            new, start = new[1:], start + 1
        self._unterminated = False
        lines, count, tail = _split(new, start, self._lines)
        with gc_paused():
            heads = [Head.of(parse_stored(self, line, f"line {number}"))
                     for number, offset, line in lines]
        for head in heads:  # only once every new line validated: a refusal changes nothing
            add(self._heads, head)
        self._lines, self._offset = count, start + len(new) - len(tail)
        if tail.strip():
            complete = _complete(tail)
            if complete is not None:  # whole record, newline lost: it counts
                self._lines += 1
                add(self._heads, Head.of(complete))
                self._offset += len(tail)
                self._unterminated = True
            elif self._torn_seen != self._offset:
                self._torn_seen = self._offset
                log.warning("%s: its last line (%d bytes) is a torn append, not a record; it is skipped, and "
                            "the next append moves it to %s.torn", self.path, len(tail), self.path.name)

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


def _split(data: bytes, start: int, before: int) -> tuple[list[tuple[int, int, bytes]], int, bytes]:
    """`data`, which begins at byte `start` of the file after `before` lines, as its complete,
    non-blank lines (line number, byte offset, line), the number of its last complete line,
    and its tail: the bytes after its last newline."""
    *complete, tail = data.split(b"\n")
    lines, offset = [], start
    for number, line in enumerate(complete, before + 1):
        if line.strip():
            lines.append((number, offset, line))
        offset += len(line) + 1
    return lines, before + len(complete), tail


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
