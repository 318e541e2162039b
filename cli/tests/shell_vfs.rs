//! `b3 shell --vfs`: the shell sees exactly its environment's closure,
//! through a FUSE view served from the object database (a runtime), not
//! the whole store.

mod shell_common;
use shell_common::*;

#[test]
fn shell_vfs_shows_only_the_environment_closure() {
    prebuilt();
    assert!(
        std::path::Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: run scripts/setup-test-deps.sh (installs fuse3)"
    );
    let ex = examples();
    let out = ok(b3_cmd(&[
        "shell",
        ex.to_str().unwrap(),
        "-A",
        "shell",
        "--vfs",
        "--run",
        "greet vfs; echo \"runtime=$B3_RUNTIME\"; ls /nix/store",
    ]));
    assert!(out.contains("Hello, vfs!"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("runtime=") && l.len() > "runtime=".len()),
        "{out}"
    );
    let listed: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("runtime="))
        .skip(1)
        .collect();
    for want in ["-greet-1.0", "-hello-1.0", "-stdenv", "-busybox"] {
        assert!(
            listed.iter().any(|l| l.ends_with(want)),
            "{want} in {listed:?}"
        );
    }
    // Built, in the store, but not part of the shell's closure.
    assert!(
        store().join("nix/store").read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with("-tcc-musl")),
        "tcc-musl was built"
    );
    assert!(
        !listed.iter().any(|l| l.ends_with("-tcc-musl")),
        "{listed:?}"
    );
    assert!(!listed.iter().any(|l| l.ends_with(".drv")), "{listed:?}");
}

#[test]
fn shell_vfs_returns_the_exit_status() {
    prebuilt();
    let ex = examples();
    let out = run(b3_cmd(&[
        "shell",
        ex.to_str().unwrap(),
        "-A",
        "shell",
        "--vfs",
        "--run",
        "exit 5",
    ]));
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn shell_trace_reports_used_and_unused_inputs() {
    prebuilt();
    let ex = examples();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("trace.log");
    let out = run(b3_cmd(&[
        "shell",
        ex.to_str().unwrap(),
        "-A",
        "shell",
        "--trace",
        log.to_str().unwrap(),
        "--run",
        "greet traced",
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("Hello, traced!"), "{stdout}");
    let used = |suffix: &str| {
        stderr
            .lines()
            .any(|l| l.starts_with("used /nix/store/") && l.contains(suffix))
    };
    assert!(used("-greet-1.0 ("), "{stderr}");
    assert!(used("-hello-1.0 ("), "{stderr}");
    assert!(
        used("-stdenv ("),
        "the stdenv's setup was sourced: {stderr}"
    );
    // The builders' script is a declared input the shell never reads.
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("unused /nix/store/") && l.ends_with("-builder.sh")),
        "{stderr}"
    );
    assert!(std::fs::metadata(&log).unwrap().len() > 0);
}
