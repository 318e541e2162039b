#!/usr/bin/env bash
# CPU cost of `b3 build` (issue 6): the chain and the fan of run.sh, built
# from scratch by one or more b3 binaries, rounds interleaved, with
# `perf stat -e task-clock` (user + system CPU of every thread, which on a
# busy machine varies far less than wall time), and the inodes the
# build's processes make and free on ext4 and the block discards they issue
# (ext4 tracepoints, when perf can read them). Prints, per binary and
# shape, the medians of task-clock, user and system seconds, of wall time,
# of those counts, and of how many builds ran in a recycled work directory.
#
#   bench/build/cpu.sh [ROUNDS] B3 [B3 ...]        (ROUNDS default 5)
#
# Environment: JOBS (default 2), N (default 50), SHAPES (default
# "chain fan"), RECORD=DIR: also `perf record -a -g` the first round of
# each binary and shape into DIR/<i>-<shape>.data and print each thread
# name's share of all samples (the `b3-trash-*` threads empty or remove
# work directories).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROUNDS=${1:-5}
shift || true
[ $# -ge 1 ] || { echo "usage: $0 [ROUNDS] B3 [B3 ...]" >&2; exit 2; }
N=${N:-50}
JOBS=${JOBS:-2}
SHAPES=${SHAPES:-chain fan}
command -v perf >/dev/null || { echo "perf missing (apt-get install linux-perf)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/b3-bench-cpu.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
. bench/build/shapes.sh
write_shapes "$WORK/shapes.nix" "$N"

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
declare -A TASK USER SYS WALL REUSED INODES FREED DISCARDS
EVENTS=task-clock
if perf stat -e ext4:ext4_allocate_inode,ext4:ext4_free_inode,ext4:ext4_discard_blocks true 2>/dev/null; then
  EVENTS+=,ext4:ext4_allocate_inode,ext4:ext4_free_inode,ext4:ext4_discard_blocks
fi
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  for shape in $SHAPES; do
    i=0
    for b3 in "$@"; do
      i=$((i + 1))
      nonce="$shape-$r-$i-$$-$RANDOM"
      store="$WORK/store"
      drv=$("$b3" --store "$store" instantiate "$WORK/shapes.nix" --argstr nonce "$nonce" -A "$shape")
      run=("$b3" --store "$store" build -j "$JOBS" --stats "$drv")
      if [ -n "${RECORD:-}" ] && [ "$r" = 1 ]; then
        mkdir -p "$RECORD"
        perf record -q -a -g -o "$RECORD/$i-$shape.data" -- "${run[@]}" >/dev/null 2>"$WORK/b3.err"
        echo "== $b3 $shape: share of all samples by thread (perf record -a -g)"
        perf report -i "$RECORD/$i-$shape.data" --no-children --sort comm --stdio 2>/dev/null \
          | grep -E '^ +[0-9]' | head -15
        rm -rf "$store"
        drv=$("$b3" --store "$store" instantiate "$WORK/shapes.nix" --argstr nonce "$nonce-s" -A "$shape")
        run=("$b3" --store "$store" build -j "$JOBS" --stats "$drv")
      fi
      perf stat -e "$EVENTS" -o "$WORK/stat" -- "${run[@]}" >/dev/null 2>"$WORK/b3.err" \
        || { cat "$WORK/b3.err" >&2; exit 1; }
      TASK[$i-$shape]+="$(tr -d , <"$WORK/stat" | sed -n 's/^ *\([0-9.]*\) msec task-clock.*/\1/p') "
      USER[$i-$shape]+="$(sed -n 's/^ *\([0-9.]*\) seconds user.*/\1/p' "$WORK/stat") "
      SYS[$i-$shape]+="$(sed -n 's/^ *\([0-9.]*\) seconds sys.*/\1/p' "$WORK/stat") "
      ev() { tr -d , <"$WORK/stat" | sed -n "s/^ *\([0-9]*\) *ext4:$1 .*/\1/p"; }
      INODES[$i-$shape]+="$(ev ext4_allocate_inode) "
      FREED[$i-$shape]+="$(ev ext4_free_inode) "
      DISCARDS[$i-$shape]+="$(ev ext4_discard_blocks) "
      WALL[$i-$shape]+="$(sed -n 's/.* in \([0-9.]*\) s; sandbox.*/\1/p' "$WORK/b3.err") "
      REUSED[$i-$shape]+="$(sed -n 's/.*earlier build used (emptied): \([0-9]*\).*/\1/p' "$WORK/b3.err") "
      rm -rf "$store"
    done
  done
done
printf '%-3s %-6s %12s %10s %10s %10s %8s %8s %8s %8s  %s\n' "#" shape "task-clock ms" "user s" "sys s" "wall s" inodes freed discards reused binary
for shape in $SHAPES; do
  i=0
  for b3 in "$@"; do
    i=$((i + 1))
    m() { tr ' ' '\n' <<<"$1" | { grep . || echo 0; } | median; }
    printf '%-3s %-6s %12.1f %10.3f %10.3f %10.3f %8s %8s %8s %8s  %s\n' "$i" "$shape" \
      "$(m "${TASK[$i-$shape]}")" "$(m "${USER[$i-$shape]}")" "$(m "${SYS[$i-$shape]}")" \
      "$(m "${WALL[$i-$shape]}")" "$(m "${INODES[$i-$shape]:-}")" "$(m "${FREED[$i-$shape]:-}")" \
      "$(m "${DISCARDS[$i-$shape]:-}")" "$(m "${REUSED[$i-$shape]:-}")" "$b3"
  done
done
echo "rounds=$ROUNDS jobs=$JOBS n=$N load after: $(cut -d' ' -f1-3 /proc/loadavg) (medians)"
