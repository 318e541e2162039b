//! Runs the real `b3` binary: `b3 nar dump|restore|ls` and `b3 hash
//! path|file`, checked against Nix 2.8 where it has the same command and
//! against the oracle facts otherwise.

// Drives the b3 binary against Nix and Unix tools.
#![cfg(unix)]

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use assert_cmd::Command as Cmd;

fn b3() -> Cmd {
    Cmd::cargo_bin("b3").unwrap()
}

/// The tree from the oracle facts (`nix-hash` values known).
fn fact_tree(root: &Path) {
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(root.join("a.txt"), "hello\n").unwrap();
    fs::write(root.join("sub/run.sh"), "#!/bin/sh\necho x\n").unwrap();
    fs::set_permissions(root.join("sub/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("a.txt", root.join("link")).unwrap();
    fs::write(root.join("empty"), "").unwrap();
}

fn nix(tool: &str) -> Command {
    match Command::new(tool).arg("--version").output() {
        Ok(o) if o.status.success() => Command::new(tool),
        _ => panic!("`{tool}` missing: run scripts/setup-test-deps.sh to install the Nix oracle"),
    }
}

fn stdout_of(c: &mut Cmd) -> Vec<u8> {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn nar_dump_is_byte_identical_to_nix_store_dump() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("tree");
    fact_tree(&t);
    let ours = stdout_of(b3().args(["nar", "dump"]).arg(&t));
    let theirs = nix("nix-store")
        .arg("--dump")
        .arg(&t)
        .output()
        .unwrap()
        .stdout;
    assert!(!ours.is_empty());
    assert!(ours == theirs);
}

#[test]
fn hash_path_prints_sri_base32_and_base16_like_nix() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("tree");
    fact_tree(&t);
    let run = |flag: Option<&str>| {
        let mut c = b3();
        c.args(["hash", "path"]);
        if let Some(f) = flag {
            c.arg(f);
        }
        String::from_utf8(stdout_of(c.arg(&t))).unwrap()
    };
    assert_eq!(
        run(None),
        "sha256-ULdBg3thR23fEB8SaQHuGL94VbVkEOZWG2wBBon/tRI=\n"
    );
    assert_eq!(
        run(Some("--sri")),
        "sha256-ULdBg3thR23fEB8SaQHuGL94VbVkEOZWG2wBBon/tRI=\n"
    );
    assert_eq!(
        run(Some("--base32")),
        "04mmzy4hc0bc3dbfc434nmapigqqxq0nj4hz23gnsiv1gf1l3dsh\n"
    );
    assert_eq!(
        run(Some("--base16")),
        "50b741837b61476ddf101f126901ee18bf7855b56410e6561b6c010689ffb512\n"
    );
    // Nix 2.8's `nix hash path` (SRI by default; nix-hash has no --sri).
    let nix_sri = nix("nix")
        .args(["hash", "path"])
        .arg(&t)
        .output()
        .unwrap()
        .stdout;
    assert_eq!(run(None), String::from_utf8(nix_sri).unwrap());
}

#[test]
fn hash_types_match_nix_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("tree");
    fact_tree(&t);
    for algo in ["md5", "sha1", "sha256", "sha512"] {
        for (flat, b32) in [(false, false), (false, true), (true, false), (true, true)] {
            let target = if flat { t.join("a.txt") } else { t.clone() };
            let mut n = nix("nix-hash");
            n.args(["--type", algo]);
            if flat {
                n.arg("--flat");
            }
            if b32 {
                n.arg("--base32");
            }
            let want = n.arg(&target).output().unwrap().stdout;
            let mut c = b3();
            c.args(["hash", if flat { "file" } else { "path" }, "--type", algo]);
            c.arg(if b32 { "--base32" } else { "--base16" });
            assert_eq!(
                String::from_utf8(stdout_of(c.arg(&target))).unwrap(),
                String::from_utf8(want).unwrap(),
                "{algo} flat={flat} base32={b32}"
            );
        }
    }
}

