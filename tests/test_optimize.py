"""Connectivity search (docs/design.md §5): the incremental fitness is exact, the search is
deterministic, resumable and never reads test, and its result can be rebuilt from its file."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import orjson
import pytest
from conftest import config_error
from typer.testing import CliRunner

from ramsweep.cli import app
from ramsweep.config import Experiment
from ramsweep.data.corpus import Corpus
from ramsweep.engine.evaluate import evaluate, score
from ramsweep.engine.reference import ReferenceModel
from ramsweep.engine.train import DENSE, drawn_connectivity, train
from ramsweep.optimize import cpu as search_kernels
from ramsweep.optimize.checkpoint import decode
from ramsweep.optimize.driver import run_search
from ramsweep.optimize.fitness import Examples, Fitness
from ramsweep.sweep.artifacts import Checkpoints, load_connectivity
from ramsweep.sweep.experiment import Task, run_experiment
from ramsweep.sweep.plan import experiment_key

V = 40


def zipf(rng, n, vocab=V):
    return np.minimum(rng.zipf(1.3, n) - 1, vocab - 1).astype(np.int32)


def random_changes(rng, layout, per_tier=3):
    changes = []
    for t, tier in enumerate(layout.tiers):
        neurons = rng.choice(tier.n_neurons, size=min(per_tier, tier.n_neurons), replace=False)
        rows = np.stack([rng.choice(layout.n_input, tier.bits, replace=False) for _ in neurons]).astype(np.int32)
        changes.append((t, neurons, rows))
    return changes


def oracle_simple(exp, train_tokens, fit_tokens, wiring):
    """SIMPLE over all clusters, from the oracle's scores: Σ_c Σ_e ±score (+ when c is e's target)."""
    ref = ReferenceModel(exp, train_tokens, V, wiring=wiring)
    total = 0.0
    for t in range(exp.context, len(fit_tokens)):
        scores = ref.scores(ref.input_bits(fit_tokens[t - exp.context : t]))[0]
        sign = -np.ones(V)
        sign[ref.position[int(fit_tokens[t])]] = 1
        total += float((scores * sign).sum())
    return total


# DENSE and SPARSE tiers, one wider than a scratch table (27 bits: the sorted path), both EMPTY values
@pytest.mark.parametrize("empty_value", [0.0, 0.5])
@pytest.mark.parametrize("kind", ["ce", "accuracy", "simple"])
def test_incremental_fitness_equals_a_full_retrain(kind, empty_value):
    rng = np.random.default_rng(7)
    tokens = zipf(rng, 2400)
    part, fit = tokens[:2100], tokens[2100 - 5 :]
    exp = Experiment(name="x", tiers="3,3,27;6,2,5;rest,2,9", context=5, negatives=6, empty_value=empty_value,
                     dense_max_bits=6, memory="bits")
    model = train(exp, part, V)
    assert [m.tier.storage for m in model.memories] == ["sparse", DENSE, "sparse"]
    examples = Examples.of(part, model.layout), Examples.of(fit, model.layout)
    fitness = Fitness(model, *examples, kind)
    grouped = Fitness(model, *examples, kind, pool_bytes=1)  # rows for 32 neurons at a time: moves go in groups
    for f in (fitness, grouped):
        f.set_scope(np.arange(V))
    conn = [c.copy() for c in model.connectivity]
    grouped_steps = []
    for step in range(4):
        changes = random_changes(rng, model.layout)
        moved = [c.copy() for c in conn]
        for t, neurons, rows in changes:
            moved[t][neurons] = rows
        value = fitness.evaluate([changes])[0]
        assert grouped.evaluate([changes])[0] == value
        grouped_steps.append(len(grouped._chunks(grouped._moves(changes))) > 1)
        retrained = train(exp, part, V, connectivity=moved)
        full = score(retrained, fit)
        assert abs(value.ce - full.ce.mean()) < 1e-9
        assert value.accuracy == full.correct.mean()
        if kind == "simple":
            assert abs(value.simple - oracle_simple(exp, part, fit, moved)) < 1e-9
        if step % 2:  # commit every other candidate: later ones move from a state that has moved
            assert fitness.commit(changes) == grouped.commit(changes)
            conn = moved
            assert abs(fitness.current().ce - full.ce.mean()) < 1e-9
    assert any(grouped_steps)
    # the rows (cells read) of retrained neurons are exactly those of the retrained memory
    x = Examples.of(fit, model.layout).x
    for t, neurons, rows in changes:
        mem = retrained.memories[t]
        pool, slots = np.zeros((len(neurons), x.shape[0]), np.uint8), np.arange(len(neurons))
        search_kernels.memory_rows(x, mem.masks, mem.order, neurons.astype(np.int64), mem.tier.storage != DENSE,
                                   mem.dense, mem.offsets, mem.keys, mem.vals, pool, slots)
        keys = [(t, int(n), r.astype(np.int32).tobytes()) for n, r in zip(neurons, rows)]
        got = fitness.kernels.read_rows([fitness.pool.slot_of[k] for k in keys])
        assert np.array_equal(got, pool)


def small_corpus(seed=0, vocab=60) -> Corpus:
    rng = np.random.default_rng(seed)
    splits = {"train": zipf(rng, 6000, vocab), "validation": zipf(rng, 800, vocab), "test": zipf(rng, 800, vocab)}
    return Corpus(name="text", tokenizer="word", vocab=tuple(f"w{i}" for i in range(vocab)), full_data=True,
                  fingerprint=f"synthetic{seed}", variant="synthetic", path=None, source_sha256="0" * 64,
                  tokenizer_files={}, token_bytes={s: np.full(a.size, 3, np.int32) for s, a in splits.items()},
                  **splits)


SEARCH = {"generations": 3, "population": 6, "iterations": 3, "neighbours": 5, "mutation": 0.05,
          "ts_mutation": 0.02}


def searched(strategy, **fields):
    return Experiment(name="s_" + strategy.replace("+", ""), tiers="6,3,8;12,2,6;rest,2,5", context=3, negatives=10,
                      optimize={"strategy": strategy, **SEARCH, **fields})


def comparable(outcome):
    """What must be identical between two runs of one search: all but the timings."""
    drop = {"elapsed_s", "search_s"}
    summary = {k: v for k, v in outcome.summary.items() if k not in drop}
    summary["history"] = [{k: v for k, v in h.items() if k not in drop} for h in summary["history"]]
    return summary, [c.tolist() for c in outcome.chosen.connectivity]


@pytest.mark.parametrize("strategy", ["ga+ts", "per-cluster"])
def test_a_search_is_deterministic_and_resumes_as_if_never_stopped(strategy):
    corpus = small_corpus()
    exp = searched(strategy, clusters=2, fitness="accuracy" if strategy == "ga+ts" else "simple")
    args = (exp, corpus.train, corpus.validation, corpus.vocab_size)
    saved = []
    whole = run_search(*args, checkpoint=saved.append)
    assert comparable(run_search(*args)) == comparable(whole)  # same seed, same search
    assert whole.summary["evaluations"] > 0 and len(saved) >= 4

    set_aside = []
    for stop in (1, len(saved) // 2, len(saved) - 2):  # killed after that checkpoint was written
        resumed = run_search(*args, resume={**saved[stop], "set_aside": set_aside.append})
        assert comparable(resumed) == comparable(whole)
    assert set_aside == []  # each was valid, and resumed (not started over, which ends the same)

    other = run_search(exp.model_copy(update={"optimize": exp.optimize.model_copy(update={"seed": 1})}),
                       *args[1:])
    assert comparable(other) != comparable(whole)  # the block's seed drives the search


def test_the_search_never_reads_test():
    corpus = small_corpus()
    poisoned = dataclasses.replace(corpus, test=np.random.default_rng(9).integers(0, 60, 800, dtype=np.int32))
    exp = searched("ga+ts")
    clean, dirty = (run_experiment(Task(exp, "k", "s"), c) for c in (corpus, poisoned))
    assert clean.ok and dirty.ok
    assert dirty.metrics.test.ppl != clean.metrics.test.ppl  # the poison reached the test figures...
    # ...and nothing else: the same search, the same choice, the same validation figures
    keep = lambda r: {k: v for k, v in r.search.items() if k not in ("search_s", "history", "before")}  # noqa: E731
    assert keep(dirty) == keep(clean)
    assert dirty.metrics.validation == clean.metrics.validation
    assert dirty.search["before"]["validation"] == clean.search["before"]["validation"]


def test_a_run_resumes_its_search_and_keeps_the_connectivity_it_chose(tmp_path, monkeypatch):
    corpus = small_corpus()
    exp = searched("ga")
    task = Task(exp, experiment_key(exp, corpus.fingerprint), "s", str(tmp_path / "results.json.search"))
    uninterrupted = run_experiment(dataclasses.replace(task, artifacts=str(tmp_path / "other")), corpus)

    calls, real_save = [], Checkpoints.save

    def crash_after_two(self, saved):
        real_save(self, saved)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as abrupt as a kill, after the second checkpoint was written

    monkeypatch.setattr(Checkpoints, "save", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(task, corpus)
    checkpoint = Checkpoints(tmp_path / "results.json.search", task.key)
    assert decode(checkpoint.load())[0]["ga"]["generation"] == 1
    monkeypatch.setattr(Checkpoints, "save", real_save)
    resumed = run_experiment(task, corpus)
    assert not checkpoint.path.exists()  # removed once the search ended
    assert resumed.metrics == uninterrupted.metrics
    assert resumed.search["selection"] == uninterrupted.search["selection"]

    # the saved connectivity rebuilds the chosen model without searching again
    saved = tmp_path / resumed.search["connectivity"]["file"]
    start = train(exp, corpus.train, corpus.vocab_size)
    model = train(exp, corpus.train, corpus.vocab_size, connectivity=load_connectivity(saved, start.connectivity))
    assert evaluate(model, corpus.validation)["ce"] == resumed.metrics.validation.ce
    changed = model.connectivity[0] != drawn_connectivity(exp, model.layout)[0]
    assert changed.any() == (resumed.search["chosen"] != "start")


def test_the_record_says_what_the_search_did(caplog):
    corpus = small_corpus()
    with caplog.at_level("INFO", logger="ramsweep"):
        r = run_experiment(Task(searched("ts", fitness="ce"), "k", "s"), corpus)
    # progress in the log: where the search is, its best fitness, its speed, its end
    assert re.search(r"search s_ts: unit 3/3, TS iteration 3, best CE [\d.]+ in this unit, [\d.]+ evaluations/s, done",
                     caplog.text), caplog.text
    s = r.search
    assert s["strategy"] == "ts" and s["fitness"] == "ce" and s["evaluations"] == 3 * 3 * 5  # tier by tier
    assert s["fitness_after"]["value"] <= s["fitness_before"]["value"]  # TS keeps the best it saw
    assert [t["tier"] for t in s["fitness_before"]["tiers"]] == [0, 1, 2]
    assert s["selection"][0]["label"] == "start"
    # step 0 is each tier's start, then one line per iteration
    assert [(h["unit"], h["step"]) for h in s["history"]] == [(u, i) for u in range(3) for i in (0, 1, 2, 3)]
    assert 0 <= s["improved"] <= s["units"] == 3
    assert s["before"]["test"]["ppl"] > 0 and s["before"]["validation"]["tiers"]
    if s["chosen"] == "start":
        assert r.metrics.test.ppl == s["before"]["test"]["ppl"]


def test_the_optimize_block_is_checked_and_keyed():
    plain = Experiment(name="a", tiers="10,3,8;rest,2,4")
    assert "optimize" not in plain.spec()  # keys of experiments without a search are unchanged
    ga = plain.model_copy(update={"optimize": {"strategy": "GA"}})
    ga = Experiment(**{**plain.model_dump(), "optimize": {"strategy": "GA"}})
    assert ga.optimize.strategy == "ga" and ga.optimize.population == 30  # the research's defaults
    other = Experiment(**{**plain.model_dump(), "optimize": {"strategy": "GA", "generations": 10}})
    assert experiment_key(ga, "d") != experiment_key(other, "d") != experiment_key(plain, "d")
    config_error(lambda: Experiment(name="a", tiers="10,3,8;rest,2,4", optimize={"fitness": "mse"}),
                 "optimize: fitness:", "use CE, ACCURACY, HARMONIC (phases) or SIMPLE")
    config_error(lambda: Experiment(name="a", tiers="10,3,8;rest,2,4", optimize={"tiers": [5]}),
                 "optimize: tiers: tier 5 does not exist")
    config_error(lambda: Experiment(name="a", tiers="10,3,8;rest,2,4", optimize={"budgets": {0: {"gens": 1}}}),
                 "budgets: tier 0: unknown key 'gens'")


def test_a_time_cap_stops_the_search_with_a_valid_result():
    corpus = small_corpus()
    exp = searched("ga", max_minutes=1e-9, generations=50)
    out = run_search(exp, corpus.train, corpus.validation, corpus.vocab_size)
    assert out.summary["stopped"] == "time cap"
    assert out.state["unit"] == 0 and len(out.summary["history"]) == 1  # the first step, then the cap
    assert out.summary["fitness_after"]["value"] <= out.summary["fitness_before"]["value"]  # its best is kept


# ---------------------------------------------------------------- a checkpoint that is not this search's

SEARCH_SET = """
experiments:
  - name: s
    tiers: "6,3,8;12,2,6;rest,2,5"
    context: 3
    negatives: 10
    optimize: {strategy: GA+TS, generations: 3, population: 6, iterations: 3, neighbours: 5, mutation: 0.05,
               ts_mutation: 0.02}
