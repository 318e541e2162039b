//! `b3 build` and `b3 log` end to end: derivations instantiated by Nix 2.8
//! are copied into a fresh b3 store and built by the `b3` binary in its
//! sandbox. Covers Nix's failure wording and exit statuses, flags (`-j`,
//! `-k`, `-K`, `--check`, `-L`), plain output when piped, internal-json
//! records, stored logs, and two processes asking for the same derivation.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use b3_store::derivation::aterm;
use b3_store::local::{LocalStore, LocalStoreConfig};
use b3_store::path::{FileIngestionMethod, StoreDir};

const BB: &str = "/nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb";

const EXPR: &str = r#"
let
  bb = builtins.storePath /nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb;
  mk = name: script: deps: derivation {
    inherit name deps; system = "x86_64-linux"; builder = "${bb}/bin/sh";
    PATH = "${bb}/bin"; args = [ "-c" script ];
  };
  bad = mk "bad-cli" "echo failing now; exit 3" [];
  good = mk "good-cli" "echo building good; echo ok > $out" [];
in {
  inherit bad good;
  top = mk "top-cli" "echo > $out" [ bad good ];
  slow = mk "slow-cli" "echo slow start; sleep 3; echo done > $out" [];
  nondet = mk "nondet-cli" "cat /proc/sys/kernel/random/uuid > $out" [];
  usesGood = mk "uses-good-cli" "echo used > $out" [ good ];
}
"#;

struct Env {
    dir: tempfile::TempDir,
    root: std::path::PathBuf,
}

fn sh(c: &mut Command) -> String {
    let out = c
        .output()
        .expect("runs (the Nix oracle is needed: run scripts/setup-test-deps.sh)");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn copy_drv(store: &LocalStore, drv: &str) {
    let sd = StoreDir::default();
    let text = std::fs::read(drv).unwrap();
    let parsed = aterm::parse(&sd, &text).unwrap();
    for input in parsed.input_drvs.keys() {
        copy_drv(store, &sd.display(input));
    }
    let name = drv.rsplit('/').next().unwrap().split_once('-').unwrap().1;
    store
        .add_text_sync(name, &text, &parsed.references())
        .unwrap();
}

/// A b3 store with busybox and the `.drv`s of `attrs`; returns their paths.
/// The expression is at `<dir>/e.nix`.
fn setup(attrs: &[&str]) -> (Env, Vec<String>) {
    assert!(
        Path::new(BB).join("bin/busybox").exists(),
        "static busybox missing: run scripts/setup-test-deps.sh"
    );
    let dir = tempfile::Builder::new()
        .prefix("b3-build-cli-")
        .tempdir()
        .unwrap();
    let root = dir.path().join("store");
    let f = dir.path().join("e.nix");
    std::fs::write(&f, EXPR).unwrap();
    let mut cfg = LocalStoreConfig::new(&root);
    cfg.fsync = false;
    let store = LocalStore::open(cfg).unwrap();
    store
        .add_path_sync(
            "bb",
            Path::new(BB),
            FileIngestionMethod::Recursive,
            b3_store::hash::HashAlgo::Sha256,
        )
        .unwrap();
    let mut drvs = Vec::new();
    for a in attrs {
        let drv = sh(Command::new("nix-instantiate").arg(&f).args(["-A", a]))
            .trim()
            .to_string();
        copy_drv(&store, &drv);
        drvs.push(drv);
    }
    (Env { dir, root }, drvs)
}

fn b3(env: &Env) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_b3"));
    c.arg("--store").arg(&env.root);
    // Settings from a private nix.conf, not the machine's.
    let conf = env.dir.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("nix.conf"),
        "extra-sandbox-paths = /bin/sh=/bin/busybox\nsubstituters =\n",
    )
    .unwrap();
    c.env("NIX_CONF_DIR", &conf)
        .env("XDG_CONFIG_HOME", env.dir.path().join("xdg"))
        .env_remove("NIX_CONFIG");
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn dependency_failure_reads_like_nix_and_exits_100() {
    let (env, drvs) = setup(&["top"]);
    let top = &drvs[0];
    let out = b3(&env).args(["build", top]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(100), "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.trim_end().ends_with(&format!(
            "error: 1 dependencies of derivation '{top}' failed to build"
        )),
        "{stderr}"
    );
    // Piped: plain lines, the builder's error with its log tail.
    assert!(stderr.contains("-bad-cli.drv' failed with exit code 3;\n       last 1 log lines:\n       > failing now\n       For full logs, run 'b3 log "), "{stderr}");
    assert!(stderr.contains("building '/nix/store/"), "{stderr}");
    // Real Nix says the same about the same derivation.
    let nix = Command::new("nix-build")
        .args(["--no-out-link", top])
        .output()
        .unwrap();
    assert_eq!(nix.status.code(), Some(100));
    assert!(String::from_utf8_lossy(&nix.stderr).contains(&format!(
        "error: 1 dependencies of derivation '{top}' failed to build"
    )));
}

