#!/usr/bin/env bash
# Runs each workload with `b3 eval --strict` and `nix-instantiate --eval --strict`
# side by side; prints CPU time (user+sys, best of $RUNS, default 3), peak RSS
# (GNU time %M) and the b3/Nix ratios.
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
if [ "$(basename "$B3")" = nix-instantiate ]; then b3cmd=("$B3"); else b3cmd=("$B3" instantiate); fi

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
RUNS="${RUNS:-3}"
measure() { # prints "cpu_seconds maxrss_kb": best CPU time (user+sys, the
  # machine may be shared) and peak RSS over $RUNS runs
  local best="" rss=0 t m
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f '%U %S %M' -o "$tmp" "$@" >/dev/null 2>&1 || true
    read -r t m < <(tail -1 "$tmp" | awk '{ printf "%.3f %s\n", $1 + $2, $3 }')
    if [ -z "$best" ] || awk -v a="$t" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$t; fi
    [ "$m" -gt "$rss" ] && rss=$m
  done
  echo "$best $rss"
}

printf '%-16s %10s %10s %8s %10s %10s %8s\n' workload b3_cpu_s nix_cpu_s time_x b3_KB nix_KB mem_x
for w in fib attrs-merge sort-fold strings fixpoint; do
  f="$here/$w.nix"
  b3_out=$("${b3cmd[@]}" --eval --strict "$f" 2>&1 || true)
  nix_out=$("$NIX" --eval --strict "$f" 2>&1 || true)
  same=yes
  [ "$b3_out" = "$nix_out" ] || same="NO (b3: ${b3_out:0:60} nix: ${nix_out:0:60})"
  read -r bt bm < <(measure "${b3cmd[@]}" --eval --strict "$f")
  read -r nt nm < <(measure "$NIX" --eval --strict "$f")
  tx=$(awk -v a="$bt" -v b="$nt" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
  mx=$(awk -v a="$bm" -v b="$nm" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
  printf '%-16s %10s %10s %8s %10s %10s %8s  same-output=%s\n' "$w" "$bt" "$nt" "$tx" "$bm" "$nm" "$mx" "$same"
done
