//! Local-store behaviour beyond the shared conformance suite: layout and
//! canonical metadata, crash leftovers, GC roots (direct, indirect,
//! temporary), verify/repair, content-address checks, reference scanning.

// Checks Unix modes, symlinked GC roots and Nix as oracle.
#![cfg(unix)]

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use b3_store::hash::{Hash, HashAlgo};
use b3_store::local::{GcOptions, LocalStore, LocalStoreConfig, RepairSource, VerifyOptions};
use b3_store::path::{ContentAddress, ContentAddressMethod, FileIngestionMethod, StorePath};
use b3_store::refscan::RefScanner;
use b3_store::traits::{StoreError, ValidPathInfo};

fn open(root: &Path) -> LocalStore {
    LocalStore::open(LocalStoreConfig::new(root)).expect("open")
}

fn add_file(store: &LocalStore, dir: &Path, name: &str, data: &[u8]) -> StorePath {
    let f = dir.join(name);
    std::fs::write(&f, data).unwrap();
    store
        .add_path_sync(name, &f, FileIngestionMethod::Recursive, HashAlgo::Sha256)
        .unwrap()
}

fn file_nar(contents: &[u8]) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
        out.resize(out.len() + (8 - b.len() % 8) % 8, 0);
    }
    let mut o = Vec::new();
    for t in [
        &b"nix-archive-1"[..],
        b"(",
        b"type",
        b"regular",
        b"contents",
    ] {
        s(&mut o, t);
    }
    s(&mut o, contents);
    s(&mut o, b")");
    o
}

#[test]
fn layout_and_canonical_metadata() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let store = open(&root);
    assert_eq!(store.store_dir().as_str(), "/nix/store");
    assert!(root.join("nix/var/b3/db.sqlite").exists());
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/x"), b"x").unwrap();
    std::fs::write(src.join("run"), b"#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("run"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let p = store
        .add_path_sync(
            "src",
            &src,
            FileIngestionMethod::Recursive,
            HashAlgo::Sha256,
        )
        .unwrap();
    let real = store.real_path(&p);
    assert_eq!(real, root.join("nix/store").join(p.base_name()));
    for (rel, mode) in [
        ("", 0o555),
        ("sub", 0o555),
        ("sub/x", 0o444),
        ("run", 0o555),
    ] {
        let m = std::fs::symlink_metadata(real.join(rel)).unwrap();
        assert_eq!(m.mode() & 0o7777, mode, "{rel}");
        assert_eq!(m.mtime(), 1, "{rel}");
    }
    // No temporary directories are left behind.
    let names: Vec<String> = std::fs::read_dir(root.join("nix/store"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![p.base_name()]);
}

#[test]
fn open_sweeps_leftovers_of_dead_processes_only() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let keep = {
        let store = open(&root);
        add_file(&store, d.path(), "keep", b"keep")
    };
    let sd = root.join("nix/store");
    // What a process killed mid-add leaves: its temp dir, a path renamed
    // into place but never registered, and its unlocked temp-roots file.
    std::fs::create_dir_all(sd.join(".b3-tmp-999999-0/node/deep")).unwrap();
    std::fs::write(sd.join(".b3-tmp-999999-0/node/deep/f"), b"partial").unwrap();
    let junk = "ap8llpmkx0n1cn5b6h321cfd1ggqc6bg-junk";
    std::fs::create_dir_all(sd.join(junk)).unwrap();
    std::fs::write(
        root.join("nix/var/b3/temproots/999999-0"),
        format!("{junk}\n"),
    )
    .unwrap();

    // A live store in this process holds its own temp roots.
    let live = open(&root);
    let names: BTreeSet<String> = std::fs::read_dir(&sd)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, BTreeSet::from([keep.base_name()]));
    assert!(!root.join("nix/var/b3/temproots/999999-0").exists());
    assert!(live.is_valid_sync(&keep).unwrap());
    let report = live
        .verify(&VerifyOptions {
            check_contents: true,
            ..Default::default()
        })
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn a_process_with_a_locked_temp_roots_file_keeps_its_temp_dirs_whatever_its_other_files_say() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    drop(open(&root));
    let sd = root.join("nix/store");
    let roots = root.join("nix/var/b3/temproots");
    // Process 999998 is adding a path: its temp dir, its locked file. Its
    // second file is unlocked: it is opening the store again right now (a
    // file is made, then locked), or it is a dead namesake's leftover.
    std::fs::create_dir_all(sd.join(".b3-tmp-999998-0/node")).unwrap();
    let held = b3_store::lock::FileLock::lock(
        &roots.join("999998-0"),
        b3_store::lock::LockMode::Exclusive,
    )
    .unwrap();
    std::fs::write(roots.join("999998-1"), "").unwrap();
    // Another process opens the store and sweeps.
    let other = open(&root);
    assert!(sd.join(".b3-tmp-999998-0/node").is_dir());
    assert!(roots.join("999998-0").exists());
    assert!(!roots.join("999998-1").exists());
    // Once it is gone, its temp dir goes with the next sweep.
    drop(held);
    drop(other);
    drop(open(&root));
    assert!(!sd.join(".b3-tmp-999998-0").exists());
}