#[test]
fn log_shows_the_stored_log_of_a_failed_build_and_of_an_output() {
    let (env, drvs) = setup(&["bad", "good"]);
    let out = b3(&env).args(["build", &drvs[0]]).output().unwrap();
    assert_eq!(out.status.code(), Some(100));
    let log = b3(&env).args(["log", &drvs[0]]).output().unwrap();
    assert!(log.status.success(), "{}", text(&log).1);
    assert_eq!(text(&log).0, "failing now\n");

    let built = b3(&env).args(["build", &drvs[1]]).output().unwrap();
    assert!(built.status.success(), "{}", text(&built).1);
    let path = text(&built).0.trim().to_string();
    let log = b3(&env).args(["log", &path]).output().unwrap();
    assert_eq!(text(&log).0, "building good\n");
    // The file is where Nix keeps logs, bzip2-compressed.
    let base = drvs[1].rsplit('/').next().unwrap();
    let file = env
        .root
        .join("nix/var/log/nix/drvs")
        .join(&base[..2])
        .join(format!("{}.bz2", &base[2..]));
    assert_eq!(&std::fs::read(file).unwrap()[..3], b"BZh");
}

#[test]
fn print_build_logs_streams_the_log() {
    let (env, drvs) = setup(&["good"]);
    let out = b3(&env).args(["build", "-L", &drvs[0]]).output().unwrap();
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.lines().any(|l| l == "building good"), "{stderr}");
    let (env, drvs) = setup(&["good"]);
    let out = b3(&env).args(["build", &drvs[0]]).output().unwrap();
    assert!(!text(&out).1.contains("building good"));
}

#[test]
fn keep_going_and_keep_failed_flags() {
    let (env, drvs) = setup(&["top"]);
    let out = b3(&env)
        .args(["build", "-k", "-K", "-j", "1", &drvs[0]])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(100), "{stderr}");
    // -k: `good` was built although `bad` failed (whatever the order).
    assert!(
        stderr.contains("-good-cli.drv'"),
        "good was scheduled: {stderr}"
    );
    let good_out = std::fs::read_dir(env.root.join("nix/store"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with("-good-cli"));
    assert!(good_out, "good's output exists");
    // -K: the build directory is kept and named.
    let kept = stderr
        .lines()
        .find_map(|l| l.strip_prefix("note: keeping build directory '"))
        .expect("keep-failed note")
        .trim_end_matches('\'');
    assert!(Path::new(kept).is_dir(), "{kept}");
}

#[test]
fn check_reports_nondeterminism_with_exit_104() {
    let (env, drvs) = setup(&["nondet"]);
    let first = b3(&env).args(["build", &drvs[0]]).output().unwrap();
    assert!(first.status.success());
    let path = text(&first).0.trim().to_string();
    let out = b3(&env)
        .args(["build", "--check", &drvs[0]])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(104), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: derivation '{}' may not be deterministic: output '{path}' differs",
            drvs[0]
        )),
        "{stderr}"
    );
}

