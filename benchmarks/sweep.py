"""Wall time of one set run four ways, as ratios against one runner measured in the same run.

    python benchmarks/sweep.py                 # the quick set, fast mode
    python benchmarks/sweep.py --set standard
    python benchmarks/sweep.py --jobs 2,4,8      # more pool sizes (machines with more cores)
    python benchmarks/sweep.py --set grid:16     # `ramsweep grid --limit 16` instead of a set

Each way starts real `ramsweep run` processes on a fresh results file (numba's cache warmed
first, so no way pays compilation):
  one runner          1 process, all numba threads
  two runners         2 processes started together on one results file (claims split the set),
                      each with all the threads (oversubscribed), then each with an equal share
  --jobs N            1 process, N worker processes with an equal share of the threads each
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


def command(set_: str) -> list[str]:
    if set_.startswith("grid:"):
        return ["grid", "--limit", set_.split(":")[1]]
    return ["run", "--set", set_]


def run(processes: list[list[str]], env: dict) -> float:
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "ramsweep", *args], env=env,
                              stderr=subprocess.DEVNULL) for args in processes]
    codes = [p.wait() for p in procs]
    assert codes == [0] * len(procs), codes
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="quick", help="a set, or grid:N for the first N grid configs")
    parser.add_argument("--jobs", default="2", help="comma-separated pool sizes to time")
    parser.add_argument("--shared-only", action="store_true", help="skip two oversubscribed runners")
    args = parser.parse_args()
    threads = numba.config.NUMBA_NUM_THREADS
    share = max(1, threads // 2)
    base = {**os.environ}
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm.json"
        run([[*command(args.set), "--results", str(warm)]], base)  # loads or fills numba's cache
        ways = [
            ("one runner", [[]], threads, base),
            *([("two runners", [[], []], threads, base)] if not args.shared_only else []),
            ("two runners, threads shared", [[], []], share, {**base, "NUMBA_NUM_THREADS": str(share)}),
        ] + [(f"--jobs {j}", [["--jobs", str(j)]], max(1, threads // j), base)
             for j in map(int, args.jobs.split(","))]
        rows = []
        for i, (name, extra, per, env) in enumerate(ways):
            results = Path(tmp) / f"r{i}.json"
            wall = run([[*command(args.set), "--results", str(results), *e] for e in extra], env)
            records = orjson.loads(results.read_bytes())["results"]
            assert sorted(r["name"] for r in records) == sorted(r["name"] for r in orjson.loads(warm.read_bytes())["results"])
            rows.append((name, len(extra), per, wall))
    one = rows[0][3]
    print(f"set {args.set} (fast mode), {os.cpu_count()} CPUs, numba threads available: {threads}")
    print("| way | processes running experiments | numba threads each | wall s | vs one runner |")
    print("|---|---|---|---|---|")
    for name, procs, per, wall in rows:
        who = f"{name.split()[1]} workers" if name.startswith("--jobs") else procs
        print(f"| {name} | {who} | {per} | {wall:.1f} | {one / wall:.2f}x |")


if __name__ == "__main__":
    main()