#[cfg(unix)]
#[test]
fn a_running_process_the_sweep_did_not_list_keeps_its_temp_dirs() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    drop(open(&root));
    let sd = root.join("nix/store");
    let roots = root.join("nix/var/b3/temproots");
    // A process that opened the store after another's scan of the
    // temporary roots: running, with a temp dir, and no file in the scan.
    let mut running = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let tmp = sd.join(format!(".b3-tmp-{}-0", running.id()));
    std::fs::create_dir_all(tmp.join("node")).unwrap();
    // A dead process's leftover makes the next open sweep.
    std::fs::write(roots.join("999997-0"), "").unwrap();
    drop(open(&root));
    assert!(
        tmp.join("node").is_dir(),
        "a running process's temp dir was swept"
    );
    assert!(!roots.join("999997-0").exists());
    // Once it has ended, it goes.
    running.kill().unwrap();
    running.wait().unwrap();
    std::fs::write(roots.join("999997-0"), "").unwrap();
    drop(open(&root));
    assert!(!tmp.exists());
}

#[test]
fn gc_honours_temp_roots_of_open_stores_and_references() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("r");
    let (x, y, dep, top) = {
        let a = open(&root);
        let x = add_file(&a, d.path(), "x", b"x");
        let y = add_file(&a, d.path(), "y", b"y");
        let dep = add_file(&a, d.path(), "dep", b"dep");
        let nar = file_nar(format!("/nix/store/{}", dep.base_name()).as_bytes());
        let top = StorePath::from_base_name("ap8llpmkx0n1cn5b6h321cfd1ggqc6bg-top").unwrap();
        let mut info = ValidPathInfo::new(
            top.clone(),
            Hash::digest(HashAlgo::Sha256, &nar),
            nar.len() as u64,
        );
        info.references.insert(dep.clone());
        a.add_nar_sync(&info, &nar[..]).unwrap();
        (x, y, dep, top)
    }; // `a` closes: its temporary roots go away.

    let holder = open(&root);
    holder.add_temp_roots([&y]).unwrap();
    let gc = open(&root);
    gc.add_root("top", &top).unwrap();
    let dry = gc
        .collect_garbage(&GcOptions {
            dry_run: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(dry.deleted, vec![x.clone()]);
    assert!(dry.bytes_freed > 0);
    assert!(gc.is_valid_sync(&x).unwrap(), "dry run deleted");
    let r = gc.collect_garbage(&GcOptions::default()).unwrap();
    assert_eq!(r.deleted, vec![x.clone()]);
    assert!(!gc.is_valid_sync(&x).unwrap());
    assert!(!gc.real_path(&x).exists());
    for p in [&y, &dep, &top] {
        assert!(gc.is_valid_sync(p).unwrap(), "{p}");
        assert!(gc.real_path(p).exists());
    }
    drop(holder);
    let r = gc.collect_garbage(&GcOptions::default()).unwrap();
    assert_eq!(r.deleted, vec![y.clone()]);
    // Dropping the root frees the closure, referrer and reference together.
    std::fs::remove_file(root.join("nix/var/b3/gcroots/top")).unwrap();
    let r = gc.collect_garbage(&GcOptions::default()).unwrap();
    let got: BTreeSet<_> = r.deleted.into_iter().collect();
    assert_eq!(got, BTreeSet::from([dep, top]));
    assert!(gc.all_valid_paths().unwrap().is_empty());
}

#[test]
fn result_links_are_usable_indirect_roots() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("r");
    let p = {
        let s = open(&root);
        let p = add_file(&s, d.path(), "f", b"content");
        s.create_result_link(&d.path().join("result"), &p).unwrap();
        p
    };
    // The link resolves on disk, whatever the physical root.
    assert_eq!(std::fs::read(d.path().join("result")).unwrap(), b"content");
    let s = open(&root);
    assert_eq!(
        s.resolve_user_path(d.path().join("result").to_str().unwrap())
            .unwrap(),
        p
    );
    assert!(s
        .collect_garbage(&GcOptions::default())
        .unwrap()
        .deleted
        .is_empty());
    std::fs::remove_file(d.path().join("result")).unwrap();
    assert_eq!(
        s.collect_garbage(&GcOptions::default()).unwrap().deleted,
        vec![p]
    );
}

