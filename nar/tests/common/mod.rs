//! Helpers shared by the integration tests: locating the Nix oracle and
//! building NARs token by token (for hostile inputs).
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs an oracle tool; a missing tool fails the test with set-up advice.
pub fn oracle(tool: &str) -> Command {
    let probe = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(s) if s.success() => Command::new(tool),
        _ => panic!(
            "the Nix oracle `{tool}` is not available: run scripts/setup-test-deps.sh \
             (installs Debian's Nix 2.8) before running these tests"
        ),
    }
}

/// `nix-store --dump PATH` bytes.
pub fn nix_dump(path: &Path) -> Vec<u8> {
    let out = oracle("nix-store")
        .arg("--dump")
        .arg(path)
        .output()
        .expect("running nix-store --dump");
    assert!(
        out.status.success(),
        "nix-store --dump {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `nix-hash --type sha256 [--base32] PATH`.
pub fn nix_hash(path: &Path, base32: bool) -> String {
    let mut c = oracle("nix-hash");
    c.args(["--type", "sha256"]);
    if base32 {
        c.arg("--base32");
    }
    let out = c.arg(path).output().expect("running nix-hash");
    assert!(
        out.status.success(),
        "nix-hash {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `nix-store --restore DEST` with `nar` on stdin.
pub fn nix_restore(nar: &[u8], dest: &Path) {
    let mut child = oracle("nix-store")
        .arg("--restore")
        .arg(dest)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running nix-store --restore");
    child.stdin.take().unwrap().write_all(nar).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nix-store --restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds a NAR (or a hostile near-NAR) one token at a time.
#[derive(Default, Clone)]
pub struct Toks(pub Vec<u8>);

impl Toks {
    pub fn new() -> Self {
        Toks(Vec::new())
    }
    /// A string token with correct padding.
    pub fn s(mut self, t: &[u8]) -> Self {
        self.0.extend_from_slice(&(t.len() as u64).to_le_bytes());
        self.0.extend_from_slice(t);
        let pad = (8 - t.len() % 8) % 8;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }
    pub fn ss(self, ts: &[&[u8]]) -> Self {
        ts.iter().fold(self, |acc, t| acc.s(t))
    }
    /// Raw bytes (for bad lengths and padding).
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    pub fn len(&self) -> u64 {
        self.0.len() as u64
    }
    pub fn magic(self) -> Self {
        self.s(b"nix-archive-1")
    }
    /// `entry ( name NAME node` prefix.
    pub fn entry(self, name: &[u8]) -> Self {
        self.ss(&[b"entry", b"(", b"name", name, b"node"])
    }
    /// A complete regular node `( type regular contents C )`.
    pub fn file(self, c: &[u8]) -> Self {
        self.ss(&[b"(", b"type", b"regular", b"contents", c, b")"])
    }
}
