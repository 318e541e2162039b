//! Linux implementation of the platform interface.
//!
//! The sandbox is entered without privileges: one `clone()` creates the
//! builder process directly in new user, mount, PID, IPC, UTS and (unless
//! the build may use the network) network namespaces, so it is PID 1 of its
//! namespace and its exit takes every process it started with it. The
//! parent writes the child's uid/gid maps and then lets it run the prepared
//! [`child::ChildPlan`]: mounts, `pivot_root`, no-new-privs, seccomp, exec.
//! Cloning (not `unshare`) works from a multi-threaded parent, because the
//! new user namespace belongs to the new single-threaded process.
//!
//! Identities: the builder is uid 1000 / gid 100 inside. An unprivileged
//! caller maps them to its own ids (`setgroups` denied). A root caller must
//! not: the builder would then *be* host root, and everything root owns that
//! is reachable (`/proc/sys`, `/proc/sysrq-trigger`) would be writable. So
//! as root the builder runs as a dedicated unprivileged host id
//! ([`ROOT_MODE_BUILD_ID`]); host root is mapped to `nobody` (65534) so that
//! the set-up code (still host root until it switches to 1000) can create
//! files, and root-owned host files show as `nobody`, as in Nix with build
//! users. Supplementary groups are dropped before the switch.

mod child;
mod keeper;
mod netns;
mod plan;
pub(super) mod pool;
mod seccomp;

use std::ffi::c_int;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::{ExitStatus, LockMode, OsError, OsErrorKind, Pid};
use crate::sandbox::{RunOutcome, SandboxError, SandboxSpec, SANDBOX_GID, SANDBOX_UID};

pub(super) fn error_kind(code: i32) -> OsErrorKind {
    match code {
        libc::ENOENT => OsErrorKind::NotFound,
        libc::EACCES | libc::EPERM => OsErrorKind::PermissionDenied,
        libc::EEXIST => OsErrorKind::AlreadyExists,
        libc::ENOTDIR => OsErrorKind::NotADirectory,
        libc::EISDIR => OsErrorKind::IsADirectory,
        libc::ENOTEMPTY => OsErrorKind::DirectoryNotEmpty,
        libc::EBUSY => OsErrorKind::Busy,
        libc::EWOULDBLOCK => OsErrorKind::WouldBlock,
        libc::EINTR => OsErrorKind::Interrupted,
        libc::EINVAL | libc::ENAMETOOLONG | libc::ELOOP => OsErrorKind::InvalidInput,
        libc::ENOSPC | libc::EDQUOT => OsErrorKind::NoSpace,
        libc::EROFS => OsErrorKind::ReadOnlyFilesystem,
        libc::EXDEV => OsErrorKind::CrossDevice,
        libc::EMFILE | libc::ENFILE => OsErrorKind::TooManyOpenFiles,
        libc::ESRCH => OsErrorKind::NoSuchProcess,
        libc::ENOSYS | libc::EOPNOTSUPP | libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT => {
            OsErrorKind::Unsupported
        }
        _ => OsErrorKind::Other,
    }
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub(super) fn kill(pid: Pid) -> Result<(), OsError> {
    // SAFETY: plain syscall.
    if unsafe { libc::kill(pid.0, libc::SIGKILL) } < 0 {
        return Err(OsError::last(format!("killing process {}", pid.0)));
    }
    Ok(())
}

pub(super) fn kill_group(pgid: Pid) -> Result<(), OsError> {
    // SAFETY: plain syscall; a negative pid addresses the group.
    if unsafe { libc::kill(-pgid.0, libc::SIGKILL) } < 0 {
        return Err(OsError::last(format!("killing process group {}", pgid.0)));
    }
    Ok(())
}

pub(super) fn wait(pid: Pid) -> Result<ExitStatus, OsError> {
    loop {
        let mut status: c_int = 0;
        // SAFETY: plain syscall with a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid.0, &mut status, 0) };
        if rc < 0 {
            if last_errno() == libc::EINTR {
                continue;
            }
            return Err(OsError::last(format!("waiting for process {}", pid.0)));
        }
        return Ok(decode_status(status));
    }
}

fn decode_status(status: c_int) -> ExitStatus {
    if libc::WIFSIGNALED(status) {
        ExitStatus::Signal(libc::WTERMSIG(status))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    }
}

pub(super) fn lock_file(file: &std::fs::File, mode: LockMode, block: bool) -> Result<(), i32> {
    let mut op = match mode {
        LockMode::Shared => libc::LOCK_SH,
        LockMode::Exclusive => libc::LOCK_EX,
    };
    if !block {
        op |= libc::LOCK_NB;
    }
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = last_errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

pub(super) fn sandbox_support() -> Result<(), OsError> {
    // Asked before every build: the answer cannot change while b3 runs
    // (short of an administrator changing sysctls), so it is kept.
    static SUPPORT: std::sync::OnceLock<Result<(), OsError>> = std::sync::OnceLock::new();
    SUPPORT.get_or_init(probe_sandbox_support).clone()
}

fn probe_sandbox_support() -> Result<(), OsError> {
    for ns in ["user", "mnt", "pid", "net", "ipc", "uts"] {
        let p = format!("/proc/self/ns/{ns}");
        if std::fs::symlink_metadata(&p).is_err() {
            return Err(OsError::new(
                format!("kernel has no {ns} namespaces ({p} missing)"),
                OsErrorKind::Unsupported,
            ));
        }
    }
    let sysctl = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string());
    if sysctl("/proc/sys/user/max_user_namespaces").is_ok_and(|v| v == "0") {
        return Err(OsError::new(
            "user namespaces are disabled (user.max_user_namespaces = 0)",
            OsErrorKind::Unsupported,
        ));
    }
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        if sysctl("/proc/sys/kernel/unprivileged_userns_clone").is_ok_and(|v| v == "0") {
            return Err(OsError::new(
                "unprivileged user namespaces are disabled \
                 (kernel.unprivileged_userns_clone = 0)",
                OsErrorKind::Unsupported,
            ));
        }
        if sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").is_ok_and(|v| v == "1")
        {
            return Err(OsError::new(
                "AppArmor restricts unprivileged user namespaces \
                 (kernel.apparmor_restrict_unprivileged_userns = 1)",
                OsErrorKind::Unsupported,
            ));
        }
    }
    Ok(())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), OsError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(OsError::last("creating a pipe"));
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Stack for the cloned child; it only runs the small set-up code.
const CHILD_STACK_SIZE: usize = 1 << 20;

