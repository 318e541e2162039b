#!/usr/bin/env bash
# Copy benchmark: a closure of >= 1 GiB of NARs (many paths, mixed sizes)
# in a zstd binary cache written by Nix 2.8, served over plain HTTP by a
# static server (python3 -m http.server, HTTP/1.0: one connection per
# object) and over S3 by s3s-fs, copied into empty stores by b3 and by
# Nix 2.8 in the same run. Prints times, throughputs and ratios.
#
# Two practical limits, measured on the same objects from the same server:
# - "fetch": curl fetching every object the copy needs (narinfos and the
#   compressed NARs), 8 at a time, to /dev/null: the network floor;
# - "fetch+unzstd+write": the same fetches with each NAR piped through
#   `zstd -d` into one file per NAR on the same disk as the stores (no
#   fsync): the floor of any copy that must land the bytes on disk. A store
#   also hashes every NAR and unpacks it into many files, so even this one
#   is a floor, not a target.
# Nix 2.8 from Debian has no S3 support, so the S3 row has no Nix figure.
#
# Usage: bench/copy/run.sh [SIZE_MIB]   (default 1100)
# Needs: nix (2.8), python3, curl, zstd, s3s-fs (scripts/setup-test-deps.sh),
# and a release b3 (built here into $CARGO_TARGET_DIR or target/; or B3=).
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB=${1:-1100}
# BENCH_WORK=DIR reuses (or prepares) the closure and caches there;
# PREPARE_ONLY=1 stops once they exist.
W=${BENCH_WORK:-$(mktemp -d /tmp/b3-bench-copy.XXXXXX)}
mkdir -p "$W"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

if [ -z "${B3:-}" ]; then
  echo "== building b3 (release)"
  cargo build --release -p b3-cli --quiet
  B3="${CARGO_TARGET_DIR:-target}/release/b3"
fi

