"""The fast fitness of a bitwise size genome (ramsweep/optimize/sizes.py) against a full retrain:
SizeScorer trains each (cluster, bits) once at max_neurons and sums any first n neurons' codes
(docs/design.md §5b "Incremental"); its Scores must be bitwise.score(bitwise.train(...)) array for
array, and its CE bitwise.ce's, for every cell mode, at sample rates 1 and 0.25, DENSE and SPARSE.

The CUDA tests run on a real GPU, or under numba-cuda's simulator (kernels' blocks shrunk):
NUMBA_ENABLE_CUDASIM=1 pytest tests/test_sizes.py -k cuda. The WGSL tests run where wgpu finds an
adapter (lavapipe here): clusters train there and are read by the CPU engine.
"""

import math

import numpy as np
import pytest
from conftest import SIMULATED
from test_bitwise import corpus  # a learnable successor, and noise

from ramsweep.engine import bitwise
from ramsweep.engine import bitwise_reference as bw
from ramsweep.engine.layout import DENSE, SPARSE
from ramsweep.optimize.sizes import SizeScorer


def same_scores(a: bitwise.Scores, b: bitwise.Scores) -> None:
    """Every array of two lookups of one split equal, dtype included."""
    for k in ("positions", "targets", "p", "empty", "log_p", "log_q", "target_s", "best"):
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), k


def setup(vocab_size, mode, rate, *, context=2, n_train=2000, n_score=500, empty_value=0.0, gray=True, seed=5):
    tokens = corpus(vocab_size, n_train, seed=vocab_size)
    score_tokens = corpus(vocab_size, n_score, seed=vocab_size + 1)
    kwargs = dict(codes=bw.token_codes(tokens, vocab_size, "frequency", gray), context=context, seed=seed,
                  sample_rate=rate, cell_mode=mode, empty_value=empty_value)
    return tokens, score_tokens, kwargs


def retrained(tokens, score_tokens, vocab_size, neurons, bits, gpu=None, **kwargs):
    model = bitwise.train(tokens, vocab_size, neurons=neurons, bits=bits, gpu=gpu, **kwargs)
    return model, bitwise.score(model, score_tokens, gpu)


def check(scorer, tokens, score_tokens, vocab_size, neurons, bits, gpu=None, **kwargs):
    """The scorer's Scores and fitness are a retrain's, exactly."""
    model, want = retrained(tokens, score_tokens, vocab_size, neurons, bits, gpu=gpu, **kwargs)
    same_scores(scorer.scores(neurons, bits), want)
    ce, accuracy = scorer.fitness(neurons, bits)
    assert ce == float(bitwise.ce(model, want).mean())  # exact: the same arrays through the same kernels
    assert math.isclose(ce, float(bitwise.ce(model, want).mean()), rel_tol=1e-9)
    assert accuracy == float(bitwise.correct(model, want).mean())
    return model


MODES = [(bw.TERNARY, 0.5), (bw.QUAD_BINARY, 0.0), (bw.QUAD_WEIGHTED, 0.0)]


@pytest.mark.parametrize("rate", [1.0, 0.25])
@pytest.mark.parametrize("mode,empty_value", MODES, ids=[m for m, _ in MODES])
def test_a_size_genome_scores_as_a_retrain(mode, empty_value, rate):
    """V 13 (4 clusters, not a power of two), neurons below max_neurons and mixed bits, several
    genomes through one scorer (columns and code matrices reused, and new ones made)."""
    tokens, score_tokens, kwargs = setup(13, mode, rate, empty_value=empty_value)
    scorer = SizeScorer(tokens, score_tokens, 13, max_neurons=7, **kwargs)
    genomes = [([2, 5, 7, 1], [3, 6, 4, 5]), ([3, 5, 6, 1], [3, 6, 4, 5]), ([3, 5, 6, 1], [7, 6, 2, 5]),
               ([7, 7, 7, 7], [1, 8, 8, 3])]
    for neurons, bits in genomes:
        check(scorer, tokens, score_tokens, 13, neurons, bits, **kwargs)
    trained = scorer.stats["clusters_trained"]
    assert trained == len({(i, b) for _, bits in genomes for i, b in enumerate(bits)})  # once each
    scorer.fitness(*genomes[1])
    assert scorer.stats["clusters_trained"] == trained and scorer.stats["columns_reused"] >= 4


