"""The JSON document store: `{"schema": 1, "results": [...]}`, indented, one file.

Every append rewrites the whole document atomically (store.base's contract), so an append
costs O(records): simple and fine for sets of hundreds; a grid of thousands wants the journal.
Stored objects are written back exactly as they were read, so an append never changes an
earlier record, even one with fields this version does not know.
"""

from __future__ import annotations

import os

import orjson

from ramsweep.errors import StoreError
from ramsweep.sweep.store.base import SCHEMA, Record, Store, dumps, parse_stored


class JsonDocument(Store):
    kind = "document"

    def __init__(self, path):
        super().__init__(path)
        self._seen: tuple | None = None  # (inode, size, mtime) of the file last parsed
        self._raw: list[dict] = []
        self._records: list[Record] = []

    def records(self) -> list[Record]:
        self._refresh()
        return list(self._records)

    def extend_locked(self, records: list[Record]) -> None:
        self._refresh()
        doc = {"schema": SCHEMA, "results": [*self._raw, *(r.dump() for r in records)]}
        self.write_locked(self.path, dumps(doc))

    def _refresh(self) -> None:
        """Parse the file again only if it changed since the last parse."""
        try:
            st = os.stat(self.path)
            seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            seen = None
        if seen is not None and seen == self._seen:
            return
        raw = self.read_bytes()
        results = [] if raw is None else self._results(raw)
        self._records = [parse_stored(self, r, f"record {i + 1}") for i, r in enumerate(results)]
        self._raw, self._seen = results, seen

    def _results(self, raw: bytes) -> list[dict]:
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
