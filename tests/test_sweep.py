"""Results store, keys and the runner: skip what is done, never lose or corrupt a result."""

import dataclasses
import os
import socket
import subprocess
import sys
import time

import numba
import numpy as np
import orjson
import pytest
from conftest import experiment_record, record

import ramsweep
from ramsweep.config import Experiment
from ramsweep.data import load_corpus
from ramsweep.errors import ConfigError
from ramsweep.sweep import claims as claims_module
from ramsweep.sweep import executors, experiment
from ramsweep.sweep.claims import STALE_S, Claims
from ramsweep.sweep.experiment import Task, run_experiment
from ramsweep.sweep.plan import Options, experiment_key, needs_running, plan
from ramsweep.sweep.records import Claim, parse_record
from ramsweep.sweep.runner import run_set
from ramsweep.sweep.store import open_store

# Tiny experiments: a few seconds each on the embedded corpus in fast mode.
SET = """
description: tiny test set
experiments:
  - name: {a}
    tiers: "{tiers}"
    context: 2
    negatives: 20
  - name: two
    tiers: "50,2,12;rest,1,5"
    context: 3
    negatives: 30
"""


def write_set(tmp_path, a="one", tiers="20,2,6;rest,1,4", filename="tiny.yaml"):
    path = tmp_path / filename
    path.write_text(SET.format(a=a, tiers=tiers))
    return str(path)


def read(path):
    """The results file with the experiments' records only (baselines: see their own test)."""
    found = orjson.loads(path.read_bytes())
    return {**found, "results": [r for r in found["results"] if r.get("kind") != "baseline"]}


# --- keys ------------------------------------------------------------------------------------

def test_key_ignores_the_name_but_not_the_spec_or_the_data():
    a = Experiment(name="a", tiers="100,15,20;rest,5,8")
    assert experiment_key(a, "fp") == experiment_key(a.model_copy(update={"name": "b", "description": "x"}), "fp")
    assert experiment_key(a, "fp") != experiment_key(Experiment(name="a", tiers="100,15,18;rest,5,8"), "fp")
    assert experiment_key(a, "fp") != experiment_key(a.model_copy(update={"empty_value": 0.5}), "fp")
    assert experiment_key(a, "fp") != experiment_key(a, "other data")
    assert list(plan([a, a.model_copy(update={"name": "same_spec"})], "fp")) == [experiment_key(a, "fp")]


def test_the_one_rule_for_what_still_needs_running():
    ok, failed, interrupted = (record(key="k", status=s) for s in ("ok", "failed", "interrupted"))
    assert needs_running("k", None) and not needs_running("k", ok)
    assert needs_running("k", failed) and not needs_running("k", failed, Options(retry_failed=False))
    assert needs_running("k", interrupted, Options(retry_failed=False))
    forced = Options(forced=frozenset({"k"}), since="2026-11-26T01:00:00+00:00")  # ok's started is 00:00
    assert needs_running("k", ok, forced) and not needs_running("other", ok, forced)
    assert not needs_running("k", ok, Options(forced=frozenset({"k"}), since="2026-11-26T00:00:00+00:00"))


def fake_run(keys=None):
    """A stand-in for run_experiment: a valid ok record at once (and the keys it was asked for)."""
    def run(task, corpus, report=None):
        if keys is not None:
            keys.append(task.key)
        return parse_record(experiment_record(name=task.experiment.name, key=task.key))
    return run


# --- runner ----------------------------------------------------------------------------------

