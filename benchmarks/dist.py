"""Several GPUs through Dask against one GPU, in the same run: the extended set and the first
`--limit` configs of the 3-tier grid on a WikiText-2-size synthetic corpus (Zipf words over
50,257 ids, ~2.6 M tokens as text: 80/10/10 by chunk), full data, every experiment on CUDA.

    python benchmarks/dist.py --gpus 2 --workload extended    # ~5 min on two H100s
    python benchmarks/dist.py --gpus 2 --workload grid --limit 16

Compare throughputs only where both ways finished the same experiments: under `--cap` the
Dask way claims the biggest first and the one-GPU way goes in grid order.

Each way is a real `ramsweep` process on its own results file (seeded with the same baselines,
so neither computes them): one GPU (`--device cuda`, CUDA_VISIBLE_DEVICES=0, one process), and
`--executor dask --workers N` (a local cluster, one worker per GPU). Throughput is experiments
finished per second from the first experiment's start (the cluster's start and warm-up are
given apart); a way still running at `--cap` seconds is stopped (SIGTERM: its experiment in
flight is recorded interrupted) and measured on what it finished. The metrics of every
experiment both ways finished must be identical.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson

WORDS = 2_600_000
VOCAB = 50_257


def synthetic_text(path: Path, n: int = WORDS) -> None:
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, VOCAB + 1)
    ids = rng.choice(VOCAB, n, p=p / p.sum())
    words = np.char.add("w", ids.astype(str))
    path.write_text("\n".join(" ".join(words[i:i + 24]) for i in range(0, n, 24)) + "\n")


def ramsweep(args: list[str], env: dict, cap: float) -> tuple[float, float | None, str]:
    """Run `ramsweep ARGS` until it ends or `cap` seconds pass; returns (wall seconds, seconds from
    start to its first experiment's start, stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ramsweep", *args], env=env, stderr=subprocess.PIPE, text=True)
    first: list[float] = []
    lines: list[str] = []

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if " start " in line and not first:
                first.append(time.perf_counter() - t0)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(cap)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    reader.join()
    return time.perf_counter() - t0, first[0] if first else None, "".join(lines)


def experiments(results: Path) -> dict[str, dict]:
    """name -> (metrics, timing) of the ok experiments (not the seeding one)."""
    found = [orjson.loads(line) for line in results.read_bytes().splitlines() if line.strip()]
    return {r["name"]: (r["metrics"], r["timing"]) for r in found if r.get("kind") == "experiment"
            and r["status"] == "ok" and r.get("set") != "warm"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--workload", default="extended,grid")
    parser.add_argument("--limit", type=int, default=16, help="grid configs (81 take ~20 min on one GPU)")
    parser.add_argument("--cap", type=float, default=540.0, help="seconds at most per way")
    parser.add_argument("--device", default="cuda", help="cpu: try the script on a machine without GPUs")
    parser.add_argument("--words", type=int, default=WORDS)
    parser.add_argument("--threads", default="default",
                        help="NUMBA_NUM_THREADS of each Dask worker, several ways comma-separated (default: all cores)")
    options = parser.parse_args()
    Path("experiments").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir="experiments") as tmp:
        folder = Path(tmp)
        text = folder / "zipf.txt"
        synthetic_text(text, options.words)
        data = ["--data", "text", "--data-path", str(text), "--full-data"]
        warm = folder / "warm.yaml"
        warm.write_text('experiments:\n  - {name: warm, tiers: "100,4,12;rest,2,6", context: 2}\n')
        seeded = folder / "seed.jsonl"  # the baselines and the token cache, once; the CPU kernels compiled
        wall, _, err = ramsweep(["run", "--set", str(warm), "--results", str(seeded), *data], dict(os.environ), 900)
        assert "end:" in err, err
        print(f"corpus: {text.stat().st_size / 1e6:.0f} MB of synthetic text; seeding (tokens, baselines) {wall:.0f} s")
        for workload in options.workload.split(","):
            what = ["run", "--set", "extended"] if workload == "extended" else ["grid", "--tiers", "3", "--limit",
                                                                               str(options.limit)]
            device = ["--device", options.device]
            ways = {"1 GPU": (device, {"CUDA_VISIBLE_DEVICES": "0"})}
            for threads in options.threads.split(","):
                env = {"NUMBA_NUM_THREADS": threads} if threads != "default" else {}
                ways[f"{options.gpus} GPUs (dask, {threads} threads a worker)"] = (
                    [*device, "--executor", "dask", "--workers", str(options.gpus)], env)
            measured = {}
            for label, (extra, env) in ways.items():
                results = folder / f"{workload}-{len(measured)}.jsonl"
                shutil.copy(seeded, results)
                wall, first, err = ramsweep([*what, "--results", str(results), *data, *extra],
                                            {**os.environ, **env}, options.cap)
                done = experiments(results)
                rate = len(done) / max(1e-9, wall - (first or 0.0))
                measured[label] = (done, rate, len(done) / wall)
                print(f"{workload}, {label}: {len(done)} experiments in {wall:.0f} s ({first or 0:.0f} s before the "
                      f"first started), {rate * 60:.1f} experiments/min", flush=True)
                print("  " + ", ".join(f"{n} {t['total_s']:.1f} s (encode {t['encode_s']:.1f}, train {t['train_s']:.1f}, "
                                       f"validation {t['validation_s']:.1f}, test {t['test_s']:.1f})"
                                       for n, (_, t) in done.items()))
                if "Traceback" in err:
                    print(err[-3000:])
            (one, r1, w1), *others = measured.values()
            for label, (many, rn, wn) in zip(list(measured)[1:], others):
                both = set(one) & set(many)
                same = all(one[n][0] == many[n][0] for n in both)
                phases = {p: sum(many[n][1][p] for n in both) / max(1e-9, sum(one[n][1][p] for n in both))
                          for p in ("encode_s", "train_s", "validation_s", "test_s", "total_s")}
                print(f"**{workload}, {label}: {rn / r1:.2f}x the throughput** from the first experiment's start "
                      f"({wn / w1:.2f}x on whole wall time, the cluster's start included); metrics of the "
                      f"{len(both)} experiments both finished {'identical' if same else 'DIFFER'}; time per phase "
                      "against one GPU alone: " + ", ".join(f"{p[:-2]} {v:.2f}x" for p, v in phases.items()) + "\n",
                      flush=True)


if __name__ == "__main__":
    main()
