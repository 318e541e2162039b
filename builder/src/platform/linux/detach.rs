//! Detaching a sandbox's old root off the build's critical path.
//!
//! After `pivot_root(".", ".")` the host's root (with every host mount
//! under it, and a pre-made sandbox's stage of the store) is stacked on
//! top of the new root. Detaching it (`umount2(MNT_DETACH)`) is quick, but
//! the kernel then waits for an RCU grace period before it frees the
//! unmounted mounts, and the caller waits with it: 0.07-5.5 ms a build
//! (mean 1.5 ms at load 5), measured in the sandbox process just before
//! it executes the builder.
//!
//! So, as root and when asked (`B3_SANDBOX_DETACH=1`, see [`sender`] for
//! why not by default), the sandbox process hands that wait to threads of
//! the parent. It sends them, over a Unix socket (`SCM_RIGHTS`), an `O_PATH`
//! descriptor of the old root taken before the pivot and a descriptor of
//! its mount namespace. A [`serve`] thread joins that mount namespace (it
//! has its own `fs_struct`, see `unshare(CLONE_FS)`, which `setns`
//! requires), detaches the old root through `/proc/thread-self/fd/N` of the
//! *host's* procfs (the magic link names the old root's mount itself, not
//! what is stacked with it), sits out the grace period inside `umount2`,
//! and returns to the host's mount namespace.
//!
//! The sandbox process does not execute its builder before the old root is
//! out of its mount tree: it polls `statmount(2)` on the old root's unique
//! mount id, which fails with `ENOENT` once the mount has left the
//! namespace (the kernel takes it out of the tree before it waits). So the
//! builder sees exactly what it saw before: no host mount in
//! `/proc/self/mountinfo`, nothing of the host reachable; only the wait for
//! the grace period is gone from the critical path. The descriptors are
//! closed before the builder is executed (and every descriptor above 2 is
//! close-on-exec anyway, `close_range` in `child.rs`), the socket's sending
//! end too; what is in flight is queued on the parent's receiving end.
//!
//! Without root (the parent cannot join a mount namespace of a user
//! namespace it does not own with `CAP_SYS_ADMIN` in its own), without
//! `statmount` (Linux 6.8), when the socket cannot take the descriptors, or
//! when no thread has detached the old root after many polls, the sandbox
//! process detaches it itself, as before.

use std::ffi::{c_int, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

/// How many detaching threads serve the sandbox processes.
const THREADS: usize = 3;

/// `statmount(2)` and `STATX_MNT_ID_UNIQUE` (Linux 6.8; the same number on
/// the architectures b3 builds for).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const SYS_STATMOUNT: libc::c_long = 457;
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;
const STATMOUNT_SB_BASIC: u64 = 0x1;

/// How many times a sandbox process looks for its old root to be gone
/// (yielding in between) before it detaches it itself.
const POLLS: u32 = 100_000;

/// The sending end shared by every sandbox process (close-on-exec); the
/// receiving end belongs to the detaching thread.
pub(super) struct Detacher {
    send: OwnedFd,
}

/// The sending end of the detaching threads' socket, started on first use;
/// `None` (the sandbox process detaches its old root itself) unless
/// `B3_SANDBOX_DETACH=1` asks for them, when not running as root, or when
/// they could not be started.
///
/// Off by default: measured side by side (50-step chains, load 3-6, two
/// cores), the hand-off saved about 1.5 ms of median pivot-to-exec time per
/// build only while CPU-bound tasks competed for both cores, was neutral
/// within the noise otherwise (the threads' wake-up costs about what a
/// short grace period does), and moved no build's wall-clock total beyond
/// the run-to-run noise.
pub(super) fn sender(root_mode: bool) -> Option<RawFd> {
    static DETACHER: OnceLock<Option<Detacher>> = OnceLock::new();
    if !root_mode || std::env::var_os("B3_SANDBOX_DETACH").is_none_or(|v| v != "1") {
        return None;
    }
    DETACHER
        .get_or_init(start)
        .as_ref()
        .map(|d| d.send.as_raw_fd())
}

fn start() -> Option<Detacher> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: socketpair fills `fds` on success.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return None;
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (recv, send) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let recv = std::sync::Arc::new(recv);
    // Several threads: each one sits out a grace period per old root, and
    // concurrent builds should not queue behind each other's.
    let mut started = false;
    for i in 0..THREADS {
        let proc_dir = std::fs::File::open("/proc").ok()?;
        let host_ns = std::fs::File::open("/proc/self/ns/mnt").ok()?;
        let recv = recv.clone();
        started |= std::thread::Builder::new()
            .name(format!("b3-sandbox-detach-{i}"))
            .spawn(move || serve(&recv, proc_dir, host_ns))
            .is_ok();
    }
    started.then_some(Detacher { send })
}

/// The detaching thread: one old root per message, until every sender is
/// gone (never, in practice: the sending end lives as long as the process).
fn serve(recv: &OwnedFd, proc_dir: std::fs::File, host_ns: std::fs::File) {
    // SAFETY: unshare of this thread's own fs_struct.
    if unsafe { libc::unshare(libc::CLONE_FS) } < 0 {
        // Without it setns fails; every sandbox process's send would then
        // leave its old root stacked until the namespace dies. Stop
        // receiving, so that sends fail and they detach it themselves.
        return;
    }
    while let Some((ns, old_root)) = receive(recv.as_raw_fd()) {
        detach(&ns, &old_root, &proc_dir, &host_ns);
    }
}

