//! The platform interface: everything the builder needs from the operating
//! system, behind one small surface so that OS-specific code lives in sibling
//! modules (`linux`, `windows`, and `unsupported` for every other target).
//!
//! It covers: OS errors mapped to b3's own [`OsErrorKind`] (callers never
//! look at raw errno values), advisory file locks, process control (signal a
//! process or a process group, wait for it), and the sandboxed spawn used by
//! [`crate::sandbox`] (namespaces, mounts, seccomp) through [`spawn_sandboxed`].

use std::fmt;
use std::path::{Path, PathBuf};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;
#[cfg(windows)]
pub use windows::{process_tree, snapshot as process_snapshot, KILLED_EXIT_CODE};

#[cfg(not(any(target_os = "linux", windows)))]
mod unsupported;
#[cfg(not(any(target_os = "linux", windows)))]
use unsupported as imp;

pub use imp::{spawn_sandboxed, wait_released, SandboxedChild, ROOT_MODE_BUILD_ID};

#[cfg(target_os = "linux")]
pub use linux::pool::Pool;

/// Pre-made sandboxes exist on Linux only; elsewhere the pool is empty and
/// every build gets what [`spawn_sandboxed`] makes.
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
pub struct Pool;

#[cfg(not(target_os = "linux"))]
impl Pool {
    pub fn new(_size: usize, _dir: PathBuf) -> Pool {
        Pool
    }
    pub fn with_shared_root(_size: usize, _dir: PathBuf) -> Pool {
        Pool
    }
    pub fn served(&self) -> u64 {
        0
    }
    pub fn set_demand(&self, _builds: usize) {}
    pub fn warm_up(&self, _template: &crate::sandbox::SandboxSpec) {}
    pub fn made(&self) -> u64 {
        0
    }
    pub fn network_namespaces(&self) -> (u64, u64) {
        (0, 0)
    }
    pub fn wait_ready(&self) -> Result<(), crate::sandbox::SandboxError> {
        Err(crate::sandbox::SandboxError::Setup(OsError::new(
            "pre-made sandboxes",
            OsErrorKind::Unsupported,
        )))
    }
}

/// What went wrong in an OS call, independent of the platform's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OsErrorKind {
    NotFound,
    PermissionDenied,
    AlreadyExists,
    NotADirectory,
    IsADirectory,
    DirectoryNotEmpty,
    Busy,
    WouldBlock,
    Interrupted,
    InvalidInput,
    NoSpace,
    ReadOnlyFilesystem,
    CrossDevice,
    TooManyOpenFiles,
    NoSuchProcess,
    /// The kernel or platform lacks the feature (e.g. no user namespaces).
    Unsupported,
    Other,
}

impl OsErrorKind {
    fn describe(self) -> &'static str {
        match self {
            OsErrorKind::NotFound => "not found",
            OsErrorKind::PermissionDenied => "permission denied",
            OsErrorKind::AlreadyExists => "already exists",
            OsErrorKind::NotADirectory => "not a directory",
            OsErrorKind::IsADirectory => "is a directory",
            OsErrorKind::DirectoryNotEmpty => "directory not empty",
            OsErrorKind::Busy => "resource busy",
            OsErrorKind::WouldBlock => "operation would block",
            OsErrorKind::Interrupted => "interrupted",
            OsErrorKind::InvalidInput => "invalid argument",
            OsErrorKind::NoSpace => "no space left on device",
            OsErrorKind::ReadOnlyFilesystem => "read-only file system",
            OsErrorKind::CrossDevice => "cross-device link",
            OsErrorKind::TooManyOpenFiles => "too many open files",
            OsErrorKind::NoSuchProcess => "no such process",
            OsErrorKind::Unsupported => "not supported on this system",
            OsErrorKind::Other => "operating system error",
        }
    }

    /// Maps a raw platform error code (errno on Unix) to a kind.
    pub fn from_raw(code: i32) -> OsErrorKind {
        imp::error_kind(code)
    }
}

