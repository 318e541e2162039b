//! The multicall names: `nix-build`, `nix-shell` and `nix-store` as
//! symlinks to `b3`, run on the example package set.

mod shell_common;
use shell_common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

static BIN_DIR: OnceLock<PathBuf> = OnceLock::new();

/// A directory with nix-build, nix-shell and nix-store linked to b3,
/// removed when the test process exits (a static is never dropped).
fn bin_dir() -> &'static Path {
    BIN_DIR.get_or_init(|| {
        let d = tempfile::Builder::new()
            .prefix("b3-multicall-")
            .tempdir()
            .unwrap()
            .keep();
        for name in ["nix-build", "nix-shell", "nix-store", "nix-instantiate"] {
            std::os::unix::fs::symlink(b3(), d.join(name)).unwrap();
        }
        // SAFETY: registers a plain function with no captured state.
        unsafe { libc::atexit(remove_bin_dir) };
        d
    })
}

extern "C" fn remove_bin_dir() {
    if let Some(d) = BIN_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn nix(name: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin_dir().join(name));
    c.env("B3_STORE", store()).env("B3_FSYNC", "0").args(args);
    c
}

fn ex() -> String {
    examples().to_string_lossy().into_owned()
}

/// Builds `attr` with `-o DIR/result`; the directory goes with the
/// returned guard.
fn built(attr: &str) -> (String, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("result");
    let out = ok(nix(
        "nix-build",
        &[&ex(), "-A", attr, "-o", link.to_str().unwrap()],
    ));
    (out.trim().to_string(), link, dir)
}

#[test]
fn multicall_nix_build_prints_outputs_and_makes_result_links() {
    prebuilt();
    let (out, link, _dir) = built("greet");
    assert!(
        out.starts_with("/nix/store/") && out.ends_with("-greet-1.0"),
        "{out}"
    );
    let target = std::fs::read_link(&link).expect("result link");
    assert!(
        target.to_string_lossy().ends_with("-greet-1.0"),
        "{target:?}"
    );
    // --no-out-link, -E, --arg, --argstr and -I.
    let dir = tempfile::tempdir().unwrap();
    let mut c = nix(
        "nix-build",
        &[
            "--no-out-link",
            "-I",
            &format!("examples={}", ex()),
            "-E",
            "{ who, n }: (import <examples> {}).runCommand \"note\" {} \"echo ${who} ${toString n} > $out\"",
            "--argstr",
            "who",
            "argstr-value",
            "--arg",
            "n",
            "1 + 2",
        ],
    );
    c.current_dir(dir.path());
    let note = ok(c);
    assert!(note.trim().ends_with("-note"), "{note}");
    assert!(!dir.path().join("result").exists());
    let phys = store()
        .join("nix/store")
        .join(note.trim().trim_start_matches("/nix/store/"));
    assert_eq!(std::fs::read_to_string(phys).unwrap(), "argstr-value 3\n");
}

#[test]
fn multicall_nix_store_queries() {
    prebuilt();
    let (greet, _, _greet_dir) = built("greet");
    let (hello, _, _hello_dir) = built("hello");
    let refs = ok(nix("nix-store", &["-q", "--references", &greet]));
    assert!(
        refs.lines().any(|l| l == hello),
        "greet refers to hello: {refs}"
    );
    let req = ok(nix("nix-store", &["-qR", &greet]));
    assert!(
        req.lines().any(|l| l == hello) && req.lines().any(|l| l == greet),
        "{req}"
    );
    let referrers = ok(nix("nix-store", &["--query", "--referrers", &hello]));
    assert!(referrers.lines().any(|l| l == greet), "{referrers}");
    let deriver = ok(nix("nix-store", &["-q", "--deriver", &greet]));
    assert!(deriver.trim().ends_with("-greet-1.0.drv"), "{deriver}");
    let outs = ok(nix("nix-store", &["-q", "--outputs", deriver.trim()]));
    assert_eq!(outs.trim(), greet);
    let again = ok(nix("nix-store", &["-r", deriver.trim()]));
    assert_eq!(
        again.trim(),
        greet,
        "--realise of a built drv prints its output"
    );
    let valid = ok(nix("nix-store", &["--realise", &greet]));
    assert_eq!(valid.trim(), greet);
}

