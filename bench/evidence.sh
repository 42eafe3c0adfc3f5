#!/usr/bin/env bash
# Evidence that pruning + distillation beats training from scratch, on real
# data at a tiny scale: the committed tiny teacher (models/tiny-teacher) is
# pruned to half its width, and four students of that same shape train on
# the same Go source tokens with the same optimizer, steps and batch:
#
#   a  pruned weights, distilled from the teacher (forward KL on logits)
#   b  pruned weights, trained with next-token cross-entropy
#   c  random weights, distilled from the teacher
#   d  random weights, trained with cross-entropy
#
# It prints each run's final validation loss (the student's cross-entropy
# on the same held-out sequences) and draws the four validation curves
# into docs/evidence-loss.png. The paper's ordering is a < b, c < d.
#
# Needs: Go (its $(go env GOROOT)/src is the corpus). About 25 minutes on 2
# cores. Usage: bench/evidence.sh [STEPS, default 400]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-400}
work=${WORK:-bench/out/evidence}
teacher=models/tiny-teacher
mkdir -p .bin "$work"
CGO_ENABLED=0 go build -o .bin/minitron ./cmd/minitron
m=.bin/minitron
if [ ! -f "$work/data/manifest.json" ]; then
  $m data prepare --tokenizer "$teacher" --input "$(go env GOROOT)/src" --include '*.go' --out "$work/data"
fi
if [ ! -f "$work/pruned/config.json" ]; then
  $m importance --model "$teacher" --calib "$work/data" --samples 64 --seq-len 256 --seed 0 --out "$work/scores.safetensors"
  $m prune --model "$teacher" --scores "$work/scores.safetensors" --hidden-size 96 --num-attention-heads 4 \
    --intermediate-size 384 --out "$work/pruned"
fi

# config NAME INIT TEACHER: a run's YAML. INIT is "checkpoint" (the pruned
# weights) or "config" (fresh weights of the pruned shape); TEACHER is yes/no.
config() {
  local init=$2 kd=$3 path
  path=$(cd "$work" && pwd)
  {
    echo "model:"
    if [ "$init" = checkpoint ]; then echo "  checkpoint: $path/pruned"; else echo "  config: $path/pruned/config.json"; echo "  init_seed: 1"; fi
    echo "  tokenizer: $PWD/$teacher"
    echo "data:"
    echo "  datasets: [{path: $path/data, weight: 1.0}]"
    echo "  seq_len: 256"
    echo "  val_fraction: 0.01"
    echo "  seed: 1234"
    echo "train: {micro_batch: 16, steps: $steps}"
    echo "optimizer: {lr: 2.0e-3, min_lr: 2.0e-4, warmup: 20, schedule: cosine, weight_decay: 0.1, clip: 1.0}"
    echo "eval: {every: $((steps / 8)), batches: 16}"
    echo "checkpoint: {every: $((steps / 2)), keep: 1}"
    if [ "$kd" = yes ]; then
      echo "teacher: {model: $PWD/$teacher}"
      echo "kd: {temperature: 1.0}"
    fi
  } >"$work/$1.yaml"
}

config a-pruned-distilled checkpoint yes
config b-pruned-trained checkpoint no
config c-random-distilled config yes
config d-random-trained config no
$m distill --config "$work/a-pruned-distilled.yaml" --out "$work/a-pruned-distilled"
$m train --config "$work/b-pruned-trained.yaml" --out "$work/b-pruned-trained"
$m distill --config "$work/c-random-distilled.yaml" --out "$work/c-random-distilled"
$m train --config "$work/d-random-trained.yaml" --out "$work/d-random-trained"

mkdir -p docs
$m plot --validation-only "$work/a-pruned-distilled" "$work/b-pruned-trained" "$work/c-random-distilled" "$work/d-random-trained" -o docs/evidence-loss.png
echo
# The final models on the whole held-out split (the curves sample it).
for r in a-pruned-distilled b-pruned-trained c-random-distilled d-random-trained; do
  printf '%-22s ' "$r"
  $m eval --model "$work/$r/final" --data "$work/data" --seq-len 256 --val-fraction 0.01 --sequences 0 --micro-batch 16 |
    sed 's/^.*(val split): //'
done
echo "curves: docs/evidence-loss.png; runs in $work"
