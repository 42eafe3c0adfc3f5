#!/usr/bin/env bash
# Load test of `minitron serve`: starts the server on a model (default the
# embedded tiny teacher), then measures throughput and p50/p99 latency at
# 1, 4 and 16 concurrent clients, and stops it.
#
# Usage: bench/serve.sh [MODEL_DIR] [REQUESTS per level, default 48]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/tiny-teacher}
requests=${2:-48}
port=${PORT:-18080}
mkdir -p .bin bench/out
CGO_ENABLED=0 go build -o .bin/minitron ./cmd/minitron
.bin/minitron serve --model "$model" --addr "127.0.0.1:$port" --slots 16 --context 512 2> bench/out/serve.log &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "model $model, $(nproc) cores, $requests requests of 32 tokens per level"
.bin/minitron bench serve --url "http://127.0.0.1:$port" --concurrency 1,4,16 --requests "$requests" --max-tokens 32
