"""Wall time of one set run four ways, as ratios against one runner measured in the same run.

    python benchmarks/sweep.py                 # the quick set, fast mode
    python benchmarks/sweep.py --set standard

Each way starts real `ramsweep run` processes on a fresh results file (numba's cache warmed
first, so no way pays compilation):
  one runner          1 process, all numba threads
  two runners         2 processes started together on one results file (claims split the set),
                      each with all the threads (oversubscribed), then each with an equal share
  --jobs 2            1 process, 2 worker processes with an equal share of the threads each
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import orjson


def run(processes: list[list[str]], env: dict) -> float:
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "ramsweep", "run", *args], env=env,
                              stderr=subprocess.DEVNULL) for args in processes]
    codes = [p.wait() for p in procs]
    assert codes == [0] * len(procs), codes
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="quick")
    args = parser.parse_args()
    threads = numba.config.NUMBA_NUM_THREADS
    share = max(1, threads // 2)
    base = {**os.environ}
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm.json"
        run([["--set", args.set, "--results", str(warm)]], base)  # loads or fills numba's cache
        ways = [
            ("one runner", [[]], threads, base),
            ("two runners", [[], []], threads, base),
            ("two runners, threads shared", [[], []], share, {**base, "NUMBA_NUM_THREADS": str(share)}),
            ("--jobs 2", [["--jobs", "2"]], share, base),
        ]
        rows = []
        for i, (name, extra, per, env) in enumerate(ways):
            results = Path(tmp) / f"r{i}.json"
            wall = run([["--set", args.set, "--results", str(results), *e] for e in extra], env)
            records = orjson.loads(results.read_bytes())["results"]
            assert sorted(r["name"] for r in records) == sorted(r["name"] for r in orjson.loads(warm.read_bytes())["results"])
            rows.append((name, len(extra), per, wall))
    one = rows[0][3]
    print(f"set {args.set} (fast mode), {os.cpu_count()} CPUs, numba threads available: {threads}")
    print(f"| way | processes running experiments | numba threads each | wall s | vs one runner |")
    print("|---|---|---|---|---|")
    for name, procs, per, wall in rows:
        print(f"| {name} | {procs if name != '--jobs 2' else '2 workers'} | {per} | {wall:.1f} | {one / wall:.2f}x |")


if __name__ == "__main__":
    main()