#[test]
fn verify_finds_and_repairs_vanished_corrupted_and_unregistered() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("r");
    let s = open(&root);
    let gone = add_file(&s, d.path(), "gone", b"gone");
    let bad = add_file(&s, d.path(), "bad", b"good bytes");
    crate_remove(&s.real_path(&gone));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(s.real_path(&bad), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(s.real_path(&bad), b"bad bytes!").unwrap();
    let stray = root.join("nix/store/ap8llpmkx0n1cn5b6h321cfd1ggqc6bg-stray");
    std::fs::write(&stray, b"?").unwrap();

    let r = s
        .verify(&VerifyOptions {
            check_contents: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.vanished, vec![gone.clone()]);
    assert_eq!(r.corrupted.len(), 1);
    assert_eq!(r.corrupted[0].path, bad);
    assert_eq!(
        r.unregistered,
        vec!["ap8llpmkx0n1cn5b6h321cfd1ggqc6bg-stray".to_string()]
    );
    assert!(!r.is_clean());

    // A good copy of `bad` elsewhere (another store's directory).
    let other = open(&d.path().join("other"));
    add_file(&other, d.path(), "bad", b"good bytes");
    let r = s
        .verify(&VerifyOptions {
            check_contents: true,
            repair: true,
            sources: vec![RepairSource::StoreDir(other.real_store_dir().to_path_buf())],
        })
        .unwrap();
    assert!(r.all_repaired(), "{r:?}");
    assert_eq!(r.repaired, vec![bad.clone()]);
    assert_eq!(r.invalidated, vec![gone.clone()]);
    assert!(!stray.exists());
    assert_eq!(std::fs::read(s.real_path(&bad)).unwrap(), b"good bytes");
    assert_eq!(
        std::fs::symlink_metadata(s.real_path(&bad)).unwrap().mode() & 0o7777,
        0o444
    );
    let r = s
        .verify(&VerifyOptions {
            check_contents: true,
            ..Default::default()
        })
        .unwrap();
    assert!(r.is_clean(), "{r:?}");
}

fn crate_remove(p: &Path) {
    b3_store::canonicalise::remove_tree(p).unwrap();
}

#[test]
fn content_address_must_match_path_and_contents() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let nar = file_nar(b"hello\n");
    let nar_hash = Hash::digest(HashAlgo::Sha256, &nar);
    // The right path for this CA is i9pmrzmp…-hello.txt (nix-store --add).
    let right = StorePath::from_base_name("i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt").unwrap();
    let ca = ContentAddress {
        method: ContentAddressMethod::Fixed(FileIngestionMethod::Recursive),
        hash: nar_hash,
    };
    let wrong = StorePath::from_base_name("ap8llpmkx0n1cn5b6h321cfd1ggqc6bg-hello.txt").unwrap();
    let mut info = ValidPathInfo::new(wrong.clone(), nar_hash, nar.len() as u64);
    info.ca = Some(ca);
    let e = s.add_nar_sync(&info, &nar[..]).unwrap_err();
    assert!(matches!(e, StoreError::CaMismatch { .. }), "{e}");
    info.path = right.clone();
    s.add_nar_sync(&info, &nar[..]).unwrap();
    let got = s.query_path_info_sync(&right).unwrap().unwrap();
    assert_eq!(got.ca, Some(ca));
    assert!(got.ca_matches_path(s.store_dir()));
}

