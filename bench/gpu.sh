#!/usr/bin/env bash
# GPU checks and benchmarks in one run: the CUDA backend's conformance suite
# and fixture parity, the commands end to end with --device cuda, and the
# benchmarks beside PyTorch (transformers, bf16, sdpa) on the same GPU,
# printed as ratios ours / PyTorch.
#
# It builds nothing, so it runs on a GPU machine without Go. On any machine
# with Go, first:
#   bench/gpu-pack.sh          (gzipped binaries in .bin/, under 64 MiB with the tree)
# then copy the repository (with .bin/) to the GPU machine and, from its root:
#   bench/gpu.sh [OUTDIR]      (default bench/out/gpu)
# The .gz files are unpacked on first use. Everything is logged under
# OUTDIR (one log per command, summary.txt); the exit status is 1 if any
# check or benchmark failed.
#
# Steps: STEPS="check optimizer e2e matmul attention model" by default, in that order; set STEPS
# to a subset. Each step is a function step_NAME below; to add one, write
# the function and add its name to the default list. Each command has its
# own time limit, and the whole run stops starting commands once BUDGET
# seconds (default 540) have passed, so one run fits a 10-minute slot:
# a command is given at most what is left, and one that cannot get 15 s is
# skipped (noted in the summary).
#
# Needs: the NVIDIA driver, CUDA 12+ NVRTC and cuBLAS (found as `minitron
# devices` shows: LD_LIBRARY_PATH, $CUDA_HOME, /usr/local/nvidia,
# /usr/local/cuda*, the loader cache, or a Python environment's
# nvidia/*/lib), and for the PyTorch side a Python with torch and
# transformers: $PYTHON, else /opt/torch/.venv/bin/python if it exists,
# else python3.
set -u
cd "$(dirname "$0")/.."
out=${1:-bench/out/gpu}
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -z "${PYTHON:-}" ] && [ -x /opt/torch/.venv/bin/python ]; then
  PYTHON=/opt/torch/.venv/bin/python
fi
py=${PYTHON:-python3}
steps=${STEPS:-check optimizer e2e matmul attention model}
deadline=$((SECONDS + ${BUDGET:-540}))
export MINITRON_CACHE=${MINITRON_CACHE:-$out/cache}
bin=$PWD/.bin
summary=$out/summary.txt
: >"$summary"
failed=0
note() { echo "$*" | tee -a "$summary"; }

# run NAME LIMIT CMD...: runs CMD with a time limit of LIMIT seconds (less
# when the budget has less left), logging to $out/NAME.log; notes the exit
# status (124: out of time) and returns it.
run() {
  local name=$1 limit=$2
  shift 2
  local left=$((deadline - SECONDS - 5))
  : >"$out/$name.log" # no stale log from an earlier run into the same folder
  if [ "$left" -lt 15 ]; then
    note "$(printf '%-28s skipped: the %ss budget is spent' "$name" "${BUDGET:-540}")"
    failed=1
    return 125
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  note "$(printf '%-28s exit %3d  %4ds (limit %ds)' "$name" "$rc" $((SECONDS - t0)) "$limit")"
  [ "$rc" -eq 0 ] || failed=1
  return $rc
}

