//! Shared set-up of the shell, print-env, multicall and example tests: a
//! fresh b3 store per test binary, and the tools the example toolchain
//! imports from the host (Debian's busybox-static, tcc, musl-dev).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn b3() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_b3"))
}

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Fails (never skips) when the host lacks what the examples import.
pub fn require_toolchain() {
    for p in [
        "/bin/busybox",
        "/usr/bin/tcc",
        "/usr/lib/x86_64-linux-musl/libc.a",
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    ] {
        assert!(
            Path::new(p).exists(),
            "{p} is missing: run scripts/setup-test-deps.sh (installs busybox-static, tcc, musl-dev)"
        );
    }
}

/// Builds the example set once (serially) in the shared store, so tests
/// running in parallel find it built. Returns the toolchain check too.
pub fn prebuilt() {
    require_toolchain();
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let ex = examples();
        let drv = ok(b3_cmd(&[
            "instantiate",
            ex.to_str().unwrap(),
            "-A",
            "shell",
        ]));
        ok(b3_cmd(&["build", drv.trim()]));
    });
}

/// The shared store's directory, once made.
static STORE: OnceLock<PathBuf> = OnceLock::new();

/// A b3 store in a temporary directory, shared by the tests of one process
/// (nextest runs each test in its own). Statics are never dropped, so the
/// directory is removed at exit instead (store paths are read-only, which
/// `remove_tree` handles).
pub fn store() -> &'static Path {
    STORE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("b3-shell-test-")
            .tempdir()
            .expect("temporary directory")
            .keep();
        // SAFETY: registers a plain function with no captured state.
        unsafe { libc::atexit(remove_store) };
        dir
    })
}

extern "C" fn remove_store() {
    if let Some(dir) = STORE.get() {
        let _ = b3_store::canonicalise::remove_tree(dir);
    }
}

/// `b3 ARGS` on the shared store.
pub fn b3_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(b3());
    c.env("B3_STORE", store()).env("B3_FSYNC", "0").args(args);
    c
}

pub fn run(mut c: Command) -> Output {
    c.output().expect("running b3")
}

/// Runs and asserts success; returns stdout.
pub fn ok(c: Command) -> String {
    let dbg = format!("{c:?}");
    let out = run(c);
    assert!(
        out.status.success(),
        "{dbg} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
