#!/usr/bin/env bash
# Runs every b3 test suite. The one command the README gives for testing, and
# what .ci/run calls. Installs what the tests need first (scripts/setup-test-deps.sh).
#
#   scripts/test.sh            everything
#   B3_LANG_TESTS=DIR          the upstream Nix language tests (default: ../shared/nix-lang-tests)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

bash scripts/setup-test-deps.sh

step() { printf '\n=== %s\n' "$*"; }

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "unit and integration tests (cargo nextest)"
if ! command -v cargo-nextest >/dev/null; then
  cargo install cargo-nextest
fi
cargo nextest run --workspace --no-fail-fast

step "Nix language conformance suite (lang-tests/, lenient mode)"
LANG_DIR=${B3_LANG_TESTS:-$ROOT/../shared/nix-lang-tests}
cargo build -p b3-cli -p b3-lang-tests
MIN_PASS=$(cat lang-tests/min-pass 2>/dev/null || echo 0)
if [ -d "$LANG_DIR" ]; then
  ./target/debug/b3-lang-tests --lenient --b3 "$ROOT/target/debug/b3" --min-pass "$MIN_PASS" "$LANG_DIR" \
    > target/lang-tests.log 2>&1 || { tail -n 40 target/lang-tests.log; exit 1; }
  grep -E '^(FAIL|SKIP) ' target/lang-tests.log | head -n 60 || true
  echo "lang-tests: $(tail -n 1 target/lang-tests.log)"
else
  echo "lang-tests: no test folder at $LANG_DIR" >&2
  exit 1
fi

step "b3's own language tests (lang-tests/b3-tests)"
./target/debug/b3-lang-tests --lenient --b3 "$ROOT/target/debug/b3" --min-pass "$(cat lang-tests/b3-tests/min-pass 2>/dev/null || echo 0)" lang-tests/b3-tests \
  > target/b3-lang-tests.log 2>&1 || { tail -n 40 target/b3-lang-tests.log; exit 1; }
echo "b3-tests: $(tail -n 1 target/b3-lang-tests.log)"

step "Windows: cross build for x86_64-pc-windows-gnu, WinFSP type-check, portable suites under wine"
bash scripts/test-windows.sh
