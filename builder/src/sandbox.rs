//! The sandbox as data: [`SandboxSpec`] says exactly what one builder
//! process sees (its program, arguments and final environment, the store
//! paths it may read, where its outputs and build directory live on the
//! host, whether it has network access), and [`run`] executes it through the
//! platform layer, streaming the builder's stdout and stderr to a writer.
//!
//! This module knows nothing about derivations; see [`crate::job`] for the
//! Nix semantics (environment, passAsFile, structured attrs) on top of it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::platform::{self, Cancel, ExitStatus, OsError};

/// uid of the build user inside the sandbox (Nix's `nixbld`).
pub const SANDBOX_UID: u32 = 1000;
/// gid of the build group inside the sandbox.
pub const SANDBOX_GID: u32 = 100;
/// The build directory as the builder sees it.
pub const SANDBOX_BUILD_DIR: &str = "/build";

/// One host path made visible in the sandbox (Nix's `sandbox-paths`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPath {
    /// Absolute path inside the sandbox.
    pub target: String,
    /// Host path to expose there (read-only).
    pub source: PathBuf,
    /// Skip silently if `source` does not exist.
    pub optional: bool,
}

impl SandboxPath {
    /// Parses Nix's syntax: `target=source` or `path`, optionally followed by
    /// `?` (missing source is not an error).
    pub fn parse(spec: &str) -> Result<SandboxPath, SandboxError> {
        let (body, optional) = match spec.strip_suffix('?') {
            Some(b) => (b, true),
            None => (spec, false),
        };
        let (target, source) = match body.split_once('=') {
            Some((t, s)) => (t, s),
            None => (body, body),
        };
        if !target.starts_with('/') || source.is_empty() {
            return Err(SandboxError::InvalidSpec(format!(
                "sandbox path '{spec}' must be 'TARGET=SOURCE' or an absolute path"
            )));
        }
        Ok(SandboxPath {
            target: target.to_string(),
            source: PathBuf::from(source),
            optional,
        })
    }
}

/// Everything one sandboxed builder run needs. All host paths must exist
/// (except `extra_paths` marked optional); nothing here is created or
/// removed by [`run`] on the host except inside `store_dir_host`
/// (mount points for the inputs) and whatever the builder writes.
/// What a mount point left in a work directory's store directory is (see
/// [`SandboxSpec::made_points`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MadePoint {
    /// An empty directory (mode 0555), for an input that is a directory.
    Dir,
    /// An empty file (mode 0444), for an input that is a file.
    File,
}

#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Program to execute, as a path inside the sandbox.
    pub builder: String,
    /// Arguments after argv\[0\] (argv\[0\] is the builder's base name, as in Nix).
    pub args: Vec<String>,
    /// The complete environment; nothing of the caller's leaks in.
    pub env: Vec<(String, String)>,
    /// More of it, byte for byte: variables whose name or value is not
    /// UTF-8 (names must be disjoint from `env`'s).
    pub env_bytes: Vec<(Vec<u8>, Vec<u8>)>,
    /// The store directory as builders see it, e.g. `/nix/store`.
    pub logical_store_dir: String,
    /// Where store objects live on the host (e.g. `/nix/store`, or
    /// `/tmp/x/nix/store` for a chroot store).
    pub physical_store_dir: PathBuf,
    /// Base names (`<hash>-<name>`) of the store paths the builder may read:
    /// the input closure. Each is bind-mounted read-only.
    pub inputs: Vec<String>,
    /// Empty host directory shown, writable, at `logical_store_dir`; the
    /// builder's outputs appear here as `<store_dir_host>/<hash>-<name>`.
    /// Put it on the same file system as the store so outputs can be renamed.
    /// When b3 runs as root it is handed (chown) to the build user's host id.
    pub store_dir_host: PathBuf,
    /// Host directory bound at `/build` (writable). As root, it and its
    /// direct entries are handed to the build user's host id.
    pub build_dir: PathBuf,
    /// Empty host directory used only as the mount point of the sandbox's
    /// root (a tmpfs); nothing is written to it on the host.
    pub root_dir: PathBuf,
    /// Empty host directory on the file system of `store_dir_host` for the
    /// sandbox's own bookkeeping (Linux: the work directory of the overlay
    /// that shows the outputs' directory and the inputs as one store).
    /// `None`: the inputs' mount points are made in `store_dir_host`.
    pub scratch_dir: Option<PathBuf>,
    /// Mount points `store_dir_host` holds already, by base name: those of
    /// the last build in the same work directory, kept for the next (see
    /// `crate::recycle`). This build's own are used as they are; the
    /// others are removed before the builder starts. Must be empty when
    /// `scratch_dir` is given (an overlay's upper layer shows whatever it
    /// holds).
    pub made_points: BTreeMap<String, MadePoint>,
    /// Share the host's network (fixed-output derivations only). Otherwise a
    /// new network namespace with only `lo` up.
    pub network: bool,
    /// Extra host paths (read-only), e.g. `/bin/sh=/bin/busybox`.
    pub extra_paths: Vec<SandboxPath>,
    /// Bind `/dev/kvm` if the host has it (Nix does when `kvm` is a system
    /// feature).
    pub kvm: bool,
    /// Kill the build after this long.
    pub timeout: Option<Duration>,
    /// Kill the build when it prints nothing for this long (Nix's
    /// `max-silent-time`).
    pub max_silent: Option<Duration>,
    /// Kill the build (its whole process tree) when this is cancelled.
    pub cancel: Option<Cancel>,
    /// Take a pre-made sandbox from here when one fits (Linux).
    pub pool: Option<SandboxPool>,
}

