#!/usr/bin/env bash
# The set-up command of the README, timed: `go run ./cmd/minitron run
# recipes/tiny.yaml` (data, importance, prune, 400 distillation steps,
# evaluation, export of the embedded default recipe), RUNS times (default
# 3), each from a clean runs/tiny directory, under GNU time. Prints each
# run's wall time, CPU time and peak RSS (the largest process of the tree:
# the minitron that `go run` starts), then the median wall time and the
# largest peak RSS. The command is built once first (`go run` keeps the
# linked program in the build cache), so every run starts it as a user's
# second run does, neither compiling nor linking; the load average before
# each run is printed, since other work on the machine slows every figure.
#
# Needs: Go, GNU time (/usr/bin/time), coreutils.
# Usage: bench/tiny.sh            (logs in bench/out/tiny/)
#        RUNS=5 bench/tiny.sh
#        bench/tiny.sh --set distill.train.steps=8   (arguments go to `run`,
#                                                    for a quick trial)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
out=${OUT:-bench/out/tiny}
[ -x /usr/bin/time ] || { echo "bench/tiny.sh: needs GNU time at /usr/bin/time (apt install time)" >&2; exit 1; }
mkdir -p "$out"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?'), $(go version)"
go run ./cmd/minitron --version >/dev/null # build once: every run then starts the cached command

field() { # field FILE PREFIX: the value after "PREFIX: " in a GNU time -v report
  local line
  while IFS= read -r line; do
    line=${line#"${line%%[![:space:]]*}"}
    if [[ $line == "$2: "* ]]; then
      echo "${line#"$2: "}"
      return
    fi
  done <"$1"
  echo "?"
}
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

walls=() rss_max=0
for i in $(seq "$runs"); do
  rm -rf runs/tiny
  load=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')
  t0=$(date +%s%3N)
  if ! /usr/bin/time -v -o "$out/time-$i.txt" go run ./cmd/minitron run recipes/tiny.yaml "$@" >"$out/run-$i.log" 2>&1; then
    echo "run $i failed; see $out/run-$i.log" >&2
    exit 1
  fi
  ms=$(($(date +%s%3N) - t0))
  walls+=("$ms")
  rss=$(field "$out/time-$i.txt" "Maximum resident set size (kbytes)")
  [[ $rss =~ ^[0-9]+$ ]] && ((rss > rss_max)) && rss_max=$rss
  printf 'run %d: wall %s s, user %s s, system %s s, peak RSS %s MB (load average before: %s)\n' "$i" "$(secs "$ms")" \
    "$(field "$out/time-$i.txt" "User time (seconds)")" "$(field "$out/time-$i.txt" "System time (seconds)")" "$((rss / 1024))" "$load"
done
sorted=($(printf '%s\n' "${walls[@]}" | sort -n))
median=${sorted[$(((${#sorted[@]} - 1) / 2))]}
printf 'median wall %s s (%d:%02d) over %d runs; peak RSS %d MB\n' "$(secs "$median")" $((median / 60000)) $((median / 1000 % 60)) "$runs" $((rss_max / 1024))
