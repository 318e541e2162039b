//! Helpers shared by the b3-vfs integration tests: the Nix oracle and
//! generated trees that exercise every NAR feature.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const BUSYBOX: &str = "/nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb";

/// `nix-store --dump PATH`, failing the test loudly if the oracle is missing.
pub fn nix_dump(path: &Path) -> Vec<u8> {
    let out = Command::new("nix-store")
        .arg("--dump")
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("nix-store not runnable ({e}): run scripts/setup-test-deps.sh to install the Nix oracle")
        });
    assert!(
        out.status.success(),
        "nix-store --dump {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The busybox store path, or a failure telling how to get it.
pub fn busybox() -> PathBuf {
    let p = PathBuf::from(BUSYBOX);
    assert!(
        p.join("bin/busybox").exists(),
        "{BUSYBOX} is missing: run scripts/setup-test-deps.sh to install the Nix oracle and its test paths"
    );
    p
}

fn write(p: &Path, bytes: &[u8], mode: u32) {
    fs::write(p, bytes).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Deterministic pseudo-random bytes (xorshift), so large files do not compress.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A tree with empty files, executables, symlinks (relative, absolute,
/// dangling, to a directory), nested and empty directories, odd names and a
/// large file whose size is not a multiple of 8.
pub fn make_tree(root: &Path, large: usize) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("share/doc/deep/er/still")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    write(&root.join("empty"), b"", 0o444);
    write(&root.join("bin/tool"), b"#!/bin/sh\necho tool\n", 0o555);
    write(&root.join("bin/empty-exec"), b"", 0o555);
    write(&root.join("share/doc/README"), b"hello\n", 0o444);
    write(
        &root.join("share/doc/deep/er/still/leaf"),
        &noise(4097, 7),
        0o444,
    );
    write(&root.join("large.bin"), &noise(large, 42), 0o444);
    for (i, name) in [
        "with space",
        "-dash",
        "UPPER",
        "lower",
        "_under",
        "ünïcödé",
        "tab\there",
        "new\nline",
        "x.",
        "~tilde",
    ]
    .iter()
    .enumerate()
    {
        write(&root.join(name), format!("{i}").as_bytes(), 0o444);
    }
    // A name that is not UTF-8.
    {
        use std::os::unix::ffi::OsStrExt;
        let n = std::ffi::OsStr::from_bytes(b"latin1-\xe9");
        write(&root.join(n), b"latin1", 0o444);
    }
    symlink("bin/tool", root.join("link-rel")).unwrap();
    symlink("/nix/store/nonexistent-target", root.join("link-abs")).unwrap();
    symlink("share/doc", root.join("link-dir")).unwrap();
    symlink("dangling", root.join("link-dangling")).unwrap();
}

/// Directory permissions as Nix leaves them, so `nix-store --dump` and our
/// readers see the same thing.
pub fn seal(root: &Path) {
    for e in walk(root) {
        let md = fs::symlink_metadata(&e).unwrap();
        if md.is_dir() {
            fs::set_permissions(&e, fs::Permissions::from_mode(0o555)).unwrap();
        }
    }
}

/// Every path under `root` (inclusive), parents before children.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            let mut kids: Vec<_> = fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            kids.sort();
            out.extend(kids);
        }
        i += 1;
    }
    out
}
