"""Connectivity search benchmark: one candidate evaluated incrementally against a full retrain.

    python benchmarks/search.py                          # CPU, KJV word tokens (full data)
    python benchmarks/search.py --device cuda --corpus kjv-gpt2,zipf --budget

For each corpus (KJV with word or GPT-2 tokens; a synthetic Zipf corpus the size of WikiText-2:
2.4 M / 250 k / 290 k tokens over 50,257 ids, from benchmarks/gpu.py) and `tier0_20bit`:
- the reference, measured in the same run: a full retrain of the model on the search's
  training part plus a full evaluation of the fitness slice (the engine's train + score) —
  what one candidate would cost without incremental evaluation;
- seconds per candidate, and the ratio, for the moves the search makes: GA children of a tier
  (research rate 0.01 per connection), TS neighbours (0.001), per-cluster TS neighbours;
- with --budget, the research's full budget end to end (GA 30 × 100 generations, then TS
  20 iterations × 30 neighbours, tier by tier) through `run_search`.
Prints markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np

from ramsweep.config import Experiment
from ramsweep.data import load_corpus
from ramsweep.data.spec import DataSpec
from ramsweep.engine.devices import describe
from ramsweep.engine.evaluate import score
from ramsweep.engine.layout import build_layout
from ramsweep.engine.train import train
from ramsweep.optimize import search
from ramsweep.optimize.driver import run_search, split_for_fitness
from ramsweep.optimize.fitness import Examples, Fitness

sys.path.insert(0, str(Path(__file__).parent))
from gpu import zipf_corpus  # noqa: E402

TIER0_20BIT = dict(tiers="100,15,20;400,10,12;rest,5,8", context=4)
# the research's full budget, on the tiers where a GA child leaves most clusters alone (see BENCHMARKS.md)
FULL_BUDGET = dict(strategy="ga+ts", population=30, generations=100, neighbours=30, iterations=20, patience=None,
                   tiers=[0, 1])


def corpus_of(name: str):
    if name == "kjv":
        return load_corpus(DataSpec(corpus="kjv", full_data=True))
    gpt2 = load_corpus(DataSpec(corpus="kjv", tokenizer="gpt2", full_data=True))
    return gpt2 if name == "kjv-gpt2" else zipf_corpus(gpt2)


def per_candidate(fitness: Fitness, genome: search.Genome, opt, stage: str, steps: int) -> float:
    """Seconds per candidate over `steps` GA generations or TS iterations (after one untimed)."""
    ctx = search.Context(fitness, opt, [genome], lambda s: None, lambda p: None, None)
    state, rng = search.new_state(opt), np.random.Generator(np.random.PCG64(0))
    fitness.set_scope(genome.clusters(fitness.layout))
    step = search.ga_step if stage == "ga" else search.ts_step
    step(ctx, state, genome, rng)  # the initial population or the start: compiles, fills the caches
    e0, t0 = fitness.evaluations, time.perf_counter()
    for _ in range(steps):
        step(ctx, state, genome, rng)
    seconds = (time.perf_counter() - t0) / max(1, fitness.evaluations - e0)
    if stage == "ts":  # put the state back where the next measurement expects it
        start = genome.of(fitness.model.connectivity)
        fitness.commit(genome.changes(start))
    return seconds


def one_candidate(fitness: Fitness, genome: search.Genome, rate: float) -> float:
    """Seconds to evaluate one mutant of the start at `rate` per connection (rows trained)."""
    fitness.set_scope(genome.clusters(fitness.layout))
    start = genome.of(fitness.conn)
    rng = np.random.Generator(np.random.PCG64(1))
    mutant = search.mutate(start, rate, rng, fitness.layout.n_input)[0]
    t0 = time.perf_counter()
    fitness.evaluate([genome.changes(mutant)])
    return time.perf_counter() - t0


def bench(label: str, corpus, device: str, steps: int, tiers: list[int]) -> None:
    exp = Experiment(name="tier0_20bit", **TIER0_20BIT, optimize={"strategy": "ga+ts"})
    layout = build_layout(exp, corpus.train, corpus.vocab_size)
    part, fit = split_for_fitness(corpus.train, exp.optimize.fitness_fraction, exp.context)
    engine_device = "cuda" if device == "cuda" else "cpu"
    train(exp, part[:20000], corpus.vocab_size, layout=layout, device=engine_device)  # compile
    t0 = time.perf_counter()
    model = train(exp, part, corpus.vocab_size, layout=layout, device=engine_device)
    t1 = time.perf_counter()
    score(model, fit, engine_device)
    full = (time.perf_counter() - t0, t1 - t0)
    t0 = time.perf_counter()
    fitness = Fitness(model, Examples.of(part, layout), Examples.of(fit, layout), "ce", device=device)
    setup = time.perf_counter() - t0
    opt = exp.optimize
    print(f"\n{label}: {corpus.vocab_size:,} clusters, {part.size:,} training tokens for the search, "
          f"{fit.size - exp.context:,} fitness examples. Full retrain + evaluation of the fitness slice "
          f"(the reference): **{full[0]:.1f} s** (train {full[1]:.1f} s); fitness state set up once in "
          f"{setup:.1f} s.\n\n| corpus | unit | candidate | time per candidate | vs full retrain |\n|---|---|---|---|---|",
          flush=True)
    for t, tier in enumerate(layout.tiers):
        if t not in tiers:
            continue
        whole = search.Genome(((t, 0, tier.n_neurons),), opt, f"tier {t}")
        cluster = search.Genome(((t, 0, tier.neurons),), opt, f"tier {t} cluster 0")
        for what, genome, stage in (("GA child", whole, "ga"), ("TS neighbour", whole, "ts"),
                                    ("per-cluster TS neighbour", cluster, "ts")):
            if stage == "ga" and tier.clusters > 1000:  # one early child: it rewires nearly every cluster
                what = "GA child (one, of the first generation: 10× the rate vs the start)"
                s = one_candidate(fitness, genome, min(1.0, 10 * opt.mutation))
            else:
                s = per_candidate(fitness, genome, opt, stage, steps)
            print(f"| {label} | tier {t} ({tier.clusters:,} × {tier.neurons} × {tier.bits} bits) | {what} | "
                  f"{s * 1e3:,.1f} ms | **{full[0] / s:,.0f}×** |", flush=True)


def budget(label: str, corpus, device: str) -> str:
    exp = Experiment(name="tier0_20bit", **TIER0_20BIT, optimize=FULL_BUDGET)
    t0 = time.perf_counter()
    out = run_search(exp, corpus.train, corpus.validation, corpus.vocab_size, device=device)
    s = out.summary
    chosen = ", ".join(f"{x['label']} {x['validation_fitness']:.4f}" for x in s["selection"])
    return (f"\n{label}, the research's full budget (GA 30 × 100 generations, then TS 20 × 30, tier by tier) on "
            f"tiers 0 and 1 of `tier0_20bit`: **{time.perf_counter() - t0:.0f} s** end to end ({s['evaluations']:,} candidates, "
            f"search {s['search_s']:.0f} s); fitness CE {s['fitness_before']['value']:.4f} → "
            f"{s['fitness_after']['value']:.4f}; chosen on validation: {s['chosen']} "
            f"({chosen})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--corpus", default="kjv", help="comma-separated: kjv, kjv-gpt2, zipf")
    parser.add_argument("--steps", type=int, default=2, help="GA generations or TS iterations timed per move")
    parser.add_argument("--budget", action="store_true", help="also run the research's full budget")
    parser.add_argument("--tiers", default="0,1,2", help="the tiers measured (the rest tier's GA child is slow)")
    options = parser.parse_args()
    where = describe(options.device) if options.device == "cuda" else f"CPU, {numba.get_num_threads()} numba threads"
    print(f"Device: {where}")
    for label in options.corpus.split(","):
        corpus = corpus_of(label)
        bench(label, corpus, options.device, options.steps, [int(t) for t in options.tiers.split(",")])
        if options.budget:
            print(budget(label, corpus, options.device), flush=True)


if __name__ == "__main__":
    main()
