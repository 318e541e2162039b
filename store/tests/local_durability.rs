//! The targeted durability path (each add flushes its own files and
//! directories, then the store directory, then registers): an add that
//! fails or dies at any step leaves nothing registered and nothing behind
//! once the store is opened again, and a completed add is whole.
//!
//! The process deaths are real: this test binary runs itself again as a
//! child (the ignored `crash_child` test) with `B3_TEST_CRASH_AT` set, and
//! the child aborts at that point as a `kill -9` there would.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Command;

use b3_store::hash::{Hash, HashAlgo};
use b3_store::local::{LocalStore, LocalStoreConfig, VerifyOptions};
use b3_store::path::{FileIngestionMethod, StorePath};
use b3_store::traits::ValidPathInfo;

fn open(root: &Path) -> LocalStore {
    let mut cfg = LocalStoreConfig::new(root);
    cfg.fsync = true;
    LocalStore::open(cfg).expect("open")
}

/// A tree of many small files, some large ones, symlinks and nested
/// directories (so that the flushes are spread over the writer threads).
fn make_tree(dir: &Path) -> PathBuf {
    let t = dir.join("tree");
    for d in 0..6 {
        let sub = t.join(format!("d{d}/inner"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..40 {
            std::fs::write(sub.join(format!("f{f}")), format!("{d}-{f}").repeat(f + 1)).unwrap();
        }
        std::os::unix::fs::symlink(format!("inner/f{d}"), t.join(format!("d{d}/link"))).unwrap();
    }
    std::fs::write(t.join("big"), vec![5u8; 3 << 20]).unwrap();
    t
}

fn store_entries(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("nix/store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_clean(store: &LocalStore) {
    let report = store
        .verify(&VerifyOptions {
            check_contents: true,
            ..Default::default()
        })
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn an_add_that_fails_midway_registers_nothing_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let t = make_tree(d.path());
    // A FIFO sorts after every other entry: the add has written (and
    // started flushing) the whole tree before it meets it and fails.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        t.join("zz-fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let root = d.path().join("root");
    let store = open(&root);
    let e = store
        .add_path_sync("tree", &t, FileIngestionMethod::Recursive, HashAlgo::Sha256)
        .unwrap_err();
    assert!(e.to_string().contains("zz-fifo"), "{e}");
    assert!(store.all_valid_paths().unwrap().is_empty());
    assert_eq!(store_entries(&root), Vec::<String>::new());
    assert_clean(&store);
    // The same tree without the FIFO adds whole.
    std::fs::remove_file(t.join("zz-fifo")).unwrap();
    let p = store
        .add_path_sync("tree", &t, FileIngestionMethod::Recursive, HashAlgo::Sha256)
        .unwrap();
    assert!(store.is_valid_sync(&p).unwrap());
    assert_clean(&store);
}

#[test]
fn a_nar_failing_its_hash_after_being_restored_registers_nothing() {
    let d = tempfile::tempdir().unwrap();
    let t = make_tree(d.path());
    let (nar, _) = b3_nar::dump_path(&t, Vec::new()).unwrap();
    let root = d.path().join("root");
    let store = open(&root);
    let right = Hash::digest(HashAlgo::Sha256, &nar);
    let wrong = Hash::digest(HashAlgo::Sha256, b"something else");
    let path = StorePath::from_base_name("7rjj86a15146cq1d0ng7ykzp2c3n5zl6-tree").unwrap();
    let info = ValidPathInfo::new(path.clone(), wrong, nar.len() as u64);
    let e = store.add_nar_sync(&info, &nar[..]).unwrap_err();
    assert!(e.to_string().contains("hash"), "{e}");
    // Truncated: the files before the cut were written and flushed.
    let info = ValidPathInfo::new(path.clone(), right, nar.len() as u64);
    assert!(store.add_nar_sync(&info, &nar[..nar.len() / 2]).is_err());
    assert!(!store.is_valid_sync(&path).unwrap());
    assert_eq!(store_entries(&root), Vec::<String>::new());
    // Whole, it goes in, canonical, and dumps back to the same bytes.
    store.add_nar_sync(&info, &nar[..]).unwrap();
    let mut back = Vec::new();
    store.nar_from_path_sync(&path, &mut back).unwrap();
    assert_eq!(back, nar);
    assert_clean(&store);
}

/// Run by [`a_process_dying_at_each_step_of_an_add_leaves_no_valid_path`]
/// in a child process; does nothing when run on its own.
#[test]
#[ignore = "run as a child process by the crash test"]
fn crash_child() {
    let (Some(root), Some(src)) = (
        std::env::var_os("B3_TEST_CHILD_ROOT"),
        std::env::var_os("B3_TEST_CHILD_SRC"),
    ) else {
        return;
    };
    let store = open(Path::new(&root));
    let _ = store.add_path_sync(
        "tree",
        Path::new(&src),
        FileIngestionMethod::Recursive,
        HashAlgo::Sha256,
    );
    // Reaching here means the crash point was never hit.
    std::process::exit(3);
}

#[test]
fn a_process_dying_at_each_step_of_an_add_leaves_no_valid_path() {
    let d = tempfile::tempdir().unwrap();
    let t = make_tree(d.path());
    let exe = std::env::current_exe().unwrap();
    for point in ["after-flush", "before-rename", "before-register"] {
        let root = d.path().join(format!("root-{point}"));
        drop(open(&root));
        let out = Command::new(&exe)
            .args(["--exact", "crash_child", "--ignored", "--nocapture"])
            .env("B3_TEST_CRASH_AT", point)
            .env("B3_TEST_CHILD_ROOT", &root)
            .env("B3_TEST_CHILD_SRC", &t)
            .output()
            .unwrap();
        assert!(
            !out.status.success() && out.status.code() != Some(3),
            "{point}: the child did not die there: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // Something was left on disk by the dead add...
        assert!(!store_entries(&root).is_empty(), "{point}: nothing written");
        // ...and the next open sweeps it; nothing is valid.
        let store = open(&root);
        assert!(store.all_valid_paths().unwrap().is_empty(), "{point}");
        assert_eq!(store_entries(&root), Vec::<String>::new(), "{point}");
        assert_clean(&store);
        // The add then completes normally.
        let p = store
            .add_path_sync("tree", &t, FileIngestionMethod::Recursive, HashAlgo::Sha256)
            .unwrap();
        assert!(store.is_valid_sync(&p).unwrap());
        assert_clean(&store);
    }
}

#[test]
fn the_whole_filesystem_mode_adds_trees_and_nars_alike() {
    let d = tempfile::tempdir().unwrap();
    let t = make_tree(d.path());
    let mut cfg = LocalStoreConfig::new(d.path().join("root"));
    cfg.sync_whole_fs = true;
    let store = LocalStore::open(cfg).unwrap();
    let p = store
        .add_path_sync("tree", &t, FileIngestionMethod::Recursive, HashAlgo::Sha256)
        .unwrap();
    let (nar, _) = b3_nar::dump_path(&t, Vec::new()).unwrap();
    let q = StorePath::from_base_name("7rjj86a15146cq1d0ng7ykzp2c3n5zl6-tree").unwrap();
    let info = ValidPathInfo::new(
        q.clone(),
        Hash::digest(HashAlgo::Sha256, &nar),
        nar.len() as u64,
    );
    store.add_nar_sync(&info, &nar[..]).unwrap();
    assert!(store.is_valid_sync(&p).unwrap() && store.is_valid_sync(&q).unwrap());
    assert_clean(&store);
}