#[test]
fn multicall_nix_store_add_dump_restore_verify_gc() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("note.txt");
    std::fs::write(&f, "multicall\n").unwrap();
    let p = ok(nix("nix-store", &["--add", f.to_str().unwrap()]));
    assert!(p.trim().ends_with("-note.txt"), "{p}");
    let fixed = ok(nix(
        "nix-store",
        &["--add-fixed", "sha256", f.to_str().unwrap()],
    ));
    assert!(fixed.trim().ends_with("-note.txt"), "{fixed}");
    let nar = nix("nix-store", &["--dump", p.trim()]).output().unwrap();
    assert!(nar.status.success());
    assert!(nar.stdout.starts_with(b"\r\0\0\0\0\0\0\0nix-archive-1"));
    let dest = dir.path().join("restored");
    let mut c = nix("nix-store", &["--restore", dest.to_str().unwrap()]);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&nar.stdout).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "multicall\n");
    ok(nix("nix-store", &["--verify", "--check-contents"]));
    let dead = ok(nix("nix-store", &["--gc", "--print-dead"]));
    assert!(
        dead.contains("-note.txt"),
        "an unrooted added path is dead: {dead}"
    );
}

#[test]
fn multicall_nix_shell_runs_commands() {
    prebuilt();
    let out = ok(nix(
        "nix-shell",
        &[&ex(), "-A", "shell", "--run", "greet nix-shell"],
    ));
    assert!(out.contains("Hello, nix-shell!"), "{out}");
    let inc = format!("nixpkgs={}", ex());
    let out = ok(nix(
        "nix-shell",
        &[
            "-I",
            &inc,
            "-p",
            "hello",
            "--pure",
            "--run",
            "hello p; echo $IN_NIX_SHELL",
        ],
    ));
    assert!(out.contains("Hello, p!") && out.contains("pure"), "{out}");
    let status = nix("nix-shell", &[&ex(), "-A", "shell", "--run", "exit 3"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3));
}

#[test]
fn multicall_unknown_nix_store_operation_fails_cleanly() {
    let out = nix("nix-store", &["--delete", "/nix/store/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not supported"));
}

/// A chain of two derivations whose builder is `/bin/sh`, which exists in
/// the sandbox only through nix.conf's `extra-sandbox-paths` (here given in
/// `NIX_CONFIG`, as a user's nix.conf would).
const SH_CHAIN: &str = r#"let
  mk = name: cmd: derivation { inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" cmd ]; };
  first = mk "sh-first" "echo first > $out";
in mk "sh-second" "read x < ${first}; echo $x second > $out""#;

fn with_sh(mut c: Command) -> Command {
    c.env("NIX_CONFIG", "extra-sandbox-paths = /bin/sh=/bin/busybox");
    c
}

#[test]
fn multicall_nix_build_and_realise_read_nix_conf_as_b3_build_does() {
    require_toolchain();
    let dir = tempfile::tempdir().unwrap();
    let mut c = with_sh(nix("nix-build", &["-E", SH_CHAIN]));
    c.current_dir(dir.path());
    let out = ok(c);
    let out = out.trim();
    assert!(out.ends_with("-sh-second"), "{out}");
    // nix-build makes `result` unless told otherwise.
    // Links point into the store's physical directory.
    let base = out.trim_start_matches("/nix/store/");
    let link = std::fs::read_link(dir.path().join("result")).expect("result link");
    assert!(link.ends_with(base), "{link:?}");
    let phys = store().join("nix/store").join(base);
    assert_eq!(std::fs::read_to_string(phys).unwrap(), "first second\n");

    // nix-store --realise of the drv, with a root.
    let drv = ok(nix("nix-store", &["-q", "--deriver", out]));
    let root = dir.path().join("root");
    let again = ok(with_sh(nix(
        "nix-store",
        &[
            "--realise",
            drv.trim(),
            "--add-root",
            root.to_str().unwrap(),
        ],
    )));
    assert_eq!(again.trim(), out);
    assert!(std::fs::read_link(&root).unwrap().ends_with(base));
}

#[test]
fn multicall_nix_build_reports_a_failed_dependency_with_its_log() {
    require_toolchain();
    let expr = r#"let
      bad = derivation { name = "sh-bad"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo the-reason; exit 3" ]; };
    in derivation { name = "sh-top"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo ${bad} > $out" ]; }"#;
    let out = run(with_sh(nix("nix-build", &["--no-out-link", "-E", expr])));
    let err = String::from_utf8_lossy(&out.stderr);
    // Nix's exit status for failed builds, and the failing builder's log.
    assert_eq!(out.status.code(), Some(100), "{err}");
    assert!(err.contains("failed with exit code 3"), "{err}");
    assert!(err.contains("the-reason"), "{err}");
}

#[test]
fn multicall_nix_shell_builds_inputs_with_nix_conf_settings() {
    require_toolchain();
    let expr = format!(
        r#"let input = {SH_CHAIN}; in derivation {{ name = "sh-env"; system = "x86_64-linux"; builder = "/bin/sh"; inherit input; }}"#
    );
    let out = ok(with_sh(nix(
        "nix-shell",
        &["-E", &expr, "--run", "cat $input"],
    )));
    assert!(out.contains("first second"), "{out}");
}
