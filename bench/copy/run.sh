#!/usr/bin/env bash
# Copy benchmark: a closure of >= 1 GiB of NARs (many paths, mixed sizes)
# in a zstd binary cache written by Nix 2.8, served over plain HTTP by a
# static server (python3 -m http.server, HTTP/1.0: one connection per
# object) and over S3 by s3s-fs, copied into empty stores by b3 and by
# Nix 2.8 in the same run. Prints times, throughputs and ratios.
#
# Practical limits, measured on the same objects from the same server:
# - "fetch": curl fetching every object the copy needs (narinfos and the
#   compressed NARs), 8 at a time, to /dev/null: the network floor;
# - "fetch+write" (the raw copy of the same bytes): the same fetches with
#   `curl -o` writing every object to a file on the same disk as the stores,
#   8 at a time, no fsync; "+sync" adds one `sync -f` of that filesystem at
#   the end (b3's copy is durable, Nix 2.8's is not);
# - "fetch+unzstd+write": the same fetches with each NAR piped through
#   `zstd -d` into one file per NAR on the same disk (no fsync). A store
#   also hashes every NAR and unpacks it into many files, so even this one
#   is a floor, not a target.
# Nix 2.8 from Debian has no S3 support, so the S3 row has no Nix figure.
# The copies run ROUNDS times (default 2), b3 and Nix alternating
# (b3 http, Nix http, b3 s3 in each round); the table gives the best of
# each, and every run is printed with the load average.
# XZ=1 also builds (once) an xz cache of part of the closure (about
# XZ_MIB MiB, default 300) with Nix and copies it with both tools.
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
file_bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
NAR_BYTES=$(file_bytes "$CACHE/nar")
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

