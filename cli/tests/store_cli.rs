//! `b3 store` and `b3 path-info` as users run them, checked against Nix 2.8
//! (`nix-store --store <chroot>` keeps the real /nix/store untouched).

// Drives the b3 binary against Nix and Unix tools.
#![cfg(unix)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn b3() -> &'static str {
    env!("CARGO_BIN_EXE_b3")
}

fn require_nix() {
    let ok = Command::new("nix-store")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "nix-store (Nix 2.8, the oracle) not found: run scripts/setup-test-deps.sh"
    );
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

fn b3_in(store: &Path) -> Command {
    let mut c = Command::new(b3());
    c.arg("--store").arg(store);
    c
}

fn nix_in(store: &Path) -> Command {
    let mut c = Command::new("nix-store");
    c.arg("--store").arg(store);
    c
}

/// A corpus of sources covering the NAR corner cases.
fn corpus(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let f = |name: &str, data: &[u8], mode: u32| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    v.push(f("empty", b"", 0o644));
    v.push(f("hello.txt", b"hello\n", 0o644));
    v.push(f("script.sh", b"#!/bin/sh\necho hi\n", 0o755));
    v.push(f("owner-exec-only", b"x", 0o700));
    let all: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    v.push(f("binary.bin", &all, 0o644));
    v.push(f("big.dat", &vec![0xa5; 3 << 20], 0o644));
    v.push(f(
        "Name+x=y?_.-z",
        b"every legal name character class",
        0o644,
    ));
    // A tree with nesting, sorting edge cases, links and an empty dir.
    let t = dir.join("tree");
    std::fs::create_dir_all(t.join("d/e/f")).unwrap();
    std::fs::create_dir_all(t.join("emptydir")).unwrap();
    for n in ["a", "a.b", "a-b", "B", "_", "a0", "zz"] {
        std::fs::write(t.join(n), n.as_bytes()).unwrap();
    }
    std::fs::write(t.join("d/e/f/deep"), b"deep").unwrap();
    std::fs::write(t.join("d/x"), vec![1u8; 9000]).unwrap();
    std::fs::set_permissions(t.join("d/x"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a", t.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", t.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", t.join("dangling")).unwrap();
    std::os::unix::fs::symlink("d/e", t.join("dir-link")).unwrap();
    v.push(t);
    let link = dir.join("toplink");
    std::os::unix::fs::symlink("hello.txt", &link).unwrap();
    v.push(link);
    v
}

#[test]
fn add_prints_the_same_paths_as_nix_store_add() {
    require_nix();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let items = corpus(&src);
    let (bs, ns) = (d.path().join("b3"), d.path().join("nix"));
    for item in &items {
        let ours = ok_stdout(b3_in(&bs).args(["store", "add"]).arg(item));
        let theirs = ok_stdout(nix_in(&ns).arg("--add").arg(item));
        assert_eq!(ours, theirs, "{}", item.display());
        // The stored copy dumps to the same NAR as the source.
        let dumped = run(b3_in(&bs).args(["store", "dump", ours.trim()])).stdout;
        let nix_dump = run(Command::new("nix-store").arg("--dump").arg(item)).stdout;
        assert!(dumped == nix_dump, "dump differs for {}", item.display());
    }
    // Names Nix refuses are refused here too.
    let bad = src.join("name with spaces é");
    std::fs::write(&bad, b"x").unwrap();
    assert!(!run(nix_in(&ns).arg("--add").arg(&bad)).status.success());
    let out = run(b3_in(&bs).args(["store", "add"]).arg(&bad));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("illegal character"));
}

#[test]
fn add_fixed_prints_the_same_paths_as_nix_store_add_fixed() {
    require_nix();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let items = corpus(&src);
    let (bs, ns) = (d.path().join("b3"), d.path().join("nix"));
    for item in &items {
        let is_file = std::fs::symlink_metadata(item).unwrap().is_file();
        for algo in ["sha256", "sha1", "md5", "sha512"] {
            for recursive in [false, true] {
                if !recursive && !is_file {
                    continue;
                }
                let mut ours = b3_in(&bs);
                ours.args(["store", "add-fixed"]);
                let mut theirs = nix_in(&ns);
                theirs.arg("--add-fixed");
                if recursive {
                    ours.arg("--recursive");
                    theirs.arg("--recursive");
                }
                let o = ok_stdout(ours.arg(algo).arg(item));
                let t = ok_stdout(theirs.arg(algo).arg(item));
                assert_eq!(o, t, "{algo} recursive={recursive} {}", item.display());
            }
        }
    }
}

#[test]
fn add_fixed_flat_of_a_directory_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let out = run(b3_in(&d.path().join("s"))
        .args(["store", "add-fixed", "sha256"])
        .arg(d.path()));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("regular file"));
}

