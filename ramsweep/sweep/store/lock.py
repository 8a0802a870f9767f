"""The results lock: an exclusive `flock` on the folder that holds the results file.

Why the folder: a lock *file* can be deleted while a runner holds it, and the next runner
then locks a fresh file of the same name, so two writers run at once (one wrote its stale
copy over the other's results). A folder cannot be swapped under a runner while it holds the
results, so whoever holds its lock holds it for real. The cost: the writes of results files
that share a folder queue behind each other; each holds the lock for milliseconds.

Waiting is bounded (WAIT_S), logged (after SLOW_S, naming the holder), and a stop signal
ends it at once, even inside a `deferred()` block: nothing has been written yet. The holder
leaves its name in `<folder>/.ramsweep.lock` (information only: deleting it changes nothing),
so `status` and waiting runners can say who holds the lock and for how long.

Locks are per thread and re-entrant within a thread (a runner's heartbeat thread and its
main thread exclude each other like two processes). flock is advisory and local: on NFS it
is only as good as the server's lock manager (see the README's reliability section).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import orjson

from ramsweep._io import write_atomic
from ramsweep.errors import StoreError
from ramsweep.sweep.interrupts import raise_if_pending

log = logging.getLogger(__name__)
INFO_NAME = ".ramsweep.lock"


def seconds_from_environment(name: str, default: float) -> float:
    """A duration in seconds from the environment variable `name` (for sites whose machines
    stall longer than the defaults allow, and for tests), else `default`."""
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


SLOW_S = seconds_from_environment("RAMSWEEP_LOCK_SLOW_S", 30.0)  # a holder this long is named in the log and by `status`
WAIT_S = seconds_from_environment("RAMSWEEP_LOCK_WAIT_S", 600.0)  # then give up with a one-line error, not wait all night
_held = threading.local()  # folder -> (fd, depth) held by this thread


@contextmanager
def folder_lock(folder: Path, results: Path):
    """Hold the exclusive lock of `folder` (which holds `results`) for the block."""
    key = str(folder.resolve())  # one folder, however it was named
    held = getattr(_held, "locks", None)
    if held is None:
        held = _held.locks = {}
    if key in held:  # re-entrant in one thread (convert between two files of one folder)
        fd, depth = held[key]
        held[key] = (fd, depth + 1)
        try:
            yield
        finally:
            held[key] = (held[key][0], held[key][1] - 1)
        return
    fd = _acquire(folder, results)
    held[key] = (fd, 1)
    try:
        yield
    finally:
        del held[key]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _acquire(folder: Path, results: Path) -> int:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except OSError as e:
        raise StoreError(f"{results}: cannot lock the results file ({e.strerror}); check that its folder "
                         "exists and is writable") from None
    start, pause, told = time.monotonic(), 0.01, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            pass
        except OSError as e:
            os.close(fd)
            raise StoreError(f"{results}: cannot lock the results file ({e.strerror}); its file system may not "
                             "support locks (see the README's reliability section)") from None
        try:
            raise_if_pending()  # a stop ends the wait: nothing was written
        except BaseException:
            os.close(fd)
            raise
        waited = time.monotonic() - start
        if waited >= SLOW_S and not told:
            told = True
            log.warning(f"{results}: waiting for the results lock, held {holder_text(folder)}; {WHAT_TO_DO}")
        if waited >= WAIT_S:
            os.close(fd)
            raise StoreError(f"{results}: the results lock has been held for over {WAIT_S:.0f} s, "
                             f"{holder_text(folder)}; {WHAT_TO_DO}")
        time.sleep(pause)
        pause = min(0.5, pause * 2)
    _write_info(folder, results)
    return fd


WHAT_TO_DO = ("if that runner is stopped (Ctrl-Z, SIGSTOP) continue it with `kill -CONT PID`; if it hangs, "
              "end it with `kill PID`")


def _write_info(folder: Path, results: Path) -> None:
    info = {"host": socket.gethostname(), "pid": os.getpid(), "results": results.name, "since": time.time()}
    try:
        write_atomic(folder / INFO_NAME, orjson.dumps(info), durable=False)  # a name, not a result: no fsync
    except OSError:
        pass  # information only: the lock itself is held


def holder(folder: Path) -> dict | None:
    """Who holds the folder's lock now ({"host", "pid", "results", "since"}), None when nobody
    does. Probes with a lock taken and given back at once: never waits, writes nothing."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                info = orjson.loads((folder / INFO_NAME).read_bytes())
                return info if isinstance(info, dict) else {}
            except (OSError, ValueError):
                return {}
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def holder_text(folder: Path) -> str:
    found = holder(folder)
    if found is None:
        return "by nobody now"
    try:
        since = time.time() - float(found["since"])
        return f"by {found['host']}:{found['pid']} (writing {found['results']}) for {since:.0f} s"
    except (KeyError, TypeError, ValueError):
        return "by a runner that did not leave its name"
