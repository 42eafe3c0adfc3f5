#!/usr/bin/env bash
# Build what bench/gpu.sh runs on a GPU machine that has no Go: minitron and
# the test binaries of the packages with GPU tests, CGO_ENABLED=0, stripped,
# gzipped into .bin/ (gpu.sh unpacks them there). Checks that .bin/ and the
# repository's files together stay under 64 MiB, the most that can be sent
# to the GPU machine, and says the sizes.
#
#   bench/gpu-pack.sh
#
# TESTPKGS lists the packages whose test binaries are built (default
# ./backend/cuda); .bin/tests.txt maps each binary to its package folder,
# where gpu.sh runs it. GOARCH defaults to amd64.
set -euo pipefail
cd "$(dirname "$0")/.."
export CGO_ENABLED=0 GOOS=linux GOARCH=${GOARCH:-amd64}
limit=$((64 << 20))
# mib N [UNIT]: N bytes in MiB (or in UNIT bytes), one decimal.
mib() { awk -v n="$1" -v u="${2:-1048576}" 'BEGIN { printf "%.1f", n / u }'; }
flags=(-trimpath "-ldflags=-s -w")
rm -rf .bin
mkdir -p .bin
go build "${flags[@]}" -o .bin/minitron ./cmd/minitron
: >.bin/tests.txt
for p in ${TESTPKGS:-./backend/cuda}; do
  p=${p#./}
  name=$(basename "$p").test
  go test -c "${flags[@]}" -o ".bin/$name" "./$p"
  echo "$name $p" >>.bin/tests.txt
done
echo "$(git describe --always --dirty 2>/dev/null || echo unknown) $(go env GOVERSION) $GOOS/$GOARCH built $(date -u +%Y-%m-%dT%H:%M:%SZ)" >.bin/BUILD
for f in .bin/minitron .bin/*.test; do
  raw=$(stat -c %s "$f")
  gzip -9 -f "$f"
  printf '%-24s %6s MB, gzipped %5s MB\n' "${f#.bin/}" "$(mib "$raw" 1000000)" "$(mib "$(stat -c %s "$f.gz")" 1000000)"
done
bins=$(du -cb .bin | tail -1 | cut -f1)
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
total=$((bins + tree))
printf '.bin/ %s MiB + repository files %s MiB = %s MiB (limit 64 MiB)\n' "$(mib "$bins")" "$(mib "$tree")" "$(mib "$total")"
if [ "$total" -gt "$limit" ]; then
  echo "bench/gpu-pack.sh: $total bytes is over the 64 MiB that can be sent; build fewer test binaries (TESTPKGS)" >&2
  exit 1
fi