/// Drops the fields that legitimately differ between two stores.
fn without_registration_time(json: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(json).expect("json");
    for o in v.as_array_mut().expect("array") {
        o.as_object_mut().unwrap().remove("registrationTime");
    }
    v.to_string()
}

#[test]
fn path_info_json_matches_nix() {
    require_nix();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let items = corpus(&src);
    let (bs, ns) = (d.path().join("b3"), d.path().join("nix"));
    for item in items.iter().take(3).chain(items.iter().rev().take(2)) {
        let p = ok_stdout(b3_in(&bs).args(["store", "add"]).arg(item));
        ok_stdout(nix_in(&ns).arg("--add").arg(item));
        let ours = ok_stdout(b3_in(&bs).args(["path-info", "--json", p.trim()]));
        let theirs = ok_stdout(
            Command::new("nix")
                .args(["path-info", "--json", "--store"])
                .arg(&ns)
                .arg(p.trim()),
        );
        assert!(ours.contains("\"registrationTime\":"));
        assert_eq!(
            without_registration_time(&ours),
            without_registration_time(&theirs),
            "{}",
            item.display()
        );
    }
    // Invalid paths: Nix's shape, exit status 1.
    let bogus = "/nix/store/00000000000000000000000000000000-nope";
    let out = run(b3_in(&bs).args(["path-info", "--json", bogus]));
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("[{{\"path\":\"{bogus}\",\"valid\":false}}]")
    );
}

fn hash_of(nar: &[u8]) -> String {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("x.nar");
    std::fs::write(&f, nar).unwrap();
    let out = ok_stdout(Command::new("sha256sum").arg(&f));
    format!("sha256:{}", out.split_whitespace().next().unwrap())
}