/// A child's stack: anonymous memory, so that the kernel provides pages
/// only as they are touched, not a megabyte filled per build. A stack whose
/// child is gone is kept for the next one (up to [`SPARE_STACKS`]): an
/// unmapping in a process with several threads makes every CPU running
/// one of them flush its TLB, on the build's path (about 40 µs a build).
struct Stack {
    base: *mut libc::c_void,
}

// SAFETY: plain memory, owned by this value alone.
unsafe impl Send for Stack {}

/// Stacks kept for reuse at most.
const SPARE_STACKS: usize = 16;

/// The base addresses of stacks no child uses.
static SPARE: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

impl Stack {
    fn new() -> Result<Stack, SandboxError> {
        if let Some(base) = SPARE.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(Stack {
                base: base as *mut libc::c_void,
            });
        }
        // SAFETY: an anonymous private mapping; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                CHILD_STACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(SandboxError::Setup(OsError::last(
                "allocating the sandbox's stack",
            )));
        }
        Ok(Stack { base })
    }

    /// The initial stack pointer: the top (stacks grow down on every
    /// architecture Linux runs b3 on), 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        ((self.base as usize + CHILD_STACK_SIZE) & !15) as *mut libc::c_void
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Its child is gone (reaped, or never sharing this memory).
        let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < SPARE_STACKS {
            spare.push(self.base as usize);
            return;
        }
        drop(spare);
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base, CHILD_STACK_SIZE) };
    }
}

/// How [`SandboxedChild::wait_exit`] ended.
enum ExitWait {
    Exited,
    Deadline,
    Cancelled,
}

/// A running sandboxed builder. Dropping it kills and reaps the builder.
#[derive(Debug)]
pub struct SandboxedChild {
    pid: Pid,
    log: Option<OwnedFd>,
    started: Instant,
    setup_time: Duration,
    timeout: Option<Duration>,
    max_silent: Option<Duration>,
    cancel: Option<super::Cancel>,
    reaped: bool,
    held: Held,
}

