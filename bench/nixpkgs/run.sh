#!/usr/bin/env bash
# nixpkgs 18.03 evaluation, b3 against Nix 2.8, side by side in one run:
#   hello: `nix-instantiate NIXPKGS -A hello` vs `b3 instantiate NIXPKGS -A hello`
#          (both with their store already holding the closure; median of N runs).
#          b3 keeps a parse cache of lowered files (evaluator/src/parse_cache.rs,
#          one SQLite database $XDG_CACHE_HOME/b3/parse-v2.sqlite); Nix 2.8 has
#          none and parses every file on every run. So hello is reported three
#          times: "warm", b3 with the cache filled by the warm-up run (the
#          normal case on a user's machine); "cold", b3 with a new, empty cache
#          directory for each run (it parses everything and writes the entries,
#          as a first run does); and "cache off" (B3_PARSE_CACHE=0: parses
#          everything, writes nothing), which cold should cost barely more than.
#   qa:    `nix-env -f NIXPKGS -qa --drv-path` vs `b3 env -f NIXPKGS -qa --drv-path`
#          (one run each; b3 with -j 1 and with -j JOBS, which forks
#          processes sharing the evaluated package set)
# Prints wall time, CPU time (user+sys) and peak memory and the b3/Nix
# ratios (issue 5 targets: hello time <= 0.5x; qa time <= 0.5x and memory
# <= 0.5x), and whether the outputs are identical. For qa, memory is given
# two ways: the largest resident set of any one process of the run (GNU
# time), and the peak of the sum of Pss over all its processes at once
# (bench/nixpkgs/pss.sh; pages forked processes share count once).
#
# QA_OFF=1 adds a b3 -qa -j 1 run with the parse cache off, before the first.
# Usage: bench/nixpkgs/run.sh [--nixpkgs DIR] [--b3 PATH] [--runs N] [--jobs N] [--only hello|qa]
set -uo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
nixpkgs=${NIXPKGS:-/tmp/b3-oracle/nixpkgs}
b3=${B3:-}
runs=5
jobs=2
only=
while [ $# -gt 0 ]; do
  case $1 in
    --nixpkgs) nixpkgs=$2; shift 2 ;;
    --b3) b3=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -f "$nixpkgs/default.nix" ] || { echo "no nixpkgs at $nixpkgs (see ../shared/tools/nix-oracle.sh --nixpkgs)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "GNU time (/usr/bin/time) is needed: apt-get install time" >&2; exit 2; }
if [ -z "$b3" ]; then
  b3=${CARGO_TARGET_DIR:-$here/target}/release/b3
  [ -x "$b3" ] || (cd "$here" && cargo build --release -p b3-cli) || exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
store="$work/b3-store"
# b3's parse cache for this run only, so the user's ~/.cache does not count.
export XDG_CACHE_HOME="$work/xdg-warm"

# measure OUTFILE CMD... -> sets secs, kib (max RSS of any one process), cpu
measure() {
  local out=$1; shift
  /usr/bin/time -f '%e %M %U %S' -o "$work/time" "$@" >"$out" 2>"$work/stderr" || {
    echo "command failed: $*" >&2; tail -5 "$work/stderr" >&2; return 1; }
  read -r secs kib u s <"$work/time"
  cpu=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
}

# measure_pss OUTFILE CMD... -> as measure, plus pss (peak Pss sum, KiB) and
# procs (most processes at once)
measure_pss() {
  local out=$1; shift
  /usr/bin/time -f '%e %M %U %S' -o "$work/time" "$@" >"$out" 2>"$work/stderr" &
  local pid=$!
  bash "$here/bench/nixpkgs/pss.sh" "$pid" >"$work/pss"
  wait "$pid" || { echo "command failed: $*" >&2; tail -5 "$work/stderr" >&2; return 1; }
  read -r secs kib u s <"$work/time"
  cpu=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
  read -r pss _ procs <"$work/pss"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
row() { # label nix_s nix_kib b3_s b3_kib
  printf '%-22s nix %7.2f s %7.0f MiB   b3 %7.2f s %7.0f MiB   time %sx  memory %sx\n' \
    "$1" "$2" "$(awk -v k="$3" 'BEGIN{print k/1024}')" "$4" "$(awk -v k="$5" 'BEGIN{print k/1024}')" \
    "$(ratio "$4" "$2")" "$(ratio "$5" "$3")"
}

echo "nixpkgs: $nixpkgs"
echo "b3:      $b3"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); load $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$only" != qa ]; then
  # Warm both stores (and the page cache) once.
  nix-instantiate "$nixpkgs" -A hello >/dev/null 2>&1
  env -u NIX_REMOTE "$b3" --store "$store" instantiate "$nixpkgs" -A hello >/dev/null 2>&1
  nt=(); nm=(); nc=(); bt=(); bm=(); bc=(); ct=(); cm=(); cc=(); ot=(); om=(); oc=()
  for i in $(seq "$runs"); do
    measure "$work/nix-hello" nix-instantiate "$nixpkgs" -A hello || exit 1
    nt+=("$secs"); nm+=("$kib"); nc+=("$cpu")
    measure "$work/b3-hello" env -u NIX_REMOTE "$b3" --store "$store" instantiate "$nixpkgs" -A hello || exit 1
    bt+=("$secs"); bm+=("$kib"); bc+=("$cpu")
    # A new directory per run: deleting the last one just before would make
    # ext4 scan its recently freed inodes while this run creates entries.
    measure "$work/b3-hello-cold" env -u NIX_REMOTE XDG_CACHE_HOME="$work/xdg-cold-$i" \
      "$b3" --store "$store" instantiate "$nixpkgs" -A hello || exit 1
    ct+=("$secs"); cm+=("$kib"); cc+=("$cpu")
    measure "$work/b3-hello-off" env -u NIX_REMOTE B3_PARSE_CACHE=0 \
      "$b3" --store "$store" instantiate "$nixpkgs" -A hello || exit 1
    ot+=("$secs"); om+=("$kib"); oc+=("$cpu")
  done
  same=$(cmp -s "$work/nix-hello" "$work/b3-hello" && cmp -s "$work/nix-hello" "$work/b3-hello-cold" \
    && cmp -s "$work/nix-hello" "$work/b3-hello-off" && echo identical || echo DIFFERENT)
  med() { printf '%s\n' "$@" | median; }
  row "hello warm (median $runs)" "$(med "${nt[@]}")" "$(med "${nm[@]}")" "$(med "${bt[@]}")" "$(med "${bm[@]}")"
  echo "  cpu (user+sys, median): nix $(med "${nc[@]}") s, b3 $(med "${bc[@]}") s ($(ratio "$(med "${bc[@]}")" "$(med "${nc[@]}")")x)"
  row "hello cold (median $runs)" "$(med "${nt[@]}")" "$(med "${nm[@]}")" "$(med "${ct[@]}")" "$(med "${cm[@]}")"
  echo "  cpu (user+sys, median): nix $(med "${nc[@]}") s, b3 $(med "${cc[@]}") s ($(ratio "$(med "${cc[@]}")" "$(med "${nc[@]}")")x)"
  row "hello cache off (med $runs)" "$(med "${nt[@]}")" "$(med "${nm[@]}")" "$(med "${ot[@]}")" "$(med "${om[@]}")"
  echo "  cpu (user+sys, median): nix $(med "${nc[@]}") s, b3 $(med "${oc[@]}") s ($(ratio "$(med "${oc[@]}")" "$(med "${nc[@]}")")x)"
  echo "  cold/off: time $(ratio "$(med "${ct[@]}")" "$(med "${ot[@]}")")x, cpu $(ratio "$(med "${cc[@]}")" "$(med "${oc[@]}")")x; warm/off: time $(ratio "$(med "${bt[@]}")" "$(med "${ot[@]}")")x"
  entries=$(sqlite3 "$work/xdg-cold-1/b3/parse-v2.sqlite" 'SELECT count(*) FROM entries' 2>/dev/null || echo "?")
  echo "  cold = b3 with a new, empty parse cache directory for each run; $entries entries written per run, $(find "$work/xdg-cold-1" -type f | wc -l) files"
  echo "  drv path: $(cat "$work/b3-hello") ($same)"
fi

qa_extra() { # label: CPU and Pss lines after a qa row
  printf '  %s: cpu nix %s s, b3 %s s (%sx); Pss sum peak nix %.0f MiB, b3 %.0f MiB (%sx, %s processes at most)\n' \
    "$1" "$n_cpu" "$cpu" "$(ratio "$cpu" "$n_cpu")" "$(awk -v k="$n_pss" 'BEGIN{print k/1024}')" \
    "$(awk -v k="$pss" 'BEGIN{print k/1024}')" "$(ratio "$pss" "$n_pss")" "$procs"
}

if [ "$only" != hello ]; then
  echo "load before qa: $(cut -d' ' -f1-3 /proc/loadavg)"
  measure_pss "$work/nix-qa" nix-env -f "$nixpkgs" -qa --drv-path || exit 1
  n_s=$secs n_k=$kib n_cpu=$cpu n_pss=$pss
  # The first -j 1 run finds the entries hello's runs left and parses (and
  # caches) the other files; with QA_OFF=1 a cache-off run comes first, to
  # compare it with. -j N then runs with every file cached.
  if [ "${QA_OFF:-0}" = 1 ]; then
    measure_pss "$work/b3-qa-off" env B3_PARSE_CACHE=0 "$b3" env -f "$nixpkgs" -qa --drv-path -j 1 || exit 1
    row "qa -j 1 cache off" "$n_s" "$n_k" "$secs" "$kib"
    qa_extra "-j 1 cache off"
  fi
  measure_pss "$work/b3-qa-1" "$b3" env -f "$nixpkgs" -qa --drv-path -j 1 || exit 1
  row "qa --drv-path -j 1" "$n_s" "$n_k" "$secs" "$kib"
  qa_extra "-j 1"
  echo "  $(wc -l <"$work/b3-qa-1") lines, $(cmp -s "$work/nix-qa" "$work/b3-qa-1" && echo identical || echo DIFFERENT) to nix-env's $(wc -l <"$work/nix-qa")"
  if [ "$jobs" -gt 1 ]; then
    measure_pss "$work/b3-qa-j" "$b3" env -f "$nixpkgs" -qa --drv-path -j "$jobs" || exit 1
    row "qa --drv-path -j $jobs" "$n_s" "$n_k" "$secs" "$kib"
    qa_extra "-j $jobs"
    echo "  $(wc -l <"$work/b3-qa-j") lines, $(cmp -s "$work/nix-qa" "$work/b3-qa-j" && echo identical || echo DIFFERENT) to nix-env's"
  fi
  echo "load after qa: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