"""

# `ramsweep run` SIGKILLed once its checkpoint holds both a GA population and rewired neurons
KILLED_AT_A_CHECKPOINT = """
import json, os, signal
from ramsweep.cli import main
from ramsweep.sweep.artifacts import Checkpoints

save = Checkpoints.save

def save_then_die(self, saved):
    save(self, saved)
    meta = json.loads(saved["meta"])
    if meta["moved"] and meta["state"]["ga"]:
        os.kill(os.getpid(), signal.SIGKILL)

Checkpoints.save = save_then_die
main()
"""


@pytest.fixture(scope="module")
def killed_search(tmp_path_factory):
    """(set file, text corpus, the record of an uninterrupted run, the checkpoint of a killed one)."""
    folder = tmp_path_factory.mktemp("killed_search")
    (folder / "search.yaml").write_text(SEARCH_SET)
    words = zipf(np.random.default_rng(0), 8000, 60)
    (folder / "corpus.txt").write_text("\n".join(" ".join(f"w{w}" for w in words[i : i + 20]) for i in range(0, 8000, 20)))
    clean = run_cli(folder / "search.yaml", folder / "corpus.txt", folder / "clean" / "results.json")
    assert clean.exit_code == 0, clean.output
    (record,) = experiment_records(folder / "clean" / "results.json")
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_A_CHECKPOINT, "run", "--set", folder / "search.yaml",
                             "--results", folder / "killed" / "results.json", "--data", "text",
                             "--data-path", folder / "corpus.txt"], env={**os.environ, "NUMBA_NUM_THREADS": "1"},
                            capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    checkpoint = folder / "killed" / "results.json.search" / f"{record['key']}.checkpoint.npz"
    assert checkpoint.exists()
    return folder / "search.yaml", folder / "corpus.txt", record, checkpoint


def run_cli(set_path, corpus, results):
    return CliRunner().invoke(app, ["run", "--set", str(set_path), "--results", str(results), "--data", "text",
                                    "--data-path", str(corpus)])


def experiment_records(results):
    return [r for r in orjson.loads(results.read_bytes())["results"] if r.get("kind") != "baseline"]


def figures(record):
    """What a search decides, without its timings."""
    search = {k: v for k, v in record["search"].items() if k != "search_s"}
    search["history"] = [{k: v for k, v in h.items() if k != "elapsed_s"} for h in search["history"]]
    return record["status"], record["metrics"], search


def edited(change):
    """The checkpoint's bytes after change(file meta, search meta, arrays)."""

    def tamper(checkpoint):
        with np.load(checkpoint) as z:
            arrays = {k: z[k] for k in z.files}
        outer = json.loads(arrays.pop("meta").tobytes())
        inner = json.loads(outer["search"])
        change(outer, inner, arrays)
        outer["search"] = json.dumps(inner)
        out = checkpoint.with_name("edited.npz")
        np.savez(out, meta=np.frombuffer(json.dumps(outer).encode(), np.uint8), **arrays)
        return out.read_bytes()

    return tamper


