//! Stand-in for platforms without a b3 sandbox yet (Windows, macOS, BSDs):
//! everything compiles, sandboxed builds and process control report
//! [`OsErrorKind::Unsupported`], so callers get a clear error rather than an
//! unsandboxed build.

use super::{ExitStatus, LockMode, OsError, OsErrorKind, Pid};
use crate::sandbox::{RunOutcome, SandboxError, SandboxSpec};

/// Host id builders would run as under root (see the Linux sandbox).
pub const ROOT_MODE_BUILD_ID: u32 = 872_415_232;

pub(super) fn error_kind(code: i32) -> OsErrorKind {
    std::io::Error::from_raw_os_error(code).kind().into_b3()
}

trait IntoB3 {
    fn into_b3(self) -> OsErrorKind;
}

impl IntoB3 for std::io::ErrorKind {
    fn into_b3(self) -> OsErrorKind {
        use std::io::ErrorKind as K;
        match self {
            K::NotFound => OsErrorKind::NotFound,
            K::PermissionDenied => OsErrorKind::PermissionDenied,
            K::AlreadyExists => OsErrorKind::AlreadyExists,
            K::WouldBlock => OsErrorKind::WouldBlock,
            K::Interrupted => OsErrorKind::Interrupted,
            K::InvalidInput => OsErrorKind::InvalidInput,
            K::Unsupported => OsErrorKind::Unsupported,
            _ => OsErrorKind::Other,
        }
    }
}

fn unsupported(op: &str) -> OsError {
    OsError::new(op, OsErrorKind::Unsupported)
}

pub(super) fn kill(_pid: Pid) -> Result<(), OsError> {
    Err(unsupported("killing a process"))
}

pub(super) fn kill_group(_pgid: Pid) -> Result<(), OsError> {
    Err(unsupported("killing a process group"))
}

pub(super) fn wait(_pid: Pid) -> Result<ExitStatus, OsError> {
    Err(unsupported("waiting for a process"))
}

pub(super) fn lock_file(_file: &std::fs::File, _mode: LockMode, _block: bool) -> Result<(), i32> {
    // No portable raw code exists; report "not supported" through the kind map.
    Err(UNSUPPORTED_CODE)
}

// ERROR_NOT_SUPPORTED on Windows; only used to reach `OsErrorKind::Other`/`Unsupported`.
const UNSUPPORTED_CODE: i32 = 50;

pub(super) fn sandbox_support() -> Result<(), OsError> {
    Err(unsupported("sandboxed builds"))
}

/// Never constructed on this platform.
#[derive(Debug)]
pub struct SandboxedChild {
    _private: (),
}

impl SandboxedChild {
    pub fn pid(&self) -> Pid {
        Pid(0)
    }

    pub fn setup_time(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    pub fn wait_with_log(self, _log: &mut dyn std::io::Write) -> Result<RunOutcome, SandboxError> {
        Err(SandboxError::Setup(unsupported("sandboxed builds")))
    }
}

/// Sandboxed builds are not implemented on this platform.
pub fn spawn_sandboxed(_spec: &SandboxSpec) -> Result<SandboxedChild, SandboxError> {
    Err(SandboxError::Setup(unsupported("sandboxed builds")))
}

/// Nothing outlives a reaped sandbox here (see the Linux version).
pub fn wait_released() {}