# raw_fetch BASE [CURL ARGS] → seconds for one curl in parallel mode (8
# transfers at a time) to fetch every object to /dev/null.
raw_fetch() {
  local base=$1 t0 t1; shift
  sed "s|.*|url = \"$base/&\"\noutput = \"/dev/null\"|" "$W/objects" > "$W/fetch.curlrc"
  t0=$(now)
  curl -sf -Z --parallel-max 8 "$@" -K "$W/fetch.curlrc" 2>/dev/null
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
# raw_copy BASE [CURL ARGS] → "seconds seconds-with-sync": one curl in
# parallel mode (8 transfers at a time) fetching every object into its own
# file under $W/raw (`-o`); then one `sync -f` of the filesystem.
raw_copy() {
  local base=$1 t0 t1 t2; shift
  rm -rf "$W/raw"; mkdir -p "$W/raw/nar"
  sed "s|.*|url = \"$base/&\"\noutput = \"$W/raw/&\"|" "$W/objects" > "$W/raw.curlrc"
  sync -f "$W"
  t0=$(now)
  curl -sf -Z --parallel-max 8 "$@" -K "$W/raw.curlrc" 2>/dev/null
  t1=$(now)
  sync -f "$W/raw"
  t2=$(now)
  local got; got=$(file_bytes "$W/raw/nar")
  [ "$got" -ge "$NAR_BYTES" ] || { echo "raw copy wrote $got bytes, expected $NAR_BYTES" >&2; exit 1; }
  echo "$(elapsed "$t0" "$t1") $(elapsed "$t0" "$t2")"
  rm -rf "$W/raw"; settle
}
load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "== raw limits (curl; curl -o file; curl | zstd -d > file), 8 parallel"
RAW_HTTP=$(raw_fetch "$HTTP")
echo "   http fetch: $RAW_HTTP s  (load: $(load))"
# (A command substitution, not `< <(...)`: the main script must wait for
# raw_copy's clean-up and settle before the next measurement.)
RC=$(raw_copy "$HTTP"); read -r RAWC_HTTP RAWCS_HTTP <<< "$RC"
echo "   http fetch+write: $RAWC_HTTP s, +sync: $RAWCS_HTTP s  (load: $(load))"
RAWW_HTTP=$(raw_restore "$HTTP")
echo "   http fetch+unzstd+write: $RAWW_HTTP s  (load: $(cut -d' ' -f1-3 /proc/loadavg))"
# shellcheck disable=SC2086
RAW_S3=$(raw_fetch "$S3_BASE" $S3_CURL)
echo "   s3 fetch: $RAW_S3 s  (load: $(cut -d' ' -f1-3 /proc/loadavg))"
# shellcheck disable=SC2086
RC=$(raw_copy "$S3_BASE" $S3_CURL); read -r RAWC_S3 RAWCS_S3 <<< "$RC"
echo "   s3 fetch+write: $RAWC_S3 s, +sync: $RAWCS_S3 s  (load: $(load))"
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
# shared machine. Each copy appends "wall cpu load1" to $W/runs.<tool>.
TIMEFORMAT='%U %S'
export B3_FSYNC=${B3_FSYNC:-1}
ROUNDS=${ROUNDS:-2}
rm -f "$W"/runs.*
# timed TOOL CMD...: runs CMD, records wall and CPU seconds.
timed() {
  local tool=$1 t0 t1 w c; shift
  t0=$(now)
  { time "$@" 2>"$W/$tool.log"; } 2>"$W/$tool.cpu"
  t1=$(now); w=$(elapsed "$t0" "$t1"); c=$(awk '{printf "%.2f", $1 + $2}' "$W/$tool.cpu")
  echo "$w $c $(cut -d' ' -f1 /proc/loadavg)" >> "$W/runs.$tool"
  echo "   $tool: $w s wall, $c s CPU  (load: $(load))"
}
for round in $(seq "$ROUNDS"); do
  echo "== round $round: b3 copy --from $HTTP"
  timed b3-http "$B3" --store "$W/b3-http" copy --from "$HTTP" --trusted-public-keys "$PK" "$TOP"
  check_and_drop b3 "$W/b3-http"
  echo "== round $round: Nix 2.8: nix copy --from $HTTP --to chroot store"
  timed nix-http nix copy --from "$HTTP" --to "$W/nix-http" --option trusted-public-keys "$PK" "$TOP"
  check_and_drop nix "$W/nix-http"
  echo "== round $round: b3 copy --from s3://cache (s3s-fs)"
  AWS_ACCESS_KEY_ID=BENCHKEY AWS_SECRET_ACCESS_KEY=benchsecret timed b3-s3 "$B3" --store "$W/b3-s3" copy --trusted-public-keys "$PK" \
    --from "s3://cache?region=us-east-1&endpoint=http://127.0.0.1:$S3_PORT" "$TOP"
  check_and_drop b3 "$W/b3-s3"
done
echo "   (Debian's Nix 2.8 is built without S3 support: no Nix figure for s3)"
echo "   (the sampled NARs of every store matched the cache's NarHash)"

# XZ=1: a smaller xz cache of part of the closure, written by Nix.
XZ_ROWS=""
if [ -n "${XZ:-}" ]; then
  XZC="$W/xzcache"
  if [ ! -f "$W/xz-top" ]; then
    echo "== writing an xz cache of about ${XZ_MIB:-300} MiB of the closure with Nix"
    # Leaves first (no references in this closure but the top), smallest
    # first, until the size is reached.
    XZ_PATHS=$(for p in $(nix-store -qR "$TOP" | grep -v b3-bench-top); do
        echo "$(nix-store -q --size "$p") $p"; done | sort -n |
      awk -v lim=$(( ${XZ_MIB:-300} << 20 )) '{ if (s + $1 <= lim) { s += $1; print $2 } }')
    rm -rf "$XZC"
    # shellcheck disable=SC2086
    nix copy --to "file://$XZC?compression=xz&secret-key=$W/key.sec" $XZ_PATHS 2>"$W/nix-copy-xz.log"
    echo "$XZ_PATHS" > "$W/xz-top"
  fi
  XZ_NAR=$(cat "$XZC"/*.narinfo | awk '/^NarSize:/ {s += $2} END {print s}')
  XZ_N=$(ls "$XZC"/*.narinfo | wc -l)
  XZ_PORT=$(free_port)
  (cd "$XZC" && exec python3 -m http.server "$XZ_PORT" --bind 127.0.0.1 >/dev/null 2>&1) &
  PIDS+=($!)
  wait_port "$XZ_PORT"
  # shellcheck disable=SC2046
  XZ_ARGS=$(tr '\n' ' ' < "$W/xz-top")
  for round in $(seq "$ROUNDS"); do
    echo "== round $round: xz cache ($XZ_N paths): b3, then Nix"
    # shellcheck disable=SC2086
    timed b3-xz "$B3" --store "$W/b3-xz" copy --from "http://127.0.0.1:$XZ_PORT" --trusted-public-keys "$PK" $XZ_ARGS
    rm -rf "$W/b3-xz" 2>/dev/null || { chmod -R u+w "$W/b3-xz"; rm -rf "$W/b3-xz"; }; settle
    # shellcheck disable=SC2086
    timed nix-xz nix copy --from "http://127.0.0.1:$XZ_PORT" --to "$W/nix-xz" --option trusted-public-keys "$PK" $XZ_ARGS
    chmod -R u+w "$W/nix-xz" 2>/dev/null || true; rm -rf "$W/nix-xz"; settle
  done
  XZ_ROWS="$XZ_NAR $XZ_N"
fi

python3 - "$NAR_SIZE" "$NAR_BYTES" "$NPATHS_ALL" "$RAW_HTTP" "$RAWC_HTTP" "$RAWCS_HTTP" "$RAWW_HTTP" \
  "$RAW_S3" "$RAWC_S3" "$RAWCS_S3" "$RAWW_S3" "$W" "$(load)" "$B3_FSYNC" "$XZ_ROWS" <<'PY'
import os, sys
a = sys.argv[1:]
nar, comp, n, raw, rawc, rawcs, raww, raws3, rawcs3, rawcss3, rawws3 = map(float, a[:11])
w, load, fsync, xz = a[11], a[12], a[13], a[14]
mib = 1024 * 1024
def runs(tool):
    p = os.path.join(w, f"runs.{tool}")
    if not os.path.exists(p):
        return []
    return [tuple(map(float, l.split())) for l in open(p) if l.strip()]
def best(tool):
    """(best wall, least CPU) over the tool's runs."""
    r = runs(tool)
    return (min(x[0] for x in r), min(x[1] for x in r)) if r else None
print()
print(f"closure: {int(n)} paths, {nar/mib:.0f} MiB of NARs, {comp/mib:.0f} MiB zstd in the cache; "
      f"load average at the end: {load}; B3_FSYNC={fsync}")
for tool in ("b3-http", "nix-http", "b3-s3", "b3-xz", "nix-xz"):
    r = runs(tool)
    if r:
        print(f"  {tool:9} runs (wall s, CPU s, load1): " + "; ".join(f"{x:.2f} {c:.2f} @{l:.1f}" for x, c, l in r))
print(f"{'':36} {'seconds':>8} {'NAR MiB/s':>10} {'CPU s':>7}   (copies: best wall, least CPU)")
b3, nix, b3s3 = best("b3-http"), best("nix-http"), best("b3-s3")
rows = [
    ("http: limit, fetch", raw, None),
    ("http: limit, fetch+write", rawc, None),
    ("http: limit, fetch+write+sync", rawcs, None),
    ("http: limit, fetch+unzstd+write", raww, None),
    ("http: b3 copy (best)", b3[0], b3[1]),
    ("http: nix 2.8 copy (best)", nix[0], nix[1]),
    ("s3: limit, fetch", raws3, None),
    ("s3: limit, fetch+write", rawcs3, None),
    ("s3: limit, fetch+write+sync", rawcss3, None),
    ("s3: limit, fetch+unzstd+write", rawws3, None),
    ("s3: b3 copy (best)", b3s3[0], b3s3[1]),
]
for name, t, c in rows:
    cs = "" if c is None else f"{c:7.2f}"
    print(f"{name:36} {t:8.2f} {nar/mib/t:10.1f} {cs:>7}")
print()
print(f"http: b3 vs Nix 2.8: {nix[0]/b3[0]:.2f}x faster (target >= 2); CPU (user+sys) {nix[1]/b3[1]:.2f}x less")
print(f"http: b3 against the limits, as multiples of their time (target <= 2): "
      f"fetch {b3[0]/raw:.2f}x; fetch+write {b3[0]/rawc:.2f}x; fetch+write+sync {b3[0]/rawcs:.2f}x; "
      f"fetch+unzstd+write {b3[0]/raww:.2f}x")
print(f"s3:   b3 against the limits: fetch {b3s3[0]/raws3:.2f}x; fetch+write {b3s3[0]/rawcs3:.2f}x; "
      f"fetch+write+sync {b3s3[0]/rawcss3:.2f}x; fetch+unzstd+write {b3s3[0]/rawws3:.2f}x")
print(f"s3:   no Nix figure (Debian's Nix 2.8 has no S3); Nix over http against b3 over s3: {nix[0]/b3s3[0]:.2f}x")
if xz:
    xnar, xn = map(float, xz.split())
    bx, nx = best("b3-xz"), best("nix-xz")
    print(f"xz:   {int(xn)} paths, {xnar/mib:.0f} MiB of NARs: b3 {bx[0]:.2f} s ({bx[1]:.2f} CPU), "
          f"Nix {nx[0]:.2f} s ({nx[1]:.2f} CPU): {nx[0]/bx[0]:.2f}x faster")
PY
