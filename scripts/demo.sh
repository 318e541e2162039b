#!/usr/bin/env bash
# The README's "main job": build b3 and use it on the embedded default (a local
# store under the user's data directory; no server, no root, no daemon).
#
#   scripts/demo.sh [DIR]     DIR defaults to this repository's examples/ folder
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIR=${1:-$PWD/examples}

cargo build --release -p b3-cli
B3=$PWD/target/release/b3
run() { printf '\n$ %s\n' "$*"; "$@"; }

run "$B3" hash path "$DIR"
run "$B3" hash path --base32 "$DIR"
printf '\n$ b3 nar dump %s | b3 nar ls\n' "$DIR"
"$B3" nar dump "$DIR" | "$B3" nar ls | head -n 20
P=$("$B3" store add "$DIR")
printf '\n$ b3 store add %s\n%s\n' "$DIR" "$P"
run "$B3" path-info --json "$P"
run "$B3" store verify --check-contents
run "$B3" eval -E 'let fib = n: if n < 2 then n else fib (n - 1) + fib (n - 2); in fib 20'
run "$B3" instantiate --eval --strict -E 'builtins.map (x: x * 2) [ 1 2 3 ]'

# From expression to output: instantiate writes the .drv into the store (the same path
# nix-instantiate computes), and b3 builds it in the rootless sandbox. The builder is
# /bin/sh, which the sandbox maps to a static busybox (Debian's busybox-static).
DRV=$("$B3" instantiate examples/hello)
printf '\n$ b3 instantiate examples/hello\n%s\n' "$DRV"
if [ -x /bin/busybox ]; then
  OUT_LINK=${TMPDIR:-/tmp}/b3-demo-hello
  run "$B3" build --sandbox-path /bin/sh=/bin/busybox -o "$OUT_LINK" "$DRV"
  printf '\n$ cat %s\n' "$OUT_LINK"; cat "$OUT_LINK"
else
  echo "(skipping the build: /bin/busybox is missing; apt-get install busybox-static)"
fi
