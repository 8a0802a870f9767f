"""SIGTERM, SIGINT and SIGHUP as an exception the runner can act on: record the experiments in
flight as interrupted, drop its claims, exit 143 / 130 / 129 (a closed terminal or a hung-up
ssh session is a stop like any other).

Python runs a signal handler in the main thread between bytecodes, so a signal that arrives
during a numba kernel is acted on when the kernel returns (kernels work in bounded batches).
Writes to the store are `deferred()`: a signal that arrives mid-write is raised after it, so a
record is never half-taken-back and the lock is always released in order.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Interrupted(BaseException):
    """Not an Exception: `except Exception` around an experiment must not swallow it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 143 for SIGTERM, 130 for SIGINT, 129 for SIGHUP


_state = threading.local()  # deferring / pending, meaningful in the main thread only
_received: list[int] = []  # every signal handled: a raise can be swallowed, the record of it cannot


def _handler(signum, frame):
    _received.append(signum)
    if getattr(_state, "deferring", 0):
        _state.pending = signum
    else:
        raise Interrupted(signum)


@contextmanager
def raising_on_signals():
    """While inside, SIGTERM, SIGINT and SIGHUP raise Interrupted (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def deferred():
    """Hold back Interrupted until the block has finished (re-entrant)."""
    _state.deferring = getattr(_state, "deferring", 0) + 1
    try:
        yield
    finally:
        _state.deferring -= 1
        pending = getattr(_state, "pending", None)
        if not _state.deferring and pending is not None:
            _state.pending = None
            raise Interrupted(pending)


def raise_if_pending() -> None:
    """Raise a signal held back by `deferred()` now. For waits inside a deferred block that
    have not changed anything yet (waiting for the results lock): a stop must not wait on them."""
    pending = getattr(_state, "pending", None)
    if pending is not None:
        _state.pending = None
        raise Interrupted(pending)


def raise_if_swallowed() -> None:
    """Raise Interrupted for a signal whose exception never reached the runner. Python ignores
    an exception raised in a finalizer (`Exception ignored in: <finalize object>`): a SIGTERM that
    lands while numba-cuda frees device memory from a weakref callback would otherwise be lost,
    and the sweep would run on. The runner calls this between steps."""
    if _received:
        raise Interrupted(_received[0])
