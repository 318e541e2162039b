//! The example package set (`examples/`): a toolchain imported with
//! `builtins.path`, a C program compiled in the sandbox, a package that
//! depends on it. Checked against Nix 2.8: same drv paths, and the same NAR
//! hashes for the deterministic outputs.

mod shell_common;
use shell_common::*;
use std::process::Command;

fn nix_available() {
    assert!(
        Command::new("nix-instantiate")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "the Nix oracle is missing: run scripts/setup-test-deps.sh"
    );
}

#[test]
fn example_drv_paths_match_nix_instantiate() {
    require_toolchain();
    nix_available();
    let ex = examples();
    for attr in ["busybox", "tcc", "hello", "greet", "shell"] {
        let ours = ok(b3_cmd(&["instantiate", ex.to_str().unwrap(), "-A", attr]));
        let mut c = Command::new("nix-instantiate");
        c.arg(&ex).args(["-A", attr, "--readonly-mode"]);
        let theirs = ok(c);
        assert_eq!(ours.trim(), theirs.trim(), "{attr}");
    }
}

#[test]
fn example_builds_in_the_sandbox_with_the_same_nar_hashes_as_nix() {
    require_toolchain();
    nix_available();
    let ex = examples();
    let drv = ok(b3_cmd(&[
        "instantiate",
        ex.to_str().unwrap(),
        "-A",
        "greet",
    ]));
    let out = ok(b3_cmd(&["build", drv.trim()]));
    let greet = out.trim();
    assert!(greet.ends_with("-greet-1.0"), "{out}");
    // The program runs (it calls hello through its store path).
    let run = ok(b3_cmd(&["shell", greet, "--run", "greet example"]));
    assert!(
        run.contains("Hello, example! (a C program built by b3 in its sandbox)"),
        "{run}"
    );

    // Nix builds the same derivations; compare the deterministic outputs.
    let mut c = Command::new("nix-build");
    c.arg(&ex).args(["-A", "greet", "--no-out-link"]);
    let nix_greet = ok(c);
    assert_eq!(nix_greet.trim(), greet, "same output path");
    for attr in ["hello", "greet"] {
        let d = ok(b3_cmd(&["instantiate", ex.to_str().unwrap(), "-A", attr]));
        let p = ok(b3_cmd(&["build", d.trim()]));
        let ours = ok(b3_cmd(&["path-info", "--json", p.trim()]));
        let mut c = Command::new("nix-store");
        c.args(["-q", "--hash", p.trim()]);
        let theirs = ok(c);
        let mut c = Command::new("nix");
        c.args(["hash", "to-sri", theirs.trim()]);
        let theirs_sri = ok(c);
        let v: serde_json::Value = serde_json::from_str(&ours).unwrap();
        assert_eq!(
            v[0]["narHash"].as_str().unwrap(),
            theirs_sri.trim(),
            "{attr}: the same NAR hash as Nix's build"
        );
    }
}
