//! Nix's export format against Nix 2.8: a `nix-store --export` stream of
//! paths real Nix made imports into b3 with the same NAR hashes, sizes and
//! references; b3's export of the same paths is byte-identical to Nix's;
//! and a b3 export with a deriver imports into Nix and comes back out of
//! Nix with the same bytes.
//!
//! Needs `nix-store` and `nix-instantiate` on PATH (run `scripts/setup-test-deps.sh`).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use b3_store::export::{export_paths, import_paths};
use b3_store::hash::{Hash, HashAlgo};
use b3_store::local::{LocalStore, LocalStoreConfig};
use b3_store::path::StorePath;
use b3_store::traits::ValidPathInfo;

fn oracle(prog: &str, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{prog} not found ({e}): run scripts/setup-test-deps.sh to install the Nix oracle"
            )
        });
    if let Some(data) = stdin {
        use std::io::Write;
        let mut w = child.stdin.take().unwrap();
        w.write_all(data).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn lines(b: &[u8]) -> Vec<String> {
    String::from_utf8(b.to_vec())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn b3_store(dir: &Path) -> LocalStore {
    let mut cfg = LocalStoreConfig::new(dir);
    cfg.fsync = false;
    LocalStore::open(cfg).unwrap()
}

/// Makes, with real Nix in a chroot store at `nix_root`, a text path `b`
/// referring to a text path `a`; returns (a, b) as printed paths.
fn nix_made_pair(nix_root: &Path) -> (String, String) {
    let root = nix_root.to_str().unwrap();
    let out = oracle(
        "nix-instantiate",
        &[
            "--store",
            root,
            "--eval",
            "--read-write-mode",
            "-E",
            r#"builtins.toFile "b" "refers to ${builtins.toFile "a" "x"}""#,
        ],
        None,
    );
    let b = String::from_utf8(out)
        .unwrap()
        .trim()
        .trim_matches('"')
        .to_string();
    let refs = lines(&oracle(
        "nix-store",
        &["--store", root, "-q", "--references", &b],
        None,
    ));
    assert_eq!(refs.len(), 1, "{refs:?}");
    (refs[0].clone(), b)
}

#[test]
fn nix_export_imports_into_b3_and_b3_exports_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let nix_root = tmp.path().join("nix");
    let root = nix_root.to_str().unwrap();
    let (a, b) = nix_made_pair(&nix_root);
    let nix_export = oracle("nix-store", &["--store", root, "--export", &b, &a], None);

    let store = b3_store(&tmp.path().join("b3"));
    let imported = import_paths(&store, &nix_export[..]).unwrap();
    let printed: Vec<String> = imported.iter().map(|p| store.print_path(p)).collect();
    // References first, as Nix writes them.
    assert_eq!(printed, [a.clone(), b.clone()]);

    for p in [&a, &b] {
        let sp = store.resolve_user_path(p).unwrap();
        let info = store.query_path_info_sync(&sp).unwrap().unwrap();
        let nix_hash = lines(&oracle(
            "nix-store",
            &["--store", root, "-q", "--hash", p],
            None,
        ));
        assert_eq!(info.nar_hash.to_string(), nix_hash[0], "NAR hash of {p}");
        let nix_size = lines(&oracle(
            "nix-store",
            &["--store", root, "-q", "--size", p],
            None,
        ));
        assert_eq!(info.nar_size.to_string(), nix_size[0], "NAR size of {p}");
        let nix_refs: BTreeSet<String> = lines(&oracle(
            "nix-store",
            &["--store", root, "-q", "--references", p],
            None,
        ))
        .into_iter()
        .collect();
        let refs: BTreeSet<String> = info
            .references
            .iter()
            .map(|r| store.print_path(r))
            .collect();
        assert_eq!(refs, nix_refs, "references of {p}");
    }

    let set: BTreeSet<StorePath> = imported.into_iter().collect();
    let ours = export_paths(&store, &set, Vec::new()).unwrap();
    assert!(ours == nix_export, "b3's export differs from Nix's");
    // One path alone, too.
    let one: BTreeSet<StorePath> = [store.resolve_user_path(&b).unwrap()].into();
    let nix_one = oracle("nix-store", &["--store", root, "--export", &b], None);
    assert!(export_paths(&store, &one, Vec::new()).unwrap() == nix_one);
}

#[test]
fn b3_export_with_a_deriver_round_trips_through_nix() {
    let tmp = tempfile::tempdir().unwrap();
    let store = b3_store(&tmp.path().join("b3"));
    let dep = store
        .add_text_sync("dep", b"dependency", &BTreeSet::new())
        .unwrap();
    // An input-addressed path with a deriver and references (itself, dep).
    let nar = b3_nar::Tree::dir([
        ("bin", b3_nar::Tree::executable("#!/bin/sh\necho hi\n")),
        ("lib", b3_nar::Tree::symlink("../x")),
    ])
    .to_nar()
    .unwrap();
    let path = store
        .resolve_user_path("/nix/store/7rjj86a15146cq1d3qy068lml7n8ykzm-thing-1.0")
        .unwrap();
    let mut info = ValidPathInfo::new(
        path.clone(),
        Hash::digest(HashAlgo::Sha256, &nar),
        nar.len() as u64,
    );
    info.references = [path.clone(), dep.clone()].into();
    info.deriver = Some(
        store
            .resolve_user_path("/nix/store/1x5fcsjrcrs4a0pvr6byvv6zbjhg1c3k-thing-1.0.drv")
            .unwrap(),
    );
    store.add_nar_sync(&info, &nar[..]).unwrap();

    let set: BTreeSet<StorePath> = [path.clone(), dep.clone()].into();
    let ours = export_paths(&store, &set, Vec::new()).unwrap();

    let nix_root = tmp.path().join("nix");
    let root = nix_root.to_str().unwrap();
    let printed = lines(&oracle(
        "nix-store",
        &["--store", root, "--import"],
        Some(&ours),
    ));
    assert_eq!(printed, [store.print_path(&dep), store.print_path(&path)]);
    let p = store.print_path(&path);
    let deriver = lines(&oracle(
        "nix-store",
        &["--store", root, "-q", "--deriver", &p],
        None,
    ));
    assert_eq!(deriver, [store.print_path(info.deriver.as_ref().unwrap())]);
    let back = oracle(
        "nix-store",
        &["--store", root, "--export", &p, &store.print_path(&dep)],
        None,
    );
    assert!(back == ours, "Nix re-exports b3's stream differently");
}

#[test]
fn a_corrupt_stream_adds_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = b3_store(&tmp.path().join("b3"));
    let p = store.add_text_sync("t", b"text", &BTreeSet::new()).unwrap();
    let good = export_paths(&store, &[p.clone()].into(), Vec::new()).unwrap();

    let other = b3_store(&tmp.path().join("other"));
    // Cut anywhere inside the item: an error, and the path is not valid.
    for cut in [0, 8, 20, good.len() / 2, good.len() - 9] {
        assert!(import_paths(&other, &good[..cut]).is_err(), "cut at {cut}");
        assert!(!other.is_valid_sync(&p).unwrap(), "cut at {cut}");
    }
    // A wrong marker after the NAR.
    let mut bad = good.clone();
    let nar_end = good.windows(8).position(|w| w == b"NIXE\0\0\0\0").unwrap();
    bad[nar_end] = b'X';
    let err = import_paths(&other, &bad[..]).unwrap_err().to_string();
    assert!(err.contains("marker"), "{err}");
    assert!(!other.is_valid_sync(&p).unwrap());
    // The whole stream imports.
    assert_eq!(
        import_paths(&other, &good[..]).unwrap(),
        std::slice::from_ref(&p)
    );
    assert!(other.is_valid_sync(&p).unwrap());
    // Items are added as they arrive (as Nix does): a stream cut after a
    // complete item is an error, but that item is complete and valid.
    let third = b3_store(&tmp.path().join("third"));
    assert!(import_paths(&third, &good[..good.len() - 1]).is_err());
    assert!(third.is_valid_sync(&p).unwrap());
}

#[test]
fn exporting_a_changed_path_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let store = b3_store(&tmp.path().join("b3"));
    let p = store.add_text_sync("t", b"text", &BTreeSet::new()).unwrap();
    let real = store.real_path(&p);
    let mut perm = std::fs::metadata(&real).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&real, perm).unwrap();
    std::fs::write(&real, b"tampered").unwrap();
    let err = export_paths(&store, &[p].into(), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("has changed"), "{err}");
}
