"""The architecture search in phases (ramsweep/optimize/phases.py, docs/design.md §5b), on a
fitness landscape made up for the test: what a phase searches, how it chooses, and that a killed
search resumes to the same end."""

import json

import numpy as np
import pytest

from ramsweep.config import Experiment
from ramsweep.errors import ConfigError
from ramsweep.optimize import phases

UNITS = 4
BEST_NEURONS, BEST_BITS = (120, 80, 200, 60), (14, 12, 18, 16)


def experiment(*phase_list, fitness="CE", candidates=2, **extra) -> Experiment:
    return Experiment(name="bw", architecture="bitwise", bitwise={"neurons": 100, "bits": 16},
                      optimize={"fitness": fitness, "candidates": candidates, "phases": list(phase_list), **extra})


def landscape(genome, shift=0):
    """(CE, accuracy): a bowl around BEST (moved by `shift` neurons: another split's optimum)."""
    neurons, bits = genome
    ce = 5.0 + sum(abs(n - b - shift) / 100 for n, b in zip(neurons, BEST_NEURONS)) + sum(
        abs(n - b) / 10 for n, b in zip(bits, BEST_BITS))
    return ce, 1.0 / ce


def search(exp, resume=None, fit=landscape, validate=lambda g: landscape(g, shift=0), saved=None):
    start = ((100,) * UNITS, (16,) * UNITS)
    state = phases.new_state(exp, start) if resume is None else phases.restore(resume, exp, start)
    keep = saved.append if saved is not None else (lambda s: None)
    ctx = phases.Context(exp, fit, validate, lambda s: keep(phases.encode(s)), lambda p: None)
    return phases.run(ctx, state)


def figures(state):
    """The record's part of a finished state (times left out)."""
    return [{k: v for k, v in p.items() if k != "seconds"} for p in state["phases"]]


def test_a_grid_gives_every_unit_each_pair_in_turn_and_chooses_on_validation():
    exp = experiment({"search": "grid", "neurons": [50, 100, 150], "bits": [14, 16]})
    state = search(exp)
    (grid,) = state["phases"]
    assert [(h["neurons"], h["bits"]) for h in grid["history"]] == [(n, b) for n in (50, 100, 150) for b in (14, 16)]
    assert grid["history"][0]["ce"] == landscape(((50,) * UNITS, (14,) * UNITS))[0]
    # the two best: (100, 14), then (100, 16), the start itself, compared once; on validation they
    # tie (CE 7.6 both), and a tie keeps the start
    assert [(s["label"], s["bits"][0]) for s in grid["selection"]] == [("start", 16), ("candidate 1", 14)]
    assert grid["chosen"] == {"neurons": [100] * UNITS, "bits": [16] * UNITS} and grid["chosen_label"] == "start"
    assert state["evaluations"] == 6


def test_the_choice_is_made_on_validation_not_on_the_fitness_slice():
    """Candidates come from the fitness slice; validation alone picks among them (and the start)."""
    exp = experiment({"search": "grid", "neurons": [50, 150], "bits": [16]}, candidates=2)
    prefers_small = lambda g: (sum(g[0]) / 100, 0.5)  # noqa: E731
    state = search(exp, fit=lambda g: (-sum(g[0]) / 100, 0.5), validate=prefers_small)
    chosen = state["phases"][0]
    assert chosen["chosen_label"] == "candidate 2" and chosen["chosen"]["neurons"] == [50] * UNITS


def test_size_phases_move_only_their_size_within_range_and_improve():
    exp = experiment({"search": "neurons", "strategy": "GA+TS", "population": 12, "generations": 8, "iterations": 4,
                      "range": [40, 220]},
                     {"search": "bits", "strategy": "TS", "iterations": 6, "range": [10, 20]})
    state = search(exp)
    neurons, bits = state["phases"]
    assert neurons["chosen"]["bits"] == [16] * UNITS and all(40 <= n <= 220 for n in neurons["chosen"]["neurons"])
    assert bits["start"] == neurons["chosen"] and bits["chosen"]["neurons"] == neurons["chosen"]["neurons"]
    assert all(10 <= b <= 20 for b in bits["chosen"]["bits"])
    start_ce = landscape(((100,) * UNITS, (16,) * UNITS))[0]
    end = bits["chosen"]
    assert landscape((tuple(end["neurons"]), tuple(end["bits"])))[0] < start_ce
    assert {h["stage"] for h in neurons["history"]} == {"ga", "ts"}
    assert all(h["best_ce"] <= h["mean_ce"] for h in neurons["history"])


