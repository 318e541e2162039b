#!/usr/bin/env bash
# nixpkgs parity: b3 against Nix 2.8 on nixpkgs 18.03 (issue 5's acceptance
# test; not run in CI because nixpkgs is not in the repository).
#
#   1. hello: `b3 instantiate NIXPKGS -A hello` into a fresh b3 store must
#      print Nix's drv path, and every .drv of the closure Nix lists
#      (`nix-store -qR`) must be in the b3 store with the same bytes.
#   2. the full listing: `b3 env -qa --drv-path` must print exactly what
#      `nix-env -qa --drv-path` prints, line for line.
#
# Usage: scripts/nixpkgs-parity.sh [--nixpkgs DIR] [--b3 PATH] [--jobs N]
#                                  [--only hello|qa] [--keep DIR]
# NIXPKGS defaults to /tmp/b3-oracle/nixpkgs (lay it out with
# `../shared/tools/nix-oracle.sh --nixpkgs GIT_DIR`); b3 defaults to
# target/release/b3 (built with `cargo build --release -p b3-cli` if absent).
# Exit status 0 when every check passed.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
nixpkgs=${NIXPKGS:-/tmp/b3-oracle/nixpkgs}
b3=${B3:-}
jobs=${JOBS:-1}
only=
keep=
while [ $# -gt 0 ]; do
  case $1 in
    --nixpkgs) nixpkgs=$2; shift 2 ;;
    --b3) b3=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

if [ ! -f "$nixpkgs/default.nix" ]; then
  echo "no nixpkgs at $nixpkgs: run ../shared/tools/nix-oracle.sh --nixpkgs GIT_DIR" >&2
  exit 2
fi
for t in nix-instantiate nix-env nix-store; do
  command -v $t >/dev/null || { echo "$t not found: run scripts/setup-test-deps.sh" >&2; exit 2; }
done
if [ -z "$b3" ]; then
  b3=${CARGO_TARGET_DIR:-$here/target}/release/b3
  if [ ! -x "$b3" ]; then
    (cd "$here" && cargo build --release -p b3-cli) || exit 2
  fi
fi

work=${keep:-$(mktemp -d)}
mkdir -p "$work"
[ -n "$keep" ] || trap 'rm -rf "$work"' EXIT
fails=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }

check_hello() {
  local nixdrv b3drv store="$work/b3-store"
  rm -rf "$store"
  nixdrv=$(nix-instantiate "$nixpkgs" -A hello 2>"$work/hello-nix.err") \
    || { fail "hello: nix-instantiate failed: $(tail -3 "$work/hello-nix.err")"; return; }
  b3drv=$(env -u NIX_REMOTE "$b3" --store "$store" instantiate "$nixpkgs" -A hello 2>"$work/hello-b3.err") \
    || { fail "hello: b3 instantiate failed: $(tail -5 "$work/hello-b3.err")"; return; }
  if [ "$nixdrv" != "$b3drv" ]; then
    fail "hello: drv path differs: nix $nixdrv, b3 $b3drv"
    return
  fi
  local n=0 bad=0 missing=0 p
  while read -r p; do
    case $p in *.drv) ;; *) [ -e "$store$p" ] || { missing=$((missing + 1)); echo "  missing source $p"; }; n=$((n + 1)); continue ;; esac
    n=$((n + 1))
    if [ ! -e "$store$p" ]; then
      missing=$((missing + 1)); echo "  missing $p"
    elif ! cmp -s "$p" "$store$p"; then
      bad=$((bad + 1)); echo "  differs $p"
    fi
  done < <(nix-store -qR "$nixdrv")
  if [ $bad -eq 0 ] && [ $missing -eq 0 ]; then
    pass "hello: $b3drv; closure of $n paths in the b3 store, every .drv byte-identical"
  else
    fail "hello: closure of $n paths: $bad differ, $missing missing"
  fi
}

check_qa() {
  if [ ! -s "$work/nix-qa.txt" ]; then
    nix-env -f "$nixpkgs" -qa --drv-path >"$work/nix-qa.txt" 2>"$work/nix-qa.err" \
      || { fail "qa: nix-env failed: $(tail -3 "$work/nix-qa.err")"; return; }
  fi
  "$b3" env -f "$nixpkgs" -qa --drv-path -j "$jobs" >"$work/b3-qa.txt" 2>"$work/b3-qa.err" \
    || { fail "qa: b3 env -qa failed: $(tail -5 "$work/b3-qa.err")"; return; }
  local nn bn
  nn=$(wc -l <"$work/nix-qa.txt")
  bn=$(wc -l <"$work/b3-qa.txt")
  if cmp -s "$work/nix-qa.txt" "$work/b3-qa.txt"; then
    pass "qa: $bn lines, identical to nix-env -qa --drv-path"
  else
    fail "qa: nix $nn lines, b3 $bn lines; first differences (diff nix b3):"
    diff "$work/nix-qa.txt" "$work/b3-qa.txt" | head -40
    # Same lines in another order, or different lines?
    if diff <(sort "$work/nix-qa.txt") <(sort "$work/b3-qa.txt") >/dev/null; then
      echo "  (the same lines, in a different order)"
    else
      echo "  lines only in nix: $(comm -23 <(sort "$work/nix-qa.txt") <(sort "$work/b3-qa.txt") | wc -l)," \
           "only in b3: $(comm -13 <(sort "$work/nix-qa.txt") <(sort "$work/b3-qa.txt") | wc -l)"
    fi
  fi
}

[ "$only" = qa ] || check_hello
[ "$only" = hello ] || check_qa
if [ $fails -eq 0 ]; then echo "nixpkgs parity: all checks passed"; else echo "nixpkgs parity: $fails check(s) failed"; fi
[ -z "$keep" ] || echo "outputs kept in $work"
exit $((fails > 0))
