"""A tiered model's search in phases (docs/design.md §5b, units = tiers): a size genome scored from
cached per-tier states equals a retrain (optimize/tiered_sizes.py), and the phases run through
the sweep (engine/tiered.py), never read test, and resume from a kill to the same record."""

import dataclasses
import json

import numpy as np
import pytest
from test_optimize import small_corpus

from ramsweep.config import Experiment
from ramsweep.engine.evaluate import ce_at, metrics, score
from ramsweep.engine.layout import build_layout
from ramsweep.engine.train import train
from ramsweep.errors import ConfigError
from ramsweep.optimize.driver import split_for_fitness
from ramsweep.optimize.tiered_sizes import TieredSizeScorer, sizes_of, with_sizes
from ramsweep.sweep.artifacts import Checkpoints
from ramsweep.sweep.experiment import Task, run_experiment

TIERS = "6,3,8;12,2,6;rest,2,5"


def retrained(exp, part, fit_tokens, whole, vocab_size, neurons, bits):
    """(CE, accuracy, memory kinds) of the experiment with these sizes, trained and scored whole."""
    sized = with_sizes(exp, neurons, bits)
    model = train(sized, part, vocab_size, layout=build_layout(sized, whole, vocab_size))
    scores = score(model, fit_tokens)
    assert np.allclose(ce_at(scores, 1.0), scores.ce, rtol=0, atol=1e-12)
    return float(ce_at(scores, 1.0).mean()), metrics(scores)["accuracy"], {t.storage for t in model.layout.tiers}


@pytest.mark.parametrize("empty_value", [0.0, 0.5])
def test_a_size_change_scored_from_cached_tiers_equals_a_retrain(empty_value):
    corpus = small_corpus()
    # memory: bits, so tiers of more than 7 bits are SPARSE and the rest DENSE
    exp = Experiment(name="t", tiers=TIERS, context=3, negatives=10, empty_value=empty_value, memory="bits",
                     dense_max_bits=7)
    part, fit_tokens = split_for_fitness(corpus.train, 0.1, exp.context)
    scorer = TieredSizeScorer(exp, part, fit_tokens, corpus.vocab_size, order_tokens=corpus.train)
    genomes = [sizes_of(exp),
               ((3, 2, 2), (8, 6, 9)),  # one tier changed: it alone is trained
               ((3, 5, 2), (8, 6, 9)),  # and again
               ((1, 4, 7), (12, 3, 1)),  # every tier
               ((3, 2, 2), (8, 6, 5)),  # the start again: nothing trained
               ((4, 4, 4), (6, 6, 6))]  # one pair for all, as a grid gives
    kinds = set()
    for i, genome in enumerate(genomes):
        trained = scorer.stats["tiers_trained"]
        ce, accuracy = scorer.fitness(*genome)
        want_ce, want_accuracy, storage = retrained(exp, part, fit_tokens, corpus.train, corpus.vocab_size, *genome)
        kinds |= storage
        assert abs(ce - want_ce) < 1e-9 and accuracy == want_accuracy, genome
        if i in (1, 2):
            assert scorer.stats["tiers_trained"] == trained + 1
        if i == 4:
            assert scorer.stats["tiers_trained"] == trained
    assert kinds == {"dense", "sparse"}


def test_an_evicted_tier_is_trained_again_to_the_same_figures():
    corpus = small_corpus(seed=1)
    exp = Experiment(name="t", tiers=TIERS, context=3, negatives=10)
    part, fit_tokens = split_for_fitness(corpus.train, 0.1, exp.context)
    roomy = TieredSizeScorer(exp, part, fit_tokens, corpus.vocab_size, order_tokens=corpus.train)
    tight = TieredSizeScorer(exp, part, fit_tokens, corpus.vocab_size, order_tokens=corpus.train, cache_bytes=1)
    genomes = [((3, 2, 2), (8, 6, 5)), ((3, 2, 3), (8, 6, 5)), ((3, 2, 2), (8, 6, 5))]
    assert [tight.fitness(*g) for g in genomes] == [roomy.fitness(*g) for g in genomes]
    assert roomy.stats["tiers_trained"] == 4 and tight.stats["tiers_trained"] == 9
    with pytest.raises(ValueError, match="bits 1..18"):
        roomy.fitness((3, 2, 2), (8, 6, 19))


