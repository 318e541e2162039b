//! `restore_with`: a canonical, in-place restore hands every finished file
//! and directory on, dumps to the same NAR, and leaves nothing behind when
//! the archive is bad.
#![cfg(unix)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use b3_nar::{dump_path, restore_with, RestoreOptions, Tree};

fn sample() -> Tree {
    Tree::dir([
        ("bin", Tree::dir([("run", Tree::executable("#!/bin/sh\n"))])),
        ("data", Tree::file(vec![7u8; 300_000])),
        ("empty", Tree::file("")),
        ("link", Tree::symlink("data")),
        (
            "sub",
            Tree::dir([("deep", Tree::dir([("x", Tree::file("x"))]))]),
        ),
    ])
}

fn walk(p: &Path, out: &mut Vec<(std::path::PathBuf, std::fs::Metadata)>) {
    let m = std::fs::symlink_metadata(p).unwrap();
    if m.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            walk(&e.unwrap().path(), out);
        }
    }
    out.push((p.to_path_buf(), m));
}

#[test]
fn canonical_in_place_restore_has_store_modes_and_mtime_and_hands_on_every_node() {
    let nar = sample().to_nar().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let seen: Arc<Mutex<Vec<std::fs::File>>> = Arc::default();
    let s2 = Arc::clone(&seen);
    let opts = RestoreOptions {
        canonical: true,
        in_place: true,
        on_finished: Some(Box::new(move |f| s2.lock().unwrap().push(f))),
        direct_io_min: None,
    };
    let n = restore_with(&nar[..], &dest, opts).unwrap();
    assert_eq!(n, nar.len() as u64);
    // Nothing but the destination was created beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("out")]);

    let mut nodes = Vec::new();
    walk(&dest, &mut nodes);
    for (p, m) in &nodes {
        assert_eq!(m.mtime(), 1, "{}", p.display());
        let mode = m.mode() & 0o7777;
        if m.is_dir() {
            assert_eq!(mode, 0o555, "{}", p.display());
        } else if m.is_file() {
            let want = if p.ends_with("bin/run") { 0o555 } else { 0o444 };
            assert_eq!(mode, want, "{}", p.display());
        }
    }
    // Every file and directory (not the symlink), each exactly once.
    let handed = seen.lock().unwrap();
    let mut inodes: Vec<u64> = handed.iter().map(|f| f.metadata().unwrap().ino()).collect();
    inodes.sort_unstable();
    let mut want: Vec<u64> = nodes
        .iter()
        .filter(|(_, m)| !m.file_type().is_symlink())
        .map(|(_, m)| m.ino())
        .collect();
    want.sort_unstable();
    assert_eq!(inodes, want);
    drop(handed);

    let (redump, _) = dump_path(&dest, Vec::new()).unwrap();
    assert_eq!(redump, nar);
}

#[test]
fn a_failed_in_place_restore_removes_what_it_made() {
    let nar = sample().to_nar().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    // Cut inside the large file: the directories before it are complete.
    let cut = &nar[..nar.len() - 200];
    let opts = RestoreOptions {
        canonical: true,
        in_place: true,
        on_finished: None,
        direct_io_min: None,
    };
    assert!(restore_with(cut, &dest, opts).is_err());
    assert!(std::fs::symlink_metadata(&dest).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_single_file_archive_restores_canonically_in_place() {
    let nar = Tree::executable("hello").to_nar().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let count = Arc::new(Mutex::new(0));
    let c2 = Arc::clone(&count);
    let opts = RestoreOptions {
        canonical: true,
        in_place: true,
        on_finished: Some(Box::new(move |_| *c2.lock().unwrap() += 1)),
        direct_io_min: None,
    };
    restore_with(&nar[..], &dest, opts).unwrap();
    let m = std::fs::metadata(&dest).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o555);
    assert_eq!(m.mtime(), 1);
    assert_eq!(*count.lock().unwrap(), 1);
}

/// Bytes that never repeat with a period dividing a block, so a chunk
/// written at the wrong offset would show.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn direct_io_restores_large_files_of_awkward_sizes_exactly() {
    let sizes = [
        0usize,
        4095,
        (256 << 10) - 1,
        256 << 10,
        1 << 20,
        (1 << 20) + 1,
        (3 << 20) - 7,
        (2 << 20) + 4096,
    ];
    let tree = Tree::dir(
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let body = pattern(n, i as u32 + 1);
                let node = if i % 2 == 0 {
                    Tree::file(body)
                } else {
                    Tree::executable(body)
                };
                (format!("f{i}"), node)
            })
            .collect::<Vec<_>>(),
    );
    let nar = tree.to_nar().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let finished = Arc::new(Mutex::new(0usize));
    let f2 = Arc::clone(&finished);
    let opts = RestoreOptions {
        canonical: true,
        in_place: true,
        on_finished: Some(Box::new(move |_| *f2.lock().unwrap() += 1)),
        direct_io_min: Some(256 << 10),
    };
    assert_eq!(
        restore_with(&nar[..], &dest, opts).unwrap(),
        nar.len() as u64
    );
    let (again, _) = dump_path(&dest, Vec::new()).unwrap();
    assert!(again == nar, "the restored tree dumps to another NAR");
    // Every file and the directory were handed on.
    assert_eq!(*finished.lock().unwrap(), sizes.len() + 1);
    for (i, &n) in sizes.iter().enumerate() {
        let m = std::fs::metadata(dest.join(format!("f{i}"))).unwrap();
        assert_eq!(m.len(), n as u64);
        assert_eq!(m.mode() & 0o7777, if i % 2 == 0 { 0o444 } else { 0o555 });
        assert_eq!(m.mtime(), 1);
    }
}

#[test]
fn a_nar_truncated_inside_a_direct_io_file_leaves_nothing() {
    let tree = Tree::dir([
        ("a", Tree::file(pattern(2 << 20, 9))),
        ("b", Tree::file(pattern((1 << 20) + 77, 10))),
    ]);
    let nar = tree.to_nar().unwrap();
    for cut in [nar.len() - 500, (1 << 20) + 300, 3 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let opts = RestoreOptions {
            canonical: true,
            in_place: true,
            on_finished: None,
            direct_io_min: Some(256 << 10),
        };
        assert!(restore_with(&nar[..cut], &dest, opts).is_err(), "cut {cut}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "cut {cut}"
        );
    }
}
