//! Builds whose sandbox sees its input closure through a FUSE view served
//! from the object database (b3-vfs) instead of bind mounts of the store,
//! optionally recording every file the build's processes open.
//!
//! [`VfsBuilds`] goes into [`crate::realise::RealiseSettings::vfs`]; the
//! step then calls [`run_job`] instead of [`BuildJob::run`]. For each build
//! the input closure is imported into the object database where missing, a
//! view of exactly those paths is mounted on a private host directory, and
//! that directory becomes the job's physical store directory: the sandbox
//! set-up bind-mounts each input from the view as it would from the store.
//! Outputs are still written to the job's own writable directory, so the
//! output bytes do not depend on the view.
//!
//! With a trace log, each build's view has its own tracer appending to the
//! log (the format of `b3 shell --trace`, see `b3_vfs::view::trace`), and a
//! [`BuildTrace`] per build says which store paths and files it used and
//! which of its direct inputs it never read. FUSE reports callers by their
//! pid in b3's own pid namespace, so the sandbox's pid namespace does not
//! hide the builder's processes from the tracer.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::job::{BuildJob, BuildResult, JobError};
use crate::platform::{OsError, OsErrorKind};
use crate::sandbox::SandboxError;

/// Which files one build used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildTrace {
    /// The derivation, as printed (`/nix/store/…drv`).
    pub drv: String,
    /// Store path base name → files opened in it (`""`: its root).
    pub used: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Base names of the derivation's direct inputs (sources and input
    /// derivations' outputs) that nothing opened.
    pub unused: Vec<String>,
}

/// Settings and results of vfs-backed builds, shared by every build of a
/// realisation.
#[derive(Debug)]
pub struct VfsBuilds {
    odb_dir: PathBuf,
    trace_log: Option<PathBuf>,
    traces: Mutex<Vec<BuildTrace>>,
}

impl VfsBuilds {
    /// Builds served from the object database in `odb_dir` (created if
    /// missing); with `trace_log`, every build is traced and the accesses
    /// are appended to that file.
    pub fn new(odb_dir: PathBuf, trace_log: Option<PathBuf>) -> VfsBuilds {
        VfsBuilds {
            odb_dir,
            trace_log,
            traces: Mutex::new(Vec::new()),
        }
    }

    pub fn odb_dir(&self) -> &Path {
        &self.odb_dir
    }

    pub fn tracing(&self) -> bool {
        self.trace_log.is_some()
    }

    /// The traces of the builds run so far, in completion order.
    pub fn traces(&self) -> Vec<BuildTrace> {
        self.traces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn setup_error(msg: String) -> JobError {
    JobError::Sandbox(SandboxError::Setup(OsError::new(msg, OsErrorKind::Other)))
}

/// Runs `job`, through a view when `vfs` is set. `drv` names the build in
/// its trace and `declared` lists its direct inputs (base names).
pub fn run_job(
    vfs: Option<&VfsBuilds>,
    drv: &str,
    declared: &[String],
    job: BuildJob,
    log: &mut dyn std::io::Write,
) -> Result<BuildResult, JobError> {
    match vfs {
        None => job.run(log),
        Some(v) => imp::run_job(v, drv, declared, job, log),
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use b3_vfs::odb::Odb;
    use b3_vfs::view::trace::Tracer;
    use b3_vfs::view::{mount, ViewOptions};

    /// Removes the (unmounted) mount point directory.
    struct MountDir(PathBuf);

    impl Drop for MountDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    fn mount_dir() -> Result<MountDir, JobError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "b3-vfs-build-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&p).map_err(|e| {
            JobError::WorkDir(OsError::from_io(format!("creating {}", p.display()), &e))
        })?;
        Ok(MountDir(p))
    }

    pub(super) fn run_job(
        v: &VfsBuilds,
        drv: &str,
        declared: &[String],
        mut job: BuildJob,
        log: &mut dyn std::io::Write,
    ) -> Result<BuildResult, JobError> {
        let odb = Odb::open(&v.odb_dir).map_err(|e| {
            setup_error(format!(
                "opening the object database {}: {e}",
                v.odb_dir.display()
            ))
        })?;
        let mut names = Vec::with_capacity(job.inputs.len());
        for input in &job.inputs {
            let name = input
                .strip_prefix(&job.logical_store_dir)
                .map(|s| s.trim_start_matches('/'))
                .unwrap_or(input)
                .to_string();
            let have = odb.has_root(&name).map_err(|e| {
                setup_error(format!("looking up {name} in the object database: {e}"))
            })?;
            if !have {
                odb.import_path(&name, &job.physical_store_dir.join(&name))
                    .map_err(|e| {
                        setup_error(format!("importing {input} into the object database: {e}"))
                    })?;
            }
            names.push(name);
        }
        let tracer = match &v.trace_log {
            Some(p) => Some(Arc::new(Tracer::with_log(p).map_err(|e| {
                JobError::WorkDir(OsError::from_io(format!("opening {}", p.display()), &e))
            })?)),
            None => None,
        };
        let dir = mount_dir()?;
        let opts = ViewOptions {
            tracer: tracer.clone(),
            // As root the builder runs under another host id, which FUSE
            // lets in only with allow_other (root may always set it).
            allow_other: is_root(),
            ..ViewOptions::default()
        };
        let guard = mount(&odb, names, &dir.0, opts)
            .map_err(|e| setup_error(format!("mounting the input view: {e}")))?;
        job.physical_store_dir = dir.0.clone();
        let result = job.run(log);
        guard
            .unmount()
            .map_err(|e| setup_error(format!("unmounting the input view: {e}")))?;
        drop(dir);
        if let Some(t) = tracer {
            let rep = t.report(declared);
            v.traces
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(BuildTrace {
                    drv: drv.to_string(),
                    used: rep.used,
                    unused: rep.unused,
                });
        }
        result
    }

    fn is_root() -> bool {
        // SAFETY: a plain getter.
        unsafe { libc::geteuid() == 0 }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    pub(super) fn run_job(
        _: &VfsBuilds,
        _: &str,
        _: &[String],
        _: BuildJob,
        _: &mut dyn std::io::Write,
    ) -> Result<BuildResult, JobError> {
        Err(setup_error(
            "builds through a vfs view need Linux (FUSE) for now".into(),
        ))
    }
}
