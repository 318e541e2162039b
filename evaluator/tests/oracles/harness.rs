//! Builds a small C++ oracle program with g++ (once per source version,
//! cached under Cargo's per-target temporary directory).

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// Compiles `tests/oracles/<name>.cpp` and returns the executable's path.
/// Panics (failing the test) if g++ is missing or compilation fails.
pub fn build(name: &str, extra_args: &[&str]) -> PathBuf {
    // Tests of one binary run on several threads; build once.
    static BUILD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/oracles")
        .join(format!("{name}.cpp"));
    let text = std::fs::read(&src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
    // Name the binary after a hash of its source so edits rebuild it.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.iter().chain(extra_args.join(" ").as_bytes()) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let exe = dir.join(format!("{name}-{h:016x}"));
    if exe.exists() {
        return exe;
    }
    let tmp = dir.join(format!("{name}-{h:016x}.tmp{}", std::process::id()));
    let status = Command::new("g++")
        .args(["-std=c++17", "-O2", "-o"])
        .arg(&tmp)
        .arg(&src)
        .args(extra_args)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run g++ ({e}); the C++ oracle needs it: run scripts/setup-test-deps.sh")
        });
    assert!(status.success(), "g++ failed to build {}", src.display());
    std::fs::rename(&tmp, &exe).expect("moving oracle binary into place");
    exe
}

/// Runs `exe`, feeding `input` on stdin, and returns its stdout lines.
pub fn run_lines(exe: &Path, input: &str) -> Vec<String> {
    use std::io::Write;
    let mut child = Command::new(exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting oracle");
    let mut stdin = child.stdin.take().expect("oracle stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || {
        stdin
            .write_all(input.as_bytes())
            .expect("writing to oracle");
    });
    let out = child.wait_with_output().expect("oracle output");
    writer.join().expect("writer thread");
    assert!(out.status.success(), "oracle failed: {:?}", out.status);
    String::from_utf8(out.stdout)
        .expect("oracle output is UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A small deterministic PRNG (xorshift64*), so failures are reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

pub fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "-".to_owned();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
