"""The journal store: JSON Lines, one complete record per line, only ever appended.

An append writes one line at the end and fsyncs it, under the lock: it costs the same at 10
records or 100,000. Readers keep what they parsed and read only the bytes added since, so a
runner that polls the store all night never parses a record twice. `jq . results.jsonl` and
`pandas.read_json("results.jsonl", lines=True)` read it as it is.

A torn last line (a power cut mid-append) is not a record: readers skip it, and the next
append first moves those bytes to `<file>.torn` (kept for inspection) and cuts the file back
to its last complete line, so nothing before it is lost and nothing after it is glued to it.
A tail is torn only when it could be a record being appended: it follows a complete line, and
it is the start of a JSON object that stops before its end. A last line that is a complete
record but lacks its newline is kept and given one. Anything else that does not parse is
damage, not a torn append: a file with no complete line that is not one record (a JSON
document on one line, any file named by mistake) is not a journal, and any bad line is named;
the store refuses to read or append, and the file is never moved, cut or rewritten.
"""

from __future__ import annotations

import codecs
import logging
import os

import orjson

from ramsweep._io import FILE_MODE, fsync_dir
from ramsweep.errors import StoreError
from ramsweep.sweep.records import RecordError, Summary, add, dumps_line, gc_paused, parse_record
from ramsweep.sweep.store.base import Record, Store, parse_stored, read_file, reading, stat_of

log = logging.getLogger(__name__)
_CHUNK = 1 << 16