#[test]
fn internal_json_has_the_records_nix_output_monitor_reads() {
    let (env, drvs) = setup(&["good"]);
    let out = b3(&env)
        .args(["--log-format", "internal-json", "build", &drvs[0]])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let recs: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("@nix "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    let build = recs
        .iter()
        .find(|r| r["action"] == "start" && r["type"] == 105)
        .expect("a build activity");
    assert_eq!(build["fields"][0], drvs[0].as_str());
    assert_eq!(build["text"], format!("building '{}'", drvs[0]));
    let id = build["id"].clone();
    assert!(recs.iter().any(|r| r["action"] == "result"
        && r["id"] == id
        && r["type"] == 101
        && r["fields"][0] == "building good"));
    assert!(recs.iter().any(|r| r["action"] == "stop" && r["id"] == id));
    // Builds progress: [done, expected, running, failed] ends at 1 of 1.
    assert!(recs.iter().any(|r| r["action"] == "result"
        && r["type"] == 105
        && r["fields"] == serde_json::json!([1, 1, 0, 0])));
    assert!(recs.iter().any(|r| r["action"] == "msg"
        && r["msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("this derivation will be built:"))));
}

#[test]
fn two_processes_build_the_same_derivation_once() {
    let (env, drvs) = setup(&["slow"]);
    let spawn = || {
        b3(&env)
            .args(["--log-format", "internal-json", "build", &drvs[0]])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn();
    let b = spawn();
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (sa, ea) = text(&oa);
    let (sb, eb) = text(&ob);
    assert!(oa.status.success() && ob.status.success(), "{ea}\n{eb}");
    assert_eq!(sa, sb);
    let builds = |e: &str| {
        e.lines()
            .filter(|l| l.contains("\"action\":\"start\"") && l.ends_with("\"type\":105}"))
            .count()
    };
    assert_eq!(builds(&ea) + builds(&eb), 1, "A:\n{ea}\nB:\n{eb}");
    // The one that waited said so.
    assert!(
        ea.contains("waiting for lock on") || eb.contains("waiting for lock on"),
        "A:\n{ea}\nB:\n{eb}"
    );
    // One log was written, holding one run.
    let log = b3(&env).args(["log", &drvs[0]]).output().unwrap();
    assert_eq!(text(&log).0, "slow start\n");
    let paths: BTreeSet<&str> = sa.lines().collect();
    assert_eq!(paths.len(), 1);
}

#[test]
fn build_evaluates_a_file_and_leaves_a_result_link() {
    let (env, _) = setup(&[]);
    let file = env.dir.path().join("e.nix");
    let cwd = env.dir.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let out = b3(&env)
        .current_dir(&cwd)
        .arg("build")
        .arg(&file)
        .args(["-A", "good"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let path = stdout.trim();
    assert!(path.ends_with("-good-cli"), "{stdout}");
    // The link leads to the output where the store keeps it physically.
    let link = std::fs::read_link(cwd.join("result")).unwrap();
    assert!(link.ends_with(path.trim_start_matches('/')), "{link:?}");
    assert_eq!(std::fs::read_to_string(cwd.join("result")).unwrap(), "ok\n");
    // The same drv path Nix instantiates.
    let nix_drv = sh(Command::new("nix-instantiate")
        .arg(&file)
        .args(["-A", "good"]));
    let log = b3(&env).args(["log", nix_drv.trim()]).output().unwrap();
    assert_eq!(text(&log).0, "building good\n");

    // --no-out-link: nothing in the directory; -E works too.
    let cwd2 = env.dir.path().join("cwd2");
    std::fs::create_dir_all(&cwd2).unwrap();
    let expr = format!("(import {}).good", file.display());
    let out = b3(&env)
        .current_dir(&cwd2)
        .args(["build", "--no-out-link", "-E", &expr])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(text(&out).0.trim(), path);
    assert_eq!(std::fs::read_dir(&cwd2).unwrap().count(), 0);
}

#[test]
fn outputs_are_substituted_from_a_binary_cache_instead_of_built() {
    // Store A builds the derivation and copies its output to a file:// cache.
    let (a, drvs) = setup(&["usesGood"]);
    let built = b3(&a).args(["build", &drvs[0]]).output().unwrap();
    assert!(built.status.success(), "{}", text(&built).1);
    let path = text(&built).0.trim().to_string();
    let cache = format!("file://{}", a.dir.path().join("cache").display());
    let copy = b3(&a)
        .args(["copy", "--to", &cache, &path])
        .output()
        .unwrap();
    assert!(copy.status.success(), "{}", text(&copy).1);

    // Store B gets it from the cache: nothing is built, and the input
    // derivation (not a runtime reference) is not realised.
    let (b, drvs) = setup(&["usesGood"]);
    let out = b3(&b)
        .args(["build", "--option", "substituters", &cache])
        .args(["--option", "require-sigs", "false", &drvs[0]])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), path);
    assert!(!stderr.contains("building '"), "{stderr}");
    // Sizes come from the cache's narinfo (FileSize, NarSize), as in Nix.
    assert!(
        stderr.contains("this path will be fetched (0.00 MiB download, 0.00 MiB unpacked):"),
        "{stderr}"
    );
    let store_entries: Vec<String> = std::fs::read_dir(b.root.join("nix/store"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(store_entries.iter().any(|e| e.ends_with("-uses-good-cli")));
    assert!(
        !store_entries
            .iter()
            .any(|e| e.ends_with("-good-cli") && !e.contains("uses")),
        "{store_entries:?}"
    );

    // Unsigned paths are refused when signatures are required, and the
    // build falls back to building.
    let (c, drvs) = setup(&["usesGood"]);
    let out = b3(&c)
        .args(["build", "--option", "substituters", &cache, &drvs[0]])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), path);
    assert!(stderr.contains("building '"), "{stderr}");
}
