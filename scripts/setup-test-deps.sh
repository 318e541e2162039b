#!/usr/bin/env bash
# Installs what b3's test suites need on a Debian machine, and configures
# Debian's Nix 2.8 as the differential-testing oracle. Idempotent.
#
# Needs root (or sudo). What it sets up:
#   - apt: nix-bin (the oracle), busybox-static (sandbox shell), fuse3 (vfs tests),
#     g++ and nlohmann-json3-dev (C++ oracles for regex and float printing),
#     pkg-config, xz-utils, zstd; tcc and musl-dev (the examples/ toolchain), zsh and fish
#     (b3 print-env output is run by them).
#     gcc-mingw-w64-x86-64 and wine64 (Windows cross build and the portable test
#     suites under wine, scripts/test-windows.sh).
#   - /etc/nix/nix.conf for a single-user, daemon-less, sandboxed Nix
#     (builds run in a user namespace as uid 1000), with no substituters: the
#     machines here have no network beyond package registries.
set -euo pipefail

SUDO=
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "setup-test-deps: need root or sudo" >&2; exit 1; }
  SUDO=sudo
fi
log() { printf '[setup] %s\n' "$*" >&2; }

PKGS=(nix-bin busybox-static fuse3 g++ nlohmann-json3-dev pkg-config xz-utils zstd tcc musl-dev zsh fish gcc-mingw-w64-x86-64 wine64)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  APT=(-o DPkg::Lock::Timeout=900 -o Acquire::Retries=3)
  # --no-install-recommends keeps out nix-setup-systemd (daemon units, nixbld users, sandbox=false).
  if ! $SUDO apt-get "${APT[@]}" install -y --no-install-recommends "${missing[@]}"; then
    $SUDO apt-get "${APT[@]}" update
    $SUDO apt-get "${APT[@]}" install -y --no-install-recommends "${missing[@]}"
  fi
fi

# A real S3-compatible server for the binary-cache tests (pinned: newer releases need a newer Rust).
if ! command -v s3s-fs >/dev/null 2>&1; then
  log "installing s3s-fs 0.14.1 (S3 test server)"
  cargo install s3s-fs --version 0.14.1 --features binary --locked
fi

# Nix's settings for the oracle. Written only when the file is absent or was
# written by a b3 set-up, so a real user's configuration is never replaced.
CONF='# b3 test oracle (scripts/setup-test-deps.sh; also accepted: shared nix-oracle.sh).
build-users-group =
sandbox = true
sandbox-fallback = false
extra-sandbox-paths = /bin/sh=/bin/busybox
experimental-features = nix-command
substituters =
flake-registry ='
if [ ! -e /etc/nix/nix.conf ] || grep -qE 'b3 test oracle|nix-oracle.sh' /etc/nix/nix.conf; then
  if ! grep -q 'b3 test oracle\|nix-oracle.sh' /etc/nix/nix.conf 2>/dev/null; then
    $SUDO mkdir -p /etc/nix
    printf '%s\n' "$CONF" | $SUDO tee /etc/nix/nix.conf >/dev/null
    log "wrote /etc/nix/nix.conf"
  fi
else
  log "keeping the existing /etc/nix/nix.conf (not written by b3); the oracle tests assume sandbox = true and no build users"
fi

# The oracle must answer the project's known fixed point before any test trusts it.
drv=$(nix-instantiate -E 'derivation { name = "hello"; system = "x86_64-linux"; builder = "/bin/sh"; args = ["-c" "echo hi > $out"]; }' 2>/dev/null)
[ "$drv" = /nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-hello.drv ] || { echo "setup: Nix oracle self-check failed: got '$drv'" >&2; exit 1; }
log "Nix oracle ready: $(nix --version)"

# The static busybox the oracle tests name as a builder: `<hash>-bb` with
# bin/busybox and bin/sh -> busybox, added to Nix's store (its path depends
# only on Debian's busybox binary) and kept by a GC root.
if ! ls -d /nix/store/*-bb >/dev/null 2>&1 || [ ! -e /nix/var/nix/gcroots/b3-test-bb ]; then
  tree=$(mktemp -d)
  mkdir -p "$tree/bb/bin"
  cp /bin/busybox "$tree/bb/bin/busybox"
  ln -s busybox "$tree/bb/bin/sh"
  bb=$($SUDO nix-store --add "$tree/bb")
  rm -rf "$tree"
  $SUDO ln -sfn "$bb" /nix/var/nix/gcroots/b3-test-bb
  log "busybox for the oracle tests: $bb"
fi
