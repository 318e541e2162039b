//! `b3 derivation show` prints exactly what `nix show-derivation` (Nix 2.8)
//! prints, for drv store paths, with `-r`, and for `.drv` files copied out of
//! the store. Needs real Nix on PATH (run `scripts/setup-test-deps.sh`).

use std::path::PathBuf;
use std::process::Command;

fn need(tool: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()));
    assert!(
        found,
        "`{tool}` (real Nix, the test oracle) is not on PATH: run scripts/setup-test-deps.sh"
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn b3() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_b3"));
    c.env_remove("NIX_STORE_DIR").env_remove("B3_STORE");
    c
}

fn nix_show(args: &[&str]) -> String {
    run(Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "show-derivation",
        ])
        .args(args))
}

/// Instantiates a derivation with a dependency, a fixed-output input and
/// awkward strings; returns its drv path.
fn instantiate() -> String {
    need("nix-instantiate");
    need("nix");
    let expr = r#"
      let
        dep = derivation { name = "cli-dep"; system = "x86_64-linux"; builder = "/bin/sh"; outputs = [ "out" "dev" ]; };
        fod = derivation { name = "cli-fod"; system = "x86_64-linux"; builder = "/bin/sh";
          outputHashMode = "recursive"; outputHash = "sha256-WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM="; };
      in derivation {
        name = "cli-top"; system = "x86_64-linux"; builder = "/bin/sh";
        args = [ "-c" "echo \"${dep.dev}\" > $out" ];
        f = fod; s = builtins.toFile "cli-src" "x";
        odd = "tab\t nl\n quote\" bs\\ ctl${builtins.fromJSON "\"\\u0002\""}";
      }"#;
    let out = run(Command::new("nix-instantiate").args(["-E", expr]));
    out.trim().to_owned()
}

#[test]
fn show_matches_nix_show_derivation() {
    let drv = instantiate();
    assert_eq!(
        run(b3().args(["derivation", "show", &drv])),
        nix_show(&[&drv])
    );
}

#[test]
fn show_recursive_matches_nix() {
    let drv = instantiate();
    let ours = run(b3().args(["derivation", "show", "-r", &drv]));
    assert_eq!(ours, nix_show(&["-r", &drv]));
    assert!(ours.matches(".drv\": {").count() >= 3, "{ours}");
}

#[test]
fn show_reads_drv_files_outside_the_store() {
    let drv = instantiate();
    let dir: PathBuf =
        std::env::temp_dir().join(format!("b3-derivation-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = drv.rsplit('/').next().unwrap();
    // Kept under its store name, and renamed to a plain name.
    let same = dir.join(base);
    let plain = dir.join("cli-top.drv");
    std::fs::copy(&drv, &same).unwrap();
    std::fs::copy(&drv, &plain).unwrap();
    let expected = nix_show(&[&drv]);
    for f in [&same, &plain] {
        let ours = run(b3().args(["derivation", "show"]).arg(f));
        assert_eq!(ours, expected, "{}", f.display());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn show_prefers_the_b3_store_when_it_has_the_drv() {
    let drv = instantiate();
    let root: PathBuf =
        std::env::temp_dir().join(format!("b3-derivation-cli-root-{}", std::process::id()));
    // A b3 store keeps `<root>/nix/store/<base>`; give it a modified copy.
    let physical = root.join(drv.trim_start_matches('/'));
    std::fs::create_dir_all(physical.parent().unwrap()).unwrap();
    let text = std::fs::read_to_string(&drv).unwrap();
    std::fs::write(&physical, text.replace("cli-top", "cli-TOP")).unwrap();
    let ours = run(b3()
        .arg("--store")
        .arg(&root)
        .args(["derivation", "show", &drv]));
    assert!(ours.contains("\"name\": \"cli-TOP\""), "{ours}");
    // Without the store, the logical path is read.
    let plain = run(b3().args(["derivation", "show", &drv]));
    assert!(plain.contains("\"name\": \"cli-top\""));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn show_rejects_malformed_drv_with_offset() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("b3-derivation-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.drv");
    std::fs::write(&f, "Derive([(\"out\",").unwrap();
    let out = b3().args(["derivation", "show"]).arg(&f).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("malformed derivation at byte 15"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
