"""Does a size search pay for tiered models? GA on the three tiers' bits (sets/phases.yaml's
tiered_bits_ga: 8-16 a tier) against the exhaustive 729-config grid of the same range.

    python scripts/tiered_ga_vs_grid.py [--tokenizer word|gpt2] [--seeds 0,1,2] [--out FILE.json]

For each seed it scores all 729 bit genomes on validation exactly (optimize/tiered_sizes.py: a
tier trained once per (tier, bits), 27 tiers in all; the same CE as 729 retrains to rounding),
then runs the search in phases of tiered_bits_ga (fitness on the training split's last 10%, the
choice on validation) and records, in the order the search scored them, every distinct genome it
asked for. The figure: how many distinct genomes (experiments) the search scored before its best
by fitness was within 1% of the grid's best validation PPL, and where its chosen genome ranks among
the 729. Test PPL is read for the two final choices only. Runs on the CPU (the same numbers as a
GPU: docs/design.md §3); the embedded corpus, full data.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time

from ramsweep.data import load_corpus
from ramsweep.data.spec import DataSpec
from ramsweep.optimize import phases
from ramsweep.optimize.driver import split_for_fitness
from ramsweep.optimize.tiered_sizes import TieredSizeScorer, sizes_of
from ramsweep.sets import load_set


def one_seed(exp, corpus) -> dict:
    lo, hi = exp.optimize.phases[0].range
    neurons = sizes_of(exp)[0]
    t0 = time.perf_counter()
    val = TieredSizeScorer(exp, corpus.train, corpus.validation, corpus.vocab_size)
    grid = {bits: math.exp(val.fitness(neurons, bits)[0])
            for bits in itertools.product(range(lo, hi + 1), repeat=len(neurons))}
    grid_s = time.perf_counter() - t0
    ranked = sorted(grid, key=lambda b: (grid[b], b))
    best = grid[ranked[0]]

    part, fit_tokens = split_for_fitness(corpus.train, exp.optimize.fitness_fraction, exp.context)
    fit = TieredSizeScorer(exp, part, fit_tokens, corpus.vocab_size, order_tokens=corpus.train)
    asked: dict[tuple, float] = {}  # distinct genomes in the order the search scored them -> fitness CE

    def fitness(n, b):
        value = fit.fitness(n, b)
        asked.setdefault(tuple(b), value[0])
        return value

    t0 = time.perf_counter()
    state, _ = phases.search(exp, sizes_of(exp), fitness, val.fitness, None, lambda s: None, lambda p: None)
    search_s = time.perf_counter() - t0
    reached, leader = None, None
    for k, (bits, ce) in enumerate(asked.items(), 1):
        if leader is None or ce < asked[leader]:
            leader = bits
        if reached is None and grid[leader] <= 1.01 * best:
            reached = k
    chosen = tuple(state["start"][1])  # the phases' choice: what the next phase (or the model) starts from

    test = TieredSizeScorer(exp, corpus.train, corpus.test, corpus.vocab_size)
    return {"seed": exp.seed, "grid_best": list(ranked[0]), "grid_best_val_ppl": best,
            "grid_worst_val_ppl": grid[ranked[-1]], "within_1pct": sum(grid[b] <= 1.01 * best for b in grid),
            "start_val_ppl": grid[tuple(sizes_of(exp)[1])], "distinct_scored": len(asked),
            "evaluations": state["evaluations"], "reached_within_1pct_after": reached,
            "chosen": list(chosen), "chosen_val_ppl": grid[chosen], "chosen_rank": ranked.index(chosen) + 1,
            "test_ppl_grid_best": math.exp(test.fitness(neurons, ranked[0])[0]),
            "test_ppl_chosen": math.exp(test.fitness(neurons, chosen)[0]),
            "grid_s": grid_s, "search_s": search_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default="word", choices=["word", "gpt2"])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=None, help="write the per-seed figures here as JSON")
    parser.add_argument("--fast", action="store_true", help="the corpus's fast mode (a check of this script)")
    args = parser.parse_args()
    corpus = load_corpus(DataSpec(corpus="kjv", tokenizer=args.tokenizer, full_data=not args.fast))
    seeds = [int(s) for s in args.seeds.split(",")]
    exps = {e.seed: e for e in load_set("phases").experiments if e.name.startswith("tiered_bits_ga")}
    out = []
    for seed in seeds:
        row = one_seed(exps[seed], corpus)
        print(json.dumps(row), flush=True)
        out.append(row)
        if args.out:  # after every seed: a run cut short keeps the seeds it finished
            with open(args.out, "w") as f:
                json.dump({"tokenizer": args.tokenizer, "corpus": corpus.fingerprint, "seeds": out}, f, indent=1)


if __name__ == "__main__":
    main()
