//! `b3 instantiate FILE` writes the `.drv` closure into the b3 store with
//! the same bytes `nix-instantiate` writes into /nix/store, registered with
//! its references.

use std::process::Command;

const EXPR: &str = r#"
let
  dep = derivation { name = "evalstore-dep"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo dep > $out" ]; };
in derivation {
  name = "evalstore-top"; system = "x86_64-linux"; builder = "/bin/sh";
  args = [ "-c" "cat ${dep} > $out" ];
  script = builtins.toFile "evalstore-script" "echo hi > $out";
  outputs = [ "out" "dev" ];
}
"#;

fn lines(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn instantiate_writes_drv_closure_matching_nix() {
    let nix = Command::new("nix-instantiate")
        .args(["-E", EXPR])
        .output()
        .expect("nix-instantiate not found: run scripts/setup-test-deps.sh");
    assert!(
        nix.status.success(),
        "{}",
        String::from_utf8_lossy(&nix.stderr)
    );
    let nix_paths = lines(&nix.stdout);

    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_b3"))
        .arg("--store")
        .arg(tmp.path())
        .args(["instantiate", "-E", EXPR])
        .env_remove("NIX_REMOTE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b3_paths = lines(&out.stdout);
    assert_eq!(b3_paths, nix_paths);
    let top = &b3_paths[0];

    let nix_top = std::fs::read(top).unwrap();
    let b3_top = std::fs::read(tmp.path().join(top.trim_start_matches('/'))).unwrap();
    assert_eq!(b3_top, nix_top);

    // The dependency's .drv is in the b3 store too, byte-identical.
    let refs = Command::new("nix-store")
        .args(["-q", "--references", top])
        .output()
        .unwrap();
    let dep = lines(&refs.stdout)
        .into_iter()
        .find(|l| l.ends_with("evalstore-dep.drv"))
        .expect("nix lists the dep drv as a reference");
    let b3_dep = std::fs::read(tmp.path().join(dep.trim_start_matches('/'))).unwrap();
    assert_eq!(b3_dep, std::fs::read(&dep).unwrap());

    let info = Command::new(env!("CARGO_BIN_EXE_b3"))
        .arg("--store")
        .arg(tmp.path())
        .args(["path-info", "-r", top])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    assert!(
        listed.contains(&dep),
        "path-info -r {top} lists {dep}: {listed}"
    );
}