/// Sandboxes made ahead of time, so that most of a build's sandbox set-up
/// (namespaces, `/dev`, `/proc`, `/etc`, `/tmp`) happens while earlier
/// builds run; each serves one build, which then sees exactly what a fresh
/// sandbox would show it. Shared by the builds of one realisation (cheap to
/// clone); the waiting sandboxes end when the last clone is dropped.
#[derive(Clone)]
pub struct SandboxPool {
    inner: std::sync::Arc<platform::Pool>,
}

impl std::fmt::Debug for SandboxPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxPool")
            .field("served", &self.served())
            .finish()
    }
}

impl SandboxPool {
    /// Keeps up to `size` sandboxes ready; their roots are mounted on
    /// `dir` (an absent directory it creates and removes when dropped; put
    /// it where the store sweeps dead processes' leftovers).
    pub fn new(size: usize, dir: PathBuf) -> SandboxPool {
        SandboxPool {
            inner: std::sync::Arc::new(platform::Pool::new(size, dir)),
        }
    }

    /// Like [`Self::new`], but `dir` may serve other pools (of this process
    /// or others) at the same time, and outlives them all: it is made if
    /// absent and never removed. Each sandbox mounts its root on it in a
    /// mount namespace of its own, so nothing of a pool shows there; a
    /// directory that stays spares each realisation a new inode (on some
    /// file systems a good part of a millisecond, on its first sandbox's
    /// way) and leaves nothing to sweep after a crash.
    pub fn with_shared_root(size: usize, dir: PathBuf) -> SandboxPool {
        SandboxPool {
            inner: std::sync::Arc::new(platform::Pool::with_shared_root(size, dir)),
        }
    }

    /// How many builds ran in a pre-made sandbox so far.
    pub fn served(&self) -> u64 {
        self.inner.served()
    }

    /// How many sandboxes it made so far (served or not).
    pub fn made(&self) -> u64 {
        self.inner.made()
    }

    /// How many network namespaces its sandboxes were made in, and how
    /// many times a sandbox was made in one an earlier sandbox had used
    /// (as root only; see `platform/linux/netns.rs`). Without root, every
    /// sandbox makes its own and both are 0.
    pub fn network_namespaces(&self) -> (u64, u64) {
        self.inner.network_namespaces()
    }

    /// How many builds are still to start: at most that many sandboxes
    /// are kept ready (by default, as many as the pool's size).
    pub fn set_demand(&self, builds: usize) {
        self.inner.set_demand(builds);
    }

    /// Starts making sandboxes like `template`'s ahead of the first build
    /// (its per-build fields play no role); at most as many as the demand
    /// (see [`Self::set_demand`]).
    pub fn warm_up(&self, template: &SandboxSpec) {
        self.inner.warm_up(template);
    }

    /// Waits until a sandbox like the last build's is ready (builds do
    /// not wait: they take one if there is one). An error says why none
    /// can be made, or that no build has used the pool yet.
    pub fn wait_ready(&self) -> Result<(), SandboxError> {
        self.inner.wait_ready()
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn platform(&self) -> &platform::Pool {
        &self.inner
    }
}

/// How a sandboxed run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub status: ExitStatus,
    /// From the start of [`run`] until the builder was executed.
    pub setup_time: Duration,
    /// From the start of [`run`] until the builder and every process it
    /// started had exited.
    pub total_time: Duration,
    /// The build was killed for exceeding [`SandboxSpec::timeout`].
    pub timed_out: bool,
    /// The build was killed for being silent longer than
    /// [`SandboxSpec::max_silent`].
    pub silent_too_long: bool,
    /// The build was killed because [`SandboxSpec::cancel`] was cancelled.
    pub cancelled: bool,
}

/// Why a sandboxed run could not be carried out (a builder that fails is
/// not an error here: see [`RunOutcome::status`]).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox specification: {0}")]
    InvalidSpec(String),
    #[error("setting up the build sandbox: {0}")]
    Setup(#[source] OsError),
    #[error("executing builder '{builder}': {source}")]
    Exec {
        builder: String,
        #[source]
        source: OsError,
    },
    #[error("writing the build log: {0}")]
    Log(#[source] std::io::Error),
    #[error("supervising the build: {0}")]
    Supervise(#[source] OsError),
}

/// Runs the builder described by `spec` to completion, streaming its
/// stdout and stderr (one pipe, in order) to `log`. When it returns, the
/// builder and every process it started are gone: the builder is PID 1 of
/// its own PID namespace, whose end kills all of them.
///
/// Blocking; from async code call it inside `spawn_blocking`.
/// Waits until what every sandbox reaped so far kept in the kernel (its
/// namespaces, whose teardown follows the build rather than delaying it) is
/// gone, so its work directory can serve another build; see
/// [`platform::wait_released`].
pub fn wait_released() {
    platform::wait_released()
}

pub fn run(spec: &SandboxSpec, log: &mut dyn Write) -> Result<RunOutcome, SandboxError> {
    platform::sandbox_support().map_err(SandboxError::Setup)?;
    let child = platform::spawn_sandboxed(spec)?;
    child.wait_with_log(log)
}
