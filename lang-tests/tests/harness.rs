//! Runs the b3-lang-tests binary on a small synthetic test folder with a
//! fake `nix-instantiate` (a shell script), checking the lang.sh rules:
//! invocation flags, environment, `/pwd` rewriting, exit codes, lenient
//! vs official comparison, skips, timeouts and the summary line.

// Uses a shell-script fake nix-instantiate.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const FAKE: &str = r#"#!/bin/sh
# A stand-in for nix-instantiate, driven by magic words in the test file.
if [ "$1" = "--parse" ]; then
  src=$(cat)
  case "$src" in
    *BAD*) echo "error: syntax error" >&2; exit 1 ;;
    *CRASH*) kill -SEGV $$ ;;
  esac
  echo "(parsed)"
  exit 0
fi
for last in "$@"; do :; done
src=$(cat "$last")
case "$src" in
  *SLEEP*) sleep 20 ;;
  *ENVIRONMENT*) echo "NIX_PATH=${NIX_PATH-unset} HOME=$HOME TEST_VAR=$TEST_VAR XDG=${XDG_CONFIG_HOME-unset} REMOTE=$NIX_REMOTE"; exit 0 ;;
  *FAILARGS*) echo "error: $*"; exit 1 ;;
  *ARGS*) echo "$*"; exit 0 ;;
  *PWD*) echo "file: $(pwd)/$last"; echo "warning: at $(pwd)/$last" >&2; exit 0 ;;
  *FAIL*) echo "error: at $(pwd)/$last:1:1"; exit 1 ;;
  *OOPS*) exit 3 ;;
esac
cat "$last"
"#;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("writing test file");
}

