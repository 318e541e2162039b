//! Shared helpers for the sandbox integration tests: a job running a shell
//! script with the static busybox from the test store.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use b3_builder::job::{BuildJob, BuildResult};
use b3_builder::sandbox::SandboxPath;

/// Static busybox added to the store by `scripts/setup-test-deps.sh`.
pub const BB: &str = "/nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb";
pub const OUT: &str = "/nix/store/00000000000000000000000000000000-t";

pub fn require_busybox() {
    let bin = Path::new(BB).join("bin/busybox");
    assert!(
        bin.exists(),
        "the static busybox {} is missing: run scripts/setup-test-deps.sh",
        bin.display()
    );
}

/// A job named `t` whose builder is `${BB}/bin/sh -c script`, with busybox
/// as its only input and on PATH.
pub fn job(script: &str, work_parent: &Path) -> BuildJob {
    require_busybox();
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), format!("{BB}/bin"));
    env.insert("name".to_string(), "t".to_string());
    env.insert("out".to_string(), OUT.to_string());
    env.insert("builder".to_string(), format!("{BB}/bin/sh"));
    env.insert("system".to_string(), "x86_64-linux".to_string());
    let mut outputs = BTreeMap::new();
    outputs.insert("out".to_string(), OUT.to_string());
    BuildJob {
        name: "t".into(),
        builder: format!("{BB}/bin/sh"),
        args: vec!["-c".into(), script.into()],
        drv_env: env,
        drv_env_bytes: BTreeMap::new(),
        outputs,
        inputs: vec![BB.to_string()],
        logical_store_dir: "/nix/store".into(),
        physical_store_dir: PathBuf::from("/nix/store"),
        work_parent: work_parent.to_path_buf(),
        work_prefix: b3_builder::job::DEFAULT_WORK_PREFIX.to_string(),
        fixed_output: false,
        extra_paths: vec![SandboxPath::parse("/bin/sh=/bin/busybox").expect("valid")],
        cores: 2,
        timeout: Some(std::time::Duration::from_secs(120)),
        max_silent: None,
        kvm: true,
        impure_env: None,
        cancel: None,
        overlay: Some(0),
        pool: None,
        work_dirs: None,
    }
}

/// Runs the job, returning the result and the whole log as text.
/// The base name of a store path on the host other than [`BB`], for a
/// build to declare as an extra input (any `.drv` file will do).
pub fn other_store_path() -> String {
    std::fs::read_dir("/nix/store")
        .expect("/nix/store is readable")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".drv"))
        .expect("some other store path exists")
}

pub fn run(job: &BuildJob) -> (BuildResult, String) {
    let mut log = Vec::new();
    let res = job.run(&mut log).expect("the sandbox runs");
    (res, String::from_utf8_lossy(&log).into_owned())
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("b3-builder-test-")
        .tempdir()
        .expect("temp dir")
}

