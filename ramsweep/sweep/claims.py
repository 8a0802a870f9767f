"""Claims: several runners share one results file and never run an experiment twice.

A runner claims an experiment before running it, under the store's lock and only if it is
neither done nor held by a live runner; it beats a heartbeat into its claims every HEARTBEAT_S
while it works and drops a claim in the same locked write that records the result.

Whether another runner's claim is live is judged by what this runner observes, never by
comparing clocks across hosts: a claim is stale when its heartbeat has not *changed* for
STALE_S as measured by this runner's monotonic clock (or, on this host, at once when its
process no longer exists). A clock far ahead or far behind changes nothing: only change is
read. The price: a runner that starts while a claim is already stale waits STALE_S before
taking it over, since it cannot know how long the heartbeat had stood still.

A runner whose claim was taken over (it was paused past STALE_S: SIGSTOP, a laptop lid, a VM
migration) finds out at its next heartbeat and says so; the writer refuses to record an
experiment that is already done (plan.needs_running, under the lock), so it is recorded once.

With its heartbeat a runner also publishes, for readers (status, serve), what each of its
experiments is doing (phase, fraction, ETA: progress.py) and itself in the claims file's
`runners` (set, how many planned, how many left), and prunes the entries of runners on this
host whose process is gone; it removes its own when it ends.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ramsweep.sweep.records import Claim, ExperimentRecord, Runner, Summary
from ramsweep.sweep.store import Store
from ramsweep.sweep.store.lock import seconds_from_environment

log = logging.getLogger(__name__)


HEARTBEAT_S = seconds_from_environment("RAMSWEEP_HEARTBEAT_S", 10.0)
STALE_S = seconds_from_environment("RAMSWEEP_STALE_S", 120.0)  # twelve missed heartbeats: a loaded machine stalls, not for minutes


@dataclass(frozen=True)
class Owner:
    id: str
    host: str
    pid: int

    @classmethod
    def current(cls) -> Owner:
        return cls(uuid.uuid4().hex[:12], socket.gethostname(), os.getpid())


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


def looks_live(claim: Claim | Runner) -> bool:
    """What a one-look reader (status, dry run) can tell: on this host, whether its process
    exists; from another host, nothing, so it counts as live."""
    return pid_alive(claim.pid) if claim.host == socket.gethostname() else True


@dataclass
class Observations:
    """When this runner first saw each claim's current heartbeat (monotonic seconds)."""

    seen: dict[str, tuple[str, float, float]] = field(default_factory=dict)  # key -> (owner, beat, since)

    def live(self, claim: Claim, now: float) -> bool:
        if not looks_live(claim):
            return False
        owner, beat, since = self.seen.get(claim.key, (None, None, None))
        if (owner, beat) != (claim.owner, claim.heartbeat):
            self.seen[claim.key] = (claim.owner, claim.heartbeat, now)
            return True
        return now - since < STALE_S

    def unchanged_for(self, key: str, now: float) -> float:
        return now - self.seen[key][2] if key in self.seen else 0.0


@dataclass
class ClaimAttempt:
    """What one claim attempt found."""

    key: str | None = None  # the key claimed, None when nothing could be
    held_by_others: list[Claim] = field(default_factory=list)  # live claims on wanted keys
    taken_over: list[Claim] = field(default_factory=list)  # stale claims replaced by ours


