//! Without root, a process that stands in for root for the sandbox pool:
//! it makes the network namespaces [`super::netns`] hands out and clones
//! the pre-made sandboxes into them.
//!
//! A network namespace can be joined only by a process privileged both in
//! its own user namespace and in the namespace's owner, which b3's threads
//! are not (and a multi-threaded process cannot join another user
//! namespace). The keeper is a child cloned into a user namespace of its
//! own, in which it is uid 0 and holds every capability; the host sees it,
//! and everything it makes, as the user running b3. It makes and joins
//! network namespaces owned by that user namespace and clones each
//! sandbox with its own user namespace nested inside, as b3 would
//! (`CLONE_PARENT`: b3 is the sandbox's parent and reaps it, and the
//! sandbox dies with b3's filling thread as before). A builder holds no
//! capability in the keeper's user namespace, so, as under root, it cannot
//! change the network namespace it runs in.
//!
//! The keeper shares b3's memory (`CLONE_VM`, like the sandboxes) and its
//! descriptor table (`CLONE_FILES`: the namespaces it opens are b3's to
//! keep), and runs only async-signal-safe code on a stack of its own (as a
//! pre-made sandbox does, it shares the `errno` slot of the thread that
//! started it, which can only blur the error number that thread reports
//! for a failure at the same moment). It
//! takes one request at a time from a [`Mailbox`], signalled through a
//! pipe; it is ended with its pool, and dies with the thread that started
//! it.

use std::ffi::c_int;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicUsize, Ordering};

use super::{id_mapping, pipe, wait, Pid, Stack};
use crate::platform::OsError;
use crate::sandbox::{SandboxError, SANDBOX_GID, SANDBOX_UID};

/// A request to the keeper and its answer. b3 fills in a request, then
/// writes a byte to the request pipe; the keeper answers, then writes a
/// byte to the reply pipe (the two system calls order the accesses).
#[derive(Default)]
struct Mailbox {
    op: AtomicU32,
    fd: AtomicI32,
    flags: AtomicI32,
    top: AtomicUsize,
    arg: AtomicUsize,
    /// A descriptor, a pid or 0; a negated `errno` on failure.
    result: AtomicI64,
    /// Why a cloned sandbox's ids could not be mapped (an `errno`; 0 if
    /// they were): b3 then ends and reaps it.
    map_error: AtomicI32,
    /// The keeper's ends of the pipes.
    requests: AtomicI32,
    replies: AtomicI32,
}

const OP_MAKE_NET: u32 = 1;
const OP_JOIN_NET: u32 = 2;
const OP_CLONE: u32 = 3;

/// The keeper process; see the module docs. Not to be used by two threads
/// at once (the pool holds it under a lock).
pub(super) struct Keeper {
    pid: Pid,
    /// Closed first on drop: the keeper then ends.
    requests: Option<OwnedFd>,
    replies: OwnedFd,
    /// The keeper's ends, open until it is reaped (it shares the table).
    _their_ends: [OwnedFd; 2],
    mailbox: Box<Mailbox>,
    _stack: Stack,
}

// SAFETY: the raw pointers (the stack) are owned by this value alone.
unsafe impl Send for Keeper {}

impl Keeper {
    /// Starts a keeper in a user namespace of its own.
    pub(super) fn start() -> Result<Keeper, SandboxError> {
        let (req_r, req_w) = pipe().map_err(SandboxError::Setup)?;
        let (rep_r, rep_w) = pipe().map_err(SandboxError::Setup)?;
        let mailbox = Box::new(Mailbox::default());
        mailbox.requests.store(req_r.as_raw_fd(), Ordering::Relaxed);
        mailbox.replies.store(rep_w.as_raw_fd(), Ordering::Relaxed);
        let stack = Stack::new()?;
        let arg = (&*mailbox as *const Mailbox) as *mut libc::c_void;
        // SAFETY: the keeper shares our memory: `mailbox` and the stack
        // live in the returned value, which reaps the keeper before they
        // are freed; it runs only async-signal-safe code.
        let pid = unsafe {
            libc::clone(
                keeper_main,
                stack.top(),
                libc::CLONE_NEWUSER | libc::CLONE_VM | libc::CLONE_FILES | libc::SIGCHLD,
                arg,
            )
        };
        if pid < 0 {
            return Err(SandboxError::Setup(OsError::last(
                "starting the sandbox keeper (clone)",
            )));
        }
        let keeper = Keeper {
            pid: Pid(pid),
            requests: Some(req_w),
            replies: rep_r,
            _their_ends: [req_r, rep_w],
            mailbox,
            _stack: stack,
        };
        // Its uid and gid 0 are ours; it asks nothing before these exist.
        let ids = id_mapping();
        let write = |file: &str, text: String| {
            let path = format!("/proc/{pid}/{file}");
            std::fs::write(&path, text).map_err(|e| OsError::from_io(format!("writing {path}"), &e))
        };
        write("setgroups", "deny".into())
            .and_then(|_| write("uid_map", format!("0 {} 1", ids.host_uid)))
            .and_then(|_| write("gid_map", format!("0 {} 1", ids.host_gid)))
            .map_err(SandboxError::Setup)?;
        Ok(keeper)
    }

