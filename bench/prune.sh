#!/usr/bin/env bash
# Pruning at scale: generate a random checkpoint of the Nemotron-4 15B shape
# (31 GB in bf16) and random importance scores, prune it to the Minitron-4B
# shape (hidden 3072, 24 heads in 8 KV groups, MLP 9216), and report the peak
# memory (RSS) and the time against the time of copying the output's bytes
# on the same disk (dd with direct I/O, the fastest copy), paired run by run
# because a disk's speed drifts. Before each prune the source's pages are
# dropped from the page cache (dd iflag=nocache), so every run reads from
# disk as it would for a model larger than memory.
#
# Needs: Go, GNU time (/usr/bin/time), GNU dd, bc, ~45 GB of free disk under
# $WORK.
# Usage: bench/prune.sh [CONFIG.json]   (default bench/configs/nemotron-4-15b.json)
#        WORK=/big/disk RUNS=5 bench/prune.sh
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
runs=${RUNS:-3}
# The copy uses direct I/O where the file system allows it.
copy_flags="iflag=direct oflag=direct" read_flags="iflag=direct"
if ! dd if=/dev/zero of="$work/.direct-probe" bs=4096 count=1 oflag=direct status=none 2>/dev/null; then
  copy_flags="conv=fsync" read_flags=""
  echo "note: this file system refuses direct I/O; the copy goes through the page cache"
fi
rm -f "$work/.direct-probe"
drop_cache() { for f in "$@"; do dd if="$f" iflag=nocache count=0 status=none; done; }
ratios=()
for i in $(seq "$runs"); do
  rm -rf "$work/student" "$work/student.dd"
  sync
  drop_cache "$work"/teacher/*.safetensors
  /usr/bin/time -f '%e %M' -o "$work/prune.time" .bin/minitron prune --model "$work/teacher" --scores "$work/scores.safetensors" \
    --hidden-size "$hidden" --num-attention-heads "$heads" --intermediate-size "$ffn" --out "$work/student" >"$work/prune.log"
  mkdir -p "$work/student.dd"
  start=$(date +%s.%N)
  for f in "$work"/student/*.safetensors; do
    dd if="$f" of="$work/student.dd/$(basename "$f")" bs=64M $copy_flags status=none
  done
  csec=$(echo "$(date +%s.%N) - $start" | bc -l)
  read -r psec pkb < "$work/prune.time"
  ratio=$(echo "$psec/$csec" | bc -l)
  ratios+=("$ratio")
  printf 'run %d: prune %.1f s (peak RSS %.2f GB), copying the output %.1f s: prune / copy %.2f\n' \
    "$i" "$psec" "$(echo "$pkb/1048576" | bc -l)" "$csec" "$ratio"
done
grep -E '^  (read|disk)' "$work/prune.log"
# For scale: reading the whole source sequentially (direct I/O).
drop_cache "$work"/teacher/*.safetensors
start=$(date +%s.%N)
for f in "$work"/teacher/*.safetensors; do
  dd if="$f" of=/dev/null bs=64M $read_flags status=none
done
rsec=$(echo "$(date +%s.%N) - $start" | bc -l)
printf 'source %s, output %s; reading the whole source alone: %.1f s\n' "$(du -sh "$work/teacher" | cut -f1)" "$(du -sh "$work/student" | cut -f1)" "$rsec"
median=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
printf 'prune / copy: median %.2f over %d paired runs (target <= 2)\n' "$median" "$runs"
rm -rf "$work/student.dd"
