"""`--executor dask`: a set run on a local Dask cluster (worker processes) gives the serial
results; a worker killed mid-experiment costs nothing but time; a task that keeps killing its
worker is recorded failed after a bounded number of tries; a second completion is recorded once;
SIGTERM records what was in flight and leaves no process behind; a lost scheduler stops the
runner with one line and the results intact."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import experiment_record
from test_faults import ENV, ok_keys, records, start, tiny_set, wait_for, wait_for_line

import ramsweep
from ramsweep.sweep import runner
from ramsweep.sweep.experiment import Task
from ramsweep.sweep.records import parse_record

pytest.importorskip("distributed")
linux = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the workers through Linux's /proc")


def slow_set(tmp_path, n: int):
    """n experiments of ~3-4 s each on 2 cores (fast mode): long enough to be caught mid-way."""
    path = tmp_path / f"slow{n}.yaml"
    path.write_text("experiments:\n" + "".join(
        f'  - {{name: s{b}, tiers: "100,6,{b};rest,3,{b}", context: 3, negatives: 50}}\n' for b in range(8, 8 + n)))
    return path


def metrics(results):
    return {r["name"]: r["metrics"] for r in records(results) if r["status"] == "ok"}


@pytest.mark.slow
def test_a_set_on_a_local_dask_cluster_gives_the_serial_results(tmp_path):
    four = tiny_set(tmp_path, 4)
    ramsweep.run_set(str(four), results=tmp_path / "serial.jsonl")
    summary = ramsweep.run_set(str(four), results=tmp_path / "dask.jsonl", executor="dask", workers=2)
    assert sorted(summary.ran) == ["e4", "e5", "e6", "e7"]
    assert len(ok_keys(tmp_path / "dask.jsonl")) == 4
    assert metrics(tmp_path / "dask.jsonl") == metrics(tmp_path / "serial.jsonl")


def two_busy_workers(tmp_path):
    """A runner on a local cluster of 2 workers, each given an experiment of a 3-experiment set."""
    three = slow_set(tmp_path, 3)
    proc = start(three, tmp_path / "r.jsonl", "--executor", "dask", "--workers", "2")
    wait_for_line(proc, " start s")
    wait_for_line(proc, " start s")
    wait_for(lambda: len(worker_pids(proc.pid)) >= 2)
    return three, tmp_path / "r.jsonl", proc


@pytest.mark.slow
@linux
def test_a_worker_killed_mid_experiment_costs_only_time(tmp_path):
    three, results, proc = two_busy_workers(tmp_path)
    time.sleep(1.0)  # both workers are busy with an experiment
    os.kill(worker_pids(proc.pid)[0], signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert [r["status"] for r in records(results)] == ["ok"] * 3, err  # each once, none failed
    assert len(ok_keys(results)) == 3


def test_a_task_that_keeps_killing_its_worker_is_given_up_after_a_bounded_number_of_tries(tmp_path):
    from distributed import Client
    from distributed import wait as wait_futures

    from ramsweep.sweep.dask_executor import RETRIES, cause_of, close_cluster, local_cluster

    tries = tmp_path / "tries"

    def die():
        with open(tries, "a") as f:
            f.write("x")
        os._exit(1)

    cluster = local_cluster(2)
    try:
        with Client(cluster) as client:
            future = client.submit(die, pure=False)
            wait_futures([future], timeout=120)
            assert future.status == "error"
            cause = cause_of(future.exception())
            client.wait_for_workers(2, timeout=60)  # the Nannies start their workers again
    finally:
        close_cluster(cluster)
    assert len(tries.read_text()) == RETRIES
    assert "KilledWorker" in cause and f"died {RETRIES} times" in cause


class Twice:
    """An executor that hands every result back twice, as Dask may after a worker's death."""

    capacity = 1

    def __init__(self, cause: str | None = None):
        self.tasks, self.cause = [], cause

    def submit(self, task: Task) -> None:
        self.tasks.append(task)

    def wait(self, timeout: float):
        ended = []
        for task in self.tasks:
            record = self.cause or parse_record(experiment_record(name=task.experiment.name, key=task.key))
            ended += [(task, record), (task, record)]
        self.tasks = []
        return ended

    def close(self) -> None:
        pass


