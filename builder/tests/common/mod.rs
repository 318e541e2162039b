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
    }
}

/// Runs the job, returning the result and the whole log as text.
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