/// Runs a command that must succeed (the Nix oracle among them) and
/// returns its stdout.
pub fn sh(c: &mut std::process::Command) -> String {
    let out = c.output().expect("runs");
    assert!(
        out.status.success(),
        "{c:?} failed ({}); the Nix oracle is needed: run scripts/setup-test-deps.sh",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `nix-instantiate` of `expr` (written to `dir/file`), attribute `attr`
/// (`None`: the whole expression) → the `.drv` path.
pub fn nix_instantiate(dir: &Path, file: &str, expr: &str, attr: Option<&str>) -> String {
    let f = dir.join(file);
    std::fs::write(&f, expr).expect("write expression");
    let mut c = std::process::Command::new("nix-instantiate");
    c.arg(&f);
    if let Some(a) = attr {
        c.args(["-A", a]);
    }
    sh(&mut c).trim().to_string()
}

/// Copies a `.drv` (and, first, the `.drv`s it depends on) from the Nix
/// store into the b3 store, as text paths like Nix made them.
pub fn copy_drv(store: &b3_store::local::LocalStore, drv: &str) -> b3_store::path::StorePath {
    use b3_store::derivation::aterm;
    let sd = b3_store::path::StoreDir::default();
    let path = sd.parse(drv).expect("a store path");
    let text = std::fs::read(drv).expect("the .drv is readable");
    let parsed = aterm::parse(&sd, &text).expect("a derivation");
    for input in parsed.input_drvs.keys() {
        copy_drv(store, &sd.display(input));
    }
    let refs = parsed.references();
    let got = store
        .add_text_sync(path.name(), &text, &refs)
        .expect("added");
    assert_eq!(got, path, "the .drv lands at Nix's path");
    got
}

/// A fresh b3 store at `root` holding the static busybox at Nix's path.
pub fn open_store(root: &Path) -> b3_store::local::LocalStore {
    use b3_store::local::{LocalStore, LocalStoreConfig};
    require_busybox();
    let mut cfg = LocalStoreConfig::new(root);
    cfg.fsync = false;
    let store = LocalStore::open(cfg).expect("store opens");
    let bb = store
        .add_path_sync(
            "bb",
            Path::new(BB),
            b3_store::path::FileIngestionMethod::Recursive,
            b3_store::hash::HashAlgo::Sha256,
        )
        .expect("busybox added");
    assert_eq!(store.print_path(&bb), BB);
    store
}

/// The builder's first look at `/proc/self/mountinfo`, in a fresh sandbox
/// and in a pre-made one, shows one mount at `/` and none of the host's own
/// file systems: the host's root, which the pivot stacks on the sandbox's
/// root, has left the build's mount namespace before the builder starts.
pub fn old_root_leaves_before_the_builder_starts() {
    use b3_builder::sandbox::SandboxPool;
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let fs_type = |line: &str| {
        line.split(" - ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .unwrap_or("")
            .to_string()
    };
    // The host types checked below exist, so their absence means something.
    assert!(
        host.lines().any(|l| fs_type(l) == "sysfs"),
        "the host has a sysfs mount: {host}"
    );
    let script = "cp /proc/self/mountinfo /build/mi; cat /build/mi; \
                  echo ROOTS $(cut -d' ' -f5 /build/mi | grep -cx /); touch $out";
    let work = tempdir();
    let pool = SandboxPool::new(1, work.path().join("pool"));
    let build = || {
        let mut j = job(script, work.path());
        j.pool = Some(pool.clone());
        let (res, log) = run(&j);
        assert!(res.outcome.status.success(), "{log}");
        log
    };
    let fresh = build();
    assert_eq!(pool.served(), 0, "the first build ran in a fresh sandbox");
    pool.wait_ready().expect("a sandbox is made");
    let warm = build();
    assert_eq!(pool.served(), 1, "the second build ran in the pool");
    for (kind, log) in [("fresh", &fresh), ("pooled", &warm)] {
        assert!(log.contains("ROOTS 1\n"), "{kind}: one mount at /: {log}");
        for line in log.lines().filter(|l| l.contains(" - ")) {
            let t = fs_type(line);
            assert!(
                !matches!(t.as_str(), "sysfs" | "cgroup" | "cgroup2"),
                "{kind}: a host mount is listed: {line}\n{log}"
            );
        }
    }
}

/// A goal of every output of `drv`, built (not checked).
pub fn goal(drv: &b3_store::path::StorePath) -> b3_builder::schedule::Goal {
    b3_builder::schedule::Goal {
        drv: drv.clone(),
        outputs: std::collections::BTreeSet::new(),
        check: false,
    }
}

/// Runs the tests `names` of the calling test binary (ignored ones too)
/// as user `nobody`, with `envs` set, and returns what they printed
/// (stdout, then stderr), failing if any failed. For root-only tests that
/// check the unprivileged paths.
pub fn run_as_nobody(names: &[&str], envs: &[(&str, &std::ffi::OsStr)]) -> String {
    let exe = std::env::current_exe().expect("the test binary");
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .arg("--exact")
        .args(names)
        .args(["--include-ignored", "--test-threads=1", "--nocapture"])
        .env("TMPDIR", "/tmp");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("setpriv runs (util-linux)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "as nobody:\n{text}");
    assert!(text.contains(&format!("{} passed", names.len())), "{text}");
    text
}
