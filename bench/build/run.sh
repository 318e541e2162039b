#!/usr/bin/env bash
# Build benchmark (issue 6): a chain and a wide fan of 50 trivial derivations,
# built from scratch by b3 and by Nix 2.8 (`nix-build`, sandboxed, as set up by
# scripts/setup-test-deps.sh) in the same run. Prints the wall-time ratio
# b3/Nix for each shape, b3's per-build sandbox set-up time, the time
# adopting a build's outputs takes on its step (scan + move into place) and
# the time registering them takes (flushes + database), which overlaps the
# builds after it (medians of `b3 build --stats`).
#
#   bench/build/run.sh [ROUNDS]        (default 3; the median is reported)
#
# Environment: B3 (path of the b3 binary; default: build it in release mode),
# JOBS (max-jobs for both; default: number of cores), N (default 50),
# FRESH=1 (also time b3 with B3_SANDBOX_POOL=0, every sandbox made when its
# build starts, in the same rounds), SETTLE_IDLE (how idle, in percent, the
# CPUs must be before each timed run; default 90), B3_USER (run b3 as this
# user, e.g. nobody, to measure it without root; Nix runs as before).
#
# b3 normally makes sandboxes ahead of time (see builder/src/platform/linux/
# pool.rs); "premade" counts the builds (of the last round) that got one.
#
# Both tools build the same derivations (b3 instantiate and nix-instantiate
# give the same .drv paths); evaluation is not timed. The builder is /bin/sh,
# which both sandboxes bind to /bin/busybox (extra-sandbox-paths in
# /etc/nix/nix.conf, which b3 reads too). A fresh nonce per round makes every
# derivation new to both stores. Like Nix's /nix/store, b3's store (one in
# WORK) lives on from round to round, as a user's does; FRESH's runs use a
# store of their own.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROUNDS=${1:-3}
N=${N:-50}
JOBS=${JOBS:-$(nproc)}
if [ -z "${B3:-}" ]; then
  cargo build --release -p b3-cli >&2
  B3=${CARGO_TARGET_DIR:-$PWD/target}/release/b3