#[test]
fn export_import_round_trip_and_queries() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let items = corpus(&src);
    let tree = items.iter().find(|p| p.ends_with("tree")).unwrap();
    let dep = ok_stdout(b3_in(&a).args(["store", "add"]).arg(tree));
    let dep = dep.trim();
    let nar = run(b3_in(&a).args(["store", "export", dep])).stdout;
    assert!(!nar.is_empty());

    // Content-addressed import gives the path `add` gave.
    let imported = ok_stdout(
        b3_in(&b)
            .args(["store", "import", "--name", "tree"])
            .stdin(std::fs::File::open(write_tmp(d.path(), "dep.nar", &nar)).unwrap()),
    );
    assert_eq!(imported.trim(), dep);

    // Input-addressed import with references, deriver and an expected hash.
    let top_nar = conformance_file_nar(format!("uses {dep}\n").as_bytes());
    let top = "/nix/store/ap8llpmkx0n1cn5b6h321cfd1ggqc6bg-top";
    let drv = "/nix/store/rziqp8dp0qlfygycfkpsq80mz2zmdf19-top.drv";
    let f = write_tmp(d.path(), "top.nar", &top_nar);
    ok_stdout(
        b3_in(&b)
            .args(["store", "import", "--path", top, "--nar-hash"])
            .arg(hash_of(&top_nar))
            .args(["--reference", dep, "--deriver", drv, "--file"])
            .arg(&f),
    );
    assert_eq!(
        ok_stdout(b3_in(&b).args(["store", "query", "--references", top])).trim(),
        dep
    );
    assert_eq!(
        ok_stdout(b3_in(&b).args(["store", "query", "--referrers", dep])).trim(),
        top
    );
    let req: BTreeSet<String> = ok_stdout(b3_in(&b).args(["store", "query", "--requisites", top]))
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(req, BTreeSet::from([top.to_string(), dep.to_string()]));
    assert_eq!(
        ok_stdout(b3_in(&b).args(["store", "query", "--deriver", top])).trim(),
        drv
    );
    assert_eq!(
        ok_stdout(b3_in(&b).args(["store", "query", "--deriver", dep])).trim(),
        "unknown-deriver"
    );
    let json = ok_stdout(b3_in(&b).args(["path-info", "--json", "-r", top]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    let t = arr.iter().find(|o| o["path"] == top).unwrap();
    assert_eq!(t["deriver"], drv);
    assert_eq!(t["references"][0], dep);
    assert_eq!(t["narSize"], top_nar.len() as u64);
    // export | dump agree and reproduce the imported bytes.
    assert_eq!(run(b3_in(&b).args(["store", "dump", top])).stdout, top_nar);

    // A wrong expected hash is refused and adds nothing.
    let other = "/nix/store/z6nl0rwcz4lzvjlyhm1hx9m7697mhnnw-other";
    let out = run(b3_in(&b)
        .args(["store", "import", "--path", other, "--nar-hash"])
        .arg(hash_of(b"not the nar"))
        .arg("--file")
        .arg(&f));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hash mismatch"));
    assert!(!run(b3_in(&b).args(["path-info", other])).status.success());
}

#[test]
fn export_format_nix_matches_nix_store_export_both_ways() {
    require_nix();
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let items = corpus(&src);
    let (bs, ns) = (d.path().join("b3"), d.path().join("nix"));
    let mut paths = Vec::new();
    for item in items
        .iter()
        .filter(|p| p.ends_with("tree") || p.ends_with("big.dat"))
    {
        let ours = ok_stdout(b3_in(&bs).args(["store", "add"]).arg(item));
        assert_eq!(ours, ok_stdout(nix_in(&ns).arg("--add").arg(item)));
        paths.push(ours.trim().to_string());
    }
    let ours = run(b3_in(&bs)
        .args(["store", "export", "--format", "nix"])
        .args(&paths))
    .stdout;
    let theirs = run(nix_in(&ns).arg("--export").args(&paths)).stdout;
    assert!(!ours.is_empty() && ours == theirs, "export streams differ");

    // Nix's stream imports into an empty b3 store, printing the paths.
    let fresh = d.path().join("fresh");
    let f = write_tmp(d.path(), "nix.export", &theirs);
    let printed = ok_stdout(
        b3_in(&fresh)
            .args(["store", "import", "--format", "nix"])
            .stdin(std::fs::File::open(&f).unwrap()),
    );
    let printed: BTreeSet<&str> = printed.lines().collect();
    assert_eq!(printed, paths.iter().map(String::as_str).collect());
    for p in &paths {
        let dumped = run(b3_in(&fresh).args(["store", "dump", p])).stdout;
        // The chroot store's physical copy, dumped by Nix.
        let physical = ns.join(p.trim_start_matches('/'));
        let nix_dump = run(Command::new("nix-store").arg("--dump").arg(physical)).stdout;
        assert!(!dumped.is_empty() && dumped == nix_dump, "{p}");
    }
    // An export stream given to the NAR importer is refused.
    let out = run(b3_in(&d.path().join("other"))
        .args(["store", "import", "--format", "nix", "--name", "x"])
        .arg("--file")
        .arg(&f));
    assert!(!out.status.success());
}

fn write_tmp(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn conformance_file_nar(contents: &[u8]) -> Vec<u8> {
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
fn gc_keeps_roots_indirect_roots_and_their_closures() {
    let d = tempfile::tempdir().unwrap();
    let s = d.path().join("s");
    let add = |name: &str, data: &str| -> String {
        let f = write_tmp(d.path(), name, data.as_bytes());
        ok_stdout(b3_in(&s).args(["store", "add"]).arg(f))
            .trim()
            .to_string()
    };
    let rooted = add("rooted", "r");
    let linked = add("linked", "l");
    let garbage = add("garbage", "g");
    // `kept` refers to `dep`; only `kept` is rooted.
    let dep = add("dep", "d");
    let kept_nar = conformance_file_nar(dep.as_bytes());
    let kept = "/nix/store/ap8llpmkx0n1cn5b6h321cfd1ggqc6bg-kept";
    ok_stdout(
        b3_in(&s)
            .args(["store", "import", "--path", kept, "--nar-hash"])
            .arg(hash_of(&kept_nar))
            .args(["--reference", &dep, "--file"])
            .arg(write_tmp(d.path(), "kept.nar", &kept_nar)),
    );
    ok_stdout(b3_in(&s).args(["store", "add-root", "r1", &rooted]));
    ok_stdout(b3_in(&s).args(["store", "add-root", "r2", kept]));
    let link = d.path().join("result");
    ok_stdout(b3_in(&s).args(["store", "link", &linked]).arg(&link));
    assert!(std::fs::read_to_string(link.join("")).is_ok() || link.exists());

    let dry = ok_stdout(b3_in(&s).args(["store", "gc", "--dry-run"]));
    assert!(dry.contains(&garbage), "{dry}");
    assert!(dry.contains("would be deleted"));
    for live in [&rooted, &linked, &dep, &kept.to_string()] {
        assert!(!dry.contains(live.as_str()), "{live} in dry run: {dry}");
    }
    assert!(run(b3_in(&s).args(["path-info", &garbage]))
        .status
        .success());

    let gc = ok_stdout(b3_in(&s).args(["store", "gc"]));
    assert!(
        gc.contains(&garbage) && gc.contains("1 store paths deleted"),
        "{gc}"
    );
    assert!(!run(b3_in(&s).args(["path-info", &garbage]))
        .status
        .success());
    let base = garbage.rsplit('/').next().unwrap();
    assert!(!s.join("nix/store").join(base).exists());
    for live in [&rooted, &linked, &dep] {
        assert!(run(b3_in(&s).args(["path-info", live])).status.success());
    }

    // Removing the user's link ends the indirect root.
    std::fs::remove_file(&link).unwrap();
    let gc = ok_stdout(b3_in(&s).args(["store", "gc"]));
    assert!(gc.contains(&linked), "{gc}");
    let out = run(b3_in(&s).args(["store", "verify", "--check-contents"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn store_location_follows_flag_and_env() {
    let d = tempfile::tempdir().unwrap();
    let f = write_tmp(d.path(), "x", b"x");
    let via_env = ok_stdout(
        Command::new(b3())
            .env("B3_STORE", d.path().join("env"))
            .args(["store", "add"])
            .arg(&f),
    );
    assert!(d
        .path()
        .join("env/nix/store")
        .join(via_env.trim().rsplit('/').next().unwrap())
        .exists());
    assert!(d.path().join("env/nix/var/b3/db.sqlite").exists());
    let via_home = ok_stdout(
        Command::new(b3())
            .env_remove("B3_STORE")
            .env("XDG_DATA_HOME", d.path().join("xdg"))
            .env("HOME", d.path())
            .args(["store", "add"])
            .arg(&f),
    );
    assert_eq!(via_env, via_home);
    assert!(d.path().join("xdg/b3/nix/var/b3/db.sqlite").exists());
}
