#!/usr/bin/env bash
# Tokenizer throughput, side by side with the sentencepiece library's own
# spm_encode (Debian: apt install sentencepiece), on real text: Go source
# from $(go env GOROOT)/src, one sentence per line as spm_encode reads it.
# minitron runs single-threaded (GOMAXPROCS=1) and on all cores.
#
# Usage: bench/tokenize.sh [MB of text, default 16]
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${1:-16}
command -v spm_encode >/dev/null || { echo "bench/tokenize.sh: spm_encode not found (apt install sentencepiece)" >&2; exit 1; }
mkdir -p .bin bench/out
CGO_ENABLED=0 go build -o .bin/minitron ./cmd/minitron
corpus=bench/out/go-src-lines.txt
if [ ! -s "$corpus" ] || [ "$(( $(stat -c %s "$corpus") / 1048576 ))" -lt "$mb" ]; then
  { find "$(go env GOROOT)/src" -name "*.go" -print0 | sort -z | xargs -0 cat || true; } | head -c $((mb * 1048576)) > "$corpus"
fi
bytes=$(stat -c %s "$corpus")
secs() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
rate() { echo "scale=2; $bytes / 1048576 / $1" | bc -l; }
printf 'corpus: %s MB of Go source, %d lines, %s cores\n' "$(rate 1)" "$(wc -l < "$corpus")" "$(nproc)"
printf '%-20s %14s %14s %14s %8s\n' model spm_encode "minitron x1" "minitron x$(nproc)" "x1 ratio"
for m in testdata/tokenizer/*.model; do
  name=$(basename "$m" .model)
  # Same output, checked on the way.
  spm_encode --model "$m" --output_format id < "$corpus" > bench/out/ref.ids
  .bin/minitron tokenize --tokenizer "$m" --lines < "$corpus" > bench/out/ours.ids
  cmp -s bench/out/ref.ids bench/out/ours.ids || { echo "$name: ids differ from spm_encode" >&2; exit 1; }
  ref=$(secs spm_encode --model "$m" --output_format id < "$corpus")
  one=$(secs env GOMAXPROCS=1 .bin/minitron tokenize --tokenizer "$m" --lines < "$corpus")
  all=$(secs .bin/minitron tokenize --tokenizer "$m" --lines < "$corpus")
  printf '%-20s %9s MB/s %9s MB/s %9s MB/s %7.2fx\n' "$name" "$(rate "$ref")" "$(rate "$one")" "$(rate "$all")" "$(echo "$ref / $one" | bc -l)"
done
