#!/usr/bin/env bash
# Runs each workload with `b3 instantiate --eval --strict` and Nix 2.8's
# `nix-instantiate --eval --strict` side by side, checks that both print the
# same value, and prints for each tool the user+sys CPU time (from wait4's
# rusage, microsecond resolution: best and median of $RUNS runs, default 5)
# and the peak RSS, then the b3/Nix ratios (of the best CPU times). The load
# average is printed before and after: figures from a loaded machine are
# noisy.
# Usage: bench/eval/run.sh [path-to-b3]   (default: target/release/b3)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
B3="${1:-$here/../../target/release/b3}"
NIX="${NIX_INSTANTIATE:-nix-instantiate}"
if [ ! -x "$B3" ]; then
  echo "b3 binary not found at $B3 (build with: cargo build --release -p b3-cli)" >&2
  exit 1
fi
if ! command -v "$NIX" >/dev/null; then
  echo "nix-instantiate not found: run scripts/setup-test-deps.sh" >&2
  exit 1
fi
if ! command -v python3 >/dev/null; then
  echo "python3 not found (bench/eval/measure.py needs it)" >&2
  exit 1
fi
if [ "$(basename "$B3")" = nix-instantiate ]; then b3cmd=("$B3"); else b3cmd=("$B3" instantiate); fi
RUNS="${RUNS:-5}"
measure() { python3 "$here/measure.py" "$RUNS" "$@"; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)   runs: $RUNS"
printf '%-12s %9s %9s %9s %9s %7s %7s %9s %9s %6s\n' \
  workload b3_cpu_s b3_med nix_cpu_s nix_med time_x med_x b3_KB nix_KB mem_x
for w in fib attrs-merge sort-fold strings fixpoint; do
  f="$here/$w.nix"
  b3_out=$("${b3cmd[@]}" --eval --strict "$f" 2>&1 || true)
  nix_out=$("$NIX" --eval --strict "$f" 2>&1 || true)
  same=yes
  [ "$b3_out" = "$nix_out" ] || same="NO (b3: ${b3_out:0:60} nix: ${nix_out:0:60})"
  read -r bt bmed bm < <(measure "${b3cmd[@]}" --eval --strict "$f")
  read -r nt nmed nm < <(measure "$NIX" --eval --strict "$f")
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
  printf '%-12s %9s %9s %9s %9s %7s %7s %9s %9s %6s  same-output=%s\n' \
    "$w" "$bt" "$bmed" "$nt" "$nmed" "$(ratio "$bt" "$nt")" "$(ratio "$bmed" "$nmed")" \
    "$bm" "$nm" "$(ratio "$bm" "$nm")" "$same"
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