@pytest.mark.parametrize("cause", [None, "KilledWorker: its worker died 3 times"])
def test_a_result_handed_back_twice_is_recorded_once(tmp_path, cause):
    sweep = runner.prepare(str(tiny_set(tmp_path, 2)), results=tmp_path / "r.jsonl")
    summary = runner.RunSummary("tiny", sweep.store.path)
    runner.execute(sweep, Twice(cause), summary, lambda: None)
    stored = records(sweep.store.path)
    assert len(stored) == 2 and len({r["key"] for r in stored}) == 2
    if cause:
        assert [r["status"] for r in stored] == ["failed"] * 2 and all(r["error"] == cause for r in stored)
    else:
        assert len(ok_keys(sweep.store.path)) == 2


def children(pid: int) -> set[int]:
    """Every thread's children (Dask's nannies start workers from its event loop's thread)."""
    try:
        return {int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()}
    except OSError:
        return set()


def worker_pids(runner: int) -> list[int]:
    """The local cluster's worker processes: the runner's children started by spawn."""
    return sorted(c for c in children(runner) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes())


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        below = children(todo.pop())
        found |= below
        todo += below
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@linux
def test_sigterm_records_the_experiments_in_flight_and_leaves_no_process(tmp_path):
    three, results, proc = two_busy_workers(tmp_path)
    family = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    assert proc.returncode == 143, err
    interrupted = [r for r in records(results) if r["status"] == "interrupted"]
    assert len(interrupted) == 2 and all("SIGTERM" in r["error"] for r in interrupted), err
    wait_for(lambda: not any(alive(p) for p in family), timeout=20)  # no orphaned worker
    again = start(three, results)
    _, err = again.communicate()
    assert again.returncode == 0 and len(ok_keys(results)) == 3, err


