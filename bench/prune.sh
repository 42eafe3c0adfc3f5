#!/usr/bin/env bash
# Pruning at scale: generate a random checkpoint of the Nemotron-4 15B shape
# (31 GB in bf16) and random importance scores, prune it to the Minitron-4B
# shape (hidden 3072, 24 heads in 8 KV groups, MLP 9216), and report the peak
# memory (RSS) and the time, next to the time of copying the output's bytes
# (cp of the pruned directory) on the same disk.
#
# Needs: Go, GNU time (/usr/bin/time), ~45 GB of free disk under $WORK.
# Usage: bench/prune.sh [CONFIG.json]   (default bench/configs/nemotron-4-15b.json)
#        WORK=/big/disk bench/prune.sh
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-bench/configs/nemotron-4-15b.json}
work=${WORK:-bench/out/prune}
hidden=${HIDDEN:-3072} heads=${HEADS:-24} ffn=${FFN:-9216}
mkdir -p .bin "$work"
CGO_ENABLED=0 go build -o .bin/minitron ./cmd/minitron
[ -x /usr/bin/time ] || { echo "bench/prune.sh: needs GNU time at /usr/bin/time (apt install time)" >&2; exit 1; }
if [ ! -f "$work/teacher/config.json" ]; then
  echo "writing a random checkpoint of $config to $work/teacher ..."
  .bin/minitron bench checkpoint --config "$config" --out "$work/teacher" --scores "$work/scores.safetensors" --dtype bf16
fi
rm -rf "$work/student" "$work/student.copy"
sync
/usr/bin/time -f '%e %M' -o "$work/prune.time" .bin/minitron prune --model "$work/teacher" --scores "$work/scores.safetensors" \
  --hidden-size "$hidden" --num-attention-heads "$heads" --intermediate-size "$ffn" --out "$work/student"
sync
/usr/bin/time -f '%e %M' -o "$work/copy.time" cp -r "$work/student" "$work/student.copy"
read -r psec pkb < "$work/prune.time"
read -r csec _ < "$work/copy.time"
out=$(du -sb "$work/student" | cut -f1)
printf 'source %s, output %s\n' "$(du -sh "$work/teacher" | cut -f1)" "$(du -sh "$work/student" | cut -f1)"
printf 'prune: %.1f s, peak RSS %.2f GB; copying the output: %.1f s; ratio %.2f (target <= 2); output %.2f GB/s\n' \
  "$psec" "$(echo "$pkb/1048576" | bc -l)" "$csec" "$(echo "$psec/$csec" | bc -l)" "$(echo "$out/$psec/1000000000" | bc -l)"
rm -rf "$work/student.copy"
