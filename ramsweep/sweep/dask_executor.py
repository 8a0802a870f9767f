"""The Dask executor: experiments on the workers of a Dask cluster, one machine or many (the
`dist` extra). It implements the executor seam (executors.py): the runner stays the only
writer of the results file and the only holder of claims; a task returns its record by value.

- **Workers**: a scheduler's (`--scheduler tcp://HOST:PORT`, workers started with `ramsweep
  worker` or `dask worker`), or a local cluster of this machine's (`--workers N`): N worker
  processes, the numba threads shared out; on a machine with GPUs, worker i sees GPU i alone
  (CUDA_VISIBLE_DEVICES) and offers one `GPU` resource. Both options are checked before anything
  is written: tcp:// addresses only, at most one worker per core (per GPU where there are GPUs).
- **One experiment per slot**: where the workers offer `GPU` resources, each experiment takes
  one (one experiment per GPU at a time); otherwise each worker thread runs one.
- **A worker that dies mid-experiment**: Dask runs the task again on another worker, up to
  `distributed.scheduler.allowed-failures` times (RETRIES on a local cluster), then the
  experiment is recorded failed with the cause. A task completed twice is recorded once: the
  runner ignores a result it is not waiting for, and claims refuse a second record of a key.
- **The scheduler lost**: `ExecutorLost`; the runner records the experiments in flight as
  interrupted and stops with one line, every earlier result intact; a re-run resumes.
- **Warm-up**: each worker loads the corpus and compiles the kernels once, before any task, under
  a file lock, so the workers of one node never write numba's cache at the same time.
- **Progress**: workers send what their experiments are doing as Dask events, at most one a
  second each (progress.py), to the runner's heartbeat.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import CancelledError
from pathlib import Path
from urllib.parse import urlsplit

from ramsweep.config import Experiment
from ramsweep.data import Corpus, DataSpec, load_corpus
from ramsweep.errors import ConfigError, ExecutorLost
from ramsweep.sweep.executors import cores
from ramsweep.sweep.experiment import Task, run_experiment
from ramsweep.sweep.interrupts import SIGNALS, Interrupted
from ramsweep.sweep.progress import Report, Reporter, Throttled, ignore

RETRIES = 3  # deaths of a worker running one experiment before it is recorded failed (Dask's default)
CONNECT_S = 10.0
SLOTS_S = 10.0
REPORT_FIELDS = {f.name for f in dataclasses.fields(Report)}
WARM_UP_LOCK = Path(tempfile.gettempdir()) / "ramsweep-numba-warm-up.lock"


def dask_modules():
    try:
        import distributed
    except ImportError as e:
        raise ConfigError(f"--executor dask needs the dist extra ({e.name} is missing): pip install "
                          "'ramsweep[dist]'") from None
    return distributed


# ------------------------------------------------------------------ on a worker

_corpora: dict[str, Corpus] = {}


def worker_corpus(data: DataSpec, cache_dir: str | None) -> Corpus:
    """The corpus, loaded once per worker process (the token cache where this node has it)."""
    key = data.model_dump_json()
    if key not in _corpora:
        cache = Path(cache_dir) if cache_dir and Path(cache_dir).is_dir() else None
        _corpora[key] = load_corpus(data, cache_dir=cache)
    return _corpora[key]


def warm_up(data: DataSpec, cache_dir: str | None) -> str:
    """Load the corpus and compile the CPU kernels by training and scoring a tiny model (a dense
    and a sparse tier); one worker of a node at a time, so numba's cache is written once."""
    from filelock import FileLock

    from ramsweep.engine.evaluate import score
    from ramsweep.engine.train import train

    with FileLock(WARM_UP_LOCK):
        corpus = worker_corpus(data, cache_dir)
        exp = Experiment(name="warm-up", tiers="10,2,12;rest,1,4", context=1, negatives=2)
        tokens, held = corpus.train[:2000], corpus.validation[:200]
        score(train(exp, tokens, corpus.vocab_size), held)
    if visible_gpus():  # numba-cuda keeps no cache: each worker compiles its GPU kernels once, now
        score(train(exp, tokens, corpus.vocab_size, device="cuda"), held, "cuda")
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


