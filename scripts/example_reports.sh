#!/usr/bin/env bash
# The example reports under docs/: the quick set at 3 seeds and the 27-config tier-bits grid (bits
# 8-10 in each of 3 tiers), full data, on the embedded corpus. Runs the sweeps (resumable; skip with
# SKIP_RUN=1 when the results files are there), then writes the markdown, HTML and plots.
#   scripts/example_reports.sh [RESULTS_FOLDER]      (default experiments/docs)
set -euo pipefail
cd "$(dirname "$0")/.."
results=${1:-experiments/docs}
ramsweep=${RAMSWEEP:-ramsweep}
if [ -z "${SKIP_RUN:-}" ]; then
    $ramsweep run --set quick --full-data --seeds 0,1,2 --results "$results/quick.jsonl"
    $ramsweep grid --tiers 3 --bits 8-10 --full-data --results "$results/grid27.jsonl"
fi
for name in quick grid27; do
    $ramsweep report "$results/$name.jsonl" --format md --cards > "docs/$name.md"
    $ramsweep report "$results/$name.jsonl" --format html > "docs/$name.html"
    $ramsweep report "$results/$name.jsonl" --format csv --plots "docs/plots/$name" > "docs/$name.csv"
done