class Claims:
    """One runner's claims on one store."""

    def __init__(self, store: Store, owner: Owner | None = None, about: Callable[[], dict] | None = None,
                 progress: Callable[[str], dict] = lambda key: {}):
        """`about()`: this runner's entry for readers (Runner's set, planned, left, jobs; called
        under the lock), None to publish none; `progress(key)`: a held claim's progress fields."""
        self.store = store
        self.owner = owner or Owner.current()
        self.about, self.progress = about, progress
        self.since = datetime.now(UTC).isoformat(timespec="seconds")
        self.held: set[str] = set()
        self.observed = Observations()
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()
        self._guard = threading.Lock()  # `held` is shared with the heartbeat thread

    def claim_next(self, keys: Iterable[tuple[str, str]], wanted: Callable[[str, Summary | None], bool],
                   set_name: str) -> ClaimAttempt:
        """Claim the first (key, name) for which `wanted(key, the Summary of its latest record, or None)`
        holds and that no live runner holds. Reading the results and claiming happen under one lock."""
        out = ClaimAttempt()
        with self.store.locked():
            latest = self.store.summaries()
            claims = self.store.claims()
            now = time.monotonic()
            for key, name in keys:
                if key in self.held or not wanted(key, latest.get(key)):
                    continue
                claim = claims.get(key)
                if claim and claim.owner != self.owner.id and self.observed.live(claim, now):
                    out.held_by_others.append(claim)
                    continue
                if claim and claim.owner != self.owner.id:
                    out.taken_over.append(claim)
                claims[key] = Claim(key=key, name=name, set=set_name, owner=self.owner.id, host=self.owner.host,
                                    pid=self.owner.pid, heartbeat=time.time(),
                                    since=datetime.now(UTC).isoformat(timespec="seconds"))
                self.store.write_claims_locked(claims)
                with self._guard:
                    self.held.add(key)
                out.key = key
                break
        return out

    def finish(self, record: ExperimentRecord, needed: Callable[[str, Summary | None], bool]) -> bool:
        """Record a result and drop its claim, in one locked step. The result is not recorded
        when `needed(key, latest)` says the experiment is done already (this runner's claim was
        taken over and the other runner finished first): returns whether it was recorded."""
        with self.store.locked():
            recorded = needed(record.key, self.store.summaries().get(record.key))
            if recorded:
                self.store.append_locked(record)
            self._drop_locked({record.key})
        return recorded

    def release_all(self) -> None:
        if self.held:
            with self.store.locked():
                self._drop_locked(set(self.held))

    def _drop_locked(self, keys: set[str]) -> None:
        claims = self.store.claims()
        mine = {k for k in keys if k in claims and claims[k].owner == self.owner.id}
        if mine:
            self.store.write_claims_locked({k: c for k, c in claims.items() if k not in mine})
        with self._guard:
            self.held -= keys

    def beat(self) -> None:
        """Refresh the heartbeat (and progress) of every claim this runner holds and its runner
        entry; say so of any claim taken over."""
        with self._guard:
            held = set(self.held)
        if not held and self.about is None:
            return
        with self.store.locked():
            claims = self.store.claims()
            for key in held:
                claim = claims.get(key)
                if claim is not None and claim.owner == self.owner.id:
                    claims[key] = claim.model_copy(update={"heartbeat": time.time(), **self.progress(key)})
                elif key in self.held:
                    by = f"runner {claim.label}" if claim else "another runner, which finished it"
                    log.warning(f"the claim on {claim.name if claim else key} was taken over by {by} while this "
                                "runner was stopped; its result here will be recorded only if that run's is not")
                    with self._guard:
                        self.held.discard(key)
            self.store.write_claims_locked(claims, self._runners_locked(publish=True))

    def _runners_locked(self, publish: bool) -> dict[str, Runner]:
        """The runners' entries with this one's refreshed (or removed) and the dead ones of this
        host pruned."""
        runners = {k: r for k, r in self.store.runners().items()
                   if k != self.owner.id and not (r.host == self.owner.host and not pid_alive(r.pid))}
        if publish and self.about is not None:
            runners[self.owner.id] = Runner(owner=self.owner.id, host=self.owner.host, pid=self.owner.pid,
                                            since=self.since, heartbeat=time.time(), **self.about())
        return runners

    def __enter__(self) -> Claims:
        if self.about is not None:  # announced at once: a reader sees the runner before its first beat
            with self.store.locked():
                self.store.write_claims_locked(self.store.claims(), self._runners_locked(publish=True))
        self._stop.clear()
        self._beat = threading.Thread(target=self._beat_loop, name="ramsweep-heartbeat", daemon=True)
        self._beat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self.about is None:
            self.release_all()
            return
        with self.store.locked():
            self._drop_locked(set(self.held))
            self.store.write_claims_locked(self.store.claims(), self._runners_locked(publish=False))

    def _beat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.beat()
            except Exception:  # a missed beat only matters after STALE_S; the next one retries
                pass
