"""Speed of the bitwise CPU engine (ramsweep/engine/bitwise.py) against its numpy oracle
(bitwise_reference.py), as throughput ratios measured in the same run, on the same data.

    python benchmarks/bitwise.py            # a small and a medium case, DENSE and SPARSE (~30 s on 2 cores)
    python benchmarks/bitwise.py --small    # the small case only

The oracle is a Python loop per (example, neuron) and enumerates all V tokens per example, so it
runs on a prefix of the engine's data; throughput is per unit of work (training: examples ×
neurons written per second; evaluation: examples per second), and on that prefix the engine's
metrics are checked against the oracle's. numba is warmed up first: compile time is not counted.
"""

from __future__ import annotations

import argparse
import math
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the small case only")
    args = parser.parse_args()
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