/// Starts the builder described by `spec` and returns once it has been
/// executed (or set-up failed): in a pre-made sandbox of `spec.pool` when
/// one is ready for it, else in a fresh one.
pub fn spawn_sandboxed(spec: &SandboxSpec) -> Result<SandboxedChild, SandboxError> {
    let started = Instant::now();
    if let Some(pool) = &spec.pool {
        if let Some(warm) = pool.platform().take(spec) {
            return pool::spawn_in(spec, warm, started);
        }
    }
    spawn_fresh(spec, started)
}

fn seccomp_filter() -> Result<Vec<libc::sock_filter>, SandboxError> {
    seccomp::filter().map_err(|m| {
        SandboxError::Setup(OsError::new(
            format!("building seccomp filter: {m}"),
            OsErrorKind::Other,
        ))
    })
}

/// The namespaces whose teardown (unmounting every mount of the sandbox,
/// dismantling its network stack) need not delay the build's end: held
/// open from the parent, they outlive the builder, and
/// [`SandboxedChild`] lets them go on a background thread once it is
/// reaped. The PID namespace is not among them: its end is what kills
/// every process of the build.
fn hold_namespaces(pid: c_int) -> Vec<OwnedFd> {
    ["mnt", "net", "ipc", "uts"]
        .iter()
        .filter_map(|ns| std::fs::File::open(format!("/proc/{pid}/ns/{ns}")).ok())
        .map(OwnedFd::from)
        .collect()
}

/// Closes namespace descriptors on a background thread (at once if it
/// cannot be started). Each call counts as one release for
/// [`wait_released`].
fn release_later(fds: Vec<OwnedFd>) {
    use std::sync::mpsc::Sender;
    static CLOSER: std::sync::OnceLock<Option<Sender<Vec<OwnedFd>>>> = std::sync::OnceLock::new();
    if fds.is_empty() {
        return;
    }
    RELEASES
        .issued
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let tx = CLOSER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<OwnedFd>>();
        std::thread::Builder::new()
            .name("b3-sandbox-release".into())
            .spawn(move || {
                // Tearing namespaces down is the kernel's work, charged to
                // this thread; nobody waits for it but the recycler.
                b3_store::os::yield_to_foreground(b3_store::os::Background::Idle);
                rx.into_iter().for_each(|fds| RELEASES.done_with(fds))
            })
            .ok()
            .map(|_| tx)
    });
    match tx {
        Some(tx) => {
            if let Err(back) = tx.send(fds) {
                RELEASES.done_with(back.0);
            }
        }
        None => RELEASES.done_with(fds),
    }
}

/// Counts of the namespace releases handed to [`release_later`] and of
/// those done.
struct Releases {
    issued: std::sync::atomic::AtomicU64,
    done: std::sync::Mutex<u64>,
    changed: std::sync::Condvar,
}

static RELEASES: Releases = Releases {
    issued: std::sync::atomic::AtomicU64::new(0),
    done: std::sync::Mutex::new(0),
    changed: std::sync::Condvar::new(),
};

impl Releases {
    fn done_with(&self, fds: Vec<OwnedFd>) {
        drop(fds);
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.changed.notify_all();
    }
}

/// Waits until the namespaces of every sandbox reaped so far are released:
/// their mounts are gone. A work directory a finished build's sandbox
/// showed can then serve another build without the old overlay still
/// holding its layers (overlayfs warns of layers in use by two mounts).
pub fn wait_released() {
    let target = RELEASES.issued.load(std::sync::atomic::Ordering::SeqCst);
    let mut done = RELEASES.done.lock().unwrap_or_else(|e| e.into_inner());
    while *done < target {
        done = RELEASES
            .changed
            .wait(done)
            .unwrap_or_else(|e| e.into_inner());
    }
}

/// What a sandboxed child needs kept until it is reaped.
#[derive(Debug, Default)]
struct Held {
    namespaces: Vec<OwnedFd>,
    /// Memory a pre-made sandbox's process (which shares ours) reads.
    pooled: Option<pool::InUse>,
}