#[test]
fn hash_file_is_flat_sha256_sri() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("hello.txt");
    fs::write(&f, "hello\n").unwrap();
    // sha256 of "hello\n" is 5891b5b5…f6be03 (oracle facts).
    let out = String::from_utf8(stdout_of(b3().args(["hash", "file"]).arg(&f))).unwrap();
    assert_eq!(out, "sha256-WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM=\n");
}

#[test]
fn nar_restore_round_trips_through_nix() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("tree");
    fact_tree(&t);
    let nar = nix("nix-store")
        .arg("--dump")
        .arg(&t)
        .output()
        .unwrap()
        .stdout;
    let dest = tmp.path().join("restored");
    b3().args(["nar", "restore"])
        .arg(&dest)
        .write_stdin(nar.clone())
        .assert()
        .success();
    let again = nix("nix-store")
        .arg("--dump")
        .arg(&dest)
        .output()
        .unwrap()
        .stdout;
    assert!(again == nar);
    // Restoring over an existing path fails and names it.
    let out = b3()
        .args(["nar", "restore"])
        .arg(&dest)
        .write_stdin(nar)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already exists") && err.contains("restored"),
        "{err}"
    );
}

#[test]
fn nar_restore_reports_offset_and_leaves_nothing_on_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("tree");
    fact_tree(&t);
    let mut nar = stdout_of(b3().args(["nar", "dump"]).arg(&t));
    nar.truncate(nar.len() - 50);
    let dest = tmp.path().join("out");
    let out = b3()
        .args(["nar", "restore"])
        .arg(&dest)
        .write_stdin(nar.clone())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("byte offset {}", nar.len());
    assert!(
        err.contains(&want) && err.contains("truncated") && err.contains("<stdin>"),
        "{err}"
    );
    let left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("tree")]);
}

#[test]
fn nar_ls_matches_nix_nar_ls_long_recursive() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("tree");
    fact_tree(&t);
    fs::create_dir(t.join("sub/empty-dir")).unwrap();
    fs::write(t.join(std::ffi::OsStr::from_bytes(b"odd \xff name")), "x").unwrap();
    let cases = [
        t.clone(),
        t.join("a.txt"),
        t.join("sub/run.sh"),
        t.join("link"),
        t.join("sub/empty-dir"),
    ];
    for case in cases {
        let nar_file = tmp.path().join("t.nar");
        fs::write(&nar_file, stdout_of(b3().args(["nar", "dump"]).arg(&case))).unwrap();
        let want = nix("nix")
            .args(["nar", "ls", "-lR"])
            .arg(&nar_file)
            .arg("/")
            .output()
            .unwrap()
            .stdout;
        let from_file = stdout_of(b3().args(["nar", "ls"]).arg(&nar_file));
        assert_eq!(
            String::from_utf8_lossy(&from_file),
            String::from_utf8_lossy(&want),
            "{}",
            case.display()
        );
        let from_stdin = stdout_of(
            b3().args(["nar", "ls"])
                .write_stdin(fs::read(&nar_file).unwrap()),
        );
        assert!(from_stdin == want);
    }
}

#[test]
fn nar_ls_names_the_file_and_offset_of_garbage() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("bad.nar");
    fs::write(&f, b"\x0d\0\0\0\0\0\0\0nix-archive-2\0\0\0").unwrap();
    let out = b3().args(["nar", "ls"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.nar") && err.contains("byte offset 0") && err.contains("magic"),
        "{err}"
    );
}

#[test]
fn nar_dump_of_missing_path_fails_naming_it() {
    let out = b3()
        .args(["nar", "dump", "/nonexistent/b3-nar-test"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/b3-nar-test"));
    assert!(out.stdout.is_empty());
}

#[test]
fn nar_dump_streams_through_a_pipe_into_nix_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("tree");
    fact_tree(&t);
    let bin = assert_cmd::cargo::cargo_bin("b3");
    let mut dump = Command::new(bin)
        .args(["nar", "dump"])
        .arg(&t)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let dest = tmp.path().join("via-pipe");
    let st = nix("nix-store")
        .arg("--restore")
        .arg(&dest)
        .stdin(dump.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(st.success() && dump.wait().unwrap().success());
    assert_eq!(
        fs::read(dest.join("sub/run.sh")).unwrap(),
        b"#!/bin/sh\necho x\n"
    );
}
