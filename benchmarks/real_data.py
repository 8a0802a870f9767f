"""The quick set on real tokens: time, peak memory and honest numbers of one `ramsweep run`.

    python benchmarks/real_data.py                                  # KJV, GPT-2 tokens, full data
    python benchmarks/real_data.py --data kjv --tokenizer word      # any `ramsweep run` data options

Runs `ramsweep run --set quick --full-data` (plus the data options given) as a user would, in
a fresh results folder, after a fast-mode run of the same set that fills numba's cache (so
compile time is not counted), and reports per experiment: engine time, evaluation lookups
per second as a share of a random-lookup microbenchmark run in the same process beforehand,
the run's peak resident memory, PPL, calibrated PPL, bits per byte, and the count-model
baselines the run recorded on the same tokens.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from engine import lookup_reference  # noqa: E402


def run(args: list[str], results: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ramsweep", "run", "--set", "quick", "--results", str(results), *args],
                   check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="kjv")
    parser.add_argument("--tokenizer", default="gpt2")
    parser.add_argument("--data-path")
    options = parser.parse_args()
    data = ["--data", options.data, "--tokenizer", options.tokenizer]
    data += ["--data-path", options.data_path] if options.data_path else []
    lookups = lookup_reference()["256 MiB"]
    with tempfile.TemporaryDirectory() as tmp:
        run(data, Path(tmp) / "warm.json")  # fills numba's cache and the token cache
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        wall = run([*data, "--full-data"], Path(tmp) / "results.json")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        records = orjson.loads((Path(tmp) / "results.json").read_bytes())["results"]
    experiments = [r for r in records if r.get("kind", "experiment") == "experiment"]
    d = experiments[0]["data"]
    print(f"`ramsweep run --set quick {' '.join(data)} --full-data`: {d['corpus']}/{d['tokenizer']}, "
          f"V = {d['vocab_size']:,}, {d['split_tokens']} tokens; {numba.get_num_threads()} numba threads; "
          f"wall {wall:.0f} s (corpus from the token cache), peak RSS {peak_mb:,.0f} MB"
          + (" (an earlier warm-up run may hold the peak)" if before >= peak_mb * 1024 else ""))
    print(f"Random-lookup reference: {lookups / 1e6:,.0f} M lookups/s from a 256 MiB table\n")
    print("| experiment | train s | eval s | total s | eval M lookups/s | share of random lookups | "
          "val PPL | test PPL | calibrated test PPL (T) | test bpb | test acc |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in experiments:
        t, v, test = r["timing"], r["metrics"]["validation"], r["metrics"]["test"]
        neurons = sum(tier["clusters"] * tier["neurons"] for tier in test["tiers"])
        eval_s = t["validation_s"] + t["test_s"]
        rate = (v["examples"] + test["examples"]) * neurons / eval_s
        cal = test["calibrated"]
        print(f"| {r['name']} | {t['train_s']:.0f} | {eval_s:.0f} | {t['total_s']:.0f} | {rate / 1e6:.0f} | "
              f"{rate / lookups:.2f} | {v['ppl']:,.0f} | {test['ppl']:,.0f} | {cal['ppl']:,.0f} "
              f"({cal['temperature']:.3f}) | {test['bpb']:.3f} | {100 * test['accuracy']:.2f}% |")
    for r in (r for r in records if r.get("kind") == "baseline"):
        v, test = r["metrics"]["validation"], r["metrics"]["test"]
        print(f"| *{r['name']} (baseline)* | | | {r['timing']['total_s']:.1f} | | | {v['ppl']:,.0f} | "
              f"{test['ppl']:,.0f} | | {test['bpb']:.3f} | |")
    print(f"\nPPL floor of V = {d['vocab_size']:,} (scores in [0, 1]): "
          f"{experiments[0]['metrics']['test']['ppl_floor']:,.0f}")


if __name__ == "__main__":
    main()
