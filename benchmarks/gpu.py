"""GPU engine benchmark: CUDA against the CPU engine on the same machine, in the same run.

    python benchmarks/gpu.py                      # everything (about 5 minutes on an H100)
    python benchmarks/gpu.py --only zipf          # one corpus; --configs tier0_20bit

For each corpus (KJV with GPT-2 tokens; a synthetic Zipf corpus the size of WikiText-2:
2.4 M / 250 k / 290 k tokens over 50,257 ids, drawn i.i.d., so its PPL means nothing) and
config (`tier0_20bit`, `five_tier_gradient`):
- one experiment end to end on the GPU, as `ramsweep run --device cuda` runs it (train,
  validation scores and temperature fit, test), after a warm-up that compiles the kernels;
- the CPU engine and the GPU on the same slice (the first 1/8 of the training split, 20 k
  validation examples): their trained cells and scores must be identical, and their
  throughputs give the ratio;
- lookups per second as a share of a random-gather microbenchmark on the same GPU.
Then the extended set end to end on the Zipf corpus, and hybrid (GPU + CPU threads) beside
CUDA alone. Prints markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np
from numba import cuda

from ramsweep.config import Experiment
from ramsweep.data import load_corpus
from ramsweep.data.spec import DataSpec
from ramsweep.engine.devices import describe
from ramsweep.engine.evaluate import score
from ramsweep.engine.layout import build_layout
from ramsweep.engine.train import train
from ramsweep.grid import grid_set
from ramsweep.sets import load_grid, load_set
from ramsweep.sweep.experiment import Task, run_experiment

sys.path.insert(0, str(Path(__file__).parent))
from engine import lookup_reference  # noqa: E402
from wgsl import CONFIGS, zipf_corpus  # noqa: E402  (the configs and corpus the WGSL benchmark times too)

try:  # WGSL beside CUDA where wgpu finds this GPU (Vulkan): not a software rasteriser
    from ramsweep.engine.backends import wgpu as wgpu_backend

    wgpu_backend = wgpu_backend if wgpu_backend.is_real_gpu() else None
except ImportError:
    wgpu_backend = None

SLICE_EVAL = 20_000


@cuda.jit
def _gather(table, n_per_thread, out):
    i = cuda.grid(1)
    x = np.uint64(i * 2654435761 + 1)
    s = np.uint32(0)
    mask = np.uint64(table.shape[0] - 1)
    for _ in range(n_per_thread):
        x ^= x << np.uint64(13)
        x ^= x >> np.uint64(7)
        x ^= x << np.uint64(17)
        s += table[x & mask]
    out[i] = s


def gather_reference() -> dict[str, float]:
    """Random byte gathers per second, one thread per lookup stream, from a table that fits
    the L2 cache and from one that does not."""
    out = {}
    for label, size in (("16 MiB", 1 << 24), ("256 MiB", 1 << 28)):
        table = cuda.to_device(np.random.default_rng(1).integers(0, 255, size, dtype=np.uint8))
        threads, per = 1 << 20, 256
        result = cuda.device_array(threads, dtype=np.uint32)
        _gather[threads // 256, 256](table, 4, result)
        cuda.synchronize()
        t = time.perf_counter()
        _gather[threads // 256, 256](table, per, result)
        cuda.synchronize()
        out[label] = threads * per / (time.perf_counter() - t)
    return out


def work(exp, train_tokens, vocab_size: int, n_eval: int) -> tuple[int, int]:
    """(training writes, evaluation lookups) of `exp` trained on train_tokens."""
    layout = build_layout(exp, train_tokens, vocab_size)
    target_tier = layout.tier_of_position[layout.position[train_tokens[exp.context:]]]
    writes, lookups = 0, 0
    for tier in layout.tiers:
        negative_neurons = min(max(layout.n_negatives - tier.first, 0) * tier.neurons, tier.n_neurons)
        writes += (len(target_tier) * negative_neurons + int((target_tier == tier.index).sum()) * tier.neurons)
        lookups += n_eval * tier.n_neurons
    return writes, lookups


def same_scores(a, b) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("hist", "correct", "target_score", "ce")) and all(
        np.array_equal(x, y) for p, q in zip(a.empties, b.empties) for x, y in zip(p, q))


def same_cells(a, b) -> bool:
    return all(np.array_equal(getattr(x, k), getattr(y, k))
               for x, y in zip(a.memories, b.memories) for k in ("dense", "offsets", "keys", "vals"))


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def bench(corpus, name: str, gathers: dict) -> tuple[list[str], bool]:
    exp = Experiment(name=name, **CONFIGS[name])
    tiny = corpus.train[:5000]
    score(train(exp, tiny, corpus.vocab_size, device="cuda"), tiny[:500], "cuda")  # compile the kernels
    score(train(exp, tiny, corpus.vocab_size), tiny[:500])
    record = run_experiment(Task(exp, name, "bench"), corpus)
    assert record.ok, record.traceback
    t, test = record.timing, record.metrics.test
    n_eval = record.metrics.validation.examples + test.examples

    part = corpus.train[: len(corpus.train) // 8]
    held = corpus.validation[: SLICE_EVAL + exp.context]
    on_cpu, cpu_train = timed(train, exp, part, corpus.vocab_size)
    on_gpu, gpu_train = timed(train, exp, part, corpus.vocab_size, device="cuda")
    cpu_scores, cpu_eval = timed(score, on_cpu, held)
    gpu_scores, gpu_eval = timed(score, on_cpu, held, "cuda")
    identical = same_cells(on_cpu, on_gpu) and same_scores(cpu_scores, gpu_scores)
    writes, lookups = work(exp, part, corpus.vocab_size, SLICE_EVAL)
    beside = []
    if wgpu_backend is not None:  # WGSL through Vulkan on the same GPU and slice
        score(on_cpu, held[:500], "wgpu")  # the pipeline and its buffers, once
        wgpu_scores, wgpu_eval = timed(score, on_cpu, held, "wgpu")
        same = same_scores(cpu_scores, wgpu_scores)
        identical &= same
        beside = [f"\nWGSL on {wgpu_backend.adapter_info()['name']} ({corpus.name}, {name}, the same slice): "
                  f"{lookups / wgpu_eval / 1e9:.1f} G lookups/s, {wgpu_eval / gpu_eval:.2f}x CUDA's time, "
                  f"scores {'identical' if same else '**DIFFER**'}\n"]
    full_writes, full_lookups = work(exp, corpus.train, corpus.vocab_size, n_eval)
    eval_s = t.eval_s
    backends = "/".join(b[0].upper() for b in record.resources.memories)
    return [
        f"| {corpus.name} | {name} ({backends}) | {t.train_s:.1f} | {eval_s:.1f} | **{t.total_s:.1f}** "
        f"| {full_writes / t.train_s / 1e9:.1f} | {full_lookups / eval_s / 1e9:.1f} "
        f"| {full_lookups / eval_s / gathers['256 MiB']:.2f} / {full_lookups / eval_s / gathers['16 MiB']:.2f} "
        f"| {cpu_train / gpu_train:.0f}× ({writes / cpu_train / 1e9:.2f} vs {writes / gpu_train / 1e9:.1f} G/s) "
        f"| {cpu_eval / gpu_eval:.0f}× "
        f"({lookups / cpu_eval / 1e9:.2f} vs {lookups / gpu_eval / 1e9:.1f} G/s) "
        f"| {'yes' if identical else '**NO**'} | {test.ppl:,.0f} |", *beside
    ], identical


def extended(corpus, device: str) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    lines = []
    for exp in load_set("extended").experiments:
        record = run_experiment(Task(exp.model_copy(update={"device": device}), exp.name, "extended"), corpus)
        assert record.ok, record.traceback
        lines.append(f"{exp.name} {record.timing.total_s:.1f} s")
    return time.perf_counter() - t0, lines


def grid(corpus, limit: int) -> tuple[float, int, int, list[str]]:
    """The first `limit` configs of `ramsweep grid --tiers 3` (grid order: spread over the whole
    space early) end to end on the GPU: (seconds, configs, the whole grid's size, slowest)."""
    whole = grid_set(load_grid(), 3)
    t0, times = time.perf_counter(), []
    for exp in whole.experiments[:limit]:
        record = run_experiment(Task(exp.model_copy(update={"device": "cuda"}), exp.name, "grid"), corpus)
        assert record.ok, record.traceback
        times.append((record.timing.total_s, f"{exp.tiers} {record.timing.total_s:.1f} s"))
    slowest = [text for _, text in sorted(times, reverse=True)[:3]]
    return time.perf_counter() - t0, min(limit, len(whole.experiments)), len(whole.experiments), slowest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("kjv", "zipf"))
    parser.add_argument("--configs", default="tier0_20bit,five_tier_gradient")
    parser.add_argument("--no-extended", action="store_true")
    parser.add_argument("--grid", type=int, default=0, metavar="N",
                        help="also time the first N configs of `grid --tiers 3` on the Zipf corpus (81: about 4 min)")
    options = parser.parse_args()
    kjv = load_corpus(DataSpec(corpus="kjv", tokenizer="gpt2", full_data=True))
    corpora = {"kjv": kjv, "zipf": zipf_corpus(kjv)}
    gathers = gather_reference()
    cpu_lookups = lookup_reference()["256 MiB"]
    print(f"Device: {describe('cuda')}; CPU engine: {numba.get_num_threads()} numba threads "
          f"({cpu_lookups / 1e6:,.0f} M random lookups/s from 256 MiB on the CPU)")
    print("Random-gather microbenchmark on the GPU: " + ", ".join(
        f"{rate / 1e9:.0f} G/s from {label}" for label, rate in gathers.items()) + "\n")
    print("| corpus | config (tier memory) | train s | eval s | end to end s | G writes/s | G lookups/s "
          "| share of gathers (256 MiB / 16 MiB) | train vs CPU | eval vs CPU | CPU ≡ GPU | test PPL |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    all_identical = True
    for label, corpus in corpora.items():
        if options.only and label != options.only:
            continue
        for name in options.configs.split(","):
            line, identical = bench(corpus, name, gathers)
            all_identical &= identical
            print(*line, sep="\n", flush=True)
    if not options.no_extended:
        for device in ("cuda", "hybrid"):
            total, lines = extended(corpora["zipf"], device)
            print(f"\nExtended set ({len(lines)} experiments) on the Zipf corpus, device {device}: "
                  f"**{total:.0f} s** ({'; '.join(lines)})", flush=True)
    if options.grid:
        total, n, size, slowest = grid(corpora["zipf"], options.grid)
        print(f"\nFirst {n} configs of `ramsweep grid --tiers 3` on the Zipf corpus, device cuda: **{total:.0f} s** "
              f"({total / n:.1f} s a config; slowest: {'; '.join(slowest)}); the whole grid ({size}) at that rate: "
              f"{total / n * size / 60:.0f} min (extrapolated)", flush=True)
    sys.exit(0 if all_identical else 1)


if __name__ == "__main__":
    main()
