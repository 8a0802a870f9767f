"""A bitwise model's connections phase (ramsweep/optimize/bitwise_connections.py, docs/design.md
§5b): rewired neurons scored incrementally equal a full retrain, and the phase through the sweep
(its choice on validation, the saved connectivity, test read once, kills and invalid checkpoints)."""

import dataclasses
import json

import numpy as np
import pytest

from ramsweep.config import Experiment, bits_per_token
from ramsweep.engine import bitwise
from ramsweep.engine.layout import DENSE, SPARSE
from ramsweep.optimize import search
from ramsweep.optimize.bitwise_connections import ConnectionScorer
from ramsweep.optimize.driver import split_for_fitness

V, CONTEXT, SEED = 60, 3, 11
NEURONS, BITS = [5, 6, 4, 7, 5, 6], [5, 7, 6, 8, 5, 6]


def corpus():
    from test_optimize import small_corpus

    return small_corpus()


def retrained(part, fit_tokens, conn, **kw):
    """The whole model retrained with `conn`, scored on the fitness slice: (model, Scores, CE, accuracy)."""
    model = bitwise.train(part, V, codes=np.arange(V), context=CONTEXT, neurons=NEURONS, bits=BITS, seed=SEED,
                          connectivity=conn, **kw)
    sc = bitwise.score(model, fit_tokens)
    return model, sc, float(bitwise.ce(model, sc).mean()), float(bitwise.correct(model, sc).mean())


def cells_of(cluster, cell_mode, neurons=None):
    """{(neuron, engine address): code} of a cluster's stored cells (neuron ids renamed by `neurons`)."""
    neuron, addr, code = bitwise.stored_cells(cluster, cell_mode)
    names = np.arange(cluster.neurons) if neurons is None else np.asarray(neurons)
    return {(int(names[n]), int(a)): int(c) for n, a, c in zip(neuron, addr, code)}


@pytest.mark.parametrize("memory", [DENSE, SPARSE])
@pytest.mark.parametrize("cell_mode", ["ternary", "quad_binary", "quad_weighted"])
def test_rewired_neurons_scored_incrementally_equal_a_full_retrain(memory, cell_mode):
    part, fit_tokens = split_for_fitness(corpus().train, 0.1, CONTEXT)
    kw = dict(sample_rate=0.5, cell_mode=cell_mode, empty_value=0.5 if cell_mode == "ternary" else 0.0, memory=memory)
    fitness = "ce" if memory == DENSE else "accuracy"
    scorer = ConnectionScorer(part, fit_tokens, V, codes=np.arange(V), context=CONTEXT, seed=SEED, neurons=NEURONS,
                              bits=BITS, fitness=fitness, **kw)
    assert scorer.storage == [memory] * 6
    drawn = [c.copy() for c in scorer.conn]
    _, sc, ce, acc = retrained(part, fit_tokens, drawn, **kw)
    start = scorer.current()
    assert (start.ce, start.accuracy) == (ce, acc) and np.array_equal(scorer.scores().p, sc.p)

    rng = np.random.default_rng(3)
    n_input = scorer.layout.n_input
    for i in (1, 3, 5):
        scorer.set_scope(np.array([i]))
        current = (scorer.conn[i].copy(),)
        cands = [search.mutate(current, rate, rng, n_input, at_least_one=True)[0] for rate in (0.05, 0.2, 0.6)]
        cands.append(search.crossover(cands[0], cands[2], 2))
        values = scorer.evaluate([[(i, np.arange(NEURONS[i]), c[0])] for c in cands])
        for cand, value in zip(cands, values):
            conn = [c.copy() for c in scorer.conn]
            conn[i] = cand[0]
            model, sc, ce, acc = retrained(part, fit_tokens, conn, **kw)
            if fitness == "ce":  # a candidate's value carries its loss's figure alone
                assert abs(value.ce - ce) <= 1e-9 and value.loss == value.ce and np.isnan(value.accuracy)
            else:
                assert value.accuracy == acc and value.loss == -acc and np.isnan(value.ce)
        # commit the last: the scorer's P, lookups and CE are a retrain's, and the rewired neurons'
        # cells (trained alone, with their own sampling streams) are the retrained cluster's
        rewired = np.flatnonzero((cands[-1][0] != scorer.conn[i]).any(axis=1))
        assert rewired.size > 0
        committed = scorer.commit([(i, np.arange(NEURONS[i]), cands[-1][0])])
        assert committed.loss == values[-1].loss and abs(committed.ce - ce) <= 1e-9 and committed.accuracy == acc
        mine = scorer.scores()
        assert np.array_equal(mine.p, sc.p) and np.array_equal(mine.empty, sc.empty)
        assert np.allclose(bitwise.ce(model, mine), bitwise.ce(model, sc), rtol=0, atol=1e-12)
        alone = bitwise.train_rows(scorer.data, scorer.inputs, i, scorer.conn[i][rewired],
                                   bitwise.sample_states_of(scorer.data.seed, i, rewired.astype(np.int64)), cell_mode,
                                   memory)
        whole = {k: v for k, v in cells_of(model.clusters[i], cell_mode).items() if k[0] in set(rewired.tolist())}
        assert cells_of(alone, cell_mode, rewired) == whole and whole
    assert scorer.stats["rows_trained"] > 0 and scorer.evaluations == 12


