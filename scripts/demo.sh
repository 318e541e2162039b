#!/usr/bin/env bash
# The README's "main job": build b3 and use it on the embedded default (a local
# store under the user's data directory; no server, no root, no daemon).
#
#   scripts/demo.sh [DIR]     DIR defaults to this repository's examples/ folder
#   Installs what the example needs when missing (Debian: busybox-static tcc musl-dev,
#   through apt-get, with sudo when not root). Needs unprivileged user namespaces.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIR=${1:-$PWD/examples}

# B3=/path/to/b3 uses an existing binary instead of building one.
if [ -z "${B3:-}" ]; then
  cargo build --release -p b3-cli
  B3=$PWD/target/release/b3
fi
# Show each command as a user would type it (`b3 …`), then run it.
run() {
  local shown=() a q="'"
  for a in "$@"; do
    case $a in
      "$B3") shown+=(b3) ;;
      *[[:space:]\"\'\$\(\)\;\<\>\*]*) shown+=("$q${a//$q/$q\\$q$q}$q") ;;
      *) shown+=("$a") ;;
    esac
  done
  printf '\n$ %s\n' "${shown[*]}"
  "$@"
}

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

# From expression to output, offline: examples/default.nix is a small package set whose
# toolchain enters the store through b3 itself (builtins.path): Debian's static busybox
# and tcc (with musl-dev's static libc). In b3's rootless sandbox, hello is compiled
# from examples/src/hello.c and greet (which runs hello) from examples/src/greet.c.
missing=()
[ -e /bin/busybox ] || missing+=(busybox-static)
[ -e /usr/bin/tcc ] || missing+=(tcc)
[ -e /usr/lib/x86_64-linux-musl/libc.a ] || missing+=(musl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "installing ${missing[*]} (the example's toolchain)" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi
OUT_LINK=${TMPDIR:-/tmp}/b3-demo-greet
if "$B3" build --help 2>/dev/null | grep -q -- '--attr'; then
  run "$B3" build examples -A greet -o "$OUT_LINK"
else
  DRV=$("$B3" instantiate examples -A greet)
  printf '\n$ b3 instantiate examples -A greet\n%s\n' "$DRV"
  run "$B3" build -o "$OUT_LINK" "$DRV"
fi
run "$B3" store query --requisites "$OUT_LINK"

# b3 shell: the build environment of examples' `shell` (a mkShell with greet and hello),
# in a mount namespace where the store is at /nix/store wherever it really lives.
run "$B3" shell examples -A shell --run 'greet "b3 user"'