def test_run_records_results_and_a_second_run_runs_nothing(tmp_path, caplog):
    caplog.set_level("INFO", logger="ramsweep")
    results = tmp_path / "results.json"
    first = ramsweep.run_set(write_set(tmp_path), results=results)
    assert first.ran == ["one", "two"] and first.failed == []
    records = read(results)["results"]
    assert [r["status"] for r in records] == ["ok", "ok"]
    r = records[0]
    assert r["spec"]["tiers"] == "20,2,6;rest,1,4" and r["set"] == "tiny"
    assert r["data"]["corpus"] == "kjv" and r["data"]["vocab_size"] > 10_000
    val, test = r["metrics"]["validation"], r["metrics"]["test"]
    assert val["examples"] == r["data"]["split_tokens"]["validation"] - 2
    assert test["ppl_floor"] < test["ppl"] < r["data"]["vocab_size"] * 2.72
    assert [t["clusters"] for t in test["tiers"]] == [20, r["data"]["vocab_size"] - 20]
    assert r["timing"]["train_s"] > 0 and r["resources"]["cells_stored"][0] > 0

    caplog.clear()
    again = run_set(write_set(tmp_path), results=results)
    assert again.ran == [] and again.skipped == ["one", "two"]
    assert "nothing to run" in caplog.text
    assert read(results)["results"] == records


def test_progress_knows_the_total_from_the_start(tmp_path):
    calls = []
    run_set(write_set(tmp_path), results=tmp_path / "results.json", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 2), (1, 2), (2, 2)]


def test_renaming_does_not_rerun_but_changing_tiers_does(tmp_path):
    results = tmp_path / "results.json"
    run_set(write_set(tmp_path), results=results, experiments=["one"])
    renamed = run_set(write_set(tmp_path, a="renamed"), results=results, experiments=["renamed"])
    assert renamed.ran == [] and renamed.skipped == ["renamed"]
    changed = run_set(write_set(tmp_path, tiers="20,2,7;rest,1,4"), results=results, experiments=["one"])
    assert changed.ran == ["one"]
    assert len(read(results)["results"]) == 2


def test_full_data_is_other_data_so_it_runs_again(tmp_path, monkeypatch):
    keys = []
    monkeypatch.setattr(executors, "run_experiment", fake_run(keys))
    results = tmp_path / "results.json"
    run_set(write_set(tmp_path), results=results, experiments=["one"])
    run_set(write_set(tmp_path), results=results, experiments=["one"], full_data=True)
    assert len(set(keys)) == 2


def test_a_failing_experiment_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from ramsweep.engine import tiered

    real_train = tiered.train

    def flaky(exp, *args, **kwargs):
        if exp.name == "one":
            raise RuntimeError("boom")
        return real_train(exp, *args, **kwargs)

    monkeypatch.setattr(tiered, "train", flaky)
    results = tmp_path / "results.json"
    summary = run_set(write_set(tmp_path), results=results)
    assert summary.failed == ["one"] and summary.ran == ["two"]
    failed = read(results)["results"][0]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom"
    assert "Traceback" in failed["traceback"]
    monkeypatch.setattr(tiered, "train", real_train)
    kept = run_set(write_set(tmp_path), results=results, retry_failed=False)
    assert kept.ran == [] and kept.skipped == ["one", "two"]
    assert run_set(write_set(tmp_path), results=results).ran == ["one"]  # failed runs are retried


def test_force_runs_a_done_experiment_once_more_and_the_report_shows_the_newest(tmp_path):
    results = tmp_path / "results.json"
    run_set(write_set(tmp_path), results=results)
    forced = run_set(write_set(tmp_path), results=results, force=["two"])
    assert forced.ran == ["two"] and forced.skipped == ["one"]
    assert [r["name"] for r in read(results)["results"]] == ["one", "two", "two"]
    assert run_set(write_set(tmp_path), results=results).ran == []
    with pytest.raises(ConfigError, match="no experiment 'nope'"):
        run_set(write_set(tmp_path), results=results, force=["nope"])


def test_force_within_the_second_of_the_first_run_still_runs_again(tmp_path, monkeypatch):
    """Records start in whole seconds; a forced run started later in that same second must still
    see the earlier result as before it (fast experiments made this happen)."""
    from datetime import UTC, datetime

    from ramsweep.sweep import runner

    second = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    monkeypatch.setattr(experiment, "now", lambda: second.isoformat(timespec="seconds"))

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return second.replace(microsecond=500_000)

    monkeypatch.setattr(runner, "datetime", Clock)
    results = tmp_path / "results.json"
    run_set(write_set(tmp_path), results=results)
    assert run_set(write_set(tmp_path), results=results, force=["two"]).ran == ["two"]