fn spawn_fresh(spec: &SandboxSpec, started: Instant) -> Result<SandboxedChild, SandboxError> {
    // The root's mount point is made only here: a pre-made sandbox has its
    // own, and every inode made on the store's file system costs.
    match std::fs::create_dir(&spec.root_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(SandboxError::Setup(OsError::from_io(
                format!("creating {}", spec.root_dir.display()),
                &e,
            )))
        }
        _ => {}
    }
    let ids = id_mapping();
    hand_over(spec, ids).map_err(SandboxError::Setup)?;
    let chown_to = ids.root_mode.then_some((SANDBOX_UID, SANDBOX_GID));
    let prepared = plan::prepare(spec, &spec.root_dir, chown_to)?;
    let mut ops = prepared.early;
    ops.extend(prepared.late);

    let (sync_r, sync_w) = pipe().map_err(SandboxError::Setup)?;
    let (err_r, err_w) = pipe().map_err(SandboxError::Setup)?;
    let (log_r, log_w) = pipe().map_err(SandboxError::Setup)?;
    let stdin = std::fs::File::open("/dev/null")
        .map_err(|e| SandboxError::Setup(OsError::from_io("opening /dev/null", &e)))?;

    let seccomp = seccomp_filter()?;
    let mut child_plan = child::ChildPlan {
        ops,
        argv: Vec::new(),
        envp: Vec::new(),
        builder: prepared.builder,
        argv_owned: prepared.argv,
        envp_owned: prepared.envp,
        uid: SANDBOX_UID,
        gid: SANDBOX_GID,
        drop_groups: ids.root_mode,
        seccomp,
        sync_read: sync_r.as_raw_fd(),
        sync_write: sync_w.as_raw_fd(),
        err_write: err_w.as_raw_fd(),
        log_write: log_w.as_raw_fd(),
        stdin: stdin.as_raw_fd(),
    };
    child_plan.fill_pointers();

    let flags = clone_flags(spec.network);
    let stack = Stack::new()?;
    // SAFETY: the child gets a copy of this address space (no CLONE_VM), so
    // `child_plan` and `stack` stay valid for it; it runs only
    // async-signal-safe code (see child.rs).
    let pid = unsafe {
        clone_sandbox(
            child::child_main,
            stack.top(),
            flags,
            (&child_plan as *const child::ChildPlan) as *mut libc::c_void,
        )
    }?;
    drop(stack);
    // The child's ends, so that EOF on our ends means the child is gone.
    drop(sync_r);
    drop(err_w);
    drop(log_w);
    drop(stdin);

    let mut child = SandboxedChild {
        pid: Pid(pid),
        log: Some(log_r),
        started,
        setup_time: Duration::ZERO,
        timeout: spec.timeout,
        max_silent: spec.max_silent,
        cancel: spec.cancel.clone(),
        reaped: false,
        held: Held::default(),
    };
    child.held.namespaces = hold_namespaces(pid);

    write_id_maps(pid, ids).map_err(SandboxError::Setup)?;
    let mut sync_file = std::fs::File::from(sync_w);
    sync_file
        .write_all(&[1])
        .map_err(|e| SandboxError::Setup(OsError::from_io("starting the sandbox", &e)))?;
    drop(sync_file);

    child.await_exec(&err_r, &child_plan.ops, &spec.builder)?;
    Ok(child)
}

/// Starts `entry(arg)` on the stack whose top is `top` in a new process
/// with `flags` (the sandbox's namespaces, see [`clone_flags`]).
///
/// # Safety
/// As `clone(2)`: `top` and `arg` must stay valid for as long as the child
/// uses them, and `entry` must run only async-signal-safe code.
unsafe fn clone_sandbox(
    entry: extern "C" fn(*mut libc::c_void) -> c_int,
    top: *mut libc::c_void,
    flags: c_int,
    arg: *mut libc::c_void,
) -> Result<libc::pid_t, SandboxError> {
    // SAFETY: forwarded to the caller (see above).
    let pid = unsafe { libc::clone(entry, top, flags, arg) };
    if pid < 0 {
        return Err(SandboxError::Setup(OsError::last(
            "creating the sandbox namespaces (clone)",
        )));
    }
    Ok(pid)
}

/// The namespaces of a sandbox.
fn clone_flags(network: bool) -> c_int {
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::SIGCHLD;
    if !network {
        flags |= libc::CLONE_NEWNET;
    }
    flags
}

/// Reads an 8-byte `(step, errno)` report from `fd`: `Ok(None)` on EOF
/// before any byte.
fn read_report(fd: RawFd) -> Result<Option<(u32, i32)>, SandboxError> {
    let mut report = [0u8; 8];
    let n = read_full(fd, &mut report).map_err(|e| {
        SandboxError::Supervise(OsError::from_raw("reading the sandbox's set-up report", e))
    })?;
    if n == 0 {
        return Ok(None);
    }
    if n < report.len() {
        return Err(SandboxError::Setup(OsError::new(
            "the sandbox's set-up report was cut short",
            OsErrorKind::Other,
        )));
    }
    let step = u32::from_le_bytes([report[0], report[1], report[2], report[3]]);
    let errno = i32::from_le_bytes([report[4], report[5], report[6], report[7]]);
    Ok(Some((step, errno)))
}

