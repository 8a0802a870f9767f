"""Executors run experiments and hand their records back; the runner alone claims and writes.

The seam (docs/design.md §1): an executor has `capacity` slots; `submit(task)` starts a task in a
free slot; `wait(timeout)` returns the tasks that ended within `timeout` seconds with their
records (None: the process running it died, so the runner records a failure for that task
alone); `close()` stops everything still running. A Dask executor implements the same four.
Each executor is given a `report` callback (progress.py) that it calls, in the runner's
process, with what its experiments are doing.

- `InProcess`: one slot; the experiment runs inside `wait`, in this process.
- `ProcessPool`: `jobs` worker processes, each with its own pipe, so a worker that dies (out
  of memory, killed) fails only the experiment it was running, and a fresh worker takes its
  place. Workers are spawned, not forked (numba's thread pool does not survive a fork), get an
  equal share of the numba threads, ignore SIGINT and SIGHUP (they reach the whole process
  group; the parent decides), load the corpus once, and die with the parent, SIGKILL included:
  on Linux the kernel kills the worker with its parent (PR_SET_PDEATHSIG), asked for before the
  worker imports anything heavy (this module imports numba and the engine only where it runs
  them, so a spawned worker reaches `_serve` in tens of milliseconds, not the second or more
  its imports take on a busy machine); elsewhere a watchdog thread ends it within ORPHAN_CHECK_S
  of its parent's death, whatever it runs (the kernels release the GIL). A worker waiting for
  work also ends when the pipe closes.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ramsweep.sweep.progress import Report, Reporter, Throttled, ignore

if TYPE_CHECKING:  # the engine is imported where it runs: see the module's docstring
    from ramsweep.data import Corpus, DataSpec
    from ramsweep.sweep.experiment import Task
    from ramsweep.sweep.records import ExperimentRecord

    Ended = list[tuple[Task, ExperimentRecord | None]]

ORPHAN_CHECK_S = 0.2
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Executor(Protocol):
    capacity: int

    def submit(self, task: Task) -> None: ...

    def wait(self, timeout: float) -> Ended: ...

    def close(self) -> None: ...


class InProcess:
    """Runs each experiment in this process, when the runner waits for it."""

    capacity = 1

    def __init__(self, corpus: Corpus, report: Reporter = ignore):
        self.corpus, self.report = corpus, report
        self.queued: list[Task] = []

    def submit(self, task: Task) -> None:
        self.queued.append(task)

    def wait(self, timeout: float) -> Ended:
        ended = []
        while self.queued:
            task = self.queued.pop(0)
            ended.append((task, run_experiment(task, self.corpus, self.report)))
        return ended

    def close(self) -> None:
        self.queued.clear()


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    task: Task | None = field(default=None)


class ProcessPool:
    def __init__(self, jobs: int, data: DataSpec, cache_dir: Path | None, report: Reporter = ignore):
        import numba

        self.capacity, self.report = jobs, report
        self.data, self.cache_dir = data, cache_dir
        self.threads = max(1, numba.config.NUMBA_NUM_THREADS // jobs)
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[_Worker] = []

    def submit(self, task: Task) -> None:
        worker = next((w for w in self.workers if w.task is None), None) or self._start()
        worker.conn.send(task)
        worker.task = task

    def wait(self, timeout: float) -> Ended:
        busy = {w.conn: w for w in self.workers if w.task is not None}
        busy |= {w.process.sentinel: w for w in busy.values()}
        ended: Ended = []
        for ready in wait_ready(list(busy), timeout):
            worker = busy[ready]
            if worker.task is None:  # its pipe and its sentinel were both ready
                continue
            try:
                message = worker.conn.recv() if ready is worker.conn or worker.conn.poll() else None
            except (EOFError, OSError):  # it died before sending a record
                message = None
            if isinstance(message, Report):
                self.report(message)
                continue
            task, worker.task = worker.task, None
            ended.append((task, message))
            if message is None:
                self._discard(worker)
        return ended

    def close(self) -> None:
        """Kill the workers now: an interrupted sweep must not leave experiments running."""
        for worker in list(self.workers):
            self._discard(worker)

    def _start(self) -> _Worker:
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_serve, args=(child, os.getpid()), daemon=True, name="ramsweep-worker")
        process.start()
        child.close()  # the worker's end lives in the worker only: its death closes the pipe
        parent.send((self.threads, self.data, self.cache_dir))  # through the pipe: unpickling it imports the engine
        worker = _Worker(process, parent)
        self.workers.append(worker)
        return worker

    def _discard(self, worker: _Worker) -> None:
        worker.process.kill()
        worker.process.join()
        worker.conn.close()
        self.workers.remove(worker)


def run_experiment(task: Task, corpus: Corpus, report: Reporter) -> ExperimentRecord:
    """sweep.experiment's, imported on first use (see the module's docstring)."""
    from ramsweep.sweep.experiment import run_experiment as run

    return run(task, corpus, report)


def _serve(conn: Connection, parent: int) -> None:
    """A worker's life: die with the parent first, then load, then run each task sent and send
    back its record, until the parent goes."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    import numba

    from ramsweep.data import load_corpus

    try:
        threads, data, cache_dir = conn.recv()
    except (EOFError, OSError):
        return
    numba.set_num_threads(threads)
    corpus = load_corpus(data, cache_dir=cache_dir)  # the parent filled the token cache already
    while True:
        try:
            task = conn.recv()
            record = run_experiment(task, corpus, Throttled(conn.send))
            conn.send(record)
        except (EOFError, OSError):  # the parent is gone: nobody wants the record
            return


def _die_with(parent: int) -> None:
    """End this worker when its parent is gone (then it is some other process's child): at once on
    Linux, where the kernel sends SIGKILL, else from a thread that looks every ORPHAN_CHECK_S. (The
    kernel's parent is the thread that started the worker: the runner's main thread, which submits.)"""
    if _kill_me_with_my_parent():
        if os.getppid() != parent:  # it died before the request: nothing will send the signal
            os._exit(1)
        return
    threading.Thread(target=_watch, args=(parent,), name="ramsweep-orphan-watch", daemon=True).start()


def _kill_me_with_my_parent() -> bool:
    try:
        return ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: no prctl
        return False


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_S)
    os._exit(1)
