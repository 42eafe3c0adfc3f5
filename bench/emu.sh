#!/usr/bin/env bash
# The CUDA backend on the CPU stand-ins for the CUDA libraries
# (backend/cuda/emu) against the CPU backend (the anchor), same machine,
# same run: a forward pass and a training step of the standard 26M shape,
# in tokens/s and CPU seconds, and the ratio. Also times what CI pays for
# the stand-ins: their build, the kernels' compilation, and the tests that
# run on them. CPU seconds (user+sys) are the steadier figures on a shared
# machine.
#
# Needs: Go, clang++ (apt install clang-14).
# Usage: bench/emu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .bin
CGO_ENABLED=0 go build -o .bin/minitron ./cmd/minitron
tmp="$(mktemp -d "${TMPDIR:-/tmp}/minitron-emu-bench.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
export LD_LIBRARY_PATH="$tmp/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" MINITRON_CACHE="$tmp/cache"

cpu() { # prints "wall s, cpu s" of the command
  /usr/bin/time -f '%e %U %S' -o "$tmp/t" "$@" >"$tmp/out" 2>&1 || { cat "$tmp/out" >&2; exit 1; }
  awk '{printf "%.1f s wall, %.1f s CPU", $1, $2 + $3}' "$tmp/t"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "build.sh:              $(cpu bash backend/cuda/emu/build.sh "$tmp/lib")"
golden=testdata/hf/nemotron-odd/golden.safetensors
echo "kernels compiled + logits --grads on nemotron-odd: $(cpu .bin/minitron logits --device cuda --grads --model testdata/hf/nemotron-odd --input $golden --output "$tmp/o.safetensors")"
echo "same, kernels cached:  $(cpu .bin/minitron logits --device cuda --grads --model testdata/hf/nemotron-odd --input $golden --output "$tmp/o.safetensors")"
echo "same on --device cpu:  $(cpu .bin/minitron logits --device cpu --grads --model testdata/hf/nemotron-odd --input $golden --output "$tmp/o.safetensors")"

value() { grep -o '[0-9.]* tokens/s' "$tmp/out" | head -1 | cut -d' ' -f1; }
for job in "forward --batch 2 --seq 256" "train --batch 2 --seq 128"; do
  # shellcheck disable=SC2086
  c=$(cpu .bin/minitron bench $job --device cpu --min-time 2s); tc=$(value)
  # shellcheck disable=SC2086
  e=$(cpu .bin/minitron bench $job --device cuda --min-time 2s); te=$(value)
  printf 'bench %-26s cpu %6s tok/s (%s)  stand-ins %6s tok/s (%s)  ratio %.3f\n' "$job" "$tc" "$c" "$te" "$e" "$(awk "BEGIN{print $te/$tc}")"
done
go test -run '^$' -bench Emu -benchtime 10x ./backend/cuda/ | grep '^Benchmark'
