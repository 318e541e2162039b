//! Tarball unpacking through `b3_store::fetch::unpack`: every compression,
//! the same tree as GNU tar extracts (compared by NAR hash), and hostile
//! archives refused (absolute paths, `..`, writes through symlinks, hard
//! links out of the tree, device files).

use std::io::{Cursor, Write};
use std::path::Path;
use std::process::Command;

use b3_store::fetch::unpack::{unpack_tarball, UnpackError};
use b3_store::fetch::{single_top_level, unpack_tarball_file};

/// A tar with a directory, a plain file, an executable, a symlink, a hard
/// link and a long (GNU long name) path.
fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, ty: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        b.append_data(&mut h, path, data).unwrap();
    };
    add("pkg-1.0/", tar::EntryType::Directory, 0o755, b"", None);
    add(
        "pkg-1.0/README",
        tar::EntryType::Regular,
        0o644,
        b"hello\n",
        None,
    );
    add(
        "pkg-1.0/bin/run",
        tar::EntryType::Regular,
        0o755,
        b"#!/bin/sh\n",
        None,
    );
    add(
        "pkg-1.0/link",
        tar::EntryType::Symlink,
        0o777,
        b"",
        Some("README"),
    );
    add(
        "pkg-1.0/hard",
        tar::EntryType::Link,
        0o644,
        b"",
        Some("pkg-1.0/README"),
    );
    let long = format!("pkg-1.0/{}/deep.txt", "d".repeat(150));
    add(&long, tar::EntryType::Regular, 0o600, b"deep", None);
    b.into_inner().unwrap()
}

fn nar_hash(p: &Path) -> [u8; 32] {
    b3_nar::hash_path(p).unwrap().sha256
}

fn compress(kind: &str, data: &[u8]) -> Vec<u8> {
    match kind {
        "plain" => data.to_vec(),
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "bz2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zst" => zstd::encode_all(data, 3).unwrap(),
        _ => unreachable!(),
    }
}

#[test]
fn every_compression_unpacks_to_the_tree_gnu_tar_extracts() {
    let dir = tempfile::tempdir().unwrap();
    let tar_path = dir.path().join("sample.tar");
    std::fs::write(&tar_path, sample_tar()).unwrap();
    let reference = dir.path().join("gnu");
    std::fs::create_dir(&reference).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&reference)
        .status()
        .expect("GNU tar is needed for this test (run scripts/setup-test-deps.sh)");
    assert!(st.success());
    let want = nar_hash(&reference.join("pkg-1.0"));
    for kind in ["plain", "gz", "xz", "bz2", "zst"] {
        let archive = dir.path().join(format!("sample.{kind}"));
        std::fs::write(&archive, compress(kind, &sample_tar())).unwrap();
        let dest = dir.path().join(format!("out-{kind}"));
        unpack_tarball_file(&archive, &dest).unwrap();
        let top = single_top_level(&dest).unwrap();
        assert_eq!(top.file_name().unwrap(), "pkg-1.0");
        assert_eq!(nar_hash(&top), want, "{kind}");
        assert_eq!(
            std::fs::read_link(top.join("link")).unwrap(),
            Path::new("README")
        );
    }
}

#[test]
fn several_top_level_entries_are_reported() {
    let mut b = tar::Builder::new(Vec::new());
    for n in ["a", "b"] {
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, n, &b"x"[..]).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("o");
    unpack_tarball(Cursor::new(b.into_inner().unwrap()), &dest).unwrap();
    assert!(matches!(
        single_top_level(&dest),
        Err(UnpackError::TopLevel(2))
    ));
}

/// A raw ustar header: the tar crate refuses to write hostile names itself.
fn raw_entry(name: &str, ty: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = ty;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut v: Vec<u8> = entries.concat();
    v.extend_from_slice(&[0u8; 1024]);
    v
}

fn unpack_err(entries: &[Vec<u8>]) -> (UnpackError, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let e = unpack_tarball(Cursor::new(archive(entries)), &dest).unwrap_err();
    (e, dir)
}

#[test]
fn absolute_and_dotdot_paths_are_refused() {
    for name in ["/etc/evil", "a/../../evil", "../evil"] {
        let (e, dir) = unpack_err(&[raw_entry(name, b'0', "", b"x")]);
        assert!(matches!(e, UnpackError::Hostile { .. }), "{name}: {e:?}");
        assert!(!dir.path().join("evil").exists());
    }
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let (e, _d) = unpack_err(&[
        raw_entry("top/", b'5', "", b""),
        raw_entry("top/esc", b'2', outside.path().to_str().unwrap(), b""),
        raw_entry("top/esc/pwned", b'0', "", b"x"),
    ]);
    assert!(matches!(e, UnpackError::Hostile { .. }), "{e:?}");
    assert!(!outside.path().join("pwned").exists());
}

#[test]
fn symlinks_themselves_may_point_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let a = archive(&[
        raw_entry("top/", b'5', "", b""),
        raw_entry("top/abs", b'2', "/etc/passwd", b""),
    ]);
    unpack_tarball(Cursor::new(a), &dest).unwrap();
    assert_eq!(
        std::fs::read_link(dest.join("top/abs")).unwrap(),
        Path::new("/etc/passwd")
    );
}

#[test]
fn hard_links_out_of_the_tree_or_via_symlinks_are_refused() {
    let (e, _d) = unpack_err(&[raw_entry("h", b'1', "/etc/passwd", b"")]);
    assert!(matches!(e, UnpackError::Hostile { .. }), "{e:?}");
    let (e, _d) = unpack_err(&[
        raw_entry("l", b'2', "/etc", b""),
        raw_entry("h", b'1', "l/passwd", b""),
    ]);
    assert!(matches!(e, UnpackError::Hostile { .. }), "{e:?}");
}

#[test]
fn device_files_and_fifos_are_refused() {
    for ty in [b'3', b'4', b'6'] {
        let (e, _d) = unpack_err(&[raw_entry("dev", ty, "", b"")]);
        assert!(matches!(e, UnpackError::Hostile { .. }), "{e:?}");
    }
}

#[test]
fn garbage_is_an_archive_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    let e = unpack_tarball(
        Cursor::new(compress("gz", &b"not a tar at all, just words ".repeat(30))),
        &dest,
    );
    assert!(e.is_err());
    let e = unpack_tarball(
        Cursor::new(vec![0x1f, 0x8b, 1, 2, 3]),
        &dir.path().join("o2"),
    );
    assert!(matches!(e, Err(UnpackError::Archive(_))), "{e:?}");
}