#[test]
fn reference_scan_over_a_stored_nar() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let dep = add_file(&s, d.path(), "dep", b"dep");
    let other = add_file(&s, d.path(), "other", b"other");
    let text = format!("#!/bin/sh\nexec {}/bin/x\n", s.print_path(&dep));
    let user = s
        .add_text_sync("user", text.as_bytes(), &BTreeSet::from([dep.clone()]))
        .unwrap();
    let mut nar = Vec::new();
    s.nar_from_path_sync(&user, &mut nar).unwrap();
    let mut scan = RefScanner::new([dep.hash_part(), other.hash_part()]);
    for chunk in nar.chunks(7) {
        scan.update(chunk);
    }
    assert_eq!(scan.found(), BTreeSet::from([dep.hash_part()]));
    assert_eq!(
        s.query_path_info_sync(&user).unwrap().unwrap().references,
        BTreeSet::from([dep])
    );
}

#[test]
fn two_stores_in_one_process_do_not_block_each_other() {
    let d = tempfile::tempdir().unwrap();
    let a = open(d.path());
    let b = open(d.path());
    let p = add_file(&a, d.path(), "f", b"f");
    assert!(b.is_valid_sync(&p).unwrap());
    assert_eq!(
        b.add_path_sync(
            "f",
            &d.path().join("f"),
            FileIngestionMethod::Recursive,
            HashAlgo::Sha256
        )
        .unwrap(),
        p
    );
}

#[test]
fn adding_a_tree_of_large_and_small_files_copies_and_hashes_it_exactly() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    let pattern = |n: usize, seed: u8| -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    };
    // Large files (written by the large-file thread), interleaved with small
    // ones (written by the pool), executables among both.
    for (i, size) in [0usize, 1, 4095, 97 << 10, 128 << 10, (3 << 20) + 7, 5 << 20]
        .into_iter()
        .enumerate()
    {
        let f = src.join(format!("f{i}"));
        std::fs::write(&f, pattern(size, i as u8)).unwrap();
        if i % 2 == 1 {
            std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        std::fs::write(src.join("sub").join(format!("s{i}")), pattern(size / 3, 7)).unwrap();
    }
    std::fs::write(src.join("sub/deeper/big"), pattern(2 << 20, 9)).unwrap();
    std::os::unix::fs::symlink("../f1", src.join("sub/link")).unwrap();

    let store = open(&d.path().join("store"));
    let p = store
        .add_path_sync(
            "tree",
            &src,
            FileIngestionMethod::Recursive,
            HashAlgo::Sha256,
        )
        .unwrap();
    let want = b3_nar::hash_path(&src).unwrap();
    let info = store.query_path_info_sync(&p).unwrap().unwrap();
    assert_eq!(info.nar_hash.as_bytes(), &want.sha256[..]);
    assert_eq!(info.nar_size, want.size);
    // The copy itself has that NAR, and canonical metadata throughout.
    let real = store.real_path(&p);
    assert_eq!(b3_nar::hash_path(&real).unwrap(), want);
    for f in ["f5", "f6", "sub/deeper/big", "f0"] {
        let m = std::fs::metadata(real.join(f)).unwrap();
        assert_eq!(m.mtime(), 1, "{f}");
        let exec = f == "f5";
        assert_eq!(m.mode() & 0o777, if exec { 0o555 } else { 0o444 }, "{f}");
    }
}
