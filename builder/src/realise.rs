//! Realising derivations into the local store: the settings a realisation
//! runs with, its errors (with Nix's wording and exit status), the entry
//! points, and [`LocalBuilder`], which wraps a [`LocalStore`] and
//! implements the async [`StoreBuild`] trait (plus `StoreRead`/`StoreWrite`
//! by delegation).
//!
//! The work is split: [`crate::schedule`] walks the derivation graph and
//! runs builds and substitutions in parallel; [`crate::step`] builds one
//! derivation (lock its outputs, run the builder in the sandbox, check the
//! outputs, register them). This module also owns [`scan_output`] (NAR
//! hash, size and references in one pass), which `--check` uses on a
//! rebuilt output.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use b3_store::activity::Logger;
use b3_store::derivation::{aterm, Derivation, DerivationError};
use b3_store::hash::{Hash, HashAlgo, Hasher};
use b3_store::local::LocalStore;
use b3_store::path::{FileIngestionMethod, StoreDir, StorePath};
use b3_store::refscan::RefScanner;
use b3_store::substitute::Substitute;
use b3_store::traits::{StoreBuild, StoreError, StoreRead, StoreWrite, ValidPathInfo};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::buildlog::RawLog;
use crate::checks::CheckError;
use crate::drv::{DrvJobError, FixedOutputError};
use crate::job::JobError;
use crate::platform::ExitStatus;
use crate::sandbox::SandboxPath;
use crate::schedule::{realise_goals, Goal};

