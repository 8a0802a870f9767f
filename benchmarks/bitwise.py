"""Speed of the bitwise CPU engine (ramsweep/engine/bitwise.py) against its numpy oracle
(bitwise_reference.py), as throughput ratios measured in the same run, on the same data.

    python benchmarks/bitwise.py            # a small and a medium case, DENSE and SPARSE (~30 s on 2 cores)
    python benchmarks/bitwise.py --small    # the small case only
    python benchmarks/bitwise.py --gpu      # CUDA: a WikiText-2-size experiment end to end, the size grid
    python benchmarks/bitwise.py --gpu --profile   # and where the end-to-end run's host time goes (cProfile)

--gpu (CUDA, engine/bitwise_cuda.py, and WGSL through wgpu on a real GPU, bitwise_wgpu.py, each
where there is one): a synthetic Zipf corpus the size of WikiText-2
(2.4 M / 250 k / 290 k tokens over 50,257 ids, drawn as benchmarks/gpu.py draws it) and the
research's best config (16 clusters × 200 neurons × 20 bits, context 4, sample rate 0.25,
quad_weighted): end to end through run_experiment on each device (train, validation scores and
temperature, test), after a warm-up that compiles the kernels, with the engine's phases timed
apart; then each device against the CPU engine on the same slice (the first 1/8 of the training
split, 20 k validation examples), DENSE and SPARSE: cells, P and every metric must be identical;
then the 16-config size grid of sets/bitwise.yaml (neurons 50/100/150/200 × bits 14/16/18/20,
seed 0) end to end on each device.

The oracle is a Python loop per (example, neuron) and enumerates all V tokens per example, so it
runs on a prefix of the engine's data; throughput is per unit of work (training: examples ×
neurons written per second; evaluation: examples per second), and on that prefix the engine's
metrics are checked against the oracle's. numba is warmed up first: compile time is not counted.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass

import numba
import numpy as np

from ramsweep.config import bits_per_token
from ramsweep.engine import bitwise as engine
from ramsweep.engine import bitwise_reference as oracle


@dataclass(frozen=True)
class Case:
    name: str
    vocab_size: int
    neurons: int
    bits: int
    train_tokens: int  # the engine's
    valid_tokens: int
    oracle_train: int  # the oracle's prefixes
    oracle_valid: int
    context: int = 4
    sample_rate: float = 0.25
    cell_mode: str = oracle.QUAD_WEIGHTED
    memory: str = "auto"  # the engine's: auto, dense or sparse


CASES = [
    Case("small", 300, 20, 10, 100_000, 20_000, 5_000, 500),
    Case("medium", 50_257, 50, 16, 100_000, 20_000, 2_000, 100),
    Case("medium, SPARSE", 50_257, 50, 16, 100_000, 20_000, 2_000, 100, memory="sparse"),
]


def zipf_tokens(rng, n: int, vocab: int) -> np.ndarray:
    p = 1.0 / np.arange(1, vocab + 1)
    return rng.choice(vocab, n, p=p / p.sum()).astype(np.int64)


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def run_case(case: Case) -> dict:
    """Engine and oracle throughputs on one case, and the engine's metrics checked on the oracle's data."""
    rng = np.random.default_rng(0)
    train, valid = zipf_tokens(rng, case.train_tokens, case.vocab_size), zipf_tokens(rng, case.valid_tokens, case.vocab_size)
    kwargs = dict(codes=oracle.token_codes(train, case.vocab_size, "frequency"), context=case.context,
                  neurons=case.neurons, bits=case.bits, seed=0, sample_rate=case.sample_rate, cell_mode=case.cell_mode)
    memory = {"memory": case.memory}
    engine.evaluate(engine.train(train[:200], case.vocab_size, **kwargs, **memory), valid[:50], temperature=1.0)  # warm-up
    model, e_train = timed(engine.train, train, case.vocab_size, **kwargs, **memory)
    _, e_eval = timed(engine.evaluate, model, valid, temperature=1.0)
    o_model, o_train = timed(oracle.train, train[: case.oracle_train], case.vocab_size, **kwargs)
    theirs, o_eval = timed(oracle.evaluate, o_model, valid[: case.oracle_valid], temperature=1.0)
    ours = engine.evaluate(engine.train(train[: case.oracle_train], case.vocab_size, **kwargs, **memory),
                           valid[: case.oracle_valid], temperature=1.0)
    assert math.isclose(ours["ce"], theirs["ce"], rel_tol=1e-12) and ours["accuracy"] == theirs["accuracy"]
    n_neurons = case.neurons * bits_per_token(case.vocab_size)
    writes = [(n - case.context) * n_neurons / s for n, s in ((case.train_tokens, e_train), (case.oracle_train, o_train))]
    examples = [(n - case.context) / s for n, s in ((case.valid_tokens, e_eval), (case.oracle_valid, o_eval))]
    return {"case": case, "train": writes, "eval": examples, "seconds": (e_train, e_eval, o_train, o_eval),
            "nbytes": model.nbytes, "storage": model.clusters[0].storage}


def table(rows: list[dict]) -> list[str]:
    out = ["| case | V | clusters × neurons × bits | engine data (train / valid tokens) | oracle data | "
           "train: engine / oracle (example·neurons/s) | ratio | evaluation: engine / oracle (examples/s) | ratio |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["case"]
        out.append(f"| {c.name} | {c.vocab_size:,} | {bits_per_token(c.vocab_size)} × {c.neurons} × {c.bits} | "
                   f"{c.train_tokens:,} / {c.valid_tokens:,} | {c.oracle_train:,} / {c.oracle_valid:,} | "
                   f"{r['train'][0]:,.0f} / {r['train'][1]:,.0f} | {r['train'][0] / r['train'][1]:,.0f}× | "
                   f"{r['eval'][0]:,.0f} / {r['eval'][1]:,.1f} | {r['eval'][0] / r['eval'][1]:,.0f}× |")
    return out


# ---- --gpu: CUDA against the CPU engine ------------------------------------------------------------

WIKITEXT2_SIZE = {"train": 2_400_000, "validation": 250_000, "test": 290_000}
GPT2_VOCAB = 50_257
BEST = dict(neurons=200, bits=20, sample_rate=0.25, cell_mode=oracle.QUAD_WEIGHTED)


def zipf_corpus(vocab_size: int = GPT2_VOCAB):
    """WikiText-2-sized i.i.d. Zipf splits over `vocab_size` ids, as benchmarks/gpu.py draws them."""
    from ramsweep.data import Corpus

    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, vocab_size + 1)
    split = {s: rng.choice(vocab_size, n, p=p / p.sum()).astype(np.int32) for s, n in WIKITEXT2_SIZE.items()}
    return Corpus(name="zipf", tokenizer="word", vocab=tuple(f"w{i}" for i in range(vocab_size)), full_data=True,
                  fingerprint="zipf-bitwise-benchmark", variant="synthetic", path=None, source_sha256="0" * 64,
                  tokenizer_files={}, token_bytes={s: np.full(n, 4, np.int32) for s, n in WIKITEXT2_SIZE.items()},
                  **split)


def run_on(exp, corpus, device: str, artifacts: str | None = None):
    """The record of `exp` on `device` through the sweep's path, and its seconds (`artifacts`: a
    folder for a search's checkpoint, so a run cut short resumes there)."""
    from ramsweep.sweep.experiment import Task, run_experiment

    t = time.perf_counter()
    record = run_experiment(Task(exp.model_copy(update={"device": device}), exp.name, "bench", artifacts), corpus)
    assert record.ok, record.traceback
    return record, time.perf_counter() - t