def run_on_worker(task: Task, data: DataSpec, cache_dir: str | None, topic: str):
    """A task: one experiment, its record returned by value."""
    from distributed import get_worker

    worker = get_worker()
    send = Throttled(lambda report: worker.log_event(topic, dataclasses.asdict(report)))
    return run_experiment(task, worker_corpus(data, cache_dir), send)


# ------------------------------------------------------------------ in the runner


class DaskExecutor:
    def __init__(self, data: DataSpec, cache_dir: Path | None, report: Reporter = ignore, *,
                 scheduler: str | None = None, workers: int | None = None):
        distributed = dask_modules()
        self.data, self.cache_dir, self.report = data, str(cache_dir) if cache_dir else None, report
        self.topic = f"ramsweep-progress-{uuid.uuid4().hex[:8]}"
        self.cluster = None
        if scheduler:
            self.where = f"the Dask scheduler at {scheduler}"
            try:
                self.client = distributed.Client(scheduler, timeout=CONNECT_S)
            except (OSError, TimeoutError) as e:
                raise ConfigError(f"--scheduler {scheduler}: no Dask scheduler answers there ({e}); start one with "
                                  "`dask scheduler`, or use --workers N for a cluster on this machine") from None
        else:
            self.cluster = local_cluster(workers or 1)
            self.where = "the local Dask cluster"
            self.client = distributed.Client(self.cluster)
        # the client's own account of a lost scheduler is a page of tracebacks: ExecutorLost says it in one line
        logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
        self.client.subscribe_topic(self.topic, self._progress)
        self.client.wait_for_workers(1, timeout=120)
        self.client.run(warm_up, data, self.cache_dir)
        self.futures: dict = {}  # Future -> Task
        self._count_slots()

    def _count_slots(self) -> None:
        """Experiments at once: one per GPU where the workers offer GPUs, else one per worker
        thread. Counted again every SLOTS_S (workers come and go) by the runner's thread, never by
        its heartbeat, which reads `capacity` under the results lock."""
        workers = list(self.client.scheduler_info(n_workers=-1).get("workers", {}).values())
        self.gpus = sum(int(w.get("resources", {}).get("GPU", 0)) for w in workers)
        self.capacity = max(1, self.gpus or sum(w.get("nthreads", 1) for w in workers))
        self._counted = time.monotonic()

    def submit(self, task: Task) -> None:
        future = self.client.submit(run_on_worker, task, self.data, self.cache_dir, self.topic,
                                    key=f"ramsweep-{task.experiment.name}-{uuid.uuid4().hex[:8]}", pure=False,
                                    resources={"GPU": 1} if self.gpus else None)
        self.futures[future] = task

    def wait(self, timeout: float):
        distributed = dask_modules()
        if time.monotonic() - self._counted > SLOTS_S:
            self._count_slots()
        if not self.futures:  # the runner waits only with experiments in flight
            return []
        try:
            done, _ = distributed.wait(list(self.futures), timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            self._check_connected()
            return []
        except CancelledError as e:  # FuturesCancelledError: the client gave up reconnecting
            raise ExecutorLost(self._lost(str(e).splitlines()[-1].strip() or "its tasks were cancelled")) from None
        ended = []
        for future in done:
            task = self.futures.pop(future)
            if future.status == "finished":
                ended.append((task, future.result()))
            elif future.status == "error":
                ended.append((task, cause_of(future.exception())))
            else:  # cancelled by nobody here: the scheduler or the connection to it is gone
                self.futures[future] = task
                raise ExecutorLost(self._lost(f"a task was {future.status}"))
        return ended

    def _check_connected(self) -> None:
        if self.client.status not in ("running", "connecting"):
            raise ExecutorLost(self._lost(f"the client is {self.client.status}"))

    def _lost(self, why: str) -> str:
        return (f"{self.where} is gone ({why}); every result recorded so far is intact, and the experiments in "
                "flight are recorded interrupted: run again to resume")

    def _progress(self, event) -> None:
        _, fields = event  # Dask adds the worker's address
        self.report(Report(**{k: v for k, v in fields.items() if k in REPORT_FIELDS}))

    def close(self) -> None:
        """Cancel what still runs, and stop a local cluster's workers: nothing is left running."""
        try:
            if self.futures:
                self.client.cancel(list(self.futures), force=True)
            self.futures.clear()
            if self.cluster is not None:  # a Nanny restarting a dead worker must be done first
                self.client.wait_for_workers(len(self.cluster.worker_spec), timeout=10)
            self.client.close(timeout=10)
        except Exception:  # noqa: BLE001 - a client whose scheduler is gone cannot close cleanly
            pass
        if self.cluster is not None:
            close_cluster(self.cluster)


def close_cluster(cluster) -> None:
    """Stop a local cluster. distributed's close fails when a worker died just before: with "can
    only join a started process" while its Nanny starts it again, or with a KeyError when the news
    of its removal reaches the cluster's watcher after the scheduler forgot it. Closing again once
    that is over stops it, so a few tries a second apart."""
    for attempt in range(3):
        try:
            cluster.close(timeout=20)
            return
        except (AssertionError, KeyError):
            if attempt == 2:
                raise
            time.sleep(1)


def cause_of(error: BaseException) -> str:
    name = type(error).__name__
    if name == "KilledWorker":
        return (f"its Dask worker died {RETRIES} times while running it (KilledWorker: out of memory, or killed?); "
                "it was not retried again")
    return f"{name} on its Dask worker: {error}"


def check_workers(workers: int) -> None:
    """--workers: at most one per GPU where this machine has GPUs (each worker is pinned to a GPU of
    its own), else at most one per core (each runs its share of the numba threads, as --jobs does).
    More only share the same cores or GPUs and multiply the processes and the memory."""
    if isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"--workers: {workers!r} is not a number of processes; use 1 or more")
    gpus = visible_gpus()
    if gpus and workers > len(gpus):
        raise ConfigError(f"--workers: {workers} is more than this machine's {len(gpus)} GPU(s); use at most "
                          f"{len(gpus)} (each worker is pinned to a GPU of its own)")
    if not gpus and workers > cores():
        raise ConfigError(f"--workers: {workers} is more than this machine's {cores()} cores; use at most {cores()} "
                          "(each worker runs its share of the numba threads)")