/// The error for a failed set-up step `step` of `ops`.
fn step_error(step: u32, errno: i32, ops: &[child::Op], builder: &str) -> SandboxError {
    let what = match ops.get(step as usize) {
        Some(op) => plan::describe(op),
        None => plan::describe_step(step),
    };
    let err = OsError::from_raw(what, errno);
    if step == child::STEP_EXEC {
        SandboxError::Exec {
            builder: builder.to_string(),
            source: err,
        }
    } else {
        SandboxError::Setup(err)
    }
}

/// Host uid and gid the builder runs as when b3 runs as root (Nix's
/// `auto-allocate-uids` range starts here); never a real account.
pub const ROOT_MODE_BUILD_ID: u32 = 872_415_232;

/// `nobody` inside the sandbox.
const NOBODY: u32 = 65534;

/// How the sandbox's ids map to the host's.
#[derive(Debug, Clone, Copy)]
struct IdMapping {
    host_uid: u32,
    host_gid: u32,
    /// Running as root: host root is mapped to `nobody` and the builder to
    /// [`ROOT_MODE_BUILD_ID`].
    root_mode: bool,
}

fn id_mapping() -> IdMapping {
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        IdMapping {
            host_uid: ROOT_MODE_BUILD_ID,
            host_gid: ROOT_MODE_BUILD_ID,
            root_mode: true,
        }
    } else {
        IdMapping {
            host_uid: uid,
            host_gid: gid,
            root_mode: false,
        }
    }
}

fn write_id_maps(pid: c_int, ids: IdMapping) -> Result<(), OsError> {
    let write = |file: &str, text: String| {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text).map_err(|e| OsError::from_io(format!("writing {path}"), &e))
    };
    if ids.root_mode {
        write(
            "uid_map",
            format!("{SANDBOX_UID} {} 1\n{NOBODY} 0 1\n", ids.host_uid),
        )?;
        write(
            "gid_map",
            format!("{SANDBOX_GID} {} 1\n{NOBODY} 0 1\n", ids.host_gid),
        )
    } else {
        write("setgroups", "deny".to_string())?;
        write("uid_map", format!("{SANDBOX_UID} {} 1", ids.host_uid))?;
        write("gid_map", format!("{SANDBOX_GID} {} 1", ids.host_gid))
    }
}

/// As root, hands the build directory (and the files the caller put in
/// it) and the writable store directory to the build user.
fn hand_over(spec: &SandboxSpec, ids: IdMapping) -> Result<(), OsError> {
    if !ids.root_mode {
        return Ok(());
    }
    let chown = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        // A recycled work directory's are the build user's already; a
        // change of owner writes the inode (its ctime) even when it is not
        // one, a look does not.
        if std::fs::symlink_metadata(p)
            .is_ok_and(|m| m.uid() == ids.host_uid && m.gid() == ids.host_gid)
        {
            return Ok(());
        }
        std::os::unix::fs::lchown(p, Some(ids.host_uid), Some(ids.host_gid))
            .map_err(|e| OsError::from_io(format!("changing the owner of {}", p.display()), &e))
    };
    chown(&spec.store_dir_host)?;
    chown(&spec.build_dir)?;
    let entries = std::fs::read_dir(&spec.build_dir)
        .map_err(|e| OsError::from_io(format!("listing {}", spec.build_dir.display()), &e))?;
    for e in entries {
        let e = e.map_err(|e| OsError::from_io("listing the build directory", &e))?;
        chown(&e.path())?;
    }
    Ok(())
}

/// Poll entries for "`fd` is readable" and "the cancel signal fired"
/// (`cancel_fd` absent: a negative fd, which poll ignores).
fn readable_or_cancelled(fd: RawFd, cancel_fd: Option<RawFd>) -> [libc::pollfd; 2] {
    let entry = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    [entry(fd), entry(cancel_fd.unwrap_or(-1))]
}