/// An OS call that failed: what b3 was doing, and why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsError {
    /// What b3 was doing, e.g. `mounting /proc`.
    pub op: String,
    pub kind: OsErrorKind,
    /// The raw code, kept for diagnostics only.
    pub code: Option<i32>,
}

impl OsError {
    pub fn new(op: impl Into<String>, kind: OsErrorKind) -> OsError {
        OsError {
            op: op.into(),
            kind,
            code: None,
        }
    }

    pub fn from_raw(op: impl Into<String>, code: i32) -> OsError {
        OsError {
            op: op.into(),
            kind: OsErrorKind::from_raw(code),
            code: Some(code),
        }
    }

    pub fn from_io(op: impl Into<String>, err: &std::io::Error) -> OsError {
        match err.raw_os_error() {
            Some(code) => OsError::from_raw(op, code),
            None => OsError::new(op, OsErrorKind::Other),
        }
    }

    /// The calling thread's last OS error.
    pub fn last(op: impl Into<String>) -> OsError {
        OsError::from_io(op, &std::io::Error::last_os_error())
    }
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.kind.describe())?;
        if let Some(code) = self.code {
            write!(f, " (os error {code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for OsError {}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited normally with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// A process id on this platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pid(pub i32);

/// Forcibly ends a process (SIGKILL on Unix).
pub fn kill(pid: Pid) -> Result<(), OsError> {
    imp::kill(pid)
}

/// Forcibly ends every process in a process group.
pub fn kill_group(pgid: Pid) -> Result<(), OsError> {
    imp::kill_group(pgid)
}

/// Waits for a child process to end and reaps it.
pub fn wait(pid: Pid) -> Result<ExitStatus, OsError> {
    imp::wait(pid)
}

/// Shared or exclusive advisory lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// An advisory whole-file lock, released when dropped.
#[derive(Debug)]
pub struct FileLock {
    path: PathBuf,
    // Keeping the file open keeps the lock.
    _file: std::fs::File,
}

impl FileLock {
    /// Opens (creating if needed) `path` and waits for the lock.
    pub fn lock(path: &Path, mode: LockMode) -> Result<FileLock, OsError> {
        let file = open_lock_file(path)?;
        imp::lock_file(&file, mode, true)
            .map_err(|k| OsError::from_raw(format!("locking {}", path.display()), k))?;
        Ok(FileLock {
            path: path.to_path_buf(),
            _file: file,
        })
    }

    /// Like [`FileLock::lock`] but returns `Ok(None)` if another holder has it.
    pub fn try_lock(path: &Path, mode: LockMode) -> Result<Option<FileLock>, OsError> {
        let file = open_lock_file(path)?;
        match imp::lock_file(&file, mode, false) {
            Ok(()) => Ok(Some(FileLock {
                path: path.to_path_buf(),
                _file: file,
            })),
            Err(code) if OsErrorKind::from_raw(code) == OsErrorKind::WouldBlock => Ok(None),
            Err(code) => Err(OsError::from_raw(
                format!("locking {}", path.display()),
                code,
            )),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_lock_file(path: &Path) -> Result<std::fs::File, OsError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| OsError::from_io(format!("opening lock file {}", path.display()), &e))
}

/// A cancellation signal shared by the builds of one realisation: once
/// [`Cancel::cancel`] is called, every sandboxed build that watches it
/// kills its process tree and reports [`crate::sandbox::RunOutcome::cancelled`].
/// On Unix it is a pipe whose read end becomes readable, so a build's
/// supervisor wakes at once (it polls the read end next to the log).
#[derive(Debug, Clone)]
pub struct Cancel {
    inner: std::sync::Arc<CancelInner>,
}

#[derive(Debug)]
struct CancelInner {
    flag: std::sync::atomic::AtomicBool,
    #[cfg(unix)]
    wake: Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
}

impl Default for Cancel {
    fn default() -> Self {
        Cancel::new()
    }
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel {
            inner: std::sync::Arc::new(CancelInner {
                flag: std::sync::atomic::AtomicBool::new(false),
                #[cfg(unix)]
                wake: wake_pipe(),
            }),
        }
    }

    /// Signals every watcher; later calls do nothing.
    pub fn cancel(&self) {
        use std::sync::atomic::Ordering;
        let first = !self.inner.flag.swap(true, Ordering::SeqCst);
        #[cfg(unix)]
        if let (true, Some((_, w))) = (first, &self.inner.wake) {
            use std::os::fd::AsRawFd;
            // The byte is never read: the pipe stays readable for everyone.
            // SAFETY: writing one byte from a valid buffer to our own fd.
            let _ = unsafe { libc::write(w.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        }
        // Watchers elsewhere poll the flag.
        #[cfg(not(unix))]
        let _ = first;
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.flag.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A descriptor that becomes readable when cancelled (`None` if the
    /// pipe could not be made: then only [`Cancel::is_cancelled`] works).
    #[cfg(unix)]
    pub fn wake_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.inner.wake.as_ref().map(|(r, _)| r.as_raw_fd())
    }
}

#[cfg(unix)]
fn wake_pipe() -> Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe fills the array on success.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } < 0 {
        return None;
    }
    for fd in fds {
        // SAFETY: plain fcntl on our fresh descriptors.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Some(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// Whether this platform can run sandboxed builds at all, and if not, why.
pub fn sandbox_support() -> Result<(), OsError> {
    imp::sandbox_support()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_b3_kinds() {
        assert_eq!(OsErrorKind::from_raw(libc::ENOENT), OsErrorKind::NotFound);
        assert_eq!(
            OsErrorKind::from_raw(libc::EACCES),
            OsErrorKind::PermissionDenied
        );
        assert_eq!(
            OsErrorKind::from_raw(libc::EPERM),
            OsErrorKind::PermissionDenied
        );
        assert_eq!(
            OsErrorKind::from_raw(libc::EWOULDBLOCK),
            OsErrorKind::WouldBlock
        );
        assert_eq!(
            OsErrorKind::from_raw(libc::EROFS),
            OsErrorKind::ReadOnlyFilesystem
        );
        assert_eq!(
            OsErrorKind::from_raw(libc::ENOSYS),
            OsErrorKind::Unsupported
        );
        let e = OsError::from_raw("opening /x", libc::ENOENT);
        assert_eq!(e.to_string(), "opening /x: not found (os error 2)");
    }

    #[test]
    fn cancel_wakes_pollers_and_stays_set() {
        let c = Cancel::new();
        let fd = c.wake_fd().unwrap();
        let poll = || {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut p, 1, 0) }
        };
        assert_eq!(poll(), 0);
        assert!(!c.is_cancelled());
        c.clone().cancel();
        c.cancel();
        assert!(c.is_cancelled());
        assert_eq!(poll(), 1);
        assert_eq!(poll(), 1, "still readable for the next watcher");
    }

    #[test]
    fn exclusive_lock_excludes_other_holders_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.lock");
        let held = FileLock::lock(&p, LockMode::Exclusive).unwrap();
        assert!(FileLock::try_lock(&p, LockMode::Shared).unwrap().is_none());
        assert!(FileLock::try_lock(&p, LockMode::Exclusive)
            .unwrap()
            .is_none());
        drop(held);
        let a = FileLock::try_lock(&p, LockMode::Shared).unwrap().unwrap();
        let b = FileLock::try_lock(&p, LockMode::Shared).unwrap();
        assert!(b.is_some(), "shared locks coexist");
        assert!(FileLock::try_lock(&p, LockMode::Exclusive)
            .unwrap()
            .is_none());
        assert_eq!(a.path(), p.as_path());
    }

    #[test]
    // The children are reaped by `wait` below, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    fn kill_and_wait_report_how_a_process_ended() {
        let child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let pid = Pid(child.id() as i32);
        kill(pid).unwrap();
        assert_eq!(wait(pid).unwrap(), ExitStatus::Signal(libc::SIGKILL));
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        assert_eq!(wait(Pid(child.id() as i32)).unwrap(), ExitStatus::Code(7));
        let err = kill(Pid(i32::MAX)).unwrap_err();
        assert_eq!(err.kind, OsErrorKind::NoSuchProcess);
    }
}
