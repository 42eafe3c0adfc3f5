#!/usr/bin/env bash
# Load test of `minitron serve`: starts the server on a model (default the
# embedded tiny teacher), then measures throughput and p50/p99 latency at
# 1, 4 and 16 concurrent clients, and stops it.
#
# Usage: bench/serve.sh [MODEL_DIR] [REQUESTS per level, default 48]
#
# BASELINE=/path/to/other/minitron measures that binary too, alternating
# with this tree's ROUNDS times (default 2), so both see the same machine
# load; compare the two in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/tiny-teacher}
requests=${2:-48}
port=${PORT:-18080}
mkdir -p .bin bench/out
CGO_ENABLED=0 go build -o .bin/minitron ./cmd/minitron
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; wait 2>/dev/null' EXIT

# measure BINARY LABEL: one server, three concurrency levels.
measure() {
  "$1" serve --model "$model" --addr "127.0.0.1:$port" --slots 16 --context 512 2> "bench/out/serve-$2.log" &
  pid=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "== $2 ($1)"
  .bin/minitron bench serve --url "http://127.0.0.1:$port" --concurrency 1,4,16 --requests "$requests" --max-tokens 32
  kill $pid
  wait $pid 2>/dev/null || true
  pid=""
}

echo "model $model, $(nproc) cores, $requests requests of 32 tokens per level"
if [ -z "${BASELINE:-}" ]; then
  measure .bin/minitron this
  exit 0
fi
for r in $(seq "${ROUNDS:-2}"); do
  measure "$BASELINE" "baseline-$r"
  measure .bin/minitron "this-$r"
done
