#!/usr/bin/env bash
# Pruning at scale: generate a random checkpoint of the Nemotron-4 15B shape
# (31 GB in bf16) and random importance scores, prune it to the Minitron-4B
# shape (hidden 3072, 24 heads in 8 KV groups, MLP 9216), and report the peak
# memory (RSS) and the time, next to the time of copying the output's bytes
# on the same disk two ways: disk to disk with direct I/O (dd, no page
# cache: the pruner's source also comes from disk), and cp right after the
# prune (the output still in the page cache, so only the write is paid).
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
rm -rf "$work/student" "$work/student.copy" "$work/student.dd"
sync
/usr/bin/time -f '%e %M' -o "$work/prune.time" .bin/minitron prune --model "$work/teacher" --scores "$work/scores.safetensors" \
  --hidden-size "$hidden" --num-attention-heads "$heads" --intermediate-size "$ffn" --out "$work/student"
sync
/usr/bin/time -f '%e %M' -o "$work/copy.time" cp -r "$work/student" "$work/student.copy"
mkdir -p "$work/student.dd"
dd_start=$(date +%s.%N)
for f in "$work"/student/*.safetensors; do
  dd if="$f" of="$work/student.dd/$(basename "$f")" bs=64M iflag=direct oflag=direct status=none
done
dsec=$(echo "$(date +%s.%N) - $dd_start" | bc -l)
# The prune reads most of the source (a hidden-channel slice touches every
# page of each kept row): reading it alone bounds the prune from below.
rd_start=$(date +%s.%N)
for f in "$work"/teacher/*.safetensors; do
  dd if="$f" of=/dev/null bs=64M iflag=direct status=none
done
rsec=$(echo "$(date +%s.%N) - $rd_start" | bc -l)
read -r psec pkb < "$work/prune.time"
read -r csec _ < "$work/copy.time"
out=$(du -sb "$work/student" | cut -f1)
printf 'source %s, output %s\n' "$(du -sh "$work/teacher" | cut -f1)" "$(du -sh "$work/student" | cut -f1)"
printf 'prune: %.1f s, peak RSS %.2f GB, output %.2f GB/s\n' "$psec" "$(echo "$pkb/1048576" | bc -l)" "$(echo "$out/$psec/1000000000" | bc -l)"
printf 'copying the output disk to disk (direct I/O): %.1f s; prune / copy %.2f (target <= 2)\n' "$dsec" "$(echo "$psec/$dsec" | bc -l)"
printf 'copying the output from the page cache (cp): %.1f s; prune / copy %.2f\n' "$csec" "$(echo "$psec/$csec" | bc -l)"
printf 'reading the source alone (direct I/O): %.1f s; prune / read %.2f\n' "$rsec" "$(echo "$psec/$rsec" | bc -l)"
rm -rf "$work/student.copy" "$work/student.dd"