def test_a_re_evaluated_row_is_not_retrained_and_the_drawn_wiring_costs_nothing():
    part, fit_tokens = split_for_fitness(corpus().train, 0.1, CONTEXT)
    scorer = ConnectionScorer(part, fit_tokens, V, codes=np.arange(V), context=CONTEXT, seed=SEED, neurons=NEURONS,
                              bits=BITS, sample_rate=0.5, cell_mode="quad_weighted")
    scorer.set_scope(np.array([2]))
    cand = search.mutate((scorer.conn[2].copy(),), 0.3, np.random.default_rng(0), scorer.layout.n_input)[0][0]
    first = scorer.evaluate([[(2, np.arange(4), cand)]])
    trained = scorer.stats["rows_trained"]
    assert trained == len(np.flatnonzero((cand != scorer.conn[2]).any(axis=1)))
    again = scorer.evaluate([[(2, np.arange(4), cand)], [(2, np.arange(4), scorer.conn[2].copy())]])
    assert [v.loss for v in again] == [first[0].loss, scorer.current().loss]
    assert scorer.stats["rows_trained"] == trained  # cached, and the current wiring is no change
    # a neuron's connections in another order read the same codes: no change either
    assert scorer.evaluate([[(2, np.arange(4), scorer.conn[2][:, ::-1].copy())]])[0].loss == scorer.current().loss


def test_train_takes_an_explicit_connectivity_and_checks_it():
    tokens = corpus().train[:2000]
    kw = dict(codes=np.arange(V), context=CONTEXT, neurons=NEURONS, bits=BITS, seed=SEED, cell_mode="quad_weighted")
    drawn = bitwise.train(tokens, V, **kw)
    assert all(np.array_equal(a, c.conn) for a, c in zip(bitwise.drawn_connectivity(drawn), drawn.clusters))
    conn = [c.conn.copy() for c in drawn.clusters]
    same = bitwise.train(tokens, V, **kw, connectivity=conn)
    assert all(cells_of(a, "quad_weighted") == cells_of(b, "quad_weighted") for a, b in zip(same.clusters, drawn.clusters))
    conn[1][0] = conn[1][0][::-1]  # the same set in another order: the same codes, other cells' addresses
    conn[2][3, 0] = next(p for p in range(CONTEXT * 6) if p not in conn[2][3])
    rewired = bitwise.train(tokens, V, **kw, connectivity=conn)
    assert np.array_equal(rewired.clusters[2].conn, conn[2]) and rewired.seed == SEED
    assert cells_of(rewired.clusters[0], "quad_weighted") == cells_of(drawn.clusters[0], "quad_weighted")
    sc, sd = bitwise.score(rewired, tokens), bitwise.score(drawn, tokens)
    assert np.array_equal(sc.p[:, 1], sd.p[:, 1]) and not np.array_equal(sc.p[:, 2], sd.p[:, 2])
    for bad in ({2: lambda c: c.__setitem__((0, 1), c[0, 0])}, {2: lambda c: c.__setitem__((0, 0), CONTEXT * 6)}):
        broken = [c.copy() for c in conn]
        bad[2](broken[2])
        with pytest.raises(ValueError, match="connectivity of bit cluster 2"):
            bitwise.train(tokens, V, **kw, connectivity=broken)
    with pytest.raises(ValueError, match="connectivity of bit cluster 0"):
        bitwise.train(tokens, V, **kw, connectivity=[c[:-1] for c in conn])