class Journal(Store):
    kind = "journal"

    def __init__(self, path):
        super().__init__(path)
        self._reset(None)

    def _reset(self, inode: int | None) -> None:
        self._inode, self._offset, self._lines = inode, 0, 0
        self._summaries: dict[str, Summary] = {}
        self._torn_seen: int | None = None
        self._unterminated = False  # the last record read had no newline (yet)
        self._seen: tuple | None = None  # (inode, size, mtime) when last caught up: unchanged, nothing to read
        self._refused: tuple | None = None  # ((inode, size, mtime), offset, why) of follow's last refusal

    def summaries(self) -> dict[str, Summary]:
        self._catch_up()
        return dict(self._summaries)

    def records(self) -> list[Record]:
        data = read_file(self.path) or b""
        lines, _, tail = _split(data, 0, 0)
        with gc_paused():
            found = [parse_stored(self, line, f"line {number}") for number, _, line in lines]
        last = self._tail(tail, len(data) - len(tail))  # a whole last record that lost its newline
        if last is None and tail.strip():
            self._say_torn(len(tail))
        return found + ([last] if last else [])

    def follow(self, mark, most: int | None = None) -> tuple[list[tuple[Record, int]], object, bool]:
        """Only the complete lines after `mark` are read, at most `most` of them: a line being
        appended is read once its newline is there. The records before a bad line are given
        (the next call names the line); a file unchanged since `mark` is not read again."""
        st = stat_of(self.path)
        if st is None:
            return [], None, mark is not None
        inode, offset, seen = mark if mark is not None else (None, 0, None)
        now = (st.st_ino, st.st_size, st.st_mtime_ns)
        if now == seen:  # e.g. a long torn tail that no newline ends yet: not read on every poll
            return [], mark, False
        replaced = inode != st.st_ino or st.st_size < offset
        if replaced:
            offset = 0
        if self._refused is not None and self._refused[:2] == (now, offset):
            raise StoreError(self._refused[2])  # a damaged file not read again until it changes
        try:
            found, mark = self._follow(now, offset, most)
        except StoreError as e:
            self._refused = (now, offset, str(e))
            raise
        return found, mark, replaced

    def _follow(self, now: tuple, offset: int, most: int | None) -> tuple[list[tuple[Record, int]], tuple]:
        """follow's reading, from `offset` of the file whose (inode, size, mtime) is `now`."""
        new = read_file(self.path, offset) or b""
        if offset == 0 and new.strip() and not new.lstrip().startswith(b"{"):
            raise self._not_a_journal()
        end = whole = new.rfind(b"\n") + 1
        if most is not None:
            cut = -1
            for _ in range(most):
                cut = new.find(b"\n", cut + 1)
                if cut < 0:
                    break
            end = min(end, cut + 1) if cut >= 0 else end
        lines, _, _ = _split(new[:end], offset, 0)
        found = []
        with gc_paused():
            for _, at, line in lines:
                try:
                    found.append((parse_stored(self, line, f"the line at byte {at}"), at))
                except StoreError:
                    if not found:
                        raise
                    return found, (now[0], at, None)  # the good records first; the error next time
        return found, (now[0], offset + end, now if end == whole else None)

    def record_at(self, where: int) -> Record:
        with reading(self.path) as f:
            if f is None:
                raise StoreError(f"{self.path}: is gone (it changed since it was read)")
            f.seek(where)
            line = f.readline()
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
                raise StoreError(f"{self.path}: could not append ({e.strerror}); the file is as it was "
                                 "before") from None
            if size == 0:
                fsync_dir(self.path.parent)  # a new file: make its name durable too
        finally:
            os.close(fd)

    # -- reading ---------------------------------------------------------------------------

    def _catch_up(self) -> None:
        """Validate and index the lines appended since the last call (all of them if the file
        was replaced)."""
        st = stat_of(self.path)
        if st is None:
            self._reset(None)
            return
        if st.st_ino != self._inode or st.st_size < self._offset:
            self._reset(st.st_ino)
        now = (st.st_ino, st.st_size, st.st_mtime_ns)
        if st.st_size == self._offset or now == self._seen:
            return
        new = read_file(self.path, self._offset) or b""
        start = self._offset
        if self._unterminated and new.startswith(b"\n"):  # the newline a writer added since
            new, start = new[1:], start + 1
        lines, count, tail = _split(new, start, self._lines)
        with gc_paused():
            found = [Summary.of(parse_stored(self, line, f"line {number}"), self._shared)
                     for number, offset, line in lines]
        tail_at = start + len(new) - len(tail)
        complete = self._tail(tail, tail_at)
        for summary in found:  # only once every new line validated: a refusal changes nothing
            add(self._summaries, summary)
        self._unterminated = False
        self._lines, self._offset, self._seen = count, tail_at, now
        if complete is not None:  # whole record, newline lost: it counts
            self._lines += 1
            add(self._summaries, Summary.of(complete, self._shared))
            self._offset += len(tail)
            self._unterminated = True
        elif tail.strip() and self._torn_seen != self._offset:
            self._torn_seen = self._offset
            self._say_torn(len(tail))

    def _say_torn(self, size: int) -> None:
        log.warning("%s: its last line (%d bytes) is a torn append, not a record; it is skipped, and the next "
                    "append moves it to %s.torn", self.path, size, self.path.name)

    def _tail(self, tail: bytes, at: int) -> Record | None:
        """What the bytes after the last newline (at byte `at`) are: a whole record that lost its
        newline (returned), nothing or a torn append (None), or damage (StoreError)."""
        if not tail.strip():
            return None
        complete = _complete(tail)
        if complete is not None:
            return complete
        if at == 0:
            raise self._not_a_journal()
        if not _torn(tail):
            raise StoreError(f"{self.path}: its last line (at byte {at}) is not a record, nor the start of one "
                             "being appended; the file was left untouched: repair or delete that line")
        return None

    def _not_a_journal(self) -> StoreError:
        return StoreError(f"{self.path}: not a ramsweep journal (no complete line, and not one record: a .jsonl "
                          "results file holds one JSON record per line); it was left untouched: name another file "
                          "with --results, or give a JSON document a .json name")

    # -- writing ---------------------------------------------------------------------------

    def _mend_tail(self, fd: int, size: int) -> int:
        """Make the file end with a complete line before appending; returns its new size."""
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return size
        start = _last_line_start(fd, size)
        tail = os.pread(fd, size - start, start)
        if not tail.strip() or _complete(tail) is not None:  # blanks, or a whole record: ended, not moved
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


def _torn(tail: bytes) -> bool:
    """Could `tail` be a record cut mid-append: the start of a JSON object that stops early?"""
    if not tail.lstrip().startswith(b"{"):
        return False
    try:  # a cut may split a character: decode all but an unfinished last one
        orjson.loads(codecs.getincrementaldecoder("utf-8")().decode(tail, final=False))
    except UnicodeDecodeError:
        return False
    except orjson.JSONDecodeError as e:
        return str(e).startswith("unexpected end of")
    return False  # complete JSON, yet not a record: damage


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
