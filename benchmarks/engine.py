"""Speed of the numba CPU engine, as ratios against references measured in the same run.

    python benchmarks/engine.py              # oracle ratio, lookup reference, quick set fast + full
    python benchmarks/engine.py --no-full    # skip the full-data quick set (~10 min on 2 cores)

1. Engine vs the numpy oracle (ramsweep/engine/reference.py) on the same synthetic Zipf data
   and config, train and evaluation timed separately; numba is warmed up first so compile
   time is not counted.
2. A random-lookup microbenchmark (numba, all threads): the lookups/s this machine manages
   from a 64 KiB and a 256 MiB table; the engine's evaluation rate is given as a share of them.
3. The quick set through `run_set` in fast mode and (unless --no-full) full-data mode: engine
   time per experiment (train, validation, test) and in total.
4. Evaluation with and without skipping never-written clusters (`--only-skip` for just this).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

from ramsweep.config import Experiment
from ramsweep.engine.evaluate import evaluate
from ramsweep.engine.reference import ReferenceModel
from ramsweep.engine.train import train
from ramsweep.sets import load_set
from ramsweep.sweep.runner import run_set


def zipf_tokens(rng, n, vocab):
    p = 1.0 / np.arange(1, vocab + 1)
    return rng.choice(vocab, n, p=p / p.sum()).astype(np.int32)


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def versus_oracle() -> list[str]:
    vocab = 2000
    rng = np.random.default_rng(0)
    tokens, valid = zipf_tokens(rng, 2000, vocab), zipf_tokens(rng, 200, vocab)
    exp = Experiment(name="bench", tiers="100,15,16;400,10,10;rest,5,8", context=4, negatives=200)
    evaluate(train(exp, tokens, vocab), valid)  # warm-up: compile or load the numba cache
    model, t_train = timed(train, exp, tokens, vocab)
    ours, t_eval = timed(evaluate, model, valid)
    oracle, o_train = timed(ReferenceModel, exp, tokens, vocab)
    theirs, o_eval = timed(oracle.evaluate, valid)
    assert math.isclose(ours["ce"], theirs["ce"], rel_tol=1e-9) and ours["accuracy"] == theirs["accuracy"]
    return [
        f"Engine vs numpy oracle: V={vocab}, tiers {exp.tiers}, context 4, 200 negatives, "
        f"{len(tokens):,} train / {len(valid):,} validation tokens (metrics equal to 1e-9)",
        "",
        "| phase | oracle s | engine s | engine / oracle speed |",
        "|---|---|---|---|",
        f"| train | {o_train:.2f} | {t_train:.4f} | {o_train / t_train:,.0f}× |",
        f"| evaluate | {o_eval:.2f} | {t_eval:.4f} | {o_eval / t_eval:,.0f}× |",
    ]


@njit(cache=True, parallel=True)
def _random_lookups(table, n, seed, threads):
    total = 0
    mask = table.shape[0] - 1
    for t in prange(threads):
        x = np.uint64(seed + t * 7919 + 1)
        s = 0
        for _ in range(n // threads):
            x ^= x << np.uint64(13)
            x ^= x >> np.uint64(7)
            x ^= x << np.uint64(17)
            s += table[x & np.uint64(mask)]
        total += s
    return total


def lookup_reference() -> dict[str, float]:
    out = {}
    for label, size in (("64 KiB", 1 << 16), ("256 MiB", 1 << 28)):
        table = np.random.default_rng(1).integers(0, 255, size, dtype=np.uint8)
        n = 200_000_000 if size <= 1 << 16 else 40_000_000
        threads = numba.get_num_threads()
        _random_lookups(table, 1000, 0, threads)
        _, dt = timed(_random_lookups, table, n, 1, threads)
        out[label] = n / dt
    return out


def quick_set(full_data: bool, lookups: dict[str, float]) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.json"
        run_set("quick", results=results, full_data=full_data)  # logs to the 'ramsweep' logger: silent here
        import orjson

        records = [r for r in orjson.loads(results.read_bytes())["results"] if r.get("kind") != "baseline"]
    mode = "full-data" if full_data else "fast"
    lines = [f"Quick set, {mode} mode ({records[0]['data']['split_tokens']} tokens; "
             f"{numba.get_num_threads()} numba threads)", "",
             "| experiment | train s | validation s | test s | total s | eval M lookups/s | share of 256 MiB random lookups | test PPL |",
             "|---|---|---|---|---|---|---|---|"]
    total = 0.0
    for r in records:
        t, test = r["timing"], r["metrics"]["test"]
        neurons = sum(tier["clusters"] * tier["neurons"] for tier in test["tiers"])
        n_eval = r["metrics"]["validation"]["examples"] + test["examples"]
        rate = n_eval * neurons / (t["validation_s"] + t["test_s"])
        total += t["total_s"]
        lines.append(f"| {r['name']} | {t['train_s']:.1f} | {t['validation_s']:.1f} | {t['test_s']:.1f} | "
                     f"{t['total_s']:.1f} | {rate / 1e6:.0f} | {rate / lookups['256 MiB']:.2f} | {test['ppl']:,.0f} |")
    lines.append(f"| **all {len(records)}** | | | | **{total:.1f}** | | | |")
    return lines


def never_written_skip() -> list[str]:
    """Evaluation with and without skipping the clusters no training example wrote, on the
    embedded corpus: a fast-mode context-6 config (most of the vocabulary never written) and a
    full-data one (only the tokens unseen in training). Same model, same split, scores identical."""
    from ramsweep.data import load_corpus
    from ramsweep.data.spec import DataSpec
    from ramsweep.engine import evaluate as evaluate_module
    from ramsweep.engine.evaluate import looked_up, score

    lines = ["Skipping never-written clusters in evaluation (validation split, best of 2 each)", "",
             "| data | config | clusters never written | evaluation with skip s | without s | speed-up | scores |",
             "|---|---|---|---|---|---|---|"]
    cases = [(False, "context_6_fast", "100,15,14;rest,5,10", 6), (True, "tier0_20bit_full", "100,15,20;400,10,12;rest,5,8", 4)]
    for full_data, name, tiers, context in cases:
        corpus = load_corpus(DataSpec(full_data=full_data))
        exp = Experiment(name=name, tiers=tiers, context=context)
        model = train(exp, corpus.train, corpus.vocab_size)
        skipped = sum(t.clusters - looked_up(t, model.layout) for t in model.layout.tiers)
        timing = {}
        for skip in (True, False, True, False):
            evaluate_module.SKIP_NEVER_WRITTEN = skip
            scores, seconds = timed(score, model, corpus.validation)
            timing[skip] = min(seconds, timing.get(skip, math.inf))
            if skip:
                with_skip = scores
            else:
                without = scores
        evaluate_module.SKIP_NEVER_WRITTEN = True
        same = all(np.array_equal(getattr(with_skip, k), getattr(without, k)) for k in ("ce", "correct", "hist"))
        lines.append(f"| {'full' if full_data else 'fast'} | {name} (`{tiers}`, context {context}) | "
                     f"{skipped:,} of {corpus.vocab_size:,} | {timing[True]:.2f} | {timing[False]:.2f} | "
                     f"**{timing[False] / timing[True]:.2f}×** | {'identical' if same else '**DIFFER**'} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-full", action="store_true", help="skip the full-data quick set")
    parser.add_argument("--only-skip", action="store_true", help="only the never-written skip comparison")
    args = parser.parse_args()
    if args.only_skip:
        print("\n".join(never_written_skip()))
        return
    load_set("quick")
    sections = [versus_oracle(), never_written_skip()]
    lookups = lookup_reference()
    sections.append([f"Random-lookup reference ({numba.get_num_threads()} threads): "
                     + ", ".join(f"{rate / 1e6:,.0f} M lookups/s from {label}" for label, rate in lookups.items())])
    sections.append(quick_set(False, lookups))
    if not args.no_full:
        sections.append(quick_set(True, lookups))
    print("\n\n".join("\n".join(s) for s in sections))


if __name__ == "__main__":
    main()