def check_scheduler(address: str, name: str = "--scheduler") -> None:
    """A scheduler address is tcp://HOST:PORT: the one protocol that works with no more setup (tls
    needs certificates, ucx its own library, inproc one process), refused in one line up front."""
    scheme = address.partition("://")[0].lower() if "://" in address else ""
    if scheme in SCHEME_HINTS:
        raise ConfigError(f"{name}: {address!r}: {SCHEME_HINTS[scheme]}; use tcp://HOST:PORT, e.g. tcp://head:8786")
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        port = None
    if scheme != "tcp" or not parts.hostname or not port or parts.path or parts.query or parts.fragment:
        raise ConfigError(f"{name}: {address!r} is not a Dask scheduler address; use tcp://HOST:PORT, "
                          "e.g. tcp://head:8786")


SCHEME_HINTS = {
    "tls": "TLS needs certificates, which ramsweep does not set up (tunnel tcp through ssh to encrypt it)",
    "wss": "TLS needs certificates, which ramsweep does not set up (tunnel tcp through ssh to encrypt it)",
    "ucx": "UCX needs the ucx-py library and its hardware, which ramsweep does not use",
    "inproc": "inproc reaches only a scheduler inside the same process (use --workers N for this machine)",
    "http": "that is a web address (the dashboard's?); a scheduler listens on tcp, port 8786 by default",
    "https": "that is a web address (the dashboard's?); a scheduler listens on tcp, port 8786 by default",
}


def local_cluster(workers: int):
    """`workers` processes of this machine (check_workers), each a Nanny (restarted if it dies); with
    GPUs here, each pinned to one of them."""
    from distributed import Nanny, Scheduler, SpecCluster

    gpus = visible_gpus()
    # GPU workers spend most of an experiment waiting on their GPU: each keeps every core for its
    # short CPU bursts (packing, layout); CPU workers share the cores out. NUMBA_NUM_THREADS, numba's
    # own setting, is each worker's where the user gives it.
    given = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    threads = int(given) if given.isdigit() and int(given) > 0 else cores() if gpus else max(1, cores() // workers)
    specs = {}
    for i in range(workers):
        env = {"NUMBA_NUM_THREADS": str(threads), "OMP_NUM_THREADS": "1"}
        options = {"nthreads": 1, "env": env, "silence_logs": 40, "memory_limit": 0}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]
            options["resources"] = {"GPU": 1}
        specs[f"worker-{i}"] = {"cls": Nanny, "options": options}
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": None, "allowed_failures": RETRIES - 1}}
    return SpecCluster(workers=specs, scheduler=scheduler, silence_logs=40)


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES would name them."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [g for g in given.split(",") if g.strip() and g.strip() != "-1"]
    try:
        found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(found.stdout.splitlines()) if line.startswith("GPU ")]


