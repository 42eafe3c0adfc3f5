#!/usr/bin/env bash
# Scaling of data-parallel distillation on one machine: the same
# distillation config for STEPS steps on one GPU and on every visible GPU
# (or DEVICE=cuda:0,1,...), one after the other in the same run; prints
# tokens/s of each (steps after the first WARM not timed) and the scaling
# efficiency tok/s(N GPUs) / (N × tok/s(1 GPU)).
#
#   bench/dp.sh CONFIG.yaml [STEPS]        (default 12 steps, WARM=2)
#
# The config's train.accumulation must be a multiple of the number of GPUs;
# validation and intermediate checkpoints are turned off. MINITRON is the
# binary (default: built from this tree). For several nodes, start
# `minitron distill` with the launcher as recipes/examples/ shows and read
# tok_per_s from the run's metrics.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: bench/dp.sh CONFIG.yaml [STEPS]" >&2
  exit 2
fi
cfg=$1
steps=${2:-12}
warm=${WARM:-2}
device=${DEVICE:-cuda}
py=${PYTHON:-python3}
bin=${MINITRON:-}
if [ -z "$bin" ]; then
  mkdir -p .bin
  CGO_ENABLED=0 go build -o .bin/minitron ./cmd/minitron
  bin=.bin/minitron
fi
out=$(mktemp -d "${TMPDIR:-/tmp}/minitron-dp.XXXXXX")
trap 'rm -rf "$out"' EXIT

# rate DIR: tokens/s over the steps after the first $warm.
rate() {
  "$py" - "$1/metrics.jsonl" "$warm" <<'PY'
import json, sys
ms = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
w = int(sys.argv[2])
a, b = ms[w - 1], ms[-1]
print((b["tokens"] - a["tokens"]) / (b["elapsed_s"] - a["elapsed_s"]))
PY
}

run() { # name device
  "$bin" distill --config "$cfg" --out "$out/$1" --set "device=$2" --set "train.steps=$steps" \
    --set eval.every=0 --set eval.batches=0 --set checkpoint.every=0 2>"$out/$1.log" >/dev/null || {
    tail -5 "$out/$1.log" >&2
    exit 1
  }
}

run one cuda:0
run all "$device"
gpus=$(sed -n 's/.*as ranks 0 to [0-9]* of \([0-9]*\).*/\1/p' "$out/all.log" | head -1)
gpus=${gpus:-1}
one=$(rate "$out/one")
all=$(rate "$out/all")
printf 'distill %s, %s steps (%s timed)\n' "$cfg" "$steps" "$((steps - warm))"
printf '1 GPU   %10.0f tok/s\n' "$one"
printf '%s GPUs %10.0f tok/s   scaling efficiency %.3f\n' "$gpus" "$all" "$("$py" -c "print($all / ($gpus * $one))")"
