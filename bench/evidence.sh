#!/usr/bin/env bash
# Evidence for the method at a tiny scale, on real data: the committed tiny
# teacher (models/tiny-teacher) is pruned to half its width, and five
# students of that same shape train on the same Go source tokens with the
# same optimizer, steps and batch:
#
#   a  importance-pruned weights, distilled from the teacher (forward KL)
#   b  importance-pruned weights, trained with next-token cross-entropy
#   c  random weights, distilled from the teacher
#   d  random weights, trained with cross-entropy
#   e  randomly pruned weights (random channels, heads and neurons at the
#      same shape), distilled from the teacher
#
# a against e is what the importance scores are worth; a against c what
# inheriting the teacher's weights is worth; a against b what distillation
# is worth. Every arm runs with SEEDS seeds: seed s draws the calibration
# sample (from the training split only), the random pruning, the random
# initialization and the training data order. The final models are scored
# on the whole held-out split; the script prints each run's loss and each
# arm's mean ± sample standard deviation, writes them to
# $WORK/results.tsv, and draws seed 1's validation curves into
# docs/evidence-loss.png. The corpus is identified by the SHA-256 of its
# token shards.
#
# Needs: Go (its $(go env GOROOT)/src is the corpus). About 6 minutes per
# run of 400 steps on 2 idle cores (15 runs with 3 seeds).
# Usage: bench/evidence.sh [STEPS, default 400] [SEEDS, default 3]
# (WORK=DIR for the runs, PLOT=FILE for the curves, JOBS=N to train N
# runs at once, VAL_BATCHES and FINAL_SEQS to shorten the evaluations; the
# figures do not depend on JOBS; a smoke test:
# WORK=/tmp/ev PLOT=/tmp/ev/loss.png VAL_BATCHES=1 FINAL_SEQS=16 bench/evidence.sh 2 2)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-400}
seeds=${2:-3}
work=${WORK:-bench/out/evidence}
plot=${PLOT:-docs/evidence-loss.png}
val_batches=${VAL_BATCHES:-16} # validation batches of the logged curves
final_seqs=${FINAL_SEQS:-0}    # held-out sequences of the final scores (0: all)
jobs=${JOBS:-1}                # runs at once (logs then go to WORK/RUN.log)
teacher=models/tiny-teacher
seq=256
val=0.01
mkdir -p .bin "$work"
CGO_ENABLED=0 go build -o .bin/minitron ./cmd/minitron
m=.bin/minitron
if [ ! -f "$work/data/manifest.json" ]; then
  $m data prepare --tokenizer "$teacher" --input "$(go env GOROOT)/src" --include '*.go' --out "$work/data"
fi
corpus=$(cat "$work"/data/shard-*.arrow | sha256sum | cut -d' ' -f1)
echo "corpus: $(go env GOROOT)/src ($(go version | cut -d' ' -f3)), token shards sha256 $corpus"
path=$(cd "$work" && pwd)

# config NAME START TEACHER SEED: a run's YAML. START is "checkpoint DIR"
# (pruned weights) or "random" (fresh weights of the pruned shape); TEACHER
# is yes/no.
config() {
  local name=$1 start=$2 kd=$3 seed=$4
  {
    echo "model:"
    case "$start" in
      random) echo "  config: $path/pruned-$seed/config.json"; echo "  init_seed: $seed" ;;
      *) echo "  checkpoint: $path/$start" ;;
    esac
    echo "  tokenizer: $PWD/$teacher"
    echo "data:"
    echo "  datasets: [{path: $path/data, weight: 1.0}]"
    echo "  seq_len: $seq"
    echo "  val_fraction: $val"
    echo "  seed: $((1233 + seed))"
    echo "train: {micro_batch: 16, steps: $steps}"
    echo "optimizer: {lr: 2.0e-3, min_lr: 2.0e-4, warmup: $((steps < 40 ? 1 : 20)), schedule: cosine, weight_decay: 0.1, clip: 1.0}"
    echo "eval: {every: $((steps >= 8 ? steps / 8 : 1)), batches: $val_batches}"
    echo "checkpoint: {every: $((steps >= 2 ? steps / 2 : 1)), keep: 1}"
    if [ "$kd" = yes ]; then
      echo "teacher: {model: $PWD/$teacher}"
      echo "kd: {temperature: 1.0}"
    fi
  } >"$work/$name.yaml"
}

# run NAME trains or distills one run (resuming a finished or interrupted one).
run() {
  case "$1" in
    *distilled*) $m distill --config "$work/$1.yaml" --out "$work/$1" ;;
    *) $m train --config "$work/$1.yaml" --out "$work/$1" ;;
  esac
}

arms="a-pruned-distilled b-pruned-trained c-random-distilled d-random-trained e-randompruned-distilled"
pids=()
for s in $(seq 1 "$seeds"); do
  if [ ! -f "$work/pruned-$s/config.json" ]; then
    $m importance --model "$teacher" --calib "$work/data" --samples 64 --seq-len $seq --seed "$s" --val-fraction $val \
      --out "$work/scores-$s.safetensors"
    $m prune --model "$teacher" --scores "$work/scores-$s.safetensors" --hidden-size 96 --num-attention-heads 4 \
      --intermediate-size 384 --out "$work/pruned-$s"
  fi
  if [ ! -f "$work/randompruned-$s/config.json" ]; then
    $m prune --model "$teacher" --random-seed "$s" --hidden-size 96 --num-attention-heads 4 \
      --intermediate-size 384 --out "$work/randompruned-$s"
  fi
  config "a-pruned-distilled-$s" "pruned-$s" yes "$s"
  config "b-pruned-trained-$s" "pruned-$s" no "$s"
  config "c-random-distilled-$s" random yes "$s"
  config "d-random-trained-$s" random no "$s"
  config "e-randompruned-distilled-$s" "randompruned-$s" yes "$s"
  for a in $arms; do
    r="$a-$s"
    if [ "$jobs" -le 1 ]; then
      run "$r"
      continue
    fi
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
      wait -n
    done
    run "$r" >"$work/$r.log" 2>&1 &
    pids+=($!)
  done
done
for p in "${pids[@]}"; do
  wait "$p" # a failed run fails the script
done

mkdir -p "$(dirname "$plot")"
$m plot --validation-only $(for a in $arms; do echo "$work/$a-1"; done) -o "$plot"
echo
# The final models on the whole held-out split (the curves sample it).
printf 'arm\tseed\tloss\n' >"$work/results.tsv"
for a in $arms; do
  for s in $(seq 1 "$seeds"); do
    loss=$($m eval --model "$work/$a-$s/final" --data "$work/data" --seq-len $seq --val-fraction $val --sequences "$final_seqs" --micro-batch 16 |
      grep -o 'loss [0-9.]*' | head -1 | cut -d' ' -f2)
    printf '%s\t%s\t%s\n' "$a" "$s" "$loss" | tee -a "$work/results.tsv"
  done
done
echo
echo "held-out loss per arm (mean ± sample sd over $seeds seeds; corpus $corpus):"
awk -F'\t' 'NR > 1 { n[$1]++; s[$1] += $3; q[$1] += $3 * $3; if (!($1 in o)) { o[$1] = ++k; name[k] = $1 } }
  END { for (i = 1; i <= k; i++) { a = name[i]; mu = s[a] / n[a]; sd = n[a] > 1 ? sqrt((q[a] - n[a] * mu * mu) / (n[a] - 1)) : 0;
        printf "  %-26s %.4f ± %.4f (n=%d)\n", a, mu, sd, n[a] } }' "$work/results.tsv"
echo "curves: $plot (seed 1); runs in $work"
