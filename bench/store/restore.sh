#!/usr/bin/env bash
# Restore-path benchmark: many small NARs added to a fresh local store
# through LocalStore::add_nar_sync, JOBS at a time, as substitution and
# `b3 copy --from` do (store/examples/restore_many.rs), with user and
# kernel time. Runs with fsync on (the default) and off.
#
# Env: PATHS (default 2000), JOBS (default 16), WORK (default
#      /tmp/b3-bench-restore), CARGO_TARGET_DIR, RESTORE_MANY (a prebuilt
#      restore_many binary; built when unset).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PATHS=${PATHS:-2000}
JOBS=${JOBS:-16}
WORK=${WORK:-/tmp/b3-bench-restore}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
if [ -z "${RESTORE_MANY:-}" ]; then
  (cd "$repo" && cargo build --release -q -p b3-store --example restore_many)
  RESTORE_MANY="$CARGO_TARGET_DIR/release/examples/restore_many"
fi
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
for fs in 1 0; do
  rm -rf "$WORK"; mkdir -p "$WORK"
  sync; sleep "${SETTLE:-40}"
  out=$( { B3_FSYNC=$fs /usr/bin/time -f '%e %U %S' "$RESTORE_MANY" "$WORK/s" "$PATHS" "$JOBS" > "$WORK/out"; } 2>&1 | tail -1)
  read -r w u s <<<"$out"
  echo "B3_FSYNC=$fs: $(cat "$WORK/out"); ${w}s wall, ${u}s user, ${s}s sys"
done
rm -rf "$WORK"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
