//! Differential tests against real Nix 2.8: on a generated corpus, b3's NAR
//! bytes and hashes must equal `nix-store --dump` / `nix-hash`, and NARs made
//! by either side must restore with the other to identical trees.

// Compares with real Nix on Unix trees (modes, symlinks).
#![cfg(unix)]

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use b3_nar::{dump_path, hash_path, restore};
use common::{nix_dump, nix_hash, nix_restore};

fn write(p: &Path, contents: &[u8], exec: bool) {
    fs::write(p, contents).unwrap();
    let mode = if exec { 0o755 } else { 0o644 };
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn name(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Every corpus case is its own root path, named after what it covers.
fn corpus(base: &Path) -> Vec<PathBuf> {
    let mut cases = Vec::new();
    let mut case = |n: &str| {
        let p = base.join(n);
        cases.push(p.clone());
        p
    };

    write(&case("empty-file"), b"", false);
    fs::create_dir(case("empty-dir")).unwrap();
    write(&case("exec-file"), b"#!/bin/sh\necho hi\n", true);
    symlink("some/relative/target", case("symlink-relative")).unwrap();
    symlink("/etc/passwd", case("symlink-absolute")).unwrap();
    symlink("does-not-exist", case("symlink-dangling")).unwrap();

    // Files whose sizes cover every padding amount.
    let d = case("padding-sizes");
    fs::create_dir(&d).unwrap();
    for n in 0..=17usize {
        let contents: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
        write(&d.join(format!("f{n:02}")), &contents, n % 3 == 0);
    }

    // Mixed node kinds in one directory.
    let d = case("mixed");
    fs::create_dir_all(d.join("sub/inner")).unwrap();
    write(&d.join("a.txt"), b"hello\n", false);
    write(&d.join("sub/run.sh"), b"#!/bin/sh\necho x\n", true);
    write(&d.join("sub/inner/data"), &[0u8, 1, 2, 255, 254], false);
    symlink("a.txt", d.join("link")).unwrap();
    symlink("../a.txt", d.join("sub/up")).unwrap();
    symlink("/nonexistent/abs", d.join("sub/abs")).unwrap();
    fs::create_dir(d.join("sub/empty")).unwrap();
    write(&d.join("empty"), b"", false);

    // Deep nesting.
    let d = case("deep");
    let mut p = d.clone();
    for i in 0..120 {
        p = p.join(format!("d{}", i % 10));
    }
    fs::create_dir_all(&p).unwrap();
    write(&p.join("leaf"), b"bottom\n", false);

    // Names that stress sorting and encoding: spaces, UTF-8, non-UTF-8
    // bytes, case, punctuation, a 255-byte name.
    let d = case("odd-names");
    fs::create_dir(&d).unwrap();
    let names: Vec<Vec<u8>> = vec![
        b"with space".to_vec(),
        " leading space".as_bytes().to_vec(),
        "caf\u{e9}".as_bytes().to_vec(),
        "\u{65e5}\u{672c}\u{8a9e}".as_bytes().to_vec(),
        "emoji-\u{1f600}".as_bytes().to_vec(),
        b"\xff\xfe-not-utf8".to_vec(),
        b"latin1-\xe9".to_vec(),
        b"new\nline".to_vec(),
        b"tab\there".to_vec(),
        b"A".to_vec(),
        b"a".to_vec(),
        b"a.b".to_vec(),
        b"a-b".to_vec(),
        b"ab".to_vec(),
        b"B".to_vec(),
        b"~".to_vec(),
        b"-".to_vec(),
        b"...".to_vec(),
        b"\x01ctrl".to_vec(),
        vec![b'x'; 255],
    ];
    for (i, n) in names.iter().enumerate() {
        let p = d.join(name(n));
        match i % 3 {
            0 => write(&p, n, false),
            1 => {
                fs::create_dir(&p).unwrap();
                write(&p.join(name(n)), b"inner", true);
            }
            _ => symlink(name(n), &p).unwrap(),
        }
    }

    // Many small files.
    let d = case("many-small");
    for i in 0..40 {
        let sub = d.join(format!("dir{i:02}"));
        fs::create_dir_all(&sub).unwrap();
        for j in 0..50 {
            let body = format!("file {i} {j}\n").repeat(j % 7 + 1);
            write(&sub.join(format!("f{j}.c")), body.as_bytes(), j % 11 == 0);
        }
    }

    // A medium file spanning many copy buffers.
    let big: Vec<u8> = (0..3_000_017u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    write(&case("medium-file"), &big, false);

    cases
}

fn b3_dump(p: &Path) -> Vec<u8> {
    dump_path(p, Vec::new()).unwrap().0
}

#[test]
fn dump_and_hash_match_nix_on_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    for case in corpus(tmp.path()) {
        let ours = b3_dump(&case);
        let theirs = nix_dump(&case);
        assert!(ours == theirs, "NAR bytes differ for {}", case.display());
        let h = hash_path(&case).unwrap();
        assert_eq!(h.size, theirs.len() as u64, "{}", case.display());
        assert_eq!(
            h.to_nix_base32(),
            nix_hash(&case, true),
            "{}",
            case.display()
        );
        assert_eq!(h.to_base16(), nix_hash(&case, false), "{}", case.display());
    }
}

#[test]
fn b3_restores_nix_nars_and_redumps_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    for (i, case) in corpus(tmp.path()).into_iter().enumerate() {
        let nar = nix_dump(&case);
        let dest = out.path().join(format!("r{i}"));
        assert_eq!(restore(&nar[..], &dest).unwrap(), nar.len() as u64);
        assert!(
            nix_dump(&dest) == nar,
            "nix re-dump differs for {}",
            case.display()
        );
        assert!(
            b3_dump(&dest) == nar,
            "b3 re-dump differs for {}",
            case.display()
        );
    }
}

#[test]
fn nix_restores_b3_nars_and_redumps_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    for (i, case) in corpus(tmp.path()).into_iter().enumerate() {
        let nar = b3_dump(&case);
        let dest = out.path().join(format!("n{i}"));
        nix_restore(&nar, &dest);
        assert!(
            b3_dump(&dest) == nar,
            "re-dump differs for {}",
            case.display()
        );
    }
}