def test_a_tier_folded_in_parts_or_with_its_never_written_clusters_looked_up_scores_the_same(monkeypatch):
    from ramsweep.engine import evaluate
    from ramsweep.optimize import tiered_sizes

    corpus = small_corpus(seed=2, vocab=300)  # a zipf sample of 6,000 leaves rare tokens unseen
    exp = Experiment(name="t", tiers=TIERS, context=3, negatives=10, empty_value=0.25)
    part, fit_tokens = split_for_fitness(corpus.train, 0.1, exp.context)
    genome = ((3, 4, 2), (8, 6, 7))
    want = TieredSizeScorer(exp, part, fit_tokens, corpus.vocab_size, order_tokens=corpus.train).per_example(*genome)
    monkeypatch.setattr(tiered_sizes, "HIST_BYTES", 4096)  # a few examples a part
    monkeypatch.setattr(evaluate, "SKIP_NEVER_WRITTEN", False)
    got = TieredSizeScorer(exp, part, fit_tokens, corpus.vocab_size, order_tokens=corpus.train).per_example(*genome)
    assert np.allclose(got[0], want[0], rtol=0, atol=1e-12) and np.array_equal(got[1], want[1])
    layout = build_layout(exp, corpus.train, corpus.vocab_size)
    assert evaluate.looked_up(layout.tiers[2], layout) < 300 - 18  # the rest tier has clusters never written


def test_tiered_phases_are_checked_in_one_line():
    ok = Experiment(name="t", tiers=TIERS, optimize={"phases": [{"search": "neurons", "range": [1, 9]},
                                                                {"search": "connections"}]})
    assert ok.spec()["optimize"]["phases"][1]["search"] == "connections"
    conn = ok.optimize.connections(1)
    assert conn.phases is None and conn.strategy == "ga+ts" and conn.seed == 1 and conn.mutation == 0.01
    bad = [({"phases": [{"search": "connections"}, {"search": "neurons"}]}, {}, "a connections phase is the last one"),
           ({"fitness": "HARMONIC", "phases": [{"search": "connections"}]}, {}, "HARMONIC ranks the genomes of a size"),
           ({"phases": [{"search": "connections", "population": 4}], "budgets": {0: {"elitism": 9}}}, {},
            "phase 0 \\(connections\\): budgets: tier 0: elitism: 9 is above the population 4"),
           ({"phases": [{"search": "bits", "range": [10, 34]}]}, {}, "reaches 34 bits, above sparse_max_bits 30"),
           ({"phases": [{"search": "neurons"}]}, {"gating": {"neurons": 3, "bits": 6}}, "does not support gates")]
    for block, extra, message in bad:
        with pytest.raises(ConfigError, match=message) as err:
            Experiment(name="t", tiers=TIERS, optimize=block, **extra)
        assert "\n" not in str(err.value)
    wide = Experiment(name="t", tiers=TIERS, context=3, optimize={"phases": [{"search": "bits", "range": [4, 24]}]})
    with pytest.raises(ConfigError, match="reaches 24 bits but the input is only 18 bits wide"):
        wide.check_against_data(60)


# ---------------------------------------------------------------- through the sweep

SUMMARY_KEYS = {"strategy", "fitness", "units", "improved", "evaluations", "search_s", "stopped", "chosen", "examples",
                "fitness_before", "fitness_after", "sizes", "phases", "before", "connectivity"}
CONNECTIONS = {"search": "connections", "strategy": "GA+TS", "population": 4, "generations": 2, "iterations": 2,
               "neighbours": 3, "mutation": 0.05, "ts_mutation": 0.02}


def tiered_searched(*extra_phases, **fields):
    return Experiment(name="tiered_phases", tiers=TIERS, context=3, negatives=10,
                      optimize={"candidates": 2, **fields, "phases": [
                          {"search": "grid", "neurons": [2, 4], "bits": [6, 9]},
                          {"search": "neurons", "strategy": "GA", "range": [1, 8], "population": 4,
                           "generations": 2},
                          {"search": "bits", "strategy": "TS", "range": [4, 14], "iterations": 2, "neighbours": 3},
                          *extra_phases]})


def figures_of(record):
    """The record's phases without their times (a connections phase's nested summary's too)."""
    def timeless(value):
        if isinstance(value, dict):
            return {k: timeless(v) for k, v in value.items() if k not in ("seconds", "search_s", "elapsed_s")}
        return [timeless(v) for v in value] if isinstance(value, list) else value
    return timeless(record.search["phases"])