fi
command -v nix-build >/dev/null || { echo "nix-build missing: run scripts/setup-test-deps.sh" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "/bin/busybox missing: apt-get install busybox-static" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/b3-bench-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if [ -n "${B3_USER:-}" ]; then
  # Its stores go in WORK; HOME keeps its caches out of the user's own.
  chmod 1777 "$WORK"
  mkdir -m 1777 "$WORK/home"
  B3_BIN=$B3
  b3() { setpriv --reuid="$B3_USER" --regid="$(id -g "$B3_USER")" --clear-groups \
    env HOME="$WORK/home" "$B3_BIN" "$@"; }
  B3=b3
fi

. bench/build/shapes.sh
write_shapes "$WORK/shapes.nix" "$N"

now() { date +%s.%N; }
# Before each timed run: the previous run's aftermath must not run during
# this one, for either tool: its writeback (sync) and what the kernel does
# after it in the background (tearing down ~50 sandboxes' network
# namespaces takes a workqueue a while), so wait until the CPUs are idle
# (at least 90% over 0.2 s, for at most 5 s).
idle_pct() {
  local a b
  a=($(head -1 /proc/stat)); sleep 0.2; b=($(head -1 /proc/stat))
  local total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  echo $(( total > 0 ? 100 * (b[4] - a[4] + b[5] - a[5]) / total : 100 ))
}
settle() {
  sync
  local tries=0
  while [ "$(idle_pct)" -lt "${SETTLE_IDLE:-90}" ] && [ $tries -lt 25 ]; do tries=$((tries + 1)); done
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A B3T NIXT SETUP ADOPT REG FRESHT PREMADE STEPS TAIL
FRESH=${FRESH:-0}
for shape in chain fan; do
  for r in $(seq 1 "$ROUNDS"); do
    nonce="$shape-$r-$$-$RANDOM"
    store="$WORK/store"
    # b3: instantiate (not timed), then build.
    drv=$("$B3" --store "$store" instantiate "$WORK/shapes.nix" --argstr nonce "$nonce" -A "$shape")
    settle
    t0=$(now)
    "$B3" --store "$store" build -j "$JOBS" --stats "$drv" >"$WORK/b3.out" 2>"$WORK/b3.err" \
      || { cat "$WORK/b3.err" >&2; exit 1; }
    t1=$(now)
    B3T[$shape]+="$(echo "$t1 - $t0" | bc -l) "
    PREMADE[$shape]="$(sed -n 's/.*; \([0-9]*\) sandboxes made ahead of time.*/\1/p' "$WORK/b3.err")"
    # Where a build step's time went (medians of the last round).
    STEPS[$shape]="$(sed -n 's/^stats: per build (median): //p' "$WORK/b3.err")"
    TAIL[$shape]="$(sed -n 's/^stats: after the last build (ms): //p' "$WORK/b3.err")"
    SETUP[$shape]+="$(sed -n 's/.*sandbox set-up per build: median \([0-9.]*\) ms.*/\1/p' "$WORK/b3.err") "
    # Adopting the outputs on the step's path: the scan (canonicalise,
    # hash, start the flushes) plus the add (move into place).
    ADOPT[$shape]+="$(sed -n 's/.* scan \([0-9.]*\) .* add \([0-9.]*\) .*/\1 + \2/p' "$WORK/b3.err" | bc -l) "
    # Registering them (wait for the flushes, then the database), which
    # overlaps the builds after it.
    REG[$shape]+="$(sed -n 's/.*registration per build (overlapped with later builds): median \([0-9.]*\) ms.*/\1/p' "$WORK/b3.err") "
    # Nix: the same derivation, instantiated (not timed), then built.
    ndrv=$(nix-instantiate "$WORK/shapes.nix" --argstr nonce "$nonce" -A "$shape" 2>/dev/null)
    [ "$ndrv" = "$drv" ] || { echo "b3 and Nix disagree on the drv: $drv vs $ndrv" >&2; exit 1; }
    settle
    t0=$(now)
    nix-build --no-out-link -j "$JOBS" "$ndrv" >"$WORK/nix.out" 2>"$WORK/nix.err" \
      || { cat "$WORK/nix.err" >&2; exit 1; }
    t1=$(now)
    NIXT[$shape]+="$(echo "$t1 - $t0" | bc -l) "
    cmp -s "$WORK/b3.out" "$WORK/nix.out" || { echo "different output paths" >&2; exit 1; }
    if [ "$FRESH" = 1 ]; then
      # b3 again, every sandbox made when its build starts (a store of
      # its own, for the same derivations).
      store="$WORK/store-fresh"
      drv=$("$B3" --store "$store" instantiate "$WORK/shapes.nix" --argstr nonce "$nonce" -A "$shape")
      settle
      t0=$(now)
      B3_SANDBOX_POOL=0 "$B3" --store "$store" build -j "$JOBS" "$drv" >/dev/null 2>"$WORK/b3.err" \
        || { cat "$WORK/b3.err" >&2; exit 1; }
      t1=$(now)
      FRESHT[$shape]+="$(echo "$t1 - $t0" | bc -l) "
      rm -rf "$store"
    fi
  done
done

printf '%-6s %8s %10s %10s %8s %16s %16s %16s %8s' shape builds "b3 s" "nix s" "b3/nix" "setup ms (med)" "adopt ms (med)" "register ms (med)" premade
[ "$FRESH" = 1 ] && printf ' %12s %12s' "b3 fresh s" "fresh/nix"
echo
for shape in chain fan; do
  b=$(tr ' ' '\n' <<<"${B3T[$shape]}" | grep . | median)
  n=$(tr ' ' '\n' <<<"${NIXT[$shape]}" | grep . | median)
  s=$(tr ' ' '\n' <<<"${SETUP[$shape]}" | grep . | median)
  a=$(tr ' ' '\n' <<<"${ADOPT[$shape]}" | grep . | median)
  g=$(tr ' ' '\n' <<<"${REG[$shape]:-}" | { grep . || true; } | median)
  builds=$N; [ "$shape" = fan ] && builds=$((N + 1))
  printf '%-6s %8d %10.3f %10.3f %8.3f %16.2f %16.2f %16.2f %8s' "$shape" "$builds" "$b" "$n" "$(echo "$b / $n" | bc -l)" "$s" "$a" "${g:-0}" "${PREMADE[$shape]:-?}"
  if [ "$FRESH" = 1 ]; then
    f=$(tr ' ' '\n' <<<"${FRESHT[$shape]}" | grep . | median)
    printf ' %12.3f %12.3f' "$f" "$(echo "$f / $n" | bc -l)"
  fi
  echo
done
for shape in chain fan; do
  echo "b3 $shape, per build (ms, medians of the last round): ${STEPS[$shape]:-?}"
  echo "b3 $shape, after the last build (ms, last round): ${TAIL[$shape]:-?}"
done
echo "rounds=$ROUNDS jobs=$JOBS load: $(cut -d' ' -f1-3 /proc/loadavg)"
