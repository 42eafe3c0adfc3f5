#!/usr/bin/env bash
# A/B of training precision: the tiny recipe's student (the committed tiny
# teacher pruned to half its width) distilled from the tiny teacher on Go
# source with a cosine schedule that ends at a learning rate of 1e-6, three
# ways on the same tokens:
#
#   cpu     --device cpu: float32 everywhere (the reference)
#   mixed   --device cuda with the defaults: bf16 weights and activations,
#           float32 gradient accumulation, master weights and Adam moments
#   bf16    --device cuda, all-bf16: master_weights false, grad_dtype bf16,
#           state_dtype bf16 (bf16 weights updated in place with
#           stochastic rounding)
#
# --device cuda runs on the CPU stand-ins for the CUDA libraries
# (backend/cuda/emu, built here unless DEVICE_LIBS names their folder):
# kernels compiled as host code, bfloat16 storage as on a GPU; with
# DEVICE_LIBS=gpu, on the GPU the system's CUDA libraries drive. The stand-ins are ~100x slower than the CPU backend, so the run is
# small: micro-batches of 1 × 64 tokens, 16 accumulated per step (the
# effect of bf16 accumulation grows with their number), STEPS steps.
#
# Prints each arm's final validation loss (the curves' sample) and its loss
# on the whole held-out split, and draws the validation curves into
# docs/numerics-loss.png. Usage: bench/numerics.sh [STEPS, default 48]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-48}
work=${WORK:-bench/out/numerics}
teacher=models/tiny-teacher
mkdir -p .bin "$work"
CGO_ENABLED=0 go build -o .bin/minitron ./cmd/minitron
m=$PWD/.bin/minitron
if [ -z "${DEVICE_LIBS:-}" ]; then
  DEVICE_LIBS=$PWD/$work/emu
  bash backend/cuda/emu/build.sh "$DEVICE_LIBS"
fi
src=$(go env GOROOT)/src
if [ ! -f "$work/data/manifest.json" ]; then
  $m data prepare --tokenizer "$teacher" --input "$src/go" --input "$src/strings" --input "$src/fmt" \
    --input "$src/sort" --input "$src/bytes" --include '*.go' --out "$work/data"
fi
if [ ! -f "$work/pruned/config.json" ]; then
  $m importance --model "$teacher" --calib "$work/data" --samples 32 --seq-len 256 --seed 0 --out "$work/scores.safetensors"
  $m prune --model "$teacher" --scores "$work/scores.safetensors" --hidden-size 96 --num-attention-heads 4 \
    --intermediate-size 384 --out "$work/pruned"
fi
path=$(cd "$work" && pwd)
cat >"$work/ab.yaml" <<EOF
model: {checkpoint: $path/pruned, tokenizer: $PWD/$teacher}
data:
  datasets: [{path: $path/data, weight: 1.0}]
  seq_len: 32
  val_fraction: 0.02
  seed: 1234
train: {micro_batch: 1, accumulation: 16, steps: $steps}
optimizer: {lr: 2.0e-3, min_lr: 1.0e-6, warmup: 5, schedule: cosine, weight_decay: 0.1, clip: 1.0}
eval: {every: $((steps / 12)), batches: 16}
checkpoint: {every: $((steps / 4)), keep: 1, export_dtype: f32}
teacher: {model: $PWD/$teacher}
kd: {temperature: 1.0}
EOF

# arm NAME DEVICE [--set key=value]...: one distillation run (resumed if
# it was interrupted; nothing to do if it finished).
arm() {
  local name=$1 dev=$2 start=$SECONDS
  shift 2
  if [ "$dev" = cuda ] && [ "$DEVICE_LIBS" != gpu ]; then
    LD_LIBRARY_PATH="$DEVICE_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" MINITRON_CACHE="$path/kernels" \
      "$m" distill --config "$work/ab.yaml" --out "$work/$name" --set device=$dev "$@" >"$work/$name.log" 2>&1
  else
    "$m" distill --config "$work/ab.yaml" --out "$work/$name" --set device=$dev "$@" >"$work/$name.log" 2>&1
  fi
  echo "$name: $((SECONDS - start)) s" >>"$work/times.txt"
}
rm -f "$work/times.txt"
arm cpu cpu
# The two device arms side by side (each is one process).
arm mixed cuda &
arm bf16 cuda --set optimizer.master_weights=false --set optimizer.grad_dtype=bf16 --set optimizer.state_dtype=bf16 &
wait
cat "$work/times.txt"

$m plot --validation-only "$work/cpu" "$work/mixed" "$work/bf16" -o docs/numerics-loss.png
echo
printf '%-6s %-22s %s\n' arm "last validation loss" "whole held-out split (CPU, float32)"
for r in cpu mixed bf16; do
  last=$(grep '"val_loss"' "$work/$r/metrics.jsonl" | tail -1 | sed 's/.*"val_loss":\([0-9.]*\).*/\1/')
  whole=$($m eval --model "$work/$r/final" --data "$work/data" --seq-len 32 --val-fraction 0.02 --sequences 0 --micro-batch 16 |
    sed 's/^.*(val split): //')
  printf '%-6s %-22s %s\n' "$r" "$last" "$whole"
done
echo "curves: docs/numerics-loss.png; runs in $work"