def moved_rows(inner, arrays):
    return arrays[inner["moved"][0][2]["@array"]]


def set_array(arrays, ref, value):
    arrays[ref["@array"]] = value


def candidate_rows(inner, arrays, member=1):
    return arrays[inner["state"]["ga"]["population"][member][0]["@array"]]


TAMPERED = {
    "connection outside the input": edited(lambda o, i, a: moved_rows(i, a).__setitem__((0, 0), 100_000)),
    "negative connection": edited(lambda o, i, a: moved_rows(i, a).__setitem__((0, 0), -1)),
    "a neuron wired twice to one input": edited(
        lambda o, i, a: moved_rows(i, a).__setitem__((0, 1), moved_rows(i, a)[0, 0])),
    "GA candidate outside the input": edited(lambda o, i, a: candidate_rows(i, a).__setitem__((0, 0), 100_000)),
    "GA candidate wired twice": edited(
        lambda o, i, a: candidate_rows(i, a).__setitem__((0, 1), candidate_rows(i, a)[0, 0])),
    "moved neuron outside the tier": edited(
        lambda o, i, a: set_array(a, i["moved"][0][1], np.full_like(a[i["moved"][0][1]["@array"]], 10_000))),
    "wrong shape": edited(
        lambda o, i, a: set_array(a, i["state"]["ga"]["population"][1][0], candidate_rows(i, a)[:, :-1])),
    "wrong dtype": edited(
        lambda o, i, a: set_array(a, i["state"]["ga"]["population"][1][0], candidate_rows(i, a).astype(np.float64))),
    "missing array": edited(lambda o, i, a: a.pop(i["state"]["ga"]["population"][1][0]["@array"])),
    "missing state": edited(lambda o, i, a: i["state"].pop("rng")),
    "missing GA state": edited(lambda o, i, a: i["state"]["ga"].pop("losses")),
    "generation past the budget": edited(lambda o, i, a: i["state"]["ga"].__setitem__("generation", 99)),
    "unit past the last": edited(lambda o, i, a: i["state"].__setitem__("unit", 7)),
    "broken generator state": edited(lambda o, i, a: i["state"]["rng"]["state"].__setitem__("inc", -1)),
    "another experiment's key": edited(lambda o, i, a: o.__setitem__("key", "0123456789abcdef")),
    "another experiment's config": edited(
        lambda o, i, a: i.__setitem__("experiment", {**i.get("experiment", {}), "context": 4})),
    "garbage bytes": lambda checkpoint: b"PK\x03\x04" + bytes(range(256)) * 4,
    "truncated": lambda checkpoint: checkpoint.read_bytes()[:-100],
}


