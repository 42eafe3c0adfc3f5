#!/usr/bin/env bash
# GPU checks and benchmarks in one run: the CUDA backend's conformance suite
# and fixture parity, the commands end to end with --device cuda, and the
# benchmarks beside PyTorch (transformers, bf16, sdpa) on the same GPU,
# printed as ratios ours / PyTorch.
#
# It builds nothing, so it runs on a GPU machine without Go. Build first, on
# any machine:
#   CGO_ENABLED=0 go build -o .bin/minitron ./cmd/minitron
#   CGO_ENABLED=0 go test -c -o .bin/cuda.test ./backend/cuda
# then, on the GPU machine, from the repository root:
#   bench/gpu.sh [OUTDIR]            (default bench/out/gpu)
# Steps: STEPS="check e2e matmul attention model" by default; set STEPS to a subset.
# Needs: the NVIDIA driver, CUDA 12+ NVRTC and cuBLAS (found through
# LD_LIBRARY_PATH, $CUDA_HOME, /usr/local/cuda*, or Python's nvidia/*/lib),
# and python3 with torch and transformers for the PyTorch side.
set -u
cd "$(dirname "$0")/.."
out=${1:-bench/out/gpu}
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=${PYTHON:-python3}
steps=${STEPS:-check e2e matmul attention model}
for d in /usr/local/cuda-13.0/targets/x86_64-linux/lib /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
export MINITRON_CACHE=${MINITRON_CACHE:-$out/cache}
bin=$PWD/.bin/minitron
summary=$out/summary.txt
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }

# run NAME TIMEOUT CMD...: logs to $out/NAME.log, notes the exit status.
run() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  note "$(printf '%-28s exit %3d  %4ds' "$name" "$rc" $((SECONDS - t0)))"
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

[ -x "$bin" ] || { echo "bench/gpu.sh: $bin is missing; build it first (see the top of this file)" >&2; exit 1; }
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
note "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
note "$("$py" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>&1 | tail -1)"

for step in $steps; do
  case $step in
  check)
    # The conformance suite (every op against float64 references, bf16
    # tolerances) and the fixtures' logits, loss and gradients.
    if [ -x .bin/cuda.test ]; then
      (cd backend/cuda && run conformance 600 ../../.bin/cuda.test -test.v -test.run 'GPU')
      grep -E '^(--- FAIL|FAIL|ok|PASS)|relative error' "$out/conformance.log" | head -40 >>"$summary"
    else
      note "conformance: .bin/cuda.test missing (CGO_ENABLED=0 go test -c -o .bin/cuda.test ./backend/cuda)"
    fi
    ;;
  e2e)
    tiny=testdata/hf/nemotron-tiny
    work=$(mktemp -d)
    "$py" - "$work/in.safetensors" <<'EOF' >/dev/null 2>&1