CACHE="$W/s3root/cache"
if [ ! -f "$W/top" ]; then
  echo "== generating ${SIZE_MIB} MiB of sources in $W"
  rm -rf "$W/src" "$W/s3root"
  read -r BYTES NPATHS < <(python3 bench/copy/gen.py "$W/src" "$SIZE_MIB" 42)
  echo "   $NPATHS paths, $BYTES bytes"
  echo "== adding them to the Nix store and writing a zstd cache with Nix"
  PATHS=()
  for d in "$W"/src/*; do PATHS+=("$(nix-store --add "$d")"); done
  ARGS=$(printf '(builtins.storePath %s) ' "${PATHS[@]}")
  TOP=$(nix-instantiate --eval --read-write-mode -E \
    "builtins.toFile \"b3-bench-top\" (builtins.concatStringsSep \"\\n\" (map toString [ $ARGS ]))" | tr -d '"')
  rm -f "$W/key.sec" "$W/key.pub"
  nix-store --generate-binary-cache-key b3-bench-1 "$W/key.sec" "$W/key.pub"
  nix copy --to "file://$CACHE?compression=zstd&secret-key=$W/key.sec" "$TOP" 2>"$W/nix-copy-to.log"
  echo "$TOP" > "$W/top"
fi
TOP=$(cat "$W/top")
PK=$(cat "$W/key.pub")
[ -n "${PREPARE_ONLY:-}" ] && { echo "prepared in $W"; exit 0; }
rm -rf "$W/b3-http" "$W/b3-s3" "$W/nix-http"
NAR_BYTES=$(du -sb "$CACHE/nar" | cut -f1)
NAR_SIZE=$(cat "$CACHE"/*.narinfo | awk '/^NarSize:/ {s += $2} END {print s}')
NPATHS_ALL=$(ls "$CACHE"/*.narinfo | wc -l)
echo "   $NPATHS_ALL paths; NAR bytes (uncompressed) $NAR_SIZE; compressed in cache $NAR_BYTES"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }

HTTP_PORT=$(free_port)
(cd "$CACHE" && exec python3 -m http.server "$HTTP_PORT" --bind 127.0.0.1 >/dev/null 2>&1) &
PIDS+=($!)
S3_PORT=$(free_port)
S3FS=$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")
"$S3FS" --host 127.0.0.1 --port "$S3_PORT" --access-key BENCHKEY --secret-key benchsecret "$W/s3root" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$HTTP_PORT"; wait_port "$S3_PORT"
HTTP="http://127.0.0.1:$HTTP_PORT"

# Every object a client needs: narinfos and NARs.
(cd "$CACHE" && ls ./*.narinfo nar/*) | sed 's|^\./||' > "$W/objects"

# ext4 skips inodes freed less than ~35 s ago and charges the search to
# whoever creates files next: wait after every deletion so each copy starts
# on the same footing.
settle() { sleep "${SETTLE:-40}"; }

E0=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
S3_CURL="-H x-amz-content-sha256:$E0 --aws-sigv4 aws:amz:us-east-1:s3 --user BENCHKEY:benchsecret"
S3_BASE="http://127.0.0.1:$S3_PORT/cache"

# raw_fetch BASE [CURL ARGS] → seconds to fetch every object to /dev/null,
# 8 at a time.
raw_fetch() {
  local base=$1 t0 t1; shift
  t0=$(now)
  sed "s|^|$base/|" "$W/objects" | xargs -P 8 -n 16 curl -sf "$@" >/dev/null
  t1=$(now); elapsed "$t0" "$t1"
}
# raw_restore BASE [CURL ARGS] → seconds to fetch the narinfos and pipe
# every NAR through zstd -d into its own file under $W/raw, 8 at a time.
raw_restore() {
  local base=$1 t0 t1; shift
  rm -rf "$W/raw"; mkdir -p "$W/raw/nar"
  t0=$(now)
  { grep '\.narinfo$' "$W/objects" | sed "s|^|$base/|" | xargs -P 8 -n 16 curl -sf "$@" >/dev/null; } &
  grep '^nar/' "$W/objects" | xargs -P 8 -I{} sh -c \
    'u=$1; o=$2; shift 2; curl -sf "$@" "$u" | zstd -dq > "$o"' sh "$base/{}" "$W/raw/{}.out" "$@"
  wait
  t1=$(now); elapsed "$t0" "$t1"
  local got; got=$(du -sb "$W/raw" | cut -f1)
  [ "$got" -ge "$NAR_SIZE" ] || { echo "raw restore wrote $got bytes, expected $NAR_SIZE" >&2; exit 1; }
  rm -rf "$W/raw"; settle
}
echo "== raw limits (curl; curl | zstd -d > file), 8 parallel"
RAW_HTTP=$(raw_fetch "$HTTP")
echo "   http fetch: $RAW_HTTP s  (load: $(cut -d' ' -f1-3 /proc/loadavg))"
RAWW_HTTP=$(raw_restore "$HTTP")
echo "   http fetch+unzstd+write: $RAWW_HTTP s  (load: $(cut -d' ' -f1-3 /proc/loadavg))"
# shellcheck disable=SC2086
RAW_S3=$(raw_fetch "$S3_BASE" $S3_CURL)
echo "   s3 fetch: $RAW_S3 s  (load: $(cut -d' ' -f1-3 /proc/loadavg))"
# shellcheck disable=SC2086
RAWW_S3=$(raw_restore "$S3_BASE" $S3_CURL)
echo "   s3 fetch+unzstd+write: $RAWW_S3 s  (load: $(cut -d' ' -f1-3 /proc/loadavg))"

# check STORE_KIND DIR: a sample of 8 paths dump to the NAR hash their
# narinfo states (what Nix wrote), then the store is deleted, so at most
# one 1.1 GiB copy is on disk at a time.
check_and_drop() {
  local kind=$1 dir=$2 p want got
  for p in $(nix-store -qR "$TOP" | head -8); do
    want=$(awk '/^NarHash:/ {print $2}' "$CACHE/$(basename "$p" | cut -c1-32).narinfo")
    if [ "$kind" = nix ]; then
      got=$(nix-store --store "$dir" --dump "$p" | sha256sum | cut -d' ' -f1)
    else
      got=$("$B3" --store "$dir" store dump "$p" | sha256sum | cut -d' ' -f1)
    fi
    got=$(nix-hash --type sha256 --to-base32 "$got")
    [ "$want" = "sha256:$got" ] || { echo "MISMATCH in $dir for $p: $want vs sha256:$got"; exit 1; }
  done
  chmod -R u+w "$dir" 2>/dev/null || true
  rm -rf "$dir"; settle
}

# CPU seconds (user + sys) of each copy: steadier than wall clock on a
# shared machine.
TIMEFORMAT='%U %S'
echo "== b3 copy --from $HTTP"
export B3_FSYNC=${B3_FSYNC:-1}
t0=$(now)
{ time "$B3" --store "$W/b3-http" copy --from "$HTTP" --trusted-public-keys "$PK" "$TOP" 2>"$W/b3-http.log"; } 2>"$W/b3-http.cpu"
t1=$(now); B3_HTTP=$(elapsed "$t0" "$t1"); echo "   $B3_HTTP s  (load: $(cut -d' ' -f1-3 /proc/loadavg))"
check_and_drop b3 "$W/b3-http"

echo "== Nix 2.8: nix copy --from $HTTP --to chroot store"
t0=$(now)
{ time nix copy --from "$HTTP" --to "$W/nix-http" --option trusted-public-keys "$PK" "$TOP" 2>"$W/nix-http.log"; } 2>"$W/nix-http.cpu"
t1=$(now); NIX_HTTP=$(elapsed "$t0" "$t1"); echo "   $NIX_HTTP s  (load: $(cut -d' ' -f1-3 /proc/loadavg))"
check_and_drop nix "$W/nix-http"

echo "== b3 copy --from s3://cache (s3s-fs)"
t0=$(now)
{ time AWS_ACCESS_KEY_ID=BENCHKEY AWS_SECRET_ACCESS_KEY=benchsecret "$B3" --store "$W/b3-s3" copy --trusted-public-keys "$PK" \
  --from "s3://cache?region=us-east-1&endpoint=http://127.0.0.1:$S3_PORT" "$TOP" 2>"$W/b3-s3.log"; } 2>"$W/b3-s3.cpu"
t1=$(now); B3_S3=$(elapsed "$t0" "$t1"); echo "   $B3_S3 s  (load: $(cut -d' ' -f1-3 /proc/loadavg))"
check_and_drop b3 "$W/b3-s3"
echo "   (Debian's Nix 2.8 is built without S3 support: no Nix figure for s3)"

echo "   (the sampled NARs of every store matched the cache's NarHash)"

cpu() { awk '{printf "%.2f", $1 + $2}' "$1"; }
python3 - "$NAR_SIZE" "$NAR_BYTES" "$NPATHS_ALL" "$RAW_HTTP" "$RAWW_HTTP" "$RAW_S3" "$RAWW_S3" \
  "$B3_HTTP" "$NIX_HTTP" "$B3_S3" "$(cpu "$W/b3-http.cpu")" "$(cpu "$W/nix-http.cpu")" "$(cpu "$W/b3-s3.cpu")" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" "$B3_FSYNC" <<'PY'
import sys
a = sys.argv[1:]
nar, comp, n, raw, raww, raws3, rawws3, b3, nix, b3s3, cb3, cnix, cb3s3 = map(float, a[:13])
load, fsync = a[13], a[14]
mib = 1024 * 1024
print()
print(f"closure: {int(n)} paths, {nar/mib:.0f} MiB of NARs, {comp/mib:.0f} MiB zstd in the cache; load average at the end: {load}; B3_FSYNC={fsync}")
print(f"{'':34} {'seconds':>8} {'NAR MiB/s':>10} {'CPU s':>7}")
rows = [
    ("http: limit, fetch", raw, None),
    ("http: limit, fetch+unzstd+write", raww, None),
    ("http: b3 copy", b3, cb3),
    ("http: nix 2.8 copy", nix, cnix),
    ("s3: limit, fetch", raws3, None),
    ("s3: limit, fetch+unzstd+write", rawws3, None),
    ("s3: b3 copy", b3s3, cb3s3),
]
for name, t, c in rows:
    cs = "" if c is None else f"{c:7.2f}"
    print(f"{name:34} {t:8.2f} {nar/mib/t:10.1f} {cs:>7}")
print()
print(f"http: b3 vs Nix 2.8: {nix/b3:.2f}x faster (target >= 2); CPU (user+sys) {cnix/cb3:.2f}x less")
print(f"http: b3 vs fetch limit: {b3/raw:.2f}x its time; vs fetch+unzstd+write limit: {b3/raww:.2f}x (target <= 2)")
print(f"s3:   b3 vs fetch limit: {b3s3/raws3:.2f}x its time; vs fetch+unzstd+write limit: {b3s3/rawws3:.2f}x (target <= 2)")
print(f"s3:   no Nix figure (Debian's Nix 2.8 has no S3); Nix over http against b3 over s3: {nix/b3s3:.2f}x")
PY