#[test]
fn restored_modes_match_nix_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let case = corpus(tmp.path())
        .into_iter()
        .find(|p| p.ends_with("mixed"))
        .unwrap();
    let nar = b3_dump(&case);
    let ours = out.path().join("ours");
    let theirs = out.path().join("theirs");
    restore(&nar[..], &ours).unwrap();
    nix_restore(&nar, &theirs);
    for rel in [
        "",
        "a.txt",
        "sub",
        "sub/run.sh",
        "sub/inner/data",
        "sub/empty",
        "empty",
    ] {
        let m1 = fs::symlink_metadata(ours.join(rel))
            .unwrap()
            .permissions()
            .mode();
        let m2 = fs::symlink_metadata(theirs.join(rel))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m1, m2, "mode of {rel:?}");
    }
}

/// A sparse file just over 4 GiB: the u64 size field and streaming must
/// work past 32 bits. Compared by streaming hash, never held in memory.
#[test]
fn file_larger_than_4gib_matches_nix() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("huge");
    {
        let f = fs::File::create(&p).unwrap();
        let size: u64 = (4 << 30) + 12345;
        f.set_len(size).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"past-4GiB", 4 << 30).unwrap();
        f.write_all_at(b"end", size - 3).unwrap();
    }
    let h = hash_path(&p).unwrap();
    // magic (24) + 5 tags of 16 + size field + contents + padding 7.
    let size: u64 = (4 << 30) + 12345;
    assert_eq!(h.size, 24 + 5 * 16 + 8 + size + 7);
    assert_eq!(h.to_nix_base32(), nix_hash(&p, true));
}

/// Reads the Nix-made NAR of a tree through the async reader and async
/// restore: same bytes back.
#[tokio::test]
async fn async_restore_of_nix_nar_redumps_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    for (i, case) in corpus(tmp.path()).into_iter().enumerate() {
        let nar = nix_dump(&case);
        let dest = out.path().join(format!("a{i}"));
        let n = b3_nar::restore_async(&nar[..], &dest).await.unwrap();
        assert_eq!(n, nar.len() as u64);
        assert!(b3_dump(&dest) == nar, "{}", case.display());
        let mut buf = Vec::new();
        b3_nar::dump_path_async(&dest, &mut buf).await.unwrap();
        assert!(buf == nar);
    }
}
