"""The dashboard's view of its results files, kept up to date by reading only what changed.

A `Feed` follows each file (store.follow: a journal's new lines; a JSON document again when
it was replaced) and keeps, per key, the standing record's Summary (~1.5 KB; records.py), where
the whole record lies (for its card) and when it arrived. Claims and status are read again
when the claims file or the results change. Nothing is ever written and no lock is taken
(status's lock probe apart, which never waits): a viewer can neither slow nor break a runner.

Whatever a read raises, the feed keeps the last good view, says why beside it, and looks again:
a file that was moved, damaged, made a FIFO or put out of reach shows again once restored.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ramsweep.errors import StoreError
from ramsweep.sweep.records import Summary, add
from ramsweep.sweep.status import SweepStatus, status
from ramsweep.sweep.store import Store, open_store

BATCH = 500  # records read at a time from a journal
log = logging.getLogger(__name__)


@dataclass
class Followed:
    """One results file as followed."""

    store: Store
    mark: object = None
    latest: dict[str, Summary] = field(default_factory=dict)
    where: dict[str, int] = field(default_factory=dict)  # key -> the standing record's place (record_at)
    arrived: dict[str, int] = field(default_factory=dict)  # key -> arrival number of the standing record
    claims_seen: tuple | None = None
    status: SweepStatus | None = None
    error: str | None = None  # why the file cannot be read now (the last good view is kept)

    def snapshot(self) -> tuple[dict[str, Summary], dict[str, float]]:
        """Copies of `latest` and `arrived` for a request's thread, safe while a refresh adds to
        them (a key it has just added to `latest`, not yet to `arrived`, counts as the newest)."""
        latest, arrived = dict(self.latest), dict(self.arrived)
        return latest, {k: arrived.get(k, math.inf) for k in latest}


class Feed:
    def __init__(self, paths: list[str | os.PathLike]):
        self.files = [Followed(open_store(p)) for p in paths]
        self.version = 0  # bumped whenever what is shown changed
        self.checked = 0.0  # time.time() of the last look at the files
        self._arrivals = itertools.count(1)
        self._shared: dict = {}  # one DataInfo per data group
        self._lock = threading.Lock()  # held by the refresh in progress, which may be stuck in a read
        self._reading: tuple[Followed, float] | None = None  # the file being read, since (time.monotonic())

    def refresh(self) -> bool:
        """Read what changed since the last call; returns whether anything did. Never raises
        for a file (its error is kept instead), and returns False at once while an earlier
        call is still reading: no caller ever waits behind a read that does not return."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            changed = False
            for f in self.files:
                self._reading = f, time.monotonic()
                changed |= self._refresh(f)
            if changed:
                self.version += 1
            self.checked = time.time()
            return changed
        finally:
            self._reading = None
            self._lock.release()

    def stalled(self, after_s: float) -> None:
        """When the refresh in progress has been reading one file for `after_s` or more (a hung
        network mount: a read no timeout reaches), say so as that file's error until it returns."""
        reading = self._reading
        if reading is None or time.monotonic() - reading[1] < after_s:
            return
        f = reading[0]
        why = (f"{f.store.path}: still reading it after {after_s:g} s (a hung network mount?); the page "
               "shows what was read before")
        if f.error != why:
            f.error = why
            self.version += 1

    def _refresh(self, f: Followed) -> bool:
        try:
            moved = False
            while True:  # in batches: whole records are dropped as soon as they are summarised
                found, f.mark, replaced = f.store.follow(f.mark, most=BATCH)
                if replaced:
                    f.latest, f.where, f.arrived = {}, {}, {}
                for record, where in found:
                    summary = Summary.of(record, self._shared)
                    before = f.latest.get(summary.key)
                    add(f.latest, summary)
                    if f.latest[summary.key] is not before:
                        f.where[summary.key], f.arrived[summary.key] = where, next(self._arrivals)
                moved |= bool(found) or replaced
                if len(found) < BATCH:
                    break
            claims = _stat(f.store.claims_path)
            if moved or claims != f.claims_seen or f.status is None or f.error is not None:
                f.claims_seen = claims
                f.status = status(f.store) if f.store.path.exists() else None  # a run writes its baselines first
                moved = True
            f.error = None
            return moved
        except StoreError as err:  # mid-repair, damaged, not a file any more: say so, keep what was read
            return _failed(f, str(err))
        except OSError as err:  # out of reach: a symbolic-link loop, no permission, a file where a folder was
            return _failed(f, f"{f.store.path}: cannot be read now ({err.strerror or err}); the page shows what "
                              "was read before")
        except Exception as err:  # noqa: BLE001 - a bug must not stop the dashboard: shown, logged whole
            return _failed(f, f"{f.store.path}: reading it failed ({type(err).__name__}: {err})", trace=True)

    def summaries(self) -> list[Summary]:
        """The record standing for each key over all the files (a key in several: the latest rule
        applied in the order the files were given), each file's in arrival order."""
        found: dict[str, Summary] = {}
        for f in self.files:
            latest, arrived = f.snapshot()
            for key in sorted(latest, key=arrived.__getitem__):
                add(found, latest[key])
        return list(found.values())

    def newest(self, limit: int) -> list[tuple[Path, Summary]]:
        """The `limit` newest records, newest first, with their file: by when they finished (or
        started), across the files, then by arrival (the files are read one after the other at
        start, so arrival alone would put the last file's old records above the first's new ones)."""
        rows = [((s.finished or s.started or ""), arrived[k], f.store.path, s) for f in self.files
                for latest, arrived in [f.snapshot()] for k, s in latest.items()]
        rows.sort(key=lambda row: row[:2], reverse=True)
        return [(path, s) for _, _, path, s in rows[:limit]]

    def record(self, key: str):
        """The whole standing record of `key` (None if no file has it), read from its file."""
        for f in reversed(self.files):
            if (where := f.where.get(key)) is not None:
                return f.store.record_at(where)
        return None


def _failed(f: Followed, why: str, trace: bool = False) -> bool:
    """Keep `why` as the file's error (logged once, with the traceback if `trace`); returns
    whether it is new."""
    if why == f.error:
        return False
    log.warning("%s", why, exc_info=trace)
    f.error = why
    return True


def _stat(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns
