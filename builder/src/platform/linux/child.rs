//! The code that runs inside the freshly cloned sandbox process, before it
//! executes the builder.
//!
//! The parent may have many threads (tokio), so the clone behaves like a fork
//! of a threaded process: only async-signal-safe calls are allowed here. This
//! module therefore never allocates, never panics and never touches Rust's
//! standard library I/O: it walks a [`ChildPlan`] that the parent prepared
//! (every path and string already a C string), calls raw libc syscall
//! wrappers, and on failure writes `(step index, errno)` to the error pipe and
//! exits.

use std::ffi::{c_int, c_void, CStr, CString};
use std::os::raw::c_char;

/// One set-up step, executed in order inside the new namespaces.
#[derive(Debug)]
pub(crate) enum Op {
    /// `mkdir`; an already existing directory is fine.
    Mkdir {
        path: CString,
        mode: libc::mode_t,
    },
    /// `chmod` (mkdir's mode is filtered by the umask; this one is not).
    Chmod {
        path: CString,
        mode: libc::mode_t,
    },
    /// Creates (or truncates) a file with these contents.
    WriteFile {
        path: CString,
        data: Vec<u8>,
        mode: libc::mode_t,
    },
    /// Creates an empty file to serve as a bind-mount target.
    Touch {
        path: CString,
    },
    /// Removes a mount point nothing is mounted on: `rmdir` or `unlink`.
    Remove {
        path: CString,
        dir: bool,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    /// `lchown` (does not follow symlinks).
    Chown {
        path: CString,
        uid: libc::uid_t,
        gid: libc::gid_t,
    },
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// Bind mount, then remount read-only keeping the flags the kernel
    /// locks for mounts inherited into a user namespace (nosuid, nodev,
    /// noexec, atime), without which the remount fails with EPERM.
    BindReadOnly {
        source: CString,
        target: CString,
        recursive: bool,
    },
    /// A read-only bind of the physical store at `stage`, a directory of
    /// the root tmpfs, for [`Op::BindInputs`] (a fresh sandbox's; a
    /// pre-made one has [`Op::HostLayers`]). If the kernel refuses the
    /// bind, `stage` is removed again, which tells [`Op::BindInputs`] to
    /// bind each input from the store itself.
    Stage {
        physical: CString,
        stage: CString,
    },
    /// The inputs, read-only, at their mount points: one plain bind per
    /// input taken from the stage (a bind inherits the source mount's
    /// read-only flag, so no remount per input). With `in_root`, the stage
    /// is then detached and removed (without a stage, each input gets its
    /// own [`Op::BindReadOnly`]); otherwise the stage is a pre-made
    /// sandbox's host layer, which stays covered by the store layer.
    BindInputs {
        stage: CString,
        binds: Vec<InputBind>,
        in_root: bool,
    },
    /// A new devpts instance at `pts`; if the kernel refuses, bind the host's
    /// `/dev/pts` and `/dev/ptmx` instead.
    Devpts {
        pts: CString,
        ptmx: CString,
    },
    SetHostname(CString),
    SetDomainname(CString),
    /// Brings up `lo` in the new network namespace.
    LoopbackUp,
    /// `pivot_root` into this directory and detach the old root.
    PivotRoot {
        new_root: CString,
    },
    Chdir(CString),
    /// The store directory at `target` (an existing directory of the
    /// sandbox's root tmpfs) with the `points` (mount points of the inputs)
    /// in it: with `overlay` options, the points are made in the tmpfs and
    /// an overlay whose upper layer is `upper` is mounted over it; if there
    /// are none or the kernel refuses the overlay, `upper` is bound there
    /// and the points are made in it.
    StoreLayer {
        target: CString,
        upper: CString,
        overlay: Option<CString>,
        /// The points for the overlay's lower layer when they are made
        /// elsewhere than at their paths under `target` (a pre-made
        /// sandbox's store directory is covered by its host layers).
        lower_points: Option<Vec<Op>>,
        points: Vec<Op>,
    },
    /// A pre-made sandbox's way to the host after its early pivot: opens
    /// `store` (a directory of the root tmpfs) as descriptor `fds[0]`, binds
    /// `physical` read-only on it and opens that as `fds[1]`, binds `work`
    /// (writable) on top and opens that as `fds[2]` (all close-on-exec).
    /// The store layer mounted later covers all three.
    HostLayers {
        store: CString,
        physical: CString,
        work: CString,
        fds: [c_int; 3],
    },
}

/// One input of [`Op::BindInputs`].
#[derive(Debug)]
pub(crate) struct InputBind {
    /// The input under the stage.
    pub staged: CString,
    /// The input in the physical store (for the fallback).
    pub source: CString,
    pub target: CString,
    pub recursive: bool,
}

/// Everything the child needs, prepared by the parent.
pub(crate) struct ChildPlan {
    pub ops: Vec<Op>,
    /// NULL-terminated pointer arrays into `_argv`/`_envp`.
    pub argv: Vec<*const c_char>,
    pub envp: Vec<*const c_char>,
    pub builder: CString,
    /// Owners of the strings `argv`/`envp` point into.
    pub argv_owned: Vec<CString>,
    pub envp_owned: Vec<CString>,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Clear supplementary groups before switching ids (root callers; an
    /// unprivileged caller's namespace denies setgroups).
    pub drop_groups: bool,
    pub seccomp: Vec<libc::sock_filter>,
    pub sync_read: c_int,
    pub sync_write: c_int,
    pub err_write: c_int,
    pub log_write: c_int,
    pub stdin: c_int,
}

impl ChildPlan {
    /// Points `argv` and `envp` at the owned strings (NULL-terminated).
    pub fn fill_pointers(&mut self) {
        self.argv = self.argv_owned.iter().map(|s| s.as_ptr()).collect();
        self.argv.push(std::ptr::null());
        self.envp = self.envp_owned.iter().map(|s| s.as_ptr()).collect();
        self.envp.push(std::ptr::null());
    }
}

/// Step indices reported for the fixed steps after the plan's ops.
pub(crate) const STEP_SYNC: u32 = u32::MAX;
pub(crate) const STEP_STDIO: u32 = u32::MAX - 1;
pub(crate) const STEP_LIMITS: u32 = u32::MAX - 2;
pub(crate) const STEP_NO_NEW_PRIVS: u32 = u32::MAX - 3;
pub(crate) const STEP_SECCOMP: u32 = u32::MAX - 4;
pub(crate) const STEP_IDS: u32 = u32::MAX - 5;
pub(crate) const STEP_EXEC: u32 = u32::MAX - 6;
pub(crate) const STEP_SIGNALS: u32 = u32::MAX - 7;
/// Not a failure: a pre-made sandbox finished its early set-up.
pub(crate) const STEP_READY: u32 = u32::MAX - 8;

/// Exit code of a child that failed during set-up (the parent reads the
/// error pipe, so the value only matters if that report was lost).
const SETUP_FAILED: c_int = 125;

fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn fail(plan: &ChildPlan, step: u32, err: c_int) -> ! {
    report(plan.err_write, step, err);
    // SAFETY: _exit is async-signal-safe; the exit status still reports
    // failure if the report was lost.
    unsafe { libc::_exit(SETUP_FAILED) }
}

fn check(plan: &ChildPlan, step: u32, rc: c_int) {
    if rc < 0 {
        fail(plan, step, errno());
    }
}

fn opt_ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

/// Entry point of the cloned process. `arg` points at the parent's
/// `ChildPlan` (the clone has its own copy of the address space).
pub(crate) extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: the parent passes a pointer to a live ChildPlan and does not
    // touch it until clone() has returned; this process has its own copy.
    let plan = unsafe { &*(arg as *const ChildPlan) };
    run(plan)
}

fn run(plan: &ChildPlan) -> ! {
    // SAFETY (whole function): only async-signal-safe libc calls on
    // pointers into `plan`, which outlives this process.
    unsafe {
        prelude(plan);
        for (i, op) in plan.ops.iter().enumerate() {
            if let Err(e) = run_op(op) {
                fail(plan, i as u32, e);
            }
        }
        stdio(plan);
        harden(plan);
        exec_builder(plan)
    }
}

/// What a pre-made sandbox's process runs (see `pool.rs`): the early
/// set-up of [`Self::early`], a [`STEP_READY`] report, then it waits for
/// the address of the build's late [`ChildPlan`] on `go_read`, runs its
/// steps and executes its builder. It shares the parent's memory
/// (`CLONE_VM`), so that address is valid here; the parent keeps the plan
/// alive until the builder has been executed.
pub(crate) struct WarmPlan {
    pub early: ChildPlan,
    pub go_read: c_int,
}

/// Entry point of a pre-made sandbox's process; `arg` points at the
/// parent's [`WarmPlan`].
pub(crate) extern "C" fn warm_main(arg: *mut c_void) -> c_int {
    // SAFETY: the parent keeps the WarmPlan alive and unchanged for as long
    // as this process may read it.
    let warm = unsafe { &*(arg as *const WarmPlan) };
    let plan = &warm.early;
    // SAFETY (whole block): as in `run`.
    unsafe {
        prelude(plan);
        stdio(plan);
        // Copies of the parent's descriptors (other builds' log pipes among
        // them) must not stay open while this process waits.
        close_others(plan.err_write, warm.go_read);
        for (i, op) in plan.ops.iter().enumerate() {
            if let Err(e) = run_op(op) {
                fail(plan, i as u32, e);
            }
        }
        // Nothing of the late steps needs what the filter or no_new_privs
        // take away (they set no set-id bits and no extended attributes),
        // so the build does not wait for them.
        harden(plan);
        report(plan.err_write, STEP_READY, 0);
        let mut addr = [0u8; 8];
        let mut got = 0;
        while got < addr.len() {
            let n = libc::read(
                warm.go_read,
                addr[got..].as_mut_ptr().cast(),
                addr.len() - got,
            );
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                // Not needed after all: the pool was dropped.
                libc::_exit(0);
            }
            got += n as usize;
        }
        libc::close(warm.go_read);
        let late = &*(usize::from_le_bytes(addr) as *const ChildPlan);
        for (i, op) in late.ops.iter().enumerate() {
            if let Err(e) = run_op(op) {
                fail(late, i as u32, e);
            }
        }
        exec_builder(late)
    }
}