@pytest.mark.parametrize("case", TAMPERED)
def test_an_invalid_checkpoint_is_set_aside_and_the_search_starts_over(killed_search, tmp_path, case):
    set_path, corpus, clean, checkpoint = killed_search
    results = tmp_path / "results.json"
    path = tmp_path / "results.json.search" / checkpoint.name
    path.parent.mkdir()
    bad = TAMPERED[case](checkpoint)
    path.write_bytes(bad)

    run = run_cli(set_path, corpus, results)
    assert run.exit_code == 0, run.output
    (record,) = experiment_records(results)
    assert figures(record) == figures(clean)  # searched from the start: the uninterrupted run's figures
    aside = path.with_name(path.name + ".invalid")
    assert aside.read_bytes() == bad and not path.exists()  # kept for a look, never resumed
    assert re.search(rf"search checkpoint \S*{re.escape(path.name)} .*; set aside as {re.escape(aside.name)}, "
                     r"the search starts over", run.stderr), run.stderr


def test_a_valid_checkpoint_of_a_killed_run_resumes(killed_search, tmp_path):
    set_path, corpus, clean, checkpoint = killed_search
    results = tmp_path / "results.json"
    path = tmp_path / "results.json.search" / checkpoint.name
    path.parent.mkdir()
    path.write_bytes(checkpoint.read_bytes())
    run = run_cli(set_path, corpus, results)
    assert run.exit_code == 0, run.output
    assert "resuming from its checkpoint" in run.stderr and "set aside" not in run.stderr
    (record,) = experiment_records(results)
    assert figures(record) == figures(clean)
    assert not list(path.parent.glob("*.checkpoint.npz*"))  # removed at the end, nothing set aside