#[derive(Debug, thiserror::Error)]
pub enum RealiseError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Derivation(#[from] DerivationError),
    #[error("{0}")]
    Job(#[from] JobError),
    #[error("{0}")]
    DrvJob(#[from] DrvJobError),
    #[error("{0}")]
    FixedOutput(#[from] FixedOutputError),
    #[error("{0}")]
    OutputCheck(#[from] CheckError),
    #[error("reading derivation '{path}': {source}")]
    ReadDrv {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `tail` is empty or Nix's `;\n last N log lines: ...` suffix.
    #[error("builder for '{drv}' {how}{tail}")]
    BuildFailed {
        drv: String,
        how: String,
        tail: String,
    },
    #[error("building of '{drv}' timed out after {secs} seconds")]
    TimedOut { drv: String, secs: u64 },
    #[error("building of '{drv}' timed out after {secs} seconds of silence")]
    Silent { drv: String, secs: u64 },
    #[error("builder for '{drv}' failed to produce output path for output '{output}' at '{path}'")]
    MissingOutput {
        drv: String,
        output: String,
        path: String,
    },
    #[error("derivation '{drv}' has no output '{output}'")]
    NoSuchOutput { drv: String, output: String },
    #[error("illegal path references in fixed-output derivation '{0}'")]
    FixedOutputReferences(String),
    #[error("cycle detected in the references of the outputs of '{0}'")]
    OutputCycle(String),
    #[error("serialising output '{path}': {source}")]
    Nar {
        path: String,
        #[source]
        source: b3_nar::Error,
    },
    #[error("{count} dependencies of derivation '{drv}' failed to build")]
    DependencyFailed { count: usize, drv: String },
    /// More than one requested derivation failed (or was not attempted).
    #[error("build of {} failed", .0.iter().map(|d| format!("'{d}'")).collect::<Vec<_>>().join(", "))]
    BuildsFailed(Vec<String>),
    #[error("some outputs of '{0}' are not valid, so checking is not possible")]
    CheckInvalid(String),
    #[error("derivation '{drv}' may not be deterministic: output '{output}' differs{}", .kept.as_ref().map(|k| format!(" from '{k}'")).unwrap_or_default())]
    NotDeterministic {
        drv: String,
        output: String,
        kept: Option<String>,
    },
    #[error("locking '{path}': {source}")]
    Lock {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("path '{0}' is required, but there is no substituter that can build it")]
    MissingInput(String),
    /// Stopped because another build failed (without `keep_going`).
    #[error("build of '{0}' was cancelled because another build failed")]
    Cancelled(String),
}

impl RealiseError {
    /// The bits Nix ORs into its exit status `0b1100000` (100) for failed
    /// builds: 1 timed out, 2 hash mismatch, 4 not deterministic. `None`
    /// for errors that are not build failures (exit status 1).
    pub fn nix_status_bits(&self) -> Option<u8> {
        match self {
            RealiseError::TimedOut { .. } | RealiseError::Silent { .. } => Some(1),
            RealiseError::FixedOutput(FixedOutputError::HashMismatch { .. }) => Some(2),
            RealiseError::NotDeterministic { .. } => Some(4),
            RealiseError::BuildFailed { .. }
            | RealiseError::MissingOutput { .. }
            | RealiseError::FixedOutputReferences(_)
            | RealiseError::OutputCheck(_)
            | RealiseError::DependencyFailed { .. }
            | RealiseError::BuildsFailed(_)
            | RealiseError::FixedOutput(_) => Some(0),
            _ => None,
        }
    }
}

/// Nix's wording for a builder that did not succeed.
pub(crate) fn failure_text(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(c) => format!("failed with exit code {c}"),
        ExitStatus::Signal(s) => {
            let name = match s {
                1 => "Hangup",
                2 => "Interrupt",
                3 => "Quit",
                4 => "Illegal instruction",
                6 => "Aborted",
                7 => "Bus error",
                8 => "Floating point exception",
                9 => "Killed",
                11 => "Segmentation fault",
                13 => "Broken pipe",
                14 => "Alarm clock",
                15 => "Terminated",
                _ => "Unknown signal",
            };
            format!("failed due to signal {s} ({name})")
        }
    }
}

/// How a realisation runs: per-machine build settings plus the scheduling
/// policy and where its records go.
#[derive(Debug, Clone)]
pub struct RealiseSettings {
    pub extra_paths: Vec<SandboxPath>,
    pub cores: u32,
    pub timeout: Option<Duration>,
    pub max_silent: Option<Duration>,
    pub kvm: bool,
    pub impure_env: Option<BTreeMap<String, String>>,
    /// Builds run at once (Nix's `max-jobs`; default: number of cores).
    pub max_jobs: usize,
    /// Substitutions run at once (`max-substitution-jobs`).
    pub max_substitution_jobs: usize,
    /// Go on with other builds after one fails (`--keep-going`).
    pub keep_going: bool,
    /// Keep the build directory of failed builds (`--keep-failed`).
    pub keep_failed: bool,
    /// Lines of a failed build's log to put in its error message (Nix's
    /// `log-lines`); 0 when the logs were shown anyway.
    pub log_lines: usize,
    /// Asked for missing outputs before building (binary caches).
    pub substituter: Option<Arc<dyn Substitute>>,
    /// Where activities go; `None`: the process-wide logger.
    pub logger: Option<Logger>,
    /// Show builds their inputs through an object-database view (and
    /// trace them); see [`crate::vfs_build`].
    pub vfs: Option<Arc<crate::vfs_build::VfsBuilds>>,
}

impl Default for RealiseSettings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        RealiseSettings {
            extra_paths: Vec::new(),
            cores: cores as u32,
            timeout: None,
            max_silent: None,
            kvm: Path::new("/dev/kvm").exists(),
            impure_env: None,
            max_jobs: cores,
            max_substitution_jobs: 16,
            keep_going: false,
            keep_failed: false,
            log_lines: 25,
            substituter: None,
            logger: None,
            vfs: None,
        }
    }
}

impl RealiseSettings {
    pub(crate) fn logger(&self) -> Logger {
        self.logger
            .clone()
            .unwrap_or_else(b3_store::activity::global)
    }
}

/// Reads and parses the `.drv` at `drv_path` (which must be valid).
pub fn read_derivation(
    store: &LocalStore,
    drv_path: &StorePath,
) -> Result<Derivation, RealiseError> {
    let shown = store.print_path(drv_path);
    store.add_temp_roots([drv_path])?;
    if !store.is_valid_sync(drv_path)? {
        return Err(StoreError::InvalidPath(shown).into());
    }
    let text =
        std::fs::read(store.real_path(drv_path)).map_err(|source| RealiseError::ReadDrv {
            path: shown,
            source,
        })?;
    Ok(aterm::parse(store.store_dir(), &text).map_err(DerivationError::from)?)
}

/// Realises the `wanted` outputs (all if empty) of `drv_path`, building its
/// inputs first as needed (in parallel up to `settings.max_jobs`). The
/// builders' raw output is copied to `log` (so error messages carry no log
/// tail); activities go to the settings' logger.
pub fn realise_sync(
    store: &LocalStore,
    settings: &RealiseSettings,
    drv_path: &StorePath,
    wanted: &BTreeSet<String>,
    log: &mut (dyn Write + Send),
) -> Result<BTreeMap<String, StorePath>, RealiseError> {
    let goal = Goal {
        drv: drv_path.clone(),
        outputs: wanted.clone(),
        check: false,
    };
    let raw = Mutex::new(log);
    realise_goals(store, settings, &[goal], Some(&raw as &dyn RawLog)).into_single()
}

/// NAR hash, NAR size and the candidate hash parts the NAR contains.
pub(crate) fn scan_output<'a>(
    host: &Path,
    candidates: impl Iterator<Item = &'a String>,
) -> Result<(Hash, u64, BTreeSet<String>), RealiseError> {
    struct Sink {
        hasher: Hasher,
        scanner: RefScanner,
    }
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.hasher.update(buf);
            self.scanner.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink {
        hasher: Hasher::new(HashAlgo::Sha256),
        scanner: RefScanner::new(candidates),
    };
    let (sink, size) = b3_nar::dump_path(host, sink).map_err(|source| RealiseError::Nar {
        path: host.display().to_string(),
        source,
    })?;
    let found = sink.scanner.found();
    Ok((sink.hasher.finish(), size, found))
}

/// A local store that can build: `StoreRead`/`StoreWrite` are the store's,
/// `StoreBuild::realise` runs the scheduler (build logs go to the settings'
/// logger as activity records, not to a raw stream).
#[derive(Debug, Clone)]
pub struct LocalBuilder {
    pub store: LocalStore,
    pub settings: RealiseSettings,
}

impl LocalBuilder {
    pub fn new(store: LocalStore, settings: RealiseSettings) -> LocalBuilder {
        LocalBuilder { store, settings }
    }
}

#[async_trait]
impl StoreRead for LocalBuilder {
    fn store_dir(&self) -> &StoreDir {
        self.store.store_dir()
    }

    async fn is_valid_path(&self, path: &StorePath) -> Result<bool, StoreError> {
        StoreRead::is_valid_path(&self.store, path).await
    }

    async fn query_path_info(&self, path: &StorePath) -> Result<Option<ValidPathInfo>, StoreError> {
        StoreRead::query_path_info(&self.store, path).await
    }

    async fn nar_from_path(
        &self,
        path: &StorePath,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<u64, StoreError> {
        StoreRead::nar_from_path(&self.store, path, sink).await
    }

    async fn query_referrers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>, StoreError> {
        StoreRead::query_referrers(&self.store, path).await
    }
}

#[async_trait]
impl StoreWrite for LocalBuilder {
    async fn add_nar(
        &self,
        info: &ValidPathInfo,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), StoreError> {
        StoreWrite::add_nar(&self.store, info, source).await
    }

    async fn add_text(
        &self,
        name: &str,
        text: &[u8],
        references: &BTreeSet<StorePath>,
    ) -> Result<StorePath, StoreError> {
        StoreWrite::add_text(&self.store, name, text, references).await
    }

    async fn add_path(
        &self,
        name: &str,
        source: &Path,
        method: FileIngestionMethod,
        algo: HashAlgo,
    ) -> Result<StorePath, StoreError> {
        StoreWrite::add_path(&self.store, name, source, method, algo).await
    }
}

#[async_trait]
impl StoreBuild for LocalBuilder {
    async fn realise(
        &self,
        drv_path: &StorePath,
        outputs: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, StorePath>, StoreError> {
        let (store, settings) = (self.store.clone(), self.settings.clone());
        let (drv, wanted) = (drv_path.clone(), outputs.clone());
        tokio::task::spawn_blocking(move || {
            let goal = Goal {
                drv,
                outputs: wanted,
                check: false,
            };
            realise_goals(&store, &settings, &[goal], None).into_single()
        })
        .await
        .map_err(|e| StoreError::Other(format!("build worker failed: {e}")))?
        .map_err(|e| match e {
            RealiseError::Store(s) => s,
            other => StoreError::Backend(Box::new(other)),
        })
    }
}