@pytest.mark.parametrize("mode,empty_value,rate", [(bw.TERNARY, 0.25, 0.25), (bw.QUAD_WEIGHTED, 0.0, 1.0)])
def test_a_larger_vocabulary_with_gray_codes(mode, empty_value, rate):
    """V 300 (9 clusters), context 3, a genome per cluster of its own."""
    tokens, score_tokens, kwargs = setup(300, mode, rate, context=3, n_train=3000, n_score=400, empty_value=empty_value)
    scorer = SizeScorer(tokens, score_tokens, 300, max_neurons=9, **kwargs)
    check(scorer, tokens, score_tokens, 300, [1 + i % 9 for i in range(9)], [4 + (5 * i) % 11 for i in range(9)], **kwargs)
    check(scorer, tokens, score_tokens, 300, [9 - i for i in range(9)], [12] * 9, **kwargs)


@pytest.mark.parametrize("mode,empty_value", MODES, ids=[m for m, _ in MODES])
def test_dense_and_sparse_clusters_in_one_genome(mode, empty_value):
    """Under memory auto a 27-bit cluster is SPARSE (ternary: over 24 bits; quad: its DENSE cells
    would pass 256 MiB), the rest DENSE. The scorer's storage (chosen at max_neurons, or forced)
    need not be the retrain's: the cells are the same."""
    tokens, score_tokens, kwargs = setup(300, mode, 0.25, context=3, empty_value=empty_value)
    neurons, bits = [3, 2, 5, 1, 2, 3, 4, 2, 1], [27, 5, 9, 3, 12, 6, 4, 7, 2]
    scorer = SizeScorer(tokens, score_tokens, 300, max_neurons=5, **kwargs)
    model = check(scorer, tokens, score_tokens, 300, neurons, bits, **kwargs)
    assert [c.storage for c in model.clusters] == [SPARSE] + [DENSE] * 8
    check(SizeScorer(tokens, score_tokens, 300, max_neurons=5, memory=SPARSE, **kwargs),
          tokens, score_tokens, 300, neurons, bits, **kwargs)
    small = [min(b, 12) for b in bits]
    check(SizeScorer(tokens, score_tokens, 300, max_neurons=5, memory=DENSE, **kwargs),
          tokens, score_tokens, 300, neurons, small, memory=SPARSE, **kwargs)


def test_caches_bounded_to_nothing_give_the_same_figures():
    """No code matrix kept and the column store at its minimum (B columns): every genome still
    exact, only slower (clusters trained again)."""
    tokens, score_tokens, kwargs = setup(13, bw.QUAD_WEIGHTED, 0.25)
    tight = SizeScorer(tokens, score_tokens, 13, max_neurons=6, code_cache_bytes=0, column_cache_bytes=0, **kwargs)
    loose = SizeScorer(tokens, score_tokens, 13, max_neurons=6, **kwargs)
    assert tight._p.shape[0] == 4
    genomes = [([2, 3, 4, 5], [4, 5, 6, 7]), ([5, 3, 4, 2], [4, 5, 6, 7]), ([2, 3, 4, 5], [4, 5, 6, 7]),
               ([6, 6, 1, 1], [7, 5, 6, 4])]
    for neurons, bits in genomes:
        same_scores(tight.scores(neurons, bits), loose.scores(neurons, bits))
        assert tight.fitness(neurons, bits) == loose.fitness(neurons, bits)
    assert tight.stats["clusters_trained"] > loose.stats["clusters_trained"]
    check(tight, tokens, score_tokens, 13, *genomes[-1], **kwargs)
    assert loose.fitness_many(genomes) == [loose.fitness(*g) for g in genomes]


def test_the_model_and_refusals():
    tokens, score_tokens, kwargs = setup(13, bw.TERNARY, 1.0, empty_value=0.5)
    scorer = SizeScorer(tokens, score_tokens, 13, max_neurons=4, **kwargs)
    model = scorer.model_for([1, 2, 3, 4], [2, 3, 4, 5])
    assert bitwise.cells(model) == bitwise.cells(bitwise.train(tokens, 13, neurons=[1, 2, 3, 4], bits=[2, 3, 4, 5],
                                                               **kwargs))
    for neurons, bits, match in [([1, 2, 3, 5], 4, "max_neurons"), ([0, 1, 1, 1], 4, "neurons must"),
                                 (1, [1, 2, 3], "bits: 3 values"), (1, 9, "bits must be 1..8")]:
        with pytest.raises(ValueError, match=match):
            scorer.fitness(neurons, bits)
    with pytest.raises(ValueError, match="no example"):
        SizeScorer(tokens, score_tokens[:2], 13, max_neurons=4, **kwargs)


