"""Speed of the architecture search in phases (docs/design.md §5b) on a WikiText-2-size bitwise model.

    python benchmarks/phases.py --gpu       # one NVIDIA GPU: the research's pipeline end to end
    python benchmarks/phases.py --small     # a small case on the CPU (a minute on 2 cores)
    python benchmarks/phases.py --gpu --one-cluster 18 24   # the connections phase's pace alone

The research's pipeline: a 4 × 4 grid (neurons 50/100/150/200 × bits 14/16/18/20 for every bit
cluster), then GA (30 × 50) and TS (30 neighbours × 5) on each cluster's neurons (10–300), then
the same on its bits (10–24), then on its connections (§5's search, the sizes fixed).
The corpus is benchmarks/bitwise.py's synthetic Zipf corpus of
WikiText-2's size (2.4 M / 250 k / 290 k tokens over 50,257 ids: 16 bit clusters), context 4,
r 0.25, quad_weighted; fitness CE on the training split's last 10%. It runs through
run_experiment (the sweep's path: search, the chosen model trained, validation, test) and prints
each phase's time, its evaluations and its best fitness; the whole run's time is the figure.
"""

from __future__ import annotations

import argparse
import logging
import time

import numba

from ramsweep.config import Experiment

PIPELINE = [
    {"search": "grid", "neurons": [50, 100, 150, 200], "bits": [14, 16, 18, 20]},
    {"search": "neurons", "strategy": "GA+TS", "population": 30, "generations": 50, "neighbours": 30, "iterations": 5},
    {"search": "bits", "strategy": "GA+TS", "population": 30, "generations": 50, "neighbours": 30, "iterations": 5},
    {"search": "connections", "strategy": "GA+TS", "population": 30, "generations": 50, "neighbours": 30,
     "iterations": 5},
]
SMALL = [
    {"search": "grid", "neurons": [10, 20], "bits": [8, 10]},
    {"search": "neurons", "strategy": "GA+TS", "population": 10, "generations": 5, "neighbours": 10, "iterations": 3,
     "range": [5, 40]},
    {"search": "bits", "strategy": "GA+TS", "population": 10, "generations": 5, "neighbours": 10, "iterations": 3,
     "range": [6, 12]},
    {"search": "connections", "strategy": "GA+TS", "population": 6, "generations": 3, "neighbours": 6,
     "iterations": 2},
]


def pipeline_experiment(phases: list[dict], neurons: int, bits: int) -> Experiment:
    return Experiment(name="bw_phases", architecture="bitwise", context=4,
                      bitwise={"neurons": neurons, "bits": bits, "sample_rate": 0.25, "cell_mode": "quad_weighted"},
                      optimize={"fitness": "CE", "phases": phases})