def chosen_gpus(gpus: str | None) -> list[str]:
    """`ramsweep worker --gpus`: None for every GPU here, "none" for none, else ids of GPUs this
    machine shows, comma-separated, each once (two workers on one GPU would share its memory)."""
    here = visible_gpus()
    if gpus is None:
        return here
    if gpus.strip() == "none":
        return []
    ids = [g.strip() for g in gpus.split(",")]
    if not set(ids) <= set(here) or len(set(ids)) < len(ids):
        shown = f"its GPUs are {','.join(here)}" if here else "it shows no GPU"
        raise ConfigError(f"--gpus: {gpus!r} is not a list of this machine's GPUs, each once ({shown}); use e.g. "
                          f"--gpus {','.join(here) or 'none'}")
    return ids


def run_workers(scheduler: str, gpus: str | None, say=print) -> None:
    """`ramsweep worker`: this machine's Dask workers for `scheduler`, one per GPU chosen (chosen_gpus),
    each pinned to its GPU and offering one GPU resource, or one worker with every core. Each is a
    Nanny in this process, whose worker process distributed ends the moment this process is gone,
    SIGKILL included. SIGTERM, SIGINT and SIGHUP close the workers and raise Interrupted (exit 143,
    130, 129); a scheduler that never answers is a ConfigError, one that goes away ExecutorLost."""
    dask_modules()
    check_scheduler(scheduler, "SCHEDULER")
    options = [{"resources": {"GPU": 1}, "name": f"{os.uname().nodename}-gpu{g}", "env": {"CUDA_VISIBLE_DEVICES": g}}
               for g in chosen_gpus(gpus)] or [{}]
    signum = asyncio.run(serve_workers(scheduler, options, say))
    say(f"ramsweep worker: stopped by {signal.Signals(signum).name}; its Dask workers are closed")
    raise Interrupted(signum)


async def serve_workers(scheduler: str, options: list[dict], say) -> int:
    """Run a Nanny per options until a stop signal, which it returns, always closing them."""
    from distributed import Nanny

    loop = asyncio.get_running_loop()
    stop: asyncio.Future[int] = loop.create_future()
    for s in SIGNALS:
        loop.add_signal_handler(s, lambda s=s: stop.done() or stop.set_result(s))
    # the nannies' own account of a failure is INFO lines and tracebacks (a scheduler gone makes them
    # race their workers' exits): this says it in one line. The workers still log their warnings.
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    nannies = [Nanny(scheduler, nthreads=1, memory_limit=0, silence_logs=logging.WARNING, **o) for o in options]

    async def work() -> None:
        try:
            await asyncio.gather(*nannies)
        except Exception as e:  # noqa: BLE001 - distributed's "Nanny failed to start" hides the cause
            raise ConfigError(f"SCHEDULER {scheduler}: no Dask scheduler answers there ({e.__cause__ or e}); start "
                              "one with `dask scheduler --port PORT`, or check the address") from None
        say(f"ramsweep worker: {len(nannies)} Dask worker(s) for {scheduler}; Ctrl-C stops them")
        await asyncio.gather(*(n.finished() for n in nannies))
        raise ExecutorLost(f"the Dask scheduler at {scheduler} closed this machine's workers (gone, or told them to "
                           "stop); start `ramsweep worker` again once it is back")

    working = asyncio.ensure_future(work())
    try:
        await asyncio.wait([working, stop], return_when=asyncio.FIRST_COMPLETED)
    finally:
        working.cancel()
        await asyncio.gather(*(n.close(timeout=10) for n in nannies), return_exceptions=True)
    if not stop.done():
        working.result()  # its error
    return stop.result()
