"""The WGSL kernels' speed on this machine: Metal on a Mac, Vulkan elsewhere, end to end.

    python benchmarks/wgsl.py              # on a Mac or any machine: WGSL against the CPU engine
    python benchmarks/wgsl.py --extended   # and the extended set with --device wgpu
    python benchmarks/wgsl.py --small      # a small corpus (seconds; lavapipe, CI-sized machines)

Each config of CONFIGS runs end to end (train, validation scores and temperature fit, test) as
`ramsweep run --device wgpu` runs it, on a synthetic Zipf corpus the size of WikiText-2 (2.4 M /
250 k / 290 k tokens over 50,257 ids), after a warm-up that builds the pipelines; the reference
is measured in the same run: CUDA on the same GPU where numba-cuda finds one, else the CPU
engine. The records' metrics must be identical. Prints markdown for BENCHMARKS.md; exits 1 if
any figure differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numba
import numpy as np

from ramsweep.config import Experiment
from ramsweep.data import load_corpus
from ramsweep.data.spec import DataSpec
from ramsweep.engine.backends import wgpu as wgpu_backend
from ramsweep.engine.devices import describe
from ramsweep.engine.evaluate import score
from ramsweep.engine.train import train
from ramsweep.sets import load_set
from ramsweep.sweep.experiment import Task, run_experiment

CONFIGS = {
    "tier0_20bit": dict(tiers="100,15,20;400,10,12;rest,5,8", context=4),
    "five_tier_gradient": dict(tiers="50,37,22;50,31,20;400,11,12;20000,7,10;rest,3,11", context=8),
    # the research's "extreme" widths: 40 bits in LSH memory (2^20 cells a neuron), 12 and 8 as usual
    "tier0_40bit_lsh": dict(tiers="100,15,40;400,10,12;rest,5,8", context=4),
    # tier0_20bit with the research's gates: 8 gate neurons of 12 bits per cluster
    "tier0_20bit_gated": dict(tiers="100,15,20;400,10,12;rest,5,8", context=4, gating={"neurons": 8, "bits": 12}),
}
WIKITEXT2_SIZE = {"train": 2_400_000, "validation": 250_000, "test": 290_000}
SMALL_SIZE = {"train": 60_000, "validation": 6_000, "test": 6_000}


def zipf_corpus(base, sizes: dict = WIKITEXT2_SIZE):
    """The KJV corpus object with i.i.d. Zipf splits of `sizes` over its 50,257 ids."""
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, base.vocab_size + 1)
    split = {s: rng.choice(base.vocab_size, n, p=p / p.sum()).astype(np.int32) for s, n in sizes.items()}
    return dataclasses.replace(base, train=split["train"], validation=split["validation"], test=split["test"],
                               token_bytes={s: np.full(n, 4, np.int32) for s, n in sizes.items()},
                               name="zipf", fingerprint="zipf-" + base.fingerprint)


def reference_device() -> str:
    """CUDA where numba-cuda finds a GPU, else the CPU engine."""
    try:
        from ramsweep.engine.backends import cuda
    except ImportError:
        return "cpu"
    return "cuda" if cuda.available() else "cpu"


def end_to_end(exp: Experiment, corpus, device: str):
    """The record of `exp` on `device`, after a warm-up on a slice (pipelines, kernels)."""
    tiny = corpus.train[:5000]
    score(train(exp, tiny, corpus.vocab_size, device=device), tiny[:500], device)
    record = run_experiment(Task(exp.model_copy(update={"device": device}), exp.name, "bench"), corpus)
    assert record.ok, record.traceback
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--extended", action="store_true", help="also the extended set end to end on each device")
    parser.add_argument("--small", action="store_true", help="a small corpus: seconds, for a CPU adapter")
    options = parser.parse_args()
    if not wgpu_backend.available():
        sys.exit("wgpu finds no adapter here: pip install 'ramsweep[wgpu]' (and a Vulkan driver off macOS)")
    info = wgpu_backend.adapter_info()
    corpus = zipf_corpus(load_corpus(DataSpec(corpus="kjv", tokenizer="gpt2", full_data=True)),
                         SMALL_SIZE if options.small else WIKITEXT2_SIZE)
    ref = reference_device()
    print(f"WGSL on {info['name']} through {info['backend']} ({info['type']}); reference: {describe(ref)}"
          f"{f' ({numba.get_num_threads()} numba threads)' if ref == 'cpu' else ''}; Zipf corpus "
          f"{len(corpus.train):,} / {len(corpus.validation):,} / {len(corpus.test):,} tokens\n")
    print(f"| config | {ref} train s | eval s | end to end s | WGSL train s | eval s | end to end s "
          f"| WGSL / {ref} | metrics identical | test PPL |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    identical = True
    for name in options.configs.split(","):
        exp = Experiment(name=name, **CONFIGS[name])
        a, b = end_to_end(exp, corpus, ref), end_to_end(exp, corpus, "wgpu")
        same = a.metrics == b.metrics
        identical &= same
        ta, tb = a.timing, b.timing
        print(f"| {name} | {ta.train_s:.1f} | {ta.eval_s:.1f} | {ta.total_s:.1f} | {tb.train_s:.1f} | {tb.eval_s:.1f} "
              f"| {tb.total_s:.1f} | **{tb.total_s / ta.total_s:.2f}×** | {'yes' if same else '**NO**'} "
              f"| {b.metrics.test.ppl:,.0f} |", flush=True)
    if options.extended:
        for device in (ref, "wgpu"):
            t0 = time.perf_counter()
            for exp in load_set("extended").experiments:
                record = run_experiment(Task(exp.model_copy(update={"device": device}), exp.name, "extended"), corpus)
                assert record.ok, record.traceback
            print(f"\nExtended set ({len(load_set('extended').experiments)} experiments), device {device}: "
                  f"**{time.perf_counter() - t0:.0f} s**", flush=True)
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    main()
