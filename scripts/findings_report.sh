#!/usr/bin/env bash
# The README's findings section: sets/findings.yaml (48 experiments) on the embedded corpus, whole
# splits, with word tokens and with GPT-2 tokens, then `report --format findings` of each into
# docs/findings.md. Runs the sets (resumable; skip with SKIP_RUN=1 when the results files are there).
# Uniform 20's rare tiers are hours on a CPU: give it a GPU (DEVICE=cuda, the default here).
#   scripts/findings_report.sh [RESULTS_FOLDER]      (default docs/findings: the results kept in git)
set -euo pipefail
cd "$(dirname "$0")/.."
results=${1:-docs/findings}
ramsweep=${RAMSWEEP:-ramsweep}
device=${DEVICE:-cuda}
if [ -z "${SKIP_RUN:-}" ]; then
    $ramsweep run --set findings --full-data --device "$device" --results "$results/words.jsonl"
    $ramsweep run --set findings --full-data --tokenizer gpt2 --device "$device" --results "$results/gpt2.jsonl"
fi
$ramsweep report "$results/words.jsonl" "$results/gpt2.jsonl" --format findings > docs/findings.md