/// Closes every descriptor above 2 except `a` and `b`.
unsafe fn close_others(a: c_int, b: c_int) {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let close = |from: c_int, to: c_int| {
        if from <= to {
            libc::syscall(libc::SYS_close_range, from as u32, to as u32, 0u32);
        }
    };
    close(3, lo - 1);
    close(lo + 1, hi - 1);
    close(hi + 1, c_int::MAX);
}

fn report(fd: c_int, step: u32, err: c_int) {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&step.to_le_bytes());
    msg[4..].copy_from_slice(&err.to_le_bytes());
    // SAFETY: write is async-signal-safe; a short write only loses the
    // report, which the parent then sees as a failure.
    unsafe {
        libc::write(fd, msg.as_ptr().cast(), msg.len());
    }
}

/// Signals, death signal and the wait for the uid/gid maps.
unsafe fn prelude(plan: &ChildPlan) {
    libc::close(plan.sync_write);
    // Die with the thread that spawned us rather than run orphaned.
    libc::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
        0,
        0,
        0,
    );

    // Signal dispositions survive exec when ignored (Rust ignores
    // SIGPIPE), and the mask is inherited: give the builder defaults.
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    check(
        plan,
        STEP_SIGNALS,
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()),
    );
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }

    // Wait until the parent has written our uid/gid maps.
    let mut byte = 0u8;
    let n = libc::read(plan.sync_read, (&mut byte as *mut u8).cast(), 1);
    if n != 1 {
        fail(plan, STEP_SYNC, if n < 0 { errno() } else { libc::EPIPE });
    }
    libc::close(plan.sync_read);
}

