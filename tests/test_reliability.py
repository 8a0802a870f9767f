"""Nothing lost, nothing twice, nothing hangs: real runner processes paused past the stale time,
lock holders paused with their lock file deleted, parents killed under their workers, results
paths that are links or not files at all, and more workers than cores."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from test_faults import ENV, records, start, tiny_set, wait_for, wait_for_line, worker_pids

from ramsweep.sweep.claims import pid_alive

FAST_CLAIMS = {**ENV, "RAMSWEEP_HEARTBEAT_S": "0.3", "RAMSWEEP_STALE_S": "3", "RAMSWEEP_LOCK_SLOW_S": "1"}
LINUX = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds processes through Linux's /proc")


def run_env(set_path, results, env, *extra):
    return subprocess.Popen([sys.executable, "-m", "ramsweep", "run", "--set", str(set_path), "--results",
                             str(results), *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def slow_set(tmp_path):
    """One experiment of several seconds on one thread."""
    path = tmp_path / "slow.yaml"
    path.write_text('experiments:\n  - {name: slow, tiers: "rest,3,14", context: 2, negatives: 50}\n')
    return path


@pytest.mark.slow
def test_a_runner_paused_past_the_stale_time_does_not_record_a_second_result(tmp_path):
    results = tmp_path / "results.jsonl"
    paused = run_env(slow_set(tmp_path), results, FAST_CLAIMS)
    seen = wait_for_line(paused, " start slow")
    paused.send_signal(signal.SIGSTOP)  # a laptop lid, mid-experiment
    try:
        other = run_env(slow_set(tmp_path), results, FAST_CLAIMS)
        _, other_err = other.communicate(timeout=120)
        assert other.returncode == 0, other_err
        assert "taking over slow from runner" in other_err  # its heartbeat stood still for 3 s
    finally:
        paused.send_signal(signal.SIGCONT)
    _, err = paused.communicate(timeout=120)
    err = seen + err
    assert paused.returncode == 0, err
    assert "took it over and recorded it first" in err and "taken over by" in err, err
    ok = [r for r in records(results) if r["status"] == "ok"]
    assert [r["name"] for r in ok] == ["slow"], "one result per experiment, whatever the timing"


def hold_the_lock(results: Path) -> subprocess.Popen:
    """A process that takes the results lock, says so, and stops itself while holding it."""
    code = ("import os, signal, sys; from ramsweep.sweep.store import open_store\n"
            "store = open_store(sys.argv[1])\n"
            "with store.locked():\n"
            "    print('locked', flush=True); os.kill(os.getpid(), signal.SIGSTOP)\n"
            "    store.append_locked(__import__('conftest').record(name='held', key='held'))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(results)], env={**ENV, "PYTHONPATH": str(Path(__file__).parent)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    wait_for(lambda: Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[-1][:1] == "T")
    return proc


@pytest.mark.slow
@LINUX
def test_deleting_the_lock_file_under_a_paused_holder_loses_nothing(tmp_path):
    results = tmp_path / "results.jsonl"
    holder = hold_the_lock(results)
    for name in os.listdir(tmp_path):  # every file that looks like a lock: mutual exclusion must not live in one
        if "lock" in name:
            os.unlink(tmp_path / name)
    runner = run_env(tiny_set(tmp_path, 2), results, FAST_CLAIMS)
    try:
        waiting = wait_for_line(runner, "waiting for the results lock")
        assert f"by {socket.gethostname()}:{holder.pid}" in waiting or "did not leave its name" in waiting
        assert not results.exists(), "the runner wrote while another process held the lock"
    finally:
        holder.send_signal(signal.SIGCONT)
    assert holder.wait(60) == 0
    _, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, err
    names = [r["name"] for r in records(results)]
    assert sorted(names) == ["e4", "e5", "held"], names


@LINUX
def test_a_paused_lock_holder_is_reported_and_a_waiting_runner_stays_interruptible(tmp_path):
    results = tmp_path / "results.json"
    holder = hold_the_lock(results)
    try:
        runner = run_env(tiny_set(tmp_path, 2), results, FAST_CLAIMS)
        waiting = wait_for_line(runner, "waiting for the results lock")
        assert f"{socket.gethostname()}:{holder.pid}" in waiting and "kill -CONT" in waiting
        status = subprocess.run([sys.executable, "-m", "ramsweep", "status", str(results), "--set",
                                 str(tmp_path / "tiny2.yaml")], env=FAST_CLAIMS, capture_output=True, text=True,
                                timeout=60)
        assert status.returncode == 0, status.stderr
        assert f"runner {socket.gethostname()}:{holder.pid} has held the results lock" in status.stdout
        assert f"kill -CONT {holder.pid}" in status.stdout
        t0 = time.monotonic()
        runner.send_signal(signal.SIGTERM)
        _, err = runner.communicate(timeout=30)
        assert runner.returncode == 143 and time.monotonic() - t0 < 10, err
        assert "Traceback" not in err
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.wait(60)
    assert [r["name"] for r in records(results)] == ["held"]


@LINUX
def test_killing_a_jobs_parent_leaves_no_worker_behind(tmp_path):
    proc = start(tiny_set(tmp_path, 3), tmp_path / "results.jsonl", "--jobs", "2")
    wait_for_line(proc, " start e")
    wait_for(lambda: len(worker_pids(proc.pid)) == 2)
    workers = worker_pids(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    wait_for(lambda: not any(pid_alive(w) for w in workers), timeout=10)


@LINUX
def test_sighup_is_a_stop_like_sigterm(tmp_path):
    results = tmp_path / "results.json"
    proc = start(tiny_set(tmp_path, 3), results, "--jobs", "2")
    head = wait_for_line(proc, " start e")
    wait_for(lambda: len(worker_pids(proc.pid)) == 2)
    workers = worker_pids(proc.pid)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 129, head + err
    interrupted = [r for r in records(results) if r["status"] == "interrupted"]
    assert interrupted and "interrupted by SIGHUP" in interrupted[0]["error"]
    wait_for(lambda: not any(pid_alive(w) for w in workers), timeout=10)


def test_a_symlinked_results_file_is_followed_and_stays_a_link(tmp_path):
    target = tmp_path / "store" / "results.jsonl"
    target.parent.mkdir()
    link = tmp_path / "results.jsonl"
    link.symlink_to(target)
    proc = start(tiny_set(tmp_path, 1), link)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert link.is_symlink() and [r["name"] for r in records(target)] == ["e4"]
    assert not (tmp_path / "results.jsonl.claims").exists()  # claims go with the target too


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_a_results_path_that_is_not_a_file_is_refused_in_one_line(tmp_path, kind):
    path = tmp_path / "results.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path = Path("/dev/null")
    for command in (["run", "--set", str(tiny_set(tmp_path, 1)), "--results", str(path)], ["status", str(path)],
                    ["report", str(path)]):
        done = subprocess.run([sys.executable, "-m", "ramsweep", *command], env=ENV, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 3 and done.stderr.count("\n") == 1, done.stderr
        assert "not a regular file" in done.stderr or "is a folder" in done.stderr


def test_more_jobs_than_cores_is_refused(tmp_path):
    too_many = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) + 1
    done = subprocess.run([sys.executable, "-m", "ramsweep", "run", "--set", str(tiny_set(tmp_path, 1)), "--jobs",
                           str(too_many), "--results", str(tmp_path / "r.json")], env=ENV, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and f"--jobs: {too_many} is more than this machine's" in done.stderr
    assert done.stderr.count("\n") == 1 and not (tmp_path / "r.json").exists()


def test_claims_that_do_not_validate_name_the_claim_and_field(tmp_path):
    results = tmp_path / "results.json"
    claims = tmp_path / "results.json.claims"
    bad = {"schema": 1, "claims": {"k1": {"key": "k1", "name": "a", "set": "s", "owner": "o", "host": "h",
                                          "pid": "not a pid", "heartbeat": 1.0, "since": "x"}}}
    claims.write_bytes(orjson.dumps(bad))
    done = subprocess.run([sys.executable, "-m", "ramsweep", "run", "--set", str(tiny_set(tmp_path, 1)), "--results",
                           str(results)], env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and done.stderr.count("\n") == 1, done.stderr
    assert "results.json.claims: claim k1.pid:" in done.stderr
    assert claims.read_bytes() == orjson.dumps(bad)


@pytest.mark.slow
@pytest.mark.parametrize("skew_s", [86400.0, -86400.0])
def test_a_claim_from_a_clock_a_day_off_is_judged_by_whether_its_heartbeat_moves(tmp_path, skew_s):
    one = tiny_set(tmp_path, 1)
    results = tmp_path / "results.json"
    plan = subprocess.run([sys.executable, "-m", "ramsweep", "run", "--set", str(one), "--results", str(results),
                           "--dry-run"], env=ENV, capture_output=True, text=True, timeout=60)
    assert "would run" in plan.stdout, plan.stderr
    from ramsweep.data import load_corpus
    from ramsweep.sets import load_set
    from ramsweep.sweep.plan import experiment_key

    key = experiment_key(load_set(str(one)).experiments[0], load_corpus("kjv").fingerprint)
    claim = {"key": key, "name": "e4", "set": "tiny1", "owner": "far", "host": "far-away-host", "pid": 4242,
             "heartbeat": time.time() + skew_s, "since": "2026-11-26T00:00:00+00:00"}
    (tmp_path / "results.json.claims").write_bytes(orjson.dumps({"schema": 1, "claims": {key: claim}}))
    t0 = time.monotonic()
    runner = run_env(one, results, FAST_CLAIMS)
    _, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, err
    # neither trusted for a day nor stolen at once: taken over once it stood still for STALE_S (3 s) here
    assert "waiting: 1 experiment of this set is running in other runners (far-away-host:4242)" in err
    assert "taking over e4 from runner far-away-host:4242" in err
    assert time.monotonic() - t0 < 60
    assert [r["status"] for r in records(results)] == ["ok"]


# the finalizer's exception is swallowed on purpose (Python reports it as unraisable): that is the case tested
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_stop_whose_exception_a_finalizer_swallowed_still_stops_the_run(tmp_path, monkeypatch):
    """numba-cuda frees device memory from weakref finalizers, and Python ignores an exception
    raised in one: a SIGTERM handled there must still stop the sweep (it once ran on to the end)."""
    import weakref

    from ramsweep.sweep import executors
    from ramsweep.sweep.interrupts import Interrupted
    from ramsweep.sweep.runner import run_set

    real = executors.run_experiment

    def run_then_stop_in_a_finalizer(task, corpus, report):
        record = real(task, corpus, report)

        class Buffer:
            pass

        def free():
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(10_000))  # the handler runs here, inside the finalizer, and its raise is ignored

        buffer = Buffer()
        weakref.finalize(buffer, free)
        del buffer
        return record

    monkeypatch.setattr(executors, "run_experiment", run_then_stop_in_a_finalizer)
    results = tmp_path / "results.json"
    with pytest.raises(Interrupted):
        run_set(str(tiny_set(tmp_path, 3)), results=results)
    assert [r["name"] for r in records(results) if r.get("kind") == "experiment"] == ["e4"]
