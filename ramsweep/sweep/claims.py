"""Claims: several runners share one results file and never run an experiment twice.

A runner claims an experiment before running it, under the store's lock and only if it is
neither done nor held by a live runner; it beats a heartbeat into its claims every HEARTBEAT_S
while it works and drops a claim in the same locked write that records the result. A claim
whose owner is gone is taken over: on the same host as soon as its process no longer exists,
from any host once its heartbeat is older than STALE_S (a crashed host cannot say so).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ramsweep.sweep.records import ExperimentRecord, Head
from ramsweep.sweep.store import Store

HEARTBEAT_S = 10.0
STALE_S = 120.0  # twelve missed heartbeats: a loaded machine may stall, but not for minutes


@dataclass(frozen=True)
class Owner:
    id: str
    host: str
    pid: int

    @classmethod
    def current(cls) -> Owner:
        return cls(uuid.uuid4().hex[:12], socket.gethostname(), os.getpid())

    @property
    def label(self) -> str:
        return f"{self.host}:{self.pid}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a killed process nobody has reaped yet is a zombie: gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we know


def is_live(claim: dict, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    if now - claim["heartbeat"] > STALE_S:
        return False
    return pid_alive(claim["pid"]) if claim["host"] == socket.gethostname() else True


def owner_label(claim: dict) -> str:
    return f"{claim['host']}:{claim['pid']}"


@dataclass
class Outcome:
    """What one claim attempt found."""

    key: str | None = None  # the key claimed, None when nothing could be
    held_by_others: list[dict] = field(default_factory=list)  # live claims on wanted keys
    taken_over: list[dict] = field(default_factory=list)  # dead claims replaced by ours


class Claims:
    """One runner's claims on one store."""

    def __init__(self, store: Store, owner: Owner | None = None):
        self.store = store
        self.owner = owner or Owner.current()
        self.held: set[str] = set()
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()

    def claim_next(self, keys: Iterable[tuple[str, str]], wanted: Callable[[str, Head | None], bool],
                   set_name: str) -> Outcome:
        """Claim the first (key, name) for which `wanted(key, the Head of its latest record, or None)`
        holds and that no live runner holds. Reading the results and claiming happen under one lock."""
        out = Outcome()
        with self.store.locked():
            latest = self.store.heads()
            claims = self.store.claims()
            now = time.time()
            for key, name in keys:
                if key in self.held or not wanted(key, latest.get(key)):
                    continue
                claim = claims.get(key)
                if claim and is_live(claim, now):
                    out.held_by_others.append(claim)
                    continue
                if claim:
                    out.taken_over.append(claim)
                claims[key] = {"key": key, "name": name, "set": set_name, "owner": self.owner.id,
                               "host": self.owner.host, "pid": self.owner.pid, "heartbeat": now,
                               "since": datetime.now(UTC).isoformat(timespec="seconds")}
                self.store.write_claims_locked(claims)
                self.held.add(key)
                out.key = key
                break
        return out

    def finish(self, record: ExperimentRecord) -> None:
        """Record a result and drop its claim, in one locked step."""
        with self.store.locked():
            self.store.append_locked(record)
            self._drop_locked({record.key})

    def release_all(self) -> None:
        if self.held:
            with self.store.locked():
                self._drop_locked(set(self.held))

    def _drop_locked(self, keys: set[str]) -> None:
        claims = self.store.claims()
        mine = {k for k in keys if claims.get(k, {}).get("owner") == self.owner.id}
        if mine:
            self.store.write_claims_locked({k: c for k, c in claims.items() if k not in mine})
        self.held -= keys

    def beat(self) -> None:
        """Refresh the heartbeat of every claim this runner holds."""
        if not self.held:
            return
        with self.store.locked():
            claims = self.store.claims()
            now = time.time()
            for key in self.held:
                if claims.get(key, {}).get("owner") == self.owner.id:
                    claims[key]["heartbeat"] = now
            self.store.write_claims_locked(claims)

    def __enter__(self) -> Claims:
        self._stop.clear()
        self._beat = threading.Thread(target=self._beat_loop, name="ramsweep-heartbeat", daemon=True)
        self._beat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        self.release_all()

    def _beat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.beat()
            except Exception:  # a missed beat only matters after STALE_S; the next one retries
                pass