unsafe fn stdio(plan: &ChildPlan) {
    check(plan, STEP_STDIO, libc::dup2(plan.stdin, 0));
    check(plan, STEP_STDIO, libc::dup2(plan.log_write, 1));
    check(plan, STEP_STDIO, libc::dup2(plan.log_write, 2));
}

/// Core-dump limit, no-new-privs and the seccomp filter: what the builder
/// gets whatever its ids, so a pre-made sandbox does it ahead of time.
unsafe fn harden(plan: &ChildPlan) {
    let mut lim: libc::rlimit = std::mem::zeroed();
    check(
        plan,
        STEP_LIMITS,
        libc::getrlimit(libc::RLIMIT_CORE, &mut lim),
    );
    lim.rlim_cur = 0;
    check(plan, STEP_LIMITS, libc::setrlimit(libc::RLIMIT_CORE, &lim));
    check(
        plan,
        STEP_NO_NEW_PRIVS,
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
    );
    let prog = libc::sock_fprog {
        len: plan.seccomp.len() as u16,
        filter: plan.seccomp.as_ptr() as *mut libc::sock_filter,
    };
    check(
        plan,
        STEP_SECCOMP,
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog as libc::c_ulong,
            0,
            0,
        ),
    );
}

/// Ids, then exec (after [`harden`]).
unsafe fn exec_builder(plan: &ChildPlan) -> ! {
    // Nothing else of the parent's may leak into the builder.
    if libc::syscall(
        libc::SYS_close_range,
        3u32,
        u32::MAX,
        libc::CLOSE_RANGE_CLOEXEC,
    ) < 0
    {
        for fd in 3..65536 {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }

    libc::umask(0o022);
    if plan.drop_groups {
        check(
            plan,
            STEP_IDS,
            libc::syscall(
                libc::SYS_setgroups,
                0 as libc::c_long,
                std::ptr::null::<libc::gid_t>(),
            ) as c_int,
        );
    }
    // Raw syscalls: glibc's setuid/setgid broadcast the change to every
    // thread it believes exists (copied from the threaded parent) and
    // would wait for them forever.
    check(
        plan,
        STEP_IDS,
        libc::syscall(libc::SYS_setgid, plan.gid as libc::c_long) as c_int,
    );
    check(
        plan,
        STEP_IDS,
        libc::syscall(libc::SYS_setuid, plan.uid as libc::c_long) as c_int,
    );

    libc::execve(
        plan.builder.as_ptr(),
        plan.argv.as_ptr(),
        plan.envp.as_ptr(),
    );
    fail(plan, STEP_EXEC, errno())
}

/// Runs one step; `Err(errno)` on failure.
fn run_op(op: &Op) -> Result<(), c_int> {
    // SAFETY: raw syscalls on NUL-terminated strings owned by the plan.
    unsafe {
        let rc = match op {
            Op::Mkdir { path, mode } => {
                let rc = libc::mkdir(path.as_ptr(), *mode);
                if rc < 0 && errno() == libc::EEXIST {
                    0
                } else {
                    rc
                }
            }
            Op::Chmod { path, mode } => libc::chmod(path.as_ptr(), *mode),
            Op::WriteFile { path, data, mode } => write_file(path, data, *mode),
            Op::Touch { path } => {
                // One call, and no open file to set up and tear down: a
                // build makes one of these per input that is a file.
                let rc = libc::mknod(path.as_ptr(), libc::S_IFREG | 0o444, 0);
                if rc < 0 && errno() == libc::EEXIST {
                    touch_existing(path)
                } else {
                    rc
                }
            }
            Op::Remove { path, dir: true } => libc::rmdir(path.as_ptr()),
            Op::Remove { path, dir: false } => libc::unlink(path.as_ptr()),
            Op::Symlink { target, link } => libc::symlink(target.as_ptr(), link.as_ptr()),
            Op::Chown { path, uid, gid } => libc::lchown(path.as_ptr(), *uid, *gid),
            Op::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => libc::mount(
                opt_ptr(source),
                target.as_ptr(),
                opt_ptr(fstype),
                *flags,
                opt_ptr(data).cast(),
            ),
            Op::BindReadOnly {
                source,
                target,
                recursive,
            } => bind_read_only(source, target, *recursive),
            Op::Stage { physical, stage } => return make_stage(physical, stage),
            Op::BindInputs {
                stage,
                binds,
                in_root,
            } => return bind_inputs(stage, binds, *in_root),
            Op::Devpts { pts, ptmx } => devpts(pts, ptmx),
            Op::SetHostname(name) => libc::sethostname(name.as_ptr(), name.as_bytes().len()),
            Op::SetDomainname(name) => libc::setdomainname(name.as_ptr(), name.as_bytes().len()),
            Op::LoopbackUp => loopback_up(),
            Op::PivotRoot { new_root } => pivot_root(new_root),
            Op::Chdir(path) => libc::chdir(path.as_ptr()),
            Op::StoreLayer {
                target,
                upper,
                overlay,
                lower_points,
                points,
            } => {
                return store_layer(
                    target,
                    upper,
                    overlay.as_deref(),
                    lower_points.as_deref(),
                    points,
                )
            }
            Op::HostLayers {
                store,
                physical,
                work,
                fds,
            } => return host_layers(store, physical, work, fds),
        };
        if rc < 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }
}

/// `Op::Touch` of a path that exists: fine if it can be opened for writing,
/// as `touch` would.
unsafe fn touch_existing(path: &CStr) -> c_int {
    let fd = libc::open(
        path.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
        0o444,
    );
    if fd >= 0 {
        libc::close(fd);
    }
    fd
}

fn store_layer(
    target: &CStr,
    upper: &CStr,
    overlay: Option<&CStr>,
    lower_points: Option<&[Op]>,
    points: &[Op],
) -> Result<(), c_int> {
    if let Some(options) = overlay {
        for p in lower_points.unwrap_or(points) {
            run_op(p)?;
        }
        // SAFETY: mount with NUL-terminated strings owned by the plan.
        let rc = unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                target.as_ptr(),
                c"overlay".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        // The points stay in the tmpfs, hidden under the bind below.
    }
    // SAFETY: as above.
    let rc = unsafe {
        libc::mount(
            upper.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        return Err(errno());
    }
    for p in points {
        run_op(p)?;
    }
    Ok(())
}

fn host_layers(store: &CStr, physical: &CStr, work: &CStr, fds: &[c_int; 3]) -> Result<(), c_int> {
    let check = |rc: c_int| if rc < 0 { Err(errno()) } else { Ok(()) };
    // SAFETY: raw syscalls on NUL-terminated strings owned by the plan.
    unsafe {
        let open_as = |want: c_int| -> Result<(), c_int> {
            let fd = libc::open(
                store.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            check(fd)?;
            if fd != want {
                let rc = libc::dup3(fd, want, libc::O_CLOEXEC);
                let e = errno();
                libc::close(fd);
                if rc < 0 {
                    return Err(e);
                }
            }
            Ok(())
        };
        open_as(fds[0])?;
        check(bind_read_only(physical, store, false))?;
        open_as(fds[1])?;
        check(libc::mount(
            work.as_ptr(),
            store.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ))?;
        open_as(fds[2])
    }
}

unsafe fn write_file(path: &CStr, data: &[u8], mode: libc::mode_t) -> c_int {
    let fd = libc::open(
        path.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
        mode,
    );
    if fd < 0 {
        return fd;
    }
    let mut rest = data;
    while !rest.is_empty() {
        let n = libc::write(fd, rest.as_ptr().cast(), rest.len());
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            let e = errno();
            libc::close(fd);
            *libc::__errno_location() = e;
            return -1;
        }
        rest = &rest[n as usize..];
    }
    libc::close(fd)
}

unsafe fn bind_read_only(source: &CStr, target: &CStr, recursive: bool) -> c_int {
    let mut flags = libc::MS_BIND;
    if recursive {
        flags |= libc::MS_REC;
    }
    let rc = libc::mount(
        source.as_ptr(),
        target.as_ptr(),
        std::ptr::null(),
        flags,
        std::ptr::null(),
    );
    if rc < 0 {
        return rc;
    }
    // glibc and musl fill f_flag from the statfs syscall (ST_VALID), so
    // this stays a single syscall.
    let mut st: libc::statvfs = std::mem::zeroed();
    let rc = libc::statvfs(target.as_ptr(), &mut st);
    if rc < 0 {
        return rc;
    }
    let have = st.f_flag as libc::c_ulong;
    let mut keep: libc::c_ulong = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if have & st_flag != 0 {
            keep |= ms_flag;
        }
    }
    libc::mount(
        std::ptr::null(),
        target.as_ptr(),
        std::ptr::null(),
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | keep,
        std::ptr::null(),
    )
}

fn make_stage(physical: &CStr, stage: &CStr) -> Result<(), c_int> {
    // SAFETY: raw syscalls on NUL-terminated strings owned by the plan.
    unsafe {
        let rc = libc::mkdir(stage.as_ptr(), 0o700);
        if rc < 0 && errno() != libc::EEXIST {
            return Err(errno());
        }
        // No stage: the inputs are bound one by one (see BindInputs).
        if bind_read_only(physical, stage, false) < 0 && libc::rmdir(stage.as_ptr()) < 0 {
            return Err(errno());
        }
    }
    Ok(())
}

fn bind_inputs(stage: &CStr, binds: &[InputBind], in_root: bool) -> Result<(), c_int> {
    let check = |rc: c_int| if rc < 0 { Err(errno()) } else { Ok(()) };
    // SAFETY: raw syscalls on NUL-terminated strings owned by the plan.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if in_root && libc::lstat(stage.as_ptr(), &mut st) < 0 {
            if errno() != libc::ENOENT {
                return Err(errno());
            }
            for b in binds {
                check(bind_read_only(&b.source, &b.target, b.recursive))?;
            }
            return Ok(());
        }
        let mut result = Ok(());
        for b in binds {
            let mut flags = libc::MS_BIND;
            if b.recursive {
                flags |= libc::MS_REC;
            }
            let rc = libc::mount(
                b.staged.as_ptr(),
                b.target.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            );
            if rc < 0 {
                result = Err(errno());
                break;
            }
        }
        // Never let an input be writable, whatever the kernel copied.
        if result.is_ok() {
            if let Some(first) = binds.first() {
                let mut st: libc::statvfs = std::mem::zeroed();
                if libc::statvfs(first.target.as_ptr(), &mut st) < 0 {
                    result = Err(errno());
                } else if st.f_flag & libc::ST_RDONLY == 0 {
                    result = Err(libc::EROFS);
                }
            }
        }
        // The whole store must not stay visible, even on failure. A lazy
        // detach takes it out of the tree at once; only the freeing waits
        // (a plain unmount waits for an RCU grace period, measured at up to
        // 6 ms under load). A pre-made sandbox's host layer stays, covered
        // by the store layer.
        if in_root {
            check(libc::umount2(stage.as_ptr(), libc::MNT_DETACH))?;
            check(libc::rmdir(stage.as_ptr()))?;
        }
        result
    }
}