# ---------------------------------------------------------------- through the sweep

CONNECTIONS = {"search": "connections", "strategy": "GA+TS", "population": 4, "generations": 2, "iterations": 2,
               "neighbours": 3, "mutation": 0.05, "ts_mutation": 0.02}


def searched(**fields):
    return Experiment(name="bw_connections", architecture="bitwise", context=CONTEXT,
                      bitwise={"neurons": 6, "bits": 6, "sample_rate": 0.5, "cell_mode": "quad_weighted"},
                      optimize={"candidates": 2, **fields, "phases": [
                          {"search": "grid", "neurons": [4, 8], "bits": [5, 7]},
                          {"search": "neurons", "strategy": "GA", "range": [2, 12], "population": 4,
                           "generations": 2},
                          CONNECTIONS]})


def figures_of(record):
    """The record's phases without their times (the connections phase's nested summary's too)."""
    def timeless(value):
        if isinstance(value, dict):
            return {k: timeless(v) for k, v in value.items() if k not in ("seconds", "search_s", "elapsed_s")}
        return [timeless(v) for v in value] if isinstance(value, list) else value
    return timeless(record.search["phases"])


def test_a_connections_phase_searches_the_chosen_sizes_and_its_choice_is_the_model(tmp_path):
    from ramsweep.engine.bitwise_output import ARCHITECTURE as face
    from ramsweep.engine.connectivity import draw_bit_connectivity
    from ramsweep.sweep.artifacts import load_connectivity
    from ramsweep.sweep.experiment import Task, run_experiment

    data, exp = corpus(), searched()
    poisoned = dataclasses.replace(data, test=np.random.default_rng(9).integers(0, V, 800, dtype=np.int32))
    clean, dirty = (run_experiment(Task(exp, "k", "s", str(tmp_path / name)), c)
                    for name, c in (("clean.search", data), ("dirty.search", poisoned)))
    assert clean.ok and dirty.ok, clean.error
    s = clean.search
    assert [p["search"] for p in s["phases"]] == ["grid", "neurons", "connections"]
    last, sized = s["phases"][2], s["phases"][1]["chosen"]
    assert last["start"] == last["chosen"] == sized == s["sizes"]["chosen"]
    found = last["connections"]
    assert found["units"] == 6 and found["evaluations"] == last["evaluations"] > 6 * 4
    assert [h["unit"] for h in found["history"]][::5] == list(range(6))  # GA 0..2 then TS 1..2, a cluster each
    assert last["chosen_label"] == found["chosen"] == "final" and s["chosen"] == "phases" and s["improved"]
    assert [c["label"] for c in found["selection"]] == ["start", "final"]
    assert found["fitness_after"]["ce"] < found["fitness_before"]["ce"]
    assert s["fitness_after"] == {k: found["fitness_after"][k] for k in ("value", "ce", "accuracy")}
    # §5's search starts from the chosen sizes' drawn wiring: the fitness the size phases gave them
    part, fit_tokens = split_for_fitness(data.train, 0.1, CONTEXT)
    sizes = (sized["neurons"], sized["bits"])
    scorer = ConnectionScorer(part, fit_tokens, V, codes=np.arange(V), context=CONTEXT, seed=exp.seed, neurons=sizes[0],
                              bits=sizes[1], sample_rate=0.5, cell_mode="quad_weighted")
    assert found["fitness_before"]["ce"] == scorer.current().ce
    # the record's connectivity is the chosen model's: retrained with it, the same validation figures
    n_input = CONTEXT * 6
    drawn = [draw_bit_connectivity(exp.seed, i, n, b, n_input) for i, (n, b) in enumerate(zip(*sizes))]
    conn = load_connectivity(tmp_path / s["connectivity"]["file"], drawn)
    assert sum(int((c != d).any(axis=1).sum()) for c, d in zip(conn, drawn)) > 0
    model = face.train(exp, data, "cpu", lambda f: None, sizes, connectivity=conn)
    validation, _, _ = face.figures(model, data, "cpu")
    assert validation["ce"] == clean.metrics.validation.ce == found["selection"][1]["validation_ce"]
    assert validation["accuracy"] == clean.metrics.validation.accuracy
    assert [b["ce"] for b in validation["bits"]] == [b.ce for b in clean.metrics.validation.bits]
    # the poisoned test split changes the test figures and nothing else
    assert dirty.metrics.test.ppl != clean.metrics.test.ppl
    keep = lambda r: {k: v for k, v in r.search.items() if k not in ("search_s", "before", "phases", "connectivity")}  # noqa: E731
    assert keep(dirty) == keep(clean) and figures_of(dirty) == figures_of(clean)
    assert dirty.metrics.validation == clean.metrics.validation
    assert dirty.search["connectivity"]["sha256"] == clean.search["connectivity"]["sha256"]