def test_progress_names_the_phase_its_stage_and_an_eta_then_done():
    exp = experiment({"search": "grid", "neurons": [60, 100], "bits": [14, 16]},
                     {"search": "neurons", "strategy": "GA+TS", "population": 6, "generations": 3, "iterations": 2})
    seen = []
    start = ((100,) * UNITS, (16,) * UNITS)
    phases.run(phases.Context(exp, landscape, landscape, lambda s: None, seen.append), phases.new_state(exp, start))
    assert [(p["unit"], p["stage"]) for p in seen[:4]] == [(1, "grid")] * 4
    assert {p["stage"] for p in seen if p["unit"] == 2} == {"ga", "ts"}
    running = [p for p in seen if not p["done"]]
    assert all(p["eta_s"] is not None and p["eta_s"] >= 0 for p in running[1:])
    # the ETA counts what is left at most: the grid's second pair knows of the GA and TS to come
    assert running[1]["eta_s"] * running[1]["evaluations_per_s"] == pytest.approx(2 + 4 * 6 + 2 * 30)
    assert seen[-1]["done"] and seen[-1]["unit"] == 2 and seen[-1]["eta_s"] is None


def test_harmonic_ranks_ce_and_accuracy_together():
    scored = phases.Scored({((1,), (1,)): (2.0, 0.1), ((2,), (1,)): (3.0, 0.3), ((3,), (1,)): (4.0, 0.2)})
    genomes = list(scored.values)
    losses = scored.losses(genomes, "harmonic")
    # ranks (CE, accuracy): (1, 3), (2, 1), (3, 2): harmonic 1.5, 1.33, 2.4
    assert np.argsort(losses).tolist() == [1, 0, 2]
    assert scored.losses(genomes, "accuracy") == [-0.1, -0.3, -0.2]