import sys, struct, json
ids = [[1, 5, 9, 2, 7, 3, 8, 4]] * 2
hdr = json.dumps({"input_ids": {"dtype": "I64", "shape": [2, 8], "data_offsets": [0, 128]}}).encode()
hdr += b" " * (-len(hdr) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(hdr)) + hdr + b"".join(struct.pack("<q", x) for r in ids for x in r))
EOF
    run e2e-logits 120 "$bin" logits --device cuda --model $tiny --input "$work/in.safetensors" --output "$work/out.safetensors" --grads
    if [ -d models/tiny-teacher ]; then
      run e2e-sample 120 "$bin" sample --device cuda --model models/tiny-teacher --prompt 'func main() {' --max-new-tokens 32 --temperature 0
      # The whole pipeline (importance, prune, distill, eval, export) on this
      # repository's Go files: the GPU machine may have no Go installation
      # to take the standard library from.
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
eval: {sequences: 32}
export: {formats: [hf, gguf], dtype: bf16}
RECIPE
      run e2e-run 600 "$bin" run "$work/recipe.yaml"
      grep -iE 'loss|perplexity|tok/s' "$out/e2e-run.log" | tail -8 >>"$summary"
    fi
    rm -rf "$work"
    ;;
  matmul)
    # The model's GEMM shapes, 4×1024 tokens: QKV, attention output, MLP up
    # and down of the 4B student, and its LM head.
    for s in "4096 4096 3072" "4096 3072 3072" "4096 9216 3072" "4096 3072 9216" "4096 256000 3072"; do
      set -- $s
      run "matmul-ours-$1x$2x$3" 120 "$bin" bench matmul --device cuda --m "$1" --n "$2" --k "$3" --json
      run "matmul-torch-$1x$2x$3" 120 "$py" bench/torch_gpu.py matmul "$1" "$2" "$3" --json
      o=$(json "$out/matmul-ours-$1x$2x$3.log" gflops)
      t=$(json "$out/matmul-torch-$1x$2x$3.log" value)
      [ -n "$o" ] && o=$("$py" -c "print($o/1000)")
      note "$(printf 'matmul %-18s ours %8s TFLOP/s  torch %8s TFLOP/s  %s' "$1x$2x$3" "$o" "$t" "$(ratio "$o" "$t")")"
    done
    ;;
  attention)
    # Attention alone against PyTorch's SDPA (flash backend) at the student's
    # and the teacher's heads: 4×1024 and 1×4096 tokens, forward and
    # backward; then batch-1 decoding after 4095 and 16383 cached keys
    # (split over the keys), as key/value bytes read per second.
    for shp in minitron-4b nemotron-15b; do
      for bt in "4 1024" "1 4096"; do
        set -- $bt
        tag=$shp-$1x$2
        run "attn-ours-$tag" 120 "$bin" bench attention --device cuda --shape "$shp" --batch "$1" --seq "$2" --min-time 2s --json
        run "attn-torch-$tag" 120 "$py" bench/torch_gpu.py attention "$shp" --batch "$1" --seq "$2" --min-time 2 --json
        of=$(json "$out/attn-ours-$tag.log" forward_tflops) ob=$(json "$out/attn-ours-$tag.log" backward_tflops)
        tf=$(json "$out/attn-torch-$tag.log" forward_tflops) tb=$(json "$out/attn-torch-$tag.log" backward_tflops)
        note "$(printf 'attention %-22s fwd ours %6s torch %6s TFLOP/s %6s  bwd ours %6s torch %6s TFLOP/s %6s' "$tag" "$(printf %.0f "${of:-0}")" "$(printf %.0f "${tf:-0}")" "$(ratio "$of" "$tf")" "$(printf %.0f "${ob:-0}")" "$(printf %.0f "${tb:-0}")" "$(ratio "$ob" "$tb")")"
        note "$(printf '          %-22s ms: fwd ours %s torch %s  bwd ours %s torch %s' "$tag" "$(json "$out/attn-ours-$tag.log" forward_ms)" "$(json "$out/attn-torch-$tag.log" forward_ms)" "$(json "$out/attn-ours-$tag.log" backward_ms)" "$(json "$out/attn-torch-$tag.log" backward_ms)")"
      done
    done
    for p in 4095 16383; do
      run "attn-decode-ours-$p" 120 "$bin" bench attention --device cuda --shape minitron-4b --batch 1 --seq 1 --past "$p" --min-time 2s --json
      run "attn-decode-torch-$p" 120 "$py" bench/torch_gpu.py attention minitron-4b --batch 1 --seq 1 --past "$p" --min-time 2 --json
      o=$(json "$out/attn-decode-ours-$p.log" kv_gbytes_per_second) t=$(json "$out/attn-decode-torch-$p.log" kv_gbytes_per_second)
      note "$(printf 'attention decode 4B past %-6s ours %s ms %s GB/s  torch %s ms %s GB/s  %s' "$p" "$(json "$out/attn-decode-ours-$p.log" forward_ms)" "$o" "$(json "$out/attn-decode-torch-$p.log" forward_ms)" "$t" "$(ratio "$o" "$t")")"
    done
    ;;
  model)
    common=(--device cuda --batch 4 --seq 1024 --min-time 5s --json)
    run fwd15b-ours 600 "$bin" bench forward --shape nemotron-15b "${common[@]}"
    run fwd15b-torch 600 "$py" bench/torch_gpu.py forward nemotron-15b --json
    note "teacher forward 15B   ours $(json "$out/fwd15b-ours.log" tokens_per_second) tok/s  torch $(json "$out/fwd15b-torch.log" value)  $(ratio "$(json "$out/fwd15b-ours.log" tokens_per_second)" "$(json "$out/fwd15b-torch.log" value)")"
    run train4b-ours 600 "$bin" bench train --shape minitron-4b "${common[@]}"
    run train4b-torch 600 "$py" bench/torch_gpu.py train minitron-4b --adamw --json
    note "student train 4B      ours $(json "$out/train4b-ours.log" tokens_per_second) tok/s  torch $(json "$out/train4b-torch.log" value)  $(ratio "$(json "$out/train4b-ours.log" tokens_per_second)" "$(json "$out/train4b-torch.log" value)")  peak $(json "$out/train4b-ours.log" peak_device_memory) B"
    run kd-ours 600 "$bin" bench kd --shape minitron-4b --teacher-shape nemotron-15b --state-dtype bf16 "${common[@]}"
    run kd-torch 600 "$py" bench/torch_gpu.py kd minitron-4b nemotron-15b --json
    note "KD step 4B<-15B       ours $(json "$out/kd-ours.log" tokens_per_second) tok/s  torch $(json "$out/kd-torch.log" value) ($(json "$out/kd-torch.log" measured))  $(ratio "$(json "$out/kd-ours.log" tokens_per_second)" "$(json "$out/kd-torch.log" value)")  peak $(json "$out/kd-ours.log" peak_device_memory) B"
    run decode4b-ours 300 "$bin" bench decode --shape minitron-4b --device cuda --prompt-tokens 16 --new-tokens 128 --min-time 5s --json
    run decode4b-torch 300 "$py" bench/torch_gpu.py decode minitron-4b --json
    note "decode 4B batch 1     ours $(json "$out/decode4b-ours.log" tokens_per_second) tok/s  torch $(json "$out/decode4b-torch.log" value)  $(ratio "$(json "$out/decode4b-ours.log" tokens_per_second)" "$(json "$out/decode4b-torch.log" value)")"
    ;;
  *) echo "bench/gpu.sh: unknown step $step (check, e2e, matmul, attention, model)" >&2; exit 2 ;;
  esac
done
echo "logs in $out"