def one_cluster(corpus, bits: int, generations: int, gpu, neurons: int = 150) -> None:
    """The connections phase's pace alone: GA 30 × `generations` on cluster 0 of a model of
    `neurons` neurons of `bits` bits a cluster (optimize/bitwise_connections.py, as the phase runs it);
    numba's compilation is left out (a first, short search compiles every kernel)."""
    import numpy as np

    from ramsweep.optimize import bitwise_connections, search
    from ramsweep.optimize.driver import split_for_fitness

    part, fit = split_for_fitness(corpus.train, 0.1, 4)
    for gens in (1, generations):  # the first compiles
        t0 = time.perf_counter()
        scorer = bitwise_connections.ConnectionScorer(
            part, fit, corpus.vocab_size, codes=np.arange(corpus.vocab_size), context=4, seed=0, sample_rate=0.25,
            cell_mode="quad_weighted", neurons=neurons, bits=bits, gpu=gpu)
        setup = time.perf_counter() - t0
        phase = {"search": "connections", "strategy": "GA", "population": 30, "generations": gens, "patience": None}
        opt = pipeline_experiment([phase], neurons, bits).optimize.connections(0, None)
        ctx = search.Context(scorer, opt, bitwise_connections.units(scorer, opt)[:1], lambda s: None,
                             lambda p: None, None)
        t0 = time.perf_counter()
        state = search.run(ctx, search.new_state(opt))
        wall = time.perf_counter() - t0
    stats = {k: round(v, 2) if isinstance(v, float) else v for k, v in scorer.stats.items() if k != "score_s"}
    print(f"| {neurons} × {bits} ({scorer.storage[0]}) | GA 30 × {generations} | {state['evaluations']:,} | "
          f"{wall:.1f} | **{state['evaluations'] / wall:.1f}** | set-up {setup:.1f} s; {stats} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="the research's pipeline at WikiText-2 size on cuda")
    parser.add_argument("--small", action="store_true", help="a small case on the CPU")
    parser.add_argument("--one-cluster", metavar="BITS", type=int, nargs="*",
                        help="the connections phase's pace alone: GA 30 x 12 on one cluster of NEURONS x BITS")
    parser.add_argument("--neurons", type=int, default=150, help="--one-cluster's neurons (default 150)")
    parser.add_argument("--artifacts", help="a folder for the search's checkpoint: a run cut short resumes there "
                                            "(each phase's seconds then add up over the runs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # the search's progress lines
    logging.getLogger("numba").setLevel(logging.WARNING)  # numba-cuda's driver logs every free at INFO
    from bitwise import dataclass_replace_splits, run_on, zipf_corpus

    from ramsweep.engine.devices import describe

    device = "cuda" if args.gpu else "cpu"
    corpus = zipf_corpus() if args.gpu else dataclass_replace_splits(zipf_corpus(2_000), 60_000)
    if args.one_cluster is not None:
        from ramsweep.engine.bitwise_output import kernels

        print(f"## The connections phase's pace on {describe(device)}\n")
        print("| cluster | search | candidates | seconds | a second | work |\n|---|---|---|---|---|---|")
        for bits in args.one_cluster or [18, 24]:
            one_cluster(corpus, bits, 12 if args.gpu else 3, kernels(device) if args.gpu else None, args.neurons)
        return
    exp = pipeline_experiment(PIPELINE if args.gpu else SMALL, *((150, 18) if args.gpu else (15, 9)))
    t0 = time.perf_counter()
    record, wall = run_on(exp, corpus, device, args.artifacts)
    s = record.search
    print(f"## Search in phases on {describe(device)} ({numba.get_num_threads()} numba threads)\n")
    print(f"{len(corpus.train):,} / {len(corpus.validation):,} / {len(corpus.test):,} tokens over "
          f"{corpus.vocab_size:,} ids; {s['units']} bit clusters; fitness CE on {s['examples']['fitness']:,} examples "
          f"(a model of {s['examples']['search']:,})\n")
    print("| phase | evaluations | seconds | best CE on the slice (first → last) | chosen (validation) |")
    print("|---|---|---|---|---|")
    for p in s["phases"]:
        seconds = p["seconds"]
        if "connections" in p:  # §5's summary: the fitness slice's CE before and after
            c = p["connections"]
            best = (c["fitness_before"]["ce"], c["fitness_after"]["ce"])
            seconds = c["history"][-1]["elapsed_s"] if c["history"] else seconds  # over resumed runs too
        else:
            first = p["history"][0]
            best = (first.get("best_ce", first.get("ce")), min(h.get("best_ce", h.get("ce")) for h in p["history"]))
        what = p["search"] + (f" {p['strategy'].upper()}" if p["strategy"] else "")
        print(f"| {what} | {p['evaluations']:,} | {seconds:.1f} | {best[0]:.4f} → {best[1]:.4f} | "
              f"{p['chosen_label']} |")
    total = sum(p["connections"]["history"][-1]["elapsed_s"] if "connections" in p and p["connections"]["history"]
                else p["seconds"] for p in s["phases"])
    print(f"\nThe phases' seconds add up to {total:.1f} s (over every run of a resumed search).")
    print(f"\nEnd to end in this run (search, the chosen model trained, validation, test): **{wall:.1f} s** "
          f"(search {s['search_s']:.1f} s; {time.perf_counter() - t0:.1f} s with this script's set-up); "
          f"test CE {record.metrics.test.ce:.4f} (start's {s['before']['test']['ce']:.4f})")


if __name__ == "__main__":
    main()