@pytest.mark.slow
@linux
def test_a_lost_scheduler_stops_the_runner_with_one_line_and_a_rerun_resumes(tmp_path):
    three = slow_set(tmp_path, 3)
    results = tmp_path / "r.jsonl"
    address = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", str(address)], env=ENV,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        wait_for(address.exists)
        wait_for(lambda: "tcp://" in address.read_text())
        where = __import__("json").loads(address.read_text())["address"]
        worker = subprocess.Popen([sys.executable, "-m", "ramsweep", "worker", where, "--gpus", "none"], env=ENV,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = start(three, results, "--executor", "dask", "--scheduler", where)
        wait_for_line(proc, " start s")
        scheduler.kill()
        _, err = proc.communicate()
    finally:
        scheduler.kill()
        if worker is not None:
            worker.terminate()
            worker.wait(30)
    assert proc.returncode == 4, err
    assert "ramsweep: error: the Dask scheduler at tcp://" in err and "Traceback" not in err
    statuses = [r["status"] for r in records(results)]
    assert "interrupted" in statuses and "ok" not in statuses[statuses.index("interrupted"):]
    again = start(three, results)  # on this machine this time: it resumes
    _, err = again.communicate()
    assert again.returncode == 0 and len(ok_keys(results)) == 3, err


def test_executor_options_are_checked_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from ramsweep.cli import app

    set_path = str(tiny_set(tmp_path, 1))
    for args, fragment in ((["--executor", "dask", "--jobs", "2"], "--jobs:"),
                           (["--workers", "2"], "--workers: goes with --executor dask"),
                           (["--executor", "spark"], "--executor: 'spark' is not one of local, dask"),
                           (["--executor", "dask", "--scheduler", "tcp://127.0.0.1:9", "--workers", "2"], "--workers:")):
        result = CliRunner().invoke(app, ["run", "--set", set_path, "--results", str(tmp_path / "r.json"), *args])
        assert result.exit_code == 2 and fragment in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_two_dask_runners_on_one_file_split_the_set_as_two_local_runners_do(tmp_path):
    six = tiny_set(tmp_path, 6)
    results = tmp_path / "r.jsonl"
    a, b = (start(six, results, "--executor", "dask", "--workers", "1") for _ in range(2))
    (_, err_a), (_, err_b) = a.communicate(), b.communicate()
    assert (a.returncode, b.returncode) == (0, 0), err_a + err_b
    assert [r["status"] for r in records(results)] == ["ok"] * 6 and len(ok_keys(results)) == 6
    assert err_a.count(" done e") + err_b.count(" done e") == 6


def run_cli(*args, env=ENV, timeout=60):
    return subprocess.run([sys.executable, "-m", "ramsweep", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@pytest.mark.parametrize(("args", "env", "says"), [
    (["--workers", str(CORES + 1)], ENV, f"--workers: {CORES + 1} is more than this machine's {CORES} cores"),
    (["--workers", "3"], {**ENV, "CUDA_VISIBLE_DEVICES": "0,1"}, "--workers: 3 is more than this machine's 2 GPU(s)"),
    (["--scheduler", ""], ENV, "--scheduler: '' is not a Dask scheduler address; use tcp://HOST:PORT"),
    (["--scheduler", "foo"], ENV, "--scheduler: 'foo' is not a Dask scheduler address"),
    (["--scheduler", "tcp://127.0.0.1"], ENV, "is not a Dask scheduler address"),  # no port
    (["--scheduler", "http://127.0.0.1:8787"], ENV, "that is a web address"),
    (["--scheduler", "inproc://127.0.0.1/1/1"], ENV, "inproc reaches only a scheduler inside the same process"),
    (["--scheduler", "ucx://127.0.0.1:8786"], ENV, "UCX needs the ucx-py library"),
    (["--scheduler", "tls://127.0.0.1:8786"], ENV, "TLS needs certificates"),
])
def test_dask_options_that_cannot_work_are_refused_before_anything_is_written(tmp_path, args, env, says):
    results = tmp_path / "r.jsonl"
    done = run_cli("run", "--set", str(tiny_set(tmp_path, 1)), "--results", str(results), "--executor", "dask", *args,
                   env=env)
    assert done.returncode == 2 and says in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not results.exists()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("args", "says"), [
    (["foo"], "SCHEDULER: 'foo' is not a Dask scheduler address"),
    (["tls://127.0.0.1:8786"], "TLS needs certificates"),
    (["tcp://127.0.0.1:9", "--gpus", "abc"], "--gpus: 'abc' is not a list of this machine's GPUs"),
    (["tcp://127.0.0.1:9", "--gpus", "0,0"], "--gpus: '0,0' is not a list of this machine's GPUs"),
    ([f"tcp://127.0.0.1:{closed_port()}", "--gpus", "none"], "no Dask scheduler answers there"),
])
def test_ramsweep_worker_that_cannot_start_says_one_line_and_fails(args, says):
    env = {**ENV, "CUDA_VISIBLE_DEVICES": "0", "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2"}
    done = run_cli("worker", *args, env=env)
    assert done.returncode == 2 and says in done.stderr and done.stderr.count("\n") == 1, done.stderr


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    address = tmp_path_factory.mktemp("scheduler") / "scheduler.json"
    proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--port", "0", "--no-dashboard",
                             "--scheduler-file", str(address)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: address.exists() and "tcp://" in address.read_text())
        yield __import__("json").loads(address.read_text())["address"]
    finally:
        proc.kill()
        proc.wait()


def spawned(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def started_worker(scheduler: str):
    """`ramsweep worker` with its Dask worker process running (a spawned process below it)."""
    proc = subprocess.Popen([sys.executable, "-m", "ramsweep", "worker", scheduler, "--gpus", "none"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: proc.poll() is not None or any(spawned(p) for p in descendants(proc.pid)), timeout=30)
    assert proc.poll() is None, proc.stderr.read()
    return proc, descendants(proc.pid)


@linux
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130),
                                              (signal.SIGKILL, -9)])
def test_ramsweep_worker_stopped_by_any_signal_leaves_no_process(scheduler, signum, code):
    proc, family = started_worker(scheduler)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    # (a worker process SIGKILL catches mid-start may print multiprocessing's traceback: not ours to silence)
    assert signum == signal.SIGKILL or "Traceback" not in err
    wait_for(lambda: not any(alive(p) for p in family), timeout=5)  # none left under PID 1