def phases(corpus, device: str) -> dict:
    """The engine's phases of the best config on `device`, timed apart (the sweep's path, without records)."""
    from ramsweep.engine.bitwise_output import bands, kernels

    codes = oracle.token_codes(corpus.train, corpus.vocab_size, "frequency")
    out, gpu = {}, kernels(device)
    model, out["train"] = timed(engine.train, corpus.train, corpus.vocab_size, codes=codes, context=4, seed=0,
                                gpu=gpu, **BEST)
    scores, out["validation"] = timed(engine.score, model, corpus.validation, gpu)
    temperature, out["temperature"] = timed(engine.fit_temperature, model, scores)
    _, out["test"] = timed(engine.evaluate, model, corpus.test, temperature=temperature, bands=bands(corpus.vocab_size),
                           gpu=gpu)
    out["storage"] = sorted({c.storage for c in model.clusters})
    return out


def same_on_slice(corpus, devices: list[str], memory: str) -> tuple[bool, dict]:
    """The CPU engine and each GPU device on the first 1/8 of the training split and 20 k validation
    examples, cells stored as `memory` says: (cells, P and metrics identical, seconds by (device, phase))."""
    from ramsweep.engine.bitwise_output import kernels

    train, valid = corpus.train[: len(corpus.train) // 8], corpus.validation[:20_004]
    codes = oracle.token_codes(train, corpus.vocab_size, "frequency")
    seconds, models, results = {}, {}, {}
    for device in ["cpu", *devices]:
        models[device], seconds[device, "train"] = timed(engine.train, train, corpus.vocab_size, codes=codes, context=4,
                                                         seed=0, gpu=kernels(device), memory=memory, **BEST)
        results[device], seconds[device, "eval"] = timed(engine.score, models[device], valid, kernels(device))
    cpu, want = models["cpu"], engine.metrics(models["cpu"], results["cpu"], temperature=1.0)
    same = True
    for device in devices:
        gpu = models[device]
        same &= all(np.array_equal(getattr(a, k), getattr(b, k)) for a, b in zip(cpu.clusters, gpu.clusters)
                    for k in ("dense", "offsets", "keys", "vals"))
        same &= all(np.array_equal(getattr(results["cpu"], k), getattr(results[device], k))
                    for k in ("p", "empty", "target_s", "best"))
        same &= engine.metrics(gpu, results[device], temperature=1.0) == want
    return same, seconds


def gpu_devices() -> list[str]:
    """cuda, and wgpu where it finds a real GPU (Vulkan; Metal on a Mac)."""
    from ramsweep.engine.devices import cuda_available, wgpu_info

    info = wgpu_info()
    return (["cuda"] if cuda_available() else []) + (["wgpu"] if info and info["type"] != "CPU" else [])


def gpu_main(profile: bool = False) -> None:
    from ramsweep.config import Experiment
    from ramsweep.engine.devices import describe
    from ramsweep.sets import load_set

    devices = gpu_devices()
    corpus = zipf_corpus()
    exp = Experiment(name="bw_200x20_qw", architecture="bitwise", context=4, bitwise=BEST)
    tiny = dataclass_replace_splits(corpus, 20_000)
    for device in devices:  # warm-up: compiles every kernel (and the CPU engine's) for these types
        run_on(exp, tiny, device)
        phases(tiny, device)
    print(f"## Bitwise model on {', '.join(describe(d) for d in devices)} (CPU engine: {numba.get_num_threads()} "
          "numba threads)\n")
    print("Synthetic Zipf corpus of WikiText-2's size: 2.4 M / 250 k / 290 k tokens over 50,257 ids; "
          "16 bit clusters × 200 neurons × 20 bits, context 4, sample rate 0.25, quad_weighted.\n")
    if profile:
        import cProfile
        import pstats

        with cProfile.Profile() as pr:
            run_on(exp, corpus, devices[0])
        pstats.Stats(pr).sort_stats("cumulative").print_stats(30)
    print("| device | end to end s | train s | validation lookups s | temperature fit s | test (lookups + metrics) s "
          "| memory | test CE |")
    print("|---|---|---|---|---|---|---|---|")
    walls, test_ce = {}, set()
    for device in devices:
        record, walls[device] = run_on(exp, corpus, device)
        part = phases(corpus, device)
        test_ce.add(record.metrics.test.ce)
        print(f"| {device} | **{walls[device]:.2f}** (record {record.timing.total_s:.2f}) | {part['train']:.2f} | "
              f"{part['validation']:.2f} | {part['temperature']:.2f} | {part['test']:.2f} | "
              f"{record.resources.memory_mb:,.0f} MiB {'/'.join(part['storage'])} | {record.metrics.test.ce:.4f} |")
    same = len(test_ce) == 1
    for memory in ("auto", "sparse"):
        ok, seconds = same_on_slice(corpus, devices, memory)
        same &= ok
        print(f"\nSame slice (the first 300 k training tokens, 20 k validation examples), cells {memory.upper()}, "
              "the CPU engine against each GPU device:\n")
        print("| phase | CPU engine s | " + " | ".join(f"{d} s | {d} vs CPU" for d in devices) + " | identical |")
        print("|---|---|" + "---|---|" * len(devices) + "---|")
        for phase in ("train", "eval"):
            c = seconds["cpu", phase]
            cells = " | ".join(f"{seconds[d, phase]:.3f} | {c / seconds[d, phase]:,.1f}×" for d in devices)
            print(f"| {phase} | {c:.2f} | {cells} | {'yes' if ok else '**NO**'} |")
    grid = {e.name: e for e in load_set("bitwise").experiments if e.name.startswith("size_") and e.seed == 0}
    for device in devices:
        t0, times = time.perf_counter(), []
        for e in grid.values():
            _, wall = run_on(e, corpus, device)
            times.append(f"{e.name.split('.')[0]} {wall:.1f} s")
        print(f"\nSize grid ({len(grid)} configs: neurons 50/100/150/200 × bits 14/16/18/20, seed 0) end to end on "
              f"{device}: **{time.perf_counter() - t0:.1f} s** ({'; '.join(times)})")
    sys.exit(0 if same else 1)


def dataclass_replace_splits(corpus, n: int):
    """The corpus with each split cut to its first n tokens (a warm-up of the same types)."""
    import dataclasses

    return dataclasses.replace(corpus, train=corpus.train[:n], validation=corpus.validation[:n], test=corpus.test[:n],
                               token_bytes={k: v[:n] for k, v in corpus.token_bytes.items()},
                               fingerprint=corpus.fingerprint + f"-{n}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the small case only")
    parser.add_argument("--gpu", action="store_true", help="CUDA: WikiText-2-size end to end, CPU vs CUDA, size grid")
    parser.add_argument("--profile", action="store_true", help="with --gpu: cProfile of one end-to-end run first")
    args = parser.parse_args()
    if args.gpu:
        gpu_main(args.profile)
        return
    rows = [run_case(case) for case in CASES[: 1 if args.small else None]]
    print(f"## Bitwise CPU engine vs the numpy oracle ({numba.get_num_threads()} threads; context 4, "
          f"sample rate 0.25, quad_weighted, frequency codes, Zipf tokens; metrics equal on the oracle's data)\n")
    print("\n".join(table(rows)))
    for r in rows:
        e_train, e_eval, o_train, o_eval = r["seconds"]
        print(f"\n{r['case'].name}: engine {e_train:.2f} s train, {e_eval:.2f} s evaluation, model "
              f"{r['nbytes'] / 2**20:.1f} MiB ({r['storage']}); oracle {o_train:.1f} s train, {o_eval:.1f} s evaluation")


if __name__ == "__main__":
    main()