struct Fixture {
    root: PathBuf,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let root =
            std::env::temp_dir().join(format!("b3-lt-selftest-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let tests = root.join("tests");
        std::fs::create_dir_all(&tests).expect("mkdir");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        let fake = bin.join("nix-instantiate");
        std::fs::write(&fake, FAKE).expect("fake");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Fixture { root }
    }

    fn tests(&self) -> PathBuf {
        self.root.join("tests")
    }

    fn run(&self, extra: &[&str]) -> (i32, Vec<String>) {
        let out = Command::new(env!("CARGO_BIN_EXE_b3-lang-tests"))
            .arg("--b3")
            .arg(self.root.join("bin/nix-instantiate"))
            .args(extra)
            .arg(self.tests())
            .env("XDG_CONFIG_HOME", "/should/be/removed")
            .env("NIX_PATH", "/should/be/removed")
            .output()
            .expect("running harness");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.code().unwrap_or(-1),
            text.lines().map(str::to_owned).collect(),
        )
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn line_for<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no result line for {name} in {lines:#?}"))
}

fn basic_fixture(tag: &str) -> Fixture {
    let f = Fixture::new(tag);
    let t = f.tests();
    write(&t, "parse-fail-bad.nix", "BAD");
    write(&t, "parse-fail-crash.nix", "CRASH");
    write(&t, "parse-fail-bad.err.exp", "something else\n");
    write(&t, "parse-okay-good.nix", "x");
    write(&t, "parse-okay-good.exp", "(parsed)\n");
    write(&t, "eval-okay-plain.nix", "42\n");
    write(&t, "eval-okay-plain.exp", "42\n");
    write(&t, "eval-okay-env.nix", "ENVIRONMENT");
    write(
        &t,
        "eval-okay-env.exp",
        "NIX_PATH=lang/dir3:lang/dir4 HOME=/fake-home TEST_VAR=foo XDG=unset REMOTE=dummy://\n",
    );
    write(&t, "eval-okay-pwd.nix", "PWD");
    write(
        &t,
        "eval-okay-pwd.exp",
        "file: /pwd/lang/eval-okay-pwd.nix\n",
    );
    write(
        &t,
        "eval-okay-pwd.err.exp",
        "warning: at /pwd/lang/eval-okay-pwd.nix\n",
    );
    write(&t, "eval-okay-args.nix", "ARGS");
    write(&t, "eval-okay-args.flags", "-I foo\nignored second line\n");
    write(
        &t,
        "eval-okay-args.exp",
        "-I foo --eval --strict lang/eval-okay-args.nix\n",
    );
    write(&t, "eval-okay-xml.nix", "ARGS");
    write(
        &t,
        "eval-okay-xml.exp.xml",
        "--eval --xml --no-location --strict lang/eval-okay-xml.nix\n",
    );
    write(&t, "eval-okay-xml.exp", "ignored\n");
    write(&t, "eval-okay-off.nix", "1");
    write(&t, "eval-okay-off.exp-disabled", "1\n");
    write(&t, "eval-okay-wrong.nix", "1\n");
    write(&t, "eval-okay-wrong.exp", "2\n");
    write(&t, "eval-fail-throws.nix", "FAIL");
    write(
        &t,
        "eval-fail-throws.err.exp",
        "error: at /pwd/lang/eval-fail-throws.nix:1:1\n",
    );
    write(&t, "eval-fail-flags.nix", "FAILARGS");
    write(
        &t,
        "eval-fail-flags.flags",
        "# comment\n--eval   # why\n--no-show-trace\n",
    );
    write(
        &t,
        "eval-fail-flags.err.exp",
        "error: --eval --no-show-trace lang/eval-fail-flags.nix\n",
    );
    write(&t, "eval-fail-exit3.nix", "OOPS");
    write(&t, "eval-fail-succeeds.nix", "fine");
    write(&t, "lib.nix", "not a test");
    f
}

#[test]
fn lenient_mode_checks_exit_codes_and_stdout() {
    let f = basic_fixture("lenient");
    let (code, lines) = f.run(&["--lenient"]);
    assert_eq!(code, 0, "{lines:#?}");
    assert_eq!(line_for(&lines, "parse-fail-bad"), "PASS parse-fail-bad");
    assert!(line_for(&lines, "parse-fail-crash")
        .starts_with("FAIL parse-fail-crash (killed by a signal"));
    assert_eq!(line_for(&lines, "parse-okay-good"), "PASS parse-okay-good");
    assert_eq!(line_for(&lines, "eval-okay-plain"), "PASS eval-okay-plain");
    assert_eq!(line_for(&lines, "eval-okay-env"), "PASS eval-okay-env");
    assert_eq!(line_for(&lines, "eval-okay-pwd"), "PASS eval-okay-pwd");
    assert_eq!(line_for(&lines, "eval-okay-args"), "PASS eval-okay-args");
    assert_eq!(line_for(&lines, "eval-okay-xml"), "PASS eval-okay-xml");
    assert_eq!(
        line_for(&lines, "eval-okay-off"),
        "SKIP eval-okay-off (.exp-disabled)"
    );
    assert_eq!(
        line_for(&lines, "eval-okay-wrong"),
        "FAIL eval-okay-wrong (stdout differs)"
    );
    assert_eq!(
        line_for(&lines, "eval-fail-throws"),
        "PASS eval-fail-throws"
    );
    assert_eq!(
        line_for(&lines, "eval-fail-exit3"),
        "FAIL eval-fail-exit3 (exit code 3, expected 1)"
    );
    assert_eq!(
        line_for(&lines, "eval-fail-succeeds"),
        "FAIL eval-fail-succeeds (exit code 0, expected 1)"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("9 passed, 4 failed, 1 skipped")
    );
}

#[test]
fn official_mode_compares_error_text() {
    let f = basic_fixture("official");
    let (code, lines) = f.run(&["--official", "--filter", "-"]);
    assert_eq!(code, 0);
    // Wrong expected text now matters; /pwd rewriting makes the rest pass.
    assert_eq!(
        line_for(&lines, "parse-fail-bad"),
        "FAIL parse-fail-bad (output differs)"
    );
    assert_eq!(
        line_for(&lines, "eval-fail-throws"),
        "PASS eval-fail-throws"
    );
    assert_eq!(line_for(&lines, "eval-fail-flags"), "PASS eval-fail-flags");
    assert_eq!(line_for(&lines, "eval-okay-pwd"), "PASS eval-okay-pwd");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("8 passed, 5 failed, 1 skipped")
    );
}

#[test]
fn eval_fail_flags_replace_the_defaults() {
    let f = basic_fixture("flags");
    let (_, lines) = f.run(&["--official", "--filter", "eval-fail-flags", "--verbose"]);
    assert_eq!(line_for(&lines, "eval-fail-flags"), "PASS eval-fail-flags");
    assert_eq!(lines.last().map(String::as_str), Some("1 passed, 0 failed"));
}

#[test]
fn min_pass_turns_too_few_passes_into_failure() {
    let f = basic_fixture("minpass");
    let (code, lines) = f.run(&["--filter", "eval-okay-plain", "--min-pass", "1"]);
    assert_eq!(code, 0);
    assert_eq!(lines.last().map(String::as_str), Some("1 passed, 0 failed"));
    let (code, _) = f.run(&["--filter", "eval-okay-plain", "--min-pass", "2"]);
    assert_eq!(code, 1);
}

#[test]
fn a_hanging_test_times_out_and_fails() {
    let f = Fixture::new("timeout");
    write(&f.tests(), "eval-okay-hang.nix", "SLEEP");
    write(&f.tests(), "eval-okay-hang.exp", "");
    let start = std::time::Instant::now();
    let (code, lines) = f.run(&["--timeout", "1"]);
    assert_eq!(code, 0);
    assert_eq!(
        line_for(&lines, "eval-okay-hang"),
        "FAIL eval-okay-hang (timed out after 1s)"
    );
    assert!(
        start.elapsed().as_secs() < 15,
        "the harness waited for the hung test"
    );
}