def test_a_tiered_search_runs_its_phases_and_never_reads_test():
    corpus = small_corpus()
    poisoned = dataclasses.replace(corpus, test=np.random.default_rng(9).integers(0, 60, 800, dtype=np.int32))
    clean, dirty = (run_experiment(Task(tiered_searched(), "k", "s"), c) for c in (corpus, poisoned))
    assert clean.ok and dirty.ok, clean.error
    s = clean.search
    assert set(s) == SUMMARY_KEYS and s["strategy"] == "phases" and s["units"] == 3
    assert [p["search"] for p in s["phases"]] == ["grid", "neurons", "bits"]
    assert s["phases"][1]["start"] == s["phases"][0]["chosen"] and s["phases"][2]["start"] == s["phases"][1]["chosen"]
    assert s["sizes"] == {"start": {"neurons": [3, 2, 2], "bits": [8, 6, 5]}, "chosen": s["phases"][2]["chosen"]}
    assert s["evaluations"] > 4 and s["fitness_after"]["ce"] <= s["fitness_before"]["ce"]
    assert s["improved"] == (s["chosen"] == "phases") and set(s["fitness_after"]) == {"value", "ce", "accuracy"}
    # the chosen sizes are the model's: its tiers in the per-tier metrics
    chosen = s["sizes"]["chosen"]
    assert [(t.neurons, t.bits) for t in clean.metrics.validation.tiers] == list(zip(chosen["neurons"],
                                                                                         chosen["bits"]))
    assert dirty.metrics.test.ppl != clean.metrics.test.ppl  # the poison reached the test figures...
    keep = lambda r: {k: v for k, v in r.search.items() if k not in ("search_s", "before", "phases")}  # noqa: E731
    assert keep(dirty) == keep(clean) and figures_of(dirty) == figures_of(clean)  # ...and nothing else
    assert dirty.metrics.validation == clean.metrics.validation


def killed_and_resumed(exp, where, tmp_path, monkeypatch):
    """(uninterrupted record, resumed record) of a search killed right after the first checkpoint
    `where(state)` picks."""
    corpus = small_corpus()
    task = Task(exp, "key", "s", str(tmp_path / "results.json.search"))
    whole = run_experiment(dataclasses.replace(task, artifacts=str(tmp_path / "other")), corpus)
    real_save, seen = Checkpoints.save, []

    def killed(self, saved):
        real_save(self, saved)
        if where(json.loads(saved["meta"])):
            seen.append(True)
            raise KeyboardInterrupt  # as abrupt as a kill, after the checkpoint was written

    monkeypatch.setattr(Checkpoints, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(task, corpus)
    monkeypatch.setattr(Checkpoints, "save", real_save)
    assert seen == [True]
    resumed = run_experiment(task, corpus)
    assert not list(tmp_path.rglob("*.invalid"))  # resumed from the checkpoint, not started over
    return whole, resumed


def test_a_tiered_search_killed_in_a_middle_phase_resumes_to_the_same_record(tmp_path, monkeypatch):
    in_the_middle = lambda s: s.get("phase") == 1 and s["step"] is not None and s["step"]["count"] >= 1  # noqa: E731
    whole, resumed = killed_and_resumed(tiered_searched(), in_the_middle, tmp_path, monkeypatch)
    assert whole.ok and resumed.ok, resumed.error
    assert resumed.metrics == whole.metrics and figures_of(resumed) == figures_of(whole)
    assert resumed.search["evaluations"] == whole.search["evaluations"]


def test_a_last_connections_phase_searches_the_chosen_sizes_and_resumes(tmp_path, monkeypatch):
    in_connections = lambda s: "connections" in s and json.loads(s["connections"])["state"]["evaluations"] > 8  # noqa: E731
    whole, resumed = killed_and_resumed(tiered_searched(CONNECTIONS), in_connections, tmp_path, monkeypatch)
    assert whole.ok and resumed.ok, resumed.error
    s = whole.search
    assert set(s) == SUMMARY_KEYS and [p["search"] for p in s["phases"]] == ["grid", "neurons", "bits", "connections"]
    last, sized = s["phases"][3], s["phases"][2]["chosen"]
    assert last["start"] == last["chosen"] == sized == s["sizes"]["chosen"]
    found = last["connections"]
    assert found["strategy"] == "ga+ts" and found["evaluations"] == last["evaluations"] > 0
    # §5's search starts from the sizes' drawn wiring: the fitness the size phases gave them
    sizes_fitness = TieredSizeScorer(tiered_searched(), *split_for_fitness(small_corpus().train, 0.1, 3), 60,
                                     order_tokens=small_corpus().train).fitness(sized["neurons"], sized["bits"])
    assert abs(found["fitness_before"]["ce"] - sizes_fitness[0]) < 1e-9
    assert found["fitness_before"]["accuracy"] == sizes_fitness[1]
    assert s["fitness_after"] == {k: found["fitness_after"][k] for k in ("value", "ce", "accuracy")}
    assert resumed.metrics == whole.metrics and figures_of(resumed) == figures_of(whole)
    assert resumed.search["evaluations"] == whole.search["evaluations"]
