//! The local store used by a user without root privileges: adding
//! directories (from the filesystem and from NARs), verifying, repairing and
//! collecting them must all work without `CAP_DAC_OVERRIDE`, although every
//! directory in a store path is read-only (0555).
//!
//! Run as root (as CI on this machine does), the test re-executes itself as
//! `nobody` through `setpriv`; run as any other user, it already is the
//! unprivileged case and runs the checks directly. The store path of the
//! added tree is checked against `nix-store --add` (into a chroot store).

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use b3_store::hash::HashAlgo;
use b3_store::local::{GcOptions, LocalStore, LocalStoreConfig, RepairSource, VerifyOptions};
use b3_store::path::FileIngestionMethod;

extern "C" {
    fn geteuid() -> u32;
}

fn nix_store_add(src: &Path, scratch: &Path) -> String {
    let out = Command::new("nix-store")
        .arg("--store")
        .arg(scratch)
        .arg("--add")
        .arg(src)
        .output()
        .expect("nix-store not found: run scripts/setup-test-deps.sh to install the Nix oracle");
    assert!(
        out.status.success(),
        "nix-store --add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A tree with nested directories, an executable, a symlink and an empty
/// directory: everything whose mode canonicalisation touches.
fn make_tree(src: &Path) {
    std::fs::create_dir_all(src.join("a/b/c")).unwrap();
    std::fs::create_dir_all(src.join("empty")).unwrap();
    std::fs::write(src.join("a/b/c/deep"), b"deep\n").unwrap();
    std::fs::write(src.join("a/file"), vec![7u8; 300_000]).unwrap();
    std::fs::write(src.join("run"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(src.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a/b/c/deep", src.join("link")).unwrap();
    for d in ["", "a", "a/b", "a/b/c", "empty"] {
        std::fs::set_permissions(src.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn unprivileged_user_can_add_verify_repair_and_collect_directories() {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = d.path().join("tree");
    make_tree(&src);
    let expected = nix_store_add(&src, &d.path().join("nix-chroot"));
    let root = d.path().join("b3");
    std::fs::create_dir(&root).unwrap();

    // SAFETY: plain getter.
    if unsafe { geteuid() } != 0 {
        unprivileged_checks(&root, &src, &expected);
        return;
    }
    let st = Command::new("chown")
        .arg("65534:65534")
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "inner_unprivileged_store",
            "--ignored",
            "--nocapture",
        ])
        .env("B3_INNER_STORE", &root)
        .env("B3_INNER_SRC", &src)
        .env("B3_INNER_EXPECT", &expected)
        .output()
        .expect("setpriv runs (util-linux)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "unprivileged store use failed:\n{text}"
    );
    assert!(text.contains("1 passed"), "{text}");
    // Everything the store made belongs to nobody.
    let m = std::fs::metadata(root.join("nix/store")).unwrap();
    assert_eq!(m.uid(), 65534);
}

#[test]
#[ignore = "run as nobody by unprivileged_user_can_add_verify_repair_and_collect_directories"]
fn inner_unprivileged_store() {
    let (Some(root), Some(src), Some(expected)) = (
        std::env::var_os("B3_INNER_STORE"),
        std::env::var_os("B3_INNER_SRC"),
        std::env::var("B3_INNER_EXPECT").ok(),
    ) else {
        panic!("run by the outer test only");
    };
    // SAFETY: plain getter.
    assert_ne!(unsafe { geteuid() }, 0, "must run unprivileged");
    unprivileged_checks(Path::new(&root), Path::new(&src), &expected);
}

fn unprivileged_checks(root: &Path, src: &Path, expected: &str) {
    let mut cfg = LocalStoreConfig::new(root);
    cfg.fsync = false;
    let store = LocalStore::open(cfg).unwrap();

    // A directory from the filesystem.
    let p = store
        .add_path_sync(
            "tree",
            src,
            FileIngestionMethod::Recursive,
            HashAlgo::Sha256,
        )
        .unwrap_or_else(|e| panic!("adding a directory: {e}"));
    assert_eq!(store.print_path(&p), expected);
    let real = store.real_path(&p);
    let mode = |p: PathBuf| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(real.clone()), 0o555);
    assert_eq!(mode(real.join("a/b/c")), 0o555);
    assert_eq!(mode(real.join("run")), 0o555);
    assert_eq!(mode(real.join("a/file")), 0o444);
    assert_eq!(
        std::fs::read(real.join("a/b/c/deep")).unwrap(),
        b"deep\n".to_vec()
    );

    // A directory from a NAR stream (the restore path).
    let mut nar = Vec::new();
    b3_nar::dump_path(src, &mut nar).unwrap();
    let q = store
        .import_nar_ca_sync("tree-from-nar", &nar[..])
        .unwrap_or_else(|e| panic!("importing a directory NAR: {e}"));
    let info = store.query_path_info_sync(&q).unwrap().unwrap();
    assert_eq!(info.nar_size, nar.len() as u64);
    assert_eq!(mode(store.real_path(&q)), 0o555);

    // No temporary entries left next to the paths.
    let leftovers: Vec<String> = std::fs::read_dir(store.real_store_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let clean = store
        .verify(&VerifyOptions {
            check_contents: true,
            ..Default::default()
        })
        .unwrap();
    assert!(clean.is_clean(), "{clean:?}");

    // Repair a damaged path from a NAR (swaps a 0555 tree in place).
    let nar_file = root.join("tree.nar");
    std::fs::write(&nar_file, &nar).unwrap();
    let victim = store.real_path(&q).join("a/b/c");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(victim.join("deep")).unwrap();
    let repaired = store
        .repair_from_sources(
            &info,
            &[RepairSource::Nar {
                path: q.clone(),
                file: nar_file.clone(),
            }],
        )
        .unwrap_or_else(|e| panic!("repairing: {e}"));
    assert!(repaired);
    assert!(store.real_path(&q).join("a/b/c/deep").exists());

    // Collect both: the trash move of a 0555 directory must work too.
    // A fresh handle: the first one's temporary roots keep what it added.
    drop(store);
    let mut cfg = LocalStoreConfig::new(root);
    cfg.fsync = false;
    let store = LocalStore::open(cfg).unwrap();
    // Not runtime roots: this process's own environment names `p`
    // (B3_INNER_EXPECT), which would rightly keep it.
    let r = store
        .collect_garbage(&GcOptions {
            no_runtime_roots: true,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("gc: {e}"));
    let deleted: BTreeSet<_> = r.deleted.into_iter().collect();
    assert!(deleted.contains(&p) && deleted.contains(&q), "{deleted:?}");
    assert!(std::fs::symlink_metadata(&real).is_err());
    assert!(std::fs::symlink_metadata(store.real_path(&q)).is_err());
    let trash = store.real_store_dir().join(".b3-trash");
    let left: Vec<_> = std::fs::read_dir(&trash)
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(!trash.exists(), "trash left behind: {left:?}");
}
