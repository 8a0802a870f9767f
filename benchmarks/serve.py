"""The dashboard at scale: `ramsweep serve` on results files of 10 and 10,000 records (a 3-tier
bits grid over many seeds, ~2.5 KB a record), journal and JSON document, measured in the same run.

    python benchmarks/serve.py                   # 10 and 10,000 records (~2 min on 2 cores)
    python benchmarks/serve.py --sizes 10,1000   # quicker

For each file: the server's start (until /api/status answers with every record), its memory
(resident set, from /proc) once every view has been built, the latency of each API endpoint
(median and 95th percentile of sequential requests over HTTP, each view built once per change
and then served from memory), the time from a record's append to /api/status showing it, and
`status()` read cold in this process, the reference: what `ramsweep status` costs once.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from store import realistic_record  # noqa: E402

from ramsweep.sweep.records import parse_record  # noqa: E402
from ramsweep.sweep.status import status  # noqa: E402
from ramsweep.sweep.store import open_store  # noqa: E402

ENDPOINTS = ("api/status", "api/records", "api/leaderboard", "api/grids", "api/experiments/{key}", "")


def grid_record(i: int) -> dict:
    """Record i of a 9 x 9 x 9 bits grid, seed i // 729."""
    r = realistic_record(i)
    bits = (4 + i % 9, 4 + (i // 9) % 9, 4 + (i // 81) % 9)
    tiers = ";".join(f"{c},{n},{b}" for c, n, b in zip(("100", "400", "rest"), (15, 10, 5), bits))
    r["spec"] = {**r["spec"], "name": f"g{i:06d}", "tiers": tiers, "seed": i // 729}
    r["name"] = f"g{i:06d}"
    r["metrics"]["validation"] = {**r["metrics"]["validation"], "ppl": 20000.0 - 10 * sum(bits) + i % 7}
    return r


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text)[1]) / 1024


def measure(path: Path, size: int, requests: int) -> dict:
    store = open_store(path)
    with store.locked():
        store.extend_locked([parse_record(grid_record(i)) for i in range(size)])
    t0 = time.perf_counter()
    status(path)
    status_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "ramsweep", "serve", str(path), "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://\S+/", server.stdout.readline())[0]
        while True:
            try:
                body = orjson.loads(get(url + "api/status"))
                if body["files"][0]["counts"] and body["files"][0]["counts"]["done"] == size:
                    break
            except OSError:
                pass
            time.sleep(0.01)
        start_s = time.perf_counter() - t0
        key = orjson.loads(get(url + "api/records"))["latest"][0]["key"]
        latency = {}
        for endpoint in ENDPOINTS:
            target = url + endpoint.format(key=key)
            first = time.perf_counter()
            get(target)  # the view is built once per change
            first = time.perf_counter() - first
            times = []
            for _ in range(requests):
                t = time.perf_counter()
                get(target)
                times.append(time.perf_counter() - t)
            times.sort()
            latency[endpoint or "/"] = (first, statistics.median(times), times[int(0.95 * (len(times) - 1))])
        memory = rss_mb(server.pid)
        version = orjson.loads(get(url + "api/status"))["version"]
        t0 = time.perf_counter()
        store.append(parse_record({**grid_record(size), "key": "fresh"}))
        while orjson.loads(get(url + "api/status"))["version"] == version:
            time.sleep(0.01)
        shown_s = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait()
    return {"mb": path.stat().st_size / 1e6, "status_s": status_s, "start_s": start_s, "rss_mb": memory,
            "latency": latency, "shown_s": shown_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,10000")
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    Path("experiments").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir="experiments") as tmp:
        for size in map(int, args.sizes.split(",")):
            for name in ("results.jsonl", "results.json"):
                m = measure(Path(tmp) / f"{size}-{name}", size, args.requests)
                kind = "journal" if name.endswith("l") else "document"
                print(f"\n{size:,} records, {kind} ({m['mb']:.1f} MB): server up with every record in "
                      f"{m['start_s']:.2f} s (status() cold, the reference: {m['status_s']:.2f} s, "
                      f"{m['start_s'] / m['status_s']:.1f}x); resident memory {m['rss_mb']:.0f} MB; an appended "
                      f"record shown by /api/status after {m['shown_s']:.2f} s")
                print("| endpoint | first (builds the view) | median | p95 | median / status() cold |")
                print("|---|---:|---:|---:|---:|")
                for endpoint, (first, median, p95) in m["latency"].items():
                    print(f"| /{endpoint.lstrip('/')} | {1000 * first:,.1f} ms | {1000 * median:,.2f} ms | "
                          f"{1000 * p95:,.2f} ms | {median / m['status_s']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
