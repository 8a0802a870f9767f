"""What an experiment in flight is doing, carried from the engine to the runner's heartbeat.

`run_experiment` reports `Report(key, phase, fraction of that phase, detail)` through a
callback; the executor carries it to the runner (in this process: a call; from a worker
process: a message on its pipe, at most every REPORT_EVERY_S, phase changes at once). The
runner's `Tracker` turns the phases into a fraction of the whole experiment and an ETA, and
each heartbeat writes them into the experiment's claim, where `status` and `serve` read them.

A phase's share of an experiment is learned from the experiments this runner finished
(their timing: training, validation with its calibration, test); before the first, a guess.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ramsweep.engine.architecture import CALIBRATION, TEST, VALIDATION  # the phases a model's figures report
from ramsweep.text import duration

REPORT_EVERY_S = 1.0
LOADING, TRAINING, SEARCH = "loading", "training", "search"
# the timing field whose share of total_s each phase takes (search is part of training)
_TIMED = {LOADING: None, TRAINING: "train_s", SEARCH: "train_s", VALIDATION: "validation_s",
          CALIBRATION: "validation_s", TEST: "test_s"}
_ORDER = ("train_s", "validation_s", "test_s")
_GUESS = {"train_s": 0.4, "validation_s": 0.35, "test_s": 0.25}


@dataclass(frozen=True)
class Report:
    key: str
    phase: str
    fraction: float = 0.0  # of this phase
    detail: str | None = None
    eta_s: float | None = None  # the phase's own estimate of its time left (a search has one)


Reporter = Callable[[Report], None]


def ignore(report: Report) -> None:
    pass


class Throttled:
    """A reporter that passes a report on when its phase changed or REPORT_EVERY_S passed:
    for a worker's pipe, where every report is a message."""

    def __init__(self, send: Reporter):
        self.send, self.last, self.phase = send, 0.0, None

    def __call__(self, report: Report) -> None:
        now = time.monotonic()
        if report.phase != self.phase or now - self.last >= REPORT_EVERY_S:
            self.send(report)
            self.last, self.phase = now, report.phase


@dataclass
class _Flight:
    started: float  # monotonic
    report: Report | None = None
    name: str = ""


class Tracker:
    """The runner's view of its experiments in flight (updated by executors, read by the heartbeat
    thread: each update replaces a whole immutable Report, so no lock is needed)."""

    def __init__(self):
        self.flights: dict[str, _Flight] = {}
        self.shares = dict(_GUESS)
        self._seen = 0

    def start(self, key: str, name: str = "") -> None:
        self.flights[key] = _Flight(time.monotonic(), name=name or key)

    def update(self, report: Report) -> None:
        flight = self.flights.get(report.key)
        if flight is not None:
            flight.report = report

    def finish(self, key: str, timing=None) -> None:
        """Forget a finished experiment; learn the phases' shares from its timing (running mean)."""
        self.flights.pop(key, None)
        parts = [getattr(timing, name, None) for name in _ORDER] if timing is not None else [None]
        if None in parts or sum(parts) <= 0:
            return
        self._seen += 1
        total = sum(parts)
        for name, part in zip(_ORDER, parts):
            self.shares[name] += (part / total - self.shares[name]) / self._seen

    def published(self, key: str) -> dict:
        """The claim's progress fields for `key`: phase, fraction of the experiment, ETA, detail."""
        flight = self.flights.get(key)
        if flight is None or flight.report is None:
            return {}
        r = flight.report
        timed = _TIMED.get(r.phase)
        if timed is None:
            return {"phase": r.phase, "detail": r.detail}
        done = sum(self.shares[name] for name in _ORDER[: _ORDER.index(timed)])
        within = 1.0 if r.phase == CALIBRATION else min(1.0, max(0.0, r.fraction))  # it ends validation's time
        fraction = min(1.0, done + self.shares[timed] * within)
        elapsed = time.monotonic() - flight.started
        eta = None
        if r.eta_s is not None and timed == "train_s":  # a search knows its own time left
            eta = r.eta_s + elapsed * (1 - self.shares["train_s"]) / max(self.shares["train_s"], 1e-3)
        elif fraction >= 0.02:
            eta = elapsed * (1 - fraction) / fraction
        return {"phase": r.phase, "fraction": round(fraction, 4), "eta_s": None if eta is None else round(eta, 1),
                "detail": r.detail}

    def describe(self, most: int = 2) -> str:
        """The experiments in flight as a terminal's progress line shows them: 'tier0_20bit:
        training 42%, about 2 min left' (the first `most`, then how many more)."""
        parts = []
        for key, flight in list(self.flights.items())[:most]:
            told = self.published(key)
            if not told:
                parts.append(f"{flight.name}: starting")
                continue
            fraction = f" {100 * told['fraction']:.0f}%" if told.get("fraction") is not None else ""
            eta = f", about {duration(told['eta_s'])} left" if told.get("eta_s") is not None else ""
            parts.append(f"{flight.name}: {told['phase']}{fraction}{eta}")
        more = len(self.flights) - most
        return "; ".join(parts) + (f"; {more} more" if more > 0 else "")