@pytest.mark.parametrize("at", ["first", "middle", "last"])
def test_a_killed_search_resumes_to_the_same_record(at):
    exp = experiment({"search": "grid", "neurons": [60, 100], "bits": [14, 16]},
                     {"search": "neurons", "strategy": "GA+TS", "population": 6, "generations": 3, "iterations": 3},
                     {"search": "bits", "strategy": "GA", "population": 6, "generations": 3})
    saved = []
    whole = search(exp, saved=saved)
    index = {"first": 0, "middle": len(saved) // 2, "last": len(saved) - 2}[at]
    resumed = search(exp, resume={"meta": saved[index]["meta"]})
    assert figures(resumed) == figures(whole) and resumed["evaluations"] == whole["evaluations"]


def test_a_checkpoint_of_another_experiment_or_broken_is_set_aside():
    exp = experiment({"search": "grid", "neurons": [60, 100], "bits": [14]})
    saved = []
    search(exp, saved=saved)
    other = experiment({"search": "grid", "neurons": [60, 200], "bits": [14]})
    why = []
    start = ((100,) * UNITS, (16,) * UNITS)
    assert phases.restore({"meta": saved[0]["meta"], "set_aside": why.append}, other, start) is None
    assert why == ["belongs to another experiment"]
    state = json.loads(saved[0]["meta"])
    state["start"][0][0] = -5
    assert phases.restore({"meta": json.dumps(state), "set_aside": why.append}, exp, start) is None
    assert why[-1] == "has a start of another shape"
    assert phases.restore({"meta": "{not json", "set_aside": why.append}, exp, start) is None


def test_the_time_cap_ends_the_search_with_what_it_found():
    exp = experiment({"search": "grid", "neurons": [60, 100, 140], "bits": [14, 16]},
                     {"search": "bits", "strategy": "TS"}, max_minutes=1e-9)
    state = search(exp)
    assert state["stopped"] == "time cap" and len(state["phases"]) == 1
    assert len(state["phases"][0]["history"]) == 1  # one grid pair, then the cap


@pytest.mark.parametrize("block,message", [
    ({"strategy": "GA"}, "a bitwise model is searched in phases"),
    ({"phases": [{"search": "connections"}, {"search": "bits"}]}, "a connections phase is the last one"),
    ({"phases": [{"search": "connections"}], "scope": "all"}, "scope: is a tiered model's"),
    ({"phases": [{"search": "grid", "neurons": [10]}]}, "a grid phase needs neurons and bits lists"),
    ({"phases": [{"search": "bits", "range": [12, 8]}]}, r"range: \[12, 8\] is not \[lo, hi\]"),
    ({"phases": [{"search": "neurons", "neurons": [10]}]}, "neurons and bits lists are a grid phase's"),
    ({"phases": [{"search": "neurons"}], "fitness": "SIMPLE"}, "SIMPLE scores a tiered model's clusters"),
    ({"fitness": "HARMONIC"}, "HARMONIC ranks the genomes of a phase; it needs phases"),
])
def test_bad_phases_are_one_line_errors(block, message):
    with pytest.raises(ConfigError, match=message) as err:
        Experiment(name="bw", architecture="bitwise", bitwise={"neurons": 100, "bits": 16}, optimize=block)
    assert "\n" not in str(err.value)


def test_old_optimize_blocks_keep_their_keys():
    """A block without phases dumps as before (no phases key), so its experiment's key is unchanged."""
    exp = Experiment(name="t", tiers="100,5,8;rest,3,6", optimize={"strategy": "GA", "generations": 3})
    assert "phases" not in exp.spec()["optimize"]


# ---------------------------------------------------------------- a bitwise model's search, end to end

def bitwise_searched(**fields):
    return Experiment(name="bw_phases", architecture="bitwise", context=3,
                      bitwise={"neurons": 6, "bits": 6, "sample_rate": 0.5, "cell_mode": "quad_weighted"},
                      optimize={"candidates": 2, **fields, "phases": [
                          {"search": "grid", "neurons": [4, 8], "bits": [5, 7]},
                          {"search": "neurons", "strategy": "GA+TS", "range": [2, 12], "population": 4,
                           "generations": 2, "iterations": 2, "neighbours": 3},
                          {"search": "bits", "strategy": "TS", "range": [4, 9], "iterations": 2, "neighbours": 3}]})


def test_a_bitwise_search_runs_its_phases_and_never_reads_test():
    import dataclasses

    from test_optimize import small_corpus

    from ramsweep.sweep.experiment import Task, run_experiment

    corpus = small_corpus()
    poisoned = dataclasses.replace(corpus, test=np.random.default_rng(9).integers(0, 60, 800, dtype=np.int32))
    clean, dirty = (run_experiment(Task(bitwise_searched(), "k", "s"), c) for c in (corpus, poisoned))
    assert clean.ok and dirty.ok, clean.error
    s = clean.search
    assert [p["search"] for p in s["phases"]] == ["grid", "neurons", "bits"]
    assert s["phases"][1]["start"] == s["phases"][0]["chosen"] and s["phases"][2]["start"] == s["phases"][1]["chosen"]
    assert s["sizes"]["chosen"] == s["phases"][2]["chosen"] and s["sizes"]["start"] == {"neurons": [6] * 6,
                                                                                          "bits": [6] * 6}
    assert s["evaluations"] > 4 and s["fitness_after"]["ce"] > 0
    assert dirty.metrics.test.ppl != clean.metrics.test.ppl  # the poison reached the test figures...
    keep = lambda r: {k: v for k, v in r.search.items() if k not in ("search_s", "before", "phases")}  # noqa: E731
    assert keep(dirty) == keep(clean) and figures_of(dirty) == figures_of(clean)  # ...and nothing else
    assert dirty.metrics.validation == clean.metrics.validation


def figures_of(record):
    return [{k: v for k, v in p.items() if k != "seconds"} for p in record.search["phases"]]


@pytest.mark.parametrize("phase", [0, 1, 2])
def test_a_bitwise_search_killed_in_any_phase_resumes_to_the_same_record(phase, tmp_path, monkeypatch):
    """Killed right after a checkpoint inside the first, the middle or the last phase."""
    import dataclasses

    from test_optimize import small_corpus

    from ramsweep.sweep.artifacts import Checkpoints
    from ramsweep.sweep.experiment import Task, run_experiment

    corpus, exp = small_corpus(), bitwise_searched()
    task = Task(exp, "key", "s", str(tmp_path / "results.json.search"))
    whole = run_experiment(dataclasses.replace(task, artifacts=str(tmp_path / "other")), corpus)
    real_save, seen = Checkpoints.save, []

    def killed_in_the_phase(self, saved):
        real_save(self, saved)
        state = json.loads(saved["meta"])
        if state["phase"] == phase and state["step"] is not None and state["step"]["count"] >= 1:
            seen.append(state["phase"])
            raise KeyboardInterrupt  # as abrupt as a kill, after the checkpoint was written

    monkeypatch.setattr(Checkpoints, "save", killed_in_the_phase)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(task, corpus)
    monkeypatch.setattr(Checkpoints, "save", real_save)
    assert seen == [phase]
    resumed = run_experiment(task, corpus)
    assert resumed.metrics == whole.metrics and figures_of(resumed) == figures_of(whole)
    assert resumed.search["evaluations"] == whole.search["evaluations"]