def test_neuron_codes_are_the_clusters_lookups():
    """bitwise.read_neuron_codes: a row's codes summed over all neurons are read_cluster's P."""
    tokens, score_tokens, kwargs = setup(13, bw.QUAD_BINARY, 0.25)
    model = bitwise.train(tokens, 13, neurons=5, bits=[3, 6, 4, 5], memory=SPARSE, **kwargs)
    x = bitwise.pack(score_tokens, np.arange(2, len(score_tokens)), model.inputs)
    p, empty = bitwise.read_clusters(model, x)
    quarters, takes_empty, no_decision = bitwise.quarter_tables(model.cell_mode)
    for i, cluster in enumerate(model.clusters):
        codes = bitwise.neuron_codes(cluster, x)
        assert codes.shape == (x.shape[0], 5) and codes.dtype == np.uint8
        q = np.where(takes_empty[codes], 0, quarters[codes]).sum(axis=1)
        assert np.array_equal(bitwise.p_of_quarters(q, takes_empty[codes].sum(axis=1), 0.0, 5), p[:, i])
        assert np.array_equal(no_decision[codes].sum(axis=1), empty[:, i])


# ---- CUDA: a real GPU, or NUMBA_ENABLE_CUDASIM=1 ---------------------------------------------------

@pytest.mark.parametrize("mode,empty_value", MODES, ids=[m for m, _ in MODES])
def test_cuda_trains_and_reads_the_same_codes(cuda_kernels, mode, empty_value):
    """The scorer on CUDA (training and read_neuron_codes there) equals a CPU retrain and a GPU one;
    a DENSE and a SPARSE cluster in one genome."""
    n_train, n_score = (300, 60) if SIMULATED else (3000, 800)
    tokens, score_tokens, kwargs = setup(13, mode, 0.25, n_train=n_train, n_score=n_score, empty_value=empty_value)
    scorer = SizeScorer(tokens, score_tokens, 13, max_neurons=4, gpu=cuda_kernels, **kwargs)
    neurons, bits = [2, 4, 1, 3], [3, 6, 4, 5]
    check(scorer, tokens, score_tokens, 13, neurons, bits, **kwargs)
    check(scorer, tokens, score_tokens, 13, neurons, bits, gpu=cuda_kernels, **kwargs)
    check(scorer, tokens, score_tokens, 13, neurons, [3, 6, 5, 5], **kwargs)  # one cluster's bits: it alone trains
    sparse = SizeScorer(tokens, score_tokens, 13, max_neurons=4, gpu=cuda_kernels, memory=SPARSE, **kwargs)
    check(sparse, tokens, score_tokens, 13, [1, 3, 2, 4], bits, **kwargs)
    cluster = bitwise.train(tokens, 13, neurons=3, bits=5, memory=SPARSE, **kwargs).clusters[2]
    x = scorer.x
    assert np.array_equal(cuda_kernels.read_neuron_codes(cluster, x), bitwise.neuron_codes(cluster, x))


# ---- WGSL: where wgpu finds an adapter (lavapipe on CI) ----------------------------------------------

@pytest.mark.parametrize("mode,empty_value", MODES, ids=[m for m, _ in MODES])
def test_wgpu_trains_there_and_reads_on_the_cpu_engine(mode, empty_value):
    pytest.importorskip("wgpu", reason="wgpu is not installed")
    from ramsweep.engine import bitwise_wgpu

    if not bitwise_wgpu.available():
        pytest.skip("no wgpu adapter")
    tokens, score_tokens, kwargs = setup(13, mode, 0.25, n_train=1500, n_score=300, empty_value=empty_value)
    scorer = SizeScorer(tokens, score_tokens, 13, max_neurons=5, gpu=bitwise_wgpu, **kwargs)
    check(scorer, tokens, score_tokens, 13, [2, 5, 1, 3], [3, 6, 4, 5], **kwargs)
    check(scorer, tokens, score_tokens, 13, [2, 4, 1, 3], [3, 6, 4, 5], gpu=bitwise_wgpu, **kwargs)
    check(scorer, tokens, score_tokens, 13, [2, 4, 1, 3], [3, 6, 5, 5], **kwargs)  # one cluster's bits: it alone trains
    sparse = SizeScorer(tokens, score_tokens, 13, max_neurons=5, gpu=bitwise_wgpu, memory=SPARSE, **kwargs)
    check(sparse, tokens, score_tokens, 13, [4, 1, 5, 3], [3, 6, 4, 5], **kwargs)
