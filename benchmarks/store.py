"""Results stores at scale: the cost of one append, and of `status` and `report`, on files of
10 to 100,000 records, for the JSON document and the journal, measured in the same run; then
planning the 5-tier grid (59,049 configs).

    python benchmarks/store.py                 # sizes 10, 1000, 10000, 100000 (~10 min on 2 cores)
    python benchmarks/store.py --sizes 10,1000  # quicker

Each file is filled with copies of one realistic record (a 3-tier experiment: per-tier metrics
for both splits, ~2.5 KB), each with its own key, written in one go; then `--appends` records
are appended one at a time through the store, each a full durable append (lock, write, fsync),
from a reader that has already read the file (as a runner has). `status` and `report` are timed
cold (a new process would parse the file once) through the library functions the commands call.
Ratios are against the same kind's figure at the smallest size.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ramsweep.grid import grid_set
from ramsweep.report import report
from ramsweep.sets import load_grid
from ramsweep.sweep.plan import Options, pending, plan
from ramsweep.sweep.records import parse_record
from ramsweep.sweep.status import status
from ramsweep.sweep.store import open_store


def realistic_record(i: int) -> dict:
    tiers = [{"tier": t, "clusters": c, "neurons": n, "bits": b, "backend": "sparse" if b > 10 else "dense",
              "examples": 3000 + t, "ce": 9.9 + t / 10, "ppl": 20000.0 + t, "accuracy": 0.07, "share": 33.3,
              "empty_rate": 0.41, "target_empty_rate": 0.27}
             for t, (c, n, b) in enumerate([(100, 15, 12), (400, 10, 14), (13314, 5, 9)])]
    split = {"examples": 9996, "ce": 9.95, "ppl": 20971.3, "accuracy": 0.071, "bpb": 3.512, "ppl_floor": 5083.2,
             "calibrated": {"temperature": 0.101, "ce": 6.2, "ppl": 527.1, "bpb": 2.2}, "tiers": tiers}
    return {
        "kind": "experiment", "name": f"grid_b{i:06d}", "set": "grid", "key": f"{i:016x}", "status": "ok",
        "spec": {"name": f"grid_b{i:06d}", "tiers": "100,15,12;400,10,14;rest,5,9", "context": 4, "negatives": 1000,
                 "empty_value": 0.0, "seed": 0, "dense_max_bits": 10, "sparse_max_bits": 30, "memory": "auto",
                 "device": "auto", "based_on": None, "description": "tier-bits grid, point 1 of 729"},
        "data": {"corpus": "kjv", "path": None, "variant": "kjv.txt.gz: chapters", "tokenizer": "word",
                 "tokenizer_files": {}, "vocab_size": 13814, "full_data": True,
                 "split_tokens": {"train": 733079, "validation": 92188, "test": 88108},
                 "split_bytes": {"train": 3300000, "validation": 410000, "test": 400000},
                 "source_sha256": "db215f1e32db82a8", "fingerprint": "46202d8210c0a3b6"},
        "metrics": {"validation": split, "test": split},
        "timing": {"encode_s": 0.1, "train_s": 3.2, "validation_s": 1.1, "test_s": 1.0, "total_s": 5.4},
        "resources": {"device": "cpu", "threads": 2, "peak_rss_mb": 612.0, "memory_mb": 120.5,
                      "cells_stored": [1000, 20000, 300000], "backends": ["dense", "sparse", "dense"]},
        "environment": {"ramsweep": "0.1.0", "engine_semantics": 1, "python": "3.11.7", "numpy": "2.4.6"},
        "started": "2026-11-26T00:00:00+00:00", "finished": "2026-11-26T00:00:05+00:00",
    }


def measure(kind_file: str, size: int, appends: int, folder: Path) -> dict:
    path = folder / f"{size}-{kind_file}"
    template = parse_record(realistic_record(0))
    store = open_store(path)
    with store.locked():
        store.extend_locked([template.model_copy(update={"key": f"{i:016x}"}) for i in range(size)])
    store.records()  # a runner has read the file before it appends
    times = []
    for i in range(appends):
        record = template.model_copy(update={"key": f"new{i:013x}"})
        t0 = time.perf_counter()
        store.append(record)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    s = status(path)
    status_s = time.perf_counter() - t0
    assert s.counts["done"] == size + appends
    t0 = time.perf_counter()
    report(path, "csv")
    report_s = time.perf_counter() - t0
    mb = path.stat().st_size / 1e6
    path.unlink()
    return {"append_ms": 1000 * statistics.median(times), "status_s": status_s, "report_s": report_s, "mb": mb}


def grid_planning(tiers: int) -> tuple[int, float]:
    """Build the grid's experiments and plan them against an empty store: what `ramsweep grid`
    does before its first claim (the corpus's fingerprint stands in as a constant)."""
    t0 = time.perf_counter()
    exp_set = grid_set(load_grid(), tiers)
    planned = plan(exp_set.experiments, "fingerprint")
    todo = pending(planned, {}, Options())
    return len(todo), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,1000,10000,100000")
    parser.add_argument("--appends", type=int, default=20)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print("| records | kind | file MB | append (median) | x its 10-record append | status | report (csv) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    Path("experiments").mkdir(exist_ok=True)  # git-ignored, and on the disk real results go to
    with tempfile.TemporaryDirectory(dir="experiments") as tmp:
        base: dict[str, float] = {}
        for size in sizes:
            for kind_file in ("results.jsonl", "results.json"):
                appends = args.appends if kind_file.endswith("l") or size <= 10_000 else 3
                m = measure(kind_file, size, appends, Path(tmp))
                kind = "journal" if kind_file.endswith("l") else "document"
                base.setdefault(kind, m["append_ms"])
                print(f"| {size:,} | {kind} | {m['mb']:,.1f} | {m['append_ms']:,.2f} ms | "
                      f"{m['append_ms'] / base[kind]:,.2f} | {m['status_s']:,.2f} s | {m['report_s']:,.2f} s |", flush=True)
    for tiers in (3, 4, 5):
        n, seconds = grid_planning(tiers)
        print(f"grid --tiers {tiers}: {n:,} configs built and planned in {seconds:.2f} s", flush=True)


if __name__ == "__main__":
    main()
