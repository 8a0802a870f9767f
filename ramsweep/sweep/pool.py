"""`--jobs N`: experiments run in N worker processes; results come back to the parent,
which alone claims and writes (DESIGN.md §4: executors return results to one writer).

Workers are spawned, not forked: numba's thread pool does not survive a fork. Each gets an
equal share of the numba threads, ignores SIGINT (a Ctrl-C reaches the whole process group;
the parent decides) and loads the corpus once. A worker that dies (out of memory, killed)
fails only the experiments it was running; the pool is started again for the rest.
"""

from __future__ import annotations

import functools
import multiprocessing
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import numba

from pathlib import Path

from ramsweep.config import Experiment
from ramsweep.data import DataSpec, load_corpus


class WorkerPool:
    def __init__(self, jobs: int, data: DataSpec, cache_dir: Path | None):
        self.jobs = jobs
        self.data, self.cache_dir = data, cache_dir
        self.threads = max(1, numba.config.NUMBA_NUM_THREADS // jobs)
        self.executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self.threads,))

    def submit(self, exp: Experiment, set_name: str, key: str):
        return self.executor.submit(_run, exp, set_name, key, self.data, self.cache_dir)

    def wait_any(self, flights: list, timeout: float):
        """(flight, record) of the flights whose experiment ended within `timeout` seconds;
        record is None when the worker running it died."""
        done, _ = wait([f.future for f in flights], timeout=timeout, return_when=FIRST_COMPLETED)
        broken = False
        for flight in flights:
            if flight.future not in done:
                continue
            try:
                yield flight, flight.future.result()
            except BrokenProcessPool:
                broken = True
                yield flight, None
        if broken:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = self._start()

    def stop(self) -> None:
        """Kill the workers now: an interrupted sweep must not leave experiments running.
        (ProcessPoolExecutor gained terminate_workers() only in Python 3.14.)"""
        for process in list((getattr(self.executor, "_processes", None) or {}).values()):
            process.kill()
        self.executor.shutdown(wait=True, cancel_futures=True)


def _init_worker(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    numba.set_num_threads(threads)


@functools.cache
def _corpus(data: DataSpec, cache_dir: Path | None):
    return load_corpus(data, cache_dir=cache_dir)  # the parent filled the token cache already


def _run(exp: Experiment, set_name: str, key: str, data: DataSpec, cache_dir: Path | None) -> dict:
    from ramsweep.sweep.runner import run_experiment  # the runner imports this module

    return run_experiment(exp, _corpus(data, cache_dir), set_name=set_name, key=key)
