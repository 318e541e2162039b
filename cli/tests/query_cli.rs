//! `b3 env -qa` prints what `nix-env -qa` prints, line for line, on
//! expressions that exercise nix-env's walk: aliases listed once,
//! `recurseForDerivations`, failed asserts skipped, attribute-name
//! filtering, case-insensitive (and unstable) sorting of equal names,
//! several outputs, `-A`, `--arg`/`--argstr` and parallel walks.

use std::path::Path;
use std::process::Command;

const EXPR: &str = r#"
{ flavour ? "plain", count ? 1 }:
let
  mk = name: extra: derivation ({
    inherit name;
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [ "-c" "echo ${flavour} > $out" ];
  } // extra);
  alpha = mk "alpha-1.0" { };
  # Forty derivations with only three names: nix-env's sort is not stable,
  # so their order among equals is libstdc++'s introsort's.
  many = builtins.listToAttrs (builtins.genList (i: {
    name = "p${toString (100 + i)}";
    value = mk "same-${toString (builtins.bitAnd i 1)}" { i = toString i; };
  }) 40);
  more = builtins.listToAttrs (builtins.genList (i: {
    name = "q${toString (100 + i)}";
    value = mk (if builtins.bitAnd i 2 == 0 then "Mixed-1" else "mixed-1") { i = toString i; };
  }) 24);
in many // more // {
  a = alpha;
  b = alpha; # the same set again: listed once, under `a`
  c = alpha // { extra = 1; }; # a different set with the same drv: listed again
  Zed = mk "Zed-2" { };
  zed = mk "zed-1" { };
  _under = mk "under_score-1" { };
  multi = mk "multi-3" { outputs = [ "out" "dev" "bin" ]; };
  broken = assert count == 2; mk "broken-1" { };
  brokenDrv = (mk "brokendrv-1" { }) // { drvPath = assert count == 2; "x"; };
  noDrvPath = { type = "derivation"; name = "nodrvpath-1"; outPath = alpha.outPath; };
  nested = {
    recurseForDerivations = true;
    inner = mk "inner-1" { };
    deeper = { recurseForDerivations = true; d = mk "deep-1" { }; };
    notMarked = { x = mk "hidden-1" { }; };
    again = alpha; # already listed under `a`
  };
  notRecursed = { y = mk "hidden-2" { }; };
  "bad'name" = mk "badname-1" { };
  "2start" = mk "digitstart-1" { };
  fn = { x ? 1 }: mk "fn-1" { };
  number = 3;
  flav = mk "flavour-${flavour}" { };
}
"#;

fn nix_env() -> Command {
    Command::new("nix-env")
}

fn run_pair(dir: &Path, nix_args: &[&str], b3_args: &[&str]) -> (String, String) {
    let nix = nix_env()
        .args(["-f", "expr.nix"])
        .args(nix_args)
        .current_dir(dir)
        .output()
        .expect("nix-env not found: run scripts/setup-test-deps.sh");
    assert!(
        nix.status.success(),
        "nix-env failed: {}",
        String::from_utf8_lossy(&nix.stderr)
    );
    let b3 = Command::new(env!("CARGO_BIN_EXE_b3"))
        .args(["env", "-f", "expr.nix"])
        .args(b3_args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        b3.status.success(),
        "b3 env failed: {}",
        String::from_utf8_lossy(&b3.stderr)
    );
    (
        String::from_utf8_lossy(&nix.stdout).into_owned(),
        String::from_utf8_lossy(&b3.stdout).into_owned(),
    )
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("expr.nix"), EXPR).unwrap();
    dir
}

#[test]
fn qa_drv_path_matches_nix_env() {
    let dir = setup();
    let (nix, b3) = run_pair(dir.path(), &["-qa", "--drv-path"], &["-qa", "--drv-path"]);
    assert!(nix.lines().count() > 60, "{nix}");
    assert_eq!(b3, nix);
}

#[test]
fn qa_attr_paths_out_paths_and_system_match_nix_env() {
    let dir = setup();
    let flags = ["-qaP", "--out-path", "--system", "--drv-path"];
    let (nix, b3) = run_pair(dir.path(), &flags, &flags);
    assert!(nix.contains("bin="), "{nix}");
    assert_eq!(b3, nix);
}

#[test]
fn qa_with_args_and_attr_path_matches_nix_env() {
    let dir = setup();
    let (nix, b3) = run_pair(
        dir.path(),
        &[
            "-qa",
            "--drv-path",
            "--argstr",
            "flavour",
            "fancy",
            "--arg",
            "count",
            "2",
        ],
        &[
            "-qa",
            "--drv-path",
            "--argstr",
            "flavour",
            "fancy",
            "--arg",
            "count",
            "2",
        ],
    );
    assert!(nix.contains("flavour-fancy"), "{nix}");
    assert!(nix.contains("broken-1"), "{nix}");
    assert_eq!(b3, nix);

    let (nix, b3) = run_pair(
        dir.path(),
        &["-qaP", "-A", "nested", "--drv-path"],
        &["-qaP", "-A", "nested", "--drv-path"],
    );
    assert!(nix.contains("nested.deeper.d"), "{nix}");
    assert_eq!(b3, nix);
}

#[test]
fn parallel_walk_prints_the_same_listing() {
    let dir = setup();
    let (nix, b3) = run_pair(
        dir.path(),
        &["-qaP", "--drv-path"],
        &["-qaP", "--drv-path", "-j", "3"],
    );
    assert_eq!(b3, nix);
}

#[test]
fn query_all_is_an_alias_of_env_qa() {
    let dir = setup();
    let out = Command::new(env!("CARGO_BIN_EXE_b3"))
        .args(["query-all", "-f", "expr.nix", "--drv-path"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let env = Command::new(env!("CARGO_BIN_EXE_b3"))
        .args(["env", "-f", "expr.nix", "-qa", "--drv-path"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.stdout, env.stdout);
}

#[test]
fn a_throw_stops_the_query_as_in_nix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("expr.nix"),
        r#"{ ok = derivation { name = "ok-1"; system = "x"; builder = "/bin/sh"; }; bad = throw "no"; }"#,
    )
    .unwrap();
    let nix = nix_env()
        .args(["-f", "expr.nix", "-qa"])
        .current_dir(dir.path())
        .output()
        .expect("nix-env not found: run scripts/setup-test-deps.sh");
    assert!(!nix.status.success());
    let b3 = Command::new(env!("CARGO_BIN_EXE_b3"))
        .args(["env", "-f", "expr.nix", "-qa"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!b3.status.success());
    assert!(String::from_utf8_lossy(&b3.stderr).contains("no"));
    // --keep-going reports and skips instead.
    let b3 = Command::new(env!("CARGO_BIN_EXE_b3"))
        .args(["env", "-f", "expr.nix", "-qa", "--keep-going"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(b3.status.success());
    assert_eq!(String::from_utf8_lossy(&b3.stdout), "ok-1\n");
}
