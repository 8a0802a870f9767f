"""Real `ramsweep run` processes killed, interrupted and overlapping: the morning finds every
finished result intact, once, and the next run continues where the last stopped."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from conftest import STORE_FILES, dashboard

import ramsweep

ENV = {**os.environ, "NUMBA_NUM_THREADS": "1"}  # two runners on two cores: no oversubscription


def tiny_set(tmp_path, n: int):
    """n tiny experiments, ~1-2 s each on the embedded corpus in fast mode."""
    path = tmp_path / f"tiny{n}.yaml"
    path.write_text("experiments:\n" + "".join(
        f'  - {{name: e{b}, tiers: "rest,1,{b}", context: 1, negatives: 5}}\n' for b in range(4, 4 + n)))
    return path


@pytest.fixture
def six(tmp_path):
    return tiny_set(tmp_path, 6)


def start(set_path, results, *extra):
    return subprocess.Popen([sys.executable, "-m", "ramsweep", "run", "--set", str(set_path), "--results",
                             str(results), *extra], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def records(results):
    """The experiments' records as a user's jq would read them (the baselines' are checked in test_sweep)."""
    if not results.exists():
        return []
    if results.suffix == ".jsonl":
        found = [orjson.loads(line) for line in results.read_bytes().splitlines() if line.strip()]
    else:
        found = orjson.loads(results.read_bytes())["results"]
    return [r for r in found if r.get("kind") != "baseline"]


def ok_keys(results):
    keys = [r["key"] for r in records(results) if r["status"] == "ok"]
    assert len(keys) == len(set(keys)), "a finished experiment was recorded twice"
    return set(keys)


def metrics_by_name(results):
    return {r["name"]: r["metrics"] for r in records(results) if r["status"] == "ok"}


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def wait_for_line(proc, text: str) -> str:
    """Read the runner's stderr up to the first line containing `text`; returns what was read."""
    seen = ""
    while text not in seen:
        line = proc.stderr.readline()
        assert line, f"the runner ended before printing {text!r}: {seen}"
        seen += line
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("name", STORE_FILES)
def test_sigkill_at_20_random_instants_loses_and_duplicates_nothing(tmp_path, six, name):
    """...with a dashboard open on the file and a client hammering its API: a viewer changes nothing."""
    reference = tmp_path / "reference.json"
    ramsweep.run_set(str(six), results=reference)
    results = tmp_path / name
    rng = np.random.default_rng(20)
    done: set[str] = set()
    with dashboard(results, hammer=300):
        for _ in range(20):
            proc = start(six, results)
            time.sleep(rng.uniform(0.3, 4.5))  # startup is ~1.5 s, an experiment ~1.5 s
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            now_done = ok_keys(results)  # parses, no duplicates
            assert done <= now_done, "a finished result was lost"
            done = now_done
        final = start(six, results)
        out, err = final.communicate()
    assert final.returncode == 0, err
    assert len(ok_keys(results)) == 6
    assert metrics_by_name(results) == metrics_by_name(reference)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    if results.suffix == ".jsonl":  # a journal: one whole record a line, none torn or glued
        assert all(line.startswith(b"{") and line.endswith(b"}") for line in results.read_bytes().splitlines())


@pytest.mark.slow
def test_two_runners_together_split_the_set_and_run_each_experiment_once(results_path, six):
    """...with a dashboard open on the file and a client hammering its API."""
    results = results_path
    with dashboard(results, hammer=200):
        a, b = start(six, results), start(six, results)
        (_, err_a), (_, err_b) = a.communicate(), b.communicate()
    assert (a.returncode, b.returncode) == (0, 0), err_a + err_b
    assert [r["status"] for r in records(results)] == ["ok"] * 6 and len(ok_keys(results)) == 6
    assert err_a.count(" done e") >= 1 and err_b.count(" done e") >= 1, "one runner did all the work"
    assert err_a.count(" done e") + err_b.count(" done e") == 6


@pytest.mark.slow
def test_a_killed_runners_claim_is_taken_over(results_path, six):
    results = results_path
    claims = results_path.parent / (results_path.name + ".claims")
    held = lambda: orjson.loads(claims.read_bytes())["claims"] if claims.exists() else {}  # noqa: E731
    a = start(six, results)
    wait_for(lambda: held())
    b = start(six, results)
    wait_for(lambda: len(held()) == 2)
    a.send_signal(signal.SIGKILL)
    a.communicate()
    orphaned = [c for c in held().values() if c["pid"] == a.pid]  # frozen now that a is dead
    assert orphaned  # a holds a claim at every instant but the ~1 ms between two experiments
    _, err = b.communicate()
    assert b.returncode == 0, err
    for claim in orphaned:
        assert f"taking over {claim['name']} from runner" in err
    assert len(ok_keys(results)) == 6 and all(r["status"] == "ok" for r in records(results))
    assert held() == {}


@pytest.mark.parametrize(("signum", "code", "jobs"), [(signal.SIGTERM, 143, "1"), (signal.SIGINT, 130, "1"),
                                                       (signal.SIGTERM, 143, "2")])
@pytest.mark.slow
def test_a_signal_records_the_experiments_in_flight_as_interrupted(tmp_path, signum, code, jobs):
    three = tiny_set(tmp_path, 3)
    results = tmp_path / "results.json"
    claims = tmp_path / "results.json.claims"
    proc = start(three, results, "--jobs", jobs)
    head = wait_for_line(proc, " start e")
    proc.send_signal(signum)
    _, err = proc.communicate()
    err = head + err
    assert proc.returncode == code, err
    interrupted = [r for r in records(results) if r["status"] == "interrupted"]
    assert interrupted and all(r["timing"]["elapsed_s"] >= 0 for r in interrupted)
    assert f"interrupted by {signal.Signals(signum).name}" in interrupted[0]["error"]
    assert orjson.loads(claims.read_bytes())["claims"] == {}, "claims left behind"
    assert "Traceback" not in err
    again = start(three, results)  # retries what was interrupted, runs the rest
    _, err = again.communicate()
    assert again.returncode == 0, err
    assert len(ok_keys(results)) == 3


def worker_pids(parent: int) -> list[int]:
    """The --jobs workers of a runner: its children started by multiprocessing's spawn (not its
    resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the workers through Linux's /proc")
def test_killing_one_worker_fails_only_its_own_experiment(tmp_path):
    three = tiny_set(tmp_path, 3)
    results = tmp_path / "results.jsonl"
    proc = start(three, results, "--jobs", "2")
    seen = wait_for_line(proc, " start e")
    seen += wait_for_line(proc, " start e")  # both workers have a task; each loads for ~2 s before it runs
    wait_for(lambda: len(worker_pids(proc.pid)) == 2)
    victim = worker_pids(proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate()
    err = seen + err
    assert proc.returncode == 1, err  # something failed
    failed = [r for r in records(results) if r["status"] == "failed"]
    assert len(failed) == 1 and "worker process died" in failed[0]["error"], err
    assert sorted(r["name"] for r in records(results) if r["status"] == "ok") == sorted(
        {"e4", "e5", "e6"} - {failed[0]["name"]}), "a healthy sibling was failed with the dead worker"
    assert "Traceback" not in err


def pid_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] == "Z"
    except OSError:
        return True


def threads(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/status").read_text().split("Threads:")[1].split()[0])
    except (OSError, IndexError):
        return 0


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the workers through Linux's /proc")
def test_jobs_workers_die_with_a_sigkilled_runner_even_while_they_start(tmp_path):
    """Killed while its workers still start: a worker ends as soon as its start-up reaches its first
    line, which asks the kernel to kill it with its parent and then looks for the parent (about
    0.3 s on an idle machine; the bound allows for a loaded 2-core CI machine)."""
    proc = start(tiny_set(tmp_path, 3), tmp_path / "results.jsonl", "--jobs", "2")
    wait_for_line(proc, " start e")
    wait_for(lambda: len(worker_pids(proc.pid)) == 2, timeout=30)
    workers = worker_pids(proc.pid)
    t0 = time.monotonic()
    proc.kill()
    proc.communicate()
    wait_for(lambda: all(pid_gone(w) for w in workers), timeout=10)
    assert time.monotonic() - t0 < 5.0


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the workers through Linux's /proc")
def test_jobs_workers_die_with_a_sigkilled_runner_even_when_they_cannot_run(tmp_path):
    """A worker that gets no CPU (stopped here; a busy machine, a long call holding the GIL) cannot
    watch its parent: the kernel ends it with the parent all the same."""
    proc = start(tiny_set(tmp_path, 3), tmp_path / "results.jsonl", "--jobs", "2")
    wait_for_line(proc, " start e")
    wait_for(lambda: len(worker_pids(proc.pid)) == 2 and all(threads(w) > 1 for w in worker_pids(proc.pid)),
             timeout=30)  # past their start: running, with their threads
    workers = worker_pids(proc.pid)
    try:
        for w in workers:
            os.kill(w, signal.SIGSTOP)
        proc.kill()
        proc.wait()  # not communicate(): workers left alive would hold its pipes open
        wait_for(lambda: all(pid_gone(w) for w in workers), timeout=2)
    finally:
        for w in workers:
            if not pid_gone(w):
                os.kill(w, signal.SIGKILL)