    /// Sends the request in the mailbox and waits for the answer.
    fn call(&self, op: u32, what: &str) -> Result<i64, OsError> {
        self.mailbox.op.store(op, Ordering::SeqCst);
        let byte = [0u8; 1];
        let fd = self.requests.as_ref().map_or(-1, |f| f.as_raw_fd());
        // SAFETY: plain write and read of one byte on descriptors we own.
        if unsafe { libc::write(fd, byte.as_ptr().cast(), 1) } != 1 {
            return Err(OsError::last(format!("asking the sandbox keeper: {what}")));
        }
        let mut got = [0u8; 1];
        loop {
            // SAFETY: as above.
            let n = unsafe { libc::read(self.replies.as_raw_fd(), got.as_mut_ptr().cast(), 1) };
            if n == 1 {
                break;
            }
            if n < 0 && super::last_errno() == libc::EINTR {
                continue;
            }
            return Err(OsError::new(
                format!("the sandbox keeper ended while {what}"),
                crate::platform::OsErrorKind::Other,
            ));
        }
        let result = self.mailbox.result.load(Ordering::SeqCst);
        if result < 0 {
            return Err(OsError::from_raw(what.to_string(), (-result) as i32));
        }
        Ok(result)
    }

    /// A new network namespace, its loopback up, which the keeper is now
    /// in.
    pub(super) fn make_net(&self) -> Result<OwnedFd, OsError> {
        let fd = self.call(OP_MAKE_NET, "making a network namespace")?;
        // SAFETY: the keeper opened it in our (shared) table for us.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as c_int) })
    }

    /// Moves the keeper into the network namespace `fd`.
    pub(super) fn join_net(&self, fd: &OwnedFd) -> Result<(), OsError> {
        self.mailbox.fd.store(fd.as_raw_fd(), Ordering::SeqCst);
        self.call(OP_JOIN_NET, "joining a network namespace")
            .map(|_| ())
    }

    /// The socket counts of the keeper's network namespace.
    pub(super) fn sockstat(&self) -> String {
        format!("/proc/{}/net/sockstat", self.pid.0)
    }

    /// Clones a sandbox (`flags`, which must include `CLONE_NEWUSER`) into
    /// the keeper's network namespace, its ids mapped as b3 would map
    /// them; b3 is its parent.
    ///
    /// # Safety
    /// As `clone(2)` with `CLONE_VM`: `top` and `arg` must stay valid for
    /// as long as the child uses them, and [`super::child::warm_main`]
    /// runs on them.
    pub(super) unsafe fn clone_sandbox(
        &self,
        top: *mut libc::c_void,
        flags: c_int,
        arg: *mut libc::c_void,
    ) -> Result<libc::pid_t, SandboxError> {
        self.mailbox.flags.store(flags, Ordering::SeqCst);
        self.mailbox.top.store(top as usize, Ordering::SeqCst);
        self.mailbox.arg.store(arg as usize, Ordering::SeqCst);
        let pid = self
            .call(OP_CLONE, "creating the sandbox namespaces (clone)")
            .map_err(SandboxError::Setup)? as libc::pid_t;
        let err = self.mailbox.map_error.load(Ordering::SeqCst);
        if err != 0 {
            let _ = super::kill(Pid(pid));
            let _ = wait(Pid(pid));
            return Err(SandboxError::Setup(OsError::from_raw(
                "mapping the sandbox's user and group ids",
                err,
            )));
        }
        Ok(pid)
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        // It waits for a request (none is under way while it is dropped):
        // ended, not merely told (end of file on its requests), since a
        // process that copied our descriptors could keep that pipe open.
        drop(self.requests.take());
        let _ = super::kill(self.pid);
        let _ = wait(self.pid);
    }
}

