"""The JSON document store: `{"schema": 1, "results": [...]}`, indented, one file.

Every append rewrites the whole document atomically (store.base's contract), so an append
costs O(records): simple and fine for sets of hundreds; a grid of thousands wants the journal.
Stored objects are written back exactly as they were read, so an append never changes an
earlier record, even one with fields this version does not know.
"""

from __future__ import annotations

import orjson

from ramsweep.errors import StoreError
from ramsweep.sweep.records import Summary, add, gc_paused
from ramsweep.sweep.store.base import SCHEMA, Record, Store, dumps, parse_stored, stat_of


class JsonDocument(Store):
    kind = "document"

    def __init__(self, path):
        super().__init__(path)
        self._seen: tuple | None = None  # (inode, size, mtime) of the file last validated
        self._summaries: dict[str, Summary] = {}

    def summaries(self) -> dict[str, Summary]:
        self._refresh()
        return dict(self._summaries)

    def records(self) -> list[Record]:
        return self._parse(self._results())

    def follow(self, mark, most: int | None = None) -> tuple[list[tuple[Record, int]], object, bool]:
        seen = self._stat()  # before reading: a replacement after it is seen next time
        if seen == mark:
            return [], mark, False
        return [(r, i) for i, r in enumerate(self.records())], seen, True

    def record_at(self, where: int) -> Record:
        results = self._results()
        if not 0 <= where < len(results):
            raise StoreError(f"{self.path}: has no record {where + 1} (it changed since it was read)")
        return parse_stored(self, results[where], f"record {where + 1}")

    def _stat(self) -> tuple | None:
        st = stat_of(self.path)
        if st is None:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def extend_locked(self, records: list[Record]) -> None:
        results = self._results()  # read once: validated (if it changed) and rewritten from the same objects
        self._refresh(results)  # refuses a file that does not validate before anything is written
        self.write_locked(self.path, dumps({"schema": SCHEMA, "results": [*results, *(r.dump() for r in records)]}))
        for record in records:  # the index follows our own write: the next summaries() need not read it again
            add(self._summaries, Summary.of(record, self._shared))
        self._seen = self._stat()

    def _refresh(self, results: list[dict] | None = None) -> None:
        """Validate the file again, and index it, only if it changed since the last time
        (`results`: its stored objects, when the caller has read them already)."""
        seen = self._stat()
        if seen is not None and seen == self._seen:
            return
        found: dict[str, Summary] = {}
        for record in self._parse(self._results() if results is None else results):
            add(found, Summary.of(record, self._shared))
        self._summaries, self._seen = found, seen

    def _parse(self, results: list[dict]) -> list[Record]:
        with gc_paused():
            return [parse_stored(self, r, f"record {i + 1}") for i, r in enumerate(results)]

    def _results(self) -> list[dict]:
        """The stored objects, as read; [] when there is no file yet."""
        raw = self.read_bytes()
        if raw is None:
            return []
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