# json FILE KEY: a field of the last JSON line of a log.
json() { "$py" -c 'import json,sys
lines=[l for l in open(sys.argv[1]) if l.startswith("{")]
d=json.loads(lines[-1]) if lines else {}
v=d.get(sys.argv[2]); print("" if v is None else v)' "$1" "$2" 2>/dev/null; }

ratio() { "$py" -c 'import sys
a,b=sys.argv[1],sys.argv[2]
print(f"{float(a)/float(b):.2f}x" if a and b else "n/a")' "$1" "$2" 2>/dev/null || echo n/a; }

# unpack: .bin/NAME.gz → .bin/NAME, when missing or older than the .gz.
unpack() {
  local gz f
  for gz in "$bin"/*.gz; do
    [ -e "$gz" ] || continue
    f=${gz%.gz}
    if [ ! -x "$f" ] || [ "$gz" -nt "$f" ]; then
      if command -v gzip >/dev/null; then
        gzip -dc "$gz" >"$f.tmp"
      else
        "$py" -c 'import gzip,shutil,sys; shutil.copyfileobj(gzip.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$gz" "$f.tmp"
      fi && chmod +x "$f.tmp" && mv "$f.tmp" "$f" || { echo "bench/gpu.sh: unpacking $gz failed" >&2; exit 1; }
    fi
  done
}

# --- steps -----------------------------------------------------------------

# check: the test binaries' GPU tests (the conformance suite, every op
# against float64 references with bf16 tolerances; the fixtures' logits,
# loss and gradients; every GPU opening), with MINITRON_REQUIRE_GPU=1 so a
# missing GPU or library fails instead of skipping. .bin/tests.txt lists
# each test binary and its package directory.
step_check() {
  local name dir
  [ -s "$bin/tests.txt" ] || { note "check: $bin/tests.txt missing (run bench/gpu-pack.sh)"; failed=1; return; }
  while read -r name dir; do
    [ -n "$name" ] || continue
    cd "$dir" || { note "check: no folder $dir for $name"; failed=1; continue; }
    MINITRON_REQUIRE_GPU=1 run "test-${name%.test}" 180 "$bin/$name" -test.v -test.run '^TestGPU' -test.timeout 170s
    cd - >/dev/null
    local log=$out/test-${name%.test}.log
    grep -E '^(--- FAIL|FAIL|ok|PASS)|relative error|^    --- FAIL' "$log" | head -40 | tee -a "$summary"
    if ! grep -q -- '--- PASS: TestGPU' "$log"; then
      note "test-${name%.test}: no GPU test passed"
      failed=1
    fi
  done <"$bin/tests.txt"
}

# optimizer: the training step's device work beside a device copy (AdamW
# in bf16 and with float32 master weights, the gradient norm; GB/s), and
# the error of 1000 sub-unit updates in all-bf16 against master weights.
step_optimizer() {
  local dir
  dir=$(awk '$1 == "cuda.test" {print $2}' "$bin/tests.txt" 2>/dev/null)
  [ -n "$dir" ] || { note "optimizer: cuda.test is not in $bin/tests.txt"; failed=1; return; }
  cd "$dir" || return
  run optimizer-bench 90 "$bin/cuda.test" -test.run '^$' -test.bench 'GPUOptimizer|GPUSubULPUpdates'
  cd - >/dev/null
  grep -E '^Benchmark' "$out/optimizer-bench.log" | tee -a "$summary"
}

# e2e: the commands on --device cuda: logits and gradients of a fixture,
# sampling, and the whole pipeline (importance, prune, distill, eval,
# export) on this repository's Go files (the GPU machine may have no Go
# installation to take the standard library from).
step_e2e() {
  local tiny=testdata/hf/nemotron-tiny work
  work=$(mktemp -d)
  "$py" - "$work/in.safetensors" <<'EOF' >/dev/null 2>&1
import sys, struct, json
ids = [[1, 5, 9, 2, 7, 3, 8, 4]] * 2
hdr = json.dumps({"input_ids": {"dtype": "I64", "shape": [2, 8], "data_offsets": [0, 128]}}).encode()
hdr += b" " * (-len(hdr) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(hdr)) + hdr + b"".join(struct.pack("<q", x) for r in ids for x in r))
EOF
  run e2e-logits 60 "$bin/minitron" logits --device cuda --model $tiny --input "$work/in.safetensors" --output "$work/out.safetensors" --grads
  if [ -d models/tiny-teacher ]; then
    run e2e-sample 60 "$bin/minitron" sample --device cuda --model models/tiny-teacher --prompt 'func main() {' --max-new-tokens 32 --temperature 0
    cat >"$work/recipe.yaml" <<RECIPE
name: gpu-e2e
teacher: $PWD/models/tiny-teacher
device: cuda
out: $work/run
data:
  datasets:
    - name: repo
      inputs: [$PWD]
      include: ["*.go"]
      weight: 1.0
  seq_len: 256
  val_fraction: 0.05
  seed: 1
calibration: {samples: 32, seq_len: 256, seed: 0}
prune: {hidden_size: 96, num_attention_heads: 4, intermediate_size: 384}
distill:
  train: {micro_batch: 16, steps: 60}
  optimizer: {lr: 2.0e-3, min_lr: 2.0e-4, warmup: 10}
  eval: {every: 30, batches: 4}
  checkpoint: {every: 30, keep: 1}
export: {formats: [hf, gguf], dtype: bf16}
RECIPE
    run e2e-run 180 "$bin/minitron" run "$work/recipe.yaml"
    grep -iE 'loss|val ce|perplexity|tok/s' "$out/e2e-run.log" | tail -8 | tee -a "$summary"
  fi
  rm -rf "$work"
}

# matmul: the model's GEMM shapes, 4×1024 tokens: QKV, attention output,
# MLP up and down of the 4B student, and its LM head.
step_matmul() {
  local s o t
  for s in "4096 4096 3072" "4096 3072 3072" "4096 9216 3072" "4096 3072 9216" "4096 256000 3072"; do
    set -- $s
    run "matmul-ours-$1x$2x$3" 30 "$bin/minitron" bench matmul --device cuda --m "$1" --n "$2" --k "$3" --min-time 1s --json
    run "matmul-torch-$1x$2x$3" 45 "$py" bench/torch_gpu.py matmul "$1" "$2" "$3" --min-time 1 --json
    o=$(json "$out/matmul-ours-$1x$2x$3.log" gflops)
    t=$(json "$out/matmul-torch-$1x$2x$3.log" value)
    [ -n "$o" ] && o=$("$py" -c "print(round($o/1000, 1))")
    note "$(printf 'matmul %-18s ours %8s TFLOP/s  torch %8s TFLOP/s  %s' "$1x$2x$3" "$o" "$t" "$(ratio "$o" "$t")")"
  done
}

# attention: attention alone against PyTorch's SDPA (flash backend) at the
# student's and the teacher's heads (24 and 48 heads in 8 KV groups, head
# dim 128), 4×1024 and 1×4096 tokens, forward and backward; then batch-1
# decoding of the student after 4095 and 16383 cached keys (split over the
# keys), as key/value bytes read per second.
step_attention() {
  local shp bt tag p of ob tf tb o t
  for shp in minitron-4b nemotron-15b; do
    for bt in "4 1024" "1 4096"; do
      set -- $bt
      tag=$shp-$1x$2
      run "attn-ours-$tag" 30 "$bin/minitron" bench attention --device cuda --shape "$shp" --batch "$1" --seq "$2" --min-time 1s --json
      run "attn-torch-$tag" 45 "$py" bench/torch_gpu.py attention "$shp" --batch "$1" --seq "$2" --min-time 1 --json
      of=$(json "$out/attn-ours-$tag.log" forward_tflops) ob=$(json "$out/attn-ours-$tag.log" backward_tflops)
      tf=$(json "$out/attn-torch-$tag.log" forward_tflops) tb=$(json "$out/attn-torch-$tag.log" backward_tflops)
      note "$(printf 'attention %-22s fwd ours %4.0f torch %4.0f TFLOP/s %6s   bwd ours %4.0f torch %4.0f TFLOP/s %6s' "$tag" "${of:-0}" "${tf:-0}" "$(ratio "$of" "$tf")" "${ob:-0}" "${tb:-0}" "$(ratio "$ob" "$tb")")"
      note "$(printf '          %-22s ms: fwd ours %s torch %s, bwd ours %s torch %s' "$tag" "$(json "$out/attn-ours-$tag.log" forward_ms)" "$(json "$out/attn-torch-$tag.log" forward_ms)" "$(json "$out/attn-ours-$tag.log" backward_ms)" "$(json "$out/attn-torch-$tag.log" backward_ms)")"
    done
  done
  for p in 4095 16383; do
    run "attn-decode-ours-$p" 30 "$bin/minitron" bench attention --device cuda --shape minitron-4b --batch 1 --seq 1 --past "$p" --min-time 1s --json
    run "attn-decode-torch-$p" 45 "$py" bench/torch_gpu.py attention minitron-4b --batch 1 --seq 1 --past "$p" --min-time 1 --json
    o=$(json "$out/attn-decode-ours-$p.log" kv_gbytes_per_second) t=$(json "$out/attn-decode-torch-$p.log" kv_gbytes_per_second)
    note "$(printf 'attention decode 4B past %-6s ours %s ms %s GB/s  torch %s ms %s GB/s  %s' "$p" "$(json "$out/attn-decode-ours-$p.log" forward_ms)" "$o" "$(json "$out/attn-decode-torch-$p.log" forward_ms)" "$t" "$(ratio "$o" "$t")")"
  done
}

# model: the 15B teacher's forward, the 4B student's training step, the KD
# step and the 4B greedy decode, 4×1024 tokens, random weights (drawing
# 15.6B of them takes much of the 15B steps' time).
step_model() {
  local common=(--device cuda --batch 4 --seq 1024 --min-time 2s --json)
  local tcommon=(--min-time 2 --json)
  run fwd15b-ours 120 "$bin/minitron" bench forward --shape nemotron-15b "${common[@]}"
  run fwd15b-torch 120 "$py" bench/torch_gpu.py forward nemotron-15b "${tcommon[@]}"
  note "teacher forward 15B   ours $(json "$out/fwd15b-ours.log" tokens_per_second) tok/s  torch $(json "$out/fwd15b-torch.log" value)  $(ratio "$(json "$out/fwd15b-ours.log" tokens_per_second)" "$(json "$out/fwd15b-torch.log" value)")"
  run train4b-ours 90 "$bin/minitron" bench train --shape minitron-4b "${common[@]}"
  run train4b-torch 90 "$py" bench/torch_gpu.py train minitron-4b --adamw "${tcommon[@]}"
  note "student train 4B      ours $(json "$out/train4b-ours.log" tokens_per_second) tok/s  torch $(json "$out/train4b-torch.log" value)  $(ratio "$(json "$out/train4b-ours.log" tokens_per_second)" "$(json "$out/train4b-torch.log" value)")  peak $(json "$out/train4b-ours.log" peak_device_memory) B"
  run kd-ours 150 "$bin/minitron" bench kd --shape minitron-4b --teacher-shape nemotron-15b --state-dtype bf16 "${common[@]}"
  run kd-torch 150 "$py" bench/torch_gpu.py kd minitron-4b nemotron-15b "${tcommon[@]}"
  note "KD step 4B<-15B       ours $(json "$out/kd-ours.log" tokens_per_second) tok/s  torch $(json "$out/kd-torch.log" value) ($(json "$out/kd-torch.log" measured))  $(ratio "$(json "$out/kd-ours.log" tokens_per_second)" "$(json "$out/kd-torch.log" value)")  peak $(json "$out/kd-ours.log" peak_device_memory) B"
  run decode4b-ours 60 "$bin/minitron" bench decode --shape minitron-4b --device cuda --prompt-tokens 16 --new-tokens 64 --min-time 2s --json
  run decode4b-torch 90 "$py" bench/torch_gpu.py decode minitron-4b --new-tokens 64 "${tcommon[@]}"
  note "decode 4B batch 1     ours $(json "$out/decode4b-ours.log" tokens_per_second) tok/s  torch $(json "$out/decode4b-torch.log" value)  $(ratio "$(json "$out/decode4b-ours.log" tokens_per_second)" "$(json "$out/decode4b-torch.log" value)")"
}

# --- main ------------------------------------------------------------------

for step in $steps; do
  declare -F "step_$step" >/dev/null || {
    echo "bench/gpu.sh: unknown step $step (have: $(declare -F | sed -n 's/^declare -f step_//p' | tr '\n' ' '))" >&2
    exit 2
  }
done
unpack
[ -x "$bin/minitron" ] || { echo "bench/gpu.sh: $bin/minitron is missing; run bench/gpu-pack.sh first (see the top of this file)" >&2; exit 1; }
[ -f "$bin/BUILD" ] && note "build: $(cat "$bin/BUILD")"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
note "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'nvidia-smi failed')"
head -12 "$out/nvidia-smi.txt"
note "python: $py: $("$py" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)' 2>&1 | tail -1)"
# Which CUDA libraries were found where, and whether the kernels compile
# and load on each GPU (this compiles them into the cache for what follows).
run devices 120 "$bin/minitron" devices
cat "$out/devices.log" | tee -a "$summary"
for step in $steps; do
  "step_$step"
done
note "total $SECONDS s; logs in $out"
exit $failed
