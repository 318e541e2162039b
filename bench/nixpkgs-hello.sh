#!/usr/bin/env bash
# nixpkgs `-A hello` instantiation (read-only: drv paths computed, nothing
# written) with `b3 instantiate` and Nix 2.8's `nix-instantiate` side by side:
# checks both print the same drv path, then prints CPU time (user+sys, best of
# $RUNS, default 3), peak RSS and the b3/Nix ratios.
# b3 keeps a parse cache of lowered files ($XDG_CACHE_HOME/b3/parse-v2.sqlite, see
# evaluator/src/parse_cache.rs); Nix 2.8 has none. The b3 runs here use a
# cache of their own, filled by the first (drv-path check) run, so they are
# warm; COLD=1 empties it before every measured run instead.
# Usage: bench/nixpkgs-hello.sh [path-to-b3] [nixpkgs-dir] [attr]
#   nixpkgs-dir defaults to /tmp/b3-oracle/nixpkgs; lay it out with
#   bash /work/shared/tools/nix-oracle.sh --nixpkgs <nixpkgs-channels checkout>
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
B3="${1:-$here/../target/release/b3}"
NIXPKGS="${2:-/tmp/b3-oracle/nixpkgs}"
ATTR="${3:-hello}"
RUNS="${RUNS:-3}"
NIX="${NIX_INSTANTIATE:-nix-instantiate}"
[ -x "$B3" ] || { echo "b3 binary not found at $B3 (cargo build --release -p b3-cli)" >&2; exit 1; }
command -v "$NIX" >/dev/null || { echo "nix-instantiate not found: run scripts/setup-test-deps.sh" >&2; exit 1; }
[ -e "$NIXPKGS/default.nix" ] || { echo "no nixpkgs at $NIXPKGS" >&2; exit 1; }

tmp=$(mktemp)
cache=$(mktemp -d)
trap 'rm -f "$tmp"; rm -rf "$cache"' EXIT
export XDG_CACHE_HOME="$cache"
measure() {
  local best="" rss=0 t m
  for _ in $(seq "$RUNS"); do
    [ "${COLD:-0}" = 1 ] && rm -rf "${cache:?}/b3"
    /usr/bin/time -f '%U %S %M' -o "$tmp" "$@" >/dev/null 2>&1 || true
    read -r t m < <(tail -1 "$tmp" | awk '{ printf "%.3f %s\n", $1 + $2, $3 }')
    if [ -z "$best" ] || awk -v a="$t" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$t; fi
    [ "$m" -gt "$rss" ] && rss=$m
  done
  echo "$best $rss"
}

b3_out=$("$B3" instantiate --readonly-mode "$NIXPKGS" -A "$ATTR" 2>/dev/null || true)
nix_out=$("$NIX" --readonly-mode "$NIXPKGS" -A "$ATTR" 2>/dev/null || true)
same=yes
[ -n "$b3_out" ] && [ "$b3_out" = "$nix_out" ] || same="NO (b3: $b3_out nix: $nix_out)"
read -r bt bm < <(measure "$B3" instantiate --readonly-mode "$NIXPKGS" -A "$ATTR")
read -r nt nm < <(measure "$NIX" --readonly-mode "$NIXPKGS" -A "$ATTR")
tx=$(awk -v a="$bt" -v b="$nt" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
mx=$(awk -v a="$bm" -v b="$nm" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
printf '%-16s %10s %10s %8s %10s %10s %8s\n' workload b3_cpu_s nix_cpu_s time_x b3_KB nix_KB mem_x
printf '%-16s %10s %10s %8s %10s %10s %8s  same-drv=%s\n' "nixpkgs-$ATTR" "$bt" "$nt" "$tx" "$bm" "$nm" "$mx" "$same"
[ "$same" = yes ]
