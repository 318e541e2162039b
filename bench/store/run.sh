#!/usr/bin/env bash
# Store-add benchmark: `b3 store add` against `nix-store --add` on the same
# large tree (>= 500 MiB, many files), each run into a fresh store.
#
# Fairness: both write into a fresh, non-root-owned-by-daemon store on the
# same filesystem (/tmp by default): b3 into `--store $WORK/b3-N` (its
# physical root), Nix into the chroot store `nix-store --store $WORK/nix-N`
# (files under $WORK/nix-N/nix/store, same logical /nix/store paths). Both
# print the same store path (checked). The source tree is in the page cache
# (read once before timing), and everything earlier runs wrote is on disk
# (`sync`, untimed) before each run starts. b3 makes the path durable before
# registering it (its default: large files written with direct I/O, the
# rest flushed by a pool of waiting threads, then the store directory);
# Nix 2.8 does not flush store paths at all, so a second b3 row with
# flushing off (`B3_FSYNC=0`) is shown for a like-for-like comparison.
#
# No run deletes anything before the end: ext4 without a journal skips
# inodes freed in the last 30 s when it allocates new ones (the scan is
# charged to the creator), so deleting a run's store right before the next
# run would charge one contender for the previous one's clean-up. Every
# run's store is kept until all rounds are done (needs RUNS x 3 x the tree
# size of free disk). Rounds rotate the contenders' order, so drift in the
# machine's load hits all alike; the load average is printed per run.
#
# Env: TREE (default /tmp/b3-bench-store-tree), TREE_MIB (default 600),
#      RUNS (default 3), WORK (default /tmp/b3-bench-store-work),
#      CARGO_TARGET_DIR (default <repo>/target).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
TREE=${TREE:-/tmp/b3-bench-store-tree}
TREE_MIB=${TREE_MIB:-600}
RUNS=${RUNS:-3}
WORK=${WORK:-/tmp/b3-bench-store-work}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}

for t in nix-store python3; do
  command -v "$t" >/dev/null || { echo "missing $t: run scripts/setup-test-deps.sh" >&2; exit 1; }
done

# The NAR benchmark's generator: a Linux-source-like tree (many small files,
# some large blobs, executables, symlinks).
if [ ! -f "$TREE/.complete" ]; then
  rm -rf "$TREE"
  python3 "$repo/bench/nar/gen_tree.py" "$TREE" "$TREE_MIB"
fi
rm -f "$TREE/.complete.tmp"

if [ -z "${B3:-}" ]; then
  (cd "$repo" && cargo build --release -q -p b3-cli)
  B3="$CARGO_TARGET_DIR/release/b3"
fi

export LC_ALL=C
bytes=$(du -sb --apparent-size "$TREE" | cut -f1)
nfiles=$(find "$TREE" -type f | wc -l)
echo "tree: $TREE  files: $nfiles  size: $((bytes / 1048576)) MiB"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "filesystem of $WORK: $(df -T "$(dirname "$WORK")" | awk 'NR==2{print $2}')"
find "$TREE" -type f -print0 | xargs -0 cat > /dev/null

rm -rf "$WORK"; mkdir -p "$WORK"
need=$((RUNS * 3 * bytes * 11 / 10 / 1024))
avail=$(df -Pk "$WORK" | awk 'NR==2{print $4}')
if [ "$avail" -lt "$need" ]; then
  echo "not enough free disk under $WORK: $((avail / 1024)) MiB, need $((need / 1024)) MiB (lower RUNS)" >&2
  exit 1
fi
cleanup() { chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
n=0
declare -A bestw bestc allw
one() { # one NAME CMD-with-@STORE@ : one fresh-store run; keeps the best wall time per NAME
  local name=$1 cmd=$2 out w u s l0
  n=$((n + 1))
  local st="$WORK/s$n"
  sync
  l0=$(cut -d' ' -f1 /proc/loadavg)
  out=$( { /usr/bin/time -f '%e %U %S' bash -c "${cmd//@STORE@/$st}" > "$WORK/out$n"; } 2>&1 | tail -1)
  read -r w u s <<<"$out"
  echo "  $name: ${w}s wall (${u}s user, ${s}s sys) load $l0 -> $(cat "$WORK/out$n")" >&2
  allw[$name]="${allw[$name]:-} $w"
  if [ -z "${bestw[$name]:-}" ] || awk "BEGIN{exit !($w < ${bestw[$name]})}"; then bestw[$name]=$w; fi
  local c
  c=$(awk "BEGIN{print $u + $s}")
  if [ -z "${bestc[$name]:-}" ] || awk "BEGIN{exit !($c < ${bestc[$name]})}"; then bestc[$name]=$c; fi
  # Optional pause between runs (nothing is deleted, so none is needed).
  sleep "${SETTLE:-0}"
}
NIX="nix-store --add (chroot store)"; B3S="b3 store add (durable)"; B3N="b3 store add (no fsync)"
cmds=("$NIX" "nix-store --store @STORE@ --add '$TREE'"
      "$B3S" "'$B3' --store @STORE@ store add '$TREE'"
      "$B3N" "B3_FSYNC=0 '$B3' --store @STORE@ store add '$TREE'")
for r in $(seq "$RUNS"); do
  echo "round $r:" >&2
  for k in 0 1 2; do
    i=$(( ((r - 1 + k) % 3) * 2 ))
    one "${cmds[$i]}" "${cmds[$((i + 1))]}"
  done
done
echo "best of $RUNS (least wall; least user+sys CPU, which other jobs on the machine skew far less):" >&2
for k in "$NIX" "$B3S" "$B3N"; do
  printf '%-34s %7.2f s wall  %7.0f MiB/s  %7.2f s cpu\n' "$k" "${bestw[$k]}" "$(awk "BEGIN{print $bytes / 1048576 / ${bestw[$k]}}")" "${bestc[$k]}" >&2
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
for k in "$NIX" "$B3S" "$B3N"; do
  printf '%-34s median wall %7.2f s over %s runs:%s\n' "$k" "$(median <<<"${allw[$k]}")" "$RUNS" "${allw[$k]}" >&2
done
t_nix=${bestw[$NIX]}; t_b3=${bestw[$B3S]}; t_b3n=${bestw[$B3N]}
if [ "$(sort -u "$WORK"/out* | wc -l)" != 1 ]; then
  echo "MISMATCH: the runs printed different store paths:" >&2; sort -u "$WORK"/out* >&2; exit 1
fi
echo "store path (all runs): $(head -1 "$WORK/out1")"
awk "BEGIN{printf \"speed-up vs nix-store --add: %.2fx (durable), %.2fx (no fsync)  [target >= 1.5x]\n\", $t_nix / $t_b3, $t_nix / $t_b3n}"
c_nix=${bestc[$NIX]}; c_b3=${bestc[$B3S]}; c_b3n=${bestc[$B3N]}
awk "BEGIN{printf \"cpu-time ratio nix / b3: %.2fx (durable), %.2fx (no fsync)\n\", $c_nix / $c_b3, $c_nix / $c_b3n}"
echo "load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