const HOST_PTS: &CStr = c"/dev/pts";
const HOST_PTMX: &CStr = c"/dev/ptmx";
const PTS_PTMX: &CStr = c"/dev/pts/ptmx";

unsafe fn devpts(pts: &CStr, ptmx: &CStr) -> c_int {
    let rc = libc::mount(
        c"none".as_ptr(),
        pts.as_ptr(),
        c"devpts".as_ptr(),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        c"newinstance,mode=0620,ptmxmode=0666".as_ptr().cast(),
    );
    if rc == 0 {
        return libc::symlink(PTS_PTMX.as_ptr(), ptmx.as_ptr());
    }
    let rc = libc::mount(
        HOST_PTS.as_ptr(),
        pts.as_ptr(),
        std::ptr::null(),
        libc::MS_BIND | libc::MS_REC,
        std::ptr::null(),
    );
    if rc < 0 {
        return rc;
    }
    let fd = libc::open(
        ptmx.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
        0o444,
    );
    if fd < 0 {
        return fd;
    }
    libc::close(fd);
    libc::mount(
        HOST_PTMX.as_ptr(),
        ptmx.as_ptr(),
        std::ptr::null(),
        libc::MS_BIND,
        std::ptr::null(),
    )
}

pub(super) unsafe fn loopback_up() -> c_int {
    let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
    if fd < 0 {
        return fd;
    }
    let mut ifr: libc::ifreq = std::mem::zeroed();
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as c_char;
    }
    let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
    if rc == 0 {
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
    }
    let e = errno();
    libc::close(fd);
    *libc::__errno_location() = e;
    rc
}

unsafe fn pivot_root(new_root: &CStr) -> c_int {
    // pivot_root(".", ".") stacks the old root on top of the new one, so a
    // lazy unmount of "." removes it without needing a directory for it.
    let rc = libc::chdir(new_root.as_ptr());
    if rc < 0 {
        return rc;
    }
    let dot = c".";
    let rc = libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) as c_int;
    if rc < 0 {
        return rc;
    }
    let rc = libc::umount2(dot.as_ptr(), libc::MNT_DETACH);
    if rc < 0 {
        return rc;
    }
    libc::chdir(c"/".as_ptr())
}
