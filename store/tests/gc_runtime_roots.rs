//! Garbage collection beyond the roots directory: store paths used by
//! running processes (their executable, open files, working directory,
//! environment, command line) stay alive unless runtime roots are turned
//! off, and `max_freed` stops early without ever leaving a path whose
//! reference is gone.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use b3_store::hash::HashAlgo;
use b3_store::local::{GcOptions, LocalStore, LocalStoreConfig, VerifyOptions};
use b3_store::path::{FileIngestionMethod, StorePath};

fn open(root: &Path) -> LocalStore {
    let mut cfg = LocalStoreConfig::new(root);
    cfg.fsync = false;
    LocalStore::open(cfg).expect("open")
}

/// Contents unique to this test run, so that no other process on the
/// machine can name the same store path hashes.
fn unique(tag: &str) -> Vec<u8> {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag} {t} {}\n", std::process::id()).into_bytes()
}

fn add_file(store: &LocalStore, dir: &Path, name: &str, data: &[u8]) -> StorePath {
    let f = dir.join(name);
    std::fs::write(&f, data).unwrap();
    store
        .add_path_sync(name, &f, FileIngestionMethod::Recursive, HashAlgo::Sha256)
        .unwrap()
}

fn add_dir(store: &LocalStore, dir: &Path, name: &str) -> StorePath {
    let src = dir.join(name);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("id"), unique(name)).unwrap();
    store
        .add_path_sync(name, &src, FileIngestionMethod::Recursive, HashAlgo::Sha256)
        .unwrap()
}

#[test]
fn paths_used_by_a_running_process_are_runtime_roots() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("r");
    let (exe, open_file, cwd, env, arg, unused) = {
        let s = open(&root);
        // A store copy of `sleep` to run (the executable is itself a path).
        let sleep_bin = which("sleep");
        let mut bin = std::fs::read(&sleep_bin).unwrap();
        // Make the copy's hash unique; trailing bytes do not change an ELF.
        bin.extend_from_slice(&unique("exe"));
        let exe_src = d.path().join("sleep");
        std::fs::write(&exe_src, &bin).unwrap();
        std::fs::set_permissions(
            &exe_src,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let exe = s
            .add_path_sync(
                "sleep",
                &exe_src,
                FileIngestionMethod::Recursive,
                HashAlgo::Sha256,
            )
            .unwrap();
        (
            exe,
            add_file(&s, d.path(), "opened", &unique("opened")),
            add_dir(&s, d.path(), "cwd"),
            add_file(&s, d.path(), "in-env", &unique("env")),
            add_file(&s, d.path(), "in-args", &unique("arg")),
            add_file(&s, d.path(), "unused", &unique("unused")),
        )
    }; // the adding store closes: its temporary roots are gone.

    let gc = open(&root);
    let mut child = Command::new(gc.real_path(&exe))
        // The command line: argv[0] names a store path.
        .arg0(gc.real_path(&arg))
        .arg("600")
        .current_dir(gc.real_path(&cwd))
        .env("SOME_PATH", gc.print_path(&env))
        .stdin(Stdio::from(
            std::fs::File::open(gc.real_path(&open_file)).unwrap(),
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Give it time to exec.
    std::thread::sleep(std::time::Duration::from_millis(200));

    let kept = BTreeSet::from([
        exe.clone(),
        open_file.clone(),
        cwd.clone(),
        env.clone(),
        arg.clone(),
    ]);
    let without = gc
        .collect_garbage(&GcOptions {
            dry_run: true,
            no_runtime_roots: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(without.deleted.len(), 6, "{:?}", without.deleted);

    let r = gc.collect_garbage(&GcOptions::default());
    let _ = child.kill();
    let _ = child.wait();
    let r = r.unwrap();
    assert_eq!(r.deleted, vec![unused.clone()]);
    assert_eq!(r.runtime_roots, kept);
    for p in &kept {
        assert!(gc.is_valid_sync(p).unwrap(), "{p} was collected");
    }

    // Once the process is gone, nothing keeps them.
    let r = gc.collect_garbage(&GcOptions::default()).unwrap();
    assert_eq!(r.deleted.into_iter().collect::<BTreeSet<_>>(), kept);
}

#[test]
fn max_freed_stops_early_and_keeps_references_of_remaining_paths() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("r");
    let s = open(&root);
    // 64 KiB each, so that every path occupies disk blocks.
    let big = |tag: &str| {
        let mut v = unique(tag);
        v.resize(64 << 10, b'.');
        v
    };
    let leaf = s
        .add_text_sync("leaf", &big("leaf"), &BTreeSet::new())
        .unwrap();
    let mid = s
        .add_text_sync("mid", &big("mid"), &BTreeSet::from([leaf.clone()]))
        .unwrap();
    let top = s
        .add_text_sync("top", &big("top"), &BTreeSet::from([mid.clone()]))
        .unwrap();
    let other = s
        .add_text_sync("other", &big("other"), &BTreeSet::new())
        .unwrap();
    drop(s);

    let gc = open(&root);
    let mut gone = Vec::new();
    for _ in 0..4 {
        let r = gc
            .collect_garbage(&GcOptions {
                max_freed: Some(1),
                no_runtime_roots: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.deleted.len(), 1, "{:?}", r.deleted);
        assert!(r.bytes_freed >= 1);
        gone.extend(r.deleted);
        // Whatever remains still has its references.
        let v = gc
            .verify(&VerifyOptions {
                check_contents: true,
                ..Default::default()
            })
            .unwrap();
        assert!(v.is_clean(), "{v:?}");
    }
    let pos = |p: &StorePath| gone.iter().position(|g| g == p).unwrap();
    assert!(pos(&top) < pos(&mid) && pos(&mid) < pos(&leaf), "{gone:?}");
    assert!(gone.contains(&other));
    assert!(gc.all_valid_paths().unwrap().is_empty());
}

fn which(tool: &str) -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} not on PATH"))
}