/// Milliseconds until `t` for poll(2), rounded up so that poll does not
/// return just before it.
fn poll_ms(t: Instant) -> c_int {
    let left = t.saturating_duration_since(Instant::now());
    left.as_micros().div_ceil(1000).min(c_int::MAX as u128) as c_int
}

/// Reads until `buf` is full or EOF; returns the byte count.
fn read_full(fd: RawFd, buf: &mut [u8]) -> Result<usize, i32> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled tail of `buf`.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n < 0 {
            let e = last_errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    Ok(got)
}

impl SandboxedChild {
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Time from the start of the spawn until the builder was executed.
    pub fn setup_time(&self) -> Duration {
        self.setup_time
    }

    fn kill_and_reap(&mut self) -> Result<ExitStatus, OsError> {
        if self.reaped {
            return Ok(ExitStatus::Signal(libc::SIGKILL));
        }
        // Killing PID 1 of the namespace kills the whole namespace.
        let _ = kill(self.pid);
        let status = wait(self.pid);
        self.reaped = true;
        self.release();
        status
    }

    /// After reaping: what the child held can go.
    fn release(&mut self) {
        release_later(std::mem::take(&mut self.held.namespaces));
        self.held.pooled = None;
    }

    /// Waits until the builder was executed (EOF on the error pipe, which
    /// the exec closed) or reports the set-up step that failed (`ops`: the
    /// steps the child ran).
    fn await_exec(
        &mut self,
        err_r: &OwnedFd,
        ops: &[child::Op],
        builder: &str,
    ) -> Result<(), SandboxError> {
        let report = read_report(err_r.as_raw_fd());
        self.setup_time = self.started.elapsed();
        match report {
            Ok(None) => Ok(()),
            Ok(Some((step, errno))) => {
                let _ = self.kill_and_reap();
                Err(step_error(step, errno, ops, builder))
            }
            Err(e) => {
                let _ = self.kill_and_reap();
                Err(e)
            }
        }
    }

