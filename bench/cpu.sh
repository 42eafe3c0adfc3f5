#!/usr/bin/env bash
# Side-by-side CPU benchmark: minitron against PyTorch eager on the same
# machine, same run. Prints each figure and the ratio ours / PyTorch.
#
# Needs: Go, python3 with torch (Debian: apt install python3-torch; for a
# fast BLAS also libopenblas0-pthread). PyTorch is measured in two BLAS
# threading setups (OpenBLAS's own threads, and OPENBLAS_NUM_THREADS=1 with
# torch's intra-op threads) and the better figure of each benchmark is used.
#
# Usage: bench/cpu.sh [matmul] [decode] [train]   (default: matmul decode)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-$(nproc)}
py=${PYTHON:-python3}
if ! "$py" -c 'import torch' 2>/dev/null; then
  echo "bench/cpu.sh: $py cannot import torch; install python3-torch or set PYTHON=/path/to/python" >&2
  exit 1
fi
what=("$@")
[ ${#what[@]} -gt 0 ] || what=(matmul decode)
mkdir -p .bin
CGO_ENABLED=0 go build -o .bin/minitron ./cmd/minitron

value() { "$py" -c 'import json,sys; d=json.loads(sys.stdin.readline()); print(d.get("value") or d.get("gflops") or d.get("tokens_per_second"))'; }
best() { "$py" -c 'import sys; print(max(float(x) for x in sys.argv[1:]))' "$@"; }

printf '%-8s %14s %14s %8s   (%s threads, %s)\n' bench minitron pytorch ratio "$threads" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for w in "${what[@]}"; do
  case $w in
    matmul) ours=$(GOMAXPROCS=$threads .bin/minitron bench matmul --json | value); unit="GFLOP/s";;
    decode) ours=$(GOMAXPROCS=$threads .bin/minitron bench decode --json --min-time 5s | value); unit="tok/s";;
    train)  ours=$(GOMAXPROCS=$threads .bin/minitron bench train --json | value); unit="tok/s";;
    *) echo "unknown benchmark $w (matmul, decode, train)" >&2; exit 2;;
  esac
  t1=$("$py" bench/torch_nemotron.py "$w" --threads "$threads" --json | value)
  t2=$(OPENBLAS_NUM_THREADS=1 "$py" bench/torch_nemotron.py "$w" --threads "$threads" --json | value)
  torch=$(best "$t1" "$t2")
  printf '%-8s %10.1f %s %10.1f %s %7.2fx\n' "$w" "$ours" "$unit" "$torch" "$unit" "$("$py" -c "print($ours/$torch)")"
done
