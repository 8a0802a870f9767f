"""Results stores: one interface (base.Store, with its contract), two kinds.

A results file's kind is its suffix: `.jsonl` is a journal (JSON Lines, O(1) appends: for
big grids), anything else a JSON document (`{"schema": 1, "results": [...]}`). `convert`
copies one kind into the other.
"""

from __future__ import annotations

import os
from pathlib import Path

from ramsweep.errors import StoreError
from ramsweep.sweep.store.base import SCHEMA, Record, Store
from ramsweep.sweep.store.journal import Journal
from ramsweep.sweep.store.json_document import JsonDocument

__all__ = ["SCHEMA", "Journal", "JsonDocument", "Record", "Store", "cache_dir", "convert", "kind_of", "open_store"]

JOURNAL_SUFFIX = ".jsonl"


def cache_dir(results: str | os.PathLike) -> Path:
    """Tokenized corpora are cached beside the results, so a night tokenizes once."""
    return Path(results).parent / ".ramsweep-cache"


def kind_of(path: str | os.PathLike) -> str:
    return "journal" if Path(path).suffix == JOURNAL_SUFFIX else "document"


def open_store(path: str | os.PathLike) -> Store:
    """The store for a results file, by its suffix (the file need not exist yet)."""
    return Journal(path) if kind_of(path) == "journal" else JsonDocument(path)


def convert(source: str | os.PathLike, target: str | os.PathLike) -> int:
    """Copy every record of `source` into the new file `target`, of the kind its suffix says,
    in order; returns how many. Holds the source's lock throughout, so no runner appends to it
    meanwhile, and refuses to overwrite an existing target."""
    src, dst = open_store(source), open_store(target)
    if dst.path.resolve() == src.path.resolve():
        raise StoreError(f"{dst.path}: is the source; name a new file")
    with src.locked():
        if not src.path.exists():
            raise StoreError(f"{src.path}: no such results file; name the file to convert")
        records = src.records()
        with dst.locked():
            if dst.path.exists():
                raise StoreError(f"{dst.path}: already exists; name a new file to convert into")
            try:
                dst.extend_locked(records)
            except StoreError:
                dst.path.unlink(missing_ok=True)  # ours, half written: a retry must find no file there
                raise
    return len(records)