    /// Waits until the builder has exited (without reaping it), `deadline`
    /// passes or `cancel_fd` becomes readable. Uses a pidfd; where the
    /// kernel has none, returns [`ExitWait::Exited`] at once and the
    /// caller's wait blocks.
    fn wait_exit(&self, deadline: Option<Instant>, cancel_fd: Option<RawFd>) -> ExitWait {
        if deadline.is_none() && cancel_fd.is_none() {
            return ExitWait::Exited;
        }
        // Mostly it has exited already (its end closed the log): one look,
        // without a pidfd to open, poll and close.
        // SAFETY: all-zero bytes are a valid siginfo_t.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child into a valid siginfo_t; WNOWAIT
        // leaves it to be reaped by `wait`.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid.0 as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: filled in by waitid (or still zero: not exited).
        if rc == 0 && unsafe { info.si_pid() } != 0 {
            return ExitWait::Exited;
        }
        // SAFETY: pidfd_open on our own child; the fd is owned below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid.0, 0) } as RawFd;
        if fd < 0 {
            return ExitWait::Exited;
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        loop {
            let mut pfds = readable_or_cancelled(fd.as_raw_fd(), cancel_fd);
            let ms = deadline.map_or(-1, poll_ms);
            // SAFETY: two valid pollfds (a negative fd is ignored).
            let rc = unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms) };
            if rc > 0 {
                if pfds[0].revents != 0 {
                    return ExitWait::Exited;
                }
                return ExitWait::Cancelled;
            }
            if rc == 0 {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return ExitWait::Deadline;
                }
                continue;
            }
            if last_errno() != libc::EINTR {
                return ExitWait::Exited;
            }
        }
    }

    /// Streams the builder's output to `log` until every process in the
    /// sandbox has closed it, then reaps the builder.
    pub fn wait_with_log(mut self, log: &mut dyn Write) -> Result<RunOutcome, SandboxError> {
        let deadline = self.timeout.map(|t| self.started + t);
        let mut timed_out = false;
        let mut silent_too_long = false;
        let mut last_output = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        let mut log_error = None;
        let cancel_fd = self.cancel.as_ref().and_then(super::Cancel::wake_fd);
        let mut cancelled = false;
        if let Some(fd) = self.log.take() {
            loop {
                let killed = timed_out || silent_too_long || cancelled;
                let silence_end = self.max_silent.map(|m| last_output + m);
                let next = [deadline, silence_end].into_iter().flatten().min();
                let wait_ms: c_int = match next {
                    Some(t) if !killed => poll_ms(t),
                    _ => -1,
                };
                let mut pfds = readable_or_cancelled(fd.as_raw_fd(), cancel_fd);
                let nfds = if cancel_fd.is_some() && !killed { 2 } else { 1 };
                // SAFETY: `nfds` valid pollfds.
                let rc = unsafe { libc::poll(pfds.as_mut_ptr(), nfds, wait_ms) };
                if rc > 0 && nfds == 2 && pfds[1].revents != 0 {
                    // Another build failed: end the namespace (the whole
                    // process tree) and drain what is left of the log.
                    cancelled = true;
                    let _ = kill(self.pid);
                    if pfds[0].revents == 0 {
                        continue;
                    }
                }
                if rc < 0 {
                    if last_errno() == libc::EINTR {
                        continue;
                    }
                    let err = OsError::last("waiting for build output");
                    let _ = self.kill_and_reap();
                    return Err(SandboxError::Supervise(err));
                }
                if rc == 0 {
                    // A limit passed: end the namespace, keep draining.
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        timed_out = true;
                    } else if silence_end.is_some_and(|d| now >= d) {
                        silent_too_long = true;
                    } else {
                        continue;
                    }
                    let _ = kill(self.pid);
                    continue;
                }
                // SAFETY: reading into our buffer.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    if last_errno() == libc::EINTR {
                        continue;
                    }
                    let err = OsError::last("reading build output");
                    let _ = self.kill_and_reap();
                    return Err(SandboxError::Supervise(err));
                }
                if n == 0 {
                    break;
                }
                last_output = Instant::now();
                if log_error.is_none() {
                    if let Err(e) = log.write_all(&buf[..n as usize]) {
                        // A broken log sink must not leave the build running.
                        let _ = kill(self.pid);
                        log_error = Some(e);
                    }
                }
            }
        }
        // The builder may have closed its output and still be running.
        if !cancelled
            && self
                .cancel
                .as_ref()
                .is_some_and(super::Cancel::is_cancelled)
        {
            cancelled = true;
            let _ = kill(self.pid);
        }
        if !(timed_out || silent_too_long || cancelled) {
            match self.wait_exit(deadline, cancel_fd) {
                ExitWait::Exited => {}
                ExitWait::Deadline => {
                    timed_out = true;
                    let _ = kill(self.pid);
                }
                ExitWait::Cancelled => {
                    cancelled = true;
                    let _ = kill(self.pid);
                }
            }
        }
        let status = wait(self.pid).map_err(SandboxError::Supervise)?;
        self.reaped = true;
        self.release();
        if let Some(e) = log_error {
            return Err(SandboxError::Log(e));
        }
        let _ = log.flush();
        Ok(RunOutcome {
            status,
            setup_time: self.setup_time,
            total_time: self.started.elapsed(),
            timed_out,
            silent_too_long,
            cancelled,
        })
    }
}

impl Drop for SandboxedChild {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.kill_and_reap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_whose_child_is_gone_serves_the_next_and_only_a_few_are_kept() {
        let stacks: Vec<Stack> = (0..SPARE_STACKS + 4)
            .map(|_| Stack::new().unwrap())
            .collect();
        let bases: Vec<usize> = stacks.iter().map(|s| s.base as usize).collect();
        drop(stacks);
        let kept = SPARE.lock().unwrap().clone();
        assert!(kept.len() <= SPARE_STACKS);
        assert!(kept.iter().filter(|b| bases.contains(b)).count() >= SPARE_STACKS.min(4));
        // The last one given back is the first taken, and it is usable.
        let last = *kept.last().unwrap();
        let again = Stack::new().unwrap();
        assert_eq!(again.base as usize, last);
        // SAFETY: the top word of a mapping of CHILD_STACK_SIZE bytes.
        unsafe { (again.top() as *mut u64).sub(1).write_volatile(7) };
    }

    #[test]
    fn waiting_for_released_sandboxes_waits_until_their_descriptors_are_closed() {
        for _ in 0..20 {
            let (r, w) = pipe().unwrap();
            release_later(vec![w]);
            wait_released();
            // Every write end is closed: the read sees end of file at once.
            let mut buf = [0u8; 1];
            let n = std::io::Read::read(&mut std::fs::File::from(r), &mut buf).unwrap();
            assert_eq!(n, 0);
        }
    }
}