/// The keeper's main loop; `arg` points at its [`Mailbox`].
extern "C" fn keeper_main(arg: *mut libc::c_void) -> c_int {
    // SAFETY: b3 keeps the mailbox alive until this process is reaped.
    let mb = unsafe { &*(arg as *const Mailbox) };
    // SAFETY (whole block): async-signal-safe calls only, on our own stack
    // and the mailbox.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        // b3's handlers are not for this process: a terminal's signals
        // are b3's to act on, and its end (or b3's) ends this one.
        for sig in [
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTSTP,
            libc::SIGHUP,
            libc::SIGTERM,
            libc::SIGPIPE,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let requests = mb.requests.load(Ordering::SeqCst);
        let replies = mb.replies.load(Ordering::SeqCst);
        loop {
            let mut byte = [0u8; 1];
            let n = libc::read(requests, byte.as_mut_ptr().cast(), 1);
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            if n != 1 {
                libc::_exit(0);
            }
            let result = match mb.op.load(Ordering::SeqCst) {
                OP_MAKE_NET => make_net(),
                OP_JOIN_NET => {
                    let fd = mb.fd.load(Ordering::SeqCst);
                    or_errno(i64::from(libc::setns(fd, libc::CLONE_NEWNET)))
                }
                OP_CLONE => {
                    let (pid, map_error) = clone_sandbox(mb);
                    mb.map_error.store(map_error, Ordering::SeqCst);
                    pid
                }
                _ => -i64::from(libc::EINVAL),
            };
            mb.result.store(result, Ordering::SeqCst);
            if libc::write(replies, byte.as_ptr().cast(), 1) != 1 {
                libc::_exit(1);
            }
        }
    }
}

/// `rc`, or the negated `errno` if `rc` is negative.
unsafe fn or_errno(rc: i64) -> i64 {
    if rc < 0 {
        -i64::from(*libc::__errno_location())
    } else {
        rc
    }
}

unsafe fn make_net() -> i64 {
    if libc::unshare(libc::CLONE_NEWNET) < 0 || super::child::loopback_up() < 0 {
        return or_errno(-1);
    }
    or_errno(i64::from(libc::open(
        c"/proc/thread-self/ns/net".as_ptr(),
        libc::O_RDONLY | libc::O_CLOEXEC,
    )))
}

/// Clones the sandbox the mailbox describes and maps its ids: its pid
/// (or a negated `errno`) and why its ids could not be mapped (0 if they
/// were).
unsafe fn clone_sandbox(mb: &Mailbox) -> (i64, c_int) {
    let pid = libc::clone(
        super::child::warm_main,
        mb.top.load(Ordering::SeqCst) as *mut libc::c_void,
        mb.flags.load(Ordering::SeqCst) | libc::CLONE_PARENT,
        mb.arg.load(Ordering::SeqCst) as *mut libc::c_void,
    );
    if pid < 0 {
        return (or_errno(-1), 0);
    }
    // The sandbox's ids, as b3 maps them without root (our uid and gid 0
    // are b3's). Only a process of this user namespace may write them.
    let mut err = write_proc(pid, b"setgroups", b"deny");
    if err == 0 {
        err = write_map(pid, b"uid_map", SANDBOX_UID);
    }
    if err == 0 {
        err = write_map(pid, b"gid_map", SANDBOX_GID);
    }
    (i64::from(pid), err)
}

/// Writes `"<inside> 0 1"` to `/proc/<pid>/<file>`; 0 or an `errno`.
unsafe fn write_map(pid: c_int, file: &[u8], inside: u32) -> c_int {
    let mut text = [0u8; 32];
    let mut n = put_decimal(&mut text, 0, inside as u64);
    for &b in b" 0 1" {
        text[n] = b;
        n += 1;
    }
    write_proc(pid, file, &text[..n])
}

/// Writes `data` to `/proc/<pid>/<file>`; 0 or an `errno`.
unsafe fn write_proc(pid: c_int, file: &[u8], data: &[u8]) -> c_int {
    let mut path = [0u8; 64];
    let mut n = 0;
    for &b in b"/proc/" {
        path[n] = b;
        n += 1;
    }
    n = put_decimal(&mut path, n, pid as u64);
    path[n] = b'/';
    n += 1;
    for &b in file {
        path[n] = b;
        n += 1;
    }
    path[n] = 0;
    let fd = libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return *libc::__errno_location();
    }
    let written = libc::write(fd, data.as_ptr().cast(), data.len());
    let err = *libc::__errno_location();
    libc::close(fd);
    if written != data.len() as isize {
        return if written < 0 { err } else { libc::EIO };
    }
    0
}

/// Writes `v` in decimal into `buf` at `at`; returns the end.
fn put_decimal(buf: &mut [u8], at: usize, mut v: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[at + i] = digits[len - 1 - i];
    }
    at + len
}

#[cfg(test)]
mod tests {
    use super::put_decimal;

    #[test]
    fn decimals_are_written_without_allocating() {
        let mut buf = [0u8; 32];
        let end = put_decimal(&mut buf, 3, 4_194_304);
        assert_eq!(&buf[3..end], b"4194304");
        let end = put_decimal(&mut buf, 0, 0);
        assert_eq!(&buf[..end], b"0");
    }
}