/// Receives one message carrying (mount namespace, old root).
fn receive(fd: RawFd) -> Option<(OwnedFd, OwnedFd)> {
    loop {
        let mut byte = 0u8;
        let mut iov = libc::iovec {
            iov_base: (&mut byte as *mut u8).cast(),
            iov_len: 1,
        };
        // Room for two descriptors, aligned as cmsghdr wants.
        let mut space = [0u64; 8];
        // SAFETY: zeroed msghdr pointing at local buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&space) as _;
        // SAFETY: recvmsg into the buffers above.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        if n == 0 {
            return None;
        }
        let mut got: Vec<OwnedFd> = Vec::with_capacity(2);
        // SAFETY: walking the control messages recvmsg filled in.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c) as *const c_int;
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..len / std::mem::size_of::<c_int>() {
                        got.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if got.len() == 2 {
            let old_root = got.pop()?;
            let ns = got.pop()?;
            return Some((ns, old_root));
        }
        // A malformed message (a sender's bug): drop what came with it.
    }
}

fn detach(ns: &OwnedFd, old_root: &OwnedFd, proc_dir: &std::fs::File, host_ns: &std::fs::File) {
    let Ok(link) = CString::new(format!("thread-self/fd/{}", old_root.as_raw_fd())) else {
        return;
    };
    // SAFETY: setns/fchdir/umount2 on descriptors and a string owned here;
    // they change only this thread's namespaces and directories.
    unsafe {
        if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) < 0 {
            return;
        }
        if libc::fchdir(proc_dir.as_raw_fd()) == 0 {
            libc::umount2(link.as_ptr(), libc::MNT_DETACH);
        }
        // Back home, so that this thread does not keep the sandbox's
        // namespace (its mounts) alive after the build.
        libc::setns(host_ns.as_raw_fd(), libc::CLONE_NEWNS);
    }
}

/// Sends `(ns, old_root)` to the detaching thread from a sandbox process:
/// async-signal-safe, never blocks. `false` if not sent.
///
/// # Safety
/// `sock`, `ns` and `old_root` must be open descriptors.
pub(super) unsafe fn send(sock: c_int, ns: c_int, old_root: c_int) -> bool {
    let mut byte = 0u8;
    let mut iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    let mut space = [0u64; 8];
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    let fds_len = 2 * std::mem::size_of::<c_int>() as u32;
    msg.msg_controllen = libc::CMSG_SPACE(fds_len) as _;
    let c = libc::CMSG_FIRSTHDR(&msg);
    if c.is_null() {
        return false;
    }
    (*c).cmsg_level = libc::SOL_SOCKET;
    (*c).cmsg_type = libc::SCM_RIGHTS;
    (*c).cmsg_len = libc::CMSG_LEN(fds_len) as _;
    let data = libc::CMSG_DATA(c) as *mut c_int;
    std::ptr::write_unaligned(data, ns);
    std::ptr::write_unaligned(data.add(1), old_root);
    loop {
        let n = libc::sendmsg(sock, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        if n == 1 {
            return true;
        }
        if n < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        return false;
    }
}

/// The unique mount id of the mount `fd` is on (async-signal-safe), or 0
/// when the kernel has none or no `statmount` to look it up with.
///
/// # Safety
/// `fd` must be an open descriptor or negative.
pub(super) unsafe fn mount_id(fd: c_int) -> u64 {
    if fd < 0 || !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        return 0;
    }
    let mut stx: libc::statx = std::mem::zeroed();
    let rc = libc::statx(
        fd,
        c"".as_ptr(),
        libc::AT_EMPTY_PATH,
        STATX_MNT_ID_UNIQUE,
        &mut stx,
    );
    if rc < 0 || stx.stx_mask & STATX_MNT_ID_UNIQUE == 0 {
        return 0;
    }
    // statmount must exist too, or a detach could never be seen.
    if statmount_errno(stx.stx_mnt_id) != 0 {
        return 0;
    }
    stx.stx_mnt_id
}

/// `statmount(id)` in the caller's mount namespace: 0 if the mount is in
/// it, else the errno (`ENOENT` once detached).
unsafe fn statmount_errno(id: u64) -> c_int {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        #[repr(C)]
        struct Req {
            size: u32,
            spare: u32,
            mnt_id: u64,
            param: u64,
        }
        let req = Req {
            size: std::mem::size_of::<Req>() as u32,
            spare: 0,
            mnt_id: id,
            param: STATMOUNT_SB_BASIC,
        };
        // Room for the fixed part of `struct statmount`.
        let mut buf = [0u64; 64];
        let rc = libc::syscall(
            SYS_STATMOUNT,
            &req as *const Req,
            buf.as_mut_ptr(),
            std::mem::size_of_val(&buf),
            0u32,
        );
        if rc < 0 {
            *libc::__errno_location()
        } else {
            0
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = id;
        libc::ENOSYS
    }
}

/// Whether the mount `id` has left the caller's mount namespace.
///
/// # Safety
/// Async-signal-safe; `id` from [`mount_id`].
pub(super) unsafe fn is_detached(id: u64) -> bool {
    statmount_errno(id) == libc::ENOENT
}

/// Waits, yielding the CPU, until the mount `id` has left the caller's
/// mount namespace; `false` if it has not after [`POLLS`] looks.
///
/// # Safety
/// As [`is_detached`].
pub(super) unsafe fn wait_detached(id: u64) -> bool {
    for _ in 0..POLLS {
        if is_detached(id) {
            return true;
        }
        libc::sched_yield();
    }
    false
}
