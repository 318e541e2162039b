//! Reliability of the local store under real processes and a real SQLite
//! file: `kill -9` mid-add, concurrent adders, corruption and repair,
//! hostile NARs. Every check goes through the `b3` binary.

// Drives the b3 binary against Nix and Unix tools.
#![cfg(unix)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn b3() -> &'static str {
    env!("CARGO_BIN_EXE_b3")
}

fn b3_in(store: &Path) -> Command {
    let mut c = Command::new(b3());
    c.arg("--store").arg(store);
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

fn ok_stdout(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// Deterministic pseudo-random generator (xorshift), seeded per test.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A tree of `files` files of varied sizes in nested directories.
fn make_tree(dir: &Path, files: usize, seed: u64) -> PathBuf {
    let mut rng = Rng(seed | 1);
    let root = dir.join(format!("tree{seed}"));
    for i in 0..files {
        let sub = root.join(format!("d{}/e{}", i % 17, i % 5));
        std::fs::create_dir_all(&sub).unwrap();
        let size = (rng.next() % 40_000) as usize + if i % 97 == 0 { 2 << 20 } else { 0 };
        let byte = (rng.next() % 251) as u8;
        let mut data = vec![byte; size];
        for (j, b) in data.iter_mut().enumerate().step_by(4093) {
            *b = (j as u64 ^ rng.next()) as u8;
        }
        std::fs::write(sub.join(format!("f{i}")), data).unwrap();
        if i % 50 == 0 {
            std::os::unix::fs::symlink(format!("f{i}"), sub.join(format!("l{i}"))).unwrap();
        }
    }
    root
}

/// Every file under `p` (names, kinds, sizes): a listing to compare.
fn listing(p: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    fn walk(base: &Path, p: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let path = e.path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            // The database files change on every open (WAL checkpoints); their
            // contents are compared through the CLI instead.
            if rel.contains("db.sqlite") || rel.contains("temproots") || rel.contains("locks/") {
                continue;
            }
            out.insert(format!(
                "{rel} {:?} {}",
                m.file_type(),
                if m.is_file() { m.len() } else { 0 }
            ));
            if m.is_dir() {
                walk(base, &path, out);
            }
        }
    }
    walk(p, p, &mut out);
    out
}

/// The store's registered paths with their metadata (JSON per path).
fn db_snapshot(store: &Path) -> String {
    let list = ok_stdout(b3_in(store).args(["store", "list"]));
    let paths: Vec<&str> = list.lines().collect();
    if paths.is_empty() {
        return String::new();
    }
    ok_stdout(b3_in(store).arg("path-info").arg("--json").args(&paths))
}

fn assert_verify_clean(store: &Path) {
    let out = run(b3_in(store).args(["store", "verify", "--check-contents"]));
    assert!(
        out.status.success(),
        "verify not clean: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kill_9_during_add_leaves_a_consistent_store() {
    let d = tempfile::tempdir().unwrap();
    let tree = make_tree(d.path(), 1500, 7);
    // Reference result and duration from undisturbed adds (the fastest, with
    // a warm page cache, so that kills land inside the add).
    let reference_store = d.path().join("ref");
    let mut full = Duration::MAX;
    let mut expected = String::new();
    for i in 0..2 {
        let s = d.path().join(format!("ref{i}"));
        let t0 = Instant::now();
        expected = ok_stdout(b3_in(&s).args(["store", "add"]).arg(&tree));
        full = full.min(t0.elapsed());
        if i == 1 {
            std::fs::rename(&s, &reference_store).unwrap();
        }
    }
    let expected = expected.trim().to_string();
    let expected_nar = run(b3_in(&reference_store).args(["store", "dump", &expected])).stdout;

    let store = d.path().join("s");
    // Make the store exist, so kills can land in the add itself.
    ok_stdout(b3_in(&store).args(["store", "info"]));
    let mut rng = Rng(0x5eed_1234);
    let mut outcomes = (0, 0);
    let kills = 16;
    for i in 0..kills {
        let mut child = b3_in(&store)
            .args(["store", "add"])
            .arg(&tree)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Spread the kills over the whole add, including its very end.
        let at = full.mul_f64((rng.next() % 1000) as f64 / 1000.0 * 1.2);
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let out = run(b3_in(&store).args(["path-info", &expected]));
        if out.status.success() {
            outcomes.1 += 1;
            let nar = run(b3_in(&store).args(["store", "dump", &expected])).stdout;
            assert!(
                nar == expected_nar,
                "kill {i}: valid path has wrong contents"
            );
            // Remove it again so the next kill has work to interrupt.
            ok_stdout(b3_in(&store).args(["store", "gc"]));
        } else {
            outcomes.0 += 1;
        }
        assert_verify_clean(&store);
        // No temporary directories survive the next open.
        let leftovers: Vec<_> = std::fs::read_dir(store.join("nix/store"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".b3-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "kill {i} ({status}): tmp dirs left");
    }
    eprintln!(
        "kills: {kills}, path absent after {}, valid after {}",
        outcomes.0, outcomes.1
    );
    assert!(outcomes.0 > 0, "no kill interrupted the add");
    // The narrowest windows, hit on purpose: after the tree is complete but
    // before it is in place, and in place but not yet registered.
    for point in ["before-rename", "before-register"] {
        let out = run(b3_in(&store)
            .env("B3_TEST_CRASH_AT", point)
            .args(["store", "add"])
            .arg(&tree));
        assert!(!out.status.success(), "{point}: did not crash");
        let base = expected.rsplit('/').next().unwrap();
        if point == "before-register" {
            assert!(
                store.join("nix/store").join(base).exists(),
                "in place, unregistered"
            );
        }
        assert!(
            !run(b3_in(&store).args(["path-info", &expected]))
                .status
                .success(),
            "{point}"
        );
        assert_verify_clean(&store);
        assert!(
            !store.join("nix/store").join(base).exists(),
            "{point}: leftover not swept"
        );
    }
    // Finally an undisturbed add works and verifies.
    assert_eq!(
        ok_stdout(b3_in(&store).args(["store", "add"]).arg(&tree)).trim(),
        expected
    );
    assert_verify_clean(&store);
}

#[test]
fn eight_concurrent_processes_add_same_and_different_paths() {
    let d = tempfile::tempdir().unwrap();
    let shared = make_tree(d.path(), 300, 11);
    let own: Vec<PathBuf> = (0..8).map(|i| make_tree(d.path(), 40, 100 + i)).collect();
    let store = d.path().join("s");
    let children: Vec<_> = (0..8)
        .map(|i| {
            b3_in(&store)
                .args(["store", "add"])
                .arg(&shared)
                .arg(&own[i])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut shared_paths = BTreeSet::new();
    let mut all = BTreeSet::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 2);
        shared_paths.insert(lines[0].to_string());
        all.extend(lines.iter().map(|l| l.to_string()));
    }
    assert_eq!(shared_paths.len(), 1, "one path for the shared tree");
    assert_eq!(all.len(), 9);
    let listed: BTreeSet<String> = ok_stdout(b3_in(&store).args(["store", "list"]))
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(listed, all);
    // Exactly those entries on disk: nothing half-added, nothing twice.
    let on_disk: BTreeSet<String> = std::fs::read_dir(store.join("nix/store"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .map(|n| format!("/nix/store/{n}"))
        .collect();
    assert_eq!(on_disk, all);
    assert_verify_clean(&store);
}

#[test]
fn corrupted_file_is_reported_and_repaired() {
    let d = tempfile::tempdir().unwrap();
    let tree = make_tree(d.path(), 30, 3);
    let store = d.path().join("s");
    let p = ok_stdout(b3_in(&store).args(["store", "add"]).arg(&tree));
    let p = p.trim().to_string();
    let good_nar = run(b3_in(&store).args(["store", "dump", &p])).stdout;
    let nar_file = d.path().join("good.nar");
    std::fs::write(&nar_file, &good_nar).unwrap();
    let base = p.rsplit('/').next().unwrap();
    let victim = store.join("nix/store").join(base).join("d3/e3/f3");
    let corrupt = || {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&victim, b"corrupted!").unwrap();
    };
    corrupt();

    let out = run(b3_in(&store).args(["store", "verify", "--check-contents"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("path '{p}' was modified")), "{err}");

    // No source: repair cannot fix it and says so.
    let empty = d.path().join("empty-source");
    std::fs::create_dir(&empty).unwrap();
    let out = run(b3_in(&store)
        .args([
            "store",
            "verify",
            "--check-contents",
            "--repair",
            "--repair-from",
        ])
        .arg(&empty));
    assert!(!out.status.success());

    // From a NAR file.
    let out = run(b3_in(&store)
        .args([
            "store",
            "verify",
            "--check-contents",
            "--repair",
            "--repair-nar",
        ])
        .arg(format!("{p}={}", nar_file.display())));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("repaired"));
    assert_verify_clean(&store);
    assert_eq!(
        run(b3_in(&store).args(["store", "dump", &p])).stdout,
        good_nar
    );

    // From another store directory holding a good copy (as a Nix store would).
    corrupt();
    let other = d.path().join("other");
    ok_stdout(b3_in(&other).args(["store", "add"]).arg(&tree));
    let out = run(b3_in(&store)
        .args([
            "store",
            "verify",
            "--check-contents",
            "--repair",
            "--repair-from",
        ])
        .arg(other.join("nix/store")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_verify_clean(&store);
    assert_eq!(
        run(b3_in(&store).args(["store", "dump", &p])).stdout,
        good_nar
    );
}

#[test]
fn corrupted_path_is_repaired_from_the_real_nix_store() {
    let ok = Command::new("nix-store")
        .arg("--version")
        .output()
        .map(|o| o.status.success());
    assert!(
        ok.unwrap_or(false),
        "nix-store (the oracle) not found: run scripts/setup-test-deps.sh"
    );
    let d = tempfile::tempdir().unwrap();
    let tree = make_tree(d.path(), 10, 5);
    // A Nix chroot store stands in for /nix/store of a Nix installation.
    let nix_root = d.path().join("nix-root");
    let out = Command::new("nix-store")
        .arg("--store")
        .arg(&nix_root)
        .arg("--add")
        .arg(&tree)
        .output()
        .unwrap();
    assert!(out.status.success());
    let store = d.path().join("s");
    let p = ok_stdout(b3_in(&store).args(["store", "add"]).arg(&tree));
    assert_eq!(p, String::from_utf8_lossy(&out.stdout));
    let base = p.trim().rsplit('/').next().unwrap().to_string();
    let victim_dir = store.join("nix/store").join(&base).join("d0/e0");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&victim_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(victim_dir.join("f0")).unwrap();
    let out = run(b3_in(&store)
        .args([
            "store",
            "verify",
            "--check-contents",
            "--repair",
            "--repair-from",
        ])
        .arg(nix_root.join("nix/store")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_verify_clean(&store);
}

/// NAR building blocks for hostile inputs.
fn s(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
    out.resize(out.len() + (8 - b.len() % 8) % 8, 0);
}

fn toks(ts: &[&[u8]]) -> Vec<u8> {
    let mut o = Vec::new();
    for t in ts {
        s(&mut o, t);
    }
    o
}

fn hostile_nars() -> Vec<(&'static str, Vec<u8>)> {
    let entry = |name: &[u8], body: &[&[u8]]| -> Vec<&'static [u8]> {
        let mut v: Vec<&'static [u8]> = vec![b"entry", b"(", b"name"];
        v.push(Box::leak(name.to_vec().into_boxed_slice()));
        v.push(b"node");
        for b in body {
            v.push(Box::leak(b.to_vec().into_boxed_slice()));
        }
        v.push(b")");
        v
    };
    let file: &[&[u8]] = &[b"(", b"type", b"regular", b"contents", b"x", b")"];
    let dir_with = |entries: Vec<Vec<&'static [u8]>>| -> Vec<u8> {
        let mut t: Vec<&[u8]> = vec![b"nix-archive-1", b"(", b"type", b"directory"];
        for e in &entries {
            t.extend(e.iter().copied());
        }
        t.push(b")");
        toks(&t)
    };
    let mut huge = toks(&[b"nix-archive-1", b"(", b"type", b"regular", b"contents"]);
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    let mut long_name = toks(&[
        b"nix-archive-1",
        b"(",
        b"type",
        b"directory",
        b"entry",
        b"(",
        b"name",
    ]);
    long_name.extend_from_slice(&(1u64 << 40).to_le_bytes());
    vec![
        (
            "wrong magic",
            toks(&[
                b"nix-archive-2",
                b"(",
                b"type",
                b"regular",
                b"contents",
                b"x",
                b")",
            ]),
        ),
        ("empty", Vec::new()),
        (
            "truncated",
            toks(&[b"nix-archive-1", b"(", b"type", b"regular", b"contents"]),
        ),
        ("dot-dot entry", dir_with(vec![entry(b"..", file)])),
        ("dot entry", dir_with(vec![entry(b".", file)])),
        ("slash in name", dir_with(vec![entry(b"a/b", file)])),
        ("empty name", dir_with(vec![entry(b"", file)])),
        ("nul in name", dir_with(vec![entry(b"a\0b", file)])),
        (
            "unsorted entries",
            dir_with(vec![entry(b"b", file), entry(b"a", file)]),
        ),
        (
            "duplicate entries",
            dir_with(vec![entry(b"a", file), entry(b"a", file)]),
        ),
        (
            "unknown node type",
            toks(&[b"nix-archive-1", b"(", b"type", b"fifo", b")"]),
        ),
        ("huge file length", huge),
        ("huge name length", long_name),
        ("trailing garbage", {
            let mut v = toks(&[
                b"nix-archive-1",
                b"(",
                b"type",
                b"regular",
                b"contents",
                b"x",
                b")",
            ]);
            v.extend_from_slice(b"garbage!");
            v
        }),
        ("nonzero padding", {
            let mut v = toks(&[
                b"nix-archive-1",
                b"(",
                b"type",
                b"regular",
                b"contents",
                b"x",
            ]);
            let n = v.len();
            v[n - 1] = 1;
            v.extend(toks(&[b")"]));
            v
        }),
        (
            "symlink escaping then file through it",
            dir_with(vec![
                entry(b"a", &[b"(", b"type", b"symlink", b"target", b"/tmp", b")"]),
                entry(b"a/x", file),
            ]),
        ),
    ]
}

#[test]
fn hostile_nars_are_rejected_and_leave_the_store_unchanged() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("s");
    let seed = d.path().join("seed");
    std::fs::write(&seed, b"existing").unwrap();
    ok_stdout(b3_in(&store).args(["store", "add"]).arg(&seed));
    let before = (listing(&store), db_snapshot(&store));
    for (what, nar) in hostile_nars() {
        let f = d.path().join("h.nar");
        std::fs::write(&f, &nar).unwrap();
        let hash = {
            let o = ok_stdout(Command::new("sha256sum").arg(&f));
            format!("sha256:{}", o.split_whitespace().next().unwrap())
        };
        for args in [
            vec![
                "store".to_string(),
                "import".into(),
                "--name".into(),
                "hostile".into(),
            ],
            vec![
                "store".into(),
                "import".into(),
                "--path".into(),
                "/nix/store/ap8llpmkx0n1cn5b6h321cfd1ggqc6bg-hostile".into(),
                "--nar-hash".into(),
                hash.clone(),
                "--nar-size".into(),
                nar.len().to_string(),
            ],
        ] {
            let out = run(b3_in(&store).args(&args).arg("--file").arg(&f));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{what}: accepted by {args:?}");
            assert!(
                err.starts_with("error:") && err.len() > 10,
                "{what}: unclear error {err:?}"
            );
            assert!(!err.contains("panicked"), "{what}: {err}");
        }
        let after = (listing(&store), db_snapshot(&store));
        assert_eq!(before, after, "{what}: store changed");
    }
    assert_verify_clean(&store);
    // The same checks on stdin, with a NAR that never ends (bounded read).
    let mut child = b3_in(&store)
        .args([
            "store",
            "import",
            "--path",
            "/nix/store/ap8llpmkx0n1cn5b6h321cfd1ggqc6bg-hostile",
            "--nar-hash",
            "sha256:1vagcg4r6l6x6w0lj246c0cg1mvd3h5rsaizhfw68mw4sxpdh6cp",
            "--nar-size",
            "128",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut v = toks(&[b"nix-archive-1", b"(", b"type", b"regular", b"contents"]);
        v.extend_from_slice(&(1u64 << 30).to_le_bytes());
        let _ = stdin.write_all(&v);
        let chunk = vec![0u8; 1 << 16];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if stdin.write_all(&chunk).is_err() {
                return true;
            }
        }
        false
    });
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        writer.join().unwrap(),
        "b3 kept reading past the announced size"
    );
    assert_eq!(before, (listing(&store), db_snapshot(&store)));
}
