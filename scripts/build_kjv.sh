#!/usr/bin/env bash
# Build ramsweep/data/kjv.txt.gz, the embedded default corpus.
#
# Source: the King James Version as packaged by Debian (`bible-kjv` 4.38, text in the
# public domain). `bible -f "gen1:1-rev22:21"` prints all 31,102 verses, one per line as
# `Ge1:1 In the beginning ...`; the output is stored unchanged. `gzip -n -9` leaves out the
# name and timestamp, so rebuilding gives the same bytes.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/ramsweep/data/kjv.txt.gz"

if ! command -v bible >/dev/null 2>&1; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update
    $sudo_cmd apt-get install -y bible-kjv
fi

tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
bible -f "gen1:1-rev22:21" >"$tmp"

verses="$(wc -l <"$tmp")"
if [ "$verses" -ne 31102 ]; then
    echo "expected 31102 verse lines, got $verses" >&2
    exit 1
fi

gzip -n -9 -c "$tmp" >"$out"
echo "wrote $out ($verses verses, $(wc -c <"$out") bytes)"