def test_a_process_pool_gives_the_same_numbers_as_one_process(tmp_path):
    serial, pooled = tmp_path / "serial.json", tmp_path / "pooled.json"
    run_set(write_set(tmp_path), results=serial)
    summary = run_set(write_set(tmp_path), results=pooled, jobs=2)
    assert sorted(summary.ran) == ["one", "two"]
    metrics = lambda path: {r["name"]: r["metrics"] for r in read(path)["results"]}  # noqa: E731
    assert metrics(pooled) == metrics(serial)
    assert {r["resources"]["threads"] for r in read(pooled)["results"]} == {max(1, numba.config.NUMBA_NUM_THREADS // 2)}


def test_config_errors_stop_the_run_before_any_work(tmp_path):
    results = tmp_path / "results.json"
    path = tmp_path / "wide.yaml"
    path.write_text('experiments:\n  - {name: ok, tiers: "rest,1,4", context: 2}\n'
                    '  - {name: wide, tiers: "rest,1,30", context: 2}\n')
    with pytest.raises(ConfigError, match="experiment 'wide': tiers: .*30 bits.*28 bits wide"):
        run_set(str(path), results=results)
    assert not results.exists()
    with pytest.raises(ConfigError, match="no experiment 'nope'"):
        run_set(write_set(tmp_path), results=results, experiments=["nope"])


# --- claims ----------------------------------------------------------------------------------

def foreign_claim(key, host, pid, heartbeat):
    return Claim(key=key, name=key, set="s", owner="other", host=host, pid=pid, heartbeat=heartbeat,
                 since="2026-01-01T00:00:00+00:00")


class Clock:
    """This runner's monotonic clock, moved by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_claims_are_judged_by_the_heartbeat_changes_this_runner_observes(tmp_path, monkeypatch):
    here, day = socket.gethostname(), 86400.0
    clock = Clock()
    monkeypatch.setattr(claims_module.time, "monotonic", clock)
    store = open_store(tmp_path / "results.json")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with store.locked():
        store.write_claims_locked({
            "paused_here": foreign_claim("paused_here", here, os.getppid(), time.time()),  # alive, but still
            "dead_here": foreign_claim("dead_here", here, dead.pid, time.time()),
            "ahead_there": foreign_claim("ahead_there", "other-host", 1, time.time() + day),  # clock a day ahead
            "behind_there": foreign_claim("behind_there", "other-host", 1, time.time() - day),  # a day behind
        })
    claims = Claims(store)
    keys = [(k, k) for k in ("paused_here", "dead_here", "ahead_there", "behind_there", "beating_there", "free")]

    def claim():
        out = claims.claim_next(keys, lambda key, latest: True, "s")
        return out.key, [c.key for c in out.taken_over], sorted(c.key for c in out.held_by_others)

    # a dead process on this host loses its claim at once; a clock far off in either direction does nothing
    assert claim() == ("dead_here", ["dead_here"], ["paused_here"])
    assert claim() == ("beating_there", [], ["ahead_there", "behind_there", "paused_here"])
    clock.now += STALE_S - 1  # still within the stale time, by this runner's clock
    assert claim() == ("free", [], ["ahead_there", "behind_there", "paused_here"])
    with store.locked():  # one of them beats (its value changes, whatever its clock says)
        current = store.claims()
        current["behind_there"] = current["behind_there"].model_copy(update={"heartbeat": time.time() - day + 5})
        store.write_claims_locked(current)
    clock.now += 2  # the others' heartbeats have stood still for STALE_S + 1 s as seen here
    assert claim() == ("paused_here", ["paused_here"], [])
    assert claim() == ("ahead_there", ["ahead_there"], [])
    assert claim() == (None, [], ["behind_there"])
    mine = {k for k, c in store.claims().items() if c.owner == claims.owner.id}
    assert mine == {"dead_here", "beating_there", "free", "paused_here", "ahead_there"}
    assert claims.finish(record(key="free"), lambda key, latest: needs_running(key, latest))
    claims.release_all()
    assert sorted(store.claims()) == ["behind_there"]
    assert store.records() == [record(key="free")]


def test_a_result_for_an_experiment_already_done_is_not_recorded_twice(tmp_path):
    store = open_store(tmp_path / "results.jsonl")
    slow, fast = Claims(store), Claims(store)
    assert slow.claim_next([("k", "k")], lambda key, latest: True, "s").key == "k"
    with store.locked():  # the slow runner was paused; the fast one took its claim over and finished
        store.write_claims_locked({})
    assert fast.claim_next([("k", "k")], lambda key, latest: True, "s").key == "k"
    needed = lambda key, latest: needs_running(key, latest)  # noqa: E731
    assert fast.finish(record(key="k", test_ppl=1.0), needed)
    assert not slow.finish(record(key="k", test_ppl=2.0), needed)  # too late: refused under the lock
    assert [r.metrics.test.ppl for r in store.records()] == [1.0]


def test_a_done_experiment_is_not_claimed(tmp_path):
    store = open_store(tmp_path / "results.json")
    store.append(record(key="a"))
    claims = Claims(store)
    wanted = lambda key, latest: needs_running(key, latest)  # noqa: E731
    assert claims.claim_next([("a", "a"), ("b", "b")], wanted, "s").key == "b"


# --- honest numbers: calibration on validation only, baselines once per data ------------------

def test_the_temperature_is_fitted_without_looking_at_test():
    exp = Experiment(name="t", tiers="20,2,6;rest,1,4", context=2, negatives=20)
    corpus = load_corpus("kjv")
    poisoned_test = np.random.default_rng(0).integers(0, corpus.vocab_size, corpus.test.size, dtype=np.int32)
    poisoned = dataclasses.replace(corpus, test=poisoned_test)
    clean = run_experiment(Task(exp, "k", "s"), corpus).metrics
    dirty = run_experiment(Task(exp, "k", "s"), poisoned).metrics
    assert dirty.test.ppl != clean.test.ppl  # the poison reached the test figures...
    # ...but not the temperature, which is fitted on validation and only applied to test
    assert dirty.test.calibrated.temperature == clean.test.calibrated.temperature
    assert dirty.validation == clean.validation
    # calibration helps on the split it was fitted on
    assert clean.validation.calibrated.ce <= clean.validation.ce


def test_baselines_are_recorded_once_per_data(tmp_path, monkeypatch):
    results = tmp_path / "results.json"
    set_path = write_set(tmp_path)
    run_set(set_path, results=results, experiments=["one"])
    run_set(set_path, results=results, experiments=["two"])

    def baselines():
        return [r for r in orjson.loads(results.read_bytes())["results"] if r.get("kind") == "baseline"]

    first = baselines()
    assert sorted(r["name"] for r in first) == ["kn_bigram", "uniform", "unigram"]
    experiment = read(results)["results"][0]
    assert {r["data"]["fingerprint"] for r in first} == {experiment["data"]["fingerprint"]}
    by_name = {r["name"]: r["metrics"]["test"] for r in first}
    vocab = experiment["data"]["vocab_size"]
    assert by_name["uniform"]["ppl"] == pytest.approx(vocab)
    # the count models beat uniform guessing on the same tokens, bigram beats unigram
    assert by_name["kn_bigram"]["ppl"] < by_name["unigram"]["ppl"] < vocab

    monkeypatch.setattr(executors, "run_experiment", fake_run())
    run_set(set_path, results=results, experiments=["one"], full_data=True)  # other data: its own
    assert len(baselines()) == 6
    assert len({r["data"]["fingerprint"] for r in baselines()}) == 2


def test_each_seed_is_its_own_result(tmp_path):
    results = tmp_path / "results.jsonl"
    summary = run_set(write_set(tmp_path), results=results, experiments=["one.s0", "one.s1"], seeds=[0, 1])
    assert summary.ran == ["one.s0", "one.s1"]
    done = [r for r in open_store(results).records() if r.kind == "experiment"]
    assert [r.spec.seed for r in done] == [0, 1] and done[0].key != done[1].key
    assert done[0].metrics.test.ppl != done[1].metrics.test.ppl  # other connectivity, other figures
    again = run_set(write_set(tmp_path), results=results, experiments=["one"])  # seed 0 is the plain experiment
    assert again.ran == [] and again.skipped == ["one"]


def test_an_lsh_tier_runs_end_to_end_and_its_record_and_card_say_what_the_hash_cost(tmp_path):
    from ramsweep.report.lineage import card

    path = tmp_path / "lsh.yaml"
    path.write_text('experiments:\n  - {name: wide, tiers: "20,2,40;rest,1,8", context: 4, lsh_bits: 10}\n')
    results = tmp_path / "results.json"
    run_set(str(path), results=results)
    record = next(r for r in open_store(results).records() if r.name == "wide")
    assert record.ok and [t.memory for t in record.metrics.test.tiers] == ["lsh", "dense"]
    first, rest = record.resources.lsh
    assert rest is None and first.lsh_bits == 10
    assert first.addresses > first.cells == record.resources.cells_stored[0] > 0
    assert first.collided == first.addresses - first.cells
    assert first.neurons_counted == 40 and first.collided_share == first.collided / first.addresses
    assert f"on 40 of its neurons, {first.addresses:,} distinct training addresses in {first.cells:,} cells" \
        in "\n".join(card(record))


def test_a_gated_experiment_records_and_shows_what_its_gates_did(tmp_path):
    from ramsweep.report.lineage import card

    path = tmp_path / "gated.yaml"
    path.write_text('experiments:\n  - {name: gated, tiers: "20,3,8;rest,2,6", context: 3, negatives: 40, '
                    'gating: {neurons: 3, bits: 8}}\n  - {name: plain, tiers: "20,3,8;rest,2,6", context: 3, '
                    'negatives: 40}\n')
    results = tmp_path / "results.json"
    run_set(str(path), results=results)
    gated, plain = sorted((r for r in open_store(results).records() if r.kind == "experiment"), key=lambda r: r.name)
    assert gated.ok and plain.ok and gated.key != plain.key and "gating" not in plain.spec
    for split in ("validation", "test"):
        g, p = getattr(gated.metrics, split), getattr(plain.metrics, split)
        assert g.ungated.ce == pytest.approx(p.ce, rel=1e-12)  # the same neurons, every gate open
        assert all(0 <= t.gate_open <= 1 and 0 <= t.gate_target_open <= 1 for t in g.tiers)
        assert p.ungated is None and all(t.gate_open is None for t in p.tiers)
    assert "with every gate open" in "\n".join(card(gated))
    # fast mode trains on part of the split: most of the rest tier's clusters are never written
    first, rest = plain.resources.never_written
    assert first == 0 and 0 < rest < plain.metrics.test.tiers[1].clusters
    assert f"{rest:,} by tier" in "\n".join(card(plain))
    assert "Gating" not in "\n".join(card(plain))


def test_a_fit_that_cannot_beat_uniform_says_so_in_the_record_the_log_and_the_report(tmp_path, caplog):
    """EMPTY = 0.5 on tier0_20bit: unseen contexts read EMPTY, rare tokens score 0.5 where
    frequent ones read FALSE, and the model is worse than uniform at every temperature; the fit
    runs to its bound (T = 1000), which must not be printed as a result."""
    from ramsweep.report import report

    caplog.set_level("INFO", logger="ramsweep")
    path = tmp_path / "half.yaml"
    path.write_text('experiments:\n  - {name: half, tiers: "100,15,20;400,10,12;rest,5,8", context: 4, '
                    'empty_value: 0.5}\n')
    results = tmp_path / "results.json"
    run_set(str(path), results=results)
    record = next(r for r in open_store(results).records() if r.name == "half")
    for split in (record.metrics.validation, record.metrics.test):
        assert split.calibrated.bound == "highest" and split.calibrated.temperature == 1000.0
    assert "no temperature beats uniform" in caplog.text
    for format in ("md", "table"):
        shown = report(results, format=format)
        assert "no temperature beats uniform" in shown
        assert "(1e+03)" not in shown