def killed_in_connections(task, data, monkeypatch, after: int):
    """Run `task` until the connections search's checkpoint after `after` evaluations, then kill it."""
    from ramsweep.sweep.artifacts import Checkpoints
    from ramsweep.sweep.experiment import run_experiment

    real_save, seen = Checkpoints.save, []

    def killed(self, saved):
        real_save(self, saved)
        meta = json.loads(saved["meta"])
        if "connections" in meta and json.loads(meta["connections"])["state"]["evaluations"] >= after:
            seen.append(json.loads(meta["connections"])["state"]["unit"])
            raise KeyboardInterrupt  # as abrupt as a kill, after the checkpoint was written

    monkeypatch.setattr(Checkpoints, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(task, data)
    monkeypatch.setattr(Checkpoints, "save", real_save)
    return seen


@pytest.mark.parametrize("after", [2, 40])
def test_killed_inside_the_connections_phase_it_resumes_to_the_same_record(after, tmp_path, monkeypatch):
    from ramsweep.sweep.experiment import Task, run_experiment

    data = corpus()
    task = Task(searched(), "key", "s", str(tmp_path / "results.json.search"))
    whole = run_experiment(dataclasses.replace(task, artifacts=str(tmp_path / "other")), data)
    seen = killed_in_connections(task, data, monkeypatch, after)
    assert len(seen) == 1 and (seen[0] > 0) == (after > 20)  # in the first unit, or a later one
    resumed = run_experiment(task, data)
    assert resumed.ok, resumed.error
    assert resumed.metrics == whole.metrics and figures_of(resumed) == figures_of(whole)
    assert resumed.search["evaluations"] == whole.search["evaluations"]
    assert resumed.search["connectivity"]["sha256"] == whole.search["connectivity"]["sha256"]
    folder = tmp_path / "results.json.search"
    assert not (folder / "key.checkpoint.npz").exists() and not (folder / "key.checkpoint.npz.invalid").exists()


@pytest.mark.parametrize("poison", ["outside the input", "twice in a neuron", "another shape"])
def test_an_invalid_connections_checkpoint_is_set_aside_and_the_search_starts_over(poison, tmp_path, monkeypatch,
                                                                                   caplog):
    from ramsweep.sweep.artifacts import Checkpoints
    from ramsweep.sweep.experiment import Task, run_experiment

    data = corpus()
    task = Task(searched(), "key", "s", str(tmp_path / "results.json.search"))
    whole = run_experiment(dataclasses.replace(task, artifacts=str(tmp_path / "other")), data)
    killed_in_connections(task, data, monkeypatch, 30)
    files = Checkpoints(tmp_path / "results.json.search", "key")
    saved = files.load()
    arrays = dict(saved["arrays"])
    name = next(k for k, a in sorted(arrays.items()) if a.ndim == 2)  # a neuron's connections, as saved
    rows = arrays[name].copy()
    if poison == "outside the input":
        rows[0, 0] = CONTEXT * 6
    elif poison == "twice in a neuron":
        rows[0, 1] = rows[0, 0]
    else:
        rows = rows[:, :-1]
    arrays[name] = rows
    files.save({"meta": saved["meta"], "arrays": arrays})
    with caplog.at_level("WARNING", logger="ramsweep"):
        resumed = run_experiment(task, data)
    assert resumed.ok, resumed.error
    assert (tmp_path / "results.json.search" / "key.checkpoint.npz.invalid").exists()
    assert "is invalid" in caplog.text and "set aside" in caplog.text, caplog.text
    assert resumed.metrics == whole.metrics and figures_of(resumed) == figures_of(whole)
    assert resumed.search["evaluations"] == whole.search["evaluations"]


# ---------------------------------------------------------------- CUDA: a real GPU, or NUMBA_ENABLE_CUDASIM=1



@pytest.mark.parametrize("cell_mode", ["ternary", "quad_weighted"])
def test_on_cuda_the_drawn_codes_come_from_the_gpu_and_a_rewired_cluster_trains_on_the_cpu(cell_mode, cuda_kernels):
    """The size scorer's GPU-trained drawn codes start the scorer as its own CPU training does; a
    model with one cluster rewired trains the others on the GPU, that one on the CPU engine: the
    cells, P and CE of a CPU training (NUMBA_ENABLE_CUDASIM=1 runs it on the simulator)."""
    from ramsweep.optimize.bitwise_connections import drawn_codes_from
    from ramsweep.optimize.sizes import SizeScorer

    bitwise_cuda = cuda_kernels
    tokens = corpus().train[:300] % 13
    score_tokens = corpus().validation[:60] % 13
    kw = dict(codes=np.arange(13), context=2, seed=SEED, sample_rate=0.5, cell_mode=cell_mode)
    neurons, bits = [2, 3, 2, 3], [3, 5, 4, 4]
    sizes = SizeScorer(tokens, score_tokens, 13, max_neurons=3, gpu=bitwise_cuda, **kw)
    on_gpu = ConnectionScorer(tokens, score_tokens, 13, neurons=neurons, bits=bits, drawn_codes=drawn_codes_from(sizes),
                              **kw)
    here = ConnectionScorer(tokens, score_tokens, 13, neurons=neurons, bits=bits, **kw)
    assert on_gpu.current() == here.current() and sizes.stats["clusters_trained"] == 4
    cand = here.conn[1].copy()
    cand[0, 0] = next(p for p in range(8) if p not in cand[0])
    assert on_gpu.commit([(1, np.arange(3), cand)]) == here.commit([(1, np.arange(3), cand)])
    model = bitwise.train(tokens, 13, neurons=neurons, bits=bits, gpu=bitwise_cuda, connectivity=here.conn, **kw)
    cpu = bitwise.train(tokens, 13, neurons=neurons, bits=bits, connectivity=here.conn, **kw)
    assert model.device == "cuda" and [t is None for t in model.gpu] == [False, True, False, False]
    assert all(cells_of(a, cell_mode) == cells_of(b, cell_mode) for a, b in zip(model.clusters, cpu.clusters))
    sc = bitwise.score(model, score_tokens, bitwise_cuda)
    assert np.array_equal(sc.p, here.scores().p) and float(bitwise.ce(model, sc).mean()) == here.current().ce


@pytest.mark.parametrize("cell_mode,memory", [("ternary", SPARSE), ("quad_weighted", DENSE), ("quad_binary", SPARSE)])
def test_on_cuda_a_scorer_trains_its_rows_on_the_gpu_with_the_same_fitness(cell_mode, memory, cuda_kernels,
                                                                           monkeypatch):
    """Given gpu, the rewired rows train and are read on the GPU (a cluster's new rows in one call,
    and the drawn codes by default), DENSE even for SPARSE clusters (only their codes are read):
    the same fitness values, commits and scores as on the CPU."""
    calls, kinds = [], set()
    real = cuda_kernels.train_rows
    monkeypatch.setattr(cuda_kernels, "train_rows", lambda *a: calls.append(a[3].shape[0]) or kinds.add(a[6]) or
                        real(*a))
    tokens, score_tokens = corpus().train[:240] % 13, corpus().validation[:50] % 13
    kw = dict(codes=np.arange(13), context=2, seed=SEED, sample_rate=0.5, cell_mode=cell_mode, memory=memory,
              neurons=[2, 3, 2, 3], bits=[3, 5, 4, 4], empty_value=0.5 if cell_mode == "ternary" else 0.0)
    on_gpu = ConnectionScorer(tokens, score_tokens, 13, gpu=cuda_kernels, **kw)
    here = ConnectionScorer(tokens, score_tokens, 13, **kw)
    assert on_gpu.storage == [memory] * 4 and calls == [2, 3, 2, 3] and kinds == {DENSE}  # the drawn codes there
    assert on_gpu.current() == here.current()
    rng = np.random.default_rng(5)
    for scorer in (on_gpu, here):
        scorer.set_scope(np.array([1]))
    cands = [search.mutate((here.conn[1].copy(),), rate, rng, here.layout.n_input, at_least_one=True)[0][0]
             for rate in (0.2, 0.5)]
    changes = [[(1, np.arange(3), c)] for c in cands]
    del calls[:]
    assert [v.loss for v in on_gpu.evaluate(changes)] == [v.loss for v in here.evaluate(changes)]
    assert len(calls) == 1 and calls[0] == on_gpu.stats["rows_trained"] == here.stats["rows_trained"] > 0
    assert on_gpu.commit(changes[1]) == here.commit(changes[1])
    mine, theirs = on_gpu.scores(), here.scores()
    assert np.array_equal(mine.p, theirs.p) and np.array_equal(mine.empty, theirs.empty)


def test_on_cuda_a_search_in_phases_ends_with_the_cpu_record(cuda_kernels, monkeypatch):
    """[grid, connections] through run_experiment on device cuda (its rows trained on the GPU) and on
    cpu: the same phases, choice, connectivity and metrics."""
    from ramsweep.data import Corpus
    from ramsweep.sweep.experiment import Task, run_experiment

    calls = []
    real = cuda_kernels.train_rows
    monkeypatch.setattr(cuda_kernels, "train_rows", lambda *a: calls.append(a[3].shape[0]) or real(*a))

    vocab = 13
    splits = {"train": corpus().train[:400] % vocab, "validation": corpus().validation[:60] % vocab,
              "test": corpus().test[:60] % vocab}
    data = Corpus(name="text", tokenizer="word", vocab=tuple(f"w{i}" for i in range(vocab)), full_data=True,
                  fingerprint="synthetic-bwc", variant="synthetic", path=None, source_sha256="0" * 64,
                  tokenizer_files={}, token_bytes={s: np.full(a.size, 3, np.int32) for s, a in splits.items()}, **splits)
    records = {}
    for device in ("cpu", "cuda"):
        exp = Experiment(name="bw_cuda", architecture="bitwise", context=2, device=device,
                         bitwise={"neurons": 2, "bits": 4, "sample_rate": 0.5, "cell_mode": "quad_weighted"},
                         optimize={"candidates": 1, "phases": [
                             {"search": "grid", "neurons": [2, 3], "bits": [4]},
                             {"search": "connections", "strategy": "GA", "population": 2, "generations": 1,
                              "mutation": 0.3, "elitism": 1, "tournament": 1}]})
        records[device] = run_experiment(Task(exp, "k", "s"), data)
        assert records[device].ok, records[device].error
        assert bool(calls) == (device == "cuda")  # the connections phase's rows, on the GPU
    cpu, gpu = records["cpu"], records["cuda"]
    assert figures_of(gpu) == figures_of(cpu) and gpu.metrics == cpu.metrics
    assert gpu.search["phases"][1]["connections"]["evaluations"] > 0
    assert gpu.search.get("connectivity") == cpu.search.get("connectivity")


@pytest.mark.parametrize("vocab, gray", [(50257, False), (1000, True), (1024, False), (5, False)])
def test_the_focus_split_gives_the_closed_forms_log_z_and_target_score_for_any_focus_column(vocab, gray):
    n_bits, n = bits_per_token(vocab), 300
    star, branch = bitwise.branch_bits(vocab, n_bits, gray)
    rng = np.random.default_rng(vocab)
    p = np.clip(rng.random((n, n_bits)) ** 3, bitwise.P_MIN, 1 - bitwise.P_MIN)
    log_p, log_q = np.log(p), np.log1p(-p)
    targets = rng.integers(0, vocab, n).astype(np.int64)
    log_z = np.empty(n)
    bitwise.closed_forms(log_p, log_q, star, branch, 1.0, bitwise.LOG_Z, log_z, log_z)
    target = bitwise.target_scores(log_p, log_q, targets)
    for f in range(n_bits):
        a0, a1, rest = np.empty(n), np.empty(n), np.empty(n)
        bitwise.split_log_z(log_p, log_q, star, branch, f, a0, a1, rest, targets)
        assert np.allclose(np.logaddexp(log_q[:, f] + a0, log_p[:, f] + a1), log_z, rtol=0, atol=1e-12)
        bit = (targets >> (n_bits - 1 - f)) & 1
        assert np.allclose(rest + np.where(bit, log_p[:, f], log_q[:, f]), target, rtol=0, atol=1e-12)
