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
  brokenDrv = (mk "brokendrv-1" { }) // { drvPath = assert count == 2; alpha.drvPath; };
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
fn an_abort_stops_the_query_as_in_nix_and_a_throw_does_not() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("expr.nix"),
        r#"{ ok = derivation { name = "ok-1"; system = "x"; builder = "/bin/sh"; }; bad = abort "no"; thrown = throw "skipped, as an assert is"; }"#,
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

/// Runs `b3 env -f expr.nix ARGS` in `dir` with its own store under `dir`.
fn b3_env(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_b3"))
        .args(["env", "-f", "expr.nix"])
        .args(args)
        .env("B3_STORE", dir.join("b3-store"))
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn forked_walk_in_any_number_of_shares_prints_the_serial_listing() {
    let dir = setup();
    let serial = b3_env(dir.path(), &["-qaP", "--drv-path", "--out-path"]);
    assert!(serial.status.success());
    let serial = String::from_utf8_lossy(&serial.stdout).into_owned();
    assert!(serial.lines().count() > 60, "{serial}");
    // One share (all in the parent), two, an odd count, and more shares
    // than attributes; with one to four processes at a time.
    for (jobs, shares) in [
        ("2", "1"),
        ("2", "2"),
        ("3", "7"),
        ("4", "1000"),
        ("1", "5"),
    ] {
        let out = b3_env(
            dir.path(),
            &[
                "-qaP",
                "--drv-path",
                "--out-path",
                "-j",
                jobs,
                "--shares",
                shares,
            ],
        );
        assert!(
            out.status.success(),
            "-j {jobs} --shares {shares}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            serial,
            "-j {jobs} --shares {shares}"
        );
    }
}

#[test]
fn forked_walk_reports_the_first_error_in_walk_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut expr = String::from("{\n");
    for i in 0..30 {
        expr.push_str(&format!(
            "  p{i:02} = derivation {{ name = \"p-{i}\"; system = \"x\"; builder = \"/bin/sh\"; }};\n"
        ));
    }
    // The second message is built at run time so that the error's source
    // excerpt around the first never shows it.
    expr.push_str(
        "  p07x = abort \"first failure\";\n  p21x = abort (\"second\" + \" failure\");\n}\n",
    );
    std::fs::write(dir.path().join("expr.nix"), expr).unwrap();
    for shares in ["1", "3", "30"] {
        let out = b3_env(dir.path(), &["-qa", "-j", "2", "--shares", shares]);
        assert!(!out.status.success(), "--shares {shares}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("first failure"), "--shares {shares}: {err}");
        assert!(!err.contains("second failure"), "--shares {shares}: {err}");
        assert!(out.stdout.is_empty(), "--shares {shares}");
    }
}

#[test]
fn forked_walk_filters_sources_in_every_share_and_leaves_no_scratch() {
    // Each share's process hashes the filtered sources its derivations use
    // (with several jobs the query computes paths as in read-only mode),
    // gets Nix's paths, and leaves no scratch directory behind.
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mut expr = String::from("{\n");
    for i in 0..12 {
        let d = dir.path().join(format!("d{i}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("f.sh"), format!("echo {i}\n")).unwrap();
        std::fs::write(d.join("skip.o"), "x").unwrap();
        expr.push_str(&format!(
            "  s{i:02} = derivation {{ name = \"s-{i}\"; system = \"x\"; builder = \"/bin/sh\"; \
             args = [ (builtins.filterSource (p: t: builtins.match \".*\\\\.o\" p == null) ./d{i}) ]; }};\n"
        ));
    }
    expr.push_str("}\n");
    std::fs::write(dir.path().join("expr.nix"), &expr).unwrap();
    let nix = nix_env()
        .args(["-f", "expr.nix", "-qa", "--drv-path", "--readonly-mode"])
        .current_dir(dir.path())
        .output()
        .expect("nix-env not found: run scripts/setup-test-deps.sh");
    assert!(
        nix.status.success(),
        "{}",
        String::from_utf8_lossy(&nix.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&nix.stdout).lines().count(), 12);
    let out = Command::new(env!("CARGO_BIN_EXE_b3"))
        .args([
            "env",
            "-f",
            "expr.nix",
            "-qa",
            "--drv-path",
            "-j",
            "3",
            "--shares",
            "6",
        ])
        .env("B3_STORE", dir.path().join("b3-store"))
        .env("TMPDIR", &tmp)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&nix.stdout)
    );
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}

/// `nix-env -qa` evaluates in read-only mode, so import from derivation
/// fails there (Nix 2.8: "path '….drv' is not valid"). `b3 env -qa` fails
/// too, serially and in forked shares, naming the derivation to build, and
/// writes and builds nothing.
#[test]
fn import_from_derivation_fails_in_qa_as_in_nix_env_and_builds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let expr = r#"
let
  mk = name: script: derivation {
    inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ];
  };
  gen = mk "gen-for-qa-ifd" "echo '{ a = \"x\"; }' > $out";
  v = import gen;
in builtins.listToAttrs (builtins.genList (i: {
  name = "p${toString i}";
  value = mk "p${toString i}-${v.a}" "echo > $out";
}) 8)
"#;
    std::fs::write(dir.path().join("expr.nix"), expr).unwrap();
    let nix = nix_env()
        .args(["-f", "expr.nix", "-qa", "--drv-path"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!nix.status.success(), "nix-env -qa built an IFD?");
    for args in [
        &["-qa", "--drv-path"][..],
        &["-qa", "--drv-path", "-j", "2", "--shares", "4"][..],
    ] {
        let out = b3_env(dir.path(), args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("gen-for-qa-ifd.drv") && err.contains("import from derivation"),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
        let store = dir.path().join("b3-store");
        let built = walk_names(&store);
        assert!(
            !built.iter().any(|n| n.ends_with("-gen-for-qa-ifd")),
            "{args:?}: an output was built: {built:?}"
        );
    }
}

/// Every file and directory name under `root` (empty when it is missing).
fn walk_names(root: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            names.push(e.file_name().to_string_lossy().into_owned());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            }
        }
    }
    names
}
